"""``telescope index build``: index a whole source (files or SQL) into a collection, resumable and incremental.

Thin: it checks the source (``telescope.pipelines.checks``) before it creates or opens the collection, picks an
encoder (local, or Ray), runs ``telescope.pipelines.build.run_build`` and prints its summary.
"""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class Policy(str, Enum):
    skip = "skip"
    fail = "fail"


def register(index_app: typer.Typer) -> None:
    index_app.command("build")(build)


def build(
    collection: Annotated[Path, typer.Argument(help="The collection (created when missing).")],
    source: Annotated[str, typer.Option(help="A file or a glob ('data/*.parquet'); a .duckdb file for --format duckdb.")],
    format: Annotated[Optional[str], typer.Option(help="parquet, jsonl, csv, tsv or duckdb (default: from the extension).")] = None,
    sql: Annotated[Optional[str], typer.Option(help="SQL over the view 'src' (or the database's tables), e.g. \"SELECT id, title || ' ' || text AS text, lang FROM src\".")] = None,
    id_column: Annotated[str, typer.Option(help="Column holding the document id.")] = "id",
    text_column: Annotated[str, typer.Option(help="Column holding the text to embed.")] = "text",
    metadata_columns: Annotated[Optional[str], typer.Option(help="Comma-separated columns kept in the payload besides the text (default: every column).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model: 'default' or a folder (default: the collection's, or 'default' for a new one).")] = None,
    layer: Annotated[Optional[int], typer.Option(help="Embed after this many layers (default: all).")] = None,
    dim: Annotated[Optional[int], typer.Option(help="Vector dim (default: the collection's, or the model's full dim).")] = None,
    vector_dtype: Annotated[str, typer.Option(help="A new collection's vectors: float32, or float16 (half the memory and disk).")] = "float32",
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 64,
    upsert_rows: Annotated[int, typer.Option(help="Points per durable upsert (one WAL fsync each).")] = 512,
    sort_window: Annotated[int, typer.Option(help="Texts sorted by length together to cut padding.")] = 8192,
    chunk_tokens: Annotated[int, typer.Option(help="Split documents into chunks of this many tokens (0: no chunking).")] = 0,
    chunk_overlap: Annotated[int, typer.Option(help="Tokens shared by consecutive chunks.")] = 0,
    parquet_out: Annotated[Optional[Path], typer.Option(help="Also write the embeddings as Parquet shards into this folder.")] = None,
    shard_rows: Annotated[int, typer.Option(help="Rows per Parquet shard.")] = 100_000,
    checkpoint_seconds: Annotated[float, typer.Option(help="Record finished documents (the resume point) this often; 0: after every batch.")] = 5.0,
    threads: Annotated[Optional[int], typer.Option(help="torch threads of the local engine (default: torch's choice; 1 is fastest on a busy machine).")] = None,
    engine: Annotated[Engine, typer.Option(help="local: this process; ray: a Ray Data actor pool.")] = Engine.local,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster to join ('auto', 'ray://head:10001'); default: a local Ray.")] = None,
    ray_actors: Annotated[int, typer.Option(help="Embedding actors in the pool.")] = 2,
    ray_cpus_per_actor: Annotated[float, typer.Option(help="CPUs per embedding actor.")] = 1.0,
    ray_group_points: Annotated[int, typer.Option(help="Points put in Ray's object store and embedded at a time (each group starts its actor pool).")] = 262_144,
    on_unreadable: Annotated[Policy, typer.Option(help="A file that cannot be read.")] = Policy.fail,
    on_invalid: Annotated[Policy, typer.Option(help="Rows that are not valid UTF-8 or not well formed.")] = Policy.fail,
    on_empty: Annotated[Policy, typer.Option(help="NULL or blank id or text.")] = Policy.skip,
    on_duplicate: Annotated[Policy, typer.Option(help="Ids that occur more than once (skip keeps the first).")] = Policy.fail,
    delete_missing: Annotated[bool, typer.Option(help="Remove documents this job indexed before that the source no longer has.")] = True,
    job: Annotated[str, typer.Option(help="Job name: its state (hashes for resume and incremental runs) is kept per name.")] = "build",
    limit: Annotated[Optional[int], typer.Option(help="Read only the first N rows (never deletes).")] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
    report: Annotated[Optional[Path], typer.Option(help="Also write the summary as JSON here.")] = None,
) -> None:
    """Embed a source into a collection; rerun the same command to resume or to index only what changed."""
    from telescope.cli.models import collection_model_properties
    from telescope.embedder import load_embedder
    from telescope.embedder.model import model_location
    from telescope.index import Collection
    from telescope.pipelines.build import BuildOptions, check_options, run_build
    from telescope.pipelines.checks import Policies, check_source
    from telescope.pipelines.ingest import LocalEncoder, text_dim, text_layer
    from telescope.pipelines.sources import SourceSpec

    metadata = None if metadata_columns is None else tuple(c.strip() for c in metadata_columns.split(",") if c.strip())
    spec = SourceSpec(source, format, sql, id_column, text_column, metadata, limit)
    policies = Policies(on_unreadable.value, on_invalid.value, on_empty.value, on_duplicate.value)
    options = BuildOptions(
        layer=layer, dim=dim, batch_size=batch_size, upsert_rows=upsert_rows, window=sort_window, chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap, parquet_dir=parquet_out, shard_rows=shard_rows, checkpoint_seconds=checkpoint_seconds, job=job,
        delete_missing=delete_missing, show_progress=progress,
    )
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads: expected an integer >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    check, con = check_source(spec, policies)  # before anything is created or written

    embedder = None
    if (collection / "manifest.json").exists():
        c = Collection.open(collection)
        recorded = c.properties.get("model")
        if recorded is None:
            c.close()
            raise ValueError(f"collection {str(collection)!r}: expected a 'model' property (create it with --model)")
        if model is not None and model_location(model) != recorded:
            c.close()
            raise ValueError(f"--model: the collection was built with {recorded!r}, got {model!r}")
        model_ref = recorded
    else:
        model_ref = model_location(model or "default")
        embedder = load_embedder(model_ref)
        check_options(embedder, dataclasses.replace(options, dim=dim or embedder.full_dim))  # a refusal creates nothing
        props, full_dim = collection_model_properties(model_ref, options.layer, embedder)
        props = dict(props, text_field=text_column)  # where its payloads hold the text: backfills read it there
        c = Collection.create(collection, dim or full_dim, properties=props, vector_dtype=vector_dtype)
    with c:
        embedder = load_embedder(model_ref) if embedder is None else embedder
        stored_layer = text_layer(c, embedder)
        if options.layer is not None and options.layer != stored_layer:
            c.close()
            raise ValueError(f"--layer: the collection holds layer-{stored_layer} vectors of {embedder.manifest.tag!r}, "
                             f"got {options.layer} (index into a new collection)")
        # rollouts: the version's own dim
        options = dataclasses.replace(options, layer=stored_layer, dim=dim or text_dim(c, embedder))
        layer_, dim_ = embedder.check_point(options.layer, options.dim)
        if engine is Engine.ray:
            from telescope.pipelines.ray_engine import RayEncoder

            encoder = RayEncoder(model_ref, layer_, dim_, batch_size, actors=ray_actors,
                                 cpus_per_actor=ray_cpus_per_actor, address=ray_address, group_points=ray_group_points)
        else:
            encoder = LocalEncoder(embedder, layer_, dim_, batch_size)
        result = run_build(c, embedder, spec, check, con, encoder, policies=policies, options=options, engine=engine.value)
    _print_summary(result)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result.to_dict(), indent=2) + "\n")


def _print_summary(result) -> None:
    table = Table(title="index build", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [("engine", result.engine), ("rows read", f"{result.rows_read:,}"), ("documents embedded", f"{result.docs_embedded:,}")]
    if result.written_again:
        rows.append(("of which written again (another writer replaced or deleted them)", f"{result.written_again:,}"))
    rows += [
        ("payload changed only (vectors kept)", f"{result.payloads_updated:,}"),
        ("points upserted", f"{result.points_upserted:,}"),
        ("unchanged (skipped, already indexed)", f"{result.unchanged:,}"),
    ]
    if result.kept_from_backfill:
        rows.append(("of which re-embedded by a rollout's backfill", f"{result.kept_from_backfill:,}"))
    rows += [(f"skipped: {reason}", f"{n:,}") for reason, n in sorted(result.skipped.items())]
    rows += [
        ("deleted documents (gone from source)", f"{result.deleted_docs:,}"),
        ("deleted points", f"{result.deleted_points:,}"),
        ("texts truncated at the model's limit", f"{result.truncated_texts:,}"),
        ("points in collection", f"{result.collection_points:,}"),
        ("wall time", f"{result.wall_s:,.1f} s"),
        ("docs/s", f"{result.rows_read / result.wall_s:,.0f}" if result.wall_s else "-"),
        ("peak memory (driver RSS)", f"{result.peak_rss_mb:,.0f} MB"),
    ]
    rows += [("parquet shard", s) for s in result.shards]
    rows += [("unreadable file", f"{f}: {why}") for f, why in result.unreadable_files]
    for row in rows:
        table.add_row(*row)
    Console().print(table)
