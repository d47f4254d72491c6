import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from ldm3d.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SampleRequest(_message.Message):
    __slots__ = ("request_id", "cond", "uncond", "height", "width", "steps", "guidance_scale", "seed", "scheduler", "num_images", "init_latents", "strength", "model", "version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    COND_FIELD_NUMBER: _ClassVar[int]
    UNCOND_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    INIT_LATENTS_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cond: _common_pb2.Tensor
    uncond: _common_pb2.Tensor
    height: int
    width: int
    steps: int
    guidance_scale: float
    seed: int
    scheduler: str
    num_images: int
    init_latents: _common_pb2.Tensor
    strength: float
    model: str
    version: str
    def __init__(self, request_id: _Optional[str] = ..., cond: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., uncond: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., seed: _Optional[int] = ..., scheduler: _Optional[str] = ..., num_images: _Optional[int] = ..., init_latents: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., strength: _Optional[float] = ..., model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class SampleResult(_message.Message):
    __slots__ = ("latents", "seed", "model_version", "scheduler", "steps", "queued", "sampling")
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    latents: _common_pb2.Tensor
    seed: int
    model_version: str
    scheduler: str
    steps: int
    queued: _duration_pb2.Duration
    sampling: _duration_pb2.Duration
    def __init__(self, latents: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., seed: _Optional[int] = ..., model_version: _Optional[str] = ..., scheduler: _Optional[str] = ..., steps: _Optional[int] = ..., queued: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., sampling: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("request_id", "progress", "result")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    progress: _common_pb2.Progress
    result: SampleResult
    def __init__(self, request_id: _Optional[str] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., result: _Optional[_Union[SampleResult, _Mapping]] = ...) -> None: ...
