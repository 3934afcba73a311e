"""Serving benchmark: closed-loop concurrent clients against a running server, latency percentiles and QPS.

``build_collection`` writes a collection of prefix-structured random unit vectors (coordinate j scaled by
1/sqrt(j+1), points around cluster centres: the shape of Matryoshka vectors, so coarse-to-fine plans behave as
on real embeddings) with a stored model for text queries. ``run_clients`` runs C threads, each with its own
channel, each sending its next request as soon as the last one returned, for T seconds after a warm-up, and
counts every failed call. The threads can be spread over several processes: sixteen callers in one Python
process wait on each other's GIL, which the server's latency should not include. ``CannedServer`` is the floor
under those figures: the same gRPC sync server (thread pool, gzip, options) answering every Search with one
fixed response, so what it costs per call is gRPC and the clients alone. No benchmark tool for gRPC ships in
Python (ghz is a Go binary), hence this module.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from telescope.index import Collection
from telescope.proto.telescope.v1 import search_pb2, search_pb2_grpc
from telescope.server.client import Client, RemoteError


def nested_vectors(n: int, dim: int, seed: int = 0, clusters: int = 1000) -> np.ndarray:
    """Unit vectors whose first coordinates carry most of the signal, in ``clusters`` clusters (float32)."""
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.sqrt(np.arange(1, dim + 1))).astype(np.float32)
    centers = rng.standard_normal((clusters, dim), dtype=np.float32) * scale
    v = centers[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim), dtype=np.float32) * scale
    return v / np.linalg.norm(v, axis=1, keepdims=True)


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
    """``call(client, i)`` for ``run_clients``: the i-th search of a fixed list of query vectors or texts, top ``k``."""

    collection: str
    queries: np.ndarray | list[str]
    k: int

    def __call__(self, client: Client, i: int):
        query = self.queries[i % len(self.queries)]
        if isinstance(query, str):
            return client.search(self.collection, text=query, k=self.k)
        return client.search(self.collection, vector=query, k=self.k)


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
    client_processes: int = 1  # processes the client threads were spread over

    def to_dict(self) -> dict:
        return asdict(self)


def run_clients(
    target: str,
    call: Callable[[Client, int], object],
    clients: int,
    seconds: float,
    warmup: float = 1.0,
    query: str = "",
    client_options: dict | None = None,
    processes: int = 1,
) -> LoadResult:
    """``clients`` closed-loop threads calling ``call(client, i)`` (i counts that thread's calls) for ``seconds``,
    spread over ``processes`` processes (``call`` must pickle when > 1); ``client_cpu_ms_per_call`` is the client
    processes' CPU time over the run per call (this process should be otherwise idle)."""
    if not 1 <= processes:
        raise ValueError(f"processes: expected at least 1, got {processes}")
    processes = min(processes, clients)
    shares = [clients // processes + (p < clients % processes) for p in range(processes)]
    if processes == 1:
        samples = [_closed_loop(target, call, clients, seconds, warmup, client_options)]
    else:
        samples = _in_processes(target, call, shares, seconds, warmup, client_options)
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
    target: str, call: Callable[[Client, int], object], clients: int, seconds: float, warmup: float,
    client_options: dict | None, ready=None, offset: int = 0,
) -> _Samples:
    """One process's share: ``clients`` threads; ``ready`` (a barrier) lines the processes up before the clock."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    calls = [0] * clients
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    start_barrier = threading.Barrier(clients + 1)
    times: dict[str, float] = {}

    def worker(w: int) -> None:
        with Client(target, **(client_options or {})) as client:
            start_barrier.wait()
            i = (offset + w) * 1_000_003
            while True:
                now = time.perf_counter()
                if now >= times["end"]:
                    return
                try:
                    call(client, i)
                    ok = True
                except RemoteError as e:
                    ok = False
                    with lock:
                        errors[e.code.name] += 1
                done = time.perf_counter()
                if ok:
                    calls[w] += 1
                    if now >= times["measure"]:
                        latencies[w].append(done - now)
                i += 1

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(clients)]
    for t in threads:
        t.start()
    if ready is not None:
        ready.wait()
    cpu = time.process_time()
    begin = time.perf_counter()
    times["measure"], times["end"] = begin + warmup, begin + warmup + seconds
    start_barrier.wait()
    for t in threads:
        t.join(warmup + seconds + 120)
    return _Samples([x for per in latencies for x in per], sum(calls), errors, time.process_time() - cpu)


def _share(queue, *args) -> None:
    queue.put(_closed_loop(*args))


def _in_processes(
    target: str, call: Callable[[Client, int], object], shares: list[int], seconds: float, warmup: float,
    client_options: dict | None,
) -> list[_Samples]:
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork of a process that holds gRPC channels and threads
    ready, queue = context.Barrier(len(shares)), context.Queue()
    offsets = np.cumsum([0, *shares[:-1]])
    workers = [
        context.Process(target=_share, args=(queue, target, call, n, seconds, warmup, client_options, ready, int(o)),
                        daemon=True)
        for n, o in zip(shares, offsets)
    ]
    for w in workers:
        w.start()
    samples = [queue.get(timeout=warmup + seconds + 300) for _ in workers]
    for w in workers:
        w.join(30)
    return samples


class _CannedSearch(search_pb2_grpc.SearchServicer):
    def __init__(self, response: bytes):
        self.response = search_pb2.SearchResponse.FromString(response)

    def Search(self, request, context):  # noqa: N802 - gRPC method name
        return self.response


def _serve_canned(response: bytes, max_workers: int, gzip: bool, ports) -> None:
    from telescope.server.app import grpc_server
    from telescope.server.limits import Limits

    server = grpc_server(max_workers, Limits(), gzip)
    search_pb2_grpc.add_SearchServicer_to_server(_CannedSearch(response), server)
    ports.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    server.wait_for_termination()


class CannedServer:
    """A child process serving telescope.v1.Search on a free loopback port, every answer ``response`` (bytes of a
    SearchResponse): ``telescope serve``'s own gRPC server (``app.grpc_server``), no collection, no checks."""

    def __init__(self, response: bytes, max_workers: int = 32, gzip: bool = True):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        self.process = context.Process(target=_serve_canned, args=(response, max_workers, gzip, ports), daemon=True)
        self.process.start()
        self.target = f"127.0.0.1:{ports.get(timeout=60)}"

    def __enter__(self) -> "CannedServer":
        return self

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.join(10)
