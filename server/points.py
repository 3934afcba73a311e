"""The telescope.v1.Points servicer: upsert (unary and client-streaming), delete and get points.

Text points are embedded by the collection's model at the collection's dim (a prefix of the model's: nested
embeddings) through ``telescope.pipelines.ingest`` (the one embed-and-upsert loop), in chunks
with a deadline check between them: a request abandoned at its deadline leaves the chunks before it written
(upserts are idempotent, so the client retries the whole request).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import numpy as np

from telescope.index import Collection
from telescope.index.checks import check_ids
from telescope.pipelines import ingest
from telescope.pipelines.ingest import text_field
from telescope.pipelines.rollout import check_writable_version
from telescope.proto.telescope.v1 import common_pb2, points_pb2 as pb
from telescope.proto.telescope.v1 import points_pb2_grpc
from telescope.server.convert import payload_dict, struct_message, vector_message, vector_values
from telescope.server.errors import check_alive, prefixed, rpc
from telescope.server.state import ServerState

TEXT_CHUNK = 64  # texts embedded between two deadline checks


class PointsServicer(points_pb2_grpc.PointsServicer):
    def __init__(self, state: ServerState):
        self.state = state
        self.stats = state.stats

    @rpc
    def Upsert(self, request: pb.UpsertPointsRequest, context: grpc.ServicerContext) -> pb.UpsertPointsResponse:
        collection = self.state.collection(request.collection)
        with self._writing(request.collection, collection):
            upserted, truncated = self._write(request, collection, context)
        return pb.UpsertPointsResponse(upserted=upserted, points=len(collection), truncated_texts=truncated)

    @rpc
    def UpsertStream(
        self, requests: Iterator[pb.UpsertPointsRequest], context: grpc.ServicerContext
    ) -> pb.UpsertPointsResponse:
        self.state.ready()
        name, collection, upserted, truncated = None, None, 0, 0
        for i, request in enumerate(requests):
            try:
                check_alive(context, f"message {i}")
                if name is None:
                    name = request.collection
                elif request.collection not in ("", name):
                    raise ValueError(f"collection: expected {name!r} (as in message 0) or '', got {request.collection!r}")
                collection = self.state.collection(name)  # each message: the collection may be deleted meanwhile
                with self._writing(name, collection):
                    n, t = self._write(request, collection, context)
            except Exception as e:
                raise prefixed(e, f"message {i}: ", f" ({upserted} points of earlier messages were written)") from e
            upserted, truncated = upserted + n, truncated + t
        if collection is None:
            raise ValueError("requests: expected at least one message naming the collection, got none")
        return pb.UpsertPointsResponse(upserted=upserted, points=len(collection), truncated_texts=truncated)

    def _write(self, request: pb.UpsertPointsRequest, collection: Collection, context: grpc.ServicerContext) -> tuple[int, int]:
        """Upsert one message's points; returns (points written, texts truncated)."""
        limits = self.state.limits
        points = request.points
        limits.check_count("points", len(points), limits.max_points_per_request, "; split it or use UpsertStream")
        if not points:
            return 0, 0
        kind = points[0].WhichOneof("data")
        ids, payloads = [], []
        for i, point in enumerate(points):
            this = point.WhichOneof("data")
            if this is None:
                raise ValueError(f"points[{i}].data: expected a vector or a text, got neither")
            if this != kind:
                raise ValueError(f"points[{i}].data: expected a {kind} like points[0] (one kind per message), got a {this}")
            if not point.id:
                raise ValueError(f"points[{i}].id: expected a non-empty string, got ''")
            ids.append(point.id)
            payloads.append(_payload(point, f"points[{i}].payload"))
        check_ids(ids)  # here, not per chunk of texts: a repeated id fails the request before anything is written
        if kind == "vector":
            version = request.model_version or collection.properties.get("model_version") or "unknown"
            check_writable_version(collection, version)
            dim = collection.version_dim(version)  # the collection's dim, or an older version's own (rollouts)
            vectors = np.stack([vector_values(p.vector, f"points[{i}].vector", (dim, dim)) for i, p in enumerate(points)])
            collection.upsert(ids, vectors, payloads, model_version=version)
            return len(ids), 0
        return self._write_texts(request, collection, ids, payloads, context)

    def _write_texts(
        self, request: pb.UpsertPointsRequest, collection: Collection, ids: list[str], payloads: list[dict],
        context: grpc.ServicerContext,
    ) -> tuple[int, int]:
        texts, field = [], text_field(collection)
        for i, point in enumerate(request.points):
            if not point.text.strip():
                raise ValueError(f"points[{i}].text: expected a non-empty text, got {point.text!r}")
            self.state.limits.check_text(f"points[{i}].text", point.text)
            texts.append(point.text)
            payloads[i].setdefault(field, point.text)
        embedder = self.state.registry.query_model(collection)
        if request.model_version not in ("", embedder.manifest.tag):
            raise ValueError(
                f"model_version: expected '' or the collection's model {embedder.manifest.tag!r} for text points "
                f"(the server embeds them), got {request.model_version!r}"
            )
        written = truncated = 0
        for start in range(0, len(texts), TEXT_CHUNK):
            check_alive(context, f"embedding points[{start}:]")
            stop = start + TEXT_CHUNK
            report = ingest(collection, embedder, ids[start:stop], texts[start:stop], payloads[start:stop],
                            batch_size=TEXT_CHUNK, show_progress=False)
            written, truncated = written + report.points, truncated + report.truncated
        return written, truncated

    @rpc
    def Delete(self, request: pb.DeletePointsRequest, context: grpc.ServicerContext) -> pb.DeletePointsResponse:
        collection = self.state.collection(request.collection)
        ids = self._ids(request.ids)
        with self._writing(request.collection, collection):
            deleted = collection.delete(ids, missing="ignore" if request.ignore_missing else "error")
        return pb.DeletePointsResponse(deleted=deleted)

    @contextmanager
    def _writing(self, name: str, collection: Collection) -> Iterator[None]:
        """Writes to ``collection``: when it is deleted meanwhile (its object closed) the call fails with NOT_FOUND,
        not with the closed object's FAILED_PRECONDITION naming a path on the server."""
        try:
            yield
        except RuntimeError:
            try:
                held = self.state.registry.collection(name)
            except LookupError:
                held = None
            if held is collection:
                raise
            raise LookupError(f"collection: {name!r} was deleted while this call wrote to it") from None

    @rpc
    def Get(self, request: pb.GetPointsRequest, context: grpc.ServicerContext) -> pb.GetPointsResponse:
        collection = self.state.collection(request.collection)
        ids = self._ids(request.ids)
        found, missing = [], []
        for point_id, point in zip(ids, collection.get(ids)):
            if point is None:
                missing.append(point_id)
                continue
            found.append(
                common_pb2.Point(
                    id=point.id,
                    vector=vector_message(point.vector) if request.with_vector else None,
                    payload=struct_message(point.payload),
                    model_version=point.model_version,
                )
            )
        return pb.GetPointsResponse(points=found, missing=missing)

    def _ids(self, ids) -> list[str]:
        limits = self.state.limits
        limits.check_count("ids", len(ids), limits.max_ids_per_request)
        if not ids:
            raise ValueError("ids: expected at least one id, got none")
        for i, point_id in enumerate(ids):
            if not point_id:
                raise ValueError(f"ids[{i}]: expected a non-empty string, got ''")
        return list(ids)


def _payload(point: pb.PointInput, field: str) -> dict:
    try:
        return payload_dict(point.payload)
    except ValueError as e:  # a NaN or infinite number
        raise ValueError(f"{field}: expected finite numbers (JSON has no NaN or Infinity); {e}") from None
