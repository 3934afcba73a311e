"""The brute-force reference search every plan is measured against: exact inner products on a prefix (numpy)."""

from __future__ import annotations

import numpy as np

from telescope.index.stage_one import prefix_normalize


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, dim: int | None = None) -> np.ndarray:
    """Brute-force reference: rows of the top-``k`` inner products on the normalised ``dim``-prefix (numpy)."""
    dim = dim or vectors.shape[1]
    scores = prefix_normalize(queries, dim) @ prefix_normalize(vectors, dim).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return top


__all__ = ["exact_search"]
