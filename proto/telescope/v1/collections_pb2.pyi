from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "model", "dim", "plan", "stage_one", "stage_one_params", "vector_dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    STAGE_ONE_FIELD_NUMBER: _ClassVar[int]
    STAGE_ONE_PARAMS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    dim: int
    plan: str
    stage_one: str
    stage_one_params: str
    vector_dtype: str
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., dim: _Optional[int] = ..., plan: _Optional[str] = ..., stage_one: _Optional[str] = ..., stage_one_params: _Optional[str] = ..., vector_dtype: _Optional[str] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "points", "dim", "default_plan", "model", "model_version", "model_versions", "generation", "stage_one", "uncommitted_writes", "rollout", "vector_dtype")
    class ModelVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PLAN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    STAGE_ONE_FIELD_NUMBER: _ClassVar[int]
    UNCOMMITTED_WRITES_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    points: int
    dim: int
    default_plan: str
    model: str
    model_version: str
    model_versions: _containers.ScalarMap[str, int]
    generation: int
    stage_one: str
    uncommitted_writes: int
    rollout: Rollout
    vector_dtype: str
    def __init__(self, name: _Optional[str] = ..., points: _Optional[int] = ..., dim: _Optional[int] = ..., default_plan: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., model_versions: _Optional[_Mapping[str, int]] = ..., generation: _Optional[int] = ..., stage_one: _Optional[str] = ..., uncommitted_writes: _Optional[int] = ..., rollout: _Optional[_Union[Rollout, _Mapping]] = ..., vector_dtype: _Optional[str] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("state", "from_model_version", "to_model_version", "prefix_dim", "target_model_version", "backfilled", "total", "fraction", "backfill_running", "started", "updated", "backfill_error")
    STATE_FIELD_NUMBER: _ClassVar[int]
    FROM_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREFIX_DIM_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKFILLED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_RUNNING_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_ERROR_FIELD_NUMBER: _ClassVar[int]
    state: str
    from_model_version: str
    to_model_version: str
    prefix_dim: int
    target_model_version: str
    backfilled: int
    total: int
    fraction: float
    backfill_running: bool
    started: float
    updated: float
    backfill_error: str
    def __init__(self, state: _Optional[str] = ..., from_model_version: _Optional[str] = ..., to_model_version: _Optional[str] = ..., prefix_dim: _Optional[int] = ..., target_model_version: _Optional[str] = ..., backfilled: _Optional[int] = ..., total: _Optional[int] = ..., fraction: _Optional[float] = ..., backfill_running: _Optional[bool] = ..., started: _Optional[float] = ..., updated: _Optional[float] = ..., backfill_error: _Optional[str] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: int
    def __init__(self, points: _Optional[int] = ...) -> None: ...
