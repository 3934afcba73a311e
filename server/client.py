"""The Python client of the telescope gRPC API.

    from telescope.server.client import Client

    with Client("127.0.0.1:50051", token="...") as client:
        client.create_collection("docs")
        client.upsert("docs", ids=["a", "b"], texts=["a cat", "a dog"], payloads=[{"lang": "en"}, {"lang": "en"}])
        result = client.search("docs", text="kitten", k=5, where={"lang": "en"})
        for hit in result.hits:
            print(hit.score, hit.id, hit.payload)

Results are the library's own ``Hit`` and ``Point``. A failed call raises ``RemoteError`` (a RuntimeError
carrying the gRPC status ``code`` and the server's message). Calls have a deadline (``timeout`` seconds, 30 by
default) and use gzip, but for single searches (a query vector does not compress; a query text is short).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from telescope.index import Hit, Point
from telescope.proto.telescope.v1 import (
    collections_pb2,
    collections_pb2_grpc,
    embed_pb2,
    embed_pb2_grpc,
    points_pb2,
    points_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)
from telescope.server.auth import check_token
from telescope.server.convert import payload_dict, struct_message, vector_array, vector_message
from telescope.server.errors import prefixed

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class RemoteError(RuntimeError):
    """A call the server refused or failed: ``code`` is the gRPC status, ``details`` the server's message."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str):
        super().__init__(f"{method}: {code.name}: {details}")
        self.method, self.code, self.details = method, code, details

    def __reduce__(self):  # pickled with its fields (Ray and multiprocessing workers hand errors back)
        return type(self), (self.method, self.code, self.details)


@dataclass
class SearchResult:
    hits: list[Hit]
    plan: str
    model_version: str
    embed_ms: float  # server time embedding the query text
    search_ms: float  # server time in the index


def _search_request(
    collection: str,
    text: str | None = None,
    vector: Sequence[float] | np.ndarray | None = None,
    k: int | None = None,
    plan: str | None = None,
    recall_target: float | None = None,
    where: dict | None = None,
    model_version: str = "",
    with_payload: bool = True,
) -> search_pb2.SearchRequest:
    if (text is None) == (vector is None):
        raise ValueError("query: expected exactly one of text or vector")
    request = search_pb2.SearchRequest(collection=collection, model_version=model_version, with_payload=with_payload)
    if text is not None:
        request.text = text
    else:
        request.vector.CopyFrom(vector_message(vector))
    if k is not None:
        request.k = k
    if plan is not None:
        request.plan = plan
    if recall_target is not None:
        request.recall_target = recall_target
    for key, value in (where or {}).items():
        match = request.filter.must.add(key=key)
        match.value.CopyFrom(struct_message({"v": value}).fields["v"])
    return request


def _hits(response: search_pb2.SearchResponse) -> SearchResult:
    hits = [Hit(h.id, h.score, payload_dict(h.payload), h.model_version) for h in response.hits]
    return SearchResult(hits, response.plan, response.model_version, response.embed_ms, response.search_ms)


def _point_inputs(
    ids: Sequence[str], vectors: np.ndarray | None, texts: Sequence[str] | None, payloads: Sequence[dict] | None
) -> list[points_pb2.PointInput]:
    if (vectors is None) == (texts is None):
        raise ValueError("points: expected exactly one of vectors or texts")
    data = texts if texts is not None else np.asarray(vectors, dtype=np.float32)
    if len(data) != len(ids) or (payloads is not None and len(payloads) != len(ids)):
        raise ValueError(f"points: expected one vector or text (and payload) per id ({len(ids)}), got {len(data)}")
    points = []
    for i, point_id in enumerate(ids):
        point = points_pb2.PointInput(id=point_id, payload=struct_message(payloads[i]) if payloads else None)
        if texts is not None:
            point.text = texts[i]
        else:
            point.vector.CopyFrom(vector_message(data[i]))
        points.append(point)
    return points


class _Batches(Iterator):
    """The messages of a client-streaming call, made from the caller's batches as gRPC asks for them, keeping the
    error a batch raised: gRPC itself only ends the call with UNKNOWN 'Exception iterating requests!'."""

    def __init__(self, batches: Iterable, message: Callable):
        self._batches, self._message = iter(batches), message
        self._sent = 0
        self.error: Exception | None = None

    def __next__(self):
        try:
            request = self._message(self._sent, next(self._batches))
        except StopIteration:
            raise
        except Exception as e:  # the caller's iterable, or a batch that makes no message
            self.error = prefixed(e, f"batches[{self._sent}]: ")
            raise
        self._sent += 1
        return request

    def raise_error(self) -> None:
        """Raise the batch's error, if one ended the call."""
        if self.error is not None:
            raise self.error from None


class Client:
    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls_ca: str | Path | bytes | None = None,
        timeout: float | None = 30.0,
        gzip: bool = True,
    ):
        """Connect to ``target`` ("host:port"); ``tls_ca``: the CA (or self-signed) certificate for TLS."""
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", -1)]
        # Compression is chosen per call (a channel default cannot be turned off for one call: grpc ignores
        # ``compression=NoCompression``, whose value is 0).
        self._compression = grpc.Compression.Gzip if gzip else None
        if tls_ca is not None:
            ca = tls_ca if isinstance(tls_ca, bytes) else Path(tls_ca).read_bytes()
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(ca), options)
        else:
            self.channel = grpc.insecure_channel(target, options)
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {check_token(token)}"),) if token else ()
        self.collections = collections_pb2_grpc.CollectionsStub(self.channel)
        self.points = points_pb2_grpc.PointsStub(self.channel)
        self.searches = search_pb2_grpc.SearchStub(self.channel)
        self.embeds = embed_pb2_grpc.EmbedStub(self.channel)
        self.healths = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: Callable, request, timeout: float | None = None, name: str = "", compress: bool = True):
        """``compress=False``: send the request as it is (a single search: float vectors do not shrink in gzip,
        1,553 bytes of a 384-dim query gave 1,499, and compressing cost client and server 0.2 and 0.4 ms a call)."""
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata,
                          compression=self._compression if compress else None)
        except grpc.RpcError as e:
            raise RemoteError(name, e.code(), e.details()) from None

    # -- health ------------------------------------------------------------------------------------------------
    def health(self, service: str = "", timeout: float = 5.0) -> str:
        """SERVING, NOT_SERVING, ... of the server (or one service) from grpc.health.v1."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = self._call(self.healths.Check, request, timeout, "Health.Check")
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll health until SERVING (bounded by ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                last = self.health(timeout=2.0)
                if last == "SERVING":
                    return
            except RemoteError as e:
                last = e.code.name
            time.sleep(0.05)
        raise TimeoutError(f"server {self.target}: expected SERVING within {timeout} s, got {last}")

    # -- collections -------------------------------------------------------------------------------------------
    def create_collection(
        self, name: str, model: str = "", dim: int | None = None, plan: str = "", stage_one: str = "",
        stage_one_params: str = "", vector_dtype: str = "",
    ) -> collections_pb2.CollectionInfo:
        request = collections_pb2.CreateCollectionRequest(
            name=name, model=model, dim=dim, plan=plan, stage_one=stage_one, stage_one_params=stage_one_params,
            vector_dtype=vector_dtype,
        )
        return self._call(self.collections.Create, request, name="Collections.Create")

    def get_collection(self, name: str) -> collections_pb2.CollectionInfo:
        return self._call(self.collections.Get, collections_pb2.GetCollectionRequest(name=name), name="Collections.Get")

    def list_collections(self) -> list[collections_pb2.CollectionInfo]:
        request = collections_pb2.ListCollectionsRequest()
        return list(self._call(self.collections.List, request, name="Collections.List").collections)

    def delete_collection(self, name: str) -> int:
        request = collections_pb2.DeleteCollectionRequest(name=name)
        return self._call(self.collections.Delete, request, name="Collections.Delete").points

    # -- points ------------------------------------------------------------------------------------------------
    def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: np.ndarray | None = None,
        texts: Sequence[str] | None = None,
        payloads: Sequence[dict] | None = None,
        model_version: str = "",
    ) -> points_pb2.UpsertPointsResponse:
        """Write points given as vectors, or as texts the server embeds with the collection's model."""
        request = points_pb2.UpsertPointsRequest(
            collection=collection, points=_point_inputs(ids, vectors, texts, payloads), model_version=model_version
        )
        return self._call(self.points.Upsert, request, name="Points.Upsert")

    def upsert_stream(
        self, collection: str, batches: Iterable[dict], timeout: float | None = None
    ) -> points_pb2.UpsertPointsResponse:
        """Stream batches (dicts of ``upsert``'s keyword arguments: ids, vectors or texts, payloads). A batch that
        cannot be sent raises its own error (``batches[i]: ...``); the batches before it may have been written."""

        def message(i: int, batch: dict) -> points_pb2.UpsertPointsRequest:
            return points_pb2.UpsertPointsRequest(
                collection=collection if i == 0 else "",
                points=_point_inputs(batch["ids"], batch.get("vectors"), batch.get("texts"), batch.get("payloads")),
                model_version=batch.get("model_version", ""),
            )

        messages = _Batches(batches, message)
        try:
            return self._call(self.points.UpsertStream, messages, timeout, "Points.UpsertStream")
        except RemoteError:
            messages.raise_error()
            raise

    def delete(self, collection: str, ids: Sequence[str], ignore_missing: bool = False) -> int:
        request = points_pb2.DeletePointsRequest(collection=collection, ids=list(ids), ignore_missing=ignore_missing)
        return self._call(self.points.Delete, request, name="Points.Delete").deleted

    def get(self, collection: str, ids: Sequence[str], with_vector: bool = False) -> list[Point | None]:
        """The stored points in the order asked, None for ids not stored."""
        request = points_pb2.GetPointsRequest(collection=collection, ids=list(ids), with_vector=with_vector)
        response = self._call(self.points.Get, request, name="Points.Get")
        found = {
            p.id: Point(
                p.id,
                vector_array(p.vector) if with_vector else None,
                payload_dict(p.payload),
                p.model_version,
            )
            for p in response.points
        }
        return [found.get(i) for i in ids]

    # -- search ------------------------------------------------------------------------------------------------
    def search(self, collection: str, text: str | None = None, vector=None, **options) -> SearchResult:
        """One search by ``text`` or ``vector``; options: k, plan, recall_target, where, model_version, with_payload."""
        request = _search_request(collection, text, vector, **options)
        return _hits(self._call(self.searches.Search, request, name="Search.Search", compress=False))

    def search_batch(self, collection: str, queries: Sequence[str | np.ndarray], **options) -> list[SearchResult]:
        """Several searches with the same options; each query a text or a vector."""
        searches = [
            _search_request("", q, None, **options) if isinstance(q, str) else _search_request("", None, q, **options)
            for q in queries
        ]
        request = search_pb2.SearchBatchRequest(collection=collection, searches=searches)
        response = self._call(self.searches.SearchBatch, request, name="Search.SearchBatch")
        return [_hits(r) for r in response.results]

    # -- embed -------------------------------------------------------------------------------------------------
    def embed(self, texts: Sequence[str], layer: int | None = None, dim: int | None = None, model: str = "") -> np.ndarray:
        """Unit vectors of ``texts`` at (layer, dim), float32 (len(texts), dim)."""
        request = embed_pb2.EmbedRequest(texts=list(texts), layer=layer, dim=dim, model=model)
        response = self._call(self.embeds.Embed, request, name="Embed.Embed")
        return _matrix(response)

    def embed_stream(
        self, batches: Iterable[Sequence[str]], layer: int | None = None, dim: int | None = None, model: str = "",
        timeout: float | None = None,
    ) -> Iterator[np.ndarray]:
        """One matrix per batch of texts, in order, over one bidirectional stream."""
        requests = _Batches(
            batches, lambda i, b: embed_pb2.EmbedRequest(texts=list(b), layer=layer, dim=dim, model=model)
        )
        try:
            for response in self.embeds.EmbedStream(
                requests, timeout=timeout or self.timeout, metadata=self._metadata, compression=self._compression
            ):
                yield _matrix(response)
        except grpc.RpcError as e:
            requests.raise_error()
            raise RemoteError("Embed.EmbedStream", e.code(), e.details()) from None


def _matrix(response: embed_pb2.EmbedResponse) -> np.ndarray:
    if not response.vectors:
        return np.zeros((0, response.dim), dtype=np.float32)
    return np.stack([vector_array(v) for v in response.vectors])


__all__ = ["Client", "RemoteError", "SearchResult"]
