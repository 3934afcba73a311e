"""``telescope bench index``: FAISS exact and HNSW at full dim against telescope plans, at real and scaled-up size.

Thin: parses the options and calls ``telescope.eval.bench_index.run_bench_index`` (which embeds the corpus once,
cached, measures every method in one run on the same threads and writes the JSON, markdown and PNG report), or
``run_bench_index_synthetic`` with ``--synthetic N`` (random prefix-structured vectors: no model, no data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from telescope.eval.datasets import shared_data

SHARED_DATA = shared_data()


def register(bench_app: typer.Typer) -> None:
    bench_app.command("index")(index)


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{option}: expected integers separated by commas, got {text!r}") from None


def index(
    model: Annotated[str, typer.Option(help="'default' or a model folder (a nested model: its prefixes are stage one).")] = "default",
    data: Annotated[Path, typer.Option(help="The shared data folder (WordNet, COCO, SciFact, SNLI, STS-B).")] = SHARED_DATA,
    queries: Annotated[int, typer.Option(help="Held-out texts used as queries.")] = 1000,
    corpus_size: Annotated[Optional[int], typer.Option(help="Corpus texts (default: every distinct text left after the queries).")] = None,
    scale_to: Annotated[int, typer.Option(help="Also measure at this many vectors: the real ones plus synthetic ones (0: no scale-up).")] = 1_000_000,
    threads: Annotated[int, typer.Option(help="FAISS and torch threads, the same for every method.")] = 2,
    flat_plans: Annotated[str, typer.Option(help="Plans on an exact (Flat) prefix stage one, separated by ';'.")] = "128:200,384:10;192:100,384:10;256:50,384:10",
    hnsw_plans: Annotated[str, typer.Option(help="Plans on an HNSW prefix stage one (one first dim), separated by ';'.")] = "256:50,384:10;256:100,384:10;256:150,384:10;256:200,384:10;256:300,384:10",
    ivf_plans: Annotated[str, typer.Option(help="Plans on an IVF prefix stage one (one first dim), separated by ';' (default none: see the module docstring of telescope.eval.bench_index).")] = "",
    ivf_nprobe: Annotated[str, typer.Option(help="nprobe values (inverted lists searched) of the IVF prefix stage one, separated by ','.")] = "16,32,64",
    ivf_nlist: Annotated[int, typer.Option(help="Inverted lists of the IVF stage one (0: the power of two nearest 4 sqrt(vectors), per scale).")] = 0,
    hnsw_ef: Annotated[str, typer.Option(help="efSearch values of the full-dim HNSW, separated by ','.")] = "32,64,96,128,192,256,384,512",
    hnsw_m: Annotated[int, typer.Option(help="HNSW M (links per node) of both the full-dim graph and the prefix graph.")] = 32,
    batch1_queries: Annotated[int, typer.Option(help="Queries sent one at a time for the batch-1 timing.")] = 100,
    repeats: Annotated[int, typer.Option(help="Timed runs per point (median).")] = 3,
    compact: Annotated[bool, typer.Option(help="Also the HNSW and IVF plans on a compact collection: a scalar-quantized prefix index (--compact-codes), float16 rows.")] = True,
    compact_codes: Annotated[str, typer.Option(help="Scalar quantizer of the compact stage one: SQfp16, SQ8, SQ6 or SQ4.")] = "SQfp16",
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass when embedding.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the query/corpus split and of the synthetic vectors.")] = 0,
    cache_dir: Annotated[Path, typer.Option("--cache-dir", help="Embedding cache (keyed by model hash and data hash).")] = Path(".cache/embeddings"),
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Encode everything, read and write no cache.")] = False,
    workdir: Annotated[Optional[Path], typer.Option(help="Where the benchmark's collections are written (removed after; default: the temp dir).")] = None,
    out: Annotated[Path, typer.Option(help="Directory of the JSON, markdown and PNG report.")] = Path("docs/results"),
    name: Annotated[str, typer.Option(help="Report file name (no extension).")] = "bench-index",
    synthetic: Annotated[int, typer.Option(help="Instead of the model and the data folder: this many synthetic prefix-structured vectors (and --queries more from the same clusters), no scale-up; for a machine with neither (the GPU check).")] = 0,
    rejudge: Annotated[Optional[Path], typer.Option(help="Only judge the targets of this report's JSON again and rewrite its .md/.png (measures nothing).")] = None,
) -> None:
    """Search the same vectors with exact and HNSW FAISS indexes and with telescope plans: queries/s at batch 1
    and 64, recall@10 against exact, memory, build time, and a recall/queries-per-second plot."""
    if rejudge is not None:
        from telescope.eval.bench_index import rejudge as rejudge_report

        Console(stderr=True).print("rewrote " + ", ".join(str(p) for p in rejudge_report(rejudge)))
        return
    from telescope.eval.bench_index import Options, markdown, run_bench_index, run_bench_index_synthetic
    from telescope.eval.report import command_line

    options = Options(
        flat_plans=[p.strip() for p in flat_plans.split(";") if p.strip()],
        hnsw_plans=[p.strip() for p in hnsw_plans.split(";") if p.strip()],
        hnsw_ef=_ints(hnsw_ef, "--hnsw-ef"), hnsw_m=hnsw_m,
        ivf_plans=[p.strip() for p in ivf_plans.split(";") if p.strip()], ivf_nprobe=_ints(ivf_nprobe, "--ivf-nprobe"),
        ivf_nlist=ivf_nlist, batch1_queries=batch1_queries, repeats=repeats,
        compact=compact, compact_codes=compact_codes,
    )
    console = Console(stderr=True)
    if synthetic:
        report = run_bench_index_synthetic(
            synthetic, queries=queries, threads=threads, options=options, seed=seed, workdir=workdir, out=out,
            name=name, command=command_line(), log=console.print,
        )
        Console().print(markdown(report))
        return
    from telescope.embedder import load_embedder
    from telescope.eval.cache import EmbeddingCache

    embedder = load_embedder(model)
    report = run_bench_index(
        embedder, data, queries=queries, corpus_size=corpus_size, scale_to=scale_to, threads=threads,
        options=options, cache=EmbeddingCache(None if no_cache else cache_dir), batch_size=batch_size, seed=seed,
        workdir=workdir, out=out, name=name, command=command_line(), log=console.print,
    )
    Console().print(markdown(report))
