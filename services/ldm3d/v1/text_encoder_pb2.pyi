from ldm3d.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncodeTextRequest(_message.Message):
    __slots__ = ("request_id", "prompts", "model", "version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    prompts: _containers.RepeatedScalarFieldContainer[str]
    model: str
    version: str
    def __init__(self, request_id: _Optional[str] = ..., prompts: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class EncodeTextResponse(_message.Message):
    __slots__ = ("request_id", "embeddings", "token_counts", "truncated_tokens", "model_version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    embeddings: _common_pb2.Tensor
    token_counts: _containers.RepeatedScalarFieldContainer[int]
    truncated_tokens: _containers.RepeatedScalarFieldContainer[int]
    model_version: str
    def __init__(self, request_id: _Optional[str] = ..., embeddings: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., token_counts: _Optional[_Iterable[int]] = ..., truncated_tokens: _Optional[_Iterable[int]] = ..., model_version: _Optional[str] = ...) -> None: ...
