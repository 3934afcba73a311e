"""``telescope bench embed``: texts/s per backend against plain sentence-transformers, the STS-B dev quality each
backend keeps, and the early-exit speed-up per layer."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from telescope.eval.datasets import shared_data

STS_DEV = shared_data("stsb", "sts-dev.csv")


def register(bench_app: typer.Typer) -> None:
    bench_app.command("embed")(embed)


def embed(
    model: Annotated[str, typer.Option(help="'default' or a model folder.")] = "default",
    texts: Annotated[int, typer.Option(help="How many demo glosses to encode.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 64,
    repeats: Annotated[int, typer.Option(help="Interleaved rounds per encoder (median).")] = 3,
    backends: Annotated[str, typer.Option(help="Comma-separated backends to compare; the first also runs the "
                                                "early-exit table.")] = "onnx,onnx-int8,torch",
    sts_dev: Annotated[Optional[Path], typer.Option(help="STS-B dev csv for the quality of each backend "
                                                         "(default: ../shared/data/stsb/sts-dev.csv if present).")] = None,
    out: Annotated[Path, typer.Option(help="Directory of the JSON and markdown report.")] = Path("docs/results"),
    name: Annotated[str, typer.Option(help="Report file name (no extension).")] = "bench-embed",
) -> None:
    """Encode the same texts with telescope (each backend) and with plain sentence-transformers, in one run."""
    from telescope.cli.demo import DEMO_DATA
    from telescope.embedder import load_embedder
    from telescope.eval.bench_embed import bench_embed, markdown
    from telescope.eval.datasets import read_sts
    from telescope.eval.report import command_line, environment, model_info
    from telescope.pipelines.sources import read_table

    if texts < 1:
        raise ValueError(f"--texts: expected at least 1, got {texts}")
    names = [b.strip() for b in backends.split(",") if b.strip()]
    if not names:
        raise ValueError(f"--backends: expected at least one backend, got {backends!r}")
    corpus = read_table(DEMO_DATA, "tsv").column("text").to_pylist()[:texts]
    embedders = {b: load_embedder(model, backend=b) for b in names}
    sts_path = sts_dev or (STS_DEV if STS_DEV.is_file() else None)
    load_before = round(os.getloadavg()[0], 2)
    start = time.perf_counter()
    results = bench_embed(embedders, corpus, batch_size, repeats, read_sts(sts_path) if sts_path else None)
    first = next(iter(embedders.values()))
    report = {
        "name": name,
        "command": command_line(),
        "model": model_info(first),
        "data": f"first {len(corpus)} glosses of {DEMO_DATA.name}",
        "sts_dev": str(sts_path) if sts_path else None,
        "load_before": load_before,
        "results": results,
        "wall_s": time.perf_counter() - start,
        **environment(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(report))
    Console().print(markdown(report))
