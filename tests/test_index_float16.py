"""Collections holding float16 vectors: half the bytes, the same hits as float32 up to near-ties, durable."""

from __future__ import annotations

import numpy as np
import pytest

from index_helpers import nested_vectors
from telescope.index import Collection, exact_search

D = 64


@pytest.fixture(scope="module")
def data():
    return nested_vectors(3000, D, seed=11), nested_vectors(50, D, seed=12)


def _filled(path, vectors, **kwargs) -> Collection:
    c = Collection.create(path, D, default_plan="16:200,64:10", **kwargs)
    c.upsert([f"p{i}" for i in range(len(vectors))], vectors, model_version="test:1")
    return c


def _recall(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(rows, truth)]))


@pytest.mark.parametrize("plan", ["64:10", "16:200,64:10", "8:400,32:100,64:10", "HNSW"])
def test_float16_hits_match_float32_exact_search(tmp_path, data, plan):
    vectors, queries = data
    kwargs = {"stage_one": "HNSW16,SQ8", "stage_one_params": "efSearch=64", "stage_one_dim": 16} if plan == "HNSW" else {}
    c = _filled(tmp_path / "c", vectors, vector_dtype="float16", **kwargs)
    scores, rows = c.search_rows(queries, 10, None if plan == "HNSW" else plan)
    assert _recall(rows, exact_search(vectors, queries, 10)) >= (0.95 if plan == "HNSW" else 0.99)
    assert scores.dtype == np.float32 and np.all(np.diff(scores, axis=1) <= 1e-6)


def test_float16_holds_half_the_bytes_and_survives_reopen_and_compaction(tmp_path, data):
    vectors, queries = data
    full = _filled(tmp_path / "f32", vectors)
    half = _filled(tmp_path / "f16", vectors, vector_dtype="float16")
    assert half.memory_bytes()["vectors"] * 2 == full.memory_bytes()["vectors"] == 3000 * D * 4
    half.delete([f"p{i}" for i in range(0, 3000, 2)])
    half.commit(compact=True)
    assert np.load(next((tmp_path / "f16").glob("seg-*.vec.npy"))).dtype == np.float16
    _, before = half.search_rows(queries, 10)
    half.upsert(["late"], vectors[:1])  # acknowledged in the WAL only, replayed on open
    half.close()
    reopened = Collection.open(tmp_path / "f16")
    assert reopened.info()["vector_dtype"] == "float16" and len(reopened) == 1501
    point = reopened.get(["p1"])[0]
    assert point.vector.dtype == np.float32
    np.testing.assert_allclose(point.vector, vectors[1] / np.linalg.norm(vectors[1]), atol=1e-3)  # stored unit length
    _, after = reopened.search_rows(queries, 10)
    assert (after == before).mean() > 0.95  # the late point may enter a few top-10s
    reopened.close()


def test_float16_autoplan_and_reconfigure_keep_the_dtype(tmp_path, data):
    vectors, _ = data
    c = _filled(tmp_path / "c", vectors, vector_dtype="float16")
    assert c.choose_plan(0.95).recall >= 0.95
    c.reconfigure(dim=D + 16)
    assert c.info()["vector_dtype"] == "float16" and c.memory_bytes()["vectors"] == 3000 * (D + 16) * 2
    c.close()


def test_unknown_vector_dtype_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"vector_dtype: expected one of float32, float16, got 'int8'"):
        Collection.create(tmp_path / "c", D, vector_dtype="int8")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_prefix_rerank_in_chunks_matches_a_per_query_reference(monkeypatch, dtype):
    """The batched re-rank (gather, upcast, one product) scores as the plain per-query formula, across chunk
    boundaries and with -1 padding in the candidate lists."""
    from telescope.index import rerank as rr

    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((500, 48)).astype(dtype)
    queries = rng.standard_normal((7, 48)).astype(np.float32)
    rows = rng.integers(0, 500, (7, 30))
    rows[2, 20:] = -1
    rows[5, 3:] = -1
    monkeypatch.setattr(rr, "RERANK_CHUNK", 2 * 30 * 24)  # two queries per chunk
    scores, top = rr.rerank(queries, rows, vectors, 24, 5)
    for q, cand, s, t in zip(queries, rows, scores, top):
        cand = cand[cand >= 0]
        prefix = vectors[cand, :24].astype(np.float64)
        ref = prefix @ (q[:24] / np.linalg.norm(q[:24])) / np.linalg.norm(prefix, axis=1)
        order = np.argsort(-ref, kind="stable")[:5]
        np.testing.assert_array_equal(t[: len(order)], cand[order])
        np.testing.assert_allclose(s[: len(order)], ref[order], rtol=1e-5, atol=1e-6)
        assert (t[len(order):] == -1).all()
