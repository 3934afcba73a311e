"""Choosing a collection's plan: the cheapest coarse-to-fine plan that meets a recall target on its own vectors.

Queries are a sample of stored vectors; the truth is exact search at full dim with the query's own row left out;
recall@k = |plan_k ∩ exact_k| / k averaged over the sample. Candidates are two-stage funnels
``(d1, s) -> (D, k)`` (Kusupati et al., 2022, adaptive retrieval) with d1 a power of two below D and shortlist
s a multiple of k; the cost of a plan is its multiply-adds per query (``Plan.flops``), a machine-independent
measure, so the choice does not move with the load on the machine. For one d1, recall only grows with s
(a longer exact shortlist contains the shorter one), so each d1 stops at its first s that meets the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from telescope.index.plan import Plan

SHORTLIST_FACTORS = (2, 5, 10, 20, 40, 80, 160)


@dataclass(frozen=True)
class PlanChoice:
    plan: Plan
    recall: float
    target: float
    k: int
    sample: int
    points: int

    def to_dict(self) -> dict:
        return {"plan": str(self.plan), "recall": self.recall, "target": self.target, "k": self.k,
                "sample": self.sample, "points": self.points}


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found_q ∩ truth_q| / |truth_q| (rows; -1 entries are no row: a collection of fewer
    than k points has fewer than k true neighbours, and exact search then scores 1)."""
    recalls = []
    for f, t in zip(found, truth):
        true = set(t[t >= 0].tolist())
        recalls.append(len(set(f[f >= 0].tolist()) & true) / len(true) if true else 1.0)
    return float(np.mean(recalls))


def candidate_plans(dim: int, k: int, points: int, first_dims: list[int] | None = None) -> dict[int, list[Plan]]:
    """For each first-stage dim, its plans in order of growing shortlist."""
    dims = first_dims or [d for d in (8, 16, 32, 64, 128, 256, 512, 1024) if d < dim]
    out: dict[int, list[Plan]] = {}
    for d1 in dims:
        shortlists = sorted({min(points, k * f) for f in SHORTLIST_FACTORS if k * f <= max(points, k)})
        out[d1] = [Plan.of([(d1, s), (dim, k)]) if d1 < dim else Plan.exact(dim, k) for s in shortlists]
    return out


def without_self(rows: np.ndarray, self_rows: np.ndarray, k: int) -> np.ndarray:
    """Each query's rows with its own row removed, cut to k."""
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for i, (r, own) in enumerate(zip(rows, self_rows)):
        kept = r[r != own][:k]
        out[i, : len(kept)] = kept
    return out
