"""Protobuf <-> Python conversions of the server: vectors through their packed bytes, payloads walked directly,
both equal to what the generic protobuf paths give."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import json_format, struct_pb2

from telescope.proto.telescope.v1 import common_pb2
from telescope.server.convert import payload_dict, plain, struct_message, vector_array, vector_message, vector_values


@pytest.mark.parametrize("n", [0, 1, 31, 32, 384, 5000])
def test_vectors_travel_as_the_same_packed_bytes(n):
    v = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    message = vector_message(v)
    assert message.SerializeToString() == common_pb2.Vector(values=v.tolist()).SerializeToString()
    back = vector_array(message)
    assert back.dtype == np.float32 and back.flags.writeable and np.array_equal(back, v)
    unpacked = common_pb2.Vector.FromString(b"".join(b"\x0d" + np.float32(x).tobytes() for x in v))  # also valid
    assert np.array_equal(vector_array(unpacked), v)


def test_vector_message_takes_any_float_array_like():
    assert list(vector_message(np.ones((1, 3), dtype=np.float64)).values) == [1.0, 1.0, 1.0]
    assert list(vector_message([0.5, 2]).values) == [0.5, 2.0]


def test_vector_values_names_the_field():
    with pytest.raises(ValueError, match=r"points\[2\].vector: expected 4 values, got 3"):
        vector_values(vector_message([1.0, 2.0, 3.0]), "points[2].vector", (4, 4))
    with pytest.raises(ValueError, match="q.vector: expected finite values, got nan at index 1"):
        vector_values(vector_message([1.0, np.nan]), "q.vector", (1, 4))


@pytest.mark.parametrize("payload", [
    {},
    {"n": 1, "text": "dogs bark"},
    {"a": 3.5, "b": True, "c": None, "d": [1, 2.5, "s", None, {"z": [False]}], "e": {"f": {"g": 2**60}}},
    {"big": 2.0**53, "neg": -4.0, "half": -0.5, "zero": 0.0, "empty": [], "nested": {}, "u": "é☃"},
])
def test_payload_dict_matches_json_format(payload):
    message = struct_message(payload)
    expected = plain(json_format.MessageToDict(message))
    got = payload_dict(message)
    assert got == expected and repr(got) == repr(expected)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_payload_dict_refuses_non_finite_numbers_as_json_format_does(bad):
    message = struct_pb2.Struct()
    message.fields["x"].number_value = bad
    with pytest.raises(ValueError) as expected:
        json_format.MessageToDict(message)
    with pytest.raises(ValueError) as got:
        payload_dict(message)
    assert str(got.value) == str(expected.value)
