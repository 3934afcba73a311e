"""The metric wrappers against figures worked out by hand (graded nDCG, MRR cut at 10, unretrieved queries)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from telescope.eval.metrics import ir_metrics, run_from_rows, spearman_x100


def test_ir_metrics_by_hand():
    qrels = {"q1": {"d0": 2, "d1": 1}, "q2": {"d3": 1}, "q3": {"d2": 1}}
    run = {
        "q1": {"d1": 0.9, "d0": 0.8, "d2": 0.7},
        # d3 ranked 12th: counts for Recall@100, not for MRR@10 (trec_eval's recip_rank alone would give 1/12)
        "q2": {**{f"x{i}": 1.0 - i / 100 for i in range(11)}, "d3": 0.5},
        # q3 retrieved nothing: counts as 0
    }
    dcg = 1 / math.log2(2) + 2 / math.log2(3)  # graded gains at ranks 1 and 2
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    got = ir_metrics(qrels, run)
    assert got["ndcg@10"] == pytest.approx(100 * (dcg / idcg) / 3, abs=1e-3)
    assert got["mrr@10"] == pytest.approx(100 / 3, abs=1e-3)
    assert got["recall@100"] == pytest.approx(200 / 3, abs=1e-3)


def test_run_from_rows_skips_padding():
    run = run_from_rows(["q"], ["a", "b", "c"], np.array([[0.9, 0.5, -1.0]]), np.array([[2, 0, -1]]))
    assert run == {"q": {"c": pytest.approx(0.9), "a": pytest.approx(0.5)}}


def test_spearman_x100():
    assert spearman_x100([0.1, 0.2, 0.3], [1, 2, 3]) == pytest.approx(100)
    assert spearman_x100([0.3, 0.2, 0.1], [1, 2, 3]) == pytest.approx(-100)
    with pytest.raises(ValueError, match="predicted: expected the shape"):
        spearman_x100([0.1, 0.2], [1, 2, 3])
