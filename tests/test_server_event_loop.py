"""The asyncio server (telescope.server.bridge): short vector searches answered on the event loop, everything
else in the thread pool, and nothing that waits (a write holding a collection) stalls the loop."""

from __future__ import annotations

import threading
import time

import numpy as np

from server_helpers import DIM, fill, running_server
from google.protobuf import struct_pb2

from telescope.proto.telescope.v1 import common_pb2, embed_pb2, points_pb2, search_pb2
from telescope.server.client import Client, _point_inputs
from telescope.server.convert import vector_message


def test_a_search_behind_a_write_waits_in_the_pool_while_the_loop_answers(tmp_path, tiny_model_path):
    with running_server(tmp_path / "data", tiny_model_path) as server, Client(server.target) as client:
        vectors = fill(client, "c", n=100)
        collection = server.state.registry.collection("c")
        results = []
        with collection.lock:  # as an upsert or a commit holds it
            searcher = threading.Thread(target=lambda: results.append(client.search("c", vector=vectors[7], k=3)))
            searcher.start()
            time.sleep(0.3)
            assert not results  # waiting for the lock ...
            assert client.health() == "SERVING"  # ... in the pool: the event loop still answers
            assert client.embed(["other calls go on"]).shape == (1, DIM)  # and the pool has other threads
        searcher.join(10)
        assert results and results[0].hits[0].id == "p7"


def test_inline_and_pool_searches_give_the_same_hits(tmp_path, tiny_model_path):
    """A plain vector search runs on the event loop, the same search with a filter or as a batch in the pool."""
    with running_server(tmp_path / "data", tiny_model_path) as server, Client(server.target) as client:
        vectors = fill(client, "c", n=120)
        for i in (0, 5, 61):
            inline = client.search("c", vector=vectors[i], k=5)
            (batched,) = client.search_batch("c", [vectors[i]], k=5)
            assert [(h.id, round(h.score, 5)) for h in inline.hits] == [(h.id, round(h.score, 5)) for h in batched.hits]
            assert inline.hits[0].id == f"p{i}"


def test_which_searches_run_on_the_event_loop(tmp_path, tiny_model_path, monkeypatch):
    """Plain vector searches on a small or indexed collection: on the loop; filters, model versions, recall
    targets, texts and exact scans over INLINE_SCAN coordinates: in the pool (``inline`` returns None)."""
    from telescope.server.search import SearchServicer

    with running_server(tmp_path / "data", tiny_model_path) as server, Client(server.target) as client:
        vectors = fill(client, "c", n=60)
        searches = SearchServicer(server.state)
        context = _Context()

        def request(**fields):
            return search_pb2.SearchRequest(collection="c", vector=vector_message(vectors[2]), k=3, **fields)

        assert searches.inline(request(), context).hits[0].id == "p2"
        assert searches.inline(request(plan=f"16:20,{DIM}:3"), context).hits[0].id == "p2"
        must = common_pb2.Filter(must=[common_pb2.FieldMatch(key="group", value=struct_pb2.Value(number_value=2))])
        assert searches.inline(request(filter=must), context) is None
        assert searches.inline(request(model_version="tiny-bert:1"), context) is None
        assert searches.inline(request(recall_target=0.9), context) is None
        assert searches.inline(search_pb2.SearchRequest(collection="c", text="a text", k=3), context) is None
        assert server.state.registry.collection("c").exact_scan_size(16) == 60 * 16  # Flat stage one
        monkeypatch.setattr("telescope.server.search.INLINE_SCAN", 60 * 16 - 1)
        assert searches.inline(request(), context) is None


class _Context:
    def is_active(self) -> bool:
        return True

    def time_remaining(self) -> float:
        return 30.0

    def abort(self, code, details):
        raise AssertionError(f"{code}: {details}")


def test_calls_without_a_deadline(tmp_path, tiny_model_path):
    """gRPC clients need not set a deadline (grpcurl, most languages' defaults): every kind of call still works."""
    with running_server(tmp_path / "data", tiny_model_path) as server, Client(server.target) as client:
        vectors = fill(client, "c", n=50)
        search = search_pb2.SearchRequest(collection="c", vector=vector_message(vectors[3]), k=2)
        assert client.searches.Search(search).hits[0].id == "p3"  # on the event loop
        assert client.searches.SearchBatch(search_pb2.SearchBatchRequest(collection="c", searches=[search])).results
        response = client.points.UpsertStream(iter([points_pb2.UpsertPointsRequest(
            collection="c", points=_point_inputs(["new"], vectors[:1], None, None))]))
        assert response.upserted == 1
        streamed = list(client.embeds.EmbedStream(iter([embed_pb2.EmbedRequest(texts=["a text"])])))
        assert len(streamed) == 1


def test_a_client_stream_cut_off_midway_does_not_hold_the_server(tmp_path, tiny_model_path):
    """A pool thread waiting for a streamed upsert's next message is let go when the call is cancelled (the loop's
    read of the stream ends), so stopping the server does not wait on it."""
    release = threading.Event()

    def messages():
        yield points_pb2.UpsertPointsRequest(
            collection="c", points=_point_inputs(["a", "b"], np.eye(2, DIM, dtype=np.float32), None, None)
        )
        release.wait(30)  # the client stalls: the server waits for a next message that never comes

    data = tmp_path / "data"
    with running_server(data, tiny_model_path) as server, Client(server.target) as client:
        client.create_collection("c", plan=f"16:10,{DIM}:5")
        call = client.points.UpsertStream.future(messages())
        deadline = time.monotonic() + 10
        while client.get_collection("c").points < 2 and time.monotonic() < deadline:  # each message is written
            time.sleep(0.05)  # as it arrives
        call.cancel()
        start = time.perf_counter()
        server.stop(grace=1.0)
        assert time.perf_counter() - start < 10
        release.set()
    with running_server(data, tiny_model_path) as server, Client(server.target) as client:
        assert client.get_collection("c").points == 2  # the first message's points, committed at the stop
