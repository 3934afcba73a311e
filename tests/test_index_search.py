"""Coarse-to-fine search against a brute-force numpy reference on prefix-structured vectors."""

from __future__ import annotations

import numpy as np
import pytest

from index_helpers import nested_vectors
from telescope.index import Collection, Plan, exact_search, prefix_normalize

D = 64


def reference_plan(vectors: np.ndarray, queries: np.ndarray, plan: Plan, k: int) -> np.ndarray:
    """The funnel in plain numpy: exact top-keep on each prefix, each stage over the last stage's survivors."""
    plan = plan.for_k(k)
    out = []
    for q in queries:
        candidates = np.arange(len(vectors))
        for stage in plan.stages:
            scores = prefix_normalize(vectors[candidates], stage.dim) @ prefix_normalize(q[None], stage.dim)[0]
            candidates = candidates[np.argsort(-scores, kind="stable")[: stage.keep]]
        out.append(candidates)
    return np.array(out)


@pytest.fixture(scope="module")
def data():
    vectors = nested_vectors(3000, D, seed=1)
    queries = nested_vectors(40, D, seed=2)
    return vectors, queries


@pytest.fixture(scope="module")
def collection(data, tmp_path_factory):
    vectors, _ = data
    c = Collection.create(tmp_path_factory.mktemp("c") / "c", D, default_plan="16:200,64:10")
    c.upsert([f"p{i}" for i in range(len(vectors))], vectors, model_version="test:1")
    return c


def test_full_dim_plan_equals_exact_search(collection, data):
    vectors, queries = data
    _, rows = collection.search_rows(queries, 10, Plan.exact(D))
    np.testing.assert_array_equal(rows, exact_search(vectors, queries, 10))


@pytest.mark.parametrize("plan", ["8:300,64:10", "16:200,64:10", "8:500,32:100,64:10", "32:50,48:20", "16:10"])
def test_every_plan_matches_the_numpy_funnel(collection, data, plan):
    vectors, queries = data
    scores, rows = collection.search_rows(queries, 10, plan)
    expected = reference_plan(vectors, queries, Plan.parse(plan), 10)
    # ties aside, the same rows in the same order
    assert (rows == expected).mean() > 0.99
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_funnel_recall_is_high_on_nested_vectors(collection, data):
    vectors, queries = data
    _, rows = collection.search_rows(queries, 10, "16:300,64:10")
    truth = exact_search(vectors, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth)])
    assert recall > 0.95


def test_k_overrides_the_last_stage_and_raises_shortlists(collection, data):
    _, queries = data
    scores, rows = collection.search_rows(queries[:3], 50, "16:20,64:10")
    assert rows.shape == (3, 50) and (rows >= 0).all()


def test_hits_carry_id_payload_and_version(tmp_path):
    v = nested_vectors(20, 8)
    c = Collection.create(tmp_path / "c", 8)
    c.upsert([f"d{i}" for i in range(20)], v, [{"n": i} for i in range(20)], model_version="m:2")
    hit = c.search(v[3], k=1)[0][0]
    assert (hit.id, hit.payload, hit.model_version) == ("d3", {"n": 3}, "m:2")
    assert hit.score == pytest.approx(1.0, abs=1e-5)


def test_fewer_points_than_k_pads_nothing(tmp_path):
    c = Collection.create(tmp_path / "c", 8)
    c.upsert(["a", "b"], nested_vectors(2, 8))
    assert len(c.search(nested_vectors(1, 8, seed=3), k=5)[0]) == 2


@pytest.mark.parametrize("factory, params", [("HNSW16", "efSearch=64"), ("IVF8,Flat", "nprobe=8")])
def test_other_stage_one_factories_with_deletes(tmp_path, factory, params):
    vectors = nested_vectors(2000, D, seed=4)
    c = Collection.create(tmp_path / "c", D, default_plan="16:100,64:10", stage_one=factory, stage_one_params=params)
    c.upsert([f"p{i}" for i in range(2000)], vectors)
    c.delete([f"p{i}" for i in range(0, 2000, 2)])
    _, rows = c.search_rows(vectors[:20], 10)
    assert (rows[rows >= 0] % 2 == 1).all()  # deleted rows never come back
    c.commit()
    c.close()
    reopened = Collection.open(tmp_path / "c")
    assert reopened.info()["stage_one"]["factory"] == factory
    _, rows2 = reopened.search_rows(vectors[:20], 10)
    np.testing.assert_array_equal(rows, rows2)


def test_deleted_and_replaced_points_are_not_returned(tmp_path):
    vectors = nested_vectors(100, 16)
    c = Collection.create(tmp_path / "c", 16)
    c.upsert([f"p{i}" for i in range(100)], vectors)
    c.delete(["p5"])
    c.upsert(["p6"], vectors[7:8])  # p6 now looks like p7
    ids = [h.id for h in c.search(vectors[5], k=100)[0]]
    assert "p5" not in ids and ids.count("p6") == 1 and len(ids) == 99
    assert c.get(["p6"])[0].vector == pytest.approx(vectors[7] / np.linalg.norm(vectors[7]), abs=1e-6)


def test_hnsw_stage_one_beam_is_at_least_the_shortlist(tmp_path):
    """FAISS HNSW searches with its efSearch whatever k is (padding with -1); stage one widens it to k."""
    from telescope.index.stage_one import StageOne

    vectors = np.random.default_rng(3).standard_normal((2000, 32)).astype(np.float32)
    s1 = StageOne(32, "HNSW16")  # FAISS's default efSearch 16
    s1.add(vectors)
    _, rows = s1.search(vectors[:20], 100, None)
    assert (rows >= 0).all() and s1.index.hnsw.efSearch == 16
    alive = np.ones(2000, dtype=bool)
    alive[::2] = False
    _, rows = s1.search(vectors[:20], 100, alive)
    assert (rows >= 0).all() and (rows % 2 == 1).all()


@pytest.mark.parametrize("factory, params", [("HNSW16", ""), ("IVF16,Flat", "nprobe=1")])
def test_mass_deletes_still_return_k_hits_from_graph_and_ivf_stage_ones(tmp_path, factory, params):
    """A graph or inverted lists searched with most rows deleted finds few live ones; stage one then scans the
    live rows exactly, so fewer than k hits come back only when fewer points live."""
    vectors = nested_vectors(3000, 32, seed=6)
    c = Collection.create(tmp_path / "c", 32, default_plan="32:10", stage_one=factory, stage_one_params=params)
    c.upsert([f"p{i}" for i in range(3000)], vectors)
    c.delete([f"p{i}" for i in range(3000) if i % 100])
    _, rows = c.search_rows(vectors[:20], 10)
    live = vectors[::100]
    np.testing.assert_array_equal(rows, exact_search(live, vectors[:20], 10) * 100)


def test_an_empty_ivf_collection_searches_to_no_hits(tmp_path):
    c = Collection.create(tmp_path / "c", 8, stage_one="IVF4,Flat")
    assert c.search(nested_vectors(2, 8), k=3) == [[], []]


def test_the_exact_module_exports_only_what_it_defines():
    namespace: dict = {}
    exec("from telescope.index.exact import *", namespace)
    assert "exact_search" in namespace


def test_stage_one_params_change_without_a_rebuild_and_persist(tmp_path):
    """nprobe is a search knob: raising it to every list makes an IVF stage one exact; it survives a reopen."""
    vectors = nested_vectors(2000, D, seed=7)
    queries = nested_vectors(30, D, seed=8)
    c = Collection.create(tmp_path / "c", D, default_plan="16:50,64:10", stage_one="IVF32,Flat", stage_one_params="nprobe=1")
    c.upsert([f"p{i}" for i in range(2000)], vectors)
    exact = reference_plan(vectors, queries, Plan.parse("16:50,64:10"), 10)
    _, one_list = c.search_rows(queries, 10)
    c.set_stage_one_params("nprobe=32")
    _, all_lists = c.search_rows(queries, 10)
    assert (one_list != exact).any()
    np.testing.assert_array_equal(all_lists, exact)
    c.commit()
    c.close()
    with Collection.open(tmp_path / "c") as reopened:
        assert reopened.info()["stage_one"]["params"] == "nprobe=32"
        np.testing.assert_array_equal(reopened.search_rows(queries, 10)[1], exact)


def test_hnsw_ef_search_change_takes_effect_on_the_next_search(tmp_path):
    from telescope.index.stage_one import StageOne

    vectors = np.random.default_rng(4).standard_normal((3000, 32)).astype(np.float32)
    s1 = StageOne(32, "HNSW8")
    s1.add(vectors)
    s1.search(vectors[:5], 10, None)  # caches the beam of width 16
    s1.set_params("efSearch=400")
    assert s1.index.hnsw.efSearch == 400 and s1._params(None, 10).efSearch == 400


def test_bad_stage_one_params_are_refused_and_change_nothing(tmp_path):
    c = Collection.create(tmp_path / "c", D, stage_one="IVF8,Flat", stage_one_params="nprobe=2")
    with pytest.raises(ValueError, match="stage_one.params: expected FAISS parameters.*'bogus=3'"):
        c.set_stage_one_params("bogus=3")
    assert c.info()["stage_one"]["params"] == "nprobe=2"
    c.close()
    ro = Collection.open(tmp_path / "c", read_only=True)
    with pytest.raises(Exception, match="read-only|read only"):
        ro.set_stage_one_params("nprobe=4")
