"""Collections holding two model versions of two lengths: widening, padded upserts, merged search, if_version."""

from __future__ import annotations

import os

import numpy as np
import pytest

from index_helpers import nested_vectors
from telescope.index import Collection, Plan
from telescope.index.stage_one import prefix_normalize

OLD, NEW = "old:1", "new:1"


def mixed(tmp_path, n_old: int = 60, n_new: int = 40, old_dim: int = 8, new_dim: int = 12):
    """A collection of ``n_old`` points at ``old_dim`` widened to ``new_dim``, then ``n_new`` points re-written new."""
    old = nested_vectors(n_old, old_dim, seed=1)
    c = Collection.create(tmp_path / "c", old_dim, properties={"model_version": OLD})
    c.upsert([f"p{i}" for i in range(n_old)], old, [{"i": i} for i in range(n_old)], model_version=OLD)
    c.commit()
    c.reconfigure(dim=new_dim, default_plan=Plan.exact(new_dim))
    new = nested_vectors(n_new, new_dim, seed=2)
    c.upsert([f"p{i}" for i in range(n_new)], new, [{"i": i} for i in range(n_new)], model_version=NEW)
    return c, old, new


def reference(c: Collection, old: np.ndarray, new: np.ndarray, q: np.ndarray, k: int, old_dim: int = 8) -> list[list[str]]:
    """numpy: new points scored at full dim, old points on the normalised old_dim prefix, merged."""
    n_new = len(new)
    scores = {}
    for i, v in enumerate(new):
        scores[f"p{i}"] = prefix_normalize(q, q.shape[1]) @ prefix_normalize(v, len(v))
    for i, v in enumerate(old[n_new:], start=n_new):
        scores[f"p{i}"] = prefix_normalize(q, old_dim) @ prefix_normalize(v, old_dim)
    ids = list(scores)
    matrix = np.stack([scores[i] for i in ids], axis=1)
    return [[ids[j] for j in np.argsort(-row, kind="stable")[:k]] for row in matrix]


def test_widening_keeps_old_vectors_at_their_length_and_records_it(tmp_path):
    c, old, _ = mixed(tmp_path)
    assert c.dim == 12 and c.version_dim(OLD) == 8 and c.version_dim(NEW) == 12
    info = c.info()
    assert info["version_dims"] == {OLD: 8} and info["model_versions"] == {OLD: 20, NEW: 40}
    point = c.get(["p50"])[0]
    assert point.model_version == OLD and point.vector.shape == (8,)
    np.testing.assert_allclose(point.vector, old[50] / np.linalg.norm(old[50]), atol=1e-6)
    assert c.get(["p3"])[0].vector.shape == (12,)
    c.close()
    reopened = Collection.open(tmp_path / "c", read_only=True)
    assert reopened.dim == 12 and reopened.version_dim(OLD) == 8 and len(reopened) == 60
    assert reopened.info()["model_versions"] == {OLD: 20, NEW: 40}


def test_mixed_search_scores_old_points_on_their_prefix_and_merges(tmp_path):
    c, old, new = mixed(tmp_path)
    q = nested_vectors(25, 12, seed=9)
    for plan in (Plan.exact(12), Plan.of([(4, 60), (12, 10)])):
        hits = c.search(q, k=10, plan=plan)
        for row in hits:
            ids = [h.id for h in row]
            assert len(ids) == len(set(ids)) == 10
            assert all(h.model_version == (NEW if int(h.id[1:]) < 40 else OLD) for h in row)
        if plan == Plan.exact(12):
            assert [[h.id for h in row] for row in hits] == reference(c, old, new, q, 10)
            # an old point's score is the cosine of the query's 8-dim prefix with its stored vector
            h = next(h for row in hits for h in row if h.model_version == OLD)
            qi = next(i for i, row in enumerate(hits) if h in row)
            expected = prefix_normalize(q[qi], 8) @ prefix_normalize(old[int(h.id[1:])], 8)
            assert h.score == pytest.approx(float(expected), abs=1e-5)
    only_old = c.search(q[:3], k=5, model_version=OLD)
    assert all(h.model_version == OLD for row in only_old for h in row) and all(len(r) == 5 for r in only_old)
    assert [len(r) for r in c.search(q[:2], k=5, where={"i": 55})] == [1, 1]


def test_a_search_of_the_old_version_takes_an_old_length_query_under_a_longer_plan(tmp_path):
    c, old, _ = mixed(tmp_path)  # default plan 12:10; the old model's queries are 8 long, as its vectors
    q = nested_vectors(3, 8, seed=9)
    hits = c.search(q, k=5, model_version=OLD)
    assert all(len(row) == 5 and {h.model_version for h in row} == {OLD} for row in hits)
    with pytest.raises(ValueError, match=r"queries: expected shape \(n, d\) with 12 <= d <= 12, got \(3, 8\)"):
        c.search(q, k=5)  # every version's vectors: the plan's length


def test_plan_within_a_shorter_length():
    plan = Plan.of([(4, 200), (8, 50), (12, 10)])
    assert str(plan.within(8)) == "4:200,8:10"
    assert str(plan.within(6)) == "4:200,6:10"
    assert plan.within(12) is plan and plan.within(20) is plan
    assert str(Plan.exact(12).within(8)) == "8:10"
    with pytest.raises(ValueError, match="dim: expected an integer >= 1, got 0"):
        plan.within(0)


def test_upserts_take_each_versions_own_length(tmp_path):
    c, old, _ = mixed(tmp_path)
    c.upsert(["x"], nested_vectors(1, 8, seed=5), model_version=OLD)  # an old-version write still fits
    assert c.get(["x"])[0].vector.shape == (8,)
    with pytest.raises(ValueError, match=r"vectors: expected shape \(1, 12\), got \(1, 8\)"):
        c.upsert(["y"], nested_vectors(1, 8, seed=5), model_version=NEW)
    with pytest.raises(ValueError, match=r"vectors: expected shape \(1, 8\), got \(1, 12\)"):
        c.upsert(["y"], nested_vectors(1, 12, seed=5), model_version=OLD)


def test_if_version_writes_only_points_still_of_that_version(tmp_path):
    c, _, _ = mixed(tmp_path)
    vectors = nested_vectors(3, 12, seed=7)
    # p1 is already NEW, p45 is OLD, "missing" does not exist: only p45 is written
    written = c.upsert(["p1", "p45", "missing"], vectors, model_version=NEW, if_version=OLD)
    assert written == 1
    assert c.get(["p45"])[0].model_version == NEW and c.get(["missing"]) == [None]
    np.testing.assert_allclose(c.get(["p45"])[0].vector, vectors[1] / np.linalg.norm(vectors[1]), atol=1e-6)
    assert c.upsert(["p1"], vectors[:1], model_version=NEW, if_version=OLD) == 0


def test_if_same_payload_writes_only_points_still_holding_it(tmp_path):
    c, _, _ = mixed(tmp_path)
    vectors = nested_vectors(2, 12, seed=8)
    read = c.get(["p44", "p45"])
    c.upsert(["p44"], vectors[:1, :8], [{"text": "rewritten"}], model_version=OLD)  # meanwhile, by the old model
    payloads = [p.payload for p in read]
    assert c.upsert(["p44", "p45"], vectors, payloads, model_version=NEW, if_version=OLD, if_same_payload=True) == 1
    assert [p.model_version for p in c.get(["p44", "p45"])] == [OLD, NEW]
    assert c.get(["p44"])[0].payload == {"text": "rewritten"}


def test_ids_by_version(tmp_path):
    c, _, _ = mixed(tmp_path, n_old=10, n_new=4)
    assert c.ids(model_version=NEW) == ["p0", "p1", "p2", "p3"]
    assert c.ids(other_than=NEW) == [f"p{i}" for i in range(4, 10)]
    assert c.ids(other_than=NEW, limit=2) == ["p4", "p5"]
    assert c.ids(model_version="never") == [] and len(c.ids()) == 10


def test_narrowing_is_refused_while_longer_vectors_live(tmp_path):
    c, old, _ = mixed(tmp_path, n_old=10, n_new=4)
    with pytest.raises(ValueError, match=r"dim: expected at least the stored vectors' length 12 \(model versions \['new:1'\]\), got 8"):
        c.reconfigure(dim=8, default_plan=Plan.exact(8))
    c.upsert([f"p{i}" for i in range(4)], old[:4], model_version=OLD)
    c.reconfigure(dim=8, default_plan=Plan.exact(8))
    assert c.dim == 8 and c.info()["version_dims"] == {} and len(c) == 10
    np.testing.assert_allclose(c.get(["p2"])[0].vector, old[2] / np.linalg.norm(old[2]), atol=1e-6)
    hits = c.search(prefix_normalize(old[:3], 8), k=1)
    assert [row[0].id for row in hits] == ["p0", "p1", "p2"]


def test_writes_after_widening_replay_from_the_wal(tmp_path):
    c, _, _ = mixed(tmp_path, n_old=10, n_new=4)
    c.upsert(["late"], nested_vectors(1, 8, seed=3), model_version=OLD)
    c.upsert(["p6"], nested_vectors(1, 12, seed=4), model_version=NEW)
    c._wal.close()  # the process "dies": no commit
    os.close(c._lock_fd)
    reopened = Collection.open(tmp_path / "c")
    assert reopened.info()["model_versions"] == {OLD: 6, NEW: 5}
    assert reopened.get(["late"])[0].vector.shape == (8,) and reopened.get(["p6"])[0].model_version == NEW
    reopened.close()


def test_reconfigure_properties_and_plan_without_a_dim_change(tmp_path):
    c = Collection.create(tmp_path / "c", 8)
    c.reconfigure(default_plan="4:20,8:5", properties={"a": 1})
    c.close()
    c = Collection.open(tmp_path / "c", read_only=True)
    assert str(c.default_plan) == "4:20,8:5" and c.properties == {"a": 1}
    with pytest.raises(RuntimeError, match="read-only"):
        c.reconfigure(properties={})
