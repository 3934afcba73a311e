"""A rollout over gRPC: the server resumes the backfill in the background, Collections.Get shows its state and
progress, and every search hit says which model version produced its stored vector."""

from __future__ import annotations

import time

import grpc
import pytest

from server_helpers import running_server
from telescope.index import Collection
from telescope.pipelines.rollout import start_rollout
from telescope.server.client import Client
from test_rollout_backfill import QUERIES, make_collection, new_embedder, new_model_path  # noqa: F401 (fixtures)


def test_get_shows_rollout_progress_and_hits_their_model_version(tmp_path, tiny_embedder, tiny_model_path,
                                                                 new_embedder, new_model_path):  # noqa: F811
    data = tmp_path / "data"
    c = make_collection(data / "docs", tiny_embedder, tiny_model_path)
    start_rollout(c, new_embedder, str(new_model_path))  # switched, nothing backfilled yet (--no-backfill)
    c.close()
    with running_server(data, tiny_model_path, load=False) as server, Client(server.target) as client:
        server.state.registry.backfill_rate = 10.0  # slow enough to be seen half way
        server.state.registry.backfill_batch_size = 4
        server.load()
        info = client.get_collection("docs")
        assert info.HasField("rollout") and info.model_version == "tiny-bt2:1" and info.dim == 80
        r = info.rollout
        assert (r.from_model_version, r.to_model_version, r.prefix_dim, r.total) == ("tiny-bert:1", "tiny-bt2:1", 64, 40)
        assert r.state == "backfilling" and r.backfill_running and r.backfilled < 40 and r.backfill_error == ""
        seen = set()
        deadline = time.monotonic() + 120
        while client.get_collection("docs").rollout.state != "complete":
            assert time.monotonic() < deadline, "the background backfill did not finish"
            result = client.search("docs", text=QUERIES[0], k=40)  # every point: each once, old ones while backfilling
            assert result.model_version == "tiny-bt2:1" and len({h.id for h in result.hits}) == 40
            seen |= {h.model_version for h in result.hits}
            time.sleep(0.2)
        assert seen <= {"tiny-bert:1", "tiny-bt2:1"} and "tiny-bert:1" in seen
        r = client.get_collection("docs").rollout
        assert (r.backfilled, r.total, r.fraction, r.backfill_running) == (40, 40, 1.0, False)
        assert {h.model_version for h in client.search("docs", text=QUERIES[1], k=10).hits} == {"tiny-bt2:1"}
        assert client.get_collection("docs").model_versions == {"tiny-bt2:1": 40}


def test_a_text_search_of_the_old_version_while_backfilling(tmp_path, tiny_embedder, tiny_model_path,
                                                           new_embedder, new_model_path):  # noqa: F811
    """The old model's query (64 dims) under the collection's plan at the new model's 80: cut to the old length."""
    data = tmp_path / "data"
    c = make_collection(data / "docs", tiny_embedder, tiny_model_path)
    start_rollout(c, new_embedder, str(new_model_path))
    c.close()
    with running_server(data, tiny_model_path, load=False) as server, Client(server.target) as client:
        server.state.registry.backfill_rate, server.state.registry.backfill_batch_size = 0.5, 1  # 80 s for 40 points
        server.load()
        for query in ({"text": QUERIES[0]}, {"vector": tiny_embedder.encode(QUERIES[:1])[0]}):
            result = client.search("docs", k=5, model_version="tiny-bert:1", **query)
            assert len(result.hits) == 5 and {h.model_version for h in result.hits} == {"tiny-bert:1"}


def test_collections_without_a_rollout_have_none(tmp_path, tiny_embedder, tiny_model_path):
    make_collection(tmp_path / "data" / "plain", tiny_embedder, tiny_model_path).close()
    with running_server(tmp_path / "data", tiny_model_path) as server, Client(server.target) as client:
        assert not client.get_collection("plain").HasField("rollout")
        assert not client.list_collections()[0].HasField("rollout")
    assert Collection.open(tmp_path / "data" / "plain", read_only=True).dim == 64


def test_vectors_of_the_version_a_finished_rollout_left_are_refused(tmp_path, tiny_embedder, tiny_model_path,
                                                                     new_embedder, new_model_path):  # noqa: F811
    """Once a rollout is complete, a write of the old model's vectors would bring back the version the collection
    has left (and a rollout state that no longer holds): INVALID_ARGUMENT naming the version to write."""
    from telescope.pipelines.rollout import run_backfill
    from telescope.server.client import RemoteError

    data = tmp_path / "data"
    c = make_collection(data / "docs", tiny_embedder, tiny_model_path)
    start_rollout(c, new_embedder, str(new_model_path))
    run_backfill(c, new_embedder, show_progress=False)
    c.close()
    old, new = tiny_embedder.encode(QUERIES[:1]), new_embedder.encode(QUERIES[:1])
    with running_server(data, tiny_model_path) as server, Client(server.target) as client:
        assert client.get_collection("docs").rollout.state == "complete"
        with pytest.raises(RemoteError) as refused:
            client.upsert("docs", ["late"], vectors=old, model_version="tiny-bert:1")
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details == ("model_version: expected '' or 'tiny-bt2:1' (the rollout from 'tiny-bert:1' "
                                         "is complete), got 'tiny-bert:1'")
        assert client.upsert("docs", ["late"], vectors=new).upserted == 1
        assert client.get_collection("docs").model_versions == {"tiny-bt2:1": 41}


def test_a_point_of_the_old_version_written_after_the_last_pass_is_backfilled_too(
        tmp_path, tiny_embedder, tiny_model_path, new_embedder, new_model_path, monkeypatch):  # noqa: F811
    """The race between the background backfill's last pass and settling the rollout, made deterministic: an
    old-version vector lands just before the first settle. The server backfills it too and the rollout completes,
    instead of staying backfilling with no backfill running until a restart."""
    from telescope.server import registry

    data = tmp_path / "data"
    c = make_collection(data / "docs", tiny_embedder, tiny_model_path)
    start_rollout(c, new_embedder, str(new_model_path))
    c.close()
    real_settle, late = registry.settle, []

    def settle_after_a_late_write(collection):
        if not late:
            late.append(collection.upsert(["late"], tiny_embedder.encode(["a late old-model point"]),
                                          [{"text": "a late old-model point"}], model_version="tiny-bert:1"))
        return real_settle(collection)

    monkeypatch.setattr(registry, "settle", settle_after_a_late_write)
    with running_server(data, tiny_model_path, load=False) as server, Client(server.target) as client:
        server.state.registry.backfill_rate = None
        server.load()
        deadline = time.monotonic() + 60
        while (info := client.get_collection("docs")).rollout.state != "complete":
            assert time.monotonic() < deadline, f"rollout left {info.rollout.state} with {info.model_versions}"
            time.sleep(0.1)
        assert late and info.model_versions == {"tiny-bt2:1": 41}
