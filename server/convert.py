"""Between protobuf messages and the Python values the library takes: vectors, payloads, filters.

Payloads travel as ``google.protobuf.Struct``, whose numbers are doubles; JSON does not tell 3 from 3.0, so a
double that is a whole number (below 2**53) comes back as an int. Checks here name request fields
(``points[3].vector``) so that errors point at what the client sent.
"""

from __future__ import annotations

import math

import numpy as np
from google.protobuf import json_format, struct_pb2

from telescope.index.checks import MAX_LENGTH, MIN_LENGTH  # the lengths the collection can normalise in float32
from telescope.proto.telescope.v1 import common_pb2

_EXACT_INT = 2**53


def vector_values(vector: common_pb2.Vector, field: str, expected: tuple[int, int]) -> np.ndarray:
    """The float32 values of a Vector with ``expected[0] <= len <= expected[1]``, finite and not all zero, of a
    length (L2 norm) the collection can divide by in float32 (over it, it would store zeros; under it, infinities)."""
    values = vector_array(vector)
    low, high = expected
    if not low <= len(values) <= high:
        want = f"{low}" if low == high else f"between {low} and {high}"
        raise ValueError(f"{field}: expected {want} values, got {len(values)}")
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # squares in float32: checked here
        square = float(values @ values)
    if MIN_LENGTH**2 <= square <= MAX_LENGTH**2:  # nan or inf over the bound (or a value not finite), 0 under it
        return values
    bad = ~np.isfinite(values)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{field}: expected finite values, got {values[j]} at index {j}")
    if not values.any():
        raise ValueError(f"{field}: expected a non-zero vector, got all zeros")
    wide = values.astype(np.float64)  # the length itself, for the message: float32 squares overflow or underflow
    raise ValueError(
        f"{field}: expected a length (L2 norm) in [{MIN_LENGTH:g}, {MAX_LENGTH:g}] (normalised in float32), "
        f"got {math.sqrt(float(wide @ wide)):g}"
    )


# A Vector travels as one packed field: tag 0x0a, the byte length as a varint, little-endian float32s (its
# ``repeated float values`` is packed in proto3). Going through those bytes moves a vector between numpy and the
# message in one copy; the per-float Python path (``values.extend(v.tolist())``, ``np.asarray(v.values)``) cost
# 31 us and 7 us per 384-dim vector, the bytes 5 us and 3 us. The wire format is the same either way.
def vector_message(values: np.ndarray) -> common_pb2.Vector:
    """A Vector holding ``values`` (any float array-like, flattened) as float32."""
    data = np.ascontiguousarray(values, dtype="<f4").ravel().tobytes()
    return common_pb2.Vector.FromString(b"\x0a" + varint(len(data)) + data if data else b"")


def vector_array(vector: common_pb2.Vector) -> np.ndarray:
    """A Vector's values as float32 (a writable copy), unchecked."""
    raw = vector.SerializeToString()  # field 1 first, packed (unknown fields, if any, come after it)
    if not raw or raw[0] != 0x0A:
        return np.zeros(0, dtype=np.float32)
    size, start = 0, 1
    for shift in range(0, 64, 7):
        byte = raw[start]
        start += 1
        size |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    return np.frombuffer(raw, dtype="<f4", count=size // 4, offset=start).astype(np.float32)


def varint(n: int) -> bytes:
    """``n`` (>= 0) as a protobuf base-128 varint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


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
    """The payload a Struct holds: ``plain(json_format.MessageToDict(message))``, walked directly (twice as fast:
    every search hit carries one)."""
    return {key: _value(value) for key, value in message.fields.items()}


def _value(value: struct_pb2.Value):
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):  # as json_format refuses it
            name = "NaN" if math.isnan(number) else "Infinity"
            raise ValueError(f"Fail to serialize {name} for Value.number_value, which would parse as string_value")
        return int(number) if number.is_integer() and abs(number) < _EXACT_INT else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return payload_dict(value.struct_value)
    if kind == "list_value":
        return [_value(v) for v in value.list_value.values]
    return None


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
        if kind == "number_value" and not math.isfinite(match.value.number_value):  # json_format refuses it
            raise ValueError(f"{at}.value: expected a finite number, got {match.value.number_value}")
        value = plain(json_format.MessageToDict(match.value))
        if match.key in where and where[match.key] != value:
            raise ValueError(f"{at}.key: expected each field at most once, got {match.key!r} again")
        where[match.key] = value
    return where
