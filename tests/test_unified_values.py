"""Unified Embedding and its baselines: shapes, budgets, bad values, save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from telescope.embedder.unified import (
    CollisionFreeEmbedding,
    FeatureSpec,
    PerFeatureHashedEmbedding,
    UnifiedEmbedding,
    load_categorical,
)

SPECS = [FeatureSpec("id", chunks=2), FeatureSpec("genres", multi=True, sep="|"), FeatureSpec("year")]
VOCAB = {"id": [1, 2, 3, 4], "genres": ["Comedy", "Drama"], "year": [1995, 2001]}


def modules():
    return [
        UnifiedEmbedding(SPECS, chunk_dim=4, rows=50, num_tables=2),
        PerFeatureHashedEmbedding(SPECS, chunk_dim=4, rows={"id": 3, "genres": 2, "year": 2}),
        CollisionFreeEmbedding(SPECS, chunk_dim=4, vocab=VOCAB),
    ]


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.kind)
def test_shapes_and_dims_match_across_methods(module):
    out = module({"id": [1, 2], "genres": ["Comedy|Drama", ["Drama"]], "year": [1995, None]})
    assert out.shape == (2, 8 + 4 + 4)
    assert module.output_dim() == 16


def test_parameter_bytes_and_budgets():
    u = UnifiedEmbedding.for_budget(SPECS, chunk_dim=4, budget_bytes=10_000, num_tables=2)
    assert u.parameter_bytes == 2 * u.rows * 4 * 4 <= 10_000
    p = PerFeatureHashedEmbedding.for_budget(SPECS, chunk_dim=4, budget_bytes=10_000, vocab_sizes={"id": 1000, "genres": 20, "year": 100})
    assert p.parameter_bytes <= 10_000 and p.rows["id"] > p.rows["year"] > p.rows["genres"]
    e = PerFeatureHashedEmbedding.for_budget(SPECS, chunk_dim=4, budget_bytes=10_000, vocab_sizes={"id": 1000, "genres": 20, "year": 100}, allocation="uniform")
    assert e.parameter_bytes <= 10_000 and e.rows == {"id": 252, "genres": 20, "year": 100}  # small vocabularies whole
    with pytest.raises(ValueError, match="budget_bytes"):
        UnifiedEmbedding.for_budget(SPECS, chunk_dim=4, budget_bytes=8)
    with pytest.raises(ValueError, match="allocation"):
        PerFeatureHashedEmbedding.for_budget(SPECS, chunk_dim=4, budget_bytes=10_000, vocab_sizes={"id": 1, "genres": 1, "year": 1}, allocation="greedy")


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.kind)
@pytest.mark.parametrize("missing", [None, float("nan"), ""])
def test_missing_values_give_zero_vectors(module, missing):
    out = module({"id": [missing], "genres": [missing], "year": [missing]})
    assert torch.count_nonzero(out) == 0
    bag = module({"genres": [[missing, None]]})
    assert torch.count_nonzero(bag) == 0


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.kind)
def test_numbers_and_their_strings_are_the_same_value(module):
    a = module({"year": [1995], "id": ["1"]})
    b = module({"year": [1995.0], "id": [np.int64(1)]})
    c = module({"year": ["1995"], "id": [1]})
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.kind)
def test_bag_is_a_weighted_mean_order_free_and_skipping_missing(module):
    a = module({"genres": [["Comedy", "Drama", "Drama"]]})
    b = module({"genres": [["Drama", None, "Comedy", "Drama"]]})
    torch.testing.assert_close(a, b)
    comedy, drama = module({"genres": [["Comedy"]]}), module({"genres": [["Drama"]]})
    torch.testing.assert_close(a, (comedy + 2 * drama) / 3)


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.kind)
@pytest.mark.parametrize(
    ("feature", "value", "match"),
    [
        ("id", True, "bool"),
        ("id", 1.5, "non-integral float"),
        ("id", b"1", "bytes"),
        ("id", [1, 2], "single-valued"),
        ("id", {"a": 1}, "single-valued"),
        ("genres", 3, "list"),
        ("genres", [1.25], "non-integral"),
        ("year", float("inf"), "non-integral"),
    ],
)
def test_wrong_types_raise_naming_the_feature(module, feature, value, match):
    with pytest.raises(TypeError, match=f"feature '{feature}'.*{match}"):
        module({feature: [value]})


def test_multi_feature_string_needs_sep():
    m = UnifiedEmbedding([FeatureSpec("tags", multi=True)], chunk_dim=2, rows=10)
    with pytest.raises(TypeError, match="feature 'tags'.*sep"):
        m({"tags": ["a|b"]})


def test_unseen_values():
    hashed = UnifiedEmbedding(SPECS, chunk_dim=4, rows=50)
    assert torch.count_nonzero(hashed({"id": ["never-seen"]})) > 0  # hashed like any value
    cf = CollisionFreeEmbedding(SPECS, chunk_dim=4, vocab=VOCAB)
    assert torch.count_nonzero(cf({"id": [99]})) == 0
    assert cf.unseen_count == 1
    mixed = cf({"genres": [["Comedy", "Western"]]})
    torch.testing.assert_close(mixed, cf({"genres": [["Comedy"]]}))  # unseen tokens leave the bag
    strict = CollisionFreeEmbedding(SPECS, chunk_dim=4, vocab=VOCAB, unseen="error")
    with pytest.raises(LookupError, match="feature 'id': value '99'"):
        strict({"id": [99]})


def test_unknown_feature_and_bad_constructor_arguments():
    m = UnifiedEmbedding(SPECS, chunk_dim=4, rows=50)
    with pytest.raises(LookupError, match="feature"):
        m({"colour": ["red"]})
    with pytest.raises(ValueError, match="chunks of feature 'x'"):
        FeatureSpec("x", chunks=0)
    with pytest.raises(ValueError, match="sep"):
        FeatureSpec("x", sep="|")
    with pytest.raises(ValueError, match="rows"):
        UnifiedEmbedding(SPECS, chunk_dim=4, rows=0)
    with pytest.raises(ValueError, match="chunk_dim"):
        UnifiedEmbedding(SPECS, chunk_dim=0, rows=5)
    with pytest.raises(ValueError, match="distinct"):
        UnifiedEmbedding([FeatureSpec("a"), FeatureSpec("a")], chunk_dim=4, rows=5)
    with pytest.raises(ValueError, match="rows: expected a row count"):
        PerFeatureHashedEmbedding(SPECS, chunk_dim=4, rows={"id": 3})
    with pytest.raises(ValueError, match="unseen"):
        CollisionFreeEmbedding(SPECS, chunk_dim=4, vocab=VOCAB, unseen="skip")
    with pytest.raises(ValueError, match="values: expected the same number"):
        m({"id": [1, 2], "year": [1995]})


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.kind)
def test_save_load_round_trip_gives_identical_vectors(module, tmp_path):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))  # "trained" weights, not the seeded init
    values = {"id": [1, 2, 7], "genres": ["Comedy|Drama", None, ["Drama"]], "year": [1995, 2001, None]}
    before = module(values)
    loaded = load_categorical(module.save(tmp_path / "m"))
    assert type(loaded) is type(module)
    assert torch.equal(loaded(values), before)


@pytest.mark.parametrize("kind", ["unified", "per_feature", "collision_free"])
def test_dotted_feature_names_work_and_round_trip(kind, tmp_path):
    from telescope.embedder.unified_training import build_categorical

    specs = [FeatureSpec("user.id", chunks=2), FeatureSpec("item.genres", multi=True, sep="|")]
    values = {"user.id": [1, 2], "item.genres": ["a|b", None]}
    m = build_categorical(kind, specs, 2, rows=8, values=values)
    loaded = load_categorical(m.save(tmp_path / kind))
    assert torch.equal(loaded(values), m(values)) and m(values).shape == (2, 6)


def test_load_refuses_another_hash_version(tmp_path):
    import json

    folder = UnifiedEmbedding(SPECS, chunk_dim=4, rows=50).save(tmp_path / "m")
    config = json.loads((folder / "categorical.json").read_text())
    config["hash_version"] = "python-hash"
    (folder / "categorical.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="hash_version"):
        load_categorical(folder)


def test_gradients_reach_only_the_rows_looked_up():
    m = UnifiedEmbedding([FeatureSpec("id", chunks=2)], chunk_dim=3, rows=1000)
    m({"id": ["a"]}).sum().backward()
    touched = torch.count_nonzero(m.tables[0].grad.abs().sum(dim=1))
    assert 1 <= touched <= 2 and not math.isnan(float(m.tables[0].grad.sum()))


def test_empty_string_and_float32_nan_are_missing_for_a_multi_feature_without_sep():
    m = UnifiedEmbedding([FeatureSpec("tags", multi=True)], chunk_dim=2, rows=10)
    assert torch.count_nonzero(m({"tags": ["", np.float32("nan")]})) == 0


def test_budget_with_bad_tables_or_chunk_dim_names_the_argument():
    with pytest.raises(ValueError, match="num_tables: expected an integer >= 1, got 0"):
        UnifiedEmbedding.for_budget(SPECS, chunk_dim=4, budget_bytes=10_000, num_tables=0)
    with pytest.raises(ValueError, match="chunk_dim: expected an integer >= 1, got 0"):
        UnifiedEmbedding.for_budget(SPECS, chunk_dim=0, budget_bytes=10_000)
