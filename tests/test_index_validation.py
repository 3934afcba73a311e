"""Bad input to a collection: a clear error naming the field, expected and received; nothing stored changes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from index_helpers import nested_vectors
from telescope.index import Collection, Plan

D = 8


@pytest.fixture
def c(tmp_path):
    c = Collection.create(tmp_path / "c", D, default_plan="4:20,8:5")
    c.upsert(["a", "b", "c"], nested_vectors(3, D), [{"n": 1}, {"n": 2}, {"n": 3}])
    return c


def _nan():
    v = nested_vectors(2, D)
    v[1, 3] = np.nan
    return v


def _nan_late():
    v = nested_vectors(1, D)
    v[0, 6] = np.nan  # past the first stage's 4 dims, read by the re-ranking at 8
    return v


def _inf():
    v = nested_vectors(1, D)
    v[0, 0] = np.inf
    return v


def _tiny_prefix():
    v = nested_vectors(1, D)
    v[0, :4] = 1e-30  # the first stage's 4 dims: their squares round to zero in float32
    return v


def _zero_prefix():
    v = nested_vectors(3, D)
    v[2, :4] = 0  # the stage-one prefix (the plan's first 4 dims): it can never be found there
    return v


def _payloads():
    yield {"n": 4}


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda c: c.upsert(["x"], nested_vectors(1, 4)), ValueError, r"vectors: expected shape \(1, 8\), got \(1, 4\)"),
        (lambda c: c.upsert(["x", "y"], nested_vectors(1, D)), ValueError, r"expected shape \(2, 8\), got \(1, 8\)"),
        (lambda c: c.upsert(["x", "y"], _nan()), ValueError, r"vectors\[1\]: expected finite values, got nan"),
        (lambda c: c.upsert(["x"], _inf()), ValueError, r"vectors\[0\]: expected finite values, got inf"),
        (lambda c: c.upsert(["x"], np.zeros((1, D))), ValueError, r"vectors\[0\]: expected a non-zero vector"),
        (lambda c: c.upsert(["x", "y", "z"], _zero_prefix()), ValueError, r"vectors\[2\]: expected a non-zero first 4 values \(stage one searches them\), got all zeros"),
        (lambda c: c.reconfigure(dim=2**31 - 1), ValueError, r"dim: expected an integer in 1\.\.65536, got 2147483647"),
        (lambda c: c.upsert(["x", "y", "x"], nested_vectors(3, D)), ValueError, r"ids: expected unique ids in one batch, got 'x' at positions 0 and 2"),
        (lambda c: c.upsert(["x", ""], nested_vectors(2, D)), ValueError, r"ids\[1\]: expected a non-empty string, got ''"),
        (lambda c: c.upsert(["x", 7], nested_vectors(2, D)), ValueError, r"ids\[1\]: expected a non-empty string, got 7"),
        (lambda c: c.upsert("x", nested_vectors(1, D)), TypeError, "ids: expected a list of strings, got str"),
        (lambda c: c.upsert(["x"], nested_vectors(1, D), [{}, {}]), ValueError, r"payloads: expected 1 payloads"),
        (lambda c: c.upsert(["x"], nested_vectors(1, D), [{"f": object()}]), ValueError, r"payloads\[0\]: expected JSON"),
        (lambda c: c.upsert(["x"], nested_vectors(1, D), ["text"]), ValueError, r"payloads\[0\]: expected a dict, got str"),
        (lambda c: c.upsert(["x"], nested_vectors(1, D), model_version=""), ValueError, "model_version: expected a non-empty string"),
        (lambda c: c.upsert(["x", "a\ud800"], nested_vectors(2, D)), ValueError, r"ids\[1\]: expected valid Unicode text, got 'a\\ud800' \(a lone surrogate at index 1\)"),
        (lambda c: c.upsert(["x"], nested_vectors(1, D), model_version="m\udfff"), ValueError, r"model_version: expected valid Unicode text, got 'm\\udfff'"),
        (lambda c: c.upsert(["a"], nested_vectors(1, D), if_version=1), ValueError, "if_version: expected a non-empty string, got 1"),
        (lambda c: c.upsert(["x"], nested_vectors(1, D), _payloads()), TypeError, "payloads: expected a list of dicts, got generator"),
        (lambda c: c.delete(["a", "b\ud800"]), ValueError, r"ids\[1\]: expected valid Unicode text"),
        (lambda c: c.reconfigure(properties={"f": object()}), ValueError, r"properties: expected JSON-serialisable values"),
        (lambda c: c.ids(limit=-1), ValueError, "limit: expected an integer >= 0 or None, got -1"),
        (lambda c: c.delete(["a", "zz"]), LookupError, r"1 unknown id\(s\), e\.g\. \['zz'\]; nothing was deleted"),
        (lambda c: c.delete(["a"], missing="maybe"), ValueError, "missing: expected 'error' or 'ignore', got 'maybe'"),
        (lambda c: c.search(nested_vectors(1, D), k=0), ValueError, "k: expected an integer >= 1, got 0"),
        (lambda c: c.search(nested_vectors(1, D), plan="4:20,16:5"), ValueError, "plan: expected stage dims at most the collection's 8, got 16"),
        (lambda c: c.search(nested_vectors(1, D), plan="8:20,4:5"), ValueError, r"plan\[1\]\.dim: expected more than the previous stage's 8, got 4"),
        (lambda c: c.search(nested_vectors(1, D), plan="4:5,8:20"), ValueError, r"plan\[1\]\.keep: expected at most the previous stage's 5, got 20"),
        (lambda c: c.search(nested_vectors(1, D), plan="four:5"), ValueError, "plan: expected stages 'dim:keep'"),
        (lambda c: c.search(nested_vectors(1, D), plan=""), ValueError, "plan: expected at least one"),
        (lambda c: c.search(nested_vectors(1, D), plan=8), ValueError, r"plan: expected a written plan like '32:400,128:10' or \(dim, keep\) pairs, got 8"),
        (lambda c: c.search(nested_vectors(1, D), plan=[(4.5, 20), (8, 5)]), ValueError, r"plan\[0\]: expected a \(dim, keep\) pair of integers, got \(4.5, 20\)"),
        (lambda c: c.search(nested_vectors(1, 3)), ValueError, r"queries: expected shape \(n, d\) with 8 <= d <= 8, got \(1, 3\)"),
        (lambda c: c.search(np.zeros((0, D))), ValueError, "queries: expected at least one query, got none"),
        (lambda c: c.search(_nan()), ValueError, r"queries\[1\]: expected finite values"),
        (lambda c: c.search(_nan_late()), ValueError, r"queries\[0\]: expected finite values, got nan"),
        (lambda c: c.search(nested_vectors(1, D) * 1e20), ValueError, r"queries\[0\]: expected a length \(L2 norm\) in \[1e-19, 1e\+19\] \(normalised in float32\), got \d\.\d+e\+20"),
        (lambda c: c.search(_tiny_prefix()), ValueError, r"queries\[0\]\[:4\]: expected a length \(L2 norm\) in \[1e-19, 1e\+19\] \(normalised in float32\), got 2e-30"),
        (lambda c: c.search(nested_vectors(1, D), where={"n": float("nan")}), ValueError, r"where\['n'\]: expected a finite number, got nan"),
        (lambda c: c.choose_plan(0.9, k=0), ValueError, "k: expected an integer >= 1, got 0"),
        (lambda c: c.choose_plan(0.9, sample=0), ValueError, "sample: expected an integer >= 1, got 0"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(c, call, error, message):
    before = (len(c), c.info()["rows"], c.info()["uncommitted_writes"])
    with pytest.raises(error, match=message):
        call(c)
    assert (len(c), c.info()["rows"], c.info()["uncommitted_writes"]) == before
    assert [p.payload["n"] for p in c.get(["a", "b", "c"])] == [1, 2, 3]


def test_delete_missing_ignore_deletes_the_known(c):
    assert c.delete(["a", "zz"], missing="ignore") == 1
    assert c.get(["a", "b"])[0] is None


def test_create_refuses_an_existing_collection_and_bad_config(tmp_path):
    Collection.create(tmp_path / "c", D).close()
    with pytest.raises(FileExistsError, match="already holds a collection"):
        Collection.create(tmp_path / "c", D)
    with pytest.raises(ValueError, match=r"dim: expected an integer in 1\.\.65536, got 0"):
        Collection.create(tmp_path / "d", 0)
    with pytest.raises(ValueError, match="stage_one.factory: expected a FAISS index-factory string, got 'Nope'"):
        Collection.create(tmp_path / "e", D, stage_one="Nope")
    with pytest.raises(LookupError, match="no collection at"):
        Collection.open(tmp_path / "missing")


def test_an_ivf_collection_searches_exactly_until_it_can_train_then_by_its_lists(tmp_path):
    """IVF4 trains on 156 rows: before that, a growing collection still answers (an exact scan of its rows)."""
    import faiss

    dim, plan = 32, "8:20,32:5"
    vectors = nested_vectors(400, dim, seed=3)
    c = Collection.create(tmp_path / "c", dim, stage_one="IVF4,Flat", stage_one_dim=8, stage_one_params="nprobe=1")
    c.upsert(["a"], vectors[:1])
    assert [h.id for h in c.search(vectors[:1], k=1)[0]] == ["a"]
    c.upsert([f"p{i}" for i in range(1, 100)], vectors[1:100])
    c.commit()  # below the training size: nothing to write, the rows are searched exactly after a reopen too
    c.close()
    c = Collection.open(tmp_path / "c")
    exact = Collection.create(tmp_path / "flat", dim, stage_one="Flat")
    exact.upsert(["a"] + [f"p{i}" for i in range(1, 100)], vectors[:100])
    queries = vectors[300:310]
    assert [[h.id for h in r] for r in c.search(queries, plan=plan)] == [[h.id for h in r] for r in exact.search(queries, plan=plan)]
    c.upsert([f"p{i}" for i in range(100, 300)], vectors[100:300])  # past 156: trained, searched by its lists
    assert len(c.search(queries, plan=plan)[0]) == 5
    assert c._stage_ones[8].trained and faiss.extract_index_ivf(c._stage_ones[8].index).nprobe == 1
    c.close()
    c = Collection.open(tmp_path / "c")  # the trained index is written by the close's commit and read back
    assert len(c.search(queries, plan=plan)[0]) == 5 and c._stage_ones[8].trained


def test_plan_written_form_round_trips():
    p = Plan.parse("32:400, 128:100,384:10")
    assert str(p) == "32:400,128:100,384:10" and Plan.of([(32, 400), (128, 100), (384, 10)]) == p
    assert p.flops(1000) == 1000 * 32 + 400 * 128 + 100 * 384
    assert p.flops(60) == 60 * 32 + 60 * 128 + 60 * 384  # shortlists cannot outgrow the collection
    assert str(p.for_k(50)) == "32:400,128:100,384:50"


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_tiny_and_huge_vectors_are_stored_unit_length(tmp_path, scale):
    """Finite, non-zero vectors whose squared norm under- or overflows float32 are still stored as unit vectors
    (not inf or zeros)."""
    c = Collection.create(tmp_path / "c", D)
    v = nested_vectors(1, D)
    c.upsert(["x"], (v / np.abs(v).max() * scale).astype(np.float32))
    np.testing.assert_allclose(c.get(["x"])[0].vector, v[0] / np.linalg.norm(v[0]), atol=1e-6)
    assert c.search(v, k=1)[0][0].score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("dim", [2**31 - 1, 65537, True, 8.0, "8"])
def test_create_refuses_an_absurd_dim(tmp_path, dim):
    with pytest.raises(ValueError, match=rf"dim: expected an integer in 1\.\.65536, got {re.escape(repr(dim))}"):
        Collection.create(tmp_path / "c", dim)
    assert not (tmp_path / "c").exists()


def test_vectors_with_a_tiny_stage_one_prefix_are_refused(tmp_path):
    """A prefix that float32 cannot normalise (its squares round to zero) is refused as a zero one is; the same
    bound as a query's stage-one prefix (``check_queries``), relative to the stored unit vector."""
    c = Collection.create(tmp_path / "c", D, stage_one_dim=4)
    v = nested_vectors(1, D)
    v[0, :4] = 1e-25
    with pytest.raises(ValueError, match=r"vectors\[0\]\[:4\]: expected a length \(L2 norm\) of at least 1e-19 of the vector's \(stage one normalises them in float32\), got \d\.\d+e-25"):
        c.upsert(["x"], v)
    v[0, :4] = 1e-6
    c.upsert(["x"], v)
    assert c.search(v, k=1)[0][0].id == "x"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"flush_rows": 0}, "flush_rows: expected an integer >= 1, got 0"),
        ({"flush_rows": "many"}, "flush_rows: expected an integer >= 1, got 'many'"),
        ({"stage_one_dim": 0}, r"stage_one_dim: expected 1..8, got 0"),
        ({"properties": {"f": object()}}, r"properties: expected JSON-serialisable values, got \{'f': <object"),
        ({"properties": {"f": float("nan")}}, r"properties: expected JSON-serialisable values"),
        ({"properties": ["model"]}, r"properties: expected a dict, got list"),
    ],
)
def test_create_refuses_bad_config_and_leaves_nothing(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Collection.create(tmp_path / "c", D, **kwargs)
    assert not (tmp_path / "c").exists()
