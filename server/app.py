"""The telescope gRPC server: the four telescope.v1 services plus the standard health and reflection services.

``TelescopeServer(config).start()`` binds (port 0 picks a free one) and serves at once with health
NOT_SERVING; ``load()`` opens the collections and models and flips health to SERVING; ``stop(grace)`` flips
health to NOT_SERVING, refuses new calls, lets calls in flight finish for up to ``grace`` seconds, then
commits and closes every collection. Gzip compresses responses to clients that accept it; requests in gzip
are always accepted. Messages up to 64 MiB; over that gRPC itself answers RESOURCE_EXHAUSTED, and so does the
server over ``max_concurrent_rpcs`` telescope calls at once (``bridge.CallGate``: health and reflection calls
are not counted, so a busy server still answers its health checks). Binds 127.0.0.1 unless told otherwise.

The server is gRPC's asyncio server on an event loop of its own (``EventLoopThread``): short vector searches
are answered on the loop, every other call in a pool of ``max_workers`` threads (``bridge``), but streaming calls,
which wait for their client's messages, in threads of their own (at most ``max_concurrent_rpcs``). With
``search_processes`` (``--search-processes N``) the loop hands those short searches to N replica processes that
hold read-only copies of the collections (``replica``), so that they run on other cores.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from telescope.embedder import DEFAULT_MODEL
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
from telescope.server.auth import TokenAuth, check_token
from telescope.server.bridge import CallGate, add_servicer
from telescope.server.collections import CollectionsServicer
from telescope.server.embed import EmbedServicer
from telescope.server.limits import Limits
from telescope.server.points import PointsServicer
from telescope.server.registry import Registry
from telescope.server.replica import SearchReplicas
from telescope.server.search import SearchServicer
from telescope.server.state import ServerState

log = logging.getLogger("telescope.server")

SERVICES = [
    collections_pb2.DESCRIPTOR.services_by_name["Collections"].full_name,
    points_pb2.DESCRIPTOR.services_by_name["Points"].full_name,
    search_pb2.DESCRIPTOR.services_by_name["Search"].full_name,
    embed_pb2.DESCRIPTOR.services_by_name["Embed"].full_name,
]
KEEPALIVE_TIMEOUT_S = 20  # seconds a client has to answer a keepalive ping


@dataclass
class ServerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 50051
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    model: str = DEFAULT_MODEL
    max_workers: int = 16
    gzip: bool = True
    search_processes: int = 0  # search replicas (server/replica.py); 0: searches run in the server process
    limits: Limits = field(default_factory=Limits)
    keepalive_s: float = 60.0  # HTTP/2 ping to each client this often; no answer within KEEPALIVE_TIMEOUT_S: calls end

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert / --tls-key: expected both or neither, got one")
        for flag, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key)):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"{flag}: no such file {str(path)!r}")
        if self.tls_cert is not None:
            check_tls(Path(self.tls_cert), Path(self.tls_key))
        if not 0 < self.keepalive_s <= 7200:
            raise ValueError(f"--keepalive-s: expected seconds in (0, 7200], got {self.keepalive_s}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port: expected 0..65535 (0 picks a free port), got {self.port}")
        if self.max_workers < 1:
            raise ValueError(f"--max-workers: expected at least 1, got {self.max_workers}")
        if self.token is not None:
            check_token(self.token, "--token")
        if self.search_processes < 0:
            raise ValueError(f"--search-processes: expected 0 or more, got {self.search_processes}")


def check_tls(cert: Path, key: Path) -> None:
    """A PEM certificate and its own unencrypted private key, as gRPC takes them (with anything else gRPC only
    fails to bind the port)."""
    if b"-----BEGIN CERTIFICATE-----" not in cert.read_bytes():
        raise ValueError(f"--tls-cert: expected a PEM certificate ('-----BEGIN CERTIFICATE-----'), got none in {str(cert)!r}")
    if b"PRIVATE KEY-----" not in key.read_bytes():
        raise ValueError(f"--tls-key: expected a PEM private key ('-----BEGIN PRIVATE KEY-----'), got none in {str(key)!r}")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as e:
        raise ValueError(
            f"--tls-cert / --tls-key: expected a certificate and its own unencrypted private key, got a pair that "
            f"does not load ({e.reason or e})"
        ) from None


def set_compute_threads(threads: int) -> None:
    """Threads one call may use inside torch and FAISS (process-wide).

    The server answers calls in parallel on its own threads, so each call's compute runs single-threaded by
    default. Measured on the 2-core development machines under load from other processes: one-query FAISS
    Flat search 5.3 ms with 1 OpenMP thread against 68 ms with 2, one-sentence MiniLM encode 94 ms with 1
    torch thread against 1,211 ms with 2 (OpenMP barriers wait on descheduled threads).
    """
    import faiss
    import torch

    if threads < 1:
        raise ValueError(f"--compute-threads: expected at least 1, got {threads}")
    faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)


def set_switch_interval(ms: float) -> None:
    """``sys.setswitchinterval``: a thread that wants the GIL waits at most this long for the one holding it."""
    import sys

    if not 0 < ms <= 1000:
        raise ValueError(f"--switch-interval-ms: expected a number in (0, 1000], got {ms}")
    sys.setswitchinterval(ms / 1000)


def grpc_server(limits: Limits, gzip: bool, interceptors: list | None = None, keepalive_s: float = 60.0) -> grpc.aio.Server:
    """The gRPC server every telescope service runs on (asyncio; servicers added through ``bridge.add_servicer``):
    the message-size limits, gzip, keepalive; one place, so the benchmark's canned floor (server/bench.py) is the
    same server. Call on the event loop that will run it.

    Keepalive: the server pings each connection every ``keepalive_s`` (also while a stream waits in silence, any
    number of times) and drops one that does not answer within ``KEEPALIVE_TIMEOUT_S``, ending its calls: a
    client that vanished without closing its connection would otherwise hold its streams until the kernel gave
    up on the socket (about two hours). Clients may ping every 10 s or more slowly (gRPC's default asks 5 min)."""
    keepalive_ms = max(1, int(keepalive_s * 1000))
    return grpc.aio.server(
        interceptors=interceptors or [],
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", min(keepalive_ms, KEEPALIVE_TIMEOUT_S * 1000)),
            ("grpc.http2.ping_timeout_ms", min(keepalive_ms, KEEPALIVE_TIMEOUT_S * 1000)),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
        compression=grpc.Compression.Gzip if gzip else None,
    )


class EventLoopThread:
    """An asyncio event loop on a daemon thread; ``call(coroutine)`` runs one there and returns its result."""

    def __init__(self, name: str = "telescope-grpc"):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coroutine, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class TelescopeServer:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.state = ServerState(Registry(config.data_dir, config.model), config.limits)
        self.health = health.aio.HealthServicer()
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._loop: EventLoopThread | None = None
        self._pool: futures.ThreadPoolExecutor | None = None
        self._streams: futures.ThreadPoolExecutor | None = None
        self._gate: CallGate | None = None

    @property
    def stats(self):
        return self.state.stats

    @property
    def calls_in_flight(self) -> int:
        """Telescope calls admitted and not ended yet (health and reflection not counted)."""
        return self._gate.active if self._gate is not None else 0

    @property
    def target(self) -> str:
        host = self.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def start(self) -> int:
        """Bind and start answering (health NOT_SERVING until ``load``); returns the bound port."""
        self._loop = EventLoopThread()
        self._pool = futures.ThreadPoolExecutor(max_workers=self.config.max_workers, thread_name_prefix="telescope-rpc")
        # A streaming call holds its thread while it waits for the client's next message: one each, so that
        # stalled clients cannot take the pool's threads from every other call (gRPC bounds the calls at once).
        self._streams = futures.ThreadPoolExecutor(
            max_workers=self.config.limits.max_concurrent_rpcs, thread_name_prefix="telescope-stream"
        )
        try:
            self.port = self._loop.call(self._start())
        except BaseException:
            self._close_loop()
            raise
        return self.port

    async def _start(self) -> int:
        c = self.config
        server = grpc_server(c.limits, c.gzip, [TokenAuth(c.token)] if c.token else [], c.keepalive_s)
        search = SearchServicer(self.state)
        self._gate = CallGate(c.limits.max_concurrent_rpcs)
        executors = dict(pool=self._pool, streams=self._streams, max_response_bytes=c.limits.max_message_bytes,
                         gate=self._gate)
        add_servicer(collections_pb2_grpc.add_CollectionsServicer_to_server, CollectionsServicer(self.state), server, **executors)
        add_servicer(points_pb2_grpc.add_PointsServicer_to_server, PointsServicer(self.state), server, **executors)
        add_servicer(search_pb2_grpc.add_SearchServicer_to_server, search, server, inline={"Search": search.inline}, **executors)
        add_servicer(embed_pb2_grpc.add_EmbedServicer_to_server, EmbedServicer(self.state), server, **executors)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        for service in ["", *SERVICES]:
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        reflection.enable_server_reflection([*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        address = f"[{c.host}]:{c.port}" if ":" in c.host else f"{c.host}:{c.port}"
        try:
            if c.tls_cert is not None:
                credentials = grpc.ssl_server_credentials([(Path(c.tls_key).read_bytes(), Path(c.tls_cert).read_bytes())])
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as e:
            raise RuntimeError(f"--host/--port: cannot bind {address} ({e})") from None
        if port == 0:
            raise RuntimeError(f"--host/--port: cannot bind {address} (in use or not a local address)")
        await server.start()
        self._server = server
        if c.search_processes:
            self.state.replicas = SearchReplicas(c.search_processes, c.limits, asyncio.get_running_loop(), self.state.stats)
            log.info("search replicas started: %s", ", ".join(r.name for r in self.state.replicas.replicas))
        return port

    def load(self) -> list[str]:
        """Open every collection and its model, then report SERVING; returns the collection names."""
        names = self.state.registry.load()
        # What loading made lives as long as the server: out of the collector's sight, a full collection no longer
        # walks it (torch, the models and the collections are ~500k objects; a full pass over them took 390 ms).
        gc.freeze()
        self.state.loaded.set()
        if self.state.replicas is not None:
            self._loop.call(self._follow(names))
        self._loop.call(self._set_health(health_pb2.HealthCheckResponse.SERVING))
        return names

    async def _follow(self, names: list[str]) -> None:
        """The replicas open every collection now rather than at its first search (in the meantime the server
        answers them)."""
        for name in names:
            collection = self.state.registry.collection(name)
            with collection.lock:
                self.state.replicas.follow(collection)

    async def _close_replicas(self) -> None:
        replicas, self.state.replicas = self.state.replicas, None
        replicas.close()

    async def _set_health(self, status: int) -> None:
        for service in ["", *SERVICES]:
            await self.health.set(service, status)

    def stop(self, grace: float = 30.0) -> list[str]:
        """Drain and shut down: NOT_SERVING, no new calls, calls in flight finish (up to ``grace`` s; work still
        running in the pool after that sees its call cancelled and stops at its next check), commit all."""
        if self._server is not None:
            self._loop.call(self.health.enter_graceful_shutdown())
            self._loop.call(self._server.stop(grace))
            self._server = None
        self._close_loop()
        return self.state.registry.close()

    def _close_loop(self) -> None:
        if self.state.replicas is not None:  # after the drain: no call awaits a replica any more
            self._loop.call(self._close_replicas())
        for pool in (self._pool, self._streams):
            if pool is not None:
                pool.shutdown(wait=True)  # no write still running when the collections commit
        self._pool = self._streams = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None
