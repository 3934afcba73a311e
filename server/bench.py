"""Serving benchmark: closed-loop concurrent clients against a running server, latency percentiles and QPS.

``build_collection`` writes a collection of prefix-structured random unit vectors (coordinate j scaled by
1/sqrt(j+1), points around cluster centres: the shape of Matryoshka vectors, so coarse-to-fine plans behave as
on real embeddings) with a stored model for text queries. ``run_clients`` runs C clients, each with its own
channel and connection, each sending its next request as soon as the last one returned, for T seconds after a
warm-up, and counts every failed call. The clients are coroutines on ``grpc.aio`` sending prebuilt requests, as
ghz's are goroutines: on a 2-core machine the load generator shares the server's cores, and a client per thread
(``telescope.server.client.Client``) cost 0.85 ms of CPU per call against 0.4 here. They can be spread over
several processes. ``CannedServer`` is the floor under those figures: the same gRPC server (``app.grpc_server``,
``bridge``, gzip, options) answering every Search on the event loop with one fixed response, so what it costs
per call is gRPC and the clients alone. No benchmark tool for gRPC ships in Python (ghz is a Go binary), hence
this module.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import numpy as np

from telescope.eval.synthetic import nested_vectors
from telescope.index import Collection
from telescope.proto.telescope.v1 import search_pb2, search_pb2_grpc
from telescope.server.convert import vector_message


def build_collection(
    path: Path, n: int, dim: int, plan: str, stage_one: str, stage_one_params: str, properties: dict, seed: int = 0
) -> tuple[Collection, str]:
    """The benchmark collection at ``path`` (reused when it holds the same data and configuration); returns it
    and the sha256 of its vectors."""
    vectors = nested_vectors(n, dim, seed)
    data_hash = hashlib.sha256(vectors.tobytes()).hexdigest()[:16]
    key = f"{data_hash}|{plan}|{stage_one}|{stage_one_params}|{sorted(properties.items())}"
    try:
        existing = Collection.open(path)
        if existing.properties.get("bench_key") == key and len(existing) == n:
            return existing, data_hash
        existing.close()
    except LookupError:
        pass
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    c = Collection.create(
        path, dim, default_plan=plan, stage_one=stage_one, stage_one_params=stage_one_params,
        flush_rows=n + 1, properties={**properties, "bench_key": key},
    )
    for start in range(0, n, 10_000):
        stop = min(n, start + 10_000)
        c.upsert([f"v{i}" for i in range(start, stop)], vectors[start:stop], [{"n": i} for i in range(start, stop)],
                 model_version=properties.get("model_version", "bench"))
    c.commit()  # builds and writes the stage-one index
    return c, data_hash


def query_vectors(n: int, dim: int, seed: int = 1, noise: float = 0.05) -> np.ndarray:
    """Queries near stored points (same generator, other seed for the noise)."""
    base = nested_vectors(n, dim, seed=0)[np.random.default_rng(seed).permutation(n)]
    noisy = base + noise * np.random.default_rng(seed + 1).standard_normal(base.shape, dtype=np.float32)
    return noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


@dataclass
class Searches:
    """The requests ``run_clients`` sends: the i-th search of a fixed list of query vectors or texts, top ``k``."""

    collection: str
    queries: np.ndarray | list[str]
    k: int

    @functools.cached_property
    def requests(self) -> list[search_pb2.SearchRequest]:
        def request(query) -> search_pb2.SearchRequest:
            if isinstance(query, str):
                return search_pb2.SearchRequest(collection=self.collection, text=query, k=self.k)
            return search_pb2.SearchRequest(collection=self.collection, vector=vector_message(query), k=self.k)

        return [request(q) for q in self.queries]

    def request(self, i: int) -> search_pb2.SearchRequest:
        return self.requests[i % len(self.requests)]


@dataclass
class LoadResult:
    query: str
    clients: int
    seconds: float
    requests: int
    qps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: int
    error_codes: dict
    calls_total: int = 0  # successful calls including the warm-up
    server_cpu_ms_per_call: float | None = None  # server process CPU time (user + system) per call, when measured
    client_cpu_ms_per_call: float | None = None  # the client processes' CPU time per call
    client_processes: int = 1  # processes the clients were spread over
    search_processes: int = 0  # the server's search replicas (telescope serve --search-processes)

    def to_dict(self) -> dict:
        return asdict(self)


def run_clients(
    target: str,
    searches: Searches,
    clients: int,
    seconds: float,
    warmup: float = 1.0,
    query: str = "",
    processes: int = 1,
    timeout: float = 30.0,
) -> LoadResult:
    """``clients`` closed-loop clients sending ``searches`` for ``seconds`` after ``warmup``, spread over
    ``processes`` processes; ``client_cpu_ms_per_call`` is the client processes' CPU time over the run per call
    (this process should be otherwise idle)."""
    if not 1 <= processes:
        raise ValueError(f"processes: expected at least 1, got {processes}")
    processes = min(processes, clients)
    shares = [clients // processes + (p < clients % processes) for p in range(processes)]
    args = (target, searches, seconds, warmup, timeout)
    if processes == 1:
        samples = [_closed_loop(*args, clients)]
    else:
        samples = _in_processes(args, shares)
    lat = np.concatenate([np.asarray(s.latencies) for s in samples]) * 1000
    errors: Counter[str] = sum((s.errors for s in samples), Counter())
    calls = sum(s.calls for s in samples)
    p50, p90, p99 = (float(np.percentile(lat, q)) for q in (50, 90, 99)) if len(lat) else (float("nan"),) * 3
    return LoadResult(
        query=query, clients=clients, seconds=seconds, requests=len(lat), qps=len(lat) / seconds,
        p50_ms=p50, p90_ms=p90, p99_ms=p99, mean_ms=float(lat.mean()) if len(lat) else float("nan"),
        max_ms=float(lat.max()) if len(lat) else float("nan"), errors=sum(errors.values()), error_codes=dict(errors),
        calls_total=calls, client_cpu_ms_per_call=1000 * sum(s.cpu_s for s in samples) / max(calls, 1),
        client_processes=processes,
    )


@dataclass
class _Samples:
    latencies: list[float]  # seconds, of the successful calls after the warm-up
    calls: int  # successful calls, warm-up included
    errors: Counter
    cpu_s: float  # the process's CPU time over the run


def _closed_loop(
    target: str, searches: Searches, seconds: float, warmup: float, timeout: float, clients: int,
    ready=None, offset: int = 0,
) -> _Samples:
    """One process's share: ``clients`` coroutines; ``ready`` (a barrier) lines the processes up before the clock."""
    searches.requests  # built before the clock
    return asyncio.run(_clients(target, searches, seconds, warmup, timeout, clients, ready, offset))


async def _clients(
    target: str, searches: Searches, seconds: float, warmup: float, timeout: float, clients: int, ready, offset: int
) -> _Samples:
    # a channel of its own per client, and a connection of its own (channels share one by default)
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(clients)]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    calls = 0
    try:
        stubs = [search_pb2_grpc.SearchStub(c) for c in channels]
        await asyncio.gather(*(c.channel_ready() for c in channels))
        if ready is not None:
            ready.wait()
        cpu = time.process_time()
        measure = time.perf_counter() + warmup
        end = measure + seconds

        async def client(w: int) -> None:
            nonlocal calls
            i = (offset + w) * 1_000_003
            stub = stubs[w]
            while (now := time.perf_counter()) < end:
                try:
                    await stub.Search(searches.request(i), timeout=timeout)
                except grpc.aio.AioRpcError as e:
                    errors[e.code().name] += 1
                else:
                    calls += 1
                    if now >= measure:
                        latencies.append(time.perf_counter() - now)
                i += 1

        await asyncio.gather(*(client(w) for w in range(clients)))
        return _Samples(latencies, calls, errors, time.process_time() - cpu)
    finally:
        await asyncio.gather(*(c.close() for c in channels))


def _share(queue, *args) -> None:
    queue.put(_closed_loop(*args))


def _in_processes(args: tuple, shares: list[int]) -> list[_Samples]:
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork of a process that holds gRPC channels and threads
    ready, queue = context.Barrier(len(shares)), context.Queue()
    offsets = np.cumsum([0, *shares[:-1]])
    workers = [
        context.Process(target=_share, args=(queue, *args, n, ready, int(o)), daemon=True)
        for n, o in zip(shares, offsets)
    ]
    for w in workers:
        w.start()
    samples = [queue.get(timeout=args[3] + args[2] + 300) for _ in workers]
    for w in workers:
        w.join(30)
    return samples


class _CannedSearch(search_pb2_grpc.SearchServicer):
    def __init__(self, response: bytes):
        self.response = search_pb2.SearchResponse.FromString(response)

    def Search(self, request, context):  # noqa: N802 - gRPC method name
        return self.response

    def inline(self, request, context):
        return self.response


def _serve_canned(response: bytes, gzip: bool, ports) -> None:
    asyncio.run(_canned(response, gzip, ports))


async def _canned(response: bytes, gzip: bool, ports) -> None:
    from concurrent import futures

    from telescope.server.app import grpc_server
    from telescope.server.bridge import add_servicer
    from telescope.server.limits import Limits

    server = grpc_server(Limits(), gzip)
    canned = _CannedSearch(response)
    with futures.ThreadPoolExecutor(1) as pool:
        add_servicer(search_pb2_grpc.add_SearchServicer_to_server, canned, server, pool, inline={"Search": canned.inline})
        ports.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()


class CannedServer:
    """A child process serving telescope.v1.Search on a free loopback port, every answer ``response`` (bytes of a
    SearchResponse): ``telescope serve``'s own gRPC server (``app.grpc_server``), the answer given on the event
    loop as a short vector search's is; no collection, no checks."""

    def __init__(self, response: bytes, gzip: bool = True):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        self.process = context.Process(target=_serve_canned, args=(response, gzip, ports), daemon=True)
        self.process.start()
        self.target = f"127.0.0.1:{ports.get(timeout=60)}"

    def __enter__(self) -> "CannedServer":
        return self

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.join(10)
