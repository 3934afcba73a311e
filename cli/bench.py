"""``telescope bench ...``: speed benchmarks. Each prints its figures and the command, and writes JSON."""

from __future__ import annotations

import typer

bench_app = typer.Typer(help="Speed benchmarks (print figures, write JSON reports).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    from telescope.cli import bench_embed

    bench_embed.register(bench_app)  # telescope bench embed (texts/s vs sentence-transformers, early exit)
    from telescope.cli import bench_unified

    bench_unified.register(bench_app)  # telescope bench unified (quality vs parameter bytes, MovieLens)
    from telescope.cli import bench_serve

    bench_serve.register(bench_app)  # telescope bench serve (gRPC QPS and latency)
    from telescope.cli import bench_index

    bench_index.register(bench_app)  # telescope bench index (exact / HNSW / plans at 200k+ and 1M vectors)
    __import__("telescope.cli.bench_pipeline", fromlist=["register"]).register(bench_app)  # bench pipeline: own module
    app.add_typer(bench_app, name="bench")
