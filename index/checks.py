"""Checks on what callers hand a collection: ids, payloads, vectors, queries and payload filters.

Each returns the value in the form the collection stores or searches, or raises ``ValueError`` / ``TypeError``
with a message naming the field, what was expected and what was received (``ids[3]: expected a non-empty
string, got ''``), before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from telescope.index.plan import Plan


def check_vectors(vectors: np.ndarray, n: int, dim: int) -> np.ndarray:
    """``vectors`` as float32 of shape (n, dim), finite and non-zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape != (n, dim):
        raise ValueError(f"vectors: expected shape ({n}, {dim}), got {tuple(vectors.shape)}")
    check_finite_nonzero(vectors, "vectors")
    return vectors


def check_queries(queries: np.ndarray, plan: Plan, dim: int) -> np.ndarray:
    """Queries for ``plan`` on a ``dim``-long collection as a C-contiguous float32 (n, d) array (one 1-d query
    is n = 1); finite, and the coordinates stage one reads not all zero."""
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None, :]
    if queries.ndim != 2 or not plan.max_dim <= queries.shape[1] <= dim:
        raise ValueError(
            f"queries: expected shape (n, d) with {plan.max_dim} <= d <= {dim}, got {tuple(queries.shape)}"
        )
    if len(queries) == 0:
        raise ValueError("queries: expected at least one query, got none")
    check_finite_nonzero(queries[:, : plan.stages[0].dim], "queries")
    check_finite_nonzero(queries, "queries")  # the later stages read the coordinates past stage one's
    return np.ascontiguousarray(queries)


def check_ids(ids: Sequence[str], allow_duplicates: bool = False) -> list[str]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise TypeError(f"ids: expected a list of strings, got {type(ids).__name__}")
    out = []
    for i, point_id in enumerate(ids):
        if not isinstance(point_id, str) or not point_id:
            raise ValueError(f"ids[{i}]: expected a non-empty string, got {point_id!r}")
        out.append(point_id)
    if not allow_duplicates and len(set(out)) != len(out):
        first: dict[str, int] = {}
        for i, point_id in enumerate(out):
            if point_id in first:
                raise ValueError(
                    f"ids: expected unique ids in one batch, got {point_id!r} at positions {first[point_id]} and {i}"
                )
            first[point_id] = i
    return out


def check_payloads(payloads: Sequence[dict] | None, n: int) -> list[str]:
    if payloads is None:
        return ["{}"] * n
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


def check_where(where: dict) -> dict:
    if not isinstance(where, dict):
        raise ValueError(f"where: expected a dict of payload field -> value, got {type(where).__name__}")
    for key, value in where.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"where: expected non-empty field names, got {key!r}")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"where[{key!r}]: expected a string, number, boolean or null, got {value!r}")
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
