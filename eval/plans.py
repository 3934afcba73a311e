"""How good and how fast a search plan is on a collection: recall@k against exact full-dim search, latency.

recall@k of a plan = |top_k(plan) ∩ top_k(exact at full dim)| / k, averaged over queries (the comparison of
Matryoshka adaptive retrieval, Kusupati et al. 2022, Table 4). Timings are medians of repeated runs of the
same batch on the same threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from telescope.index import Collection, Plan
from telescope.index.autoplan import recall_at_k


@dataclass
class PlanMeasure:
    plan: str
    k: int
    recall_at_k: float
    queries_per_s: float
    ms_per_batch: float
    batch: int
    flops_per_query: int

    def to_dict(self) -> dict:
        return asdict(self)


def time_batched(
    search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, batch: int, repeats: int = 3
) -> tuple[float, np.ndarray]:
    """Median seconds to answer all queries through ``search`` (query batch -> result rows), sent in batches of
    ``batch``, and the rows. One warm-up query first (lazy index builds, thread pools) outside the timing."""
    times, rows = [], None
    search(queries[:1])
    for _ in range(repeats):
        start = time.perf_counter()
        rows = np.concatenate([search(queries[i : i + batch]) for i in range(0, len(queries), batch)])
        times.append(time.perf_counter() - start)
    return float(np.median(times)), rows


def time_search(
    collection: Collection, queries: np.ndarray, k: int, plan: Plan, repeats: int = 3, batch: int | None = None
) -> tuple[float, np.ndarray]:
    """Median seconds to search all queries, sent in batches of ``batch`` (default: all at once), and the rows."""
    return time_batched(lambda q: collection.search_rows(q, k, plan)[1], queries, batch or len(queries), repeats)


def measure_plans(
    collection: Collection,
    queries: np.ndarray,
    plans: list[Plan | str],
    k: int = 10,
    repeats: int = 3,
    batch: int | None = None,
    reference: Collection | None = None,
) -> tuple[PlanMeasure, list[PlanMeasure]]:
    """The exact full-dim baseline and each plan, measured on the same queries in one run.

    ``reference``: where the baseline runs (default: ``collection``), a collection of the same vectors in the same
    order whose stage one is exact at the full dim; needed when ``collection``'s stage one is an approximate index
    (HNSW, PQ, IVF) at its full dim, since exact search through it is then that approximate index."""
    exact = Plan.exact(collection.dim, k)
    batch = batch or len(queries)
    exact_s, truth = time_search(reference or collection, queries, k, exact, repeats, batch)
    n = len(collection)

    def measure(plan: Plan, seconds: float, rows: np.ndarray) -> PlanMeasure:
        return PlanMeasure(
            plan=str(plan.for_k(k)),
            k=k,
            recall_at_k=recall_at_k(rows, truth),
            queries_per_s=len(queries) / seconds,
            ms_per_batch=seconds * 1000 * batch / len(queries),
            batch=batch,
            flops_per_query=plan.for_k(k).flops(n),
        )

    baseline = measure(exact, exact_s, truth)
    results = []
    for plan in plans:
        plan = Plan.of(plan)
        seconds, rows = time_search(collection, queries, k, plan, repeats, batch)
        results.append(measure(plan, seconds, rows))
    return baseline, results
