"""Bad requests get canonical status codes and messages naming the field, the expected and the received value;
after each one the server still answers a good request. Raw generated stubs: what any gRPC client sends."""

from __future__ import annotations

import re

import grpc
import pytest
from google.protobuf import struct_pb2

from server_helpers import fill, running_server
from telescope.proto.telescope.v1 import (
    collections_pb2 as cpb,
    collections_pb2_grpc,
    common_pb2,
    embed_pb2 as epb,
    embed_pb2_grpc,
    points_pb2 as ppb,
    points_pb2_grpc,
    search_pb2 as spb,
    search_pb2_grpc,
)
from telescope.server.client import Client
from telescope.server.limits import Limits

TOKEN = "table-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
LIMITS = Limits(max_points_per_request=100, max_texts_per_request=50, max_searches_per_batch=20, max_text_chars=2_000)
Code = grpc.StatusCode
MIB = 1024 * 1024


def vec(values) -> common_pb2.Vector:
    return common_pb2.Vector(values=list(values))


def value(v) -> struct_pb2.Value:
    s = struct_pb2.Struct()
    s.update({"v": v})
    return s.fields["v"]


def filt(**conditions) -> common_pb2.Filter:
    return common_pb2.Filter(must=[common_pb2.FieldMatch(key=k, value=value(v)) for k, v in conditions.items()])


ONES = [0.1] * 64


def pts(*points) -> list[ppb.PointInput]:
    return [ppb.PointInput(id=i, **data) for i, data in points]


# (name, service, method, request, expected code, expected message (regex), metadata)
CASES = [
    ("unknown collection", "search", "Search", spb.SearchRequest(collection="nope", text="x"),
     Code.NOT_FOUND, r"collection: expected one of the server's collections \[.*'docs'.*\], got 'nope'", AUTH),
    ("no query", "search", "Search", spb.SearchRequest(collection="docs"),
     Code.INVALID_ARGUMENT, r"query: expected a text or a vector, got neither", AUTH),
    ("empty query text", "search", "Search", spb.SearchRequest(collection="docs", text="  "),
     Code.INVALID_ARGUMENT, r"text: expected a non-empty query text, got '  '", AUTH),
    ("dimension mismatch", "search", "Search", spb.SearchRequest(collection="docs", vector=vec([1.0, 2.0, 3.0])),
     Code.INVALID_ARGUMENT, r"vector: expected 64 values, got 3", AUTH),
    ("short prefix for plan", "search", "Search", spb.SearchRequest(collection="docs", vector=vec(ONES[:8]), plan="16:10"),
     Code.INVALID_ARGUMENT, r"vector: expected between 16 and 64 values, got 8", AUTH),
    ("NaN in vector", "search", "Search", spb.SearchRequest(collection="docs", vector=vec(ONES[:5] + [float("nan")] + ONES[6:])),
     Code.INVALID_ARGUMENT, r"vector: expected finite values, got nan at index 5", AUTH),
    ("infinite value", "search", "Search", spb.SearchRequest(collection="docs", vector=vec([float("inf")] + ONES[1:])),
     Code.INVALID_ARGUMENT, r"vector: expected finite values, got inf at index 0", AUTH),
    ("zero vector", "search", "Search", spb.SearchRequest(collection="docs", vector=vec([0.0] * 64)),
     Code.INVALID_ARGUMENT, r"vector: expected a non-zero vector, got all zeros", AUTH),
    ("k = 0", "search", "Search", spb.SearchRequest(collection="docs", text="x", k=0),
     Code.INVALID_ARGUMENT, r"k: expected an integer in 1\.\.1000, got 0", AUTH),
    ("k < 0", "search", "Search", spb.SearchRequest(collection="docs", text="x", k=-3),
     Code.INVALID_ARGUMENT, r"k: expected an integer in 1\.\.1000, got -3", AUTH),
    ("k over the limit", "search", "Search", spb.SearchRequest(collection="docs", text="x", k=5000),
     Code.INVALID_ARGUMENT, r"k: expected an integer in 1\.\.1000, got 5000", AUTH),
    ("plan dims beyond the collection", "search", "Search", spb.SearchRequest(collection="docs", text="x", plan="16:50,128:10"),
     Code.INVALID_ARGUMENT, r"plan: expected stage dims at most the collection's dim 64, got '16:50,128:10'", AUTH),
    ("malformed plan", "search", "Search", spb.SearchRequest(collection="docs", text="x", plan="sixteen"),
     Code.INVALID_ARGUMENT, r"plan: expected stages 'dim:keep' separated by commas, got 'sixteen'", AUTH),
    ("plan dims not increasing", "search", "Search", spb.SearchRequest(collection="docs", text="x", plan="32:50,16:10"),
     Code.INVALID_ARGUMENT, r"plan\[1\]\.dim: expected more than the previous stage's 32, got 16", AUTH),
    ("recall target out of range", "search", "Search", spb.SearchRequest(collection="docs", text="x", recall_target=1.5),
     Code.INVALID_ARGUMENT, r"recall_target: expected a recall@k in \(0, 1\], got 1\.5", AUTH),
    ("filter on a list", "search", "Search", spb.SearchRequest(collection="docs", text="x", filter=filt(group=[1, 2])),
     Code.INVALID_ARGUMENT, r"filter\.must\[0\]\.value: expected a string, number, boolean or null, got a list", AUTH),
    ("filter on NaN", "search", "Search", spb.SearchRequest(collection="docs", text="x", filter=filt(group=float("nan"))),
     Code.INVALID_ARGUMENT, r"filter\.must\[0\]\.value: expected a finite number, got nan", AUTH),
    ("query vector too long to normalise", "search", "Search", spb.SearchRequest(collection="docs", vector=vec([3e38] * 64)),
     Code.INVALID_ARGUMENT, r"vector: expected a length \(L2 norm\) in \[1e-19, 1e\+19\] \(normalised in float32\), got 2\.4e\+39", AUTH),
    ("plan keep over the limit", "search", "Search", spb.SearchRequest(collection="docs", text="x", plan="16:200000,64:10"),
     Code.INVALID_ARGUMENT, r"plan\[0\]\.keep: expected at most 100,000, got 200,000", AUTH),
    ("plan keep beyond int64", "search", "Search", spb.SearchRequest(collection="docs", vector=vec(ONES), plan="16:99999999999999999999,64:10"),
     Code.INVALID_ARGUMENT, r"plan\[0\]\.keep: expected at most 100,000, got 99,999,999,999,999,999,999", AUTH),
    ("plan whose k is over the limit", "search", "Search", spb.SearchRequest(collection="docs", vector=vec(ONES), plan="16:5000"),
     Code.INVALID_ARGUMENT, r"plan\[0\]\.keep: expected at most 1000 in the last stage \(the k when the request gives none\), got 5,000", AUTH),
    ("unknown model version", "search", "Search", spb.SearchRequest(collection="docs", vector=vec(ONES), model_version="nope:9"),
     Code.NOT_FOUND, r"model_version: expected one of the stored versions \['tiny-bert:1'\], got 'nope:9'", AUTH),
    ("text query by a model the server lacks", "search", "Search", spb.SearchRequest(collection="docs", text="x", model_version="nope:9"),
     Code.NOT_FOUND, r"model_version: expected a model the server holds .*'tiny-bert:1'.*, got 'nope:9'", AUTH),
    ("batch over the limit", "search", "SearchBatch", spb.SearchBatchRequest(collection="docs", searches=[spb.SearchRequest(text="x")] * 21),
     Code.RESOURCE_EXHAUSTED, r"searches: expected at most 20 per request, got 21", AUTH),
    ("batch naming another collection", "search", "SearchBatch", spb.SearchBatchRequest(collection="docs", searches=[spb.SearchRequest(collection="other", text="x")]),
     Code.INVALID_ARGUMENT, r"searches\[0\]\.collection: expected '' or 'docs', got 'other'", AUTH),
    ("upsert dimension mismatch", "points", "Upsert", ppb.UpsertPointsRequest(collection="docs", points=pts(("n1", {"vector": vec(ONES)}), ("n2", {"vector": vec(ONES[:10])}))),
     Code.INVALID_ARGUMENT, r"points\[1\]\.vector: expected 64 values, got 10", AUTH),
    ("upsert NaN", "points", "Upsert", ppb.UpsertPointsRequest(collection="docs", points=pts(("n1", {"vector": vec([float("nan")] * 64)}))),
     Code.INVALID_ARGUMENT, r"points\[0\]\.vector: expected finite values, got nan at index 0", AUTH),
    ("upsert duplicate ids", "points", "Upsert", ppb.UpsertPointsRequest(collection="docs", points=pts(("n1", {"vector": vec(ONES)}), ("n1", {"vector": vec(ONES)}))),
     Code.INVALID_ARGUMENT, r"ids: expected unique ids in one batch, got 'n1' at positions 0 and 1", AUTH),
    ("upsert empty id", "points", "Upsert", ppb.UpsertPointsRequest(collection="docs", points=pts(("", {"vector": vec(ONES)}))),
     Code.INVALID_ARGUMENT, r"points\[0\]\.id: expected a non-empty string, got ''", AUTH),
    ("upsert mixing vectors and texts", "points", "Upsert", ppb.UpsertPointsRequest(collection="docs", points=pts(("n1", {"vector": vec(ONES)}), ("n2", {"text": "t"}))),
     Code.INVALID_ARGUMENT, r"points\[1\]\.data: expected a vector like points\[0\] \(one kind per message\), got a text", AUTH),
    ("upsert payload with NaN", "points", "Upsert", ppb.UpsertPointsRequest(collection="docs", points=[ppb.PointInput(id="n1", vector=vec(ONES), payload=struct_pb2.Struct(fields={"x": value(float("nan"))}))]),
     Code.INVALID_ARGUMENT, r"points\[0\]\.payload: expected finite numbers \(JSON has no NaN or Infinity\); .*NaN", AUTH),
    ("upsert a vector too short to normalise", "points", "Upsert", ppb.UpsertPointsRequest(collection="docs", points=pts(("n1", {"vector": vec([1e-45] * 64)}))),
     Code.INVALID_ARGUMENT, r"points\[0\]\.vector: expected a length \(L2 norm\) in \[1e-19, 1e\+19\] \(normalised in float32\), got 1\.1\d*e-44", AUTH),
    ("upsert a vector too long to normalise", "points", "Upsert", ppb.UpsertPointsRequest(collection="docs", points=pts(("n1", {"vector": vec([3e38] * 64)}))),
     Code.INVALID_ARGUMENT, r"points\[0\]\.vector: expected a length \(L2 norm\) in \[1e-19, 1e\+19\] \(normalised in float32\), got 2\.4e\+39", AUTH),
    ("text upsert repeating an id across chunks", "points", "Upsert", ppb.UpsertPointsRequest(collection="docs", points=pts(*[("n1" if i == 66 else f"n{i}", {"text": "t"}) for i in range(70)])),
     Code.INVALID_ARGUMENT, r"ids: expected unique ids in one batch, got 'n1' at positions 1 and 66", AUTH),
    ("text upsert repeating an id after the first chunk", "points", "Upsert", ppb.UpsertPointsRequest(collection="docs", points=pts(*[("n65" if i == 66 else f"n{i}", {"text": "t"}) for i in range(70)])),
     Code.INVALID_ARGUMENT, r"ids: expected unique ids in one batch, got 'n65' at positions 65 and 66", AUTH),
    ("oversized upsert batch", "points", "Upsert", ppb.UpsertPointsRequest(collection="docs", points=pts(*[(f"n{i}", {"text": "t"}) for i in range(101)])),
     Code.RESOURCE_EXHAUSTED, r"points: expected at most 100 per request, got 101; split it or use UpsertStream", AUTH),
    ("delete unknown id", "points", "Delete", ppb.DeletePointsRequest(collection="docs", ids=["p1", "ghost"]),
     Code.NOT_FOUND, r"ids: 1 unknown id\(s\), e\.g\. \['ghost'\]; nothing was deleted", AUTH),
    ("get without ids", "points", "Get", ppb.GetPointsRequest(collection="docs"),
     Code.INVALID_ARGUMENT, r"ids: expected at least one id, got none", AUTH),
    ("create an existing collection", "collections", "Create", cpb.CreateCollectionRequest(name="docs"),
     Code.ALREADY_EXISTS, r"name: expected a new collection name, got 'docs' \(it exists\)", AUTH),
    ("create with a path as name", "collections", "Create", cpb.CreateCollectionRequest(name="../escape"),
     Code.INVALID_ARGUMENT, r"name: expected 1-64 characters of \[A-Za-z0-9_.-\] starting with a letter or digit, got '\.\./escape'", AUTH),
    ("create with a missing model folder", "collections", "Create", cpb.CreateCollectionRequest(name="m", model="/no/such/model"),
     Code.INVALID_ARGUMENT, r"model: expected 'default' or a sentence-transformers folder, got '/no/such/model'", AUTH),
    ("create with a bad dim", "collections", "Create", cpb.CreateCollectionRequest(name="m", dim=0),
     Code.INVALID_ARGUMENT, r"dim: expected an integer in 1\.\.65536, got 0", AUTH),
    ("create with a dim beyond the model's", "collections", "Create", cpb.CreateCollectionRequest(name="m", dim=80),
     Code.INVALID_ARGUMENT, r"dim: expected at most 64 \(the model's full dim\), got 80", AUTH),
    ("create with a plan keep over the limit", "collections", "Create", cpb.CreateCollectionRequest(name="m", plan="16:200000,64:10"),
     Code.INVALID_ARGUMENT, r"plan\[0\]\.keep: expected at most 100,000, got 200,000", AUTH),
    ("create with an unknown vector dtype", "collections", "Create", cpb.CreateCollectionRequest(name="m", vector_dtype="int4"),
     Code.INVALID_ARGUMENT, r"vector_dtype: expected one of float32, float16, got 'int4'", AUTH),
    ("delete an unknown collection", "collections", "Delete", cpb.DeleteCollectionRequest(name="ghost"),
     Code.NOT_FOUND, r"name: expected one of the server's collections .*, got 'ghost'", AUTH),
    ("embed nothing", "embed", "Embed", epb.EmbedRequest(),
     Code.INVALID_ARGUMENT, r"texts: expected at least one text, got none", AUTH),
    ("embed layer 0", "embed", "Embed", epb.EmbedRequest(texts=["a"], layer=0),
     Code.INVALID_ARGUMENT, r"layer: expected an integer in 1\.\.4, got 0", AUTH),
    ("embed dim too large", "embed", "Embed", epb.EmbedRequest(texts=["a"], dim=999),
     Code.INVALID_ARGUMENT, r"dim: expected an integer in 1\.\.64, got 999", AUTH),
    ("embed too many texts", "embed", "Embed", epb.EmbedRequest(texts=["a"] * 51),
     Code.RESOURCE_EXHAUSTED, r"texts: expected at most 50 per request, got 51", AUTH),
    ("embed a text over the length limit", "embed", "Embed", epb.EmbedRequest(texts=["a" * 2001]),
     Code.RESOURCE_EXHAUSTED, r"texts\[0\]: expected at most 2,000 characters, got 2,001", AUTH),
    ("embed with a model the server lacks", "embed", "Embed", epb.EmbedRequest(texts=["a"], model="other:1"),
     Code.NOT_FOUND, r"model: expected a model the server holds .*, got 'other:1'", AUTH),
    ("message over 64 MiB", "embed", "Embed", epb.EmbedRequest(texts=["a" * (64 * MIB + 1)]),
     Code.RESOURCE_EXHAUSTED, r"(?i)message larger than max", AUTH),
    ("missing token", "search", "Search", spb.SearchRequest(collection="docs", text="x"),
     Code.UNAUTHENTICATED, r"authorization: expected metadata 'authorization: Bearer <token>', got none", ()),
    ("wrong token", "search", "Search", spb.SearchRequest(collection="docs", text="x"),
     Code.UNAUTHENTICATED, r"authorization: expected the server's bearer token, got another token", (("authorization", "Bearer guess"),)),
    ("token without Bearer", "collections", "List", cpb.ListCollectionsRequest(),
     Code.UNAUTHENTICATED, r"got a value without the 'Bearer ' prefix", (("authorization", TOKEN),)),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_path):
    with running_server(tmp_path_factory.mktemp("data"), tiny_model_path, token=TOKEN, limits=LIMITS) as srv:
        with Client(srv.target, token=TOKEN) as client:
            vectors = fill(client, "docs", n=60)
            channel = grpc.insecure_channel(srv.target, options=[("grpc.max_send_message_length", -1)])
            stubs = {
                "search": search_pb2_grpc.SearchStub(channel),
                "points": points_pb2_grpc.PointsStub(channel),
                "collections": collections_pb2_grpc.CollectionsStub(channel),
                "embed": embed_pb2_grpc.EmbedStub(channel),
            }
            yield stubs, vectors
            channel.close()


def test_the_table_is_large_enough():
    assert len(CASES) >= 20 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request_then_a_good_one(served, case):
    name, service, method, request, code, message, metadata = case
    stubs, vectors = served
    with pytest.raises(grpc.RpcError) as e:
        getattr(stubs[service], method)(request, timeout=30, metadata=metadata)
    assert e.value.code() == code, f"{name}: {e.value.details()}"
    assert re.search(message, e.value.details()), f"{name}: {e.value.details()!r}"
    good = stubs["search"].Search(
        spb.SearchRequest(collection="docs", vector=vec(vectors[7].tolist()), k=3), timeout=30, metadata=AUTH
    )
    assert good.hits[0].id == "p7" and len(good.hits) == 3
    listed = stubs["collections"].List(cpb.ListCollectionsRequest(), timeout=30, metadata=AUTH)
    assert [c.name for c in listed.collections] == ["docs"] and listed.collections[0].points == 60
