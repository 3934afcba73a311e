"""``telescope bench pipeline``: end-to-end docs/s of ``index build`` against plain encode, same texts, same run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from telescope.eval.datasets import shared_data

WORDNET = shared_data("wordnet_glosses", "wordnet30_glosses.tsv.gz")


def register(bench_app: typer.Typer) -> None:
    bench_app.command("pipeline")(pipeline)


def pipeline(
    source: Annotated[Path, typer.Option(help="The WordNet glosses TSV (or any source the --sql reads).")] = WORDNET,
    sql: Annotated[Optional[str], typer.Option(help="SQL over 'src' giving id and text (default: the WordNet columns).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N documents (the full 117k take ~9 min per encode leg on 2 cores).")] = None,
    model: Annotated[str, typer.Option(help="'default' or a model folder.")] = "default",
    layer: Annotated[Optional[int], typer.Option(help="Embed after this many layers (default: all).")] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 64,
    sort_window: Annotated[int, typer.Option(help="Texts sorted by length together in the job.")] = 8192,
    threads: Annotated[Optional[int], typer.Option(help="torch threads (default: torch's choice).")] = None,
    out: Annotated[Path, typer.Option(help="Directory of the JSON and markdown report.")] = Path("docs/results"),
    name: Annotated[str, typer.Option(help="Report file name (no extension).")] = "pipeline-bench",
) -> None:
    """Plain encode, the whole build job, plain encode again: docs/s and the job's overhead."""
    from telescope.eval.report import command_line, environment
    from telescope.pipelines.benchmark import WORDNET_SQL, bench_pipeline

    if not source.is_file():
        raise FileNotFoundError(f"--source: no such file {str(source)!r} (the WordNet glosses live in ../shared/data)")
    report = {"name": name, "command": command_line(), **bench_pipeline(
        source, sql=sql or WORDNET_SQL, limit=limit, model=model, layer=layer, batch_size=batch_size,
        window=sort_window, threads=threads,
    ), **environment()}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(report))
    Console().print(markdown(report))


def markdown(r: dict) -> str:
    verdict = "meets" if r["overhead"] <= r["target_overhead"] else "misses"
    return "\n".join([
        f"# {r['name']}",
        "",
        f"`{r['command']}`",
        "",
        f"{r['documents']:,} documents from `{Path(r['source']).name}` (sha256 {r['source_sha256'][:16]}), model "
        f"{r['model']['tag']} (hash {r['model']['hash']}), layer {r['layer']}, batch {r['batch_size']}, "
        f"torch threads {r['torch_threads']}, {r['cpus']} CPUs, load average {r['loadavg_before'][0]} before / "
        f"{r['loadavg_after'][0]} after.",
        "",
        "| leg | seconds | docs/s |",
        "|---|---|---|",
        f"| plain encode (before) | {r['encode_s'][0]} | {r['documents'] / r['encode_s'][0]:,.1f} |",
        f"| index build, end to end | {r['pipeline_s']} | {r['pipeline_docs_per_s']:,.1f} |",
        f"| plain encode (after) | {r['encode_s'][1]} | {r['documents'] / r['encode_s'][1]:,.1f} |",
        "",
        f"Pipeline overhead {100 * r['overhead']:.1f}% against the mean encode rate {r['encode_docs_per_s']:,.1f} docs/s "
        f"({verdict} the {100 * r['target_overhead']:.0f}% target). Peak RSS during the job "
        f"{r['pipeline_peak_rss_mb']:,.0f} MB (process RSS before it {r['rss_before_pipeline_mb']:,.0f} MB, "
        "which holds the model and the baseline's texts).",
        "",
    ])
