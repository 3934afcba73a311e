"""The telescope.v1.Collections servicer: create, get, list and delete collections by name."""

from __future__ import annotations

import grpc

from telescope.index import Collection, Plan
from telescope.pipelines.rollout import rollout_status
from telescope.proto.telescope.v1 import collections_pb2 as pb
from telescope.proto.telescope.v1 import collections_pb2_grpc
from telescope.server.errors import rpc
from telescope.server.state import ServerState


def rollout_message(collection: Collection, backfill_running: bool, backfill_error: str = "") -> pb.Rollout | None:
    status = rollout_status(collection)
    if status is None:
        return None
    return pb.Rollout(
        state=status.state,
        from_model_version=status.from_version,
        to_model_version=status.to_version,
        prefix_dim=status.prefix_dim,
        target_model_version=status.target_version,
        backfilled=status.backfilled,
        total=status.total,
        fraction=status.fraction,
        # a complete rollout has nothing left to backfill, even while its thread is still returning
        backfill_running=backfill_running and status.state != "complete",
        started=status.started,
        updated=status.updated,
        backfill_error=backfill_error,
    )


def collection_info(name: str, collection: Collection, backfill: tuple[bool, str] = (False, "")) -> pb.CollectionInfo:
    info = collection.info()
    return pb.CollectionInfo(
        name=name,
        points=info["points"],
        dim=info["dim"],
        default_plan=info["default_plan"],
        model=info["properties"].get("model", ""),
        model_version=info["properties"].get("model_version", ""),
        model_versions=info["model_versions"],
        generation=info["generation"],
        stage_one=info["stage_one"]["factory"],
        uncommitted_writes=info["uncommitted_writes"],
        rollout=rollout_message(collection, *backfill),
        vector_dtype=info["vector_dtype"],
    )


class CollectionsServicer(collections_pb2_grpc.CollectionsServicer):
    def __init__(self, state: ServerState):
        self.state = state
        self.stats = state.stats

    @rpc
    def Create(self, request: pb.CreateCollectionRequest, context: grpc.ServicerContext) -> pb.CollectionInfo:
        self.state.ready()
        if request.plan:
            self.state.limits.check_plan("plan", Plan.parse(request.plan))
        collection = self.state.registry.create(
            request.name,
            model=request.model or None,
            dim=request.dim if request.HasField("dim") else None,
            plan=request.plan or None,
            stage_one=request.stage_one or "Flat",
            stage_one_params=request.stage_one_params,
            vector_dtype=request.vector_dtype or "float32",
        )
        return collection_info(request.name, collection)

    @rpc
    def Get(self, request: pb.GetCollectionRequest, context: grpc.ServicerContext) -> pb.CollectionInfo:
        collection = self.state.collection(request.name, field="name")
        return collection_info(request.name, collection, self.state.registry.backfill_state(request.name))

    @rpc
    def List(self, request: pb.ListCollectionsRequest, context: grpc.ServicerContext) -> pb.ListCollectionsResponse:
        self.state.ready()
        registry = self.state.registry
        infos = []
        for name in registry.names():
            try:
                infos.append(collection_info(name, registry.collection(name), registry.backfill_state(name)))
            except LookupError:  # deleted meanwhile
                continue
        return pb.ListCollectionsResponse(collections=infos)

    @rpc
    def Delete(self, request: pb.DeleteCollectionRequest, context: grpc.ServicerContext) -> pb.DeleteCollectionResponse:
        self.state.ready()
        path = str(self.state.registry.collection(request.name, field="name").path)
        points = self.state.registry.delete(request.name)
        if self.state.replicas is not None:
            self.state.replicas.forget(path)
        return pb.DeleteCollectionResponse(points=points)
