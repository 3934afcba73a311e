"""The rollout experiment (issue 7): can a new model serve queries against an old model's stored vectors?

Models: ``old`` (its vectors fill the collection), ``independent`` (a better model trained without regard to the
old one), ``bct`` (trained with the influence loss, same dim as old) and ``bt2`` (``[b ; a]``, b comparable with
old). Each is encoded once per text list at its last layer (``EmbeddingCache``: nothing is encoded twice across
runs). Rows, "query model / document model", each compared on the prefix the pair shares:

- STS-B (``--sts``: test by default, the dev file to choose settings; Spearman x100 of cosine vs gold;
  sentence1 by the query model, sentence2 by the document model);
- BEIR SciFact (nDCG@10, Recall@100, MRR@10 by pytrec_eval over the top 100 of exact search); the test
  queries by default, ``--beir-split train`` to choose settings on the train queries;
- "half-backfilled": a random half (seeded) of the documents (STS: of the sentence2 side) re-embedded by BT^2,
  the rest old. For SciFact this runs through a real ``Collection``: old vectors stored at their dim, the
  collection widened, the backfilled half upserted as the new version, BT^2 queries searched with the exact
  plan (old points scored on the 384-dim prefix, new ones at full dim, merged), exactly what a rollout serves.

The report (JSON + markdown) records the command, versions, model hashes, data hashes, and the three shape
checks of the BT^2 paper: BT^2 new/old above old/old and above BCT new/old; BT^2 new/new within 1 point of the
independent model. Run: ``python -m telescope.eval.rollout --old M --independent M --bt2 M --bct M``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from telescope.embedder import Embedder, load_embedder
from telescope.eval.cache import DEFAULT_CACHE, EmbeddingCache, texts_hash
from telescope.eval.datasets import read_beir, read_sts, shared_data
from telescope.eval.grid import shared_prefix
from telescope.eval.metrics import ir_metrics, run_from_rows, spearman_x100
from telescope.eval.report import command_line, environment, model_info
from telescope.index import Collection, Plan, exact_search, prefix_normalize

DATA = shared_data()
DEPTH = 100


def vectors_of(cache: EmbeddingCache, embedder: Embedder, texts: list[str], base: Embedder | None = None) -> np.ndarray:
    """Full-dim unit vectors at the model's last layer (cached). A model cut from ``base`` (``save_truncated``)
    reuses ``base``'s cached early-exit entry after checking it on a sample of texts."""
    layer = embedder.num_layers
    if base is not None and embedder.manifest.training.get("truncated_from") == base.manifest.tag and cache.root is not None:
        own = cache._path(embedder, texts_hash(texts), layer)
        theirs = cache._path(base, texts_hash(texts), layer)
        if not own.is_file() and theirs.is_file():
            sample = np.linspace(0, len(texts) - 1, 8).astype(int)
            reused = np.load(theirs)
            fresh = embedder.encode([texts[i] for i in sample])
            if np.abs(reused[sample] - fresh).max() < 1e-4:
                cache.put(embedder, texts, layer, reused)
    return cache.layers(embedder, texts, [layer], show_progress=True)[layer]


def pairs_spec(models: dict[str, Embedder]) -> list[tuple[str, str, str]]:
    """(row name, query model, document model) in report order; rows whose models are missing are left out."""
    rows = [
        ("old/old", "old", "old"),
        ("independent new/old (no compatibility training)", "independent", "old"),
        ("BCT new/old", "bct", "old"),
        ("BT^2 new/old", "bt2", "old"),
        ("BCT new/new", "bct", "bct"),
        ("BT^2 new/new", "bt2", "bt2"),
        ("independent new/new", "independent", "independent"),
    ]
    return [r for r in rows if r[1] in models and r[2] in models]


def half_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).choice(n, size=int(round(fraction * n)), replace=False)] = True
    return mask


def sts_rows(models: dict[str, Embedder], sts_file: Path, cache: EmbeddingCache, fraction: float, seed: int,
             base: Embedder | None) -> tuple[list[dict], dict]:
    data = read_sts(sts_file)
    left = {k: vectors_of(cache, m, data.sentences1, base) for k, m in models.items()}
    right = {k: vectors_of(cache, m, data.sentences2, base) for k, m in models.items()}
    rows = []
    for name, q, d in pairs_spec(models):
        dim = shared_prefix(models[q], models[d]).dim
        cosine = np.einsum("ij,ij->i", prefix_normalize(left[q], dim), prefix_normalize(right[d], dim))
        rows.append({"row": name, "query_model": q, "doc_model": d, "dim": dim, "spearman": spearman_x100(cosine, data.scores)})
    if "bt2" in models and "old" in models:
        mask = half_mask(len(data), fraction, seed)
        p = shared_prefix(models["bt2"], models["old"]).dim
        new_new = np.einsum("ij,ij->i", left["bt2"], right["bt2"])
        new_old = np.einsum("ij,ij->i", prefix_normalize(left["bt2"], p), prefix_normalize(right["old"], p))
        cosine = np.where(mask, new_new, new_old)
        rows.append({"row": f"BT^2 queries, {fraction:.0%} backfilled", "query_model": "bt2", "doc_model": "mixed",
                     "dim": f"{models['bt2'].full_dim} (new) / {p} (old)", "spearman": spearman_x100(cosine, data.scores)})
    return rows, {"file": str(sts_file), "hash": data.hash, "pairs": len(data)}


def beir_rows(models: dict[str, Embedder], root: Path, cache: EmbeddingCache, fraction: float, seed: int,
              base: Embedder | None, split: str = "test") -> tuple[list[dict], dict]:
    data = read_beir(root, split)
    docs = {k: vectors_of(cache, m, data.doc_texts, base) for k, m in models.items()}
    queries = {k: vectors_of(cache, m, data.query_texts, base) for k, m in models.items()}
    rows = []
    for name, q, d in pairs_spec(models):
        dim = shared_prefix(models[q], models[d]).dim
        qv, dv = prefix_normalize(queries[q], dim), prefix_normalize(docs[d], dim)
        found = exact_search(dv, qv, DEPTH)
        scores = np.take_along_axis(qv @ dv.T, found, axis=1)
        metrics = ir_metrics(data.qrels, run_from_rows(data.query_ids, data.doc_ids, scores, found))
        rows.append({"row": name, "query_model": q, "doc_model": d, "dim": dim, **metrics})
    if "bt2" in models and "old" in models:
        rows.append(_mixed_collection(models, data, docs, queries, fraction, seed))
    return rows, {"root": str(root), "hash": data.hash, "documents": len(data.doc_ids), "queries": len(data.query_ids)}


def _mixed_collection(models, data, docs, queries, fraction: float, seed: int) -> dict:
    """SciFact through a real half-backfilled collection (see the module doc)."""
    old, new = models["old"], models["bt2"]
    mask = half_mask(len(data.doc_ids), fraction, seed)
    ids = np.array(data.doc_ids)
    with tempfile.TemporaryDirectory(prefix="telescope-rollout-") as tmp:
        c = Collection.create(f"{tmp}/c", old.full_dim)
        c.upsert(list(ids), docs["old"], model_version=old.manifest.tag)
        c.reconfigure(dim=new.full_dim, default_plan=Plan.exact(new.full_dim))
        c.upsert(list(ids[mask]), docs["bt2"][mask], model_version=new.manifest.tag)
        c.commit()
        start = time.perf_counter()
        hits = c.search(queries["bt2"], k=DEPTH)
        seconds = time.perf_counter() - start
        versions = c.info()["model_versions"]
        c.close()
    run = {qid: {h.id: h.score for h in found} for qid, found in zip(data.query_ids, hits)}
    metrics = ir_metrics(data.qrels, run)
    new_share = float(np.mean([h.model_version == new.manifest.tag for found in hits for h in found[:10]]))
    return {"row": f"BT^2 queries, {fraction:.0%} backfilled (real collection)", "query_model": "bt2", "doc_model": "mixed",
            "dim": f"{new.full_dim} (new) / {old.full_dim} (old)", **metrics, "stored_versions": versions,
            "new_version_share_of_top10": round(new_share, 4), "search_seconds": round(seconds, 3)}


def shape_checks(rows: list[dict], metric: str) -> dict:
    by = {r["row"]: r[metric] for r in rows}
    checks = {}
    if {"BT^2 new/old", "old/old"} <= by.keys():
        checks["bt2_new_old_above_old_old"] = bool(by["BT^2 new/old"] > by["old/old"])
    if {"BT^2 new/old", "BCT new/old"} <= by.keys():
        checks["bt2_new_old_above_bct_new_old"] = bool(by["BT^2 new/old"] > by["BCT new/old"])
    if {"BT^2 new/new", "independent new/new"} <= by.keys():
        gap = by["independent new/new"] - by["BT^2 new/new"]
        checks["bt2_new_new_within_1_point_of_independent"] = bool(gap <= 1.0)
        checks["independent_minus_bt2_new_new"] = round(gap, 2)
    return checks


def markdown(report: dict) -> str:
    lines = [f"# Rollout experiment: {report['dataset']}", "", f"Command: `{report['command']}`", "",
             f"Started {report['started_utc']}, {report['wall_seconds']:.0f} s wall. Models:", ""]
    for key, info in report["models"].items():
        lines.append(f"- {key}: `{info['tag']}` ({info['num_layers']} layers, {info['full_dim']} dims, hash {info['hash']})")
    metric_keys = [k for k in ("spearman", "ndcg@10", "recall@100", "mrr@10") if k in report["rows"][0]]
    lines += ["", "| query / documents | prefix | " + " | ".join(metric_keys) + " |",
              "|---|---|" + "---|" * len(metric_keys)]
    for r in report["rows"]:
        lines.append(f"| {r['row']} | {r['dim']} | " + " | ".join(f"{r[k]:.2f}" for k in metric_keys) + " |")
    lines += ["", "Shape checks (the BT^2 paper's): " + ", ".join(f"{k} = {v}" for k, v in report["shape_checks"].items()), ""]
    if report.get("notes"):
        lines += [report["notes"], ""]
    return "\n".join(lines)


def _split(sts_file: Path) -> str:
    """``dev`` for sts-dev.csv / sts-dev.tsv, ``test`` for sts-test.*: the split goes into the report name."""
    return sts_file.stem.rsplit("-", 1)[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", required=True)
    parser.add_argument("--independent", required=True)
    parser.add_argument("--bt2")
    parser.add_argument("--bct")
    parser.add_argument("--base", default="default", help="the model --old was cut from (reuses its cached early exit)")
    parser.add_argument("--sts", default=str(DATA / "stsb" / "sts-test.csv"))
    parser.add_argument("--beir", default=str(DATA / "beir" / "scifact"))
    parser.add_argument("--beir-split", default="test", help="qrels split: train to choose settings, test to report")
    parser.add_argument("--datasets", default="sts,beir")
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--notes", default="")
    parser.add_argument("--tag", default="", help="appended to the report names (an ablation's setting, say)")
    args = parser.parse_args(argv)
    models = {"old": load_embedder(args.old), "independent": load_embedder(args.independent)}
    for key in ("bct", "bt2"):
        if getattr(args, key):
            models[key] = load_embedder(getattr(args, key))
    base = load_embedder(args.base)
    cache = EmbeddingCache(args.cache)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        began = time.perf_counter()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if dataset == "sts":
            rows, data = sts_rows(models, Path(args.sts), cache, args.fraction, args.seed, base)
            name, metric = f"rollout-stsb-{_split(Path(args.sts))}", "spearman"
        elif dataset == "beir":
            rows, data = beir_rows(models, Path(args.beir), cache, args.fraction, args.seed, base, args.beir_split)
            name, metric = f"rollout-scifact-{args.beir_split}", "ndcg@10"
        else:
            raise ValueError(f"--datasets: expected sts and/or beir, got {dataset!r}")
        name += f"-{args.tag}" if args.tag else ""
        for r in rows:
            for k in ("spearman", "ndcg@10", "recall@100", "mrr@10"):
                if k in r:
                    r[k] = round(float(r[k]), 2)
        report = {
            "kind": "rollout",
            "dataset": name,
            # as it is run (this file alone is no command), with the arguments main was given
            "command": command_line(["python", "-m", "telescope.eval.rollout", *(sys.argv[1:] if argv is None else argv)]),
            "started_utc": started,
            "wall_seconds": round(time.perf_counter() - began, 1),
            **environment(),
            "models": {k: {**model_info(m), "objective": m.manifest.objective, "training": {
                kk: m.manifest.training.get(kk) for kk in ("loss", "steps", "batch_size", "learning_rate", "loss_config", "truncated_from")
                if kk in m.manifest.training}} for k, m in models.items()},
            "data": data,
            "backfilled_fraction": args.fraction,
            "seed": args.seed,
            "metric": metric,
            "rows": rows,
            "shape_checks": shape_checks(rows, metric),
            "notes": args.notes,
        }
        (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / f"{name}.md").write_text(markdown(report))
        print(markdown(report), flush=True)


if __name__ == "__main__":
    main()
