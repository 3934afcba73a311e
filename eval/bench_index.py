"""Index benchmark at scale: FAISS exact and HNSW search at full dim against telescope's coarse-to-fine plans.

One run, the same vectors, the same queries and the same threads (FAISS OpenMP = torch = ``threads``) for every
method:

- **exact**: FAISS ``IndexFlatIP`` over the full-dim vectors; its top-10 is the truth for recall@10. Where FAISS
  sees a GPU, the same index copied there (**exact, GPU**) too.
- **HNSW, full dim**: FAISS ``HNSW{M}`` (index factory, efConstruction = FAISS's default 40) over the full-dim
  vectors, one point per ``efSearch``: the baseline of the targets. With ``compact``, also ``HNSW{M},{codes}``
  over the full-dim vectors (what a user short of memory would pick instead), reported against every plan but
  not counted in the verdict.
- **telescope, exact prefix**: a ``Collection`` whose stage one is a Flat scan of the plan's first prefix, then a
  re-rank of the shortlist at full dim (``telescope.index``), one point per plan.
- **telescope, HNSW prefix**: a ``Collection`` whose stage one is ``HNSW{M}`` over the first prefix (same M and
  efConstruction as the full-dim graph; telescope searches a graph with a beam of ``max(efSearch, shortlist)``,
  efSearch left at FAISS's 16, so the plan's shortlist sets the beam), then the same re-rank.
- **telescope, compact** (``compact``): the same HNSW plans on a collection built to hold less, as Qdrant's
  quantized search with rescoring does: stage one ``HNSW{M},{codes}`` (the prefix graph over scalar-quantized
  codes; ``compact_codes``, default ``SQfp16``: half-precision prefixes, which FAISS scores with F16C, and which
  on 227k real vectors searched faster than the float32 graph at the same recall, where ``SQ8``'s decoding
  was slower) and the full-dim rows kept as float16 (``vector_dtype="float16"``); the re-rank scores upcast rows.
- **telescope, IVF prefix** (``ivf_plans``, none by default): stage one ``IVF{nlist},Flat`` over the first prefix
  (nlist a power of two near 4 sqrt(n) unless given), one point per (nprobe, plan); nprobe is set on the built
  collection (``Collection.set_stage_one_params``), no rebuild. With ``compact`` also ``IVF{nlist},{codes}`` and
  float16 rows. Not run by default because inverted lists need a large nprobe on sentence embeddings: on the
  227,246 real vectors (the 200-step Starbucks model) IVF2048 over the 192-dim prefix, nprobe 64 (3% of the
  lists), shortlist 400, reached recall@10 0.963 at 1,213 q/s at batch 1 on 2 threads, where full-dim HNSW32
  passes that recall at efSearch 32 (a one-off script, 2026-11-28; ``--ivf-plans`` measures it in the report).

Each point records where its search ran (``device``): telescope's stage one runs on the GPU when FAISS sees one,
its index can move there (Flat, IVF) and the shortlist is within FAISS-GPU's k limit; re-ranking is on the CPU.

Per point: queries/s at batch 1 (the first ``batch1_queries`` queries, sent one at a time) and at batch 64 (all
queries), medians of ``repeats`` runs; recall@10 against exact over all queries; memory as the bytes held to
answer queries (FAISS: the serialised index; telescope: the full-dim vectors it re-ranks from plus the
serialised stage-one index of that plan's prefix); build time (FAISS ``add``; telescope: building the stage one
in memory, with the durable write of the collection, WAL and segments, timed apart as ``store_s``).

The corpus is real text: WordNet 3.0 glosses, COCO val2017 captions, SciFact titles and abstract sentences, SNLI
dev/test sentences and STS-B sentences from ``../shared/data``, de-duplicated, shuffled with a seed; the first
``queries`` texts are held out as queries, the rest is the corpus. It is embedded once at the model's full
(layers, dim) and cached (``telescope.eval.cache``).

Scale-up (:func:`scale_up`): embedding a million texts is out of reach on 2 cores (~200-400 texts/s), so the
larger collection is the real vectors plus synthetic ones. Each synthetic vector is a uniformly drawn real
corpus vector plus Gaussian noise with the covariance of the real vectors (so the noise has the same
per-coordinate variance profile and correlations as the data: a nested model's prefix structure is kept), scaled
so that its expected cosine to its source equals the median cosine between a real vector and its nearest real
neighbour, then re-normalised. The queries stay the real held-out texts. What this does not reproduce: a real
million-text corpus's spread of topics; the synthetic points sit around the real ones.

Without a model or the data folder (a GPU machine that has neither, ``tools/device``),
:func:`run_bench_index_synthetic` runs the same comparison on prefix-structured random vectors
(``telescope.eval.synthetic``).

FAISS has every index here; what no library has is the comparison itself over telescope's plans, so this module
only times and counts.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from telescope.index import Collection, Plan
from telescope.index.autoplan import recall_at_k
from telescope.index.stage_one import GPU_MAX_K, faiss_gpus, gpu_resources, serialized_bytes
from telescope.eval.datasets import file_hash, read_sts
from telescope.eval.plans import time_batched

K = 10
SOURCES = ("wordnet", "coco", "scifact", "snli", "stsb")
# A sentence ends at . ! or ? followed by space and a capital, digit or bracket (abstracts; no library needed
# for this: nltk is not installed and punkt would be a download).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


@dataclass
class Texts:
    """The real texts of the benchmark, de-duplicated, in a seeded random order, with their source."""

    texts: list[str]
    sources: list[str]
    files: dict[str, str] = field(default_factory=dict)  # file (relative to the data root) -> its hash
    hash: str = ""


def read_texts(root: str | Path) -> Texts:
    """Every distinct text of the five sources under ``root`` (``../shared/data``), in source order."""
    root = Path(root)
    paths = {
        "wordnet": [root / "wordnet_glosses" / "wordnet30_glosses.tsv.gz"],
        "coco": [root / "coco_captions_val2017" / "captions.tsv"],
        "scifact": [root / "beir" / "scifact" / "corpus.jsonl"],
        "snli": [root / "snli_senteval" / f"snli_1.0_{s}.senteval.tsv" for s in ("dev", "test")],
        "stsb": [root / "stsb" / f"sts-{s}.csv" for s in ("train", "dev", "test")],
    }
    for path in [p for ps in paths.values() for p in ps]:
        if not path.is_file():
            raise FileNotFoundError(f"data: expected {str(path)!r} under the data root {str(root)!r}")
    seen: dict[str, str] = {}

    def add(source: str, text: str) -> None:
        text = " ".join(text.split())
        if text and text not in seen:
            seen[text] = source

    with gzip.open(paths["wordnet"][0], "rt", encoding="utf-8", newline="") as f:
        for row in _tsv_rows(f, "gloss", paths["wordnet"][0]):
            add("wordnet", row["gloss"])
    with open(paths["coco"][0], encoding="utf-8", newline="") as f:
        for row in _tsv_rows(f, "caption", paths["coco"][0]):
            add("coco", row["caption"])
    with open(paths["scifact"][0], encoding="utf-8") as f:
        for line in f:
            if line.strip():
                doc = json.loads(line)
                add("scifact", doc.get("title") or "")
                for sentence in _SENTENCE_END.split(doc.get("text") or ""):
                    add("scifact", sentence)
    for path in paths["snli"]:
        with open(path, encoding="utf-8", newline="") as f:
            for row in _tsv_rows(f, "sentence1", path):
                add("snli", row["sentence1"])
                add("snli", row["sentence2"])
    for path in paths["stsb"]:
        sts = read_sts(path)
        for a, b in zip(sts.sentences1, sts.sentences2):
            add("stsb", a)
            add("stsb", b)
    files = [p for ps in paths.values() for p in ps]
    return Texts(
        texts=list(seen), sources=list(seen.values()), hash=file_hash(files),
        files={str(p.relative_to(root)): file_hash(p) for p in files},
    )


def _tsv_rows(f, column: str, path: Path):
    reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    if column not in (reader.fieldnames or []):
        raise ValueError(f"{path}:1: expected a header with column {column!r}, got {reader.fieldnames!r}")
    return reader


def split_texts(texts: Texts, queries: int, corpus_size: int | None, seed: int) -> tuple[list[str], list[str], dict]:
    """Held-out query texts and corpus texts (disjoint), drawn in one seeded shuffle; counts per source."""
    if queries < 1:
        raise ValueError(f"queries: expected at least 1, got {queries}")
    available = len(texts.texts) - queries
    if corpus_size is None:
        corpus_size = available
    if not 1 <= corpus_size <= available:
        raise ValueError(
            f"corpus_size: expected 1..{available} ({len(texts.texts)} distinct texts less {queries} queries), "
            f"got {corpus_size}"
        )
    order = list(range(len(texts.texts)))
    random.Random(seed).shuffle(order)
    q_rows, c_rows = order[:queries], order[queries : queries + corpus_size]
    counts = {}
    for part, rows in (("queries", q_rows), ("corpus", c_rows)):
        found = Counter(texts.sources[i] for i in rows)
        counts[part] = {s: found[s] for s in SOURCES}
    return [texts.texts[i] for i in q_rows], [texts.texts[i] for i in c_rows], counts


# -- scale-up ------------------------------------------------------------------------------------------------------


def nearest_neighbour_cosine(vectors: np.ndarray, sample: int, seed: int) -> float:
    """Median, over a sample of rows, of the cosine between a row and its nearest other row (exact search)."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    scores, found = index.search(vectors[rows], 2)
    best = np.where(found[:, 0] == rows, scores[:, 1], scores[:, 0])
    return float(np.median(best))


def scale_up(vectors: np.ndarray, n: int, seed: int = 0, chunk: int = 100_000) -> tuple[np.ndarray, dict]:
    """``vectors`` (unit rows) followed by ``n - len(vectors)`` synthetic unit rows made from them (see the
    module docstring), and a record of how they were made."""
    real = len(vectors)
    if n <= real:
        raise ValueError(f"scale_to: expected more than the {real} real vectors, got {n}")
    rng = np.random.default_rng(seed)
    target = nearest_neighbour_cosine(vectors, 2000, seed)
    sample = vectors[rng.choice(real, size=min(real, 50_000), replace=False)].astype(np.float64)
    cov = np.cov(sample, rowvar=False)
    chol = np.linalg.cholesky(cov + 1e-9 * np.trace(cov) / len(cov) * np.eye(len(cov)))
    # |v| = 1 and noise ~ N(0, s^2 cov) nearly orthogonal to v: cos(v, v + noise) ~ 1 / sqrt(1 + s^2 tr(cov))
    scale = math.sqrt(max(1 / target**2 - 1, 0.0) / float(np.trace(cov)))
    out = np.empty((n, vectors.shape[1]), dtype=np.float32)
    out[:real] = vectors
    cosines = []
    for start in range(real, n, chunk):
        m = min(chunk, n - start)
        source = vectors[rng.integers(0, real, size=m)]
        noise = (rng.standard_normal((m, vectors.shape[1])) @ chol.T) * scale
        synthetic = source + noise.astype(np.float32)
        synthetic /= np.linalg.norm(synthetic, axis=1, keepdims=True)
        cosines.append(np.einsum("ij,ij->i", synthetic, source))
        out[start : start + m] = synthetic
    cosines = np.concatenate(cosines)
    return out, {
        "real": real,
        "synthetic": n - real,
        "method": "real corpus vector (uniform, with replacement) + Gaussian noise with the real vectors' covariance "
        "(estimated on a 50,000-row sample), scaled so that the expected cosine to the source equals the median "
        "nearest-neighbour cosine of the real vectors (2,000-row sample), re-normalised to unit length",
        "seed": seed,
        "target_cosine_to_source": target,
        "measured_cosine_to_source_mean": float(cosines.mean()),
        "measured_cosine_to_source_p10_p90": [float(np.quantile(cosines, 0.1)), float(np.quantile(cosines, 0.9))],
        "noise_scale": scale,
    }


# -- measuring -----------------------------------------------------------------------------------------------------


def set_threads(threads: int) -> None:
    """FAISS (OpenMP) and torch threads, process-wide: every method of a run uses the same."""
    import torch

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: expected an integer >= 1, got {threads!r}")
    faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)


@dataclass
class Options:
    flat_plans: list[str]
    hnsw_plans: list[str]
    hnsw_ef: list[int]
    hnsw_m: int = 32
    batch1_queries: int = 100
    batch: int = 64
    repeats: int = 3
    compact: bool = True
    compact_codes: str = "SQfp16"  # FAISS scalar quantizer of the compact stage one: SQfp16, SQ8, SQ6, SQ4
    ivf_plans: list[str] = field(default_factory=list)
    ivf_nprobe: list[int] = field(default_factory=lambda: [16])
    ivf_nlist: int = 0  # 0: a power of two near 4 sqrt(n), per scale

    def report(self, scale_to: int) -> dict:
        """The options as a report records them."""
        return {"flat_plans": self.flat_plans, "hnsw_plans": self.hnsw_plans, "hnsw_ef": self.hnsw_ef,
                "hnsw_m": self.hnsw_m, "hnsw_ef_construction": 40, "ivf_plans": self.ivf_plans,
                "ivf_nprobe": self.ivf_nprobe, "ivf_nlist": self.ivf_nlist or "auto",
                "batch1_queries": self.batch1_queries, "batch": self.batch, "repeats": self.repeats,
                "compact": self.compact, "compact_codes": self.compact_codes, "k": K, "scale_to": scale_to}

    def nlist(self, n: int) -> int:
        """Inverted lists of the IVF stage one over ``n`` vectors: ``ivf_nlist``, or the power of two nearest
        4 sqrt(n) (FAISS's guideline is 4 to 16 sqrt(n); the low end trains fastest on 2 cores)."""
        return self.ivf_nlist or 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))

    def check(self, dim: int) -> None:
        if any(p < 1 for p in self.ivf_nprobe) or not self.ivf_nprobe:
            raise ValueError(f"ivf_nprobe: expected one or more nprobe values >= 1, got {self.ivf_nprobe}")
        if self.compact_codes not in ("SQfp16", "SQ8", "SQ6", "SQ4"):
            raise ValueError(f"compact_codes: expected SQfp16, SQ8, SQ6 or SQ4, got {self.compact_codes!r}")
        if self.ivf_nlist < 0:
            raise ValueError(f"ivf_nlist: expected 0 (auto) or a number of lists >= 1, got {self.ivf_nlist}")
        for field_name in ("flat_plans", "hnsw_plans", "ivf_plans"):
            for text in getattr(self, field_name):
                plan = Plan.of(text)
                plan.check_dim(dim)
                if plan.max_dim != dim:
                    raise ValueError(f"{field_name}: expected plans ending at the full dim {dim}, got {text!r}")
        for field_name, what in (("hnsw_plans", "the HNSW prefix"), ("ivf_plans", "the IVF prefix")):
            firsts = {Plan.of(p).stages[0].dim for p in getattr(self, field_name)}
            if len(firsts) > 1:
                raise ValueError(f"{field_name}: expected one first-stage dim ({what}), got {sorted(firsts)}")
        for name in ("hnsw_m", "batch1_queries", "batch", "repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if any(ef < 1 for ef in self.hnsw_ef):
            raise ValueError(f"hnsw_ef: expected efSearch values >= 1, got {self.hnsw_ef}")


def _point(method: str, setting: str, search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray,
           truth: np.ndarray | None, options: Options) -> tuple[dict, np.ndarray]:
    """Timings at batch 1 and batch ``options.batch``, recall@10 (against ``truth``; None: this is the truth)."""
    s1, _ = time_batched(search, queries[: options.batch1_queries], 1, options.repeats)
    sb, rows = time_batched(search, queries, options.batch, options.repeats)
    n1 = min(options.batch1_queries, len(queries))
    return {
        "method": method,
        "setting": setting,
        "recall_at_10": 1.0 if truth is None else recall_at_k(rows, truth),
        "qps_batch1": n1 / s1,
        "ms_per_query_batch1": 1000 * s1 / n1,
        "qps_batch": len(queries) / sb,
    }, rows


def bench_scale(vectors: np.ndarray, queries: np.ndarray, options: Options, workdir: Path,
                log: Callable[[str], None] = print) -> dict:
    """Every method over ``vectors`` (unit rows) with ``queries``: one dict per measured point."""
    n, dim = vectors.shape
    points: list[dict] = []
    load = [os.getloadavg()[0]]

    # exact, full dim: the truth
    start = time.perf_counter()
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    build = time.perf_counter() - start
    memory = serialized_bytes(index)
    point, truth = _point("exact", "IndexFlatIP", lambda q: index.search(q, K)[1], queries, None, options)
    points.append({**point, "build_s": build, "memory_bytes": memory, "device": "cpu"})
    log(f"  exact: {points[-1]['qps_batch1']:,.0f} q/s at batch 1, {points[-1]['qps_batch']:,.0f} at batch {options.batch}")
    if faiss_gpus():
        start = time.perf_counter()
        gpu = faiss.index_cpu_to_gpu(gpu_resources(), 0, index)
        build = time.perf_counter() - start
        point, _ = _point("exact, GPU", "GpuIndexFlatIP", lambda q: gpu.search(q, K)[1], queries, truth, options)
        points.append({**point, "build_s": build, "memory_bytes": memory, "device": "gpu"})
        log(f"  exact on the GPU: {point['qps_batch1']:,.0f} q/s at batch 1, {point['qps_batch']:,.0f} at batch {options.batch}")
        del gpu
    del index

    # HNSW, full dim: FAISS's float32 graph (the baseline the targets name) and, with ``compact``, the same graph
    # over the compact stage one's codes (what a user short of memory would pick instead)
    m = options.hnsw_m
    graphs = [(f"HNSW{m}", True)] + ([(f"HNSW{m},{options.compact_codes}", False)] if options.compact else [])
    for factory, baseline in graphs:
        start = time.perf_counter()
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors[:100_000])  # scalar quantizers learn their ranges; a float32 graph learns nothing
        index.add(vectors)
        build = time.perf_counter() - start
        memory = serialized_bytes(index)
        log(f"  {factory} full dim built in {build:.0f} s")
        for ef in options.hnsw_ef:
            index.hnsw.efSearch = ef
            point, _ = _point(f"faiss {factory}, full dim", f"efSearch={ef}",
                              lambda q: index.search(q, K)[1], queries, truth, options)
            points.append({**point, "build_s": build, "memory_bytes": memory, "device": "cpu", "baseline": baseline})
            log(f"    efSearch {ef}: recall@10 {point['recall_at_10']:.3f}, {point['qps_batch']:,.0f} q/s")
        del index
    load.append(os.getloadavg()[0])

    # telescope plans; each knob (an IVF nprobe) is set on the built collection, no rebuild
    nlist, codes = options.nlist(n), options.compact_codes
    nprobes = [f"nprobe={p}" for p in options.ivf_nprobe]
    for kind, factory, dtype, plans, knobs in (
        ("exact prefix", "Flat", "float32", options.flat_plans, [""]),
        (f"HNSW{m} prefix", f"HNSW{m}", "float32", options.hnsw_plans, [""]),
        (f"HNSW{m},{codes} prefix, float16 rows", f"HNSW{m},{codes}", "float16", options.hnsw_plans if options.compact else [], [""]),
        (f"IVF{nlist} prefix", f"IVF{nlist},Flat", "float32", options.ivf_plans, nprobes),
        (f"IVF{nlist},{codes} prefix, float16 rows", f"IVF{nlist},{codes}", "float16", options.ivf_plans if options.compact else [], nprobes),
    ):
        if not plans:
            continue
        plans = [Plan.of(p) for p in plans]
        path = Path(tempfile.mkdtemp(prefix="bench-index-", dir=workdir))
        try:
            collection, timing = _build_collection(path, vectors, queries, factory, plans, dtype)
            with collection:
                held = collection.memory_bytes()
                log(f"  telescope {kind}: stage one built in "
                    + ", ".join(f"{s:.1f} s (prefix {d})" for d, s in timing["build_s"].items())
                    + f"; store {timing['store_s']:.1f} s")
                for knob, plan in ((knob, plan) for knob in knobs for plan in plans):
                    if knob:
                        collection.set_stage_one_params(knob)
                    first = plan.stages[0].dim
                    point, _ = _point(f"telescope, {kind}", f"{plan} {knob}".strip(),
                                      lambda q, p=plan: collection.search_rows(q, K, p)[1], queries, truth, options)
                    points.append({
                        **point,
                        "build_s": timing["build_s"][first],
                        "store_s": timing["store_s"],
                        "memory_bytes": held["vectors"] + held["stage_one"][first],
                        "memory_vectors_bytes": held["vectors"],
                        "memory_stage_one_bytes": held["stage_one"][first],
                        "flops_per_query": plan.flops(n),
                        "device": collection.stage_one_device(plan),
                    })
                    log(f"    {plan} {knob}: recall@10 {point['recall_at_10']:.3f}, {point['qps_batch']:,.0f} q/s")
        finally:
            shutil.rmtree(path, ignore_errors=True)
        load.append(os.getloadavg()[0])
    return {"vectors": n, "dim": dim, "queries": len(queries), "points": points, "loadavg_1min": load}


def _build_collection(path: Path, vectors: np.ndarray, queries: np.ndarray, factory: str,
                      plans: list[Plan], vector_dtype: str = "float32", chunk: int = 100_000) -> tuple[Collection, dict]:
    """A collection of ``vectors`` (held as ``vector_dtype``) with stage one ``factory`` on the plans' first
    prefix, stage ones built.

    ``store_s``: create, upsert (WAL) and commit (segments, stage-one file); ``build_s``: building each
    first-stage prefix index in memory (per prefix dim), timed by the first search that needs it.
    """
    n = len(vectors)
    firsts = sorted({p.stages[0].dim for p in plans})
    start = time.perf_counter()
    collection = Collection.create(path, vectors.shape[1], stage_one=factory, stage_one_dim=firsts[0],
                                   flush_rows=n + 1, vector_dtype=vector_dtype)
    for i in range(0, n, chunk):
        collection.upsert([str(r) for r in range(i, min(n, i + chunk))], vectors[i : i + chunk])
    store = time.perf_counter() - start
    build = {}
    for first in firsts:
        plan = next(p for p in plans if p.stages[0].dim == first)
        start = time.perf_counter()
        collection.search_rows(queries[:1], K, plan)
        build[first] = time.perf_counter() - start
    start = time.perf_counter()
    collection.commit()
    store += time.perf_counter() - start
    return collection, {"build_s": build, "store_s": store}


# -- targets, report -----------------------------------------------------------------------------------------------


def _hnsw_qps_at(hnsw: list[dict], recall: float, key: str) -> tuple[float | None, str]:
    """Full-dim HNSW queries/s at ``recall``: log-linear between the two points around it."""
    pts = sorted(hnsw, key=lambda p: p["recall_at_10"])
    if not pts or pts[-1]["recall_at_10"] < recall:
        return None, "no efSearch tried reaches this recall"
    for lo, hi in zip(pts, pts[1:]):
        if lo["recall_at_10"] <= recall <= hi["recall_at_10"] and hi["recall_at_10"] > lo["recall_at_10"]:
            t = (recall - lo["recall_at_10"]) / (hi["recall_at_10"] - lo["recall_at_10"])
            return math.exp((1 - t) * math.log(lo[key]) + t * math.log(hi[key])), (
                f"interpolated between {lo['setting']} and {hi['setting']}")
    above = [p for p in pts if p["recall_at_10"] >= recall]
    best = max(above, key=lambda p: p[key])
    return best[key], f"{best['setting']} (its recall {best['recall_at_10']:.3f} >= {recall:.3f})"


def targets(scale: dict, recall_target: float = 0.99, speedup_target: float = 10.0) -> dict:
    """Issue 9's targets on one scale: a plan with recall@10 >= 0.99 runs >= 10x faster than exact search, and
    beats full-dim HNSW (FAISS's float32 graph, the ``baseline`` points) at equal recall in queries/s and in
    memory. Judged per batch size. A plan whose recall no measured efSearch reaches beats HNSW only where it is
    faster than the most accurate efSearch tried: a larger efSearch, the only way HNSW could reach the plan's
    recall, searches more of the graph and is slower still. Each other full-dim graph measured (over quantized
    codes) is compared the same way under ``others``, which the verdict does not count."""
    exact = next(p for p in scale["points"] if p["method"] == "exact")
    graphs: dict[str, list[dict]] = {}
    for p in scale["points"]:
        if p["method"].startswith("faiss HNSW"):
            graphs.setdefault(p["method"], []).append(p)
    # reports written before quantized graphs were measured have one graph and no "baseline" field
    baseline = next((m for m, pts in graphs.items() if pts[0].get("baseline", True)), None)
    hnsw = graphs.get(baseline, [])
    plans = [p for p in scale["points"] if p["method"].startswith("telescope") and p["recall_at_10"] >= recall_target]
    out = {"recall_target": recall_target, "speedup_target": speedup_target}
    for key, label in (("qps_batch1", "batch1"), ("qps_batch", "batch")):
        rows = []
        for p in plans:
            versus = _versus(p, hnsw, key)
            speedup = p[key] / exact[key]
            rows.append({
                "plan": f"{p['method']} {p['setting']}",
                "recall_at_10": p["recall_at_10"],
                "speedup_vs_exact": speedup,
                "hnsw_qps_at_equal_recall": versus["qps_at_equal_recall"],
                "hnsw_how": versus["how"],
                "memory_vs_hnsw": versus["memory_vs"],
                "fast": speedup >= speedup_target,
                "hnsw_compared": versus["compared"],
                "beats_hnsw_qps": versus["beats_qps"],
                "beats_hnsw_memory": versus["beats_memory"],
                "others": {m: _versus(p, pts, key) for m, pts in graphs.items() if m != baseline},
            })
        meets = [r for r in rows if r["fast"] and r["beats_hnsw_qps"] and r["beats_hnsw_memory"]]
        out[label] = {"plans": rows, "met": bool(meets),
                      "fast_and_beats_hnsw_qps": any(r["fast"] and r["beats_hnsw_qps"] for r in rows)}
    return out


def _versus(plan: dict, hnsw: list[dict], key: str) -> dict:
    """One plan against one full-dim graph's efSearch points: queries/s at equal recall and memory."""
    hnsw_qps, how = _hnsw_qps_at(hnsw, plan["recall_at_10"], key)
    top = max(hnsw, key=lambda h: h["recall_at_10"]) if hnsw else None
    dominates = hnsw_qps is None and top is not None and plan[key] > top[key]
    if hnsw_qps is None and top is not None:
        how = (f"no efSearch tried reaches it; the most accurate, {top['setting']} (recall "
               f"{top['recall_at_10']:.3f}), runs {top[key]:,.0f} q/s")
    memory = hnsw[0]["memory_bytes"] if hnsw else None
    return {
        "qps_at_equal_recall": hnsw_qps,
        "how": how,
        "compared": top is not None,
        "beats_qps": (hnsw_qps is not None and plan[key] > hnsw_qps) or dominates,
        "memory_vs": plan["memory_bytes"] / memory if memory else None,
        "beats_memory": memory is not None and plan["memory_bytes"] < memory,
    }


def _mb(b: float) -> str:
    return f"{b / 2**20:,.0f}"


def _where(point: dict) -> str:
    """Where a point's search ran: telescope's stage one on its device, the re-ranking always on the CPU."""
    device = point.get("device", "cpu").upper()  # reports written before the GPU path ran all on the CPU
    return f"stage one {device}, re-rank CPU" if point["method"].startswith("telescope") else device


def markdown(report: dict) -> str:
    lines = [
        f"# {report['name']}: exact and HNSW search at full dim against telescope plans",
        "",
        f"Command: `{report['command']}`  ",
        *(_synthetic_header(report) if report.get("synthetic") else _data_header(report)),
        f"Threads {report['threads']} (FAISS OpenMP = torch) for every method; {report['host']['cpus']} CPUs; "
        f"{_gpus(report)}  ",
        f"Timing: batch 1 = the first {report['options']['batch1_queries']} queries one at a time; batch "
        f"{report['options']['batch']} = all queries; median of {report['options']['repeats']} runs. recall@10 against "
        "exact full-dim search (on the CPU), all queries. Memory = bytes held to answer queries (FAISS: serialised index; "
        "telescope: full-dim vectors + the plan's stage-one index). Build = index construction (telescope: its "
        "stage one; the durable write of the collection, WAL + segments, is the `store` column; exact on the GPU: "
        "the copy to the GPU).",
        "",
    ]
    return _scales_markdown(report, lines)


def _gpu_exact_lines(scale: dict, recall_target: float, batch: int) -> list[str]:
    """The targets compare with exact search on the CPU; where it also ran on a GPU, the plans against that too."""
    gpu = next((p for p in scale["points"] if p["method"] == "exact, GPU"), None)
    plans = [p for p in scale["points"] if p["method"].startswith("telescope") and p["recall_at_10"] >= recall_target]
    if gpu is None or not plans:
        return []
    out = []
    for key, name in (("qps_batch1", "batch 1"), ("qps_batch", f"batch {batch}")):
        best = max(plans, key=lambda p: p[key])
        out.append(f"- {name}, against exact search on the GPU ({gpu[key]:,.0f} q/s): the fastest plan with recall@10 "
                   f">= {recall_target}, {best['method']} {best['setting']}, runs {best[key] / gpu[key]:.2f}x it")
    return out


def _gpus(report: dict) -> str:
    gpus = report["host"].get("faiss_gpus", 0)
    if not gpus:
        return "FAISS sees no GPU: everything ran on the CPU"
    return (f"FAISS sees {gpus} GPU(s) ({report['host'].get('gpu_name', '?')}): exact search also on the GPU, and "
            "each telescope stage one whose index FAISS can move there (Flat, IVF) and whose shortlist is within "
            f"FAISS-GPU's k limit of {GPU_MAX_K} (`search on` column)")


def _synthetic_header(report: dict) -> list[str]:
    s = report["synthetic"]
    return [f"Vectors: {s['points']:,} synthetic x {s['dim']} dims and {s['queries']:,} queries, seed {s['seed']} "
            f"({s['method']})  "]


def _data_header(report: dict) -> list[str]:
    m = report["model"]
    return [
        f"Model: {m['tag']} (objective {m.get('objective')}, hash {m['hash']}, {m['path']}), vectors at "
        f"({m['num_layers']} layers, {m['full_dim']} dims)  ",
        f"Data: {report['data']['root']} (hash {report['data']['hash']}): {report['data']['distinct_texts']:,} distinct texts "
        f"of {', '.join(SOURCES)}; corpus {report['data']['corpus']:,}, held-out queries {report['data']['queries']:,}  ",
        "Corpus per source: " + ", ".join(f"{s} {c:,}" for s, c in report["data"]["counts"]["corpus"].items()) + "  ",
        f"Embedding: {report['embedding']['seconds']:.0f} s ({'from the cache' if report['embedding']['cached'] else 'encoded'}, "
        f"backend {report['embedding'].get('backend')}, batch {report['embedding']['batch_size']})  ",
    ]


def _scales_markdown(report: dict, lines: list[str]) -> str:
    for scale in report["scales"]:
        kind = " (synthetic)" if report.get("synthetic") else " (real)"
        title = f"{scale['vectors']:,} vectors" + (kind if not scale.get("scale_up") else
                                                   f" ({scale['scale_up']['real']:,} real + {scale['scale_up']['synthetic']:,} synthetic)")
        lines += [f"## {title}", "", f"Load average (1 min) during the run: {', '.join(f'{x:.1f}' for x in scale['loadavg_1min'])}", ""]
        lines += ["| method | setting | search on | recall@10 | q/s batch 1 | q/s batch 64 | memory MiB | build s | store s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for p in scale["points"]:
            store = f"{p['store_s']:.1f}" if "store_s" in p else ""
            lines.append(
                f"| {p['method']} | {p['setting']} | {_where(p)} | {p['recall_at_10']:.3f} | {p['qps_batch1']:,.0f} | "
                f"{p['qps_batch']:,.0f} | {_mb(p['memory_bytes'])} | {p['build_s']:.1f} | {store} |"
            )
        if scale.get("scale_up"):
            s = scale["scale_up"]
            lines += ["", f"Scale-up: {s['method']}. Seed {s['seed']}; target cosine {s['target_cosine_to_source']:.3f}, "
                      f"measured mean {s['measured_cosine_to_source_mean']:.3f} (p10-p90 "
                      f"{s['measured_cosine_to_source_p10_p90'][0]:.3f}-{s['measured_cosine_to_source_p10_p90'][1]:.3f})."]
        t = scale["targets"]
        lines += ["", f"### Targets at {scale['vectors']:,} vectors", ""]
        for label, name in (("batch1", "batch 1"), ("batch", f"batch {report['options']['batch']}")):
            rows = t[label]["plans"]
            if not rows:
                lines.append(f"- {name}: no telescope plan reached recall@10 >= {t['recall_target']} (target not met)")
                continue
            for r in rows:
                hnsw = (r["hnsw_how"] if r["hnsw_qps_at_equal_recall"] is None
                        else f"HNSW {r['hnsw_qps_at_equal_recall']:,.0f} q/s at equal recall ({r['hnsw_how']})")
                lines.append(
                    f"- {name}: {r['plan']}: recall@10 {r['recall_at_10']:.3f}, {r['speedup_vs_exact']:.1f}x exact "
                    f"({'>=' if r['fast'] else '<'} {t['speedup_target']:.0f}x); {hnsw}"
                    f"{'' if not r.get('hnsw_compared', True) else ': faster' if r['beats_hnsw_qps'] else ': slower'}; "
                    f"memory {r['memory_vs_hnsw']:.2f}x HNSW's ({'less' if r['beats_hnsw_memory'] else 'more'})"
                    + "".join(f"; against {m} (not a target): {'faster' if o['beats_qps'] else 'slower'}, memory "
                              f"{o['memory_vs']:.2f}x" for m, o in r.get("others", {}).items())
                )
            lines.append(f"- {name}: all three targets met by one plan: {'yes' if t[label]['met'] else 'no'}")
        lines += _gpu_exact_lines(scale, t["recall_target"], report["options"]["batch"])
        lines.append("")
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
    lines += [f"Versions: {versions}", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """recall@10 against queries/s (log), one panel per (scale, batch size), one series per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = report["scales"]
    fig, axes = plt.subplots(len(scales), 2, figsize=(12, 4.6 * len(scales)), squeeze=False)
    for row, scale in zip(axes, scales):
        for ax, key, label in ((row[0], "qps_batch1", "batch 1"), (row[1], "qps_batch", f"batch {report['options']['batch']}")):
            methods: dict[str, list[dict]] = {}
            for p in scale["points"]:
                methods.setdefault(p["method"], []).append(p)
            for method, pts in methods.items():
                pts = sorted(pts, key=lambda p: p[key])
                ax.plot([p[key] for p in pts], [p["recall_at_10"] for p in pts],
                        marker="*" if method == "exact" else "o", markersize=10 if method == "exact" else 5,
                        label=f"{method} ({_mb(pts[0]['memory_bytes'])} MiB" + (")" if len(pts) == 1 else "+)"))
            ax.axhline(0.99, color="grey", linestyle=":", linewidth=1)
            ax.set_xscale("log")
            ax.set_xlabel(f"queries/s ({label}, median)")
            ax.set_ylabel("recall@10 vs exact")
            ax.set_title(f"{scale['vectors']:,} vectors, {label}", fontsize=10)
            ax.grid(True, alpha=0.3, which="both")
            ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rejudge(path: Path) -> list[Path]:
    """Judge the targets of a written report again (after a change to :func:`targets`), measuring nothing."""
    report = json.loads(Path(path).read_text())
    for scale in report["scales"]:
        scale["targets"] = targets(scale)
    return write(report, Path(path).parent, Path(path).stem)


def write(report: dict, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md", out / f"{name}.png"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    plot(report, paths[2])
    return paths


def run_bench_index(
    embedder,
    data_root: Path,
    *,
    queries: int = 1000,
    corpus_size: int | None = None,
    scale_to: int = 0,
    threads: int = 2,
    options: Options,
    cache,
    batch_size: int = 64,
    seed: int = 0,
    workdir: Path | None = None,
    out: Path,
    name: str,
    command: str,
    log: Callable[[str], None] = print,
) -> dict:
    """Embed (or read from the cache) the corpus and the queries, run every method at the real size and, with
    ``scale_to``, at the scaled-up size; the report is written after each scale."""
    from telescope.eval.report import model_info

    set_threads(threads)
    options.check(embedder.full_dim)
    if scale_to and scale_to < 0:
        raise ValueError(f"scale_to: expected 0 (none) or a number of vectors, got {scale_to}")
    texts = read_texts(data_root)
    query_texts, corpus_texts, counts = split_texts(texts, queries, corpus_size, seed)
    if scale_to and scale_to <= len(corpus_texts):
        raise ValueError(f"scale_to: expected more than the corpus's {len(corpus_texts)} vectors, got {scale_to}")
    layer = embedder.num_layers
    start = time.perf_counter()
    hits = cache.hits
    corpus = cache.layers(embedder, corpus_texts, [layer], batch_size, show_progress=True)[layer]
    query_vectors = cache.layers(embedder, query_texts, [layer], batch_size)[layer]
    embedding = {"seconds": time.perf_counter() - start, "cached": cache.hits - hits == 2, "layer": layer,
                 "dim": embedder.full_dim, "batch_size": batch_size, "backend": getattr(embedder, "backend", "torch")}
    log(f"corpus {len(corpus):,} x {corpus.shape[1]}, {len(query_vectors):,} queries: "
        f"{embedding['seconds']:.0f} s ({'cached' if embedding['cached'] else 'encoded'})")
    info = model_info(embedder)
    info["objective"] = embedder.manifest.objective
    report = _new_report(name, command, threads, options.report(scale_to), notes=[
        "Stage-one HNSW keeps FAISS's efSearch 16; telescope's stage one searches a graph with a beam of "
        "max(efSearch, shortlist), so a plan's first shortlist is also its beam width.",
        "Synthetic vectors (scale-up) sit around real ones; recall on them measures the index, not the model's "
        "quality on a real million-text corpus.",
    ], model=info, data={
        "root": str(data_root), "hash": texts.hash, "files": texts.files, "distinct_texts": len(texts.texts),
        "corpus": len(corpus_texts), "queries": len(query_texts), "counts": counts, "seed": seed,
        "sentence_split": "SciFact abstracts split after . ! ? before a capital, digit or bracket",
    }, embedding=embedding)
    return _run_scales(report, corpus, query_vectors, [None] + ([scale_to] if scale_to else []), options, seed,
                       workdir, out, log)


def run_bench_index_synthetic(
    points: int,
    *,
    dim: int = 384,
    queries: int = 1000,
    threads: int = 2,
    options: Options,
    seed: int = 0,
    workdir: Path | None = None,
    out: Path,
    name: str,
    command: str,
    log: Callable[[str], None] = print,
) -> dict:
    """The same comparison on ``points`` prefix-structured random unit vectors (``nested_vectors``: clusters, the
    signal in the first coordinates) and ``queries`` more drawn from the same clusters: no model and no data
    folder, for a machine that has neither (the GPU check, ``tools/device``)."""
    from telescope.eval.synthetic import nested_vectors

    set_threads(threads)
    options.check(dim)
    if points < 1 or queries < 1:
        raise ValueError(f"synthetic: expected at least 1 point and 1 query, got {points} and {queries}")
    vectors = nested_vectors(points + queries, dim, seed)
    report = _new_report(name, command, threads, options.report(0), notes=[
        "Random vectors with a nested structure, not a model's embeddings: recall here measures the indexes, not "
        "retrieval quality.",
    ], synthetic={
        "points": points, "queries": queries, "dim": dim, "seed": seed,
        "method": "telescope.eval.synthetic.nested_vectors: 1,000 Gaussian cluster centres scaled by 1/sqrt(i+1) "
                  "per coordinate, points = centre + half-scale noise, unit length; the last `queries` rows are "
                  "the queries",
    })
    return _run_scales(report, vectors[:points], vectors[points:], [None], options, seed, workdir, out, log)


def _new_report(name: str, command: str, threads: int, options: dict, notes: list[str], **source) -> dict:
    """A report before its scales: what ran, on what (``source``: model, data and embedding, or synthetic), where."""
    from telescope.eval.report import environment

    return {"name": name, "command": command, **source, "threads": threads, "options": options, "scales": [],
            "notes": notes, **environment()}


def _run_scales(report: dict, corpus: np.ndarray, query_vectors: np.ndarray, sizes: list[int | None],
                options: Options, seed: int, workdir: Path | None, out: Path, log: Callable[[str], None]) -> dict:
    """``bench_scale`` at the corpus's size (None) and at each scaled-up size; the report is written after each."""
    workdir = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
    workdir.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        scale_start = time.perf_counter()
        scaled = None
        vectors = corpus
        if size is not None:
            log(f"scaling up to {size:,} vectors")
            vectors, scaled = scale_up(corpus, size, seed)
        log(f"{len(vectors):,} vectors:")
        result = bench_scale(vectors, query_vectors, options, workdir, log)
        result["scale_up"] = scaled
        result["wall_s"] = time.perf_counter() - scale_start
        result["targets"] = targets(result)
        report["scales"].append(result)
        write(report, out, report["name"])
        del vectors
    return report
