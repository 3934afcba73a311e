"""Fused text + categorical vectors: text prefixes untouched, save/load, collections, contrastive training."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from telescope.embedder.fused import FusedModel, FusedTower, load_fused
from telescope.embedder.unified import FeatureSpec, UnifiedEmbedding
from telescope.embedder.unified_training import TowerInputs, train_towers, train_unified

FIELDS = [FeatureSpec("lang", chunks=1), FeatureSpec("tags", chunks=2, multi=True, sep="|", column="labels")]
TEXTS = ["a cat on a mat", "stock markets fell", "a recipe for bread", "the rules of chess"]
PAYLOADS = [{"lang": "en", "labels": "pets|home"}, {"lang": "de"}, {"lang": None, "labels": ["food"]}, {}]


def fused_model(embedder, tail_dim=8) -> FusedModel:
    categorical = UnifiedEmbedding(FIELDS, chunk_dim=4, rows=64, seed=1)
    return FusedModel(embedder, FusedTower(categorical, ["lang", "tags"], embedder.full_dim, tail_dim))


def test_text_prefixes_of_fused_vectors_are_the_text_models_vectors(tiny_embedder):
    model = fused_model(tiny_embedder)
    fused = model.encode(TEXTS, PAYLOADS)
    assert fused.shape == (4, tiny_embedder.full_dim + 8)
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
    for dim in (16, tiny_embedder.full_dim):
        prefix = fused[:, :dim] / np.linalg.norm(fused[:, :dim], axis=1, keepdims=True)
        np.testing.assert_allclose(prefix, tiny_embedder.encode(TEXTS, dim=dim), atol=1e-5)


def test_rows_without_fields_are_exactly_their_text_vectors(tiny_embedder):
    model = fused_model(tiny_embedder)
    fused = model.encode(TEXTS[:2], None)
    d = tiny_embedder.full_dim
    assert np.count_nonzero(fused[:, d:]) == 0
    np.testing.assert_allclose(fused[:, :d], tiny_embedder.encode(TEXTS[:2]), atol=1e-5)
    with pytest.raises(TypeError, match="feature 'lang'"):
        model.encode(TEXTS[:1], [{"lang": True}])


def test_save_load_round_trip_gives_identical_vectors(tiny_embedder, tmp_path):
    model = fused_model(tiny_embedder)
    with torch.no_grad():
        for p in model.tower.parameters():
            p.add_(0.1 * torch.randn_like(p))
    before = model.encode(TEXTS, PAYLOADS)
    loaded = load_fused(model.save(tmp_path / "fused"))
    np.testing.assert_array_equal(loaded.encode(TEXTS, PAYLOADS), before)
    assert loaded.tag == model.tag and loaded.dim == model.dim


def test_collection_stores_and_searches_fused_vectors(tiny_embedder, tmp_path):
    from telescope.index import Collection

    model = fused_model(tiny_embedder)
    vectors = model.encode(TEXTS, PAYLOADS)
    plan = f"16:4,{model.dim}:2"  # stage one on a text prefix, re-rank on text + tail
    with Collection.create(tmp_path / "c", model.dim, default_plan=plan) as c:
        c.upsert([f"d{i}" for i in range(4)], vectors, PAYLOADS, model_version=model.tag)
        hits = c.search(vectors, k=1)
    assert [h[0].id for h in hits] == ["d0", "d1", "d2", "d3"]
    assert hits[0][0].model_version == model.tag


def test_fields_come_from_the_metadata_columns_the_pipelines_read(tiny_embedder, tmp_path):
    from telescope.pipelines.sources import read_table, texts_from

    source = tmp_path / "docs.csv"
    source.write_text("id,text,lang,labels\nd0,a cat on a mat,en,pets|home\nd1,stock markets fell,de,\n")
    ids, texts, payloads = texts_from(read_table(source))
    model = fused_model(tiny_embedder)
    by_hand = model.encode(texts, [{"lang": "en", "labels": ["pets", "home"]}, {"lang": "de"}])
    np.testing.assert_allclose(model.encode(texts, payloads), by_hand, atol=1e-6)


def test_contrastive_training_learns_a_field_only_signal():
    # Text says nothing (random vectors); the positive shares the anchor's category: only the tail can learn it.
    g = torch.Generator().manual_seed(0)
    n, cats = 128, 16
    categorical = UnifiedEmbedding([FeatureSpec("cat", chunks=2)], chunk_dim=8, rows=64)
    query = FusedTower(categorical, ["cat"], 16, 16, head_from_fields=True, learn_mix=True)
    doc = FusedTower(categorical, ["cat"], 16, 16)
    labels = [f"c{i % cats}" for i in range(n)]
    queries = TowerInputs(None, {"cat": categorical.lookup("cat", labels)})
    docs = TowerInputs(torch.randn(n, 16, generator=g), {"cat": categorical.lookup("cat", labels)})
    pairs = np.stack([np.arange(n), np.arange(n)], axis=1)
    losses = train_towers(query, doc, queries, docs, pairs, epochs=5, batch_size=64, negatives=16, lr=3e-2)
    assert losses[-1] < 0.6 * losses[0]


def test_train_unified_saves_a_loadable_model(tiny_model_path, tmp_path):
    rows = 32
    table = pa.table({
        "anchor": [f"question {i}" for i in range(rows)],
        "positive": [f"answer {i}" for i in range(rows)],
        "anchor_lang": ["en", "de"] * (rows // 2),
        "positive_lang": ["en", "de"] * (rows // 2),
        "positive_labels": ["x|y", None] * (rows // 2),
    })
    model = train_unified(table, tmp_path / "m", FIELDS, text_model=str(tiny_model_path), rows=32, chunk_dim=4,
                          tail_dim=8, epochs=1, batch_size=8, source="synthetic")
    assert all(math.isfinite(x) for x in model.training["losses"])
    loaded = load_fused(tmp_path / "m")
    np.testing.assert_array_equal(loaded.encode(TEXTS, PAYLOADS), model.encode(TEXTS, PAYLOADS))
    with pytest.raises(ValueError, match="anchor_"):
        train_unified(table.drop(["anchor_lang"]), tmp_path / "n", FIELDS, text_model=str(tiny_model_path), epochs=1)


def _anti_text_training(text_dim: int) -> FusedTower:
    # The positive's text is minus the query's: the text term rewards cos(a) < 0, pushing a learned angle past pi/2.
    g = torch.Generator().manual_seed(0)
    n = 32
    categorical = UnifiedEmbedding(FIELDS, chunk_dim=4, rows=16)
    query = FusedTower(categorical, ["lang"], text_dim, 4, learn_mix=True)
    doc = FusedTower(categorical, ["lang"], text_dim, 4)
    text = torch.randn(n, text_dim, generator=g)
    bags = {"lang": categorical.lookup("lang", ["en"] * n)}
    pairs = np.stack([np.arange(n), np.arange(n)], axis=1)
    train_towers(query, doc, TowerInputs(text, bags), TowerInputs(-text, bags), pairs, epochs=5, batch_size=8, lr=0.1)
    return query


def test_learned_mix_stays_a_valid_angle_and_the_model_reloads(tiny_embedder, tmp_path):
    tower = _anti_text_training(tiny_embedder.full_dim)
    angle = float(tower.mix.detach())
    assert 0.0 <= angle <= math.pi / 2
    model = FusedModel(tiny_embedder, tower)
    fused = model.encode(TEXTS, PAYLOADS)
    d = tiny_embedder.full_dim
    assert (np.sum(fused[:, :d] * tiny_embedder.encode(TEXTS), axis=1) >= 0).all()  # the text part keeps its sign
    loaded = load_fused(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.encode(TEXTS, PAYLOADS), fused)


def test_a_learned_mix_saved_as_a_plain_angle_still_loads(tiny_embedder, tmp_path):
    from safetensors.torch import load_file, save_file

    categorical = UnifiedEmbedding(FIELDS, chunk_dim=4, rows=64, seed=1)
    model = FusedModel(tiny_embedder, FusedTower(categorical, ["lang", "tags"], tiny_embedder.full_dim, 8, mix=0.6, learn_mix=True))
    folder = model.save(tmp_path / "m")
    state = {k: v for k, v in load_file(str(folder / "tower.safetensors")).items() if "mix" not in k}
    save_file({**state, "mix": torch.tensor(0.6)}, str(folder / "tower.safetensors"))  # the layout before the bound
    loaded = load_fused(folder)
    assert float(loaded.tower.mix.detach()) == pytest.approx(0.6, abs=1e-6)
    np.testing.assert_allclose(loaded.encode(TEXTS, PAYLOADS), model.encode(TEXTS, PAYLOADS), atol=1e-6)


def test_mix_of_a_quarter_turn_never_flips_the_text_and_reloads(tiny_embedder, tmp_path):
    categorical = UnifiedEmbedding(FIELDS, chunk_dim=4, rows=64, seed=1)
    model = FusedModel(tiny_embedder, FusedTower(categorical, ["lang", "tags"], tiny_embedder.full_dim, 8, mix=math.pi / 2))
    d = tiny_embedder.full_dim
    fused = model.encode(TEXTS[:2], None)  # no fields: float32 cos(pi/2) < 0 must not give minus the text vector
    assert (np.sum(fused[:, :d] * tiny_embedder.encode(TEXTS[:2]), axis=1) >= 0).all()
    loaded = load_fused(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.encode(TEXTS, PAYLOADS), model.encode(TEXTS, PAYLOADS))
