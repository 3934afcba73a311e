"""``telescope index create|add|info``: collections on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

index_app = typer.Typer(help="Create collections, add documents, show what a collection holds.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
    __import__("telescope.cli.index_build", fromlist=["register"]).register(index_app)  # index build: own module


@index_app.command("create")
def create(
    path: Annotated[Path, typer.Argument(help="Directory of the new collection.")],
    model: Annotated[str, typer.Option(help="Model whose vectors it will hold: its dim and query model.")] = "default",
    dim: Annotated[Optional[int], typer.Option(help="Vector dim (default: the model's full dim).")] = None,
    layer: Annotated[Optional[int], typer.Option(help="Layer its vectors are taken after (default: the last); texts are embedded there.")] = None,
    plan: Annotated[Optional[str], typer.Option(help="Default search plan, e.g. '64:400,384:10' (default: exact).")] = None,
    stage_one: Annotated[str, typer.Option(help="FAISS factory string of stage one: Flat, HNSW32, IVF1024,Flat.")] = "Flat",
    stage_one_params: Annotated[str, typer.Option(help="FAISS parameters of stage one, e.g. 'efSearch=128'.")] = "",
    vector_dtype: Annotated[str, typer.Option(help="float32, or float16: the full vectors at half the memory and disk.")] = "float32",
) -> None:
    """Create an empty collection."""
    from telescope.cli.models import collection_model_properties
    from telescope.index import Collection
    from telescope.pipelines.ingest import check_collection_dim

    props, full_dim = collection_model_properties(model, layer)
    check_collection_dim(dim, full_dim, "--dim")
    with Collection.create(
        path, dim or full_dim, default_plan=plan, stage_one=stage_one, stage_one_params=stage_one_params, properties=props,
        vector_dtype=vector_dtype,
    ) as c:
        Console().print_json(json.dumps(c.info()))


@index_app.command("add")
def add(
    path: Annotated[Path, typer.Argument(help="The collection.")],
    source: Annotated[Path, typer.Argument(help="A .jsonl, .csv, .tsv (with header), .parquet or .txt file (one document per non-blank line, id line-N: N the line's index from 0).")],
    id_column: Annotated[str, typer.Option(help="Column holding the id.")] = "id",
    text_column: Annotated[str, typer.Option(help="Column holding the text to embed.")] = "text",
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass (per request with --remote).")] = 64,
    remote: Annotated[Optional[str], typer.Option(help="HOST:PORT of a telescope server; PATH is then a collection name there.")] = None,
    token: Annotated[Optional[str], typer.Option(help="Bearer token for --remote.", envvar="TELESCOPE_TOKEN")] = None,
    tls_ca: Annotated[Optional[Path], typer.Option(help="CA certificate of a --remote server that serves TLS.", envvar="TELESCOPE_TLS_CA")] = None,
) -> None:
    """Embed a file of documents with the collection's model and upsert them (--remote: the server embeds)."""
    from telescope.cli.models import collection_embedder
    from telescope.index import Collection
    from telescope.pipelines import ingest
    from telescope.pipelines.sources import read_table, texts_from

    ids, texts, payloads = texts_from(read_table(source), id_column, text_column)
    if remote is not None:
        from telescope.cli.remote import remote_add

        Console().print(remote_add(remote, token, tls_ca, str(path), ids, texts, payloads, batch_size))
        return
    with Collection.open(path) as c:
        embedder = collection_embedder(c)
        report = ingest(c, embedder, ids, texts, payloads, batch_size=batch_size)
        c.commit()
        Console().print(f"added {report.points} points ({report.truncated} truncated texts); {len(c)} in collection")


@index_app.command("info")
def info(path: Annotated[Path, typer.Argument(help="The collection.")]) -> None:
    """Show a collection's size, plan, stage one and model versions."""
    from telescope.index import Collection

    c = Collection.open(path, read_only=True)
    Console().print_json(json.dumps(c.info()))
