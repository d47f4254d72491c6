from ldm3d.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecodeLatentsRequest(_message.Message):
    __slots__ = ("request_id", "latents", "image_encoding", "include_decoded", "model", "version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DECODED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    latents: _common_pb2.Tensor
    image_encoding: _common_pb2.ImageEncoding
    include_decoded: bool
    model: str
    version: str
    def __init__(self, request_id: _Optional[str] = ..., latents: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., image_encoding: _Optional[_Union[_common_pb2.ImageEncoding, str]] = ..., include_decoded: _Optional[bool] = ..., model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DecodeLatentsResponse(_message.Message):
    __slots__ = ("request_id", "images", "decoded", "model_version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    DECODED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.RGBD]
    decoded: _common_pb2.Tensor
    model_version: str
    def __init__(self, request_id: _Optional[str] = ..., images: _Optional[_Iterable[_Union[_common_pb2.RGBD, _Mapping]]] = ..., decoded: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., model_version: _Optional[str] = ...) -> None: ...

class EncodeRGBDRequest(_message.Message):
    __slots__ = ("request_id", "image", "model", "version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    image: _common_pb2.RGBD
    model: str
    version: str
    def __init__(self, request_id: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.RGBD, _Mapping]] = ..., model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class EncodeRGBDResponse(_message.Message):
    __slots__ = ("request_id", "latents", "model_version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    latents: _common_pb2.Tensor
    model_version: str
    def __init__(self, request_id: _Optional[str] = ..., latents: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., model_version: _Optional[str] = ...) -> None: ...
