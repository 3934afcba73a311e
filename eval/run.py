"""One evaluation run end to end: load the models and the data, measure, write the report. The CLI calls these.

``run_sts`` and ``run_beir`` return the report (a dict, the JSON written) and the paths written. Everything
they measure comes from ``telescope.eval.sts`` / ``telescope.eval.beir``; this module only assembles the
record (command, versions, models, data hashes, wall time) and the reference check.
"""

from __future__ import annotations

import re
import resource
import time
from datetime import datetime, timezone
from pathlib import Path

from telescope.embedder import DEFAULT_MODEL, Embedder, load_embedder
from telescope.eval.beir import evaluate_beir
from telescope.eval.cache import EmbeddingCache
from telescope.eval.crosscheck import st_information_retrieval
from telescope.eval.datasets import read_beir, read_sts
from telescope.eval.grid import parse_grid, shared_prefix
from telescope.eval.report import check_name, command_line, environment, model_info, write_report
from telescope.eval.sts import evaluate_sts
from telescope.index import Plan

CROSSCHECK_TOLERANCE = 0.3  # nDCG@10 x100 points (issue 3)


def load_models(model: str | None, query_model: str | None, doc_model: str | None) -> tuple[Embedder, Embedder]:
    """The query-side and document-side models (``--model`` for both unless a side is given); loaded once if equal."""
    q = query_model or model or DEFAULT_MODEL
    d = doc_model or model or DEFAULT_MODEL
    query = load_embedder(q)
    same = q == d or (Path(q).resolve() == Path(d).resolve() if DEFAULT_MODEL not in (q, d) else False)
    return query, query if same else load_embedder(d)


def parse_plans(spec: str | None) -> list[Plan] | None:
    """``None`` (the default plans), ``"none"`` (no plans) or plans separated by ';' ("64:200,384:10;128:100,384:10")."""
    if spec is None or spec.strip() == "default":
        return None
    if spec.strip() == "none":
        return []
    parts = [p.strip() for p in spec.split(";") if p.strip()]
    if not parts:
        raise ValueError(f"plans: expected 'default', 'none' or plans separated by ';', got {spec!r}")
    plans = []
    for part in parts:
        try:
            plans.append(Plan.parse(part))
        except ValueError as e:
            raise ValueError(f"plans: {e} (plans are separated by ';')") from None
    return plans


def _base(kind: str, query: Embedder, doc: Embedder, argv: list[str] | None) -> dict:
    prefix = shared_prefix(query, doc)
    return {
        "kind": kind,
        "command": command_line(argv),
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **environment(),
        "models": {"query": model_info(query), "doc": model_info(doc)},
        "shared_prefix": {"dim": prefix.dim, "rule": prefix.rule},
    }


def _cpu_s() -> float:
    """CPU seconds (user + system) this process has used: with the wall time, shows how contended the host was."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _comparable(reference: dict) -> bool:
    """Whether the reference measures what the harness does: it counts relevance as binary (graded qrels differ)
    and leaves out queries with no relevant document (the harness counts them as 0)."""
    return not reference["qrels_graded"] and not reference["queries_without_relevant"]


def _name(kind: str, data_name: str, query: Embedder, doc: Embedder) -> str:
    models = query.manifest.id if query is doc else f"{query.manifest.id}-vs-{doc.manifest.id}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"eval-{kind}-{data_name}-{models}")


def run_sts(
    data: str | Path,
    out: str | Path,
    model: str | None = None,
    query_model: str | None = None,
    doc_model: str | None = None,
    grid: str | None = None,
    name: str | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    show_progress: bool = True,
    argv: list[str] | None = None,
) -> tuple[dict, list[Path]]:
    start, cpu = time.perf_counter(), _cpu_s()
    sts = read_sts(data)
    query, doc = load_models(model, query_model, doc_model)
    points = parse_grid(grid, query, doc)
    name = check_name(name or _name("sts", Path(data).stem, query, doc))
    cache = EmbeddingCache(cache_dir)
    result = evaluate_sts(query, sts, points, doc, cache, batch_size, show_progress)
    report = _base("sts", query, doc, argv)
    report.update(
        name=name,
        data={"path": str(data), "layout": sts.layout, "hash": sts.hash, "size": f"{len(sts)} pairs", "pairs": len(sts)},
        grid_metric="spearman",
        grid=result.rows(),
        cache={"root": str(cache.root) if cache.root else None, "hits": cache.hits, "misses": cache.misses},
        wall_s=round(time.perf_counter() - start, 2),
        cpu_s=round(_cpu_s() - cpu, 2),
    )
    return report, write_report(out, report["name"], report)


def run_beir(
    data: str | Path,
    out: str | Path,
    split: str = "test",
    model: str | None = None,
    query_model: str | None = None,
    doc_model: str | None = None,
    grid: str | None = None,
    plans: str | None = None,
    stage_one: str = "Flat",
    repeats: int = 3,
    crosscheck: bool = False,
    crosscheck_sample: int | None = 256,
    name: str | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    show_progress: bool = True,
    argv: list[str] | None = None,
) -> tuple[dict, list[Path]]:
    start, cpu = time.perf_counter(), _cpu_s()
    beir = read_beir(data, split)
    query, doc = load_models(model, query_model, doc_model)
    points = parse_grid(grid, query, doc)
    plan_list = parse_plans(plans)
    name = check_name(name or _name("beir", f"{Path(data).name}-{split}", query, doc))
    if crosscheck:
        if query is not doc:
            raise ValueError("crosscheck: expected one model (the reference evaluator has no cross-model mode), got two")
        points = sorted(set(points) | {(query.num_layers, query.full_dim)})
    cache = EmbeddingCache(cache_dir)
    prefix = shared_prefix(query, doc).dim
    result = evaluate_beir(
        query, beir, points, doc, prefix, plan_list, cache, stage_one, repeats, batch_size, show_progress
    )
    report = _base("beir", query, doc, argv)
    report.update(
        name=name,
        data={
            "path": str(data),
            "split": split,
            "hash": beir.hash,
            "files": beir.files,
            "size": f"{result.documents} documents, {result.queries} queries with judgements",
            "documents": result.documents,
            "queries": result.queries,
        },
        grid_metric="ndcg@10",
        grid=result.rows(),
        plans=result.plans,
        stage_one=stage_one,
        repeats=repeats,
        timings={k: round(v, 2) for k, v in result.timings.items()},
        cache={"root": str(cache.root) if cache.root else None, "hits": cache.hits, "misses": cache.misses},
        notes=[
            "Grid points: queries and documents at e(layer, dim), exact inner-product ranking of the top 100.",
            "Plans: each model at its last layer, on the shared prefix, through a real Collection.",
            "Identical query and document ids are not skipped (as sentence-transformers' evaluator).",
        ],
    )
    if crosscheck:
        reference = st_information_retrieval(query, beir, cache, batch_size, crosscheck_sample)  # vectors: cached
        ours = result.grid[(query.num_layers, query.full_dim)]
        difference = ours["ndcg@10"] - reference["ndcg@10"]
        report["crosscheck"] = reference | {
            "ours": ours,
            "ndcg@10_difference": round(difference, 4),
            "tolerance": CROSSCHECK_TOLERANCE,
            "agrees": abs(difference) <= CROSSCHECK_TOLERANCE if _comparable(reference) else None,
        }
    report["wall_s"] = round(time.perf_counter() - start, 2)
    report["cpu_s"] = round(_cpu_s() - cpu, 2)
    return report, write_report(out, report["name"], report)
