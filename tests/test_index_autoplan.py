"""A collection picks the cheapest plan meeting a recall target; the plan holds on held-back queries."""

from __future__ import annotations

import numpy as np
import pytest

from index_helpers import nested_vectors
from telescope.index import Collection, Plan, exact_search
from telescope.index.autoplan import recall_at_k

D = 64


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    everything = nested_vectors(6400, D, seed=11)
    vectors, held_back = everything[:6000], everything[6000:]  # same distribution; the last 400 never stored
    c = Collection.create(tmp_path_factory.mktemp("auto") / "c", D)
    c.upsert([f"p{i}" for i in range(len(vectors))], vectors)
    return c, vectors, held_back


@pytest.mark.parametrize("target", [0.9, 0.98])
def test_chosen_plan_meets_the_target_on_held_back_queries(collection, target):
    c, vectors, held_back = collection
    choice = c.choose_plan(target, k=10, sample=400)
    assert choice.recall >= target
    assert len(choice.plan.stages) == 2 and choice.plan.stages[0].dim < D  # cheaper than exact
    _, rows = c.search_rows(held_back, 10, choice.plan)
    assert recall_at_k(rows, exact_search(vectors, held_back, 10)) >= target


def test_a_graph_stage_one_at_the_full_dim_is_measured_against_exact_search(tmp_path):
    """There the exact plan is the graph itself (no plan widens its beam): the truth comes from an exact scan, and
    the choice, the exact plan, reports the recall the graph gives, not 1."""
    everything = nested_vectors(3400, D, seed=5)
    vectors, held_back = everything[:3000], everything[3000:]
    c = Collection.create(tmp_path / "c", D, stage_one="HNSW4", stage_one_params="efSearch=4")
    c.upsert([f"p{i}" for i in range(len(vectors))], vectors)
    choice = c.choose_plan(0.95, k=10, sample=300)
    _, rows = c.search_rows(held_back, 10, choice.plan)
    held = recall_at_k(rows, exact_search(vectors, held_back, 10))
    assert choice.plan == Plan.exact(D, 10) and held < 0.95 and abs(choice.recall - held) < 0.05
    assert c._stage_one(D).factory == "HNSW4"  # the graph is back after the exact scan


def test_higher_targets_never_get_cheaper_plans(collection):
    c = collection[0]
    costs = [c.choose_plan(t, sample=300).plan.flops(len(c)) for t in (0.8, 0.9, 0.99)]
    assert costs == sorted(costs)


def test_default_plan_can_be_set_and_persists(tmp_path):
    c = Collection.create(tmp_path / "c", D)
    c.upsert([f"p{i}" for i in range(50)], nested_vectors(50, D))
    c.set_default_plan("16:20,64:5")
    c.close()
    assert str(Collection.open(tmp_path / "c", read_only=True).default_plan) == "16:20,64:5"


def test_bad_targets_are_refused(collection):
    c = collection[0]
    for bad in (0, 1.5, "high"):
        with pytest.raises(ValueError, match="recall_target: expected a number in"):
            c.choose_plan(bad)


def test_tiny_collection_gets_exact_search(tmp_path):
    c = Collection.create(tmp_path / "c", D)
    c.upsert(["a", "b"], nested_vectors(2, D))
    assert c.choose_plan(0.99).plan == Plan.exact(D, 10)


def test_recall_counts_the_true_neighbours_a_small_collection_has():
    truth = np.array([[3, 1, -1, -1], [2, -1, -1, -1]])  # two points, k = 4
    assert recall_at_k(truth, truth) == 1.0
    assert recall_at_k(np.array([[3, 7, -1, -1], [5, -1, -1, -1]]), truth) == 0.25
