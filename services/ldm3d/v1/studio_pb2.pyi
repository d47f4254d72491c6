import datetime

from google.longrunning import operations_pb2 as _operations_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ldm3d.v1 import common_pb2 as _common_pb2
from ldm3d.v1 import renderer_pb2 as _renderer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union
from ldm3d.v1.common_pb2 import Tensor as Tensor
from ldm3d.v1.common_pb2 import Image as Image
from ldm3d.v1.common_pb2 import RGBD as RGBD
from ldm3d.v1.common_pb2 import Progress as Progress
from ldm3d.v1.common_pb2 import Timings as Timings
from ldm3d.v1.common_pb2 import DataType as DataType
from ldm3d.v1.common_pb2 import ImageEncoding as ImageEncoding
from ldm3d.v1.common_pb2 import OperationState as OperationState

DESCRIPTOR: _descriptor.FileDescriptor
DATA_TYPE_UNSPECIFIED: _common_pb2.DataType
DATA_TYPE_FLOAT32: _common_pb2.DataType
DATA_TYPE_FLOAT16: _common_pb2.DataType
DATA_TYPE_UINT8: _common_pb2.DataType
DATA_TYPE_UINT16: _common_pb2.DataType
DATA_TYPE_INT32: _common_pb2.DataType
DATA_TYPE_INT64: _common_pb2.DataType
IMAGE_ENCODING_UNSPECIFIED: _common_pb2.ImageEncoding
IMAGE_ENCODING_PNG: _common_pb2.ImageEncoding
IMAGE_ENCODING_RAW: _common_pb2.ImageEncoding
OPERATION_STATE_UNSPECIFIED: _common_pb2.OperationState
OPERATION_STATE_QUEUED: _common_pb2.OperationState
OPERATION_STATE_RUNNING: _common_pb2.OperationState
OPERATION_STATE_SUCCEEDED: _common_pb2.OperationState
OPERATION_STATE_FAILED: _common_pb2.OperationState
OPERATION_STATE_CANCELLED: _common_pb2.OperationState

class GenerateRequest(_message.Message):
    __slots__ = ("request_id", "prompt", "negative_prompt", "height", "width", "steps", "guidance_scale", "seed", "scheduler", "model", "version", "num_images", "image_encoding", "init_image", "strength")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    prompt: str
    negative_prompt: str
    height: int
    width: int
    steps: int
    guidance_scale: float
    seed: int
    scheduler: str
    model: str
    version: str
    num_images: int
    image_encoding: _common_pb2.ImageEncoding
    init_image: _common_pb2.RGBD
    strength: float
    def __init__(self, request_id: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., seed: _Optional[int] = ..., scheduler: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., num_images: _Optional[int] = ..., image_encoding: _Optional[_Union[_common_pb2.ImageEncoding, str]] = ..., init_image: _Optional[_Union[_common_pb2.RGBD, _Mapping]] = ..., strength: _Optional[float] = ...) -> None: ...

class GenerateResult(_message.Message):
    __slots__ = ("request_id", "images", "seed", "model", "model_version", "timings", "metadata_json")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.RGBD]
    seed: int
    model: str
    model_version: str
    timings: _common_pb2.Timings
    metadata_json: str
    def __init__(self, request_id: _Optional[str] = ..., images: _Optional[_Iterable[_Union[_common_pb2.RGBD, _Mapping]]] = ..., seed: _Optional[int] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("request_id", "progress", "result")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    progress: _common_pb2.Progress
    result: GenerateResult
    def __init__(self, request_id: _Optional[str] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., result: _Optional[_Union[GenerateResult, _Mapping]] = ...) -> None: ...

class GenerateBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[GenerateRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[GenerateRequest, _Mapping]]] = ...) -> None: ...

class GenerateBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[GenerateResult]
    def __init__(self, results: _Optional[_Iterable[_Union[GenerateResult, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "versions", "default_version", "source", "rgbd_channels", "default_height", "default_width", "default_scheduler", "is_default", "canary_version", "canary_percent", "releases")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RGBD_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    CANARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    default_version: str
    source: str
    rgbd_channels: int
    default_height: int
    default_width: int
    default_scheduler: str
    is_default: bool
    canary_version: str
    canary_percent: int
    releases: _containers.RepeatedCompositeFieldContainer[ReleaseInfo]
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., default_version: _Optional[str] = ..., source: _Optional[str] = ..., rgbd_channels: _Optional[int] = ..., default_height: _Optional[int] = ..., default_width: _Optional[int] = ..., default_scheduler: _Optional[str] = ..., is_default: _Optional[bool] = ..., canary_version: _Optional[str] = ..., canary_percent: _Optional[int] = ..., releases: _Optional[_Iterable[_Union[ReleaseInfo, _Mapping]]] = ...) -> None: ...

class ReleaseInfo(_message.Message):
    __slots__ = ("version", "model_versions", "state", "detail", "created")
    class ModelVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    version: str
    model_versions: _containers.ScalarMap[str, int]
    state: str
    detail: str
    created: str
    def __init__(self, version: _Optional[str] = ..., model_versions: _Optional[_Mapping[str, int]] = ..., state: _Optional[str] = ..., detail: _Optional[str] = ..., created: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GenerateMetadata(_message.Message):
    __slots__ = ("request_id", "state", "progress", "create_time", "update_time")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    state: _common_pb2.OperationState
    progress: _common_pb2.Progress
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.OperationState, str]] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PanoRequest(_message.Message):
    __slots__ = ("request_id", "generate", "render")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATE_FIELD_NUMBER: _ClassVar[int]
    RENDER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    generate: GenerateRequest
    render: _renderer_pb2.RenderRequest
    def __init__(self, request_id: _Optional[str] = ..., generate: _Optional[_Union[GenerateRequest, _Mapping]] = ..., render: _Optional[_Union[_renderer_pb2.RenderRequest, _Mapping]] = ...) -> None: ...

class PanoMetadata(_message.Message):
    __slots__ = ("request_id", "state", "stage", "progress", "message", "create_time", "update_time")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    state: _common_pb2.OperationState
    stage: str
    progress: _common_pb2.Progress
    message: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.OperationState, str]] = ..., stage: _Optional[str] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., message: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PanoResult(_message.Message):
    __slots__ = ("request_id", "generation", "render")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    RENDER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    generation: GenerateResult
    render: _renderer_pb2.RenderResult
    def __init__(self, request_id: _Optional[str] = ..., generation: _Optional[_Union[GenerateResult, _Mapping]] = ..., render: _Optional[_Union[_renderer_pb2.RenderResult, _Mapping]] = ...) -> None: ...
