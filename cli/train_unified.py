"""``telescope train --objective unified``: the fused (text + categorical fields) model's branch of the command.

``run_unified`` is what the ``train`` command calls when ``--objective unified``: it reads the pairs file with
telescope.pipelines.sources (JSONL, CSV/TSV, Parquet: columns ``anchor``, ``positive`` and the fields'
``anchor_<column>`` / ``positive_<column>``), trains with telescope.embedder.unified_training.train_unified and
prints where the model went. A field is written ``name[:chunks=N][:multi][:sep=S][:column=C]``, e.g.
``genres:chunks=2:multi:sep=|``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from telescope.embedder.unified import FeatureSpec

KINDS = ("unified", "per_feature", "collision_free")


def parse_field(text: str) -> FeatureSpec:
    """A FeatureSpec from its written form ``name[:chunks=N][:multi][:sep=S][:column=C]``."""
    name, *options = text.split(":")
    kwargs: dict = {"name": name.strip()}
    for option in options:
        key, eq, value = option.partition("=")
        key = key.strip()
        if key == "multi" and not eq:
            kwargs["multi"] = True
        elif key == "chunks" and eq and value.strip().isdigit():
            kwargs["chunks"] = int(value)
        elif key in ("sep", "column") and eq and value:
            kwargs[key] = value
        else:
            raise ValueError(f"field: expected name[:chunks=N][:multi][:sep=S][:column=C], got {text!r} (bad part {option!r})")
    if "sep" in kwargs:
        kwargs["multi"] = True
    return FeatureSpec(**kwargs)


def run_unified(
    data: Path,
    out: Path,
    fields: Sequence[str],
    *,
    model: str = "default",
    kind: str = "unified",
    rows: int = 4096,
    chunk_dim: int = 16,
    num_tables: int = 1,
    tail_dim: int = 64,
    epochs: int = 3,
    batch_size: int = 256,
    lr: float = 1e-2,
    seed: int = 0,
    echo=print,
) -> Path:
    """Train and save a fused model; returns its folder."""
    from telescope.embedder.unified_training import train_unified
    from telescope.pipelines.sources import read_table

    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if not fields:
        raise ValueError("field: objective 'unified' needs at least one --field, got none")
    specs = [parse_field(f) for f in fields]
    model_obj = train_unified(
        read_table(data), out, specs, text_model=model, kind=kind, rows=rows, chunk_dim=chunk_dim,
        num_tables=num_tables, tail_dim=tail_dim, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        model_id=Path(out).name or "fused", source=str(data), log=echo,
    )
    echo(f"fused model {model_obj.tag}: {model_obj.dim} dims (text {model_obj.tower.text_dim} + tail "
         f"{model_obj.tower.tail_dim}), tables {model_obj.tower.categorical.parameter_bytes:,} bytes -> {out}")
    return Path(out)
