import datetime

from google.longrunning import operations_pb2 as _operations_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ldm3d.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CameraPath(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAMERA_PATH_UNSPECIFIED: _ClassVar[CameraPath]
    CAMERA_PATH_ORBIT: _ClassVar[CameraPath]
    CAMERA_PATH_DOLLY: _ClassVar[CameraPath]
    CAMERA_PATH_LOOK_AROUND: _ClassVar[CameraPath]
    CAMERA_PATH_KEYFRAMES: _ClassVar[CameraPath]

class MeshFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESH_FORMAT_UNSPECIFIED: _ClassVar[MeshFormat]
    MESH_FORMAT_PLY: _ClassVar[MeshFormat]
    MESH_FORMAT_OBJ: _ClassVar[MeshFormat]
    MESH_FORMAT_GLB: _ClassVar[MeshFormat]

class ArtifactDelivery(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_DELIVERY_UNSPECIFIED: _ClassVar[ArtifactDelivery]
    ARTIFACT_DELIVERY_BYTES: _ClassVar[ArtifactDelivery]
    ARTIFACT_DELIVERY_FILES: _ClassVar[ArtifactDelivery]
CAMERA_PATH_UNSPECIFIED: CameraPath
CAMERA_PATH_ORBIT: CameraPath
CAMERA_PATH_DOLLY: CameraPath
CAMERA_PATH_LOOK_AROUND: CameraPath
CAMERA_PATH_KEYFRAMES: CameraPath
MESH_FORMAT_UNSPECIFIED: MeshFormat
MESH_FORMAT_PLY: MeshFormat
MESH_FORMAT_OBJ: MeshFormat
MESH_FORMAT_GLB: MeshFormat
ARTIFACT_DELIVERY_UNSPECIFIED: ArtifactDelivery
ARTIFACT_DELIVERY_BYTES: ArtifactDelivery
ARTIFACT_DELIVERY_FILES: ArtifactDelivery

class RenderRequest(_message.Message):
    __slots__ = ("request_id", "panorama", "ods", "path", "keyframes_json", "seconds", "fps", "width", "height", "mesh_formats", "delivery", "output_dir")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PANORAMA_FIELD_NUMBER: _ClassVar[int]
    ODS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    KEYFRAMES_JSON_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MESH_FORMATS_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    panorama: _common_pb2.RGBD
    ods: bool
    path: CameraPath
    keyframes_json: str
    seconds: float
    fps: float
    width: int
    height: int
    mesh_formats: _containers.RepeatedScalarFieldContainer[MeshFormat]
    delivery: ArtifactDelivery
    output_dir: str
    def __init__(self, request_id: _Optional[str] = ..., panorama: _Optional[_Union[_common_pb2.RGBD, _Mapping]] = ..., ods: _Optional[bool] = ..., path: _Optional[_Union[CameraPath, str]] = ..., keyframes_json: _Optional[str] = ..., seconds: _Optional[float] = ..., fps: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., mesh_formats: _Optional[_Iterable[_Union[MeshFormat, str]]] = ..., delivery: _Optional[_Union[ArtifactDelivery, str]] = ..., output_dir: _Optional[str] = ...) -> None: ...

class RenderMetadata(_message.Message):
    __slots__ = ("request_id", "progress", "create_time")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    progress: _common_pb2.Progress
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("name", "media_type", "data", "path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    media_type: str
    data: bytes
    path: str
    def __init__(self, name: _Optional[str] = ..., media_type: _Optional[str] = ..., data: _Optional[bytes] = ..., path: _Optional[str] = ...) -> None: ...

class RenderResult(_message.Message):
    __slots__ = ("request_id", "artifacts")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    def __init__(self, request_id: _Optional[str] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ...) -> None: ...
