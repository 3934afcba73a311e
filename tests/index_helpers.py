"""Vectors with Matryoshka structure for index tests: most of the signal sits in the first coordinates.

Plain Gaussian noise has no prefix structure (a 16-dim prefix says nothing about the full vector), so funnel
search on it is meaningless. Here coordinate j has scale 1/sqrt(j+1) and points come in clusters.
"""

from __future__ import annotations

import numpy as np


def nested_vectors(n: int, dim: int, seed: int = 0, clusters: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(np.arange(1, dim + 1))
    centers = rng.standard_normal((clusters, dim)) * scale
    v = centers[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim)) * scale
    return v.astype(np.float32)


def vector_for(point_id: int, dim: int) -> np.ndarray:
    """A deterministic unit vector per integer id (durability tests compare stored to expected)."""
    v = np.random.default_rng(point_id).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)
