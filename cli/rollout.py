"""``telescope rollout COLLECTION --model NEW``: serve a backward-compatible model at once, backfill lazily.

Thin: telescope.pipelines.rollout holds the states and checks, telescope.pipelines.backfill the backfill.
Rerunning the command resumes a cut backfill (after it completed: says so, exit 0); ``--abort`` rolls back (and
backfills with the old model; rerun it likewise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    app.command("rollout")(rollout)


def rollout(
    path: Annotated[Path, typer.Argument(help="The collection.")],
    model: Annotated[Optional[str], typer.Option(help="The new model: a folder whose manifest is compatible_with the collection's model.")] = None,
    abort: Annotated[bool, typer.Option("--abort", help="Roll back to the old model (re-embeds what the new one wrote).")] = False,
    backfill: Annotated[bool, typer.Option(help="Re-embed the other version's points now (--no-backfill: switch only; rerun to backfill).")] = True,
    rate: Annotated[Optional[float], typer.Option(help="Backfill at most this many points per second (default: no limit).")] = None,
    batch_size: Annotated[int, typer.Option(help="Points re-embedded per batch (each batch is durable when written).")] = 64,
    text_field: Annotated[Optional[str], typer.Option(help="Payload field holding each point's text (default: the one the rollout records, else 'text'); recorded for later backfills, the server's too.")] = None,
) -> None:
    """Roll out a new model on a collection: queries use it at once, stored vectors are backfilled lazily."""
    from telescope.embedder import load_embedder
    from telescope.index import Collection
    from telescope.pipelines.backfill import check_options
    from telescope.pipelines.rollout import ACTIVE, abort_rollout, rollout_status, run_backfill, start_rollout
    from telescope.embedder.model import model_location

    console = Console(stderr=True)
    if abort == (model is not None):
        raise ValueError(f"--model/--abort: expected exactly one of them, got model={model!r} abort={abort}")
    check_options(batch_size, rate)  # before the collection changes: a bad option must not leave it switched
    with Collection.open(path) as collection:
        if abort:
            before = rollout_status(collection)
            status = abort_rollout(collection, text_field)
            if before is not None and before.state == "aborted":
                console.print(f"rollout {status.from_version} -> {status.to_version}: already aborted, nothing to do")
            embedder = load_embedder(status.from_model) if status.state in ACTIVE else None
        else:
            embedder = load_embedder(model)
            status = start_rollout(collection, embedder, model_location(model), text_field)
            if status.state == "complete":
                console.print(f"rollout {status.from_version} -> {status.to_version}: already complete, nothing to do")
        console.print(f"rollout {status.from_version} -> {status.to_version}: {status.state}, "
                      f"{status.backfilled}/{status.total} points at {status.target_version}")
        if backfill and status.state in ACTIVE and embedder is not None:
            report = run_backfill(collection, embedder, batch_size=batch_size, rate=rate)
            console.print(f"backfill: {report.written} re-embedded, {report.skipped} skipped (changed meanwhile), "
                          f"{report.remaining} left, {report.seconds:.1f} s")
        Console().print_json(json.dumps(rollout_status(collection).to_dict()))
