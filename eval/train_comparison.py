"""The training comparison of issue 4: one base, one data set, one step count, one seed; every objective.

From the packaged all-MiniLM-L6-v2, on ../shared/data/training_pairs/positives.tsv.gz, each run is a real
``telescope train`` command (run in a subprocess, so its speed and peak memory are its own):

    plain, mrl, 2dmse (sentence-transformers Matryoshka2dLoss), 2dmse-paper (the paper's four-term step),
    starbucks (SRL),
    smae (starbucks-mae pre-training on the pairs' sentences) then smae-starbucks (SRL from it),
    starbucks-mltp (SRL with multi-layer trainable pooling)

then STS-B test Spearman x100 and BEIR SciFact test nDCG@10 at the nested pairs (1,16) .. (6,384) with
telescope.eval (``evaluate_sts``, ``evaluate_beir`` with ``plans=[]``). Everything is cached under ``--work``
(trained models, embedding caches, one JSON per evaluation), so a rerun skips what is done and an interrupted
training resumes from its checkpoint. ``--report`` writes docs/results/training-comparison.{json,md} from
whatever is finished.

    python -m telescope.eval.train_comparison --steps 400 --threads 1           # train + evaluate
    python -m telescope.eval.train_comparison --steps 400 --report              # write the report
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

from telescope.eval.datasets import shared_data

SHARED = shared_data()
PAIRS_FILE = SHARED / "training_pairs" / "positives.tsv.gz"
STS_TEST = SHARED / "stsb" / "sts-test.csv"
STS_DEV = SHARED / "stsb" / "tsv" / "sts-dev.tsv"
SCIFACT = SHARED / "beir" / "scifact"
POINTS = [(1, 16), (2, 32), (3, 64), (4, 128), (5, 256), (6, 384)]
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"

# name: (objective, base run or "default", pooling, data "pairs" | "texts")
RUNS = {  # in the order they run: the runs the expected shape rests on first
    "starbucks": ("starbucks", "default", None, "pairs"),
    "2dmse": ("2dmse", "default", None, "pairs"),
    "2dmse-paper": ("2dmse-paper", "default", None, "pairs"),
    "plain": ("plain", "default", None, "pairs"),
    "mrl": ("mrl", "default", None, "pairs"),
    "starbucks-mltp": ("starbucks", "default", "mltp", "pairs"),
    "smae": ("starbucks-mae", "default", None, "texts"),
    "smae-starbucks": ("starbucks", "smae", None, "pairs"),
}
TABLE_ROWS = ["untrained", "plain", "mrl", "2dmse", "2dmse-paper", "starbucks", "smae-starbucks", "starbucks-mltp"]
SCIFACT_ORDER = ["starbucks", "2dmse", "untrained", "starbucks-mltp", "smae-starbucks", "2dmse-paper", "plain", "mrl"]


def smae_texts(work: Path, seed: int, count: int) -> Path:
    """The SMAE corpus: distinct sentences of the training pairs, shuffled with Random(seed), first ``count``."""
    path = work / f"smae_texts_seed{seed}_{count}.txt"
    if not path.exists():
        seen: dict[str, None] = {}
        with gzip.open(PAIRS_FILE, "rt", encoding="utf-8") as f:
            next(f)
            for line in f:
                cols = line.rstrip("\n").split("\t")
                for text in cols[2:4]:
                    if text.strip():
                        seen.setdefault(text.strip())
        texts = list(seen)
        random.Random(seed).shuffle(texts)
        path.write_text("\n".join(texts[:count]) + "\n", encoding="utf-8")
    return path


def train_command(name: str, args: argparse.Namespace, work: Path) -> list[str]:
    objective, base, pooling, data = RUNS[name]
    steps = args.smae_steps if objective == "starbucks-mae" else args.steps
    data_file = smae_texts(work, args.seed, steps * args.batch_size) if data == "texts" else PAIRS_FILE
    command = [
        "telescope", "train", "--objective", objective, "--data", str(data_file), "--out", str(work / "models" / name),
        "--base", base if base == "default" else str(work / "models" / base),
        "--steps", str(steps), "--batch-size", str(args.batch_size), "--seed", str(args.seed),
        "--threads", str(args.threads), "--dev-sts", str(STS_DEV), "--save-steps", str(args.save_steps),
    ]
    command += ["--lr", str(args.smae_lr if objective == "starbucks-mae" else args.lr)]
    if pooling:
        command += ["--pooling", pooling]
    return command


def run_training(name: str, args: argparse.Namespace, work: Path) -> None:
    if (work / "models" / name / "telescope.json").exists() and (work / "models" / name / "modules.json").exists():
        return
    command = train_command(name, args, work)
    _, base, _, _ = RUNS[name]
    if base != "default":
        run_training(base, args, work)
    print(f"[{time.strftime('%H:%M:%S')}] {shlex.join(command)}", flush=True)
    started = time.time()
    subprocess.run([sys.executable, "-m", "telescope.cli.main", *command[1:]], check=True)
    (work / "results").mkdir(parents=True, exist_ok=True)
    (work / "results" / f"{name}.train.json").write_text(
        json.dumps({"command": shlex.join(command), "wall_s": round(time.time() - started, 1)}, indent=2)
    )


def model_location(name: str, work: Path) -> str:
    return "default" if name == "untrained" else str(work / "models" / name)


def evaluate(name: str, task: str, work: Path, threads: int) -> dict | None:
    """STS-B test or SciFact test at POINTS for one model, cached in WORK/results/NAME.TASK.json."""
    out = work / "results" / f"{name}.{task}.json"
    if out.exists():
        return json.loads(out.read_text())
    if name != "untrained" and not (work / "models" / name / "telescope.json").exists():
        return None
    import torch

    from telescope.embedder import load_embedder
    from telescope.eval.cache import EmbeddingCache
    from telescope.eval.datasets import read_beir, read_sts

    torch.set_num_threads(threads)
    embedder = load_embedder(model_location(name, work), device="cpu")
    cache = EmbeddingCache(work / "embeddings")
    started = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] evaluate {name} {task}", flush=True)
    if task == "sts":
        from telescope.eval.sts import evaluate_sts

        data = read_sts(STS_TEST)
        result = evaluate_sts(embedder, data, POINTS, cache=cache)
        scores = {f"{l},{d}": round(v, 2) for (l, d), v in result.scores.items()}
        record = {"metric": "STS-B test Spearman x100", "data": str(STS_TEST), "data_hash": data.hash, "pairs": len(data)}
    else:
        from telescope.eval.beir import evaluate_beir

        data = read_beir(SCIFACT, "test")
        result = evaluate_beir(embedder, data, POINTS, plans=[], cache=cache, show_progress=True)
        scores = {f"{l},{d}": round(m["ndcg@10"] if "ndcg@10" in m else m["ndcg_cut_10"], 2) for (l, d), m in result.grid.items()}
        record = {"metric": "SciFact test nDCG@10 x100", "data": str(SCIFACT), "data_hash": data.hash,
                  "queries": result.queries, "documents": result.documents, "all_metrics": {
                      f"{l},{d}": {k: round(v, 2) for k, v in m.items()} for (l, d), m in result.grid.items()}}
    record.update({
        "model": name, "model_hash": embedder.model_hash, "scores": scores,
        "mean": round(sum(scores.values()) / len(scores), 2), "seconds": round(time.time() - started, 1),
        "torch_threads": threads,
        "command": f"python -m telescope.eval.train_comparison --only {name} --tasks {task}",
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    return record


def collect(work: Path) -> dict:
    rows = {}
    for name in ["untrained", *RUNS]:
        row = {}
        for task in ("sts", "scifact", "train"):
            path = work / "results" / f"{name}.{task}.json"
            if path.exists():
                row[task] = json.loads(path.read_text())
        manifest = work / "models" / name / "telescope.json"
        if manifest.exists():
            m = json.loads(manifest.read_text())
            t = m["training"]
            row["training"] = {k: t.get(k) for k in (
                "objective", "loss", "loss_config", "base_model", "data", "seed", "steps", "batch_size", "learning_rate",
                "head_learning_rate", "steps_per_second", "peak_rss_mb", "torch_threads", "train_seconds_this_process",
                "resumed_from_step", "first_logged_loss", "last_logged_loss", "versions")}
            row["stsb_dev_pairs_mean"] = m.get("eval", {}).get("stsb_dev_pairs_mean")
            row["stsb_dev_grid"] = m.get("eval", {}).get("stsb_dev_spearman_x100")
        if row:
            rows[name] = row
    return rows


def write_report(work: Path, args: argparse.Namespace) -> None:
    rows = collect(work)
    RESULTS.mkdir(parents=True, exist_ok=True)
    header = "| model | " + " | ".join(f"({l},{d})" for l, d in POINTS) + " | mean |"
    rule = "|---" * (len(POINTS) + 2) + "|"

    def table(task: str) -> list[str]:
        lines = [header, rule]
        for name in TABLE_ROWS:
            rec = rows.get(name, {}).get(task)
            if rec:
                cells = [f"{rec['scores'][f'{l},{d}']:.1f}" for l, d in POINTS]
                lines.append(f"| {name} | " + " | ".join(cells) + f" | {rec['mean']:.1f} |")
            else:
                lines.append(f"| {name} | " + " | ".join("not run" for _ in POINTS) + " | not run |")
        return lines

    speed = ["| run | objective | loss | steps | steps/s | torch threads | peak RSS MB | first -> last logged loss |",
             "|---|---|---|---|---|---|---|---|"]
    commands = []
    for name in RUNS:
        r = rows.get(name, {})
        t = r.get("training")
        if t:
            first, last = t.get("first_logged_loss"), t.get("last_logged_loss")
            speed.append(
                f"| {name} | {t['objective']} | {t['loss']} | {t['steps']} | {t['steps_per_second']} | "
                f"{t['torch_threads']} | {t['peak_rss_mb']} | "
                f"{first:.3f} -> {last:.3f} |" if first is not None else "|"
            )
        if "train" in r:
            commands.append(f"    {r['train']['command']}   # {r['train']['wall_s']} s wall")
    payload = {"command": " ".join(["python -m telescope.eval.train_comparison", *sys.argv[1:]]), "rows": rows,
               "points": POINTS, "steps": args.steps, "lr": args.lr, "smae_steps": args.smae_steps, "seed": args.seed,
               "batch_size": args.batch_size}
    (RESULTS / "training-comparison.json").write_text(json.dumps(payload, indent=2, sort_keys=True))
    notes_file = RESULTS / "training-comparison.notes.md"
    notes = notes_file.read_text() if notes_file.exists() else ""
    md = [
        "# Training comparison (issue 4)",
        "",
        f"From the packaged all-MiniLM-L6-v2; data `{PAIRS_FILE.relative_to(SHARED.parent.parent)}` (shuffled with "
        f"Random({args.seed})); {args.steps} steps of batch {args.batch_size}, learning rate {args.lr:g}, for every run; seed {args.seed}; "
        f"SMAE pre-training {args.smae_steps} steps before its SRL run. Numbers: `docs/results/training-comparison.json`.",
        "",
        "## STS-B test, Spearman x100, at the nested (layer, dim) pairs",
        "",
        *table("sts"),
        "",
        "## SciFact test, nDCG@10 x100, at the same pairs",
        "",
        *table("scifact"),
        "",
        "## Training speed and peak memory (each run its own process)",
        "",
        *speed,
        "",
        "## Commands",
        "",
        *commands,
        "",
        f"    {payload['command']}",
        "",
        notes,
    ]
    (RESULTS / "training-comparison.md").write_text("\n".join(md))
    print(f"wrote {RESULTS / 'training-comparison.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(os.path.expanduser("~/.cache/telescope/train_comparison")))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--smae-steps", type=int, default=None, help="SMAE pre-training steps (default: --steps)")
    parser.add_argument("--lr", type=float, default=2e-5, help="encoder learning rate of every fine-tuning run")
    parser.add_argument("--smae-lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save-steps", type=int, default=50)
    parser.add_argument("--only", nargs="*", default=None, help="run names (and/or 'untrained')")
    parser.add_argument("--tasks", nargs="*", default=["train", "sts", "scifact"])
    parser.add_argument("--report", action="store_true", help="only write the report from cached results")
    args = parser.parse_args()
    args.smae_steps = args.smae_steps or args.steps
    work = args.work / f"steps{args.steps}_bs{args.batch_size}_seed{args.seed}_lr{args.lr:g}"
    work.mkdir(parents=True, exist_ok=True)
    if args.report:
        write_report(work, args)
        return
    names = args.only or list(RUNS)
    trained = [n for n in names if n != "untrained"]
    if "sts" in args.tasks and (args.only is None or "untrained" in names):
        evaluate("untrained", "sts", work, args.threads)  # first: checks the data and the method (82.03 at (6,384))
    for name in trained:
        if "train" in args.tasks:
            run_training(name, args, work)
        if "sts" in args.tasks and name != "smae":
            evaluate(name, "sts", work, args.threads)
    if "scifact" in args.tasks:
        for name in SCIFACT_ORDER:
            if name in names or (name == "untrained" and args.only is None):
                evaluate(name, "scifact", work, args.threads)
    write_report(work, args)


if __name__ == "__main__":
    main()
