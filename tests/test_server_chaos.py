"""`telescope serve` under mixed load, then stopped with SIGTERM or killed with SIGKILL mid-flight: no call fails
before the signal, and every acknowledged write (upsert, streamed upsert, delete) is in the collection after it.

The load mixes what the asyncio server handles differently: plain vector searches (answered on the event loop),
filtered searches (thread pool), calls whose deadline passes at once, calls the client cancels, unary and
client-streamed upserts and deletes (thread pool, holding the collection's lock).
"""

from __future__ import annotations

import signal
import threading
import time

import grpc
import numpy as np
import psutil
import pytest

from server_helpers import DIM
from telescope.index import Collection
from telescope.proto.telescope.v1 import search_pb2, search_pb2_grpc
from telescope.server.client import Client
from telescope.server.convert import vector_message
from telescope.server.process import ServerProcess

LOAD_S = 4.0


class Load:
    """Writers, a deleter and searchers against one collection; remembers what the server acknowledged."""

    def __init__(self, target: str):
        self.target = target
        self.acked: set[str] = set()
        self.deleted: set[str] = set()  # deletes the server acknowledged
        self.deleting: set[str] = set()  # deletes sent: one cut by the kill may be durable without its answer
        self.errors: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def _error(self, what: str, error: BaseException) -> None:
        self.errors.append((time.monotonic(), f"{what}: {error!r}"[:300]))

    def writer(self, w: int) -> None:
        rng = np.random.default_rng(w)
        with Client(self.target) as client:
            for n in range(0, 10**9, 20):
                if self.stop.is_set():
                    return
                ids = [f"w{w}-{n + i}" for i in range(20)]
                vectors = rng.standard_normal((20, DIM)).astype(np.float32)
                try:
                    if n % 40:
                        client.upsert("c", ids, vectors=vectors, payloads=[{"g": n % 3}] * 20)
                    else:
                        client.upsert_stream("c", [{"ids": ids[:10], "vectors": vectors[:10]},
                                                   {"ids": ids[10:], "vectors": vectors[10:]}])
                except Exception as e:  # noqa: BLE001 - counted, judged by the test
                    self._error("upsert", e)
                    continue
                with self.lock:
                    self.acked.update(ids)

    def deleter(self) -> None:
        with Client(self.target) as client:
            while not self.stop.is_set():
                with self.lock:
                    ids = sorted(self.acked - self.deleted)[:5]
                if ids:
                    with self.lock:
                        self.deleting.update(ids)
                    try:
                        client.delete("c", ids, ignore_missing=True)
                    except Exception as e:  # noqa: BLE001
                        self._error("delete", e)
                        continue
                    with self.lock:
                        self.deleted.update(ids)
                time.sleep(0.02)

    def searcher(self, s: int) -> None:
        rng = np.random.default_rng(100 + s)
        with Client(self.target) as client, grpc.insecure_channel(self.target) as channel:
            stub = search_pb2_grpc.SearchStub(channel)
            for i in range(10**9):
                if self.stop.is_set():
                    return
                q = rng.standard_normal(DIM).astype(np.float32)
                request = search_pb2.SearchRequest(collection="c", vector=vector_message(q), k=10)
                try:
                    if i % 4 == 0:
                        client.search("c", vector=q, k=10)
                    elif i % 4 == 1:
                        client.search("c", vector=q, k=10, where={"g": 1})
                    elif i % 4 == 2:
                        try:
                            stub.Search(request, timeout=0.0005)
                        except grpc.RpcError as e:
                            if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                                raise
                    else:
                        stub.Search.future(request).cancel()
                except Exception as e:  # noqa: BLE001
                    self._error("search", e)

    def run(self, seconds: float, signal_server) -> float:
        threads = [threading.Thread(target=self.writer, args=(w,)) for w in range(2)]
        threads += [threading.Thread(target=self.deleter)]
        threads += [threading.Thread(target=self.searcher, args=(s,)) for s in range(3)]
        for t in threads:
            t.start()
        time.sleep(seconds)
        signalled = time.monotonic()
        signal_server()
        self.stop.set()
        for t in threads:
            t.join(60)
        return signalled


def _running(process: psutil.Process) -> bool:
    """Not exited: a zombie has (a killed server's replica is reaped by its new parent, init, when init gets to it)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("replicas", [0, 1])
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_acknowledged_writes_survive_a_stop_or_a_kill_under_load(tmp_path, tiny_model_path, how, replicas):
    """With a search replica too (``--search-processes 1``): it follows the writes, and ends with the server."""
    server = ServerProcess(tmp_path / "data", args=["--model", str(tiny_model_path), "--max-workers", "8",
                                                    "--search-processes", str(replicas)])
    server.start()
    try:
        with Client(server.target) as client:
            client.create_collection("c", plan="16:50,64:10")
            client.upsert("c", ["seed"], vectors=np.ones((1, DIM), np.float32))
        children = psutil.Process(server.process.pid).children()
        assert len(children) == replicas
        load = Load(server.target)

        def signal_server() -> None:
            if how == "SIGTERM":
                assert server.stop(timeout=60) == 0, server.output()
            else:
                server.process.send_signal(signal.SIGKILL)
                server.process.wait(30)

        signalled = load.run(LOAD_S, signal_server)
    finally:
        server.kill()
    deadline = time.monotonic() + 30
    while any(_running(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(p) for p in children), "a search replica outlived its server"
    before = [e for t, e in load.errors if t < signalled]
    assert not before, before[:5]
    assert len(load.acked) > 100 and load.deleted  # the load did run
    collection = Collection.open(tmp_path / "data" / "c")  # replays what the log holds beyond the last commit
    stored = set(collection.ids())
    assert not (load.acked - load.deleting) - stored, "acknowledged upserts lost"
    assert not load.deleted & stored, "acknowledged deletes undone"
    if how == "SIGTERM":
        assert collection.info()["uncommitted_writes"] == 0  # the drain committed
