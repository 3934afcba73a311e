"""Helpers of the eval tests (no tests here): a small BEIR folder, an STS file, a second tiny model, the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = "alpha beta gamma delta protein cell gene virus cancer brain heart blood tissue drug dose trial mouse human".split()


def make_beir(root: Path, n_docs: int = 40, n_queries: int = 10, graded: bool = True) -> Path:
    """Queries copy a document's text, so every query's first relevant document is its nearest neighbour."""
    rng = random.Random(0)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    docs = [(f"d{i}", " ".join(rng.choice(WORDS) for _ in range(10))) for i in range(n_docs)]
    with open(root / "corpus.jsonl", "w") as f:
        for doc_id, text in docs:
            f.write(json.dumps({"_id": doc_id, "title": "T", "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for j in range(n_queries):
            f.write(json.dumps({"_id": f"q{j}", "text": "T " + docs[3 * j][1]}) + "\n")
    with open(root / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for j in range(n_queries - 2):  # the last two queries have no judgement: not evaluated
            f.write(f"q{j}\td{3 * j}\t{2 if graded else 1}\nq{j}\td{3 * j + 1}\t1\n")
    return root


def make_sts(path: Path, n: int = 24) -> Path:
    rng = random.Random(1)
    lines = ["sentence1\tsentence2\tscore"]
    for i in range(n):
        a = [rng.choice(WORDS) for _ in range(6)]
        b = a[: i % 6] + [rng.choice(WORDS) for _ in range(6 - i % 6)] + ["end"]  # no identical pair: no tied cosines
        a, b = " ".join(a), " ".join(b)
        lines.append(f"{a}\t{b}\t{rng.uniform(0, 5):.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def build_compatible_model(out: Path, old_id: str = "tiny-bert", prefix: int | None = 16) -> Path:
    """A second tiny model (32 dims, other weights) whose manifest says its first ``prefix`` dims match ``old_id``."""
    from telescope.embedder.manifest import CompatibleWith, ModelManifest
    from telescope.embedder.tiny import build_tiny_model

    build_tiny_model(out, hidden=32, seed=1)
    manifest = ModelManifest.load(out)
    manifest.id = "tiny-new"
    manifest.compatible_with = CompatibleWith(old_id, prefix) if prefix else None
    manifest.save(out)
    return out


