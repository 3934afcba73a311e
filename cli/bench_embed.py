"""``telescope bench embed``: texts/s against plain sentence-transformers, and the early-exit speed-up per layer."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def register(bench_app: typer.Typer) -> None:
    bench_app.command("embed")(embed)


def embed(
    model: Annotated[str, typer.Option(help="'default' or a model folder.")] = "default",
    texts: Annotated[int, typer.Option(help="How many demo glosses to encode.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 64,
    repeats: Annotated[int, typer.Option(help="Runs per measurement (median).")] = 3,
    out: Annotated[Path, typer.Option(help="Directory of the JSON and markdown report.")] = Path("docs/results"),
    name: Annotated[str, typer.Option(help="Report file name (no extension).")] = "bench-embed",
) -> None:
    """Encode the same texts with telescope and with plain sentence-transformers, in one run."""
    from telescope.cli.demo import DEMO_DATA
    from telescope.embedder import load_embedder
    from telescope.eval.bench_embed import bench_embed, markdown
    from telescope.eval.report import command_line, environment, model_info
    from telescope.pipelines.sources import read_table

    if texts < 1:
        raise ValueError(f"--texts: expected at least 1, got {texts}")
    corpus = read_table(DEMO_DATA, "tsv").column("text").to_pylist()[:texts]
    embedder = load_embedder(model)
    start = time.perf_counter()
    results = bench_embed(embedder, corpus, batch_size, repeats)
    env = environment()
    report = {
        "name": name,
        "command": command_line(),
        "model": model_info(embedder),
        "data": f"first {len(corpus)} glosses of {DEMO_DATA.name}",
        "results": results,
        "wall_s": time.perf_counter() - start,
        **env,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(report))
    Console().print(markdown(report))
