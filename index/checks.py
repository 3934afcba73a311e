"""Checks on what callers hand a collection: ids, payloads, properties, vectors, queries and payload filters.

Each returns the value in the form the collection stores or searches, or raises ``ValueError`` / ``TypeError``
with a message naming the field, what was expected and what was received (``ids[3]: expected a non-empty
string, got ''``), before anything is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from telescope.index.plan import Plan

# Vector lengths the collection can normalise in float32: the squares of the values sum to no more than 1e38
# (float32 holds 3.4e38) and to at least 1e-38 (not all of them round to zero).
MIN_LENGTH, MAX_LENGTH = 1e-19, 1e19
# The longest vectors a collection holds: beyond every embedding model's width, short of sizes that no row fits.
MAX_DIM = 65536


def check_dim(dim: object) -> int:
    """A collection's ``dim``: an integer in 1..``MAX_DIM`` (not a bool)."""
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
        raise ValueError(f"dim: expected an integer in 1..{MAX_DIM}, got {dim!r}")
    return dim


def check_vectors(vectors: np.ndarray, n: int, dim: int, prefix: int) -> np.ndarray:
    """``vectors`` as unit-length float32 rows of shape (n, dim): finite, non-zero, and so are their first
    ``prefix`` values, which stage one searches after normalising them again in float32
    (``stage_one.prefix_normalize``): their length must be at least ``MIN_LENGTH`` of the vector's, the bound
    ``check_queries`` sets for a query's. Such a vector could never be found."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape != (n, dim):
        raise ValueError(f"vectors: expected shape ({n}, {dim}), got {tuple(vectors.shape)}")
    check_finite_nonzero(vectors, "vectors")
    unit = vectors / np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)  # float32 squares under/overflow
    prefix = min(prefix, dim)
    shortest = np.sqrt(np.einsum("ij,ij->i", unit[:, :prefix], unit[:, :prefix]))
    if (shortest < MIN_LENGTH).any():
        i = int(np.flatnonzero(shortest < MIN_LENGTH)[0])
        if not vectors[i, :prefix].any():
            raise ValueError(
                f"vectors[{i}]: expected a non-zero first {prefix} values (stage one searches them), got all zeros"
            )
        raise ValueError(
            f"vectors[{i}][:{prefix}]: expected a length (L2 norm) of at least {MIN_LENGTH:g} of the vector's "
            f"(stage one normalises them in float32), got {shortest[i]:g}"
        )
    return unit.astype(np.float32)


def check_queries(queries: np.ndarray, plan: Plan, dim: int) -> np.ndarray:
    """Queries for ``plan`` on a ``dim``-long collection as a C-contiguous float32 (n, d) array (one 1-d query
    is n = 1); finite, and of a length float32 can normalise at every prefix a stage reads
    (``stage_one.prefix_normalize``): the whole query at most ``MAX_LENGTH``, stage one's prefix at least
    ``MIN_LENGTH`` (prefix lengths grow with the prefix). Out of those bounds every score would be 0."""
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None, :]
    if queries.ndim != 2 or not plan.max_dim <= queries.shape[1] <= dim:
        raise ValueError(
            f"queries: expected shape (n, d) with {plan.max_dim} <= d <= {dim}, got {tuple(queries.shape)}"
        )
    if len(queries) == 0:
        raise ValueError("queries: expected at least one query, got none")
    first = plan.stages[0].dim
    wide = queries.astype(np.float64)  # float32 squares would overflow or underflow
    shortest = np.sqrt(np.einsum("ij,ij->i", wide[:, :first], wide[:, :first]))  # stage one's prefix
    longest = np.sqrt(np.einsum("ij,ij->i", wide, wide))
    if not (MIN_LENGTH <= shortest.min() and longest.max() <= MAX_LENGTH):  # nan when a value is not finite
        check_finite_nonzero(queries[:, :first], "queries")
        check_finite_nonzero(queries, "queries")  # the later stages read the coordinates past stage one's
        i = int(np.flatnonzero((shortest < MIN_LENGTH) | (longest > MAX_LENGTH))[0])
        at, length = ("", longest[i]) if longest[i] > MAX_LENGTH else (f"[:{first}]", shortest[i])
        raise ValueError(
            f"queries[{i}]{at}: expected a length (L2 norm) in [{MIN_LENGTH:g}, {MAX_LENGTH:g}] (normalised in "
            f"float32), got {length:g}"
        )
    return np.ascontiguousarray(queries)


def check_text(value: object, field: str) -> str:
    """``value`` as a non-empty string UTF-8 can encode: no lone surrogates (``'\\ud800'``), which Arrow (the WAL,
    the segments) refuses to store."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field}: expected a non-empty string, got {value!r}")
    try:
        value.encode()
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{field}: expected valid Unicode text, got {value!r} (a lone surrogate at index {e.start})"
        ) from None
    return value


def check_ids(ids: Sequence[str], allow_duplicates: bool = False) -> list[str]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise TypeError(f"ids: expected a list of strings, got {type(ids).__name__}")
    out = []
    for i, point_id in enumerate(ids):
        if not isinstance(point_id, str) or not point_id:
            raise ValueError(f"ids[{i}]: expected a non-empty string, got {point_id!r}")
        out.append(point_id)
    try:
        "".join(out).encode()  # one encode for the batch; per id only to name the bad one
    except UnicodeEncodeError:
        for i, point_id in enumerate(out):
            check_text(point_id, f"ids[{i}]")
    if not allow_duplicates and (repeat := first_repeat(out)) is not None:
        a, b = repeat
        raise ValueError(f"ids: expected unique ids in one batch, got {out[b]!r} at positions {a} and {b}")
    return out


def first_repeat(values: Sequence[str]) -> tuple[int, int] | None:
    """Positions (first, again) of the first value that comes again, or None when each comes once."""
    if len(set(values)) == len(values):
        return None
    first: dict[str, int] = {}
    for i, value in enumerate(values):
        if value in first:
            return first[value], i
        first[value] = i
    return None


def check_payloads(payloads: Sequence[dict] | None, n: int) -> list[str]:
    if payloads is None:
        return ["{}"] * n
    if isinstance(payloads, (str, bytes)) or not isinstance(payloads, Sequence):  # as ids: a generator has no len
        raise TypeError(f"payloads: expected a list of dicts, got {type(payloads).__name__}")
    if len(payloads) != n:
        raise ValueError(f"payloads: expected {n} payloads (one per id), got {len(payloads)}")
    out = []
    for i, payload in enumerate(payloads):
        if not isinstance(payload, dict):
            raise ValueError(f"payloads[{i}]: expected a dict, got {type(payload).__name__}")
        try:
            out.append(json.dumps(payload, allow_nan=False))
        except (TypeError, ValueError) as e:
            raise ValueError(f"payloads[{i}]: expected JSON-serialisable values, got {payload!r} ({e})") from e
    return out


def check_properties(properties: dict | None) -> dict:
    """A collection's free-form properties as the dict its manifest stores, checked to serialise as JSON
    (as ``files.write_json`` writes it) before any file is written."""
    if properties is None:
        return {}
    if not isinstance(properties, dict):
        raise ValueError(f"properties: expected a dict, got {type(properties).__name__}")
    try:
        json.dumps(properties, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"properties: expected JSON-serialisable values, got {properties!r} ({e})") from e
    return dict(properties)


def check_where(where: dict) -> dict:
    if not isinstance(where, dict):
        raise ValueError(f"where: expected a dict of payload field -> value, got {type(where).__name__}")
    for key, value in where.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"where: expected non-empty field names, got {key!r}")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"where[{key!r}]: expected a string, number, boolean or null, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):  # nan equals nothing: it would match no point
            raise ValueError(f"where[{key!r}]: expected a finite number, got {value!r}")
    return where


def check_finite_nonzero(vectors: np.ndarray, field: str) -> None:
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{field}[{i}]: expected finite values, got {vectors[i][~np.isfinite(vectors[i])][0]}")
    zero = ~vectors.any(axis=1)
    if zero.any():
        i = int(np.flatnonzero(zero)[0])
        raise ValueError(f"{field}[{i}]: expected a non-zero vector, got all zeros")
