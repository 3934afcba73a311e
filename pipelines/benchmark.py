"""The pipeline benchmark: end-to-end docs/s of a build job against plain encode throughput, same texts, same run.

Three legs on one loaded model: plain ``Embedder.encode`` over all the texts (sentence-transformers sorts them by
length in one call: the best case for padding), the whole build job (source check, DuckDB streaming, hashing,
job state, length-sorted windows, encode, WAL upserts, commit) into a fresh collection, then plain encode again.
Overhead = 1 - job docs/s / mean encode docs/s; encoding before and after the job cancels slow drift of a
shared machine. Peak resident memory is sampled during the job leg (psutil), and the load average is recorded.
"""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import psutil

from telescope.embedder import load_embedder
from telescope.index import Collection
from telescope.pipelines.build import BuildOptions, run_build
from telescope.pipelines.checks import Policies, check_source
from telescope.pipelines.ingest import LocalEncoder
from telescope.pipelines.sources import TEXT, SourceSpec, stream

WORDNET_SQL = "SELECT synset_id AS id, gloss AS text, ss_type, lemmas FROM src"


class _PeakRss:
    """Samples this process's resident memory every ``interval`` seconds while in the ``with`` block."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._proc = psutil.Process()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "_PeakRss":
        self.start_rss = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bench_pipeline(
    source: Path,
    *,
    sql: str = WORDNET_SQL,
    limit: int | None = None,
    model: str = "default",
    layer: int | None = None,
    batch_size: int = 64,
    window: int = 8192,
    threads: int | None = None,
) -> dict:
    """Run the three legs and return the report (figures, settings, versions, hashes)."""
    import duckdb
    import pyarrow
    import sentence_transformers
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    embedder = load_embedder(model)
    spec = SourceSpec(str(source), sql=sql, limit=limit)
    check, con = check_source(spec, Policies())
    texts = [t for b in stream(con, check.query) for t in b.column(TEXT).to_pylist()]  # the job's texts, untimed
    n = len(texts)
    load_before = os.getloadavg()

    def encode_leg() -> float:
        start = time.perf_counter()
        embedder.encode(texts, layer=layer, batch_size=batch_size)
        return time.perf_counter() - start

    encode_1 = encode_leg()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp, _PeakRss() as rss:
        start = time.perf_counter()
        job_check, job_con = check_source(spec, Policies())
        collection = Collection.create(Path(tmp) / "c", embedder.full_dim, properties={"model": model})
        with collection:
            report = run_build(
                collection, embedder, spec, job_check, job_con, LocalEncoder(embedder, layer, None, batch_size),
                options=BuildOptions(layer=layer, batch_size=batch_size, window=window, show_progress=False),
            )
        job = time.perf_counter() - start
    encode_2 = encode_leg()
    encode_dps = n / ((encode_1 + encode_2) / 2)
    job_dps = n / job
    return {
        "benchmark": "pipeline",
        "documents": n,
        "source": str(source),
        "source_sha256": sha256_file(source),
        "sql": sql,
        "limit": limit,
        "model": {"id": embedder.manifest.id, "tag": embedder.manifest.tag, "hash": embedder.model_hash},
        "layer": layer or embedder.num_layers,
        "batch_size": batch_size,
        "sort_window": window,
        "torch_threads": torch.get_num_threads(),
        "encode_s": [round(encode_1, 2), round(encode_2, 2)],
        "encode_docs_per_s": round(encode_dps, 1),
        "pipeline_s": round(job, 2),
        "pipeline_docs_per_s": round(job_dps, 1),
        "overhead": round(1 - job_dps / encode_dps, 4),
        "target_overhead": 0.10,
        "job": {k: report.to_dict()[k] for k in ("rows_read", "docs_embedded", "points_upserted", "skipped", "wall_s")},
        "pipeline_peak_rss_mb": round(rss.peak / 2**20, 1),
        "rss_before_pipeline_mb": round(rss.start_rss / 2**20, 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__, "duckdb": duckdb.__version__,
            "pyarrow": pyarrow.__version__,
        },
    }
