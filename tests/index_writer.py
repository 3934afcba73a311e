"""A writer process for the crash test: upserts batches of deterministic vectors and prints each ack.

Usage: python index_writer.py PATH DIM. Prints "ACK <first> <last>" after each upsert returned (durable),
and commits every few batches so a kill can land inside a commit too.
"""

from __future__ import annotations

import sys

import numpy as np

from index_helpers import vector_for
from telescope.index import Collection


def main() -> None:
    path, dim = sys.argv[1], int(sys.argv[2])
    c = Collection.open(path)
    start = len(c)
    batch = 7
    for b in range(100_000):
        first = start + b * batch
        ids = list(range(first, first + batch))
        c.upsert([f"p{i}" for i in ids], np.stack([vector_for(i, dim) for i in ids]), [{"i": i} for i in ids])
        print(f"ACK {ids[0]} {ids[-1]}", flush=True)
        if b % 5 == 4:
            c.commit()


if __name__ == "__main__":
    main()
