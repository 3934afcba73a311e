"""STS evaluation over the (layer, dim) grid: Spearman x100 of cosine similarity against gold scores.

The protocol of SentEval / sentence-transformers' ``EmbeddingSimilarityEvaluator`` / MTEB STS (Cer et al.,
SemEval-2017 Task 1): embed both sentences of each pair, take the cosine similarity, and report Spearman's rho
x100 with the gold scores. Here at every grid point ``e(l, d)`` (prefix re-normalised), with one forward pass per
side for all the layers asked (``EmbeddingCache.grid`` -> ``Embedder.encode_grid``).

Cross-model (rollout): sentence1 is embedded by the query model and sentence2 by the document model, both at
the point (l, d) with d within their shared prefix (``telescope.eval.grid``).

Example::

    from telescope.embedder import load_embedder
    from telescope.eval.datasets import read_sts
    from telescope.eval.sts import evaluate_sts
    result = evaluate_sts(load_embedder("default"), read_sts("sts-test.csv"), [(6, 384)])
    result.scores[(6, 384)]   # 82.03
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from telescope.embedder import Embedder
from telescope.eval.cache import EmbeddingCache
from telescope.eval.datasets import StsData
from telescope.eval.metrics import spearman_x100


@dataclass
class StsResult:
    scores: dict[tuple[int, int], float]  # (layer, dim) -> Spearman x100
    pairs: int

    def rows(self) -> list[dict]:
        return [{"layer": l, "dim": d, "spearman": round(s, 4)} for (l, d), s in sorted(self.scores.items())]


def evaluate_sts(
    query_model: Embedder,
    data: StsData,
    points: Sequence[tuple[int, int]],
    doc_model: Embedder | None = None,
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
) -> StsResult:
    """Spearman x100 per point; sentence1 by ``query_model``, sentence2 by ``doc_model`` (default: the same)."""
    if len(set(data.scores)) < 2:
        raise ValueError(
            f"{data.path}: score: expected at least two different gold scores (Spearman's rho is undefined "
            f"otherwise), got {len(data)} pairs all scored {data.scores[0]:g}"
        )
    doc_model = doc_model or query_model
    cache = cache or EmbeddingCache(None)
    if doc_model is query_model:
        # one pass over both columns together
        both = cache.grid(query_model, data.sentences1 + data.sentences2, points, batch_size, show_progress)
        n = len(data)
        left = {p: v[:n] for p, v in both.items()}
        right = {p: v[n:] for p, v in both.items()}
    else:
        left = cache.grid(query_model, data.sentences1, points, batch_size, show_progress)
        right = cache.grid(doc_model, data.sentences2, points, batch_size, show_progress)
    scores = {}
    for point in points:
        cosine = np.einsum("ij,ij->i", left[point], right[point])
        scores[tuple(point)] = spearman_x100(cosine, data.scores)
    return StsResult(scores, len(data))
