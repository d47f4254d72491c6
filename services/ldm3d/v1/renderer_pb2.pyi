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
    __slots__ = ("request_id", "panorama", "ods", "path", "keyframes_json", "seconds", "fps", "width", "height", "mesh_formats", "delivery", "output_dir", "mono360", "eye_width", "eye_height", "stereo", "video360", "view_hfov", "projection", "cap_hfov", "depth_mapping", "depth_strength", "normalize_depth", "radius", "ipd", "edge_threshold", "renderer", "crf", "mesh_step")
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
    MONO360_FIELD_NUMBER: _ClassVar[int]
    EYE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    EYE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEREO_FIELD_NUMBER: _ClassVar[int]
    VIDEO360_FIELD_NUMBER: _ClassVar[int]
    VIEW_HFOV_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    CAP_HFOV_FIELD_NUMBER: _ClassVar[int]
    DEPTH_MAPPING_FIELD_NUMBER: _ClassVar[int]
    DEPTH_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    RADIUS_FIELD_NUMBER: _ClassVar[int]
    IPD_FIELD_NUMBER: _ClassVar[int]
    EDGE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    RENDERER_FIELD_NUMBER: _ClassVar[int]
    CRF_FIELD_NUMBER: _ClassVar[int]
    MESH_STEP_FIELD_NUMBER: _ClassVar[int]
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
    mono360: bool
    eye_width: int
    eye_height: int
    stereo: bool
    video360: bool
    view_hfov: float
    projection: str
    cap_hfov: float
    depth_mapping: str
    depth_strength: float
    normalize_depth: bool
    radius: float
    ipd: float
    edge_threshold: float
    renderer: str
    crf: int
    mesh_step: int
    def __init__(self, request_id: _Optional[str] = ..., panorama: _Optional[_Union[_common_pb2.RGBD, _Mapping]] = ..., ods: _Optional[bool] = ..., path: _Optional[_Union[CameraPath, str]] = ..., keyframes_json: _Optional[str] = ..., seconds: _Optional[float] = ..., fps: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., mesh_formats: _Optional[_Iterable[_Union[MeshFormat, str]]] = ..., delivery: _Optional[_Union[ArtifactDelivery, str]] = ..., output_dir: _Optional[str] = ..., mono360: _Optional[bool] = ..., eye_width: _Optional[int] = ..., eye_height: _Optional[int] = ..., stereo: _Optional[bool] = ..., video360: _Optional[bool] = ..., view_hfov: _Optional[float] = ..., projection: _Optional[str] = ..., cap_hfov: _Optional[float] = ..., depth_mapping: _Optional[str] = ..., depth_strength: _Optional[float] = ..., normalize_depth: _Optional[bool] = ..., radius: _Optional[float] = ..., ipd: _Optional[float] = ..., edge_threshold: _Optional[float] = ..., renderer: _Optional[str] = ..., crf: _Optional[int] = ..., mesh_step: _Optional[int] = ...) -> None: ...

class RenderMetadata(_message.Message):
    __slots__ = ("request_id", "progress", "create_time", "state", "update_time", "message")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    progress: _common_pb2.Progress
    create_time: _timestamp_pb2.Timestamp
    state: _common_pb2.OperationState
    update_time: _timestamp_pb2.Timestamp
    message: str
    def __init__(self, request_id: _Optional[str] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[_common_pb2.OperationState, str]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("name", "media_type", "data", "path", "metadata_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    media_type: str
    data: bytes
    path: str
    metadata_json: str
    def __init__(self, name: _Optional[str] = ..., media_type: _Optional[str] = ..., data: _Optional[bytes] = ..., path: _Optional[str] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class RenderResult(_message.Message):
    __slots__ = ("request_id", "artifacts", "projection", "panorama_width", "panorama_height")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    PANORAMA_WIDTH_FIELD_NUMBER: _ClassVar[int]
    PANORAMA_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    projection: str
    panorama_width: int
    panorama_height: int
    def __init__(self, request_id: _Optional[str] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., projection: _Optional[str] = ..., panorama_width: _Optional[int] = ..., panorama_height: _Optional[int] = ...) -> None: ...
