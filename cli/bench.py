"""``telescope bench ...``: speed benchmarks. Each prints its figures and the command, and writes JSON."""

from __future__ import annotations

import typer

bench_app = typer.Typer(help="Speed benchmarks (print figures, write JSON reports).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    from telescope.cli import bench_unified

    bench_unified.register(bench_app)  # telescope bench unified (quality vs parameter bytes, MovieLens)
    app.add_typer(bench_app, name="bench")
