"""The MovieLens two-tower protocol: the split, the features, the metrics through a Collection."""

from __future__ import annotations

import numpy as np
import pytest

from telescope.eval.movielens import MovieLens, feature_specs, field_values, load_movielens, retrieval_metrics

from conftest import shared_path


def synthetic() -> MovieLens:
    return MovieLens(
        movie_ids=[10, 11, 12, 13],
        titles=["a (1990)", "b", "c (2001)", "d (2002)"],
        genres=["Comedy", "Drama", "Comedy|Drama", "(no genres listed)"],
        years=[1990, None, 2001, 2002],
        train=np.asarray([[0, 0], [1, 1]]),
        test={0: {1}, 1: {2}},
        seen={0: {0}, 1: {1}},
        user_ids=[1, 2],
        user_genres=[["Comedy"], ["Drama"]],
        user_tags=[[], ["x"]],
    )


def test_metrics_remove_seen_movies_and_score_the_held_out_ones():
    data = synthetic()
    items = np.eye(4, dtype=np.float32)
    users = np.asarray([[1.0, 0.9, 0.0, 0.0], [0.0, 1.0, 0.1, 0.5]], dtype=np.float32)
    m = retrieval_metrics(data, users, items)
    # user 0: seen movie 0 is removed, so held-out movie 1 ranks first; user 1: seen 1 removed, 3 beats 2
    assert m["recall@10"] == 1.0 and m["recall@50"] == 1.0
    assert m["ndcg@10"] == pytest.approx((1.0 + 1 / np.log2(3)) / 2)


def test_features_of_a_synthetic_split_have_the_declared_shapes():
    from telescope.embedder.unified import UnifiedEmbedding

    values = field_values(synthetic())
    m = UnifiedEmbedding(feature_specs(), chunk_dim=2, rows=16)
    out = m({n: values[n] for n in ("item.id", "item.genres", "item.year")})
    assert out.shape == (4, 2 * (4 + 1 + 1))
    assert np.count_nonzero(out[1, -2:].detach().numpy()) == 0  # no year in the title: missing, zero


def test_split_of_the_real_data_holds_out_each_users_latest_ratings():
    data = load_movielens(shared_path("movielens_latest_small"))
    assert (len(data.user_ids), len(data.movie_ids)) == (610, 9742)
    assert sum(len(t) for t in data.test.values()) == 5 * 610
    assert len(data.train) + 5 * 610 == 100_836
    assert all(not (data.test[u] & data.seen[u]) for u in data.test)
    assert sum(y is None for y in data.years) > 0  # some titles carry no year: the missing path is exercised


def test_report_files_from_a_report(tmp_path):
    from telescope.eval.movielens import write_report

    def run(method, budget, nbytes, r10):
        return {"method": method, "budget_bytes": budget, "parameter_bytes": nbytes, "config": {"chunk_dim": 16},
                "recall@10": r10, "recall@50": 2 * r10, "ndcg@10": r10 / 2, "train_s": 1.0}

    report = {
        "command": "telescope bench unified", "versions": {}, "text_model": {"id": "m", "hash": "h"},
        "data": {"md5": {}, "users": 2, "movies": 4, "train_pairs": 2, "holdout_per_user": 1},
        "collision_free_bytes": 100, "popularity": {"recall@10": 0.1, "recall@50": 0.2, "ndcg@10": 0.05},
        "planned_runs": 4,
        "runs": [run("unified", 50, 48, 0.3), run("per_feature", 50, 50, 0.2), run("collision_free", None, 100, 0.4)],
    }
    paths = write_report(report, tmp_path)
    text = paths["md"].read_text()
    assert "Partial: 3 of 4" in text and "| 50 | prop. | +0.1000 |" in text
    assert paths["png"].stat().st_size > 0 and paths["json"].is_file()
