"""Grid specs (pairs, full, listed points) and the shared-prefix rule of cross-model comparison."""

from __future__ import annotations

import pytest

from telescope.eval.grid import parse_grid, shared_prefix
from test_eval_helpers import build_compatible_model


@pytest.fixture(scope="module")
def new_model(tmp_path_factory):
    from telescope.embedder import load_embedder

    return load_embedder(build_compatible_model(tmp_path_factory.mktemp("new")))


@pytest.fixture(scope="module")
def undeclared_model(tmp_path_factory):
    from telescope.embedder import load_embedder

    return load_embedder(build_compatible_model(tmp_path_factory.mktemp("undeclared"), prefix=None))


def test_default_grid_is_the_trained_pairs(tiny_embedder):
    assert parse_grid(None, tiny_embedder) == tiny_embedder.manifest.pairs == [(1, 8), (2, 16), (3, 32), (4, 64)]
    assert parse_grid("pairs", tiny_embedder) == tiny_embedder.manifest.pairs


def test_full_grid_is_every_layer_times_every_nested_dim(tiny_embedder):
    assert parse_grid("full", tiny_embedder) == [(layer, dim) for layer in range(1, 5) for dim in (16, 32, 64)]


def test_listed_points(tiny_embedder):
    assert parse_grid("3:64, 1:16,1:16", tiny_embedder) == [(1, 16), (3, 64)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("5:16", r"grid: point 5:16 is outside the model \(tiny-bert:1\): expected 1 <= layer <= 4 and 1 <= dim <= 64"),
        ("1:65", "point 1:65 is outside the model"),
        ("0:16", "point 0:16 is outside the model"),
        ("1-16", "grid: expected 'pairs', 'full' or points 'layer:dim'"),
    ],
)
def test_bad_grid_names_the_point(tiny_embedder, spec, message):
    with pytest.raises(ValueError, match=message):
        parse_grid(spec, tiny_embedder)


def test_shared_prefix_rules(tiny_embedder, new_model, undeclared_model):
    assert shared_prefix(tiny_embedder, tiny_embedder).dim == 64
    declared = shared_prefix(new_model, tiny_embedder)
    assert (declared.dim, declared.rule) == (16, "declared by tiny-new:1")
    assert shared_prefix(tiny_embedder, new_model) == declared  # either side may declare it
    undeclared = shared_prefix(undeclared_model, tiny_embedder)
    assert (undeclared.dim, undeclared.rule) == (32, "not declared: min full dim")


def test_cross_model_grid_is_cut_to_the_shared_prefix(tiny_embedder, new_model):
    # tiny-new's pairs (1,4) (2,8) (3,16) (4,32), dims cut to the declared prefix 16
    assert parse_grid(None, new_model, tiny_embedder) == [(1, 4), (2, 8), (3, 16), (4, 16)]
    assert parse_grid("full", new_model, tiny_embedder) == [(layer, 16) for layer in range(1, 5)]
    with pytest.raises(ValueError, match=r"point 4:32 is outside the model \(tiny-new:1 and tiny-bert:1\)"):
        parse_grid("4:32", new_model, tiny_embedder)
