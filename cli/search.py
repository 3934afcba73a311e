"""``telescope search``: query a collection by text."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    app.command("search")(search)


def search(
    path: Annotated[Path, typer.Argument(help="The collection.")],
    query: Annotated[list[str], typer.Argument(help="Query text(s).")],
    k: Annotated[int, typer.Option("--k", "-k", help="Hits per query.")] = 10,
    plan: Annotated[Optional[str], typer.Option(help="Search plan, e.g. '64:400,384:10' (default: the collection's).")] = None,
    remote: Annotated[Optional[str], typer.Option(help="HOST:PORT of a telescope server; PATH is then a collection name there.")] = None,
    token: Annotated[Optional[str], typer.Option(help="Bearer token for --remote.", envvar="TELESCOPE_TOKEN")] = None,
    tls_ca: Annotated[Optional[Path], typer.Option(help="CA certificate of a --remote server that serves TLS.", envvar="TELESCOPE_TLS_CA")] = None,
) -> None:
    """Embed the query with the collection's model and search coarse-to-fine (--remote: on a server)."""
    from telescope.cli.models import collection_embedder
    from telescope.index import Collection
    from telescope.pipelines.ingest import text_dim, text_layer

    if remote is not None:
        from telescope.cli.remote import remote_search

        hits, timing = remote_search(remote, token, tls_ca, str(path), query, k, plan)
    else:
        c = Collection.open(path, read_only=True)
        embedder = collection_embedder(c)
        start = time.perf_counter()
        vectors = embedder.encode(query, layer=text_layer(c, embedder), dim=text_dim(c, embedder))
        embedded = time.perf_counter()
        hits = c.search(vectors, k=k, plan=plan)
        done = time.perf_counter()
        timing = f"embed {1000 * (embedded - start):.1f} ms, search {1000 * (done - embedded):.1f} ms, plan {plan or c.default_plan}"
    console = Console()
    for text, row in zip(query, hits):
        table = Table(title=text, title_justify="left")
        for column in ("#", "score", "id", "model version", "payload"):
            table.add_column(column)
        for i, hit in enumerate(row, 1):
            table.add_row(str(i), f"{hit.score:.4f}", hit.id, hit.model_version, _short(hit.payload))
        console.print(table)
    console.print(timing)


def _short(payload: dict, width: int = 100) -> str:
    text = ", ".join(f"{k}={v}" for k, v in payload.items())
    return text if len(text) <= width else text[: width - 1] + "…"
