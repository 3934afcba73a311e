"""The server as other services meet it under adversarial clients: stalled streams, bytes that are no message,
answers too large to send, clients that fill the server's queues with keys. Real servers on loopback ports."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from index_helpers import nested_vectors
from server_helpers import DIM, fill, running_server
from telescope.proto.telescope.v1 import embed_pb2, points_pb2
from telescope.server.client import Client, RemoteError, _point_inputs
from telescope.server.limits import MIB, Limits


def test_stalled_streams_do_not_starve_the_other_calls(tmp_path, tiny_model_path):
    """More stalled streaming clients than the server has pool threads (running_server: 8): unary calls that run in
    the pool (a write, a batch search, an embedding) still get answered."""
    release = threading.Event()

    def stalled_embeds():
        yield embed_pb2.EmbedRequest(texts=["a first text"])
        release.wait(60)

    def stalled_upserts(vector):
        yield points_pb2.UpsertPointsRequest(collection="c", points=_point_inputs(["s"], vector, None, None))
        release.wait(60)

    with running_server(tmp_path / "data", tiny_model_path) as server, Client(server.target, timeout=20) as client:
        vectors = fill(client, "c", n=50)
        calls = []
        try:
            for _ in range(8):
                call = client.embeds.EmbedStream(stalled_embeds(), timeout=60)
                assert next(call).dim == DIM  # its thread now waits for a next message
                calls.append(call)
            for _ in range(2):
                calls.append(client.points.UpsertStream.future(stalled_upserts(vectors[:1]), timeout=60))
            assert client.upsert("c", ["new"], vectors=vectors[:1]).upserted == 1
            (result,) = client.search_batch("c", [vectors[4]], k=1)
            assert result.hits[0].id == "p4"
            assert client.embed(["still answered"]).shape == (1, DIM)
        finally:
            release.set()
            for call in calls:
                call.cancel()


@pytest.fixture(scope="module")
def small_messages(tmp_path_factory, tiny_model_path):
    limits = Limits(max_message_bytes=MIB)
    with running_server(tmp_path_factory.mktemp("data"), tiny_model_path, limits=limits) as server:
        with Client(server.target) as client:
            yield server, client


def raw_call(client: Client, method: str, data: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        client.channel.unary_unary(method)(data, timeout=20)
    return e.value


def test_bytes_that_are_no_message_are_invalid_argument(small_messages):
    server, client = small_messages
    vectors = fill(client, "bytes", n=20)
    for data, why in ((b"\xff\xff\xff", "Wire format was corrupt"), (b"\x0a\x02\xc3\x28", "bad UTF-8")):
        error = raw_call(client, "/telescope.v1.Search/Search", data)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert error.details().startswith(
            f"request: expected a valid telescope.v1.SearchRequest (strings in UTF-8), got {len(data)} bytes"
        ) and why in error.details()
    good = points_pb2.UpsertPointsRequest(collection="bytes", points=_point_inputs(["x"], vectors[:1], None, None))
    with pytest.raises(grpc.RpcError) as e:
        client.channel.stream_unary("/telescope.v1.Points/UpsertStream")(
            iter([good.SerializeToString(), b"\x0a\x02\xc3\x28"]), timeout=20)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert e.value.details().startswith("message 1: request: expected a valid telescope.v1.UpsertPointsRequest")
    assert client.search("bytes", vector=vectors[3], k=1).hits[0].id == "p3"
    assert client.get("bytes", ["x"])[0] is not None  # the good first message was written
    assert server.stats["status.INTERNAL"] == 0


def test_an_answer_over_the_message_limit_is_resource_exhausted_and_says_why(small_messages):
    server, client = small_messages
    client.create_collection("big", plan=f"16:50,{DIM}:10")
    ids = [f"b{i}" for i in range(5000)]
    vectors = nested_vectors(len(ids), DIM, seed=5)
    for start in range(0, len(ids), 2500):
        client.upsert("big", ids[start : start + 2500], vectors=vectors[start : start + 2500])
    with pytest.raises(RemoteError) as e:
        client.get("big", ids, with_vector=True)  # 5,000 x 64 floats: over 1 MiB
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert e.value.details.startswith("response: expected at most 1,048,576 bytes (the message limit), got ")
    assert "fewer ids" in e.value.details
    points = client.get("big", ids)  # without vectors it fits
    assert all(p is not None for p in points)
    assert client.search("big", vector=vectors[9], k=1).hits[0].id == "b9"


def test_searches_with_distinct_filters_leave_no_queues_behind(tmp_path, tiny_model_path):
    """Each (collection, plan, k, filter) of the search batcher has a queue while it has work; a client that sends
    a thousand distinct filters must not leave a thousand queues behind."""
    with running_server(tmp_path / "data", tiny_model_path) as server, Client(server.target) as client:
        vectors = fill(client, "c", n=60)
        for i in range(40):
            hits = client.search("c", vector=vectors[i], k=1, where={"name": f"p{i}"}).hits
            assert [h.id for h in hits] == [f"p{i}"]
        assert len(server.state.searches._queues) == 0
        assert len(server.state.batcher._queues) <= 1  # texts: one key per (model, layer, dim)
        client.search("c", text="a text", k=1)
        assert len(server.state.batcher._queues) == 0


def test_a_stream_whose_collection_is_deleted_and_created_again_writes_to_the_new_one(tmp_path, tiny_model_path):
    """Each message of an UpsertStream writes to the collection its name holds when the message arrives: not to the
    closed copy of a collection deleted meanwhile (FAILED_PRECONDITION naming a server path)."""
    go_on = threading.Event()
    vectors = nested_vectors(2, DIM, seed=3)

    def messages():
        yield points_pb2.UpsertPointsRequest(collection="c", points=_point_inputs(["a"], vectors[:1], None, None))
        go_on.wait(30)
        yield points_pb2.UpsertPointsRequest(points=_point_inputs(["b"], vectors[1:], None, None))

    with running_server(tmp_path / "data", tiny_model_path) as server, Client(server.target) as client:
        client.create_collection("c", plan=f"16:10,{DIM}:5")
        call = client.points.UpsertStream.future(messages(), timeout=60)
        try:
            wait_for(lambda: client.get_collection("c").points == 1)
            assert client.delete_collection("c") == 1
            client.create_collection("c", plan=f"16:10,{DIM}:5")
        finally:
            go_on.set()
        assert call.result(timeout=30).upserted == 2
        assert [p and p.id for p in client.get("c", ["a", "b"])] == [None, "b"]


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met in {timeout} s"
        time.sleep(0.05)


def test_a_token_grpc_cannot_carry_is_refused_where_it_is_given(tmp_path, tiny_model_path):
    """gRPC metadata is printable ASCII: a server holding another token could never be called (every client call
    failed with INTERNAL 'Invalid metadata'), so it is refused at start, and by the client."""
    from telescope.server.auth import read_token

    (tmp_path / "token.txt").write_text("s3crét\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"--token-file: expected printable ASCII characters \(gRPC metadata\), got 'é' at index 4"):
        read_token(token_file=tmp_path / "token.txt")
    with pytest.raises(ValueError, match=r"--token: expected printable ASCII characters \(gRPC metadata\), got '\\t'"):
        with running_server(tmp_path / "data", tiny_model_path, token="a\tb"):
            pass
    with running_server(tmp_path / "data", tiny_model_path, token="s3cret") as server:
        with pytest.raises(ValueError, match=r"token: expected printable ASCII characters \(gRPC metadata\), got 'é'"):
            Client(server.target, token="s3crét")
        channel = grpc.insecure_channel(server.target)
        list_call = channel.unary_unary("/telescope.v1.Collections/List")
        assert list_call(b"", timeout=20, metadata=(("authorization", "bearer s3cret"),)) == b""  # scheme: any case
        for value, shown in (("Bearer s3cret2", "another token"), ("s3cret", "a value without the 'Bearer ' prefix")):
            with pytest.raises(grpc.RpcError) as e:
                list_call(b"", timeout=20, metadata=(("authorization", value),))
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and e.value.details().endswith(shown)
        channel.close()


def test_a_remote_error_crosses_process_boundaries_with_its_code(tmp_path, tiny_model_path):
    """Workers (Ray, multiprocessing) hand a client's error back pickled: it must arrive as the same RemoteError,
    not as a TypeError of the unpickling."""
    import pickle

    with running_server(tmp_path / "data", tiny_model_path) as server, Client(server.target) as client:
        with pytest.raises(RemoteError) as e:
            client.get_collection("nope")
    again = pickle.loads(pickle.dumps(e.value))
    assert type(again) is RemoteError and str(again) == str(e.value)
    assert (again.method, again.code, again.details) == ("Collections.Get", grpc.StatusCode.NOT_FOUND, e.value.details)


def test_a_tls_pair_grpc_cannot_use_is_named_not_a_port_that_cannot_bind(tmp_path, tiny_model_path):
    from server_helpers import self_signed_cert

    cert, key = self_signed_cert(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = self_signed_cert(other)
    cases = [
        (key, key, r"--tls-cert: expected a PEM certificate \('-----BEGIN CERTIFICATE-----'\), got none in '.*key\.pem'"),
        (cert, cert, r"--tls-key: expected a PEM private key \('-----BEGIN PRIVATE KEY-----'\), got none in '.*cert\.pem'"),
        (cert, other_key, r"--tls-cert / --tls-key: expected a certificate and its own unencrypted private key, got a "
                          r"pair that does not load \(KEY_VALUES_MISMATCH\)"),
    ]
    for tls_cert, tls_key, message in cases:
        with pytest.raises(ValueError, match=message):
            with running_server(tmp_path / "data", tiny_model_path, tls_cert=tls_cert, tls_key=tls_key, load=False):
                pass


def test_writes_racing_the_deletion_of_their_collection_get_not_found(tmp_path, tiny_model_path):
    """A collection deleted (and created again) over and over while other clients write to it by name: each write
    succeeds or fails with NOT_FOUND, never with FAILED_PRECONDITION naming a path on the server (a write that
    found the collection, then met its closed object)."""
    vectors = nested_vectors(20, DIM, seed=4)
    unexpected: list[str] = []

    def churn() -> None:
        with Client(server.target) as c:
            while time.monotonic() < stop:
                c.create_collection("d", plan=f"16:10,{DIM}:5")
                c.upsert("d", [f"x{i}" for i in range(20)], vectors=vectors)
                c.delete_collection("d")

    def writer() -> None:
        with Client(server.target) as c:
            while time.monotonic() < stop:
                for write in (lambda: c.upsert("d", ["t1", "t2"], texts=["a text to embed", "and another one"]),
                              lambda: c.delete("d", ["x1"], ignore_missing=True)):
                    try:
                        write()
                    except RemoteError as e:
                        if e.code != grpc.StatusCode.NOT_FOUND or str(tmp_path) in e.details:
                            unexpected.append(str(e))

    with running_server(tmp_path / "data", tiny_model_path) as server:
        stop = time.monotonic() + 4
        threads = [threading.Thread(target=f) for f in (churn, writer, writer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not unexpected, unexpected[:3]


def test_the_call_limit_counts_telescope_calls_and_leaves_health_checks_through(tmp_path, tiny_model_path):
    """At ``max_concurrent_rpcs`` telescope calls in flight a further one gets RESOURCE_EXHAUSTED naming the limit,
    but health checks are still answered (an orchestrator probing a busy server must not see it as dead), and
    the calls are counted down as they end."""
    release = threading.Event()

    def stalled_embeds():
        yield embed_pb2.EmbedRequest(texts=["a first text"])
        release.wait(60)

    with running_server(tmp_path / "data", tiny_model_path, limits=Limits(max_concurrent_rpcs=2)) as server, \
            Client(server.target, timeout=20) as client:
        calls = []
        try:
            for _ in range(2):
                call = client.embeds.EmbedStream(stalled_embeds(), timeout=60)
                assert next(call).dim == DIM
                calls.append(call)
            with pytest.raises(RemoteError) as refused:
                client.list_collections()
            assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "at most 2 telescope calls at once" in refused.value.details
            for _ in range(5):
                assert client.health() == "SERVING"
        finally:
            release.set()
            for call in calls:
                call.cancel()
        deadline = time.monotonic() + 10
        while True:  # the cancelled streams leave the count as their handlers end
            try:
                assert client.list_collections() == []
                break
            except RemoteError:
                assert time.monotonic() < deadline
                time.sleep(0.05)


class BlackHoleProxy:
    """A TCP relay to ``target`` that can go silent (``freeze``): bytes stop flowing both ways, sockets stay open,
    as when a client's machine vanishes from the network without closing its connection."""

    def __init__(self, target: str):
        import socket

        host, _, port = target.rpartition(":")
        self._target = (host.strip("[]"), int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.frozen = threading.Event()
        self._sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._relay, args=(a, b), daemon=True).start()

    def _relay(self, source, sink) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            if not self.frozen.is_set():
                sink.sendall(data)

    def close(self) -> None:
        for s in [self._listener, *self._sockets]:
            s.close()


def test_a_stream_whose_client_vanished_is_ended_by_keepalive(tmp_path, tiny_model_path):
    """The server pings its clients (``keepalive_s``); a client whose connection stays open but answers nothing
    loses its calls after the ping's timeout, so its stream stops holding a thread and a slot of the call limit."""
    release = threading.Event()

    def stalled_embeds():
        yield embed_pb2.EmbedRequest(texts=["a first text"])
        release.wait(30)

    with running_server(tmp_path / "data", tiny_model_path, keepalive_s=0.5) as server:
        proxy = BlackHoleProxy(server.target)
        try:
            with Client(proxy.address, timeout=20) as client:
                call = client.embeds.EmbedStream(stalled_embeds(), timeout=60)
                assert next(call).dim == DIM and server.calls_in_flight == 1
                proxy.frozen.set()
                deadline = time.monotonic() + 15
                while server.calls_in_flight:
                    assert time.monotonic() < deadline, "the vanished client's stream still holds its slot"
                    time.sleep(0.1)
                release.set()
                call.cancel()
        finally:
            release.set()
            proxy.close()


def test_serve_refuses_a_keepalive_or_call_limit_out_of_range(tmp_path, capsys):
    from cli_helpers import run_cli
    from telescope.server.app import ServerConfig

    with pytest.raises(ValueError, match=r"--keepalive-s: expected seconds in \(0, 7200\], got 0"):
        ServerConfig(data_dir=tmp_path, keepalive_s=0)
    code, _, err = run_cli(["serve", "--data", str(tmp_path), "--port", "0", "--max-concurrent-rpcs", "0"], capsys)
    assert code != 0 and "--max-concurrent-rpcs: expected an integer >= 1, got 0" in err
