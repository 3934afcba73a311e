"""Quality metrics, computed by kept libraries: pytrec_eval (trec_eval) for retrieval, scipy for STS.

- nDCG@10 with graded relevance: trec_eval ``ndcg_cut.10`` (Järvelin and Kekäläinen 2002; gain = the qrels grade,
  log2 discount), the measure BEIR and MTEB report.
- Recall@100: trec_eval ``recall.100``.
- MRR@10: trec_eval ``recip_rank`` over each query's 10 best documents (trec_eval has no cut-off for it; cutting
  the run first is how BEIR computes MRR@k).
- STS: Spearman rank correlation between cosine similarity and the gold score (``scipy.stats.spearmanr``), the
  STS-B figure of SentEval, sentence-transformers and MTEB.

All figures are x100 means over the evaluated queries (or pairs). Queries with judgements but no retrieved
documents count as 0, as in trec_eval with ``-c``.

Retrieval scores are rounded to ``SCORE_DECIMALS`` before ranking: float32 inner products of identical vectors differ
in their last bits between code paths (BLAS blocks, FAISS, batch sizes), and trec_eval would order such ties by that
noise; rounded, they go by its tie rule (document id descending) on every path, so the grid and the index agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytrec_eval
from scipy.stats import spearmanr

IR_METRICS = ("ndcg@10", "recall@100", "mrr@10")
SCORE_DECIMALS = 6  # about float32's resolution on a cosine


def spearman_x100(predicted: Sequence[float] | np.ndarray, gold: Sequence[float] | np.ndarray) -> float:
    """Spearman's rho x100 between predicted similarities and gold scores."""
    predicted, gold = np.asarray(predicted, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if predicted.shape != gold.shape or predicted.ndim != 1:
        raise ValueError(f"predicted: expected the shape of gold {gold.shape}, got {predicted.shape}")
    return float(100 * spearmanr(predicted, gold).statistic)


def run_from_rows(query_ids: Sequence[str], doc_ids: Sequence[str], scores: np.ndarray, rows: np.ndarray) -> dict:
    """A pytrec_eval run ``{query id: {doc id: score}}`` from ranked rows (``-1`` = no result)."""
    run: dict[str, dict[str, float]] = {}
    for qid, srow, rrow in zip(query_ids, scores, rows):
        run[qid] = {doc_ids[r]: float(s) for s, r in zip(srow, rrow) if r >= 0}
    return run


def ir_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10 x100, averaged over every query in ``qrels``."""
    qrels = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    full = {q: {d: round(s, SCORE_DECIMALS) for d, s in run.get(q, {}).items()} for q in qrels}
    top10 = {q: dict(_trec_order(docs)[:10]) for q, docs in full.items()}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(full)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    n = len(qrels)

    def mean(table: dict, measure: str) -> float:
        # pytrec_eval leaves out queries with no retrieved document: they count as 0
        return 100 * sum(table.get(q, {}).get(measure, 0.0) for q in qrels) / n

    return {
        "ndcg@10": mean(per_query, "ndcg_cut_10"),
        "recall@100": mean(per_query, "recall_100"),
        "mrr@10": mean(rr, "recip_rank"),
    }


def _trec_order(docs: dict[str, float]) -> list[tuple[str, float]]:
    """trec_eval's ranking: score descending, ties by document id descending."""
    by_id = sorted(docs.items(), key=lambda kv: kv[0], reverse=True)
    return sorted(by_id, key=lambda kv: -kv[1])
