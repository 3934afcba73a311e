"""The model manifest, ``telescope.json``, written beside a sentence-transformers folder.

It says what a model is to the rest of telescope: its id and version (every stored vector records
``id:version``), the base it came from, the objective it was trained with, the (layer, dim) grid points it was
trained for, its full dim and depth, which older model its prefix is comparable with (BT^2 rollouts), and the
figures measured when it was made. A folder without the file is described from its own config.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from numbers import Integral
from pathlib import Path

MANIFEST_FILE = "telescope.json"


@dataclass(frozen=True)
class CompatibleWith:
    """An older model whose vectors this model's first ``prefix_dim`` coordinates can be compared with."""

    model_id: str
    prefix_dim: int


@dataclass
class ModelManifest:
    id: str
    version: str
    num_layers: int
    full_dim: int
    pairs: list[tuple[int, int]]
    base_model: str | None = None
    objective: str = "pretrained"
    pooling: str = "mean"
    compatible_with: CompatibleWith | None = None
    eval: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("num_layers", "full_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if not isinstance(self.pairs, (list, tuple)):
            raise ValueError(f"pairs: expected a list of (layer, dim) pairs, got {self.pairs!r}")
        for pair in self.pairs:
            if (
                not isinstance(pair, (list, tuple))
                or len(pair) != 2
                or not all(isinstance(v, Integral) and not isinstance(v, bool) for v in pair)
            ):
                raise ValueError(f"pairs: expected (layer, dim) pairs of integers, got {pair!r}")
        self.pairs = [(int(layer), int(dim)) for layer, dim in self.pairs]
        for layer, dim in self.pairs:
            if not (1 <= layer <= self.num_layers and 1 <= dim <= self.full_dim):
                raise ValueError(
                    f"pairs: expected (layer, dim) with 1 <= layer <= {self.num_layers} and "
                    f"1 <= dim <= {self.full_dim}, got ({layer}, {dim})"
                )
        if isinstance(self.compatible_with, dict):
            self.compatible_with = CompatibleWith(**self.compatible_with)

    @property
    def tag(self) -> str:
        """The model version recorded with every vector it writes: ``id:version``."""
        return f"{self.id}:{self.version}"

    def to_json(self) -> str:
        data = asdict(self)
        data["pairs"] = [list(p) for p in self.pairs]
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelManifest":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        return cls(**data)

    def save(self, folder: str | Path) -> Path:
        """Write ``telescope.json`` atomically (temp file, fsync, rename)."""
        path = Path(folder) / MANIFEST_FILE
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w") as f:
            f.write(self.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "ModelManifest | None":
        path = Path(folder) / MANIFEST_FILE
        if not path.exists():
            return None
        try:
            return cls.from_json(path.read_text())
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: not a valid telescope model manifest: {e}") from e


def nested_pairs(num_layers: int, full_dim: int) -> list[tuple[int, int]]:
    """The default grid: layer l paired with a dim doubling from 16 up to the full dim at the last layer.

    For all-MiniLM-L6-v2 (6 layers, 384 dims) this gives (1,16) (2,32) (3,64) (4,128) (5,256) (6,384),
    the pairs of METHODS.md.
    """
    pairs = []
    for layer in range(1, num_layers + 1):
        dim = min(full_dim, 16 * 2 ** (layer - 1))
        pairs.append((layer, full_dim if layer == num_layers else dim))
    return pairs
