"""Search replicas: processes that answer the server's plain vector searches from read-only copies of its
collections, so that searching runs on other cores than the server's event loop.

Why processes: the asyncio server answers every call on one event-loop thread, about 0.55 ms of gRPC's call
machinery and 0.65 ms of search a call on the development machines, so it fills one core; a search thread in the
same process measured slower (the GIL), and gRPC's own answer to the GIL, one server process per core on a shared
port (SO_REUSEPORT), hashed 16 connections unevenly onto 2 processes (README, gRPC section). Here the event loop
keeps every call and forwards the request bytes of a search to a replica over a socket pair; the replica parses
and checks it with the server's own code (``SearchServicer._query``), searches what queued while it was busy as
one batch (``SearchServicer._run``) and sends back the response bytes, which the loop passes to gRPC unparsed.
No library does this for a Python gRPC server, hence this module.

**Consistency.** A replica answers for a collection only while it holds the very state the server holds: the
collection's ``state_key`` (created, generation, WAL records since it) is read under the collection's lock when the
call arrives, and a write acknowledged before that has changed it. Otherwise the server searches itself, as
without replicas, and asks the replica to follow (``sync``): the replica applies the WAL records written since
(``Collection.catch_up``, cheap), or opens the collection again after a commit (read-only, in a thread: its other
searches go on). So a search never misses a write acknowledged before it started. A replica that dies leaves its
calls to the server (they run in the thread pool) and is not restarted; the server logs it.

**Cost.** A replica holds its own copy of every collection (vectors and stage-one index; it opens them when the
server has loaded them, and any created later at its first search): memory grows by that much per replica.
``telescope serve --search-processes 0`` (the default) runs none.

**Measured** (``telescope bench serve``, 100k vectors, HNSW32 stage one, 16 clients on the same 2 cores, thirteen
runs with and without a replica side by side): 1,003-1,244 QPS against 759-952, p99 21.4-28.6 ms against 22.0-28.8.
The machine is then CPU-bound: per call the event loop spends about 0.65 ms (0.5 of it gRPC's), the replica 0.6
(HNSW and re-ranking about 0.4), the clients 0.35-0.4; three busy processes on two cores widen the latency
distribution, so the p99 gains less than the median (README, gRPC section). One client waits for the extra hop.

The protocol is length-prefixed pickled lists over a Unix socket pair: one frame per event-loop turn each way,
whatever it carries (searches, syncs, forgets; results, errors, states). ``multiprocessing.connection`` frames the
same way, but its pickler and its ``poll`` before each read cost the event loop about 0.1 ms a call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict

import grpc

from telescope.index import Collection
from telescope.server.bridge import Abort
from telescope.server.errors import Stats, check_alive, message_of, status_of
from telescope.server.limits import Limits

log = logging.getLogger("telescope.server")
Key = tuple[float, int, int]
LENGTH = struct.Struct("<I")


def frame(items: list[tuple]) -> bytes:
    data = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(data)) + data


def unframe(buffer: bytearray) -> list[tuple]:
    """The items of every whole frame at the start of ``buffer``, removed from it."""
    items, start = [], 0
    while len(buffer) - start >= LENGTH.size:
        (size,) = LENGTH.unpack_from(buffer, start)
        if len(buffer) - start - LENGTH.size < size:
            break
        items += pickle.loads(memoryview(buffer)[start + LENGTH.size : start + LENGTH.size + size])
        start += LENGTH.size + size
    del buffer[:start]
    return items


class Replica:
    """One replica process as the server's event loop sees it (every method but ``forget`` runs on that loop)."""

    def __init__(self, limits: Limits, loop: asyncio.AbstractEventLoop, stats: Stats, index: int):
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "telescope.server.replica", str(theirs.fileno()), json.dumps(asdict(limits))],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.name = f"search replica {index} (pid {self.process.pid})"
        ours.setblocking(False)
        self._sock = ours
        self._in, self._out = bytearray(), bytearray()
        self._waiting = False  # for room in the socket's buffer
        self._loop, self._stats = loop, stats
        self.ready = False
        self.alive = True
        self.held: dict[str, Key] = {}  # collection path -> the state the replica holds
        self._syncing: dict[str, Key] = {}
        self._failed: dict[str, Key] = {}
        self._pending: dict[int, asyncio.Future] = {}
        self._outbox: list[tuple] = []
        self._next_id = 0
        loop.add_reader(ours.fileno(), self._drain)

    @property
    def load(self) -> int:
        return len(self._pending)

    def holds(self, path: str, key: Key) -> bool:
        return self.alive and self.ready and self.held.get(path) == key

    def sync(self, path: str, key: Key) -> None:
        """Ask the replica to hold ``key`` of the collection at ``path`` (once per key)."""
        held = self.held.get(path)
        ahead = held is not None and held[:2] == key[:2] and held[2] > key[2]  # the server's writes catch up
        if self.alive and not ahead and self._syncing.get(path) != key and self._failed.get(path) != key:
            self._syncing[path] = key
            self._post(("sync", path, key))

    def search(self, path: str, key: Key, request: bytes, deadline: float | None) -> asyncio.Future:
        """A future of the response bytes; None when the replica could not answer (the server then searches);
        raises ``Abort`` with the status the server's own search would have given."""
        self._next_id += 1
        future = self._loop.create_future()
        self._pending[self._next_id] = future
        self._post(("search", self._next_id, path, key, deadline, request))
        return future

    def forget(self, path: str) -> None:
        """From any thread: the collection at ``path`` is gone; the replica lets its copy go."""
        self._loop.call_soon_threadsafe(self._forget, path)

    def _forget(self, path: str) -> None:
        self.held.pop(path, None)
        self._syncing.pop(path, None)
        self._post(("forget", path))

    def _post(self, item: tuple) -> None:
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(item)

    def _flush(self) -> None:
        items, self._outbox = self._outbox, []
        if self.alive:
            writing = bool(self._out)
            self._out += frame(items)
            if not writing:
                self._write()

    def _write(self) -> None:
        try:
            sent = self._sock.send(self._out)
        except BlockingIOError:
            sent = 0
        except OSError:
            return self._died()
        del self._out[:sent]
        if self._out and not self._waiting:  # the socket's buffer is full: go on when it has room
            self._loop.add_writer(self._sock.fileno(), self._write)
        elif not self._out and self._waiting:
            self._loop.remove_writer(self._sock.fileno())
        self._waiting = bool(self._out)

    def _drain(self) -> None:
        try:
            data = self._sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return self._died()
        self._in += data
        for item in unframe(self._in):
            self._receive(item)

    def _receive(self, item: tuple) -> None:
        kind = item[0]
        if kind == "ready":
            self.ready = True
        elif kind == "held":
            _, path, key, error = item
            asked = self._syncing.pop(path, None)
            if key is None:
                self.held.pop(path, None)
                self._failed[path] = asked
                log.warning("%s could not open %s: %s", self.name, path, error)
            else:
                self.held[path] = tuple(key)
        else:
            future = self._pending.pop(item[1], None)
            if future is None or future.done():
                return  # the call ended meanwhile (cancelled, deadline)
            if kind == "result":
                self._stats.add("searches.replica")
                future.set_result(item[2])
            elif kind == "error":
                self._stats.add(f"status.{item[2]}")
                future.set_exception(Abort(grpc.StatusCode[item[2]], item[3]))
            else:  # "stale": the replica no longer held that state
                future.set_result(None)

    def _died(self) -> None:
        if not self.alive:
            return
        self._disconnect()
        code = self.process.poll()
        log.error("%s exited (%s); its searches run in the server", self.name, code)
        for future in self._pending.values():
            if not future.done():
                future.set_result(None)
        self._pending.clear()

    def _disconnect(self) -> None:
        self.alive = False
        self._loop.remove_reader(self._sock.fileno())
        self._loop.remove_writer(self._sock.fileno())
        self._sock.close()

    def close(self, timeout: float = 10.0) -> None:
        """End the replica (it exits when its connection closes) and wait for it."""
        if self.alive:
            self._disconnect()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class SearchReplicas:
    """The server's replicas: ``forward`` hands a search to the least busy one holding the collection's state."""

    def __init__(self, count: int, limits: Limits, loop: asyncio.AbstractEventLoop, stats: Stats):
        if count < 1:
            raise ValueError(f"--search-processes: expected at least 1 to start replicas, got {count}")
        self.replicas = [Replica(limits, loop, stats, i) for i in range(count)]

    def forward(self, collection: Collection, request, remaining: float | None) -> asyncio.Future | None:
        """The response future of a replica holding ``collection``'s present state (call holding its lock), or
        None: the caller searches, and the replicas are asked to follow."""
        path, key = str(collection.path), collection.state_key
        holding = [r for r in self.replicas if r.holds(path, key)]
        if len(holding) < len(self.replicas):
            self.follow(collection)
        if not holding:
            return None
        deadline = None if remaining is None else time.monotonic() + remaining
        return min(holding, key=lambda r: r.load).search(path, key, request.SerializeToString(), deadline)

    def follow(self, collection: Collection) -> None:
        """Ask every replica not holding it to take ``collection``'s present state (call holding its lock)."""
        path, key = str(collection.path), collection.state_key
        for r in self.replicas:
            if not r.holds(path, key):
                r.sync(path, key)

    def forget(self, path: str) -> None:
        for r in self.replicas:
            r.forget(path)

    def close(self) -> None:
        for r in self.replicas:
            r.close()


# -- the replica process ---------------------------------------------------------------------------------------
class _Deadline:
    """The context of a forwarded call: its deadline (``time.monotonic`` clock, or None)."""

    def __init__(self, deadline: float | None = None):
        self.deadline = deadline

    def is_active(self) -> bool:
        return True

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


class ReplicaWorker:
    """The replica's loop: take everything queued, apply syncs, answer the searches as batches, send one reply."""

    def __init__(self, sock: socket.socket, limits: Limits):
        from telescope.server.search import SearchServicer
        from telescope.server.state import ServerState

        self._sock = sock
        self._in = bytearray()
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self.collections: dict[str, Collection] = {}
        state = ServerState(registry=None, limits=limits)
        state.loaded.set()
        self.servicer = SearchServicer(state)
        self._opens: queue.Queue = queue.Queue()
        self._opening: dict[str, Key] = {}  # path -> the latest state asked for while it is being opened
        threading.Thread(target=self._open_loop, name="replica-open", daemon=True).start()

    def send(self, items: list[tuple]) -> None:
        if items:
            with self._send_lock:
                self._sock.sendall(frame(items))

    def run(self) -> None:
        self.send([("ready",)])
        while True:
            items = self._wait_for_items()
            if items is None:
                return
            searches, replies = [], []
            for item in items:
                if item[0] == "search":
                    searches.append(item)
                elif item[0] == "sync":
                    replies += self._sync(item[1], tuple(item[2]))
                elif item[0] == "forget":
                    with self._lock:
                        self.collections.pop(item[1], None)
            replies += self._answer(searches)
            self.send(replies)

    def _wait_for_items(self) -> list[tuple] | None:
        """Every item that has arrived (waiting for at least one); None when the server has closed the socket."""
        while True:
            try:
                data = self._sock.recv(1 << 20)
            except OSError:
                return None
            if not data:
                return None
            self._in += data
            items = unframe(self._in)
            if items:
                return items

    def _sync(self, path: str, key: Key) -> list[tuple]:
        with self._lock:
            held = self.collections.get(path)
            if path in self._opening:
                self._opening[path] = key
                return []
            if held is None or held.state_key[:2] != key[:2]:
                self._opening[path] = key
                self._opens.put(path)
                return []
        held.catch_up(key)  # a copy already past key stays: the server's key catches up with it
        return [("held", path, held.state_key, None)]

    def _open_loop(self) -> None:
        """Opens run here, so that the replica answers its other searches meanwhile."""
        while True:
            path = self._opens.get()
            start = time.perf_counter()
            try:
                copy = Collection.open(path, read_only=True)
            except Exception as e:  # noqa: BLE001 - a commit or delete raced the open: reported, the server goes on
                with self._lock:
                    self._opening.pop(path, None)
                self.send([("held", path, None, f"{type(e).__name__}: {e}")])
                continue
            with self._lock:
                copy.catch_up(self._opening.pop(path))
                self.collections[path] = copy
                key = copy.state_key
            self.send([("held", path, key, None)])
            log.info("search replica (pid %d) opened %s: generation %d, %d points, in %.2f s",
                     os.getpid(), path, copy.generation, len(copy), time.perf_counter() - start)

    def _answer(self, searches: list[tuple]) -> list[tuple]:
        from telescope.proto.telescope.v1.search_pb2 import SearchRequest

        replies, groups = [], {}
        for _, call, path, key, deadline, data in searches:
            with self._lock:
                copy = self.collections.get(path)
            if copy is None or copy.state_key != tuple(key):
                replies.append(("stale", call))
                continue
            try:
                check_alive(_Deadline(deadline), "searching")
                query = self.servicer._query(SearchRequest.FromString(data), copy, "")
            except Exception as e:  # noqa: BLE001 - every error gets its status, as in the server
                replies.append(_error_of(call, e))
            else:
                groups.setdefault(path, (copy, []))[1].append((call, query))
        for copy, calls in groups.values():
            replies += self._run(copy, calls)
        return replies

    def _run(self, copy: Collection, calls: list[tuple]) -> list[tuple]:
        try:
            responses = self.servicer._run([q for _, q in calls], copy, _Deadline(), batched=False)
            return [("result", call, r.SerializeToString()) for (call, _), r in zip(calls, responses)]
        except Exception:  # noqa: BLE001 - one call's failure must not fail the batch: each alone
            if len(calls) == 1:
                return [_error_of(calls[0][0], sys.exc_info()[1])]
            return [reply for call in calls for reply in self._run(copy, [call])]


def _error_of(call: int, error: BaseException) -> tuple:
    """The reply for a call that failed: its status code's name and message, as the server's ``rpc`` gives them."""
    code = status_of(error)
    if code is None:
        log.error("search replica: search failed", exc_info=error)
        return ("error", call, "INTERNAL", f"internal error ({type(error).__name__}): {error}")
    return ("error", call, code.name, message_of(error))


def main(argv: list[str]) -> None:
    """``python -m telescope.server.replica FD LIMITS_JSON``: serve the server at the other end of FD until it
    closes it. Signals are the server's business (it drains, then closes the connection)."""
    import faiss

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    faiss.omp_set_num_threads(1)
    sock = socket.socket(fileno=int(argv[0]))
    ReplicaWorker(sock, Limits(**json.loads(argv[1]))).run()
    os._exit(0)  # the opener thread may be mid-open: nothing of it needs finishing


if __name__ == "__main__":
    main(sys.argv[1:])
