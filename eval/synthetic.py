"""Synthetic vectors with a nested (Matryoshka) shape, for benchmarks that run without a model or data.

Coordinate ``j`` is scaled by ``1/sqrt(j+1)``, so the first coordinates carry most of each vector's norm and a
prefix ranks nearly as the whole vector does, as on embeddings trained with Matryoshka Representation Learning
(Kusupati et al., NeurIPS 2022); the points sit around ``clusters`` Gaussian centres, so a graph or a list index
has structure to find. ``telescope bench serve`` builds its collection from them, and ``telescope bench index
--synthetic`` (the GPU check) its corpus and queries.
"""

from __future__ import annotations

import numpy as np


def nested_vectors(n: int, dim: int, seed: int = 0, clusters: int = 1000) -> np.ndarray:
    """Unit vectors whose first coordinates carry most of the signal, in ``clusters`` clusters (float32)."""
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.sqrt(np.arange(1, dim + 1))).astype(np.float32)
    centers = rng.standard_normal((clusters, dim), dtype=np.float32) * scale
    v = centers[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim), dtype=np.float32) * scale
    return v / np.linalg.norm(v, axis=1, keepdims=True)
