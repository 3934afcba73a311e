"""``telescope bench unified``: Unified Embedding vs per-feature and collision-free tables, two-tower MovieLens.

Trains every (method, budget) pair of towers, searches a FAISS-backed collection, and writes
``unified-movielens.{json,md,png}`` to ``--out`` (telescope.eval.movielens has the protocol).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from telescope.eval.datasets import shared_data

DEFAULT_DATA = shared_data("movielens_latest_small")


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{option}: expected numbers separated by commas, got {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise ValueError(f"{option}: expected fractions in (0, 1], got {text!r}")
    return values


def _ints(text: str, option: str) -> tuple[int, ...]:
    parts = [x.strip() for x in text.split(",") if x.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"{option}: expected positive integers separated by commas, got {text!r}")
    return tuple(int(p) for p in parts)


def unified(
    data: Annotated[Path, typer.Option("--data", help="MovieLens latest-small folder (never copied into the repo).")] = DEFAULT_DATA,
    out: Annotated[Path, typer.Option("--out", help="Folder of the reports.")] = Path("docs/results"),
    fractions: Annotated[str, typer.Option("--fractions", help="Budgets as fractions of the collision-free bytes.")] = "0.0625,0.015625,0.00390625",
    chunk_dim: Annotated[int, typer.Option("--chunk-dim", help="d_c of the hashed tables.")] = 16,
    cf_chunk_dims: Annotated[str, typer.Option("--cf-chunk-dims", help="chunk dims of the collision-free curve.")] = "16,4",
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs per run.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Seed of hashes, initialisation and batches.")] = 0,
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated: unified, per_feature, per_feature_uniform, collision_free.")] = "unified,per_feature,per_feature_uniform,collision_free",
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Keep runs of an earlier report in --out with the same data and configuration.")] = True,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Title embedding cache.")] = Path(".cache/embeddings"),
) -> None:
    """Quality (Recall@10/50, nDCG@10) against embedding parameter bytes: multiplexed, per-feature, collision-free."""
    from telescope.eval.movielens import run_benchmark

    command = "telescope bench unified " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    run_benchmark(
        data, out, fractions=_floats(fractions, "--fractions"), chunk_dim=chunk_dim,
        cf_chunk_dims=_ints(cf_chunk_dims, "--cf-chunk-dims"), epochs=epochs, seed=seed, cache_dir=cache_dir,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()), resume=resume, command=command.strip(), log=typer.echo,
    )
    typer.echo(f"wrote {out}/unified-movielens.json, .md, .png")


def register(app: typer.Typer) -> None:
    app.command("unified")(unified)
