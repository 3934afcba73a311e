"""``telescope embed``: texts to unit vectors at a (layer, dim) grid point."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)


def embed(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to embed (or use --input).")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="A file with one text per line.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write vectors to a .npy file (.npy is added when missing; else JSON to stdout).")] = None,
    model: Annotated[str, typer.Option(help="'default' (packaged all-MiniLM-L6-v2) or a model folder.")] = "default",
    layer: Annotated[Optional[int], typer.Option(help="Transformer blocks to run (default: all).")] = None,
    dim: Annotated[Optional[int], typer.Option(help="Prefix length, re-normalised (default: full).")] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 64,
) -> None:
    """Embed texts at (layer, dim): unit vectors, float32."""
    from telescope.embedder import load_embedder

    if input is not None:
        if not input.is_file():
            raise FileNotFoundError(f"--input: no such file {str(input)!r}")
        # only a newline ends a line (not str.splitlines' \f, \x85, \u2028 ...): row i of the output is line i
        items = input.read_text(encoding="utf-8").split("\n")
        if items[-1] == "":  # the newline that ends the last line starts no blank line
            items.pop()
        blank = [number for number, line in enumerate(items, 1) if not line.strip()]
        if blank:
            where = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
            count = f"{len(blank)} blank lines in all: {where}" if len(blank) > 1 else "the only blank line"
            raise ValueError(
                f"--input: line {blank[0]}: expected a text on every line (row i of the output is line i), got a "
                f"blank line ({count}); remove the blank lines or put a text on each"
            )
    else:
        items = list(texts or [])
    if not items:
        raise ValueError("texts: expected at least one text (arguments or --input), got none")
    embedder = load_embedder(model)
    start = time.perf_counter()
    vectors = embedder.encode(items, layer=layer, dim=dim, batch_size=batch_size, show_progress=len(items) > 1000)
    seconds = time.perf_counter() - start
    err = Console(stderr=True)
    err.print(
        f"{len(items)} texts -> {vectors.shape} in {seconds:.2f} s ({len(items) / seconds:,.0f} texts/s); "
        f"model {embedder.manifest.tag}, truncated {embedder.truncated_texts}"
    )
    if output is not None:
        path = output if str(output).endswith(".npy") else Path(f"{output}.npy")  # the file np.save writes
        np.save(path, vectors)
        err.print(f"wrote {path}")
    else:
        json.dump([[round(float(x), 6) for x in v] for v in vectors], sys.stdout)
        sys.stdout.write("\n")
