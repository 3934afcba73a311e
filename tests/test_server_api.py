"""The telescope.v1 services end to end on a real server on a loopback port: collections, points, search, embed,
health, reflection, gzip, TLS, deadlines."""

from __future__ import annotations

import threading
from pathlib import Path
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from index_helpers import nested_vectors
from server_helpers import DIM, fill, running_server, self_signed_cert
from telescope.index import Collection
from telescope.proto.telescope.v1 import embed_pb2, search_pb2
from telescope.server.app import SERVICES
from telescope.server.client import Client, RemoteError


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_path):
    with running_server(tmp_path_factory.mktemp("data"), tiny_model_path) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with Client(server.target) as c:
        yield c


@pytest.fixture(scope="module")
def docs(client):
    return fill(client, "docs")


def test_collections_create_get_list_delete(client, tiny_model_path):
    info = client.create_collection("scratch", plan="16:20,64:5")
    assert (info.name, info.dim, info.default_plan, info.points) == ("scratch", DIM, "16:20,64:5", 0)
    assert info.model == str(tiny_model_path.resolve()) and info.model_version == "tiny-bert:1"
    assert "scratch" in [c.name for c in client.list_collections()]
    client.upsert("scratch", ["a"], texts=["hello"])
    assert client.get_collection("scratch").model_versions == {"tiny-bert:1": 1}
    assert client.delete_collection("scratch") == 1
    assert "scratch" not in [c.name for c in client.list_collections()]
    with pytest.raises(RemoteError) as e:
        client.get_collection("scratch")
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_a_delete_cut_short_leaves_a_server_that_starts_without_it(tmp_path, tiny_model_path, monkeypatch):
    """The process dies while the deleted collection's files go: the next start must not trip over what is left."""
    import telescope.server.registry as registry

    def die_half_way(path, *args, **kwargs):
        for segment in sorted(Path(path).glob("seg-*")):
            segment.unlink()
        raise SystemExit("killed while deleting")

    with running_server(tmp_path, tiny_model_path) as srv, Client(srv.target) as client:
        fill(client, "kept", n=20)
        fill(client, "doomed", n=20)
        srv.state.registry.collection("doomed").commit()
        monkeypatch.setattr(registry.shutil, "rmtree", die_half_way)
        with pytest.raises(SystemExit):
            srv.state.registry.delete("doomed")
    monkeypatch.undo()
    with running_server(tmp_path, tiny_model_path) as srv, Client(srv.target) as client:
        assert [c.name for c in client.list_collections()] == ["kept"]
        assert client.get_collection("kept").points == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def test_a_float16_collection_over_grpc_says_so_and_finds_its_points(client):
    info = client.create_collection("half", plan="16:50,64:5", stage_one="HNSW16,SQ8", vector_dtype="float16")
    assert (info.vector_dtype, info.stage_one) == ("float16", "HNSW16,SQ8")
    vectors = nested_vectors(300, DIM, seed=5)
    client.upsert("half", [f"h{i}" for i in range(300)], vectors=vectors)
    hits = client.search("half", vector=vectors[7], k=5).hits
    assert hits[0].id == "h7" and hits[0].score == pytest.approx(1.0, abs=1e-3)  # float16 rows: ~1e-4 off
    assert client.get_collection("half").vector_dtype == "float16"
    assert client.delete_collection("half") == 300


def test_vector_search_finds_the_stored_point_and_matches_the_local_index(client, docs, server):
    result = client.search("docs", vector=docs[5], k=3)
    assert result.hits[0].id == "p5" and result.hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert result.plan == "16:50,64:3"
    assert result.hits[0].payload == {"group": 2, "name": "p5", "even": False}
    local = server.state.registry.collection("docs").search(docs[5:6], k=3)[0]
    assert [h.id for h in result.hits] == [h.id for h in local]


def test_search_options_plan_filter_prefix_query_and_payloadless(client, docs):
    result = client.search("docs", vector=docs[7][:16], k=4, plan="16:4")  # a 16-dim prefix is a valid query
    assert result.plan == "16:4" and len(result.hits) == 4
    filtered = client.search("docs", vector=docs[0], k=10, where={"group": 1, "even": True})
    assert filtered.hits and all(h.payload["group"] == 1 and h.payload["even"] is True for h in filtered.hits)
    bare = client.search("docs", vector=docs[0], k=2, with_payload=False)
    assert bare.hits[0].id == "p0" and bare.hits[0].payload == {}


def test_recall_target_lets_the_collection_pick_its_plan(client, docs, server):
    result = client.search("docs", vector=docs[4], k=5, recall_target=0.9)
    assert result.hits[0].id == "p4" and len(result.hits) == 5
    choice = server.state.registry.collection("docs").choose_plan(0.9, k=5)
    assert result.plan == str(choice.plan.for_k(5)) and choice.recall >= 0.9


def test_recall_target_plan_of_a_deleted_collection_is_not_reused_by_its_successor(client):
    """A plan picked for a recall target is remembered per collection; one created again under the same name (at
    another dim) measures its own."""
    client.create_collection("again", plan=f"16:50,{DIM}:10")
    client.upsert("again", [f"a{i}" for i in range(100)], vectors=nested_vectors(100, DIM, seed=3))
    assert client.search("again", vector=nested_vectors(100, DIM, seed=3)[0], k=5, recall_target=0.9).plan.endswith(f",{DIM}:5")
    client.delete_collection("again")
    client.create_collection("again", dim=32, plan="16:50,32:10")
    vectors = nested_vectors(100, 32, seed=3)
    client.upsert("again", [f"a{i}" for i in range(100)], vectors=vectors)
    result = client.search("again", vector=vectors[4], k=5, recall_target=0.9)
    assert result.hits[0].id == "a4" and result.plan.endswith("32:5")
    client.delete_collection("again")


def test_text_points_are_embedded_by_the_collection_model(client, tiny_embedder):
    client.create_collection("texts")
    texts = ["cats purr", "dogs bark", "stocks rose", "the sun is a star"]
    response = client.upsert("texts", [f"t{i}" for i in range(4)], texts=texts, payloads=[{"n": i} for i in range(4)])
    assert (response.upserted, response.points) == (4, 4)
    result = client.search("texts", text="dogs bark", k=2)
    assert result.hits[0].id == "t1" and result.model_version == "tiny-bert:1" and result.embed_ms > 0
    assert result.hits[0].payload == {"n": 1, "text": "dogs bark"}
    stored = client.get("texts", ["t2", "nope"], with_vector=True)
    assert stored[1] is None
    np.testing.assert_allclose(stored[0].vector, tiny_embedder.encode(["stocks rose"])[0], atol=1e-5)


def test_a_collection_shorter_than_its_model_embeds_texts_at_its_dim(client, tiny_embedder):
    """Matryoshka models: a 32-dim collection of the 64-dim model holds (and is queried by) the 32-dim prefixes."""
    info = client.create_collection("short", dim=32, plan="16:4,32:2")
    assert (info.dim, info.default_plan) == (32, "16:4,32:2")
    texts = ["cats purr", "dogs bark", "stocks rose", "the sun is a star"]
    response = client.upsert("short", [f"t{i}" for i in range(3)], texts=texts[:3])
    assert (response.upserted, response.points) == (3, 3)
    client.upsert_stream("short", [{"ids": ["t3"], "texts": texts[3:]}])
    stored = client.get("short", ["t2"], with_vector=True)[0]
    np.testing.assert_allclose(stored.vector, tiny_embedder.encode(["stocks rose"], dim=32)[0], atol=1e-5)
    result = client.search("short", text="dogs bark", k=2)
    assert result.hits[0].id == "t1" and result.hits[0].score == pytest.approx(1.0, abs=1e-4)
    batch = client.search_batch("short", ["the sun is a star", tiny_embedder.encode(["cats purr"], dim=32)[0]], k=1)
    assert [r.hits[0].id for r in batch] == ["t3", "t0"]
    client.delete_collection("short")


def test_a_collection_built_at_a_shallow_layer_embeds_texts_there(tmp_path, tiny_model_path, tiny_embedder):
    """``index build --layer 2`` records the layer: the server's text upserts and text queries use it too."""
    from telescope.cli.models import collection_model_properties

    props, _ = collection_model_properties(str(tiny_model_path), layer=2)
    Collection.create(tmp_path / "data" / "shallow", DIM, properties=props).close()
    texts = ["cats purr", "dogs bark", "stocks rose"]
    with running_server(tmp_path / "data", tiny_model_path) as srv, Client(srv.target) as client:
        client.upsert("shallow", [f"t{i}" for i in range(3)], texts=texts)
        stored = client.get("shallow", ["t2"], with_vector=True)[0]
        np.testing.assert_allclose(stored.vector, tiny_embedder.encode(["stocks rose"], layer=2)[0], atol=1e-5)
        hit = client.search("shallow", text="dogs bark", k=1).hits[0]
        assert hit.id == "t1" and hit.score == pytest.approx(1.0, abs=1e-4)


def test_upsert_stream_delete_and_get(client):
    client.create_collection("stream")
    vectors = np.random.default_rng(0).standard_normal((30, DIM)).astype(np.float32)
    batches = [{"ids": [f"s{i}" for i in range(j, j + 10)], "vectors": vectors[j : j + 10]} for j in (0, 10, 20)]
    batches.append({"ids": ["s-text"], "texts": ["a text point in a stream"]})
    response = client.upsert_stream("stream", batches)
    assert (response.upserted, response.points) == (31, 31)
    assert client.delete("stream", ["s0", "s1"]) == 2
    assert client.delete("stream", ["s0", "s2"], ignore_missing=True) == 1
    got = client.get("stream", ["s0", "s3"])
    assert got[0] is None and got[1].id == "s3" and got[1].model_version == "tiny-bert:1"
    assert client.get_collection("stream").points == 28


def test_upsert_stream_raises_the_error_of_a_bad_batch_not_unknown(client):
    """A batch the client cannot turn into a message (here one vector for two ids) raises its own error, not gRPC's
    'UNKNOWN: Exception iterating requests!'."""
    client.create_collection("badbatch")
    vectors = np.random.default_rng(4).standard_normal((3, DIM)).astype(np.float32)
    batches = [{"ids": ["a", "b"], "vectors": vectors[:2]}, {"ids": ["c", "d"], "vectors": vectors[2:]}]
    with pytest.raises(ValueError, match=r"batches\[1\]: points: expected one vector or text \(and payload\) per id \(2\), got 1"):
        client.upsert_stream("badbatch", iter(batches))
    with pytest.raises(TypeError, match=r"batches\[1\]: "):
        list(client.embed_stream([["a text"], None]))  # the second batch is no list of texts
    client.delete_collection("badbatch")


def test_model_version_restricts_search_to_its_vectors(client):
    client.create_collection("versions")
    v = np.random.default_rng(1).standard_normal((6, DIM)).astype(np.float32)
    client.upsert("versions", ["a", "b", "c"], vectors=v[:3], model_version="old:1")
    client.upsert("versions", ["d", "e", "f"], vectors=v[3:], model_version="new:2")
    result = client.search("versions", vector=v[0], k=6, model_version="new:2")
    assert {h.id for h in result.hits} == {"d", "e", "f"} and {h.model_version for h in result.hits} == {"new:2"}
    assert client.get_collection("versions").model_versions == {"old:1": 3, "new:2": 3}


def test_search_batch_answers_in_order(client, docs):
    results = client.search_batch("docs", [docs[3], "some text", docs[9]], k=2)
    assert [r.hits[0].id for r in (results[0], results[2])] == ["p3", "p9"]
    assert len(results[1].hits) == 2 and results[1].embed_ms > 0


def test_embed_and_embed_stream_at_grid_points(client, tiny_embedder):
    texts = ["one text", "another text", "a third"]
    vectors = client.embed(texts, layer=2, dim=16)
    np.testing.assert_allclose(vectors, tiny_embedder.encode(texts, layer=2, dim=16), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    out = list(client.embed_stream([["a"], ["b", "c"], ["d"] * 5], dim=8))
    assert [m.shape for m in out] == [(1, 8), (2, 8), (5, 8)]


def test_embed_stream_error_names_the_message(client):
    with pytest.raises(RemoteError) as e:
        list(client.embed_stream([["ok"], []]))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "message 1: texts: expected at least one text" in e.value.details


def test_gzip_and_plain_clients_get_the_same_answer(server, docs):
    with Client(server.target, gzip=False) as plain, Client(server.target, gzip=True) as zipped:
        a = plain.search("docs", vector=docs[11], k=5)
        b = zipped.search("docs", vector=docs[11], k=5)
    assert [h.id for h in a.hits] == [h.id for h in b.hits]


def test_health_serving_and_reflection_lists_the_services(server, client):
    assert client.health() == "SERVING"
    assert all(client.health(s) == "SERVING" for s in SERVICES)
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    response = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in response.list_services_response.service}
    assert set(SERVICES) | {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_healthcheck_names_a_missing_tls_ca_file(server, tmp_path, monkeypatch, capsys):
    """A TELESCOPE_TLS_CA naming no file: one line naming the variable and the path, exit 1 (as for any failure)."""
    from telescope.server.healthcheck import main

    missing = tmp_path / "no-such-ca.pem"
    monkeypatch.setenv("TELESCOPE_TLS_CA", str(missing))
    assert main([server.target]) == 1
    err = capsys.readouterr().err
    assert f"TELESCOPE_TLS_CA: expected a readable CA certificate file, got {str(missing)!r}" in err
    assert "Traceback" not in err
    monkeypatch.delenv("TELESCOPE_TLS_CA")
    assert main([server.target]) == 0 and "SERVING" in capsys.readouterr().out


def test_not_serving_while_loading_then_serving(tmp_path, tiny_model_path):
    with running_server(tmp_path / "data", tiny_model_path, load=False) as srv, Client(srv.target) as c:
        assert c.health() == "NOT_SERVING"
        with pytest.raises(RemoteError) as e:
            c.list_collections()
        assert e.value.code == grpc.StatusCode.UNAVAILABLE and "NOT_SERVING" in e.value.details
        srv.load()
        assert c.health() == "SERVING" and c.list_collections() == []


def test_deadline_exceeded_and_the_work_is_abandoned(server, client):
    before = server.stats["abandoned"]
    request = embed_pb2.EmbedRequest(texts=[f"text number {i} " * 40 for i in range(1024)])  # 32 chunks of 128 tokens
    start = time.perf_counter()
    with pytest.raises(grpc.RpcError) as e:
        client.embeds.Embed(request, timeout=0.1)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.perf_counter() - start < 5
    deadline = time.monotonic() + 10
    while server.stats["abandoned"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.stats["abandoned"] == before + 1  # it stopped between chunks instead of embedding all 1000
    assert client.health() == "SERVING"


def test_tls_and_token(tmp_path, tiny_model_path):
    cert, key = self_signed_cert(tmp_path)
    with running_server(tmp_path / "data", tiny_model_path, tls_cert=cert, tls_key=key, token="s3cret") as srv:
        with Client(srv.target, tls_ca=cert, token="s3cret") as c:
            c.create_collection("tls")
            assert c.list_collections()[0].name == "tls"
        with Client(srv.target, tls_ca=cert) as anonymous:
            assert anonymous.health() == "SERVING"  # health needs no token
            with pytest.raises(RemoteError) as e:
                anonymous.list_collections()
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
        with Client(srv.target, token="s3cret", timeout=3) as plaintext:
            with pytest.raises(RemoteError) as e:
                plaintext.list_collections()
            assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_concurrent_clients_get_consistent_answers(server, docs):
    errors: list[Exception] = []

    def worker(offset: int) -> None:
        try:
            with Client(server.target) as c:
                for i in range(offset, 200, 8):
                    assert c.search("docs", vector=docs[i], k=1).hits[0].id == f"p{i}"
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(o,)) for o in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors


def test_stop_commits_every_collection(tmp_path, tiny_model_path):
    with running_server(tmp_path / "data", tiny_model_path) as srv, Client(srv.target) as c:
        c.create_collection("c1")
        c.upsert("c1", ["a", "b"], vectors=np.ones((2, DIM), np.float32))
        assert c.get_collection("c1").uncommitted_writes == 1
    reopened = Collection.open(tmp_path / "data" / "c1", read_only=True)
    assert len(reopened) == 2 and reopened.info()["uncommitted_writes"] == 0
