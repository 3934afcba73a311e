"""A backfill process for the kill test: runs the rollout's backfill in small batches and prints each batch's ack.

Usage: python rollout_backfiller.py COLLECTION MODEL. Prints "ACK <written so far>" after each batch is durable.
"""

from __future__ import annotations

import sys

from telescope.embedder import load_embedder
from telescope.index import Collection
from telescope.pipelines.rollout import run_backfill


def main() -> None:
    path, model = sys.argv[1], sys.argv[2]
    collection = Collection.open(path)
    embedder = load_embedder(model)
    print("READY", flush=True)
    run_backfill(collection, embedder, batch_size=3, show_progress=False,
                 on_batch=lambda report: print(f"ACK {report.written}", flush=True))
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
