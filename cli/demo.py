"""``telescope demo``: the whole idea on a real collection in a few minutes.

Embeds 20,000 WordNet glosses shipped in the repo with the packaged model, lets the collection choose the
cheapest plan that meets a recall target on a sample of its own vectors, answers example queries
coarse-to-fine, and measures the plan against exact full-dim search (FAISS IndexFlatIP) on 500 held-out glosses,
one query at a time and in one batch.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

DEMO_DATA = Path(__file__).resolve().parents[1] / "data" / "demo" / "wordnet_glosses_20k.tsv.gz"
RECALL_TARGET = 0.99
INDEXED = 20_000
EXAMPLES = [
    "a large wild cat that lives in Africa",
    "an instrument for measuring temperature",
    "to run fast on foot",
    "a sweet yellow tropical fruit",
    "the scientific study of stars and planets",
]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    data: Annotated[Path, typer.Option(help="The demo glosses (TSV: id, lemmas, text).")] = DEMO_DATA,
    out: Annotated[Path, typer.Option(help="Where the demo collection is kept (reused when up to date).")] = Path(".cache/demo"),
    plan: Annotated[Optional[str], typer.Option(help="A plan to show (default: chosen for --recall-target).")] = None,
    recall_target: Annotated[float, typer.Option(help="Recall@k the chosen plan must reach on a sample.")] = RECALL_TARGET,
    k: Annotated[int, typer.Option("--k", "-k", help="Hits per query.")] = 10,
    serve: Annotated[bool, typer.Option(help="Finish by serving the collection over gRPC and querying it.")] = True,
) -> None:
    """Index the shipped WordNet glosses, search them coarse-to-fine, compare with exact search."""
    from telescope.embedder import load_embedder
    from telescope.eval.plans import measure_plans
    from telescope.index import Collection, Plan
    from telescope.pipelines import ingest
    from telescope.pipelines.sources import read_table, texts_from

    console = Console()
    if not data.is_file():
        raise FileNotFoundError(f"--data: no such file {str(data)!r} (the demo glosses ship in the repo's data/demo/)")
    start = time.perf_counter()
    embedder = load_embedder()
    ids, texts, payloads = texts_from(read_table(data, "tsv"))
    if len(ids) <= INDEXED:
        raise ValueError(f"--data: expected more than {INDEXED} rows (the rest are held-out queries), got {len(ids)}")
    key = hashlib.sha256(data.read_bytes() + embedder.model_hash.encode()).hexdigest()[:16]
    path = out / "collection"
    collection = _open_current(path, key)
    if collection is None:
        shutil.rmtree(path, ignore_errors=True)
        collection = Collection.create(path, embedder.full_dim, properties={"model": "default", "demo_key": key})
        console.print(f"[bold]Indexing {INDEXED:,} WordNet glosses[/] with {embedder.manifest.tag} ...")
        ingest(collection, embedder, ids[:INDEXED], texts[:INDEXED], payloads[:INDEXED])
        collection.commit()
    else:
        console.print(f"Reusing the demo collection at {path} ({len(collection):,} points)")

    if plan is None:
        choice = collection.choose_plan(recall_target, k=k)
        plan = str(choice.plan)
        console.print(
            f"The collection chose plan [bold]{plan}[/]: recall@{k} {choice.recall:.3f} >= {recall_target} on "
            f"{choice.sample} of its own vectors, {choice.plan.flops(len(collection)):,} multiply-adds per query "
            f"against {Plan.exact(collection.dim).flops(len(collection)):,} for exact search"
        )
    collection.set_default_plan(plan)
    console.print(f"\n[bold]Example queries[/] (plan {plan}):")
    for text in EXAMPLES:
        t0 = time.perf_counter()
        query = embedder.encode([text])
        t1 = time.perf_counter()
        hits = collection.search(query, k=3)[0]
        t2 = time.perf_counter()
        console.print(f"  [cyan]{text}[/]  (embed {1000 * (t1 - t0):.1f} ms, search {1000 * (t2 - t1):.2f} ms)")
        for hit in hits:
            console.print(f"    {hit.score:.3f}  {hit.payload['lemmas']}: {hit.payload['text'][:90]}")

    held_out = texts[INDEXED:]
    console.print(f"\n[bold]Plan against exact search[/] on {len(held_out)} held-out glosses as queries, k={k}:")
    queries = embedder.encode(held_out)
    table = Table()
    for column in ("search", f"recall@{k}", "q/s, 1 at a time", f"q/s, batch {len(queries)}"):
        table.add_column(column, justify="right")
    single_exact, (single,) = measure_plans(collection, queries, [plan], k=k, repeats=3, batch=1)
    batch_exact, (batched,) = measure_plans(collection, queries, [plan], k=k, repeats=5)
    table.add_row(f"exact (FAISS IndexFlatIP, {collection.dim} dims)", "1.000",
                  f"{single_exact.queries_per_s:,.0f}", f"{batch_exact.queries_per_s:,.0f}")
    table.add_row(f"plan {plan}", f"{single.recall_at_k:.3f}", f"{single.queries_per_s:,.0f}", f"{batched.queries_per_s:,.0f}")
    console.print(table)
    console.print(
        f"plan vs exact: {single.queries_per_s / single_exact.queries_per_s:.2f}x one at a time, "
        f"{batched.queries_per_s / batch_exact.queries_per_s:.2f}x batched, recall@{k} {single.recall_at_k:.3f}; "
        f"total demo time {time.perf_counter() - start:.0f} s"
    )
    collection.close()
    if serve:  # the service as users meet it (cli/demo_serve.py)
        from telescope.cli.demo_serve import show_service

        show_service(out, path.name, EXAMPLES, console=console)


def _open_current(path: Path, key: str):
    from telescope.index import Collection

    try:
        c = Collection.open(path)
    except (LookupError, ValueError, OSError):
        return None
    if c.properties.get("demo_key") == key and len(c) == INDEXED:
        return c
    c.close()
    return None
