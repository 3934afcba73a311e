"""Each training objective against its formula (METHODS.md and the cited paper), computed independently here.

The references below are written from the formulas with plain torch on the Hugging Face encoder's hidden states
(masked mean pooling, prefix, re-normalisation, MNRL as a scaled cross-entropy, KL as sum p (log p - log q)),
never through the code under test; the losses must agree with them on the tiny model.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

from telescope.embedder.basis_transform import attach_basis_transform
from telescope.embedder.losses import BT2Loss, Matryoshka2dPaperLoss, StarbucksLoss
from telescope.embedder.tiny import build_tiny_model

ANCHORS = ["a man rides a horse", "dogs in snow", "a woman cooks", "rain in the city", "a cat on a sofa"]
POSITIVES = ["a person on a horse", "two dogs play in the snow", "someone is cooking", "it rains downtown",
             "a kitten naps on the couch"]
SCALE, TEMPERATURE = 20.0, 0.05


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def old_model_path(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("old"), layers=3, hidden=48, heads=4, seed=1)


def st(path) -> SentenceTransformer:
    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    return model.eval()


def columns(model) -> list[dict]:
    return [model.preprocess(ANCHORS), model.preprocess(POSITIVES)]


# ---- references, from the formulas ----------------------------------------------------------------------------

def layer_means(model, features: dict) -> list[torch.Tensor]:
    """Masked mean over tokens of every hidden state h_0 .. h_L of the plain Hugging Face encoder."""
    inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    hidden = model[0].auto_model(**inputs, output_hidden_states=True).hidden_states
    mask = features["attention_mask"].unsqueeze(-1).float()
    return [(h * mask).sum(1) / mask.sum(1) for h in hidden]


def e(means: list[torch.Tensor], layer: int, dim: int) -> torch.Tensor:
    """e(l, d): layer l's pooled vector, first d coordinates, unit length."""
    v = means[layer][:, :dim]
    return v / v.norm(dim=-1, keepdim=True)


def mnrl(query: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """-mean_i log softmax_j(scale * cos(q_i, d_j))[i]."""
    q, d = F.normalize(query, dim=-1), F.normalize(docs, dim=-1)
    logits = SCALE * q @ d.T
    return -(logits.log_softmax(-1).diagonal()).mean()


def kl(teacher_scores: torch.Tensor, student_scores: torch.Tensor, t: float) -> torch.Tensor:
    """KL(p || q), p = softmax(teacher / t), q = softmax(student / t), summed over a row, mean over rows."""
    p = torch.softmax(teacher_scores / t, -1)
    return (p * (p.log() - torch.log_softmax(student_scores / t, -1))).sum(-1).mean()


def scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return q @ d.T


# ---- MRL ------------------------------------------------------------------------------------------------------

def test_mrl_is_the_equal_weight_sum_over_renormalised_prefixes(tiny_model_path):
    model = st(tiny_model_path)
    dims = [64, 32, 16, 8]
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), matryoshka_dims=dims)
    cols = columns(model)
    with torch.no_grad():
        a, p = layer_means(model, cols[0])[-1], layer_means(model, cols[1])[-1]
        expected = sum(mnrl(a[:, :m], p[:, :m]) for m in dims)
        torch.testing.assert_close(loss(cols, torch.zeros(5)), expected, atol=1e-5, rtol=1e-5)


# ---- Starbucks SRL --------------------------------------------------------------------------------------------

def test_starbucks_loss_is_the_sum_over_pairs_plus_score_kl_to_the_full_model(tiny_model_path):
    model = st(tiny_model_path)
    pairs = [(1, 8), (2, 16), (3, 32), (4, 64)]
    loss = StarbucksLoss(model, MultipleNegativesRankingLoss(model), pairs, kl_weight=0.7, kl_temperature=TEMPERATURE)
    cols = columns(model)
    with torch.no_grad():
        ma, mp = layer_means(model, cols[0]), layer_means(model, cols[1])
        full = scores(e(ma, 4, 64), e(mp, 4, 64))
        expected = sum(mnrl(e(ma, l, d), e(mp, l, d)) for l, d in pairs)
        expected = expected + 0.7 * sum(
            kl(full, scores(e(ma, l, d), e(mp, l, d)), TEMPERATURE) for l, d in pairs if (l, d) != (4, 64)
        )
        torch.testing.assert_close(loss(cols, torch.zeros(5)), expected, atol=1e-5, rtol=1e-5)


def test_starbucks_teacher_is_the_full_model_even_when_it_is_not_a_trained_pair(tiny_model_path):
    model = st(tiny_model_path)
    loss = StarbucksLoss(model, MultipleNegativesRankingLoss(model), [(2, 16)], kl_weight=1.0)
    cols = columns(model)
    with torch.no_grad():
        ma, mp = layer_means(model, cols[0]), layer_means(model, cols[1])
        student = scores(e(ma, 2, 16), e(mp, 2, 16))
        expected = mnrl(e(ma, 2, 16), e(mp, 2, 16)) + kl(scores(e(ma, 4, 64), e(mp, 4, 64)), student, TEMPERATURE)
        torch.testing.assert_close(loss(cols, torch.zeros(5)), expected, atol=1e-5, rtol=1e-5)


# ---- 2DMSE, the paper's four-term step ------------------------------------------------------------------------

def paper_step(ma, mp, layer: int, dim: int, kl_weight: float) -> torch.Tensor:
    big_l, big_d = len(ma) - 1, ma[-1].shape[-1]
    term = lambda l, d: mnrl(e(ma, l, d), e(mp, l, d))  # noqa: E731
    value = term(big_l, big_d) + term(layer, big_d) / layer + term(big_l, dim) + term(layer, dim) / layer
    teacher = scores(e(ma, big_l, big_d), e(mp, big_l, big_d))
    return value + kl_weight * kl(teacher, scores(e(ma, layer, big_d), e(mp, layer, big_d)), TEMPERATURE)


def test_2dmse_paper_step_is_one_of_the_four_term_losses_and_samples_every_layer_and_dim(tiny_model_path):
    model = st(tiny_model_path)
    loss = Matryoshka2dPaperLoss(model, MultipleNegativesRankingLoss(model), dims=[8, 16, 64], kl_weight=0.5, seed=3)
    cols = columns(model)
    with torch.no_grad():
        ma, mp = layer_means(model, cols[0]), layer_means(model, cols[1])
        # layers 1..L-1 (never the last: it is trained at every step), dims below the full one
        table = {(l, d): paper_step(ma, mp, l, d, 0.5) for l in (1, 2, 3) for d in (8, 16)}
        seen = []
        for _ in range(30):
            value = loss(cols, torch.zeros(5))
            match = [k for k, v in table.items() if torch.allclose(value, v, atol=1e-5, rtol=1e-5)]
            assert len(match) == 1, (value, table)
            seen.append(match[0])
    assert set(seen) == set(table)  # uniform over 3 layers x 2 dims: all six drawn in 30 steps


def test_2dmse_paper_sampling_is_seeded(tiny_model_path):
    model = st(tiny_model_path)
    base = MultipleNegativesRankingLoss(model)
    cols = columns(model)

    def draws(seed: int) -> list[float]:
        loss = Matryoshka2dPaperLoss(model, base, dims=[8, 16, 32], seed=seed)
        with torch.no_grad():
            return [round(float(loss(cols, torch.zeros(5))), 5) for _ in range(6)]

    assert draws(7) == draws(7)


# ---- BT^2: the basis-transform head and the four losses --------------------------------------------------------

def head_reference(head, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[b ; a]`` from the head's matrices: c = norm(W p + w), z = [c ; Q_new (s f)], b = Q_old z[:old], a = z[old:]."""
    c = F.normalize(pooled @ head.compat.weight.T + head.compat.bias, dim=-1)
    z = torch.cat([c, (head.scale * F.normalize(pooled, dim=-1)) @ head.rotate_new.weight.T], dim=-1)
    return z[:, : head.old_dim] @ head.rotate_old.weight.T, z[:, head.old_dim :]


def perturbed_bt2_model(tiny_model_path, old_dim: int):
    torch.manual_seed(0)
    model = attach_basis_transform(st(tiny_model_path), old_dim=old_dim).eval()
    with torch.no_grad():
        for p in model[2].parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def test_basis_transform_layout_is_b_then_a_and_its_rotations_stay_orthogonal(tiny_model_path):
    model = perturbed_bt2_model(tiny_model_path, old_dim=48)
    head = model[2]
    for rotation, n in ((head.rotate_old, 48), (head.rotate_new, 64)):
        assert rotation.parametrizations.weight[0].orthogonal_map.name == "matrix_exp"  # METHODS.md: square, exp
        torch.testing.assert_close(rotation.weight @ rotation.weight.T, torch.eye(n), atol=1e-5, rtol=0)
    cols = columns(model)
    with torch.no_grad():
        pooled = layer_means(model, cols[0])[-1]
        b, a = head_reference(head, pooled)
        out = model(dict(cols[0]))["sentence_embedding"]
        expected = F.normalize(torch.cat([b, a], dim=-1), dim=-1)  # the model's Normalize module follows the head
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        assert b.shape[1] == 48 and a.shape[1] == 64 + 12 - 48
        # an orthogonal Q_new keeps everything of f: |z| = sqrt(1 + s^2)
        z_norm = torch.cat([b, a], dim=-1).norm(dim=-1)
        torch.testing.assert_close(z_norm, torch.full_like(z_norm, (1 + head.scale**2) ** 0.5), atol=1e-5, rtol=0)


def test_bt2_loss_is_the_weighted_sum_of_its_four_terms(tiny_model_path, old_model_path):
    model = perturbed_bt2_model(tiny_model_path, old_dim=48)
    old, independent = st(old_model_path), st(tiny_model_path)
    weights = (1.5, 10.0, 5.0, 2.0)
    loss = BT2Loss(model, MultipleNegativesRankingLoss(model), old, independent, *weights)
    cols = columns(model)
    with torch.no_grad():
        new, olds, inds, pooled = [], [], [], []
        for f in cols:
            p = layer_means(model, f)[-1]
            b, a = head_reference(model[2], p)
            new.append((torch.cat([b, a], dim=-1), b))
            pooled.append(p)
            olds.append(F.normalize(layer_means(old, f)[-1], dim=-1))
            inds.append(F.normalize(layer_means(independent, f)[-1], dim=-1))
        misalign = lambda xs, ys: torch.cat(  # noqa: E731
            [1 - (F.normalize(x, dim=-1) * y).sum(-1) for x, y in zip(xs, ys)]
        ).mean()
        expected = (
            weights[0] * mnrl(new[0][0], new[1][0])  # new-new, the whole [b ; a]
            + weights[1] * mnrl(new[0][1], olds[1])  # influence: b(query) against old documents
            + weights[2] * misalign([n[1] for n in new], olds)  # b to the old embedding, every text
            + weights[3] * misalign(pooled, inds)  # new features to the independent model, every text
        )
        torch.testing.assert_close(loss(cols, torch.zeros(5)), expected, atol=1e-5, rtol=1e-5)


# ---- bad arguments: a clear error naming the field, the expected and the received value ------------------------

NAN = float("nan")


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda m, b: StarbucksLoss(m, b, [16]), r"pairs: expected \(layer, dim\) tuples of two integers, got 16"),
        (lambda m, b: StarbucksLoss(m, b, [(1.5, 16)]), r"pairs: .* two integers, got \(1.5, 16\)"),
        (lambda m, b: StarbucksLoss(m, b, [(1, 16), (1, 16)]), r"pairs: expected each \(layer, dim\) once"),
        (lambda m, b: StarbucksLoss(m, b, [(1, 16)], kl_temperature=NAN), "kl_temperature: expected > 0, got nan"),
        (lambda m, b: StarbucksLoss(m, b, [(1, 16)], kl_weight=NAN), "kl_weight: expected >= 0.*got nan"),
        (lambda m, b: StarbucksLoss(m, b, [(1, 16)], pair_weights=[NAN]), r"pair_weights: expected weights >= 0"),
        (lambda m, b: StarbucksLoss(m, b, [(1, 16)], pair_weights=[0], kl_weight=0), "pair_weights: expected at least"),
        (lambda m, b: Matryoshka2dPaperLoss(m, b, [16.7]), r"dims: expected positive integers, got \[16.7\]"),
        (lambda m, b: Matryoshka2dPaperLoss(m, b, ["x"]), r"dims: expected positive integers, got \['x'\]"),
        (lambda m, b: Matryoshka2dPaperLoss(m, b, [16], kl_temperature=NAN), "kl_temperature: expected > 0, got nan"),
    ],
)
def test_loss_constructors_refuse_bad_values_naming_them(build, message, tiny_model_path):
    model = st(tiny_model_path)
    with pytest.raises(ValueError, match=message):
        build(model, MultipleNegativesRankingLoss(model))


@pytest.mark.parametrize(
    "fields,message",
    [
        (dict(pairs=[(1, 2, 3)]), r"pairs: expected \(layer, dim\) pairs of two integers, got \(1, 2, 3\)"),
        (dict(pairs=[16]), r"pairs: expected \(layer, dim\) pairs of two integers, got 16"),
        (dict(pairs=[(1.5, 16)]), r"pairs: .* got \(1.5, 16\)"),
        (dict(kl_weight=NAN), "kl_weight: expected >= 0.*got nan"),
        (dict(seed="x"), "seed: expected an integer, got 'x'"),
        (dict(objective="bt2", old_model="a", independent_model="b", new_weight=-1), "new_weight: expected a number >= 0, got -1"),
        (dict(objective="bct", old_model="a", influence_weight=NAN), "influence_weight: expected a number >= 0, got nan"),
    ],
)
def test_train_config_refuses_bad_values_naming_them(fields, message, tmp_path):
    from telescope.embedder.training import TrainConfig

    data = tmp_path / "pairs.tsv"
    data.write_text("anchor\tpositive\na\tb\n")
    fields = {"objective": "starbucks", **fields}
    with pytest.raises(ValueError, match=message):
        TrainConfig(data=[str(data)], out=str(tmp_path / "out"), steps=1, **fields)


def test_pairs_read_back_from_a_manifest_are_accepted(tiny_model_path):
    """Manifest pairs are JSON lists and integral floats are integers: both pass."""
    model = st(tiny_model_path)
    loss = StarbucksLoss(model, MultipleNegativesRankingLoss(model), [[1, 8], (2.0, 16)])
    assert loss.pairs == [(1, 8), (2, 16)]


# ---- SMAE: masked language modelling at every (layer, dim) pair ------------------------------------------------

def test_smae_mlm_term_reads_only_the_first_d_dims_of_layer_l(tiny_model_path):
    from transformers import DataCollatorForLanguageModeling

    from telescope.embedder.losses import StarbucksMAELoss

    model = st(tiny_model_path)
    pairs = [(1, 8), (3, 32)]
    loss = StarbucksMAELoss(model, pairs, encoder_mask=0.3, mae_weight=0.0).eval()
    with torch.no_grad():
        for p in loss.head_transform.parameters():  # a head that is not the identity-ish start
            p.add_(0.1 * torch.randn_like(p))
    texts = ANCHORS + POSITIVES
    features = model.preprocess(texts)
    ids, attention = features["input_ids"], features["attention_mask"]
    torch.manual_seed(11)
    with torch.no_grad():
        value = loss([features])
    # the reference: the same masks (same seed, same collator), the head applied to [h_l[:d] ; 0]
    collator = DataCollatorForLanguageModeling(model.tokenizer, mlm_probability=0.3)
    special = torch.isin(ids, torch.tensor(model.tokenizer.all_special_ids)) | (attention == 0)
    torch.manual_seed(11)
    masked, labels = collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special)
    where = labels != -100
    with torch.no_grad():
        hidden = model[0].auto_model(input_ids=masked, attention_mask=attention, output_hidden_states=True).hidden_states
        words = model[0].auto_model.get_input_embeddings().weight
        dense, _, norm = loss.head_transform
        expected = 0.0
        for layer, dim in pairs:
            x = hidden[layer][where].clone()
            x[:, dim:] = 0
            logits = norm(F.gelu(x @ dense.weight.T + dense.bias)) @ words.T + loss.head_bias
            expected = expected + F.cross_entropy(logits, labels[where])
    torch.testing.assert_close(value, expected, atol=1e-4, rtol=1e-5)


# ---- telescope train: arguments checked before any work ---------------------------------------------------------

@pytest.mark.parametrize(
    "argv,message",
    [
        (["--objective", "unified", "--epochs", "2.5", "--field", "genre"],
         "--epochs: expected a whole number >= 1 for --objective unified, got 2.5"),
        (["--objective", "unified", "--epochs", "0.5", "--field", "genre"],
         "--epochs: expected a whole number >= 1 for --objective unified, got 0.5"),
        (["--objective", "srl", "--steps", "1"], "--objective: expected one of plain, .*bct, unified; got 'srl'"),
    ],
)
def test_train_cli_refuses_bad_arguments_naming_them(argv, message, tmp_path, capsys):
    import re

    from cli_helpers import run_cli

    data = tmp_path / "rows.tsv"
    data.write_text("anchor\tpositive\na\tb\n")
    code, _, err = run_cli(["train", *argv, "--data", str(data), "--out", str(tmp_path / "out")], capsys)
    err = " ".join(err.split())
    assert code == 2 and re.search(message, err), err
