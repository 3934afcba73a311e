"""Payload filters (``where``) and model-version filters in Collection.search: exact match, with deletes."""

from __future__ import annotations

import numpy as np
import pytest

from index_helpers import nested_vectors
from telescope.index import Collection


@pytest.fixture
def collection(tmp_path):
    c = Collection.create(tmp_path / "c", 32, default_plan="8:40,32:5")
    v = nested_vectors(60, 32, seed=3)
    payloads = [{"group": i % 3, "flag": i % 2 == 0, "tag": "x" if i < 30 else "y"} for i in range(60)]
    c.upsert([f"p{i}" for i in range(30)], v[:30], payloads[:30], model_version="m:1")
    c.upsert([f"p{i}" for i in range(30, 60)], v[30:], payloads[30:], model_version="m:2")
    yield c, v
    c.close()


def test_where_keeps_only_matching_payloads(collection):
    c, v = collection
    hits = c.search(v[:4], k=10, where={"group": 1, "tag": "x"})
    for row in hits:
        assert row and all(h.payload["group"] == 1 and h.payload["tag"] == "x" for h in row)
    assert {h.id for h in c.search(v[:1], k=50, where={"group": 1.0, "tag": "x"})[0]} == {
        f"p{i}" for i in range(30) if i % 3 == 1
    }


def test_booleans_do_not_match_numbers_and_missing_fields_never_match(collection):
    c, v = collection
    assert all(h.payload["flag"] is True for h in c.search(v[:1], k=60, where={"flag": True})[0])
    assert c.search(v[:1], k=10, where={"flag": 1})[0] == []
    assert c.search(v[:1], k=10, where={"absent": None})[0] == []


def test_where_combines_with_deletes_and_model_versions(collection):
    c, v = collection
    c.delete(["p1", "p4"])
    ids = {h.id for h in c.search(v[:1], k=60, where={"group": 1}, model_version="m:1")[0]}
    assert ids == {f"p{i}" for i in range(30) if i % 3 == 1} - {"p1", "p4"}
    c.upsert(["p7"], v[7:8], [{"group": 2}], model_version="m:1")  # the replaced row no longer matches
    assert "p7" not in {h.id for h in c.search(v[7:8], k=60, where={"group": 1})[0]}


def test_bad_filters_are_clear_errors(collection):
    c, v = collection
    with pytest.raises(ValueError, match=r"where\['group'\]: expected a string, number, boolean or null, got \[1\]"):
        c.search(v[:1], where={"group": [1]})
    with pytest.raises(LookupError, match=r"model_version: expected one of the stored versions \['m:1', 'm:2'\], got 'm:3'"):
        c.search(v[:1], model_version="m:3")
    assert np.isfinite(c.search(v[:1], k=1)[0][0].score)


@pytest.mark.parametrize("factory, params", [("HNSW16", ""), ("IVF16,Flat", "nprobe=1")])
def test_selective_filters_fill_k_on_graph_and_ivf_stage_ones(tmp_path, factory, params):
    """HNSW and IVF searched under a filter that matches 10 of 3000 points miss most of them; every match
    comes back, best first (search's promise: fewer than k hits only when fewer points match)."""
    v = nested_vectors(3000, 32, seed=4)
    c = Collection.create(tmp_path / "c", 32, default_plan="32:10", stage_one=factory, stage_one_params=params)
    c.upsert([f"p{i}" for i in range(3000)], v, [{"g": i % 300} for i in range(3000)])
    for row in c.search(v[:20], k=10, where={"g": 7}):
        assert sorted(h.id for h in row) == sorted(f"p{i}" for i in range(7, 3000, 300))
        assert [h.score for h in row] == sorted((h.score for h in row), reverse=True)
