"""Training on the tiny model: every objective lowers its own loss; gradients reach exactly the layers the pairs use;
multi-layer trainable pooling round-trips and defines encoding at fewer layers; a resumed run is the same run."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from telescope.embedder.losses import Matryoshka2dPaperLoss, StarbucksLoss, StarbucksMAELoss
from telescope.embedder.pooling_mltp import MultiLayerTrainablePooling
from telescope.embedder.training import TrainConfig, build_loss, load_base, load_datasets, model_pairs, train

SENTENCES = [
    ("a man is riding a horse", "a person rides a horse"),
    ("two dogs play in the snow", "dogs are playing outside in snow"),
    ("a woman slices an onion", "someone is cutting an onion"),
    ("the stock market fell today", "shares dropped sharply"),
    ("a child kicks a red ball", "a kid plays with a ball"),
    ("the train arrives at noon", "the train comes at twelve"),
    ("a cat sleeps on the sofa", "a kitten naps on the couch"),
    ("rain is falling on the city", "it is raining downtown"),
    ("he plays the guitar on stage", "a musician performs with a guitar"),
    ("the chef cooks pasta", "a cook is making noodles"),
    ("birds fly over the lake", "geese soar above the water"),
    ("a boy reads a book", "a young man is reading"),
    ("the sun sets behind hills", "sunset over the mountains"),
    ("a plane lands at the airport", "an aircraft touches down"),
    ("she paints a portrait", "a woman is painting a face"),
    ("the team won the match", "the players celebrated a victory"),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-data")
    pairs = root / "pairs.tsv"
    pairs.write_text("anchor\tpositive\n" + "\n".join(f"{a}\t{p}" for a, p in SENTENCES) + "\n")
    triplets = root / "triplets.tsv"
    triplets.write_text(
        "\n".join(f"{a}\t{p}\t{SENTENCES[(i + 5) % len(SENTENCES)][1]}" for i, (a, p) in enumerate(SENTENCES)) + "\n"
    )
    scored = root / "scored.tsv"
    scored.write_text(
        "sentence1\tsentence2\tscore\n"
        + "\n".join(f"{a}\t{p}\t{4 + (i % 2)}" for i, (a, p) in enumerate(SENTENCES))
        + "\n"
        + "\n".join(f"{a}\t{SENTENCES[(i + 3) % 16][1]}\t{i % 2}" for i, (a, _) in enumerate(SENTENCES))
        + "\n"
    )
    texts = root / "texts.txt"
    texts.write_text("\n".join(s for pair in SENTENCES for s in pair) + "\n")
    return {"pairs": pairs, "triplets": triplets, "scored": scored, "texts": texts}


def config(objective: str, data: Path, out: Path, base: Path, **kw) -> TrainConfig:
    defaults = dict(steps=6, batch_size=8, save_steps=100, learning_rate=1e-3, warmup_ratio=0.0, dev_sts=None)
    defaults.update(kw)
    return TrainConfig(objective=objective, data=[str(data)], out=str(out), base=str(base), **defaults)


def fixed_batch_loss(cfg: TrainConfig, model_dir: Path | None = None) -> float:
    """The objective's loss on the first 8 examples, seeded, in eval mode (no dropout): comparable across models."""
    from transformers import set_seed

    set_seed(cfg.seed)  # the same fresh MLTP head as train() builds
    model, _, manifest, _ = load_base(cfg if model_dir is None else TrainConfig(**{**cfg.__dict__, "base": str(model_dir)}))
    kind, dataset, _ = load_datasets(cfg)
    loss, _ = build_loss(cfg, model, kind, model_pairs(cfg, model, manifest))
    model.eval()
    loss.eval()
    rows = dataset[:8]
    columns = [c for c in dataset.column_names if c != "score"]
    features = [model.preprocess(rows[c]) for c in columns]
    labels = torch.tensor(rows["score"]) if "score" in rows else torch.zeros(8)
    random.seed(0)
    torch.manual_seed(0)
    if hasattr(loss, "rng"):
        loss.rng = random.Random(0)
    with torch.no_grad():
        return float(loss(features, labels))


@pytest.mark.parametrize(
    "objective,data,pooling",
    [
        ("plain", "pairs", None),
        ("plain", "scored", None),
        ("mrl", "pairs", None),
        ("2dmse", "triplets", None),
        ("2dmse-paper", "pairs", None),
        ("starbucks", "pairs", None),
        ("starbucks", "pairs", "mltp"),
        ("starbucks-mae", "texts", None),
    ],
)
def test_objective_lowers_its_loss(objective, data, pooling, tiny_model_path, data_files, tmp_path):
    cfg = config(objective, data_files[data], tmp_path / "out", tiny_model_path, pooling=pooling)
    before = fixed_batch_loss(cfg) if objective != "starbucks-mae" else None
    manifest = train(cfg, show_progress=False)
    if objective == "starbucks-mae":
        # its MLM head and decoder are trained with it and then dropped: judge it by its logged training loss
        first, last = manifest.training["first_logged_loss"], manifest.training["last_logged_loss"]
        assert last < first, (first, last)
    else:
        after = fixed_batch_loss(cfg, tmp_path / "out")
        assert after < before, (objective, before, after)
    assert manifest.objective == objective
    assert manifest.training["steps"] == 6
    assert manifest.training["data"][0]["sha256"] and manifest.training["seed"] == 0
    assert manifest.pooling == (pooling or "mean")
    assert not (tmp_path / "out" / "checkpoints").exists()


def _block_grads(model) -> list[float]:
    blocks = model[0].auto_model.encoder.layer
    return [
        sum(float(p.grad.abs().sum()) for p in block.parameters() if p.grad is not None) for block in blocks
    ]


@pytest.mark.parametrize("pooling", [None, "mltp"])
def test_gradients_reach_exactly_the_layers_the_pairs_use(pooling, tiny_model_path, data_files, tmp_path):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    cfg = config("starbucks", data_files["pairs"], tmp_path / "o", tiny_model_path, pooling=pooling)
    model, _, _, _ = load_base(cfg)
    features = [model.preprocess([a for a, _ in SENTENCES[:6]]), model.preprocess([p for _, p in SENTENCES[:6]])]
    # pairs up to layer 2 of 4, KL on: the detached full-size teacher must not leak gradients into layers 3-4
    loss = StarbucksLoss(model, MultipleNegativesRankingLoss(model), pairs=[(1, 8), (2, 16)], kl_weight=1.0)
    loss(features, torch.zeros(6)).backward()
    grads = _block_grads(model)
    assert grads[0] > 0 and grads[1] > 0, grads
    assert grads[2] == 0 and grads[3] == 0, grads
    model.zero_grad(set_to_none=True)
    loss = StarbucksLoss(model, MultipleNegativesRankingLoss(model), pairs=[(1, 8), (2, 16), (3, 32), (4, 64)])
    loss(features, torch.zeros(6)).backward()
    assert all(g > 0 for g in _block_grads(model)), _block_grads(model)
    if pooling == "mltp":
        assert float(model[1].out.weight.grad.abs().sum()) > 0


def test_smae_gradients_reach_every_pair_layer(tiny_model_path, data_files, tmp_path):
    cfg = config("starbucks-mae", data_files["texts"], tmp_path / "o", tiny_model_path)
    model, _, _, _ = load_base(cfg)
    loss = StarbucksMAELoss(model, pairs=[(1, 8), (3, 32)])
    torch.manual_seed(0)
    loss([model.preprocess([s for pair in SENTENCES for s in pair])]).backward()
    grads = _block_grads(model)
    assert grads[0] > 0 and grads[1] > 0 and grads[2] > 0 and grads[3] == 0, grads


def test_mltp_save_load_round_trip_and_fewer_layers(tiny_model_path, data_files, tmp_path):
    from telescope.embedder import load_embedder

    out = tmp_path / "mltp"
    train(config("starbucks", data_files["pairs"], out, tiny_model_path, pooling="mltp", steps=3), show_progress=False)
    texts = [a for a, _ in SENTENCES]
    first = load_embedder(out, device="cpu")
    again = load_embedder(out, device="cpu")
    assert type(first.model[1]).__name__ == "MultiLayerTrainablePooling"
    full_a = first.encode(texts)
    np.testing.assert_array_equal(full_a, again.encode(texts))
    direct = first.model.encode(texts, convert_to_numpy=True)  # plain sentence-transformers path, all layers
    np.testing.assert_allclose(full_a, direct / np.linalg.norm(direct, axis=1, keepdims=True), atol=1e-5)
    # fewer layers: early exit (only 2 blocks run) == the head over layers 1..2 inside one full pass
    grid = first.encode_grid(texts, [(2, 16), (4, 64)])
    np.testing.assert_allclose(first.encode(texts, layer=2, dim=16), grid[(2, 16)], atol=1e-5)
    np.testing.assert_allclose(full_a, grid[(4, 64)], atol=1e-5)
    assert not np.allclose(grid[(2, 16)], first.encode(texts, layer=4, dim=16), atol=1e-3)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("objective", ["starbucks", "2dmse-paper"])  # 2dmse-paper: its sampled (layer, dim) too
def test_resume_continues_the_same_run(objective, tiny_model_path, data_files, tmp_path):
    from transformers import TrainerCallback

    class StopAfterCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise Interrupt(state.global_step)

    common = dict(steps=4, save_steps=2, learning_rate=5e-4)
    straight = tmp_path / "straight"
    train(config(objective, data_files["pairs"], straight, tiny_model_path, **common), show_progress=False)

    resumed = tmp_path / "resumed"
    cfg = config(objective, data_files["pairs"], resumed, tiny_model_path, **common)
    with pytest.raises(Interrupt):
        train(cfg, callbacks=[StopAfterCheckpoint()], show_progress=False)
    assert (resumed / "checkpoints" / "checkpoint-2").is_dir()
    with pytest.raises(ValueError, match="seed"):
        train(TrainConfig(**{**cfg.__dict__, "seed": 1}), show_progress=False)
    manifest = train(cfg, show_progress=False)
    assert manifest.training["resumed_from_step"] == 2 and manifest.training["steps"] == 4

    from safetensors.torch import load_file

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    assert json.loads((resumed / "telescope.json").read_text())["training"]["steps"] == 4
    shutil.rmtree(tmp_path)


def test_mltp_reads_the_layer_from_token_embeddings():
    hidden = tuple(torch.randn(2, 5, 8) for _ in range(5))
    assert MultiLayerTrainablePooling.layer_of({"all_layer_embeddings": hidden, "token_embeddings": hidden[2]}) == 2
    assert MultiLayerTrainablePooling.layer_of({"all_layer_embeddings": hidden[:4]}) == 3
    head = MultiLayerTrainablePooling(8, 4, num_latents=4, num_heads=2)
    mask = torch.ones(2, 5, dtype=torch.long)
    out = head({"all_layer_embeddings": hidden, "token_embeddings": hidden[2], "attention_mask": mask})
    torch.testing.assert_close(out["sentence_embedding"], hidden[2].mean(1))  # a fresh head is mean pooling


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda m, b: StarbucksLoss(m, b, [(1, 8)], kl_weight=-1), "kl_weight"),
        (lambda m, b: StarbucksLoss(m, b, [(5, 8)]), r"got \(5, 8\)"),
        (lambda m, b: StarbucksLoss(m, b, [(1, 8)], pair_weights=[1, 2]), "pair_weights"),
        (lambda m, b: StarbucksLoss(m, object(), [(1, 8)]), "compute_loss_from_embeddings"),
        (lambda m, b: Matryoshka2dPaperLoss(m, b, [64]), "below the full dim 64"),
        (lambda m, b: StarbucksMAELoss(m, [(1, 8)], encoder_mask=1.5), "encoder_mask"),
        (lambda m, b: MultiLayerTrainablePooling(64, 4, num_heads=5), "num_heads"),
    ],
)
def test_constructors_name_the_bad_argument(build, message, tiny_model_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(str(tiny_model_path), device="cpu")
    with pytest.raises(ValueError, match=message):
        build(model, MultipleNegativesRankingLoss(model))
