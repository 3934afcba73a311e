"""Fusing categorical fields with a text embedding: the text vector first, a categorical tail after it.

A fused vector of text t (unit, text_dim) and fields x (a CategoricalEmbedding, Unified Embedding of Coleman et
al., NeurIPS 2023: E_f(v) = concat_j W_{j mod T}[h_{f,j}(v) mod B]) is

    fused = [ cos(a) * t ,  sin(a) * normalize(P(E(x))) ]        dim = text_dim + tail_dim, unit length

The choice, and why: the text dims come first and are the text model's own vector, untouched, so every text
prefix of a fused vector, re-normalised, is exactly the text model's prefix vector. Coarse-to-fine plans keep
working on the text dims (a stage on 64 dims searches text only), text-only queries (tail zero) score by text
alone, and the collection can hold fused and plain-text vectors of the same text model on the shared prefix.
The tail comes last and is re-ranked at full dim: score = cos(a_q)cos(a_d) <t_q, t_d> + sin(a_q)sin(a_d) <tail_q,
tail_d>. P is a bias-free two-layer MLP, so absent fields (all missing) give a zero tail, and the fused vector is then
exactly the text vector (re-normalised to unit length; at a = pi/2 it is zero). The angle a is fixed (pi/4: text and fields
weigh the same) or learned per tower, as a = pi/2 * sigmoid(w) so that training keeps it in [0, pi/2] (cos(a) >= 0: the text
part never changes sign).

A tower without text (the user tower of two-tower retrieval) predicts its text part from its fields
(``head_from_fields``): a query into the text space of the items' titles.

``FusedModel`` is the servable form: a frozen telescope text ``Embedder`` plus one ``FusedTower``, saved as a
folder (``fused.json``, weights in safetensors), encoding texts and the metadata payloads the pipelines read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from telescope.embedder.unified import Bags, CategoricalEmbedding, from_config

FUSED_FILE = "fused.json"
TOWER_FILE = "tower.safetensors"
OBJECTIVE = "unified"
LEARNED_MIX = "parametrizations.mix.original"  # the state key of a learned angle's free parameter w


class QuarterTurn(nn.Module):
    """The learned mix angle a = pi/2 * sigmoid(w): always in [0, pi/2], whatever value w takes."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return (math.pi / 2) * torch.sigmoid(w)

    def right_inverse(self, angle: torch.Tensor) -> torch.Tensor:
        return torch.logit(angle / (math.pi / 2), eps=1e-6)


class FusedTower(nn.Module):
    """One tower: text (given, or predicted from the fields) + categorical tail -> a unit fused vector.

    Arguments: ``categorical`` (shared between towers when both use it), ``fields`` (its features this tower
    reads, in order), ``text_dim``, ``tail_dim``, ``head_from_fields`` (no text input: predict it),
    ``hidden`` (MLP width), ``mix`` (angle a in radians, default pi/4) and ``learn_mix``.
    """

    def __init__(
        self,
        categorical: CategoricalEmbedding,
        fields: Sequence[str],
        text_dim: int,
        tail_dim: int,
        *,
        head_from_fields: bool = False,
        hidden: int = 128,
        mix: float = math.pi / 4,
        learn_mix: bool = False,
    ):
        super().__init__()
        fields = list(fields)
        if not fields:
            raise ValueError("fields: expected at least one categorical field, got none")
        for name in fields:
            categorical.spec(name)  # LookupError naming the field
        for arg, value in (("text_dim", text_dim), ("tail_dim", tail_dim), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg}: expected an integer >= 1, got {value!r}")
        if not 0.0 <= float(mix) <= math.pi / 2:
            raise ValueError(f"mix: expected an angle in [0, pi/2], got {mix!r}")
        self.categorical = categorical
        self.fields = fields
        self.text_dim, self.tail_dim, self.hidden = text_dim, tail_dim, hidden
        self.head_from_fields = bool(head_from_fields)
        self.learn_mix = bool(learn_mix)
        width = categorical.output_dim(fields)
        self.tail = nn.Sequential(nn.Linear(width, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, tail_dim, bias=False))
        self.head = (
            nn.Sequential(nn.Linear(width, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, text_dim, bias=False))
            if self.head_from_fields
            else None
        )
        angle = torch.tensor(float(mix))
        self.mix = nn.Parameter(angle) if self.learn_mix else nn.Buffer(angle)
        if self.learn_mix:
            nn.utils.parametrize.register_parametrization(self, "mix", QuarterTurn())

    @property
    def dim(self) -> int:
        return self.text_dim + self.tail_dim

    def forward(self, text: torch.Tensor | None, bags: Mapping[str, Bags]) -> torch.Tensor:
        x = self.categorical.embed_bags(bags, self.fields)
        if self.head is not None:
            head = F.normalize(self.head(x), dim=-1)
        else:
            if text is None or text.shape != (x.shape[0], self.text_dim):
                got = None if text is None else tuple(text.shape)
                raise ValueError(f"text: expected text vectors of shape ({x.shape[0]}, {self.text_dim}), got {got}")
            head = F.normalize(text.float(), dim=-1)
        tail = F.normalize(self.tail(x), dim=-1)  # a zero tail (no fields present) stays zero
        # clamp: in float32 cos(pi/2) is -4e-8, which would turn a fields-free vector into minus its text vector
        fused = torch.cat([torch.cos(self.mix).clamp(min=0.0) * head, torch.sin(self.mix) * tail], dim=-1)
        return F.normalize(fused, dim=-1)  # a no-op unless the tail is zero: then the vector is the text vector

    def config(self) -> dict:
        return {
            "fields": self.fields,
            "text_dim": self.text_dim,
            "tail_dim": self.tail_dim,
            "head_from_fields": self.head_from_fields,
            "hidden": self.hidden,
            "mix": min(float(self.mix.detach()), math.pi / 2),  # float32 pi/2 is above the float64 bound
            "learn_mix": self.learn_mix,
        }


def lookup_payloads(categorical: CategoricalEmbedding, fields: Sequence[str], payloads: Sequence[Mapping]) -> dict[str, Bags]:
    """Each field's bags, read from the payload (metadata) column its FeatureSpec names; absent = missing."""
    out = {}
    for name in fields:
        column = categorical.spec(name).source
        out[name] = categorical.lookup(name, [p.get(column) if p is not None else None for p in payloads])
    return out


class FusedModel:
    """A frozen text embedder + a FusedTower: ``encode(texts, payloads)`` gives unit fused vectors."""

    def __init__(self, embedder, tower: FusedTower, model_id: str = "fused", version: str = "1", training: dict | None = None):
        if tower.head_from_fields:
            raise ValueError("tower: a FusedModel embeds texts; expected head_from_fields=False")
        if tower.text_dim != embedder.full_dim:
            raise ValueError(f"tower.text_dim: expected the text model's dim {embedder.full_dim}, got {tower.text_dim}")
        self.embedder = embedder
        self.tower = tower.eval()
        self.id, self.version = model_id, version
        self.training = dict(training or {})

    @property
    def dim(self) -> int:
        return self.tower.dim

    @property
    def tag(self) -> str:
        """The model version collections record with each fused vector."""
        return f"{self.id}:{self.version}"

    def encode(self, texts: Sequence[str], payloads: Sequence[Mapping] | None = None, batch_size: int = 256) -> np.ndarray:
        """(n, text_dim + tail_dim) float32 unit vectors; ``payloads`` holds the fields (None: text only)."""
        texts = list(texts)
        if payloads is not None and len(payloads) != len(texts):
            raise ValueError(f"payloads: expected {len(texts)} (one per text), got {len(payloads)}")
        payloads = list(payloads) if payloads is not None else [{}] * len(texts)
        text = torch.from_numpy(self.embedder.encode(texts, batch_size=batch_size))
        bags = lookup_payloads(self.tower.categorical, self.tower.fields, payloads)
        with torch.inference_mode():
            return self.tower(text, bags).numpy().astype(np.float32)

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tower.categorical.save(folder)
        state = {k: v.detach().contiguous() for k, v in self.tower.state_dict().items() if not k.startswith("categorical.")}
        save_file(state, str(folder / TOWER_FILE))
        from telescope.embedder.model import DEFAULT_MODEL, default_model_path

        path = self.embedder.path
        text_model = DEFAULT_MODEL if path is None or Path(path) == default_model_path() else str(path)
        meta = {
            "id": self.id,
            "version": self.version,
            "objective": OBJECTIVE,
            "text_model": text_model,
            "text_model_hash": self.embedder.model_hash if self.embedder.path is not None else None,
            "tower": self.tower.config(),
            "training": self.training,
        }
        (folder / FUSED_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return folder


def load_fused(folder: str | Path, embedder=None) -> FusedModel:
    """A FusedModel written by ``save``; the text model is loaded from its recorded path unless given."""
    from safetensors.torch import load_file

    from telescope.embedder.model import load_embedder
    from telescope.embedder.unified import load_categorical

    folder = Path(folder)
    if not (folder / FUSED_FILE).exists():
        raise FileNotFoundError(f"fused model: no {FUSED_FILE} in {str(folder)!r}")
    meta = json.loads((folder / FUSED_FILE).read_text())
    embedder = embedder or load_embedder(meta["text_model"])
    if meta.get("text_model_hash") and embedder.path is not None and embedder.model_hash != meta["text_model_hash"]:
        raise ValueError(
            f"text model: expected weights with hash {meta['text_model_hash']}, got {embedder.model_hash} "
            f"({embedder.path}); the fused tail was trained against other text vectors"
        )
    categorical = load_categorical(folder)
    tower = FusedTower(categorical, **{k: v for k, v in meta["tower"].items()})
    state = load_file(str(folder / TOWER_FILE))
    if tower.learn_mix and "mix" in state:  # saved before the learned angle was bounded: the angle itself
        state[LEARNED_MIX] = tower.parametrizations.mix[0].right_inverse(state.pop("mix"))
    state.update({f"categorical.{k}": v for k, v in categorical.state_dict().items()})
    tower.load_state_dict(state)
    return FusedModel(embedder, tower, meta["id"], meta["version"], meta.get("training"))


__all__ = ["FusedModel", "FusedTower", "from_config", "load_fused", "lookup_payloads"]
