"""Between protobuf messages and the Python values the library takes: vectors, payloads, filters.

Payloads travel as ``google.protobuf.Struct``, whose numbers are doubles; JSON does not tell 3 from 3.0, so a
double that is a whole number (below 2**53) comes back as an int. Checks here name request fields
(``points[3].vector``) so that errors point at what the client sent.
"""

from __future__ import annotations

import math

import numpy as np
from google.protobuf import json_format, struct_pb2

from telescope.proto.telescope.v1 import common_pb2

_EXACT_INT = 2**53


def vector_values(vector: common_pb2.Vector, field: str, expected: tuple[int, int]) -> np.ndarray:
    """The float32 values of a Vector with ``expected[0] <= len <= expected[1]``, finite and not all zero."""
    values = np.asarray(vector.values, dtype=np.float32)
    low, high = expected
    if not low <= len(values) <= high:
        want = f"{low}" if low == high else f"between {low} and {high}"
        raise ValueError(f"{field}: expected {want} values, got {len(values)}")
    bad = ~np.isfinite(values)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{field}: expected finite values, got {values[j]} at index {j}")
    if not values.any():
        raise ValueError(f"{field}: expected a non-zero vector, got all zeros")
    return values


def vector_message(values: np.ndarray) -> common_pb2.Vector:
    return common_pb2.Vector(values=np.asarray(values, dtype=np.float32).tolist())


def struct_message(payload: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(payload)
    return message


def plain(value):
    """A JSON value from protobuf's decoding with whole-number doubles turned back into ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INT:
        return int(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def payload_dict(message: struct_pb2.Struct) -> dict:
    return plain(json_format.MessageToDict(message))


def filter_dict(message: common_pb2.Filter, field: str) -> dict:
    """``{key: value}`` of a Filter's exact-match conditions."""
    where: dict = {}
    for j, match in enumerate(message.must):
        at = f"{field}.must[{j}]"
        if not match.key:
            raise ValueError(f"{at}.key: expected a payload field name, got ''")
        kind = match.value.WhichOneof("kind")
        if kind is None:
            raise ValueError(f"{at}.value: expected a string, number, boolean or null, got no value")
        if kind in ("struct_value", "list_value"):
            raise ValueError(f"{at}.value: expected a string, number, boolean or null, got a {kind.removesuffix('_value')}")
        value = plain(json_format.MessageToDict(match.value))
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{at}.value: expected a finite number, got {value}")
        if match.key in where and where[match.key] != value:
            raise ValueError(f"{at}.key: expected each field at most once, got {match.key!r} again")
        where[match.key] = value
    return where
