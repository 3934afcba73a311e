"""BEIR-style retrieval evaluation: per (layer, dim) grid point, and per search plan through the real index.

Grid: queries and documents embedded at ``e(l, d)`` (documents cached on disk, ``EmbeddingCache``), the top 100
documents of each query by exact inner product on the re-normalised prefix (``telescope.index.exact_search``, the
index's own reference ranking), then nDCG@10 (graded), Recall@100 and MRR@10 by pytrec_eval
(``telescope.eval.metrics``) — the protocol of BEIR (Thakur et al., 2021) and MTEB retrieval.

Plans: the documents' vectors at each model's last layer, on the shared prefix ``P``, are upserted into a real
``Collection`` (in a temporary directory, with the stage-one index asked for); each plan is run through
``Collection.search_rows``: the same three metrics from its results, plus recall@10 against exact search on the
full ``P`` dims (a Flat collection of the same vectors, exact even when the stage one asked for is approximate
at ``P``) and the latency of the batch (``telescope.eval.plans.measure_plans``).
The default plans are Matryoshka adaptive retrieval (Kusupati et al., 2022): a shortlist of 200 on each shorter
nested dim re-ranked at ``P``, and the paper's funnel.

Cross-model (rollout): queries by the query model, documents by the document model, compared on their shared
prefix (``telescope.eval.grid``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from telescope.embedder import Embedder
from telescope.eval.cache import EmbeddingCache
from telescope.eval.datasets import BeirData
from telescope.eval.grid import FULL_GRID_DIMS
from telescope.eval.metrics import ir_metrics, run_from_rows
from telescope.eval.plans import measure_plans
from telescope.index import Collection, Plan, exact_search
from telescope.index.stage_one import StageOne

RUN_DEPTH = 100  # documents ranked per query: enough for Recall@100


@dataclass
class BeirResult:
    grid: dict[tuple[int, int], dict[str, float]]  # (layer, dim) -> metrics x100
    plans: list[dict] = field(default_factory=list)  # one row per plan (the exact baseline first)
    timings: dict[str, float] = field(default_factory=dict)
    queries: int = 0
    documents: int = 0

    def rows(self) -> list[dict]:
        return [{"layer": l, "dim": d, **{k: round(v, 4) for k, v in m.items()}} for (l, d), m in sorted(self.grid.items())]


def default_plans(prefix: int) -> list[Plan]:
    """A shortlist of 200 on each nested dim below ``prefix`` re-ranked at ``prefix``, and the MRL funnel."""
    dims = [d for d in FULL_GRID_DIMS if d < prefix]
    plans = [Plan.of([(d, 200), (prefix, 10)]) for d in dims]
    funnel = [(d, keep) for d, keep in zip(dims, (200, 100, 50, 25))]
    if len(funnel) > 1:
        plans.append(Plan.of(funnel + [(prefix, 10)]))
    return plans


def evaluate_beir(
    query_model: Embedder,
    data: BeirData,
    points: Sequence[tuple[int, int]],
    doc_model: Embedder | None = None,
    prefix: int | None = None,
    plans: Sequence[Plan | str] | None = None,
    cache: EmbeddingCache | None = None,
    stage_one: str = "Flat",
    repeats: int = 3,
    batch_size: int = 64,
    show_progress: bool = False,
) -> BeirResult:
    """Metrics per grid point and per plan (``plans=[]`` skips the index; ``None`` runs ``default_plans``)."""
    doc_model = doc_model or query_model
    cache = cache or EmbeddingCache(None)
    prefix = prefix or min(query_model.full_dim, doc_model.full_dim)
    plans = default_plans(prefix) if plans is None else [Plan.of(p) for p in plans]
    for plan in plans:
        if plan.max_dim > prefix:
            raise ValueError(f"plan {plan}: expected stage dims at most the shared prefix {prefix}, got {plan.max_dim}")
    for first_dim in sorted({plan.stages[0].dim for plan in plans}):
        StageOne(first_dim, stage_one)  # a bad factory fails here, not after minutes of encoding
    timings: dict[str, float] = {}
    plan_point_q, plan_point_d = (query_model.num_layers, prefix), (doc_model.num_layers, prefix)
    doc_points = sorted(set(points) | ({plan_point_d} if plans else set()))
    query_points = sorted(set(points) | ({plan_point_q} if plans else set()))

    start = time.perf_counter()
    docs = cache.grid(doc_model, data.doc_texts, doc_points, batch_size, show_progress)
    timings["encode_documents_s"] = time.perf_counter() - start
    start = time.perf_counter()
    queries = cache.grid(query_model, data.query_texts, query_points, batch_size, show_progress)
    timings["encode_queries_s"] = time.perf_counter() - start

    start = time.perf_counter()
    grid = {}
    depth = min(RUN_DEPTH, len(data.doc_ids))
    for point in points:
        q, d = queries[point], docs[point]
        rows = exact_search(d, q, depth)
        scores = np.take_along_axis(q @ d.T, rows, axis=1)
        grid[tuple(point)] = ir_metrics(data.qrels, run_from_rows(data.query_ids, data.doc_ids, scores, rows))
    timings["grid_metrics_s"] = time.perf_counter() - start

    plan_rows: list[dict] = []
    if plans:
        start = time.perf_counter()
        plan_rows = _evaluate_plans(
            data, docs[plan_point_d], queries[plan_point_q], plans, stage_one, repeats, doc_model.manifest.tag
        )
        timings["plans_s"] = time.perf_counter() - start
    return BeirResult(grid, plan_rows, timings, len(data.query_ids), len(data.doc_ids))


def _evaluate_plans(
    data: BeirData,
    doc_vectors: np.ndarray,
    query_vectors: np.ndarray,
    plans: list[Plan],
    stage_one: str,
    repeats: int,
    model_version: str,
) -> list[dict]:
    """The exact baseline (a Flat collection: exact search) and every plan, each through a collection whose stage one
    is built on its first dim; each plan's recall@10 is against the baseline's results."""
    dim, k = doc_vectors.shape[1], 10
    exact = Plan.exact(dim, k)
    by_first_dim: dict[int, list[int]] = {}
    for i, plan in enumerate(plans):
        by_first_dim.setdefault(plan.stages[0].dim, []).append(i)
    rows: list[dict | None] = [None] * (len(plans) + 1)  # the exact baseline, then the plans in the order given
    with tempfile.TemporaryDirectory(prefix="telescope-eval-") as tmp:

        def collection(name: str, factory: str, first_dim: int) -> Collection:
            c = Collection.create(f"{tmp}/{name}", dim, stage_one=factory, stage_one_dim=first_dim)
            c.upsert(data.doc_ids, doc_vectors, model_version=model_version)
            c.commit()
            return c

        with collection("exact", "Flat", dim) as reference:
            for first_dim, indices in sorted(by_first_dim.items()):
                with collection(f"c{first_dim}", stage_one, first_dim) as c:
                    baseline, measured = measure_plans(
                        c, query_vectors, [plans[i] for i in indices], k=k, repeats=repeats, reference=reference
                    )
                    if rows[0] is None:
                        rows[0] = {"exact": True, **_plan_quality(reference, data, query_vectors, exact), **baseline.to_dict()}
                    for i, m in zip(indices, measured):
                        rows[i + 1] = {"exact": False, **_plan_quality(c, data, query_vectors, plans[i]), **m.to_dict()}
    return [row for row in rows if row is not None]


def _plan_quality(collection: Collection, data: BeirData, queries: np.ndarray, plan: Plan) -> dict[str, float]:
    """nDCG@10 and MRR@10 of the plan's own 10 results; Recall@100 of the plan asked for 100 results."""

    def run(k: int) -> dict[str, dict[str, float]]:
        hits = collection.search(queries, k, plan)
        return {qid: {h.id: h.score for h in found} for qid, found in zip(data.query_ids, hits)}

    top10 = ir_metrics(data.qrels, run(10))
    top100 = ir_metrics(data.qrels, run(min(RUN_DEPTH, len(collection))))
    return {"ndcg@10": top10["ndcg@10"], "mrr@10": top10["mrr@10"], "recall@100": top100["recall@100"]}
