from ldm3d.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EstimateDepthRequest(_message.Message):
    __slots__ = ("request_id", "rgb", "image_encoding", "model", "version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    rgb: _common_pb2.Image
    image_encoding: _common_pb2.ImageEncoding
    model: str
    version: str
    def __init__(self, request_id: _Optional[str] = ..., rgb: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., image_encoding: _Optional[_Union[_common_pb2.ImageEncoding, str]] = ..., model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class EstimateDepthResponse(_message.Message):
    __slots__ = ("request_id", "depth", "model_version", "model")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    depth: _common_pb2.Image
    model_version: str
    model: str
    def __init__(self, request_id: _Optional[str] = ..., depth: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., model_version: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class EvaluateDepthRequest(_message.Message):
    __slots__ = ("request_id", "predicted_depth", "reference_depth", "rgb", "reference_depth_scale", "sample_pixels", "seed", "include_aligned", "flip_aug", "reference_model", "reference_version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_DEPTH_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_DEPTH_SCALE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ALIGNED_FIELD_NUMBER: _ClassVar[int]
    FLIP_AUG_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_MODEL_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    predicted_depth: _common_pb2.Image
    reference_depth: _common_pb2.Image
    rgb: _common_pb2.Image
    reference_depth_scale: float
    sample_pixels: int
    seed: int
    include_aligned: bool
    flip_aug: bool
    reference_model: str
    reference_version: str
    def __init__(self, request_id: _Optional[str] = ..., predicted_depth: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., reference_depth: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., rgb: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., reference_depth_scale: _Optional[float] = ..., sample_pixels: _Optional[int] = ..., seed: _Optional[int] = ..., include_aligned: _Optional[bool] = ..., flip_aug: _Optional[bool] = ..., reference_model: _Optional[str] = ..., reference_version: _Optional[str] = ...) -> None: ...

class DepthMetrics(_message.Message):
    __slots__ = ("abs_rel", "rmse", "scale", "shift", "valid_pixels", "sampled_pixels", "evaluated_pixels", "nonpositive_pixels", "samples", "seed")
    ABS_REL_FIELD_NUMBER: _ClassVar[int]
    RMSE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    SHIFT_FIELD_NUMBER: _ClassVar[int]
    VALID_PIXELS_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_PIXELS_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_PIXELS_FIELD_NUMBER: _ClassVar[int]
    NONPOSITIVE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    abs_rel: float
    rmse: float
    scale: float
    shift: float
    valid_pixels: int
    sampled_pixels: int
    evaluated_pixels: int
    nonpositive_pixels: int
    samples: int
    seed: int
    def __init__(self, abs_rel: _Optional[float] = ..., rmse: _Optional[float] = ..., scale: _Optional[float] = ..., shift: _Optional[float] = ..., valid_pixels: _Optional[int] = ..., sampled_pixels: _Optional[int] = ..., evaluated_pixels: _Optional[int] = ..., nonpositive_pixels: _Optional[int] = ..., samples: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class EvaluateDepthResponse(_message.Message):
    __slots__ = ("request_id", "metrics", "aligned_depth", "reference_model", "reference_model_version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_DEPTH_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_MODEL_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    metrics: DepthMetrics
    aligned_depth: _common_pb2.Tensor
    reference_model: str
    reference_model_version: str
    def __init__(self, request_id: _Optional[str] = ..., metrics: _Optional[_Union[DepthMetrics, _Mapping]] = ..., aligned_depth: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., reference_model: _Optional[str] = ..., reference_model_version: _Optional[str] = ...) -> None: ...
