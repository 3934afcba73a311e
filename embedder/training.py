"""Training nested-embedding models: data files in, a telescope model folder out.

``train(TrainConfig(...))`` loads the base model (the packaged default or any sentence-transformers folder),
optionally swaps its pooling for multi-layer trainable pooling, reads the training data, builds the loss for
the objective, runs sentence-transformers' ``SentenceTransformerTrainer`` (checkpoints under
``OUT/checkpoints``; a rerun with the same configuration resumes from the last one), saves the model to ``OUT``
and writes ``telescope.json``: objective (and which loss implemented it), pairs, base model and its hash, data
files and their sha256, seed, steps, speed and peak memory, and the STS-B dev Spearman grid measured at the end.

Objectives (METHODS.md has the math):

| objective | loss |
|---|---|
| plain | the base loss: MultipleNegativesRankingLoss (pairs, triplets) or CoSENTLoss (scored pairs) |
| mrl | sentence-transformers MatryoshkaLoss over the pairs' dims |
| 2dmse | sentence-transformers Matryoshka2dLoss (one sampled layer, one sampled dim per step) |
| 2dmse-paper | telescope Matryoshka2dPaperLoss (the paper's four-term step, 1/l weights, score KL) |
| starbucks | telescope StarbucksLoss (every pair every step + score KL) |
| starbucks-mae | telescope StarbucksMAELoss (SMAE continued pre-training on a text file, one text a line) |
| bt2 | telescope BT2Loss: BasisTransform head ([b ; a], +25% dims), four losses against ``old_model`` and ``independent_model`` |
| bct | telescope BCTLoss: new-new + influence loss against ``old_model`` (no extra dims) |

``bt2`` and ``bct`` start from ``independent_model`` (else ``base``) and write ``compatible_with`` (the old model's
``id:version`` and its dim, the comparable prefix) into the manifest. A bt2 model's pairs always hold its
(last layer, full dim), the wider ``[b ; a]`` vector, even when the rest are copied from the start model.

Data files (TSV, optionally .gz; a header row is recognised by its column names):
pairs ``anchor/sentence1, positive/sentence2``; triplets ``anchor, positive, negative/hard_negative``;
scored pairs ``sentence1, sentence2, score`` (scaled to [0, 1] by the file's maximum when it exceeds 1). Without
a header: 2 columns are pairs, 3 are scored pairs when the third is numeric, else triplets. Other columns
(source, ids) are ignored. For ``starbucks-mae`` a file is plain text, one passage a line.

The end-of-training STS-B grid is computed here, not with telescope.eval, because embedder must not import eval
(DESIGN.md: dependencies point one way); it is the standard protocol (Spearman x100 of cosine vs gold).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import json
import random
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import telescope.embedder  # noqa: F401  (sets the offline environment before sentence-transformers loads)
from telescope.embedder.manifest import CompatibleWith, ModelManifest, nested_pairs
from telescope.embedder.model import DEFAULT_MODEL, DEFAULT_MODEL_ID, resolve_model_path, uses_only_own_modules

OBJECTIVES = ("plain", "mrl", "2dmse", "2dmse-paper", "starbucks", "starbucks-mae", "bt2", "bct")
COMPAT_OBJECTIVES = ("bt2", "bct")
POOLINGS = ("mean", "mltp")
CHECKPOINTS = "checkpoints"
RUN_CONFIG = "run_config.json"
SMAE_HEADS = "smae_heads.pt"

ANCHOR_NAMES = ("anchor", "sentence1", "query", "text1", "s1")
POSITIVE_NAMES = ("positive", "sentence2", "document", "text2", "s2")
NEGATIVE_NAMES = ("negative", "hard_negative")
SCORE_NAMES = ("score", "label", "similarity")


@dataclass
class TrainConfig:
    """Everything a run depends on. A resumed run must be given the same values (checked)."""

    objective: str
    data: list[str]
    out: str
    base: str = DEFAULT_MODEL
    pooling: str | None = None  # None: keep the base model's pooling
    pairs: list[tuple[int, int]] | None = None  # None: the base manifest's pairs (or the default nesting)
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 32
    seed: int = 0
    learning_rate: float = 2e-5
    head_learning_rate: float = 1e-3  # fresh parameters: the MLTP head, the SMAE MLM head and decoder
    warmup_ratio: float = 0.1
    kl_weight: float = 1.0
    kl_temperature: float = 0.05
    mltp_latents: int = 32
    mltp_heads: int | None = None
    save_steps: int = 100
    max_rows: int | None = None  # use only the first N rows (after the seeded shuffle) of each file
    max_seq_length: int | None = None
    dev_sts: str | None = None  # STS-B dev pairs for the end-of-training grid (``telescope train`` passes the shared one)
    keep_checkpoints: bool = False  # a finished run removes OUT/checkpoints (the model folder is the result)
    old_model: str | None = None  # bt2/bct: the model whose vectors fill the index
    independent_model: str | None = None  # bt2 (bct: optional): the independently trained new model; the start point
    extra_dims: int | None = None  # bt2: dims added to the new model's (default 25% of the old dim)
    new_weight: float = 1.0  # bt2/bct: new-new contrastive loss
    influence_weight: float = 10.0  # bt2/bct: b(query) against old documents
    align_old_weight: float = 5.0  # bt2: cosine alignment of b to the old embedding
    align_new_weight: float = 1.0  # bt2: cosine alignment of the new features to the independent model

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ValueError(f"pooling: expected one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if isinstance(self.data, (str, Path)):
            self.data = [str(self.data)]
        if not self.data:
            raise ValueError("data: expected at least one training file, got none")
        self.data = [str(d) for d in self.data]
        for d in self.data:
            if not Path(d).is_file():
                raise FileNotFoundError(f"data: expected a training file, got {d!r} (no such file)")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(
                f"steps/epochs: expected exactly one of them, got steps={self.steps!r} epochs={self.epochs!r}"
            )
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"steps: expected an integer >= 1, got {self.steps!r}")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs: expected > 0, got {self.epochs!r}")
        for name in ("batch_size", "save_steps", "mltp_latents"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if self.objective in ("plain", "mrl", "2dmse", "2dmse-paper", "starbucks") and self.batch_size < 2:
            raise ValueError(f"batch_size: expected >= 2 (in-batch negatives), got {self.batch_size}")
        for name in ("learning_rate", "head_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected > 0, got {getattr(self, name)!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio: expected a fraction in [0, 1), got {self.warmup_ratio!r}")
        if not self.kl_weight >= 0:  # `not >=`: NaN is refused too
            raise ValueError(f"kl_weight: expected >= 0 (0 turns the KL term off), got {self.kl_weight!r}")
        if not self.kl_temperature > 0:
            raise ValueError(f"kl_temperature: expected > 0, got {self.kl_temperature!r}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows: expected >= 1, got {self.max_rows!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed: expected an integer, got {self.seed!r}")
        if self.pairs is not None:
            self.pairs = _integer_pairs(self.pairs)
        for name in ("new_weight", "influence_weight", "align_old_weight", "align_new_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
        if self.objective in COMPAT_OBJECTIVES:
            if not self.old_model:
                raise ValueError(f"old_model: expected a model folder (or 'default') for --objective {self.objective}, got none")
            if self.objective == "bt2" and not self.independent_model:
                raise ValueError("independent_model: expected a model folder (or 'default') for --objective bt2, got none")
            if self.batch_size < 2:
                raise ValueError(f"batch_size: expected >= 2 (in-batch negatives), got {self.batch_size}")
        if self.extra_dims is not None and (isinstance(self.extra_dims, bool) or not isinstance(self.extra_dims, int) or self.extra_dims < 1):
            raise ValueError(f"extra_dims: expected an integer >= 1, got {self.extra_dims!r}")

    def run_identity(self) -> dict[str, Any]:
        """The fields that must match for a rerun to resume the same run."""
        data = dataclasses.asdict(self)
        data.pop("save_steps")
        data.pop("dev_sts")
        data.pop("keep_checkpoints")
        data["pairs"] = [list(p) for p in self.pairs] if self.pairs else None
        data["data_sha256"] = [file_sha256(Path(d)) for d in self.data]
        return data


def _integer_pairs(pairs: Sequence[Any]) -> list[tuple[int, int]]:
    """``pairs`` as (layer, dim) integer tuples; raise naming the bad item (the model checks the ranges)."""
    from telescope.embedder.losses.layers import is_integer_pair

    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise ValueError(f"pairs: expected a list of (layer, dim) pairs, got {pairs!r}")
    for pair in pairs:
        if not is_integer_pair(pair):
            raise ValueError(f"pairs: expected (layer, dim) pairs of two integers, got {pair!r} in {list(pairs)!r}")
    return [(int(layer), int(dim)) for layer, dim in pairs]


def parse_pairs(text: str) -> list[tuple[int, int]]:
    """``"1:16,2:32"`` -> ``[(1, 16), (2, 32)]``."""
    pairs = []
    for item in text.split(","):
        item = item.strip()
        layer, sep, dim = item.partition(":")
        if not sep or not layer.strip().isdigit() or not dim.strip().isdigit():
            raise ValueError(f"pairs: expected LAYER:DIM items separated by commas (e.g. 1:16,2:32), got {item!r}")
        pairs.append((int(layer), int(dim)))
    if not pairs:
        raise ValueError(f"pairs: expected at least one LAYER:DIM, got {text!r}")
    return pairs


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _find(header: list[str], names: Sequence[str]) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_examples(path: str | Path) -> tuple[str, dict[str, list]]:
    """Read a pairs / triplets / scored-pairs TSV: ``(kind, columns)``, see the module docstring."""
    path = Path(path)
    with _open_text(path) as f:
        rows = [row for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if row]
    if not rows:
        raise ValueError(f"data: expected rows in {str(path)!r}, got an empty file")
    header = [c.strip().lower() for c in rows[0]]
    anchor, positive = _find(header, ANCHOR_NAMES), _find(header, POSITIVE_NAMES)
    if anchor is not None and positive is not None:
        negative, score = _find(header, NEGATIVE_NAMES), _find(header, SCORE_NAMES)
        rows = rows[1:]
    else:
        width = len(rows[0])
        if width == 2:
            anchor, positive, negative, score = 0, 1, None, None
        elif width == 3:
            anchor, positive = 0, 1
            negative, score = (None, 2) if _is_number(rows[0][2]) else (2, None)
        else:
            raise ValueError(
                f"data: expected a header naming anchor/positive (or sentence1/sentence2) columns, or 2-3 "
                f"unnamed columns, in {str(path)!r}; got {width} columns: {rows[0][:6]!r}"
            )
    need = max(i for i in (anchor, positive, negative, score) if i is not None)
    for n, row in enumerate(rows):
        if len(row) <= need:
            raise ValueError(f"data: {str(path)!r} row {n + 1}: expected at least {need + 1} columns, got {len(row)}")
    if score is not None:
        scores = []
        for n, row in enumerate(rows):
            if not _is_number(row[score]):
                raise ValueError(f"data: {str(path)!r} row {n + 1}: expected a numeric score, got {row[score]!r}")
            scores.append(float(row[score]))
        top = max(scores) if scores else 1.0
        scale = top if top > 1 else 1.0
        return "scored", {
            "sentence1": [r[anchor] for r in rows],
            "sentence2": [r[positive] for r in rows],
            "score": [s / scale for s in scores],
        }
    columns = {"anchor": [r[anchor] for r in rows], "positive": [r[positive] for r in rows]}
    if negative is not None:
        columns["negative"] = [r[negative] for r in rows]
        return "triplets", columns
    return "pairs", columns


def read_texts(path: str | Path) -> tuple[str, dict[str, list]]:
    """One passage a line (blank lines skipped)."""
    with _open_text(Path(path)) as f:
        texts = [line.strip() for line in f if line.strip()]
    if not texts:
        raise ValueError(f"data: expected text lines in {str(path)!r}, got none")
    return "texts", {"text": texts}


def load_datasets(config: TrainConfig) -> tuple[str, Any, list[dict[str, Any]]]:
    """``(kind, Dataset or DatasetDict, [file descriptions])``; every file shuffled with Random(seed)."""
    from datasets import Dataset, DatasetDict

    datasets, described, kinds = {}, [], set()
    for n, name in enumerate(config.data):
        kind, columns = read_texts(name) if config.objective == "starbucks-mae" else read_examples(name)
        order = list(range(len(next(iter(columns.values())))))
        random.Random(config.seed).shuffle(order)
        if config.max_rows:
            order = order[: config.max_rows]
        columns = {k: [v[i] for i in order] for k, v in columns.items()}
        kinds.add("scored" if kind == "scored" else kind if kind == "texts" else "contrastive")
        datasets[f"{n}_{Path(name).name.split('.')[0]}"] = Dataset.from_dict(columns)
        described.append({"path": str(Path(name).resolve()), "sha256": file_sha256(Path(name)), "kind": kind,
                          "rows": len(order)})
    if len(kinds) > 1:
        raise ValueError(
            f"data: expected files of one family (pairs/triplets together, or scored pairs), got {sorted(kinds)} "
            f"from {config.data}"
        )
    kind = kinds.pop()
    dataset = next(iter(datasets.values())) if len(datasets) == 1 else DatasetDict(datasets)
    return kind, dataset, described


def load_base(config: TrainConfig):
    """The base SentenceTransformer (with an MLTP head attached when asked) and its description."""
    from sentence_transformers import SentenceTransformer

    from telescope.embedder.pooling_mltp import MultiLayerTrainablePooling, attach_mltp

    start = config.independent_model if config.objective in COMPAT_OBJECTIVES and config.independent_model else config.base
    path = resolve_model_path(start)
    model = SentenceTransformer(
        str(path), device="cpu", local_files_only=True, trust_remote_code=uses_only_own_modules(path)
    )
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    has_mltp = len(model) > 1 and isinstance(model[1], MultiLayerTrainablePooling)
    if config.pooling == "mltp" and not has_mltp:
        model = attach_mltp(model, num_latents=config.mltp_latents, num_heads=config.mltp_heads)
    elif config.pooling == "mean" and has_mltp:
        raise ValueError(f"pooling: expected mltp (the base {str(path)!r} already has an MLTP head), got 'mean'")
    base_manifest = ModelManifest.load(path)
    base_id = base_manifest.tag if base_manifest else (DEFAULT_MODEL_ID if start == DEFAULT_MODEL else str(path))
    return model, path, base_manifest, base_id


def model_pairs(config: TrainConfig, model, base_manifest: ModelManifest | None) -> list[tuple[int, int]]:
    from telescope.embedder.losses.layers import check_pairs, num_layers

    depth, full = num_layers(model), int(model.get_embedding_dimension())
    if config.pairs:
        pairs = check_pairs(config.pairs, model)
    elif base_manifest and base_manifest.pairs:
        pairs = check_pairs(base_manifest.pairs, model)
    else:
        pairs = nested_pairs(depth, full)
    if config.objective == "bt2" and (depth, full) not in pairs:
        # BT2Loss trains the whole [b ; a] vector, wider than the start model whose manifest gave the pairs
        pairs.append((depth, full))
    return pairs


def load_compat_models(config: TrainConfig) -> dict[str, Any]:
    """bt2/bct: the frozen old and independent models, and the old model's version tag (``{}`` otherwise)."""
    if config.objective not in COMPAT_OBJECTIVES:
        return {}
    from telescope.embedder.model import load_embedder

    out: dict[str, Any] = {}
    for name in ("old_model", "independent_model"):
        location = getattr(config, name)
        if location:
            embedder = load_embedder(location, device="cpu")
            out[name], out[f"{name}_tag"] = embedder.model, embedder.manifest.tag
    return out


def attach_compat_head(config: TrainConfig, model, frozen: dict[str, Any]):
    """bt2: the model with a fresh BasisTransform head after its pooling; other objectives: unchanged."""
    if config.objective != "bt2":
        return model
    from telescope.embedder.basis_transform import attach_basis_transform

    return attach_basis_transform(model, int(frozen["old_model"].get_embedding_dimension()), config.extra_dims)


def build_loss(config: TrainConfig, model, kind: str, pairs: list[tuple[int, int]], frozen: dict[str, Any] | None = None):
    """The loss for the objective, and a one-line description of what implements it."""
    from sentence_transformers.sentence_transformer.losses import (
        CoSENTLoss,
        Matryoshka2dLoss,
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )

    from telescope.embedder.losses import Matryoshka2dPaperLoss, StarbucksLoss, StarbucksMAELoss

    if config.objective == "starbucks-mae":
        if kind != "texts":
            raise ValueError(f"data: starbucks-mae expects a text file, got {kind}")
        return StarbucksMAELoss(model, pairs), "telescope StarbucksMAELoss (MLM + MAE decoder at every pair)"
    base = CoSENTLoss(model) if kind == "scored" else MultipleNegativesRankingLoss(model)
    base_name = type(base).__name__
    if config.objective in COMPAT_OBJECTIVES:
        from telescope.embedder.losses.bct import BCTLoss
        from telescope.embedder.losses.bt2 import BT2Loss

        if kind != "contrastive":
            raise ValueError(f"data: {config.objective} expects pairs or triplets (query, document), got {kind}")
        frozen = frozen or {}
        if config.objective == "bct":
            loss = BCTLoss(model, base, frozen["old_model"], config.new_weight, config.influence_weight)
            return loss, f"telescope BCTLoss({base_name}) against {frozen['old_model_tag']}"
        loss = BT2Loss(
            model, base, frozen["old_model"], frozen["independent_model"], config.new_weight,
            config.influence_weight, config.align_old_weight, config.align_new_weight,
        )
        return loss, f"telescope BT2Loss({base_name}) against {frozen['old_model_tag']} and {frozen['independent_model_tag']}"
    full = int(model.get_embedding_dimension())
    dims = sorted({d for _, d in pairs} | {full}, reverse=True)
    if config.objective == "plain":
        return base, base_name
    if config.objective == "mrl":
        return MatryoshkaLoss(model, base, matryoshka_dims=dims), f"sentence-transformers MatryoshkaLoss({base_name}) dims {dims}"
    if config.objective == "2dmse":
        return (
            Matryoshka2dLoss(model, base, matryoshka_dims=dims),
            f"sentence-transformers Matryoshka2dLoss({base_name}) dims {dims} (library approximation of 2DMSE)",
        )
    if config.objective == "2dmse-paper":
        # no seed of its own: it samples from Python's random, which train() seeds and the Trainer saves in each
        # checkpoint and restores on resume (a private sampler would replay its first draws after a resume)
        loss = Matryoshka2dPaperLoss(
            model, base, dims=dims, kl_weight=config.kl_weight, kl_temperature=config.kl_temperature
        )
        return loss, f"telescope Matryoshka2dPaperLoss({base_name}) (the paper's four-term step)"
    loss = StarbucksLoss(model, base, pairs, kl_weight=config.kl_weight, kl_temperature=config.kl_temperature)
    return loss, f"telescope StarbucksLoss({base_name}) (SRL)"


def sts_dev_grid(model_dir: Path, sts_file: Path, points: Sequence[tuple[int, int]]) -> dict[str, float]:
    """STS Spearman x100 (cosine vs gold) at each ``(layer, dim)``: ``{"l,d": value}``. One encoding pass."""
    from scipy.stats import spearmanr

    from telescope.embedder.model import load_embedder

    kind, columns = read_examples(sts_file)
    if kind != "scored":
        raise ValueError(f"dev_sts: expected scored pairs in {str(sts_file)!r}, got {kind}")
    embedder = load_embedder(model_dir, device="cpu")
    n = len(columns["sentence1"])
    vectors = embedder.encode_grid(columns["sentence1"] + columns["sentence2"], points)
    out = {}
    for (layer, dim), v in vectors.items():
        cosine = np.sum(v[:n] * v[n:], axis=1)
        out[f"{layer},{dim}"] = round(float(spearmanr(cosine, columns["score"]).statistic) * 100, 2)
    return out


class _SaveLossHeads:
    """Trainer callback: keep the loss's own parameters (SMAE heads) in each checkpoint, for resuming."""

    def __new__(cls, loss):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                import torch

                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    torch.save(loss.head_state_dict(), folder / SMAE_HEADS)

        return Callback()


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def train(config: TrainConfig, callbacks: Sequence[Any] = (), show_progress: bool = True) -> ModelManifest:
    """Run (or resume) a training run and write the model folder; returns its manifest."""
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from telescope.embedder.losses.layers import num_layers

    out = Path(config.out)
    if (out / "telescope.json").exists() and (out / "modules.json").exists():
        raise FileExistsError(f"out: {str(out)!r} already holds a trained model; choose another folder")
    checkpoints = out / CHECKPOINTS
    checkpoints.mkdir(parents=True, exist_ok=True)
    identity = config.run_identity()
    run_file = checkpoints / RUN_CONFIG
    last = get_last_checkpoint(str(checkpoints)) if run_file.exists() else None
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        # a field added to TrainConfig after the checkpoint was written matches when it holds its default
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
        changed = sorted(
            k for k in set(previous) | set(identity) if previous.get(k, defaults.get(k)) != identity.get(k, defaults.get(k))
        )
        if changed:
            k = changed[0]
            raise ValueError(
                f"{k}: {str(checkpoints)!r} holds a run with {k}={previous.get(k)!r}; got {identity.get(k)!r} "
                "(resume with the same settings, or use another --out)"
            )
    else:
        run_file.write_text(json.dumps(identity, indent=2, sort_keys=True))

    set_seed(config.seed)
    model, base_path, base_manifest, base_id = load_base(config)
    frozen = load_compat_models(config)
    model = attach_compat_head(config, model, frozen)
    pairs = model_pairs(config, model, base_manifest)
    kind, dataset, described = load_datasets(config)
    loss, loss_name = build_loss(config, model, kind, pairs, frozen)

    head_patterns = {}
    if config.pooling == "mltp" or type(model[1]).__name__ == "MultiLayerTrainablePooling":
        head_patterns[r"(^|\.)model\.1\."] = config.head_learning_rate
    if config.objective == "starbucks-mae":
        head_patterns[r"^(head_transform|head_bias|decoder)"] = config.head_learning_rate
    if config.objective == "bt2":
        head_patterns[r"(^|\.)model\.2\."] = config.head_learning_rate  # the BasisTransform head
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        max_steps=config.steps if config.steps is not None else -1,
        num_train_epochs=config.epochs if config.epochs is not None else 1,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        learning_rate_mapping=head_patterns or None,
        warmup_steps=config.warmup_ratio,
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        logging_steps=max(1, min(50, config.save_steps, (config.steps or 150) // 3)),
        report_to="none",
        disable_tqdm=not show_progress,
        batch_sampler=BatchSamplers.BATCH_SAMPLER if kind in ("scored", "texts") else BatchSamplers.NO_DUPLICATES,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    extra = list(callbacks)
    if config.objective == "starbucks-mae":
        extra.insert(0, _SaveLossHeads(loss))
        if last and (Path(last) / SMAE_HEADS).exists():
            loss.load_state_dict(torch.load(Path(last) / SMAE_HEADS), strict=False)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss, callbacks=extra)
    started_step = 0
    if last:
        started_step = json.loads((Path(last) / "trainer_state.json").read_text()).get("global_step", 0)
    began = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - began
    steps_done = int(trainer.state.global_step)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]

    model.save(str(out))
    depth, full = num_layers(model), int(model.get_embedding_dimension())
    pooling = "mltp" if type(model[1]).__name__ == "MultiLayerTrainablePooling" else "mean"
    grid_points = [(layer, dim) for layer in range(1, depth + 1) for dim in sorted({d for _, d in pairs} | {full})]
    manifest = ModelManifest(
        id=out.resolve().name,
        version="1",
        num_layers=depth,
        full_dim=full,
        pairs=pairs,
        base_model=base_id,
        objective=config.objective,
        pooling=pooling,
        compatible_with=(
            CompatibleWith(frozen["old_model_tag"], int(frozen["old_model"].get_embedding_dimension())) if frozen else None
        ),
        training={
            "objective": config.objective,
            "loss": loss_name,
            "loss_config": loss.get_config_dict() if hasattr(loss, "get_config_dict") else {},
            "base_model": base_id,
            "base_path": str(base_path),
            "data": described,
            "data_kind": kind,
            "seed": config.seed,
            "steps": steps_done,
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "head_learning_rate": config.head_learning_rate if head_patterns else None,
            "warmup_ratio": config.warmup_ratio,
            "resumed_from_step": started_step or None,
            "train_seconds_this_process": round(seconds, 1),
            "steps_per_second": round((steps_done - started_step) / seconds, 3) if seconds > 0 else None,
            "peak_rss_mb": _peak_rss_mb(),
            "torch_threads": torch.get_num_threads(),
            "first_logged_loss": losses[0] if losses else None,
            "last_logged_loss": losses[-1] if losses else None,
            "train_loss": getattr(result, "training_loss", None),
            "versions": _versions(),
        },
    )
    manifest.save(out)
    if config.dev_sts and Path(config.dev_sts).is_file():
        grid = sts_dev_grid(out, Path(config.dev_sts), grid_points)
        manifest.eval["stsb_dev_spearman_x100"] = grid
        manifest.eval["stsb_dev_pairs_mean"] = round(float(np.mean([grid[f"{l},{d}"] for l, d in pairs])), 2)
        manifest.eval["stsb_dev_file"] = str(Path(config.dev_sts).resolve())
    else:
        manifest.eval["stsb_dev_spearman_x100"] = f"skipped: no STS-B dev file at {config.dev_sts!r}"
    manifest.save(out)
    if not config.keep_checkpoints:
        import shutil

        shutil.rmtree(checkpoints, ignore_errors=True)
    return manifest


def _versions() -> dict[str, str]:
    import sentence_transformers
    import torch
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }
