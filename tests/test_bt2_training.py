"""BT^2 and BCT on tiny models: the basis-transform head, the four losses, and ``telescope train --objective bt2|bct``."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from telescope.embedder import load_embedder
from telescope.embedder.basis_transform import BasisTransform, attach_basis_transform
from telescope.embedder.losses.bct import BCTLoss
from telescope.embedder.losses.bt2 import BT2Loss
from telescope.embedder.tiny import build_tiny_model
from cli_helpers import run_cli

TEXTS = ["a man rides a horse", "a person on a horse", "dogs in snow", "two dogs play in the snow",
         "a woman cooks", "someone is cooking", "rain in the city", "it rains downtown"]


@pytest.fixture(scope="module")
def old_model_path(tmp_path_factory):
    """Another tiny random BERT (other seed, 3 layers, 48 dims): the 'old' model, same tokenizer."""
    return build_tiny_model(tmp_path_factory.mktemp("old-model"), layers=3, hidden=48, heads=4, seed=1)


def st(path) -> SentenceTransformer:
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def features(model: SentenceTransformer, texts: list[str]) -> dict:
    return model.preprocess(texts)


def test_head_starts_as_identity_rotations_and_keeps_orthogonality(tiny_model_path):
    model = attach_basis_transform(st(tiny_model_path), old_dim=48)
    head = model[2]
    assert isinstance(head, BasisTransform) and head.extra_dim == 12  # 25% of the old dim
    assert model.get_embedding_dimension() == 64 + 12
    assert torch.allclose(head.rotate_new.weight, torch.eye(64), atol=1e-5)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    q = head.rotate_old.weight
    assert torch.allclose(q @ q.T, torch.eye(48), atol=1e-4)  # still orthogonal after any parameter change
    vectors = model.encode(TEXTS, convert_to_numpy=True)
    assert vectors.shape == (len(TEXTS), 76)


def test_head_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="old_dim: expected at most input_dim \\+ extra_dim = 80, got 81"):
        BasisTransform(64, 81, 16)
    with pytest.raises(ValueError, match="extra_dim: expected an integer >= 1, got 0"):
        BasisTransform(64, 48, 0)
    with pytest.raises(ValueError, match="scale: expected > 0"):
        BasisTransform(64, 48, 12, scale=0)


def test_saved_bt2_model_reloads_and_encode_grid_runs_the_head(tmp_path, tiny_model_path):
    model = attach_basis_transform(st(tiny_model_path), old_dim=48, extra_dim=8)
    with torch.no_grad():
        for p in model[2].parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save(str(tmp_path / "bt2"))
    embedder = load_embedder(tmp_path / "bt2")
    assert embedder.full_dim == 72
    direct = model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    assert np.allclose(embedder.encode(TEXTS), direct, atol=1e-5)
    grid = embedder.encode_grid(TEXTS, [(4, 72), (4, 48)])
    assert np.allclose(grid[(4, 72)], direct, atol=1e-5)
    prefix = direct[:, :48] / np.linalg.norm(direct[:, :48], axis=1, keepdims=True)
    assert np.allclose(grid[(4, 48)], prefix, atol=1e-5)


def loss_value(loss: torch.nn.Module, model: SentenceTransformer) -> torch.Tensor:
    cols = [features(model, TEXTS[0::2]), features(model, TEXTS[1::2])]
    return loss(cols, torch.zeros(4))


def test_bt2_loss_trains_the_model_and_head_but_never_the_frozen_models(tiny_model_path, old_model_path):
    torch.manual_seed(0)
    old, independent = st(old_model_path), st(tiny_model_path)
    model = attach_basis_transform(st(tiny_model_path), old_dim=48)
    loss = BT2Loss(model, MultipleNegativesRankingLoss(model), old, independent)
    names = {n for n, _ in loss.named_parameters()}
    assert any(n.startswith("model.2.") for n in names) and not any("old_model" in n for n in names)
    frozen_before = [p.clone() for p in old.parameters()]
    optimizer = torch.optim.AdamW(loss.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        value = loss_value(loss, model)
        first = first if first is not None else value.item()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert loss_value(loss, model).item() < first
    assert all(torch.equal(a, b) for a, b in zip(frozen_before, old.parameters()))
    assert all(p.grad is None for p in old.parameters()) and all(p.grad is None for p in independent.parameters())
    assert loss.get_config_dict()["influence_weight"] == 10.0 and loss.get_config_dict()["align_old_weight"] == 5.0


def test_each_bt2_term_alone_is_a_loss(tiny_model_path, old_model_path):
    old, independent = st(old_model_path), st(tiny_model_path)
    model = attach_basis_transform(st(tiny_model_path), old_dim=48)
    base = MultipleNegativesRankingLoss(model)
    for weights in ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)):
        value = loss_value(BT2Loss(model, base, old, independent, *weights), model)
        assert value.item() >= -1e-6 and value.requires_grad  # a term that starts at zero can round below it
    # the new features start as the independent model's: alignment-new is zero at step 0
    assert loss_value(BT2Loss(model, base, old, independent, 0, 0, 0, 1), model).item() < 1e-5


def test_bt2_and_bct_constructor_errors(tiny_model_path, old_model_path):
    old, new = st(old_model_path), st(tiny_model_path)
    base = MultipleNegativesRankingLoss(new)
    with pytest.raises(ValueError, match="influence_weight: expected a number >= 0, got -1"):
        BT2Loss(new, base, old, new, influence_weight=-1)
    with pytest.raises(ValueError, match="independent_model: expected a model when align_new_weight > 0"):
        BT2Loss(new, base, old, None)
    with pytest.raises(ValueError, match="weights: expected at least one weight > 0"):
        BT2Loss(new, base, old, None, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="BCT needs the new and old vectors to have one dim, got old 48, new 64"):
        BCTLoss(new, base, old)
    with pytest.raises(ValueError, match="loss: expected a base loss with compute_loss_from_embeddings"):
        BT2Loss(new, torch.nn.MSELoss(), old, new)


def test_bct_loss_is_new_new_plus_influence(tiny_model_path):
    old = st(tiny_model_path)
    model = st(tiny_model_path)
    base = MultipleNegativesRankingLoss(model)
    bct = BCTLoss(model, base, old, new_weight=1.0, influence_weight=10.0)
    cols = [features(model, TEXTS[0::2]), features(model, TEXTS[1::2])]
    with torch.no_grad():
        a = model(dict(cols[0]))["sentence_embedding"]
        p = model(dict(cols[1]))["sentence_embedding"]
        expected = 11 * base.compute_loss_from_embeddings([a, p], torch.zeros(4))  # old == new weights here
        assert torch.allclose(bct(cols, torch.zeros(4)), expected, atol=1e-5)


def run(argv: list[str], capsys) -> tuple[int, str]:
    code, _, err = run_cli(argv, capsys)
    return code, " ".join(err.split())


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.tsv.gz"
    with gzip.open(path, "wt") as f:
        f.write("sentence1\tsentence2\n")
        f.writelines(f"{a}\t{b}\n" for a, b in zip(TEXTS[0::2] * 2, TEXTS[1::2] * 2))
    return path


def test_train_cli_bt2_writes_compatible_with_and_a_wider_model(tmp_path, tiny_model_path, old_model_path, pairs_file, capsys):
    out = tmp_path / "bt2"
    threads = torch.get_num_threads()
    try:
        code, err = run(["train", "--objective", "bt2", "--old-model", str(old_model_path), "--independent-model",
                         str(tiny_model_path), "--data", str(pairs_file), "--out", str(out), "--steps", "2",
                         "--batch-size", "4", "--dev-sts", "", "--threads", "1"], capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    manifest = json.loads((out / "telescope.json").read_text())
    assert manifest["compatible_with"] == {"model_id": "tiny-bert:1", "prefix_dim": 48}
    assert manifest["full_dim"] == 64 + 12 and manifest["objective"] == "bt2"
    # the tiny independent model's pairs end at (4, 64); the BT^2 model's full vector is a trained pair too
    assert manifest["pairs"] == [[1, 8], [2, 16], [3, 32], [4, 64], [4, 76]]
    assert "BT2Loss" in manifest["training"]["loss"] and manifest["training"]["loss_config"]["align_new_weight"] == 1.0
    embedder = load_embedder(out)
    assert embedder.full_dim == 76 and embedder.manifest.compatible_with.prefix_dim == 48


def test_train_cli_bct_and_its_errors(tmp_path, tiny_model_path, old_model_path, pairs_file, capsys):
    out = tmp_path / "bct"
    threads = torch.get_num_threads()
    try:
        code, err = run(["train", "--objective", "bct", "--old-model", str(tiny_model_path), "--data", str(pairs_file),
                         "--out", str(out), "--base", str(tiny_model_path), "--steps", "1", "--batch-size", "4",
                         "--dev-sts", "", "--threads", "1"], capsys)
        assert code == 0, err
        manifest = json.loads((out / "telescope.json").read_text())
        assert manifest["compatible_with"] == {"model_id": "tiny-bert:1", "prefix_dim": 64} and manifest["full_dim"] == 64
        code, err = run(["train", "--objective", "bt2", "--old-model", str(old_model_path), "--data", str(pairs_file),
                         "--out", str(tmp_path / "x"), "--steps", "1"], capsys)
        assert code == 2 and "independent_model: expected a model folder" in err
        code, err = run(["train", "--objective", "bct", "--old-model", str(old_model_path), "--data", str(pairs_file),
                         "--out", str(tmp_path / "y"), "--base", str(tiny_model_path), "--steps", "1",
                         "--batch-size", "4", "--dev-sts", ""], capsys)
        assert code == 2 and "BCT needs the new and old vectors to have one dim" in err
    finally:
        torch.set_num_threads(threads)


def test_head_starts_with_b_on_the_new_features_coordinates():
    head = BasisTransform(8, 8, 2)
    pooled = torch.randn(3, 8)
    out = head({"sentence_embedding": pooled.clone()})["sentence_embedding"]
    f = torch.nn.functional.normalize(pooled, dim=-1)
    assert torch.allclose(out[:, :6], 3 * f[:, :6], atol=1e-5)  # b: the new features, coordinate for coordinate,
    assert torch.allclose(out[:, 6:8], torch.nn.functional.normalize(pooled[:, 6:8], dim=-1), atol=1e-5)  # then c
    assert torch.allclose(out[:, 8:], 3 * f[:, 6:], atol=1e-5)  # a: what c displaced from b
