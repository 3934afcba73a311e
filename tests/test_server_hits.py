"""Search responses built from stored hits (telescope.server.hits, cached payload bytes) equal what protobuf builds from
the same hits the general way."""

import json

import pytest

from telescope.proto.telescope.v1 import common_pb2, search_pb2
from telescope.server.convert import struct_message
from telescope.server.hits import PayloadCache, search_response

RECORDS = [
    ("a", 0.75, json.dumps({"n": 3, "text": "x" * 300}), "model:1"),
    ("é/ü-🙂", -0.125, json.dumps({"nested": {"list": [1, 2.5, None, True, "s"]}, "big": 2**60}), "m:2"),
    ("empty", 0.0, "{}", ""),
    ("long-id-" + "z" * 200, 1.0, json.dumps({"f": 1.0}), "v"),
]


def expected(records, with_payload: bool) -> search_pb2.SearchResponse:
    return search_pb2.SearchResponse(hits=[
        common_pb2.Hit(id=i, score=s, payload=struct_message(json.loads(p)) if with_payload else None, model_version=v)
        for i, s, p, v in records
    ])


@pytest.mark.parametrize("with_payload", [True, False])
def test_hits_equal_protobufs_own_message(with_payload):
    got = search_response(RECORDS, with_payload, PayloadCache())
    want = expected(RECORDS, with_payload)
    assert got == want
    assert [h.HasField("payload") for h in got.hits] == [with_payload] * len(RECORDS)
    assert search_pb2.SearchResponse.FromString(got.SerializeToString()) == want


def test_no_hits_is_an_empty_response():
    assert search_response([], True, PayloadCache()) == search_pb2.SearchResponse()


def test_payload_cache_is_bounded_and_still_right_after_emptying():
    cache = PayloadCache(max_entries=2)
    payloads = [json.dumps({"i": i}) for i in range(5)]
    for p in payloads * 2:
        assert cache(p) == struct_message(json.loads(p)).SerializeToString()
    assert len(cache._bytes) <= 2
