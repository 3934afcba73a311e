"""Two-tower retrieval on MovieLens latest-small: Unified Embedding against per-feature and collision-free tables.

The comparison of Coleman et al. (NeurIPS 2023), "Unified Embedding": feature f of value v is
E_f(v) = concat_{j<k_f} W_{j mod T}[h_{f,j}(v) mod B] from shared tables (multiplexed), against one hashed table
per feature and against one row per value (collision-free), quality against embedding parameter bytes.

Protocol (written here because no kept library has it for these towers):

- Data: ../shared/data/movielens_latest_small (GroupLens license: read at run time, never copied). Every rating
  is an implicit positive. Each user's ``holdout`` latest ratings (timestamp, then movieId) are the test set;
  the rest train the towers and build the user features.
- User tower (categorical only): user id, the genres of the user's training movies (a bag weighted by count),
  the tags anyone applied to those movies (lower-cased, the user's ``max_tags`` most frequent). Its text part is
  predicted from its fields (telescope.embedder.fused, ``head_from_fields``).
- Item tower: the title's text vector from the packaged all-MiniLM-L6-v2 (cached by telescope.eval.cache: model
  hash + titles hash) plus movie id, genres, year (from the title; missing when absent). Fused = [text, tail].
- Training: telescope.embedder.unified_training.train_towers (sampled softmax: batch positives plus uniform
  negatives). Same seeds, epochs and tower sizes for every method; only the categorical module changes.
- Retrieval: every movie's fused vector in a FAISS-backed telescope Collection (exact plan at full dim); each
  user's vector searches it; movies the user rated in training are removed; Recall@10, Recall@50 and nDCG@10
  (pytrec_eval) over users against the held-out movies.
- Budgets: fractions of the collision-free table bytes at ``chunk_dim``; the multiplexed and per-feature tables
  are sized to each budget (per-feature: rows in proportion to each feature's vocabulary x dim); collision-free
  meets smaller budgets only by narrower chunks (``cf_chunk_dims``), so it is a curve too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import platform
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from telescope.embedder.fused import FusedTower
from telescope.embedder.unified import BYTES_PER_PARAM, FeatureSpec
from telescope.embedder.unified_training import TowerInputs, build_categorical, encode_towers, train_towers

DATA_FILES = ("movies.csv", "ratings.csv", "tags.csv")
USER_FIELDS = ("user.id", "user.genres", "user.tags")
ITEM_FIELDS = ("item.id", "item.genres", "item.year")
METHODS = ("unified", "per_feature", "per_feature_uniform", "collision_free")


def feature_specs(id_chunks: int = 4, tag_chunks: int = 2) -> list[FeatureSpec]:
    """The six features; ids get more chunks (more dims) than the small vocabularies."""
    return [
        FeatureSpec("user.id", chunks=id_chunks),
        FeatureSpec("user.genres", chunks=1, multi=True),
        FeatureSpec("user.tags", chunks=tag_chunks, multi=True),
        FeatureSpec("item.id", chunks=id_chunks),
        FeatureSpec("item.genres", chunks=1, multi=True, sep="|"),
        FeatureSpec("item.year", chunks=1),
    ]


@dataclass
class MovieLens:
    movie_ids: list[int]
    titles: list[str]
    genres: list[str]
    years: list[int | None]
    train: np.ndarray  # (m, 2) user index, item index
    test: dict[int, set[int]]  # user index -> held-out item indices
    seen: dict[int, set[int]]  # user index -> training item indices
    user_ids: list[int]
    user_genres: list[list[str]]
    user_tags: list[list[str]]
    md5: dict[str, str] = field(default_factory=dict)


_YEAR = re.compile(r"\((\d{4})\)\s*$")


def load_movielens(root: str | Path, holdout: int = 5, max_tags: int = 32) -> MovieLens:
    """Read the CSVs, split each user's latest ``holdout`` ratings off, and build the tower features."""
    root = Path(root)
    for name in DATA_FILES:
        if not (root / name).is_file():
            raise FileNotFoundError(f"movielens: expected {name} in {str(root)!r} (../shared/data/movielens_latest_small)")
    if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 1:
        raise ValueError(f"holdout: expected an integer >= 1, got {holdout!r}")
    md5 = {name: hashlib.md5((root / name).read_bytes()).hexdigest() for name in DATA_FILES}
    movie_ids, titles, genres, years = [], [], [], []
    with open(root / "movies.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            movie_ids.append(int(row["movieId"]))
            titles.append(row["title"].strip())
            genres.append(row["genres"])
            m = _YEAR.search(row["title"])
            years.append(int(m.group(1)) if m else None)
    item_of = {m: i for i, m in enumerate(movie_ids)}
    tags_of: dict[int, Counter] = defaultdict(Counter)
    with open(root / "tags.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if int(row["movieId"]) in item_of:
                tags_of[item_of[int(row["movieId"])]][row["tag"].strip().lower()] += 1
    by_user: dict[int, list[tuple[int, int]]] = defaultdict(list)
    with open(root / "ratings.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_user[int(row["userId"])].append((int(row["timestamp"]), int(row["movieId"])))
    user_ids = sorted(by_user)
    train, test, seen, user_genres, user_tags = [], {}, {}, [], []
    for u, uid in enumerate(user_ids):
        history = sorted(by_user[uid])
        kept, held = history[:-holdout], history[-holdout:]
        items = [item_of[m] for _, m in kept]
        train.extend((u, i) for i in items)
        seen[u] = set(items)
        test[u] = {item_of[m] for _, m in held}
        user_genres.append([g for i in items for g in genres[i].split("|")])
        tag_counts = Counter()
        for i in items:
            tag_counts.update(tags_of.get(i, {}))
        user_tags.append([t for t, c in tag_counts.most_common(max_tags) for _ in range(c)])
    return MovieLens(movie_ids, titles, genres, years, np.asarray(train, dtype=np.int64), test, seen, user_ids, user_genres, user_tags, md5)


def title_vectors(data: MovieLens, cache_dir: str | Path | None, embedder=None) -> tuple[np.ndarray, str]:
    """The packaged model's unit vectors of every title (last layer, full dim), through telescope.eval's cache."""
    from telescope.embedder import load_embedder
    from telescope.eval.cache import EmbeddingCache

    embedder = embedder or load_embedder("default")
    layer = embedder.num_layers
    vectors = EmbeddingCache(cache_dir).layers(embedder, data.titles, [layer], batch_size=128, show_progress=True)[layer]
    return vectors, embedder.model_hash


def field_values(data: MovieLens) -> dict[str, list]:
    return {
        "user.id": data.user_ids,
        "user.genres": data.user_genres,
        "user.tags": data.user_tags,
        "item.id": data.movie_ids,
        "item.genres": data.genres,
        "item.year": data.years,
    }


def collision_free_bytes(specs: list[FeatureSpec], values: dict[str, list], chunk_dim: int) -> int:
    from telescope.embedder.unified_training import _vocabulary

    vocab = _vocabulary(specs, values)
    return sum(len(vocab[f.name]) * f.chunks * chunk_dim * BYTES_PER_PARAM for f in specs)


@dataclass
class RunConfig:
    method: str
    budget_bytes: int | None
    chunk_dim: int
    tail_dim: int = 64
    hidden: int = 128
    epochs: int = 4
    batch_size: int = 1024
    negatives: int = 512
    lr: float = 5e-3
    scale: float = 20.0
    seed: int = 0


def run_one(data: MovieLens, titles: np.ndarray, config: RunConfig, specs: list[FeatureSpec], log=print) -> dict:
    """Train the two towers with one categorical module and measure retrieval through a Collection."""
    torch.manual_seed(config.seed)
    values = field_values(data)
    kind = "per_feature" if config.method.startswith("per_feature") else config.method
    allocation = "uniform" if config.method == "per_feature_uniform" else "proportional"
    categorical = build_categorical(
        kind, specs, config.chunk_dim, budget_bytes=config.budget_bytes, values=values, seed=config.seed, allocation=allocation
    )
    user_tower = FusedTower(categorical, USER_FIELDS, titles.shape[1], config.tail_dim, head_from_fields=True,
                            hidden=config.hidden, learn_mix=True)
    item_tower = FusedTower(categorical, ITEM_FIELDS, titles.shape[1], config.tail_dim, hidden=config.hidden)
    users = TowerInputs(None, {n: categorical.lookup(n, values[n]) for n in USER_FIELDS})
    items = TowerInputs(torch.from_numpy(titles), {n: categorical.lookup(n, values[n]) for n in ITEM_FIELDS})
    start = time.perf_counter()
    losses = train_towers(
        user_tower, item_tower, users, items, data.train, epochs=config.epochs, batch_size=config.batch_size,
        negatives=config.negatives, scale=config.scale, lr=config.lr, seed=config.seed, log=log,
    )
    train_s = time.perf_counter() - start
    metrics = retrieval_metrics(data, encode_towers(user_tower, users), encode_towers(item_tower, items))
    tables = {id(p) for p in categorical.parameters()}
    dense = sum(p.numel() for p in {id(p): p for t in (user_tower, item_tower) for p in t.parameters()}.values() if id(p) not in tables)
    return {
        "method": config.method,
        "budget_bytes": config.budget_bytes,
        "parameter_bytes": categorical.parameter_bytes,
        "dense_parameters": dense,
        "categorical": {k: v for k, v in categorical.config().items() if k != "vocab"},
        "config": config.__dict__,
        "losses": losses,
        "train_s": round(train_s, 1),
        "mix_user": float(user_tower.mix.detach()),
        **metrics,
    }


def retrieval_metrics(data: MovieLens, user_vectors: np.ndarray, item_vectors: np.ndarray, k_max: int = 50) -> dict:
    """Recall@10, Recall@50, nDCG@10 over users, searching a FAISS-backed Collection, seen movies removed."""
    import pytrec_eval

    from telescope.index import Collection, Plan

    dim = item_vectors.shape[1]
    with tempfile.TemporaryDirectory() as tmp:
        collection = Collection.create(Path(tmp) / "movies", dim, default_plan=Plan.exact(dim, k_max))
        collection.upsert([str(m) for m in data.movie_ids], item_vectors, model_version="movielens-two-tower:eval")
        collection.commit()
        depth = min(len(data.movie_ids), k_max + max(len(s) for s in data.seen.values()))
        scores, rows = collection.search_rows(user_vectors, k=depth)
        collection.close()
    run, qrels = {}, {}
    for u in range(len(data.user_ids)):
        ranked = [(r, s) for r, s in zip(rows[u], scores[u]) if r >= 0 and r not in data.seen[u]][:k_max]
        run[str(u)] = {str(r): float(s) for r, s in ranked}
        qrels[str(u)] = {str(i): 1 for i in data.test[u]}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"recall.10", "recall.50", "ndcg_cut.10"})
    per_user = evaluator.evaluate(run)
    mean = lambda key: float(np.mean([m[key] for m in per_user.values()]))  # noqa: E731
    return {"recall@10": mean("recall_10"), "recall@50": mean("recall_50"), "ndcg@10": mean("ndcg_cut_10")}


def popularity_metrics(data: MovieLens) -> dict:
    """The reference without any model: movies ranked by training popularity."""
    counts = np.bincount(data.train[:, 1], minlength=len(data.movie_ids)).astype(np.float32)
    items = np.zeros((len(data.movie_ids), 2), dtype=np.float32)
    items[:, 0] = 1.0
    items[:, 1] = counts / counts.max()
    users = np.tile(np.asarray([[0.0, 1.0]], dtype=np.float32), (len(data.user_ids), 1))
    # cosine with (0, 1) is monotone in popularity once every item has the same first coordinate
    return retrieval_metrics(data, users, items)


def run_benchmark(
    data_root: str | Path,
    out_dir: str | Path,
    *,
    fractions: tuple[float, ...] = (1 / 16, 1 / 64, 1 / 256),
    chunk_dim: int = 16,
    cf_chunk_dims: tuple[int, ...] = (16, 4),
    epochs: int = 4,
    seed: int = 0,
    methods: tuple[str, ...] = METHODS,
    cache_dir: str | Path | None = ".cache/embeddings",
    command: str = "",
    resume: bool = True,
    log=print,
) -> dict:
    """Every (method, budget) run, then JSON + markdown + PNG under ``out_dir`` (prefix ``unified-movielens``).

    With ``resume``, runs of an earlier report in ``out_dir`` with the same data, text model, features and
    run configuration are kept instead of trained again (each run is deterministic given its configuration).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods: expected some of {', '.join(METHODS)}, got {list(methods)}")
    torch.set_num_threads(1)
    data = load_movielens(data_root)
    titles, model_hash = title_vectors(data, cache_dir)
    specs = feature_specs()
    values = field_values(data)
    full = collision_free_bytes(specs, values, chunk_dim)
    log(f"collision-free tables at chunk_dim {chunk_dim}: {full} bytes; budgets {[int(full * f) for f in fractions]}")
    hashed = [m for m in methods if m != "collision_free"]
    plan = [RunConfig(m, int(full * f), chunk_dim, epochs=epochs, seed=seed) for f in sorted(fractions) for m in hashed]
    if "collision_free" in methods:
        plan += [RunConfig("collision_free", None, d, epochs=epochs, seed=seed) for d in sorted(cf_chunk_dims)]
    report = {
        "benchmark": "unified-movielens",
        "command": command,
        "versions": _versions(),
        "data": {"root": str(data_root), "md5": data.md5, "users": len(data.user_ids), "movies": len(data.movie_ids),
                 "train_pairs": int(len(data.train)), "holdout_per_user": 5},
        "text_model": {"id": "all-MiniLM-L6-v2", "hash": model_hash},
        "features": [f.__dict__ for f in specs],
        "collision_free_bytes": full,
        "fractions": list(fractions),
        "popularity": popularity_metrics(data),
        "planned_runs": len(plan),
        "runs": [],
    }
    done = _earlier_runs(Path(out_dir) / "unified-movielens.json", report) if resume else {}
    for config in plan:  # smallest budgets first; the report is rewritten after every run, so a cut run keeps its figures
        key = json.dumps(config.__dict__, sort_keys=True)
        if key in done:
            log(f"-- {config.method} budget={config.budget_bytes} chunk_dim={config.chunk_dim}: kept from the earlier report")
            report["runs"].append(done[key])
            continue
        log(f"-- {config.method} budget={config.budget_bytes} chunk_dim={config.chunk_dim}")
        r = run_one(data, titles, config, specs, log=log)
        report["runs"].append(r)
        log(f"   bytes {r['parameter_bytes']}: R@10 {r['recall@10']:.4f} R@50 {r['recall@50']:.4f} nDCG@10 {r['ndcg@10']:.4f} ({r['train_s']} s)")
        write_report(report, out_dir)
    write_report(report, out_dir)
    return report


def _earlier_runs(path: Path, report: dict) -> dict[str, dict]:
    """Runs of an earlier report measured on the same data, text model and features, by configuration."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    same = all(old.get(k) == report[k] for k in ("data", "text_model", "features", "collision_free_bytes"))
    return {json.dumps(r["config"], sort_keys=True): r for r in old.get("runs", [])} if same else {}


def _versions() -> dict:
    import faiss

    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "faiss": faiss.__version__, "platform": platform.platform()}


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"unified-movielens.{ext}" for ext in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(report, indent=2, sort_keys=True))
    paths["md"].write_text(markdown(report))
    plot(report, paths["png"])
    return paths


NAMES = {
    "unified": "multiplexed (Unified Embedding)",
    "per_feature": "per-feature hashed (rows prop. to vocab)",
    "per_feature_uniform": "per-feature hashed (equal rows, capped)",
    "collision_free": "collision-free",
}


def markdown(report: dict) -> str:
    lines = [
        "# Unified Embedding on MovieLens latest-small: two-tower retrieval",
        "",
        f"Command: `{report['command']}`  ",
        f"Versions: {report['versions']}  ",
        f"Data md5: {report['data']['md5']}; {report['data']['users']} users, {report['data']['movies']} movies, "
        f"{report['data']['train_pairs']} training pairs, {report['data']['holdout_per_user']} latest ratings per user held out.  ",
        f"Text model: {report['text_model']['id']} ({report['text_model']['hash']}). "
        f"Collision-free tables at chunk_dim 16: {report['collision_free_bytes']:,} bytes.",
        "",
        *([f"**Partial: {len(report['runs'])} of {report['planned_runs']} planned runs finished.**", ""]
          if len(report["runs"]) < report.get("planned_runs", 0) else []),
        "| method | budget (bytes) | table bytes | chunk_dim | Recall@10 | Recall@50 | nDCG@10 | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(report["runs"], key=lambda r: (-(r["budget_bytes"] or r["parameter_bytes"]), METHODS.index(r["method"]))):
        budget = f"{r['budget_bytes']:,}" if r["budget_bytes"] else "-"
        lines.append(
            f"| {NAMES[r['method']]} | {budget} | {r['parameter_bytes']:,} | {r['config']['chunk_dim']} | "
            f"{r['recall@10']:.4f} | {r['recall@50']:.4f} | {r['ndcg@10']:.4f} | {r['train_s']} |"
        )
    p = report["popularity"]
    lines += ["", f"Popularity (no model): Recall@10 {p['recall@10']:.4f}, Recall@50 {p['recall@50']:.4f}, nDCG@10 {p['ndcg@10']:.4f}.", ""]
    lines += [
        "Multiplexed minus per-feature at equal budget (prop. = rows in proportion to vocabulary; equal = same rows per",
        "feature, capped at its vocabulary):",
        "",
        "| budget (bytes) | vs | dRecall@10 | dRecall@50 | dnDCG@10 |",
        "|---:|---|---:|---:|---:|",
    ]
    by = {(r["method"], r["budget_bytes"]): r for r in report["runs"]}
    for budget in sorted({r["budget_bytes"] for r in report["runs"] if r["budget_bytes"]}, reverse=True):
        for other, label in (("per_feature", "prop."), ("per_feature_uniform", "equal")):
            u, p = by.get(("unified", budget)), by.get((other, budget))
            if u and p:
                lines.append(
                    f"| {budget:,} | {label} | {u['recall@10'] - p['recall@10']:+.4f} | {u['recall@50'] - p['recall@50']:+.4f} "
                    f"| {u['ndcg@10'] - p['ndcg@10']:+.4f} |"
                )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("recall@10", "recall@50", "ndcg@10")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, metric in zip(axes, metrics):
        for method, marker in (("unified", "o"), ("per_feature", "s"), ("per_feature_uniform", "D"), ("collision_free", "^")):
            runs = sorted((r for r in report["runs"] if r["method"] == method), key=lambda r: r["parameter_bytes"])
            if runs:
                ax.plot([r["parameter_bytes"] for r in runs], [r[metric] for r in runs], marker=marker, label=NAMES[method])
        ax.axhline(report["popularity"][metric], color="gray", linestyle=":", label="popularity")
        ax.set_xscale("log")
        ax.set_xlabel("embedding table bytes (log)")
        ax.set_ylabel(metric)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("MovieLens latest-small two-tower retrieval: quality vs embedding parameter bytes")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["MovieLens", "RunConfig", "feature_specs", "load_movielens", "run_benchmark", "run_one", "title_vectors"]
