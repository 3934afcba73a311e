"""The telescope.v1.Search servicer: nearest points to a text or a vector, coarse-to-fine.

A request is checked field by field first (so the error names the field), then text queries are embedded
together, then searches that share plan, k, filter and model version run as one batch in the index (FAISS and
the re-ranking are much faster per query in batches), together with those of concurrent calls (``SearchBatcher``).
Deadlines are checked between those steps. A plain vector search that is short for sure runs at once on the
server's event loop instead (``inline``), unless a write holds its collection.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import numpy as np

from telescope.index import Collection, Plan
from telescope.proto.telescope.v1 import search_pb2 as pb
from telescope.proto.telescope.v1 import search_pb2_grpc
from telescope.server.convert import filter_dict, vector_values
from telescope.server.errors import check_alive, rpc
from telescope.server.hits import search_response
from telescope.server.state import ServerState

if TYPE_CHECKING:
    from telescope.embedder import Embedder

EMBED_CHUNK = 64  # query texts embedded between two deadline checks
INLINE_SCAN = 1_000_000  # coordinates an exact stage one may read on the event loop (~1 ms: 20k x 128 took 2.5)
DEFAULT_K = 10  # k for a recall target when the request gives none


@dataclass
class Query:
    """One checked search request."""

    text: str | None
    vector: np.ndarray | None
    k: int
    plan: Plan
    where: dict
    model_version: str | None
    with_payload: bool
    embedder: Embedder | None

    def batch_key(self) -> tuple:
        dim = None if self.vector is None else len(self.vector)
        where = json.dumps(self.where, sort_keys=True) if self.where else ""
        return (str(self.plan), self.k, where, self.model_version, dim)


class SearchServicer(search_pb2_grpc.SearchServicer):
    def __init__(self, state: ServerState):
        self.state = state
        self.stats = state.stats
        self._lock = threading.Lock()
        self._chosen: dict[tuple, Plan] = {}  # plans picked for a recall target, per collection generation

    @rpc
    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        collection = self.state.collection(request.collection)
        return self._run([self._query(request, collection, "")], collection, context)[0]

    def inline(self, request: pb.SearchRequest, context: grpc.ServicerContext):
        """``Search`` on the calling thread (the server's event loop, ``bridge``) when it is short for sure: a vector
        query with no filter and no model version (each reads every row's payload or version), not a recall target
        (whose first call measures plans), whose stage one is an index (HNSW, IVF) or an exact scan of at most
        ``INLINE_SCAN`` coordinates, on a collection no write holds now. None otherwise: the call then runs in the
        thread pool (and may share a batched search with concurrent calls). With search replicas, such a search
        goes to a replica holding the collection's present state: the result is then a future of the response
        bytes (None in it: run it in the pool after all)."""
        if (request.WhichOneof("query") != "vector" or request.filter.must or request.model_version
                or request.WhichOneof("strategy") == "recall_target" or not self.state.loaded.is_set()):
            return None
        try:
            collection = self.state.registry.collection(request.collection)
            dim = Plan.parse(request.plan).stages[0].dim if request.HasField("plan") else collection.default_plan.stages[0].dim
        except (LookupError, ValueError):
            return None  # the pool call reports it
        if collection.exact_scan_size(dim) > INLINE_SCAN or not collection.lock.acquire(blocking=False):
            return None
        try:
            if self.state.replicas is not None:
                forwarded = self.state.replicas.forward(collection, request, context.time_remaining())
                if forwarded is not None:
                    return forwarded
            return self._search_now(request, context)
        finally:
            collection.lock.release()

    @rpc
    def _search_now(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        collection = self.state.collection(request.collection)
        return self._run([self._query(request, collection, "")], collection, context, batched=False)[0]

    @rpc
    def SearchBatch(self, request: pb.SearchBatchRequest, context: grpc.ServicerContext) -> pb.SearchBatchResponse:
        limits = self.state.limits
        collection = self.state.collection(request.collection)
        limits.check_count("searches", len(request.searches), limits.max_searches_per_batch)
        if not request.searches:
            raise ValueError("searches: expected at least one search, got none")
        queries = []
        for i, search in enumerate(request.searches):
            if search.collection not in ("", request.collection):
                raise ValueError(
                    f"searches[{i}].collection: expected '' or {request.collection!r}, got {search.collection!r}"
                )
            queries.append(self._query(search, collection, f"searches[{i}]."))
        return pb.SearchBatchResponse(results=self._run(queries, collection, context))

    # -- checking ----------------------------------------------------------------------------------------------
    def _query(self, request: pb.SearchRequest, collection: Collection, at: str) -> Query:
        limits = self.state.limits
        kind = request.WhichOneof("query")
        if kind is None:
            raise ValueError(f"{at}query: expected a text or a vector, got neither")
        k = None
        if request.HasField("k"):
            k = request.k
            if not 1 <= k <= limits.max_k:
                raise ValueError(f"{at}k: expected an integer in 1..{limits.max_k}, got {k}")
        plan = self._plan(request, collection, at, k)
        k = plan.k if k is None else k
        plan = plan.for_k(k)
        where = filter_dict(request.filter, f"{at}filter")
        version = request.model_version or None
        plan = collection.version_plan(plan, version)
        text = vector = embedder = None
        if kind == "text":
            text = request.text
            if not text.strip():
                raise ValueError(f"{at}text: expected a non-empty query text, got {text!r}")
            limits.check_text(f"{at}text", text)
            embedder = self.state.registry.query_model(collection, request.model_version, f"{at}model_version")
        else:
            vector = vector_values(request.vector, f"{at}vector", (plan.max_dim, collection.dim))
            if not vector[: plan.stages[0].dim].any():
                raise ValueError(f"{at}vector: expected a non-zero first {plan.stages[0].dim} values, got all zeros")
        with_payload = request.with_payload if request.HasField("with_payload") else True
        return Query(text, vector, k, plan, where, version, with_payload, embedder)

    def _plan(self, request: pb.SearchRequest, collection: Collection, at: str, k: int | None) -> Plan:
        strategy = request.WhichOneof("strategy")
        if strategy == "plan":
            try:
                plan = Plan.parse(request.plan)
            except ValueError as e:
                raise ValueError(f"{at}{e}") from None
            if plan.max_dim > collection.dim:
                raise ValueError(
                    f"{at}plan: expected stage dims at most the collection's dim {collection.dim}, "
                    f"got {request.plan!r} (largest dim {plan.max_dim})"
                )
            self.state.limits.check_plan(f"{at}plan", plan, k)
            return plan
        if strategy == "recall_target":
            target = request.recall_target
            if not (math.isfinite(target) and 0 < target <= 1):
                raise ValueError(f"{at}recall_target: expected a recall@k in (0, 1], got {target}")
            return self._chosen_plan(collection, float(target), k or DEFAULT_K)
        return collection.default_plan

    def _chosen_plan(self, collection: Collection, target: float, k: int) -> Plan:
        """The collection's cheapest plan meeting ``target`` recall@k (``Collection.choose_plan``, measured on a
        sample of its own vectors), remembered until the collection's next commit (or its deletion: a collection
        created again under the same name has another creation time)."""
        key = (str(collection.path), collection.state_key[:2], round(target, 6), k)  # (created, generation)
        with self._lock:
            plan = self._chosen.get(key)
        if plan is None:
            plan = collection.choose_plan(target, k=k).plan
            with self._lock:
                self._chosen = {kk: v for kk, v in self._chosen.items() if kk[0] != key[0] or kk[1] == key[1]}
                self._chosen[key] = plan
        return plan

    # -- running -----------------------------------------------------------------------------------------------
    def _run(
        self, queries: list[Query], collection: Collection, context: grpc.ServicerContext, batched: bool = True
    ) -> list[pb.SearchResponse]:
        embed_ms = self._embed_texts(queries, collection, context)
        groups: dict[tuple, list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault(q.batch_key(), []).append(i)
        results: list[pb.SearchResponse | None] = [None] * len(queries)
        for batch_key, indices in groups.items():
            check_alive(context, "searching")
            first = queries[indices[0]]
            start = time.perf_counter()
            vectors = [queries[i].vector for i in indices]
            if batched:
                hits = self.state.searches.search(
                    collection, vectors, first.k, first.plan, lambda: check_alive(context, "searching"),
                    where=first.where or None, model_version=first.model_version, key=batch_key,
                )
            else:
                hits = collection.search_records(np.stack(vectors), first.k, first.plan, where=first.where or None,
                                                 model_version=first.model_version)
            search_ms = 1000 * (time.perf_counter() - start)
            for i, records in zip(indices, hits):
                q = queries[i]
                response = search_response(records, q.with_payload, self.state.payloads)
                response.plan = str(q.plan)
                response.model_version = q.embedder.manifest.tag if q.embedder else q.model_version or ""
                response.embed_ms = embed_ms.get(i, 0.0)
                response.search_ms = search_ms
                results[i] = response
        return results

    def _embed_texts(
        self, queries: list[Query], collection: Collection, context: grpc.ServicerContext
    ) -> dict[int, float]:
        """Embed the text queries in place (grouped by model, each at its dim in ``collection``); returns
        milliseconds spent per query index."""
        by_model: dict[int, list[int]] = {}
        for i, q in enumerate(queries):
            if q.text is not None:
                by_model.setdefault(id(q.embedder), []).append(i)
        spent: dict[int, float] = {}
        for indices in by_model.values():
            from telescope.pipelines.ingest import text_dim, text_layer  # imports torch: the replica imports this

            embedder = queries[indices[0]].embedder
            layer, dim = text_layer(collection, embedder), text_dim(collection, embedder)
            start = time.perf_counter()
            for s in range(0, len(indices), EMBED_CHUNK):
                check_alive(context, "embedding the query texts")
                chunk = indices[s : s + EMBED_CHUNK]
                texts = [queries[i].text for i in chunk]
                vectors = self.state.batcher.encode(
                    embedder, texts, lambda: check_alive(context, "embedding the query texts"), layer=layer, dim=dim
                )
                for i, v in zip(chunk, vectors):
                    queries[i].vector = v
            ms = 1000 * (time.perf_counter() - start)
            spent.update({i: ms for i in indices})
        return spent
