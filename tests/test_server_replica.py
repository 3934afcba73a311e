"""Search replicas (telescope.server.replica): processes answering the server's plain vector searches from
read-only copies of its collections. They give the server's hits and errors, never miss an acknowledged write,
and a replica that dies leaves its searches to the server."""

from __future__ import annotations

import os
import signal
import time

import grpc
import numpy as np
import pytest

from index_helpers import nested_vectors
from server_helpers import DIM, fill, running_server
from telescope.proto.telescope.v1 import search_pb2
from telescope.server.client import Client, RemoteError
from telescope.server.convert import vector_message


def replica_answers(server, client: Client, name: str, vector: np.ndarray, timeout: float = 60.0) -> None:
    """Search until a replica has answered one (it opens the collection in the background)."""
    start = server.stats["searches.replica"]
    deadline = time.monotonic() + timeout
    while server.stats["searches.replica"] == start:
        assert time.monotonic() < deadline, f"no replica answered in {timeout} s: {server.stats.snapshot()}"
        client.search(name, vector=vector, k=1)
        time.sleep(0.05)


def hits(result) -> list[tuple[str, float]]:
    return [(h.id, round(h.score, 5)) for h in result.hits]


def test_a_replica_gives_the_servers_hits(tmp_path, tiny_model_path):
    with running_server(tmp_path / "data", tiny_model_path, search_processes=1) as server, Client(server.target) as client:
        vectors = fill(client, "c", n=150)
        replica_answers(server, client, "c", vectors[0])
        before = server.stats["searches.replica"]
        for i in (3, 40, 99, 149):
            forwarded = client.search("c", vector=vectors[i], k=5)
            (in_server,) = client.search_batch("c", [vectors[i]], k=5)  # a batch runs in the server's pool
            assert hits(forwarded) == hits(in_server) and forwarded.hits[0].id == f"p{i}"
            assert forwarded.hits[0].payload["name"] == f"p{i}" and forwarded.plan == in_server.plan
        assert server.stats["searches.replica"] == before + 4


def test_every_acknowledged_write_is_in_the_next_search(tmp_path, tiny_model_path):
    """Upserts, deletes and a commit (new generation), each followed at once by a search that must see it,
    while the replica follows (and answers again once it holds the new state)."""
    with running_server(tmp_path / "data", tiny_model_path, search_processes=1) as server, Client(server.target) as client:
        vectors = fill(client, "c", n=100)
        replica_answers(server, client, "c", vectors[0])
        extra = nested_vectors(30, DIM, seed=7)
        for round_ in range(30):
            client.upsert("c", [f"new{round_}"], vectors=extra[round_ : round_ + 1], payloads=[{"round": round_}])
            assert client.search("c", vector=extra[round_], k=1).hits[0].id == f"new{round_}"
            client.delete("c", [f"p{round_}"])
            assert f"p{round_}" not in {h.id for h in client.search("c", vector=vectors[round_], k=3).hits}
            if round_ == 10:
                server.state.registry.collection("c").commit()
        replica_answers(server, client, "c", vectors[50])  # it caught up with the writes and the commit
        assert client.search("c", vector=extra[29], k=1).hits[0].id == "new29"
        assert client.search("c", vector=vectors[60], k=1).hits[0].id == "p60"


def test_a_replicas_errors_are_the_servers(tmp_path, tiny_model_path):
    """Bad requests answered by a replica get the status and message the server gives without replicas."""
    bad = {
        "dimension": dict(vector=vector_message(np.ones(DIM + 1))),
        "nan": dict(vector=vector_message(np.r_[np.nan, np.ones(DIM - 1)])),
        "zeros": dict(vector=vector_message(np.zeros(DIM))),
        "k": dict(vector=vector_message(np.ones(DIM)), k=100_000),
        "zero prefix": dict(vector=vector_message(np.r_[np.zeros(16), np.ones(DIM - 16)])),
    }
    answers = {}
    for replicas in (0, 1):
        with running_server(tmp_path / f"data{replicas}", tiny_model_path, search_processes=replicas) as server, \
                Client(server.target) as client:
            vectors = fill(client, "c", n=50)
            if replicas:
                replica_answers(server, client, "c", vectors[0])
            stub = client.searches
            for name, fields in bad.items():
                with pytest.raises(grpc.RpcError) as e:
                    stub.Search(search_pb2.SearchRequest(collection="c", **fields), timeout=10)
                answers.setdefault(name, []).append((e.value.code(), e.value.details()))
                assert client.search("c", vector=vectors[1], k=1).hits[0].id == "p1"  # still serving
            if replicas:
                assert server.stats["status.INVALID_ARGUMENT"] >= len(bad)
    for name, (without, with_) in answers.items():
        assert without == with_, name
        assert without[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_a_replica_that_dies_leaves_its_searches_to_the_server(tmp_path, tiny_model_path):
    with running_server(tmp_path / "data", tiny_model_path, search_processes=1) as server, Client(server.target) as client:
        vectors = fill(client, "c", n=80)
        replica_answers(server, client, "c", vectors[0])
        replica = server.state.replicas.replicas[0]
        os.kill(replica.process.pid, signal.SIGKILL)
        replica.process.wait(10)
        answered = server.stats["searches.replica"]
        for i in range(40):
            assert client.search("c", vector=vectors[i], k=1).hits[0].id == f"p{i}"
        assert not replica.alive and server.stats["searches.replica"] == answered
        with pytest.raises(RemoteError):
            client.search("c", vector=np.zeros(DIM), k=1)


def test_deleting_a_collection_and_stopping_the_server_end_cleanly(tmp_path, tiny_model_path):
    with running_server(tmp_path / "data", tiny_model_path, search_processes=1) as server, Client(server.target) as client:
        vectors = fill(client, "c", n=60)
        replica_answers(server, client, "c", vectors[0])
        assert client.delete_collection("c") == 60
        again = fill(client, "c", n=20)  # the same name again: another collection, the replica must not mix them
        replica_answers(server, client, "c", again[5])
        for i in range(20):
            assert client.search("c", vector=again[i], k=1).hits[0].id == f"p{i}"
        assert len(client.search("c", vector=vectors[40], k=50).hits) == 20
        process = server.state.replicas.replicas[0].process
    assert process.poll() is not None  # stopping the server ended its replica


def test_the_load_generator_against_a_server_with_a_replica(tmp_path, tiny_model_path):
    """What ``telescope bench serve --search-processes 1`` runs: concurrent clients, every call answered."""
    from telescope.server.bench import Searches, run_clients

    with running_server(tmp_path / "data", tiny_model_path, search_processes=1) as server, Client(server.target) as client:
        vectors = fill(client, "c", n=100)
        replica_answers(server, client, "c", vectors[0])
        before = server.stats["searches.replica"]
        result = run_clients(server.target, Searches("c", vectors[:20], 5), clients=4, seconds=1.0, warmup=0.2)
        assert result.errors == 0 and result.requests > 0
        assert server.stats["searches.replica"] - before >= result.requests


@pytest.mark.parametrize("value", ["-1", "one", ""])
def test_bad_search_process_counts_are_refused(tmp_path, capsys, value):
    from cli_helpers import run_cli

    code, _, err = run_cli(["bench", "serve", "--search-processes", value, "--cache", str(tmp_path)], capsys)
    assert code == 2 and "--search-processes: expected integers >= 0" in err
    code, _, err = run_cli(["serve", "--data", str(tmp_path), "--port", "0", "--search-processes", "-2"], capsys)
    assert code == 2 and "--search-processes: expected 0 or more, got -2" in err
