"""``telescope eval sts|beir``: quality over the (layer, dim) grid and over search plans, written as reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

eval_app = typer.Typer(help="Quality benchmarks: STS and BEIR-style retrieval, with JSON/markdown/PNG reports.", no_args_is_help=True)

ModelOpt = Annotated[Optional[str], typer.Option("--model", help="'default' (packaged all-MiniLM-L6-v2) or a model folder, for both sides.")]
QueryModelOpt = Annotated[Optional[str], typer.Option("--query-model", help="Model for queries / sentence1 (default: --model).")]
DocModelOpt = Annotated[Optional[str], typer.Option("--doc-model", help="Model for documents / sentence2 (default: --model).")]
GridOpt = Annotated[Optional[str], typer.Option("--grid", help="'pairs' (the model's trained pairs, default), 'full', or '1:16,3:64'.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder of the reports.")]
NameOpt = Annotated[Optional[str], typer.Option("--name", help="Report file name without extension (default: from data and model).")]
CacheOpt = Annotated[Path, typer.Option("--cache-dir", help="Embedding cache (keyed by model hash and data hash).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Encode everything, read and write no cache.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Texts per forward pass.")]


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")


@eval_app.command("sts")
def sts(
    data: Annotated[Path, typer.Option("--data", help="STS-B .csv, a TSV with header sentence1/sentence2/score, or SICK.")],
    model: ModelOpt = None,
    query_model: QueryModelOpt = None,
    doc_model: DocModelOpt = None,
    grid: GridOpt = None,
    out: OutOpt = Path("eval-results"),
    name: NameOpt = None,
    cache_dir: CacheOpt = Path(".cache/embeddings"),
    no_cache: NoCacheOpt = False,
    batch_size: BatchOpt = 64,
) -> None:
    """Spearman x100 of cosine similarity per (layer, dim)."""
    from telescope.eval.run import run_sts

    report, paths = run_sts(
        data, out, model=model, query_model=query_model, doc_model=doc_model, grid=grid, name=name,
        cache_dir=None if no_cache else cache_dir, batch_size=batch_size,
    )
    _summary(report, paths)


@eval_app.command("beir")
def beir(
    data: Annotated[Path, typer.Option("--data", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")],
    split: Annotated[str, typer.Option("--split", help="qrels split.")] = "test",
    model: ModelOpt = None,
    query_model: QueryModelOpt = None,
    doc_model: DocModelOpt = None,
    grid: GridOpt = None,
    plans: Annotated[Optional[str], typer.Option("--plans", help="'default', 'none', or plans separated by ';' ('64:200,384:10;128:100,384:10').")] = None,
    stage_one: Annotated[str, typer.Option("--stage-one", help="FAISS factory of the plans' stage one: Flat, HNSW32, ...")] = "Flat",
    repeats: Annotated[int, typer.Option("--repeats", help="Timed runs per plan (median).")] = 3,
    crosscheck: Annotated[bool, typer.Option("--crosscheck", help="Also run sentence-transformers' InformationRetrievalEvaluator at the full point.")] = False,
    crosscheck_sample: Annotated[int, typer.Option("--crosscheck-sample", help="Documents sentence-transformers encodes itself to compare with ours (0: it re-encodes the whole corpus).")] = 256,
    out: OutOpt = Path("eval-results"),
    name: NameOpt = None,
    cache_dir: CacheOpt = Path(".cache/embeddings"),
    no_cache: NoCacheOpt = False,
    batch_size: BatchOpt = 64,
) -> None:
    """nDCG@10, Recall@100, MRR@10 per (layer, dim) and per search plan."""
    from telescope.eval.run import run_beir

    if repeats < 1:
        raise ValueError(f"--repeats: expected an integer >= 1, got {repeats}")
    if crosscheck_sample < 0:
        raise ValueError(f"--crosscheck-sample: expected an integer >= 0 (0: the whole corpus), got {crosscheck_sample}")
    report, paths = run_beir(
        data, out, split=split, model=model, query_model=query_model, doc_model=doc_model, grid=grid, plans=plans,
        stage_one=stage_one, repeats=repeats, crosscheck=crosscheck, crosscheck_sample=crosscheck_sample or None,
        name=name, cache_dir=None if no_cache else cache_dir, batch_size=batch_size,
    )
    _summary(report, paths)


def _summary(report: dict, paths: list[Path]) -> None:
    console = Console()
    metric = report["grid_metric"]
    for row in report["grid"]:
        console.print(f"({row['layer']}, {row['dim']}) {metric} {row[metric]:.2f}")
    for p in report.get("plans") or []:
        console.print(f"plan {p['plan']}: nDCG@10 {p['ndcg@10']:.2f}, recall@10 vs exact {p['recall_at_k']:.3f}, {p['queries_per_s']:,.0f} q/s")
    if report.get("crosscheck"):
        c = report["crosscheck"]
        console.print(f"reference nDCG@10 {c['ndcg@10']:.2f}, ours {c['ours']['ndcg@10']:.2f}, difference {c['ndcg@10_difference']:+.2f}")
    console.print(f"wall time {report['wall_s']:.1f} s; command: {report['command']}")
    console.print("wrote " + ", ".join(str(p) for p in paths))
