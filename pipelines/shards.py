"""Parquet shards of the embeddings a build job writes, besides the collection (``--parquet-out DIR``).

For consumers outside telescope (a warehouse, another index): each shard holds ``id``, ``doc``,
``model_version`` and ``vector`` (fixed-size list of float32). A shard is written to a ``.tmp`` file and renamed
when complete, so a reader never sees a torn shard; the build job records documents as done only after the
shard holding them is renamed, so a crash loses no shard rows (the rerun embeds them again into a new shard).
Shards are a log: an incremental run writes only what it embedded, and the newest shard holding an id (names
sort by run start time) has its current vector; a point the job deleted (its document left the source, or
has fewer chunks now) gets a row with a null ``vector`` and ``model_version``, in a shard closed before the job
state forgets it. pyarrow's ``ParquetWriter`` does the writing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


class ShardWriter:
    """Append batches; a shard closes every ``rows_per_shard`` rows and at ``close()``."""

    def __init__(self, directory: str | Path, dim: int, rows_per_shard: int = 100_000):
        if isinstance(rows_per_shard, bool) or not isinstance(rows_per_shard, int) or rows_per_shard < 1:
            raise ValueError(f"rows_per_shard: expected an integer >= 1, got {rows_per_shard!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for debris in self.directory.glob("*.parquet.tmp"):  # torn shards of a crashed run
            debris.unlink()
        self.schema = pa.schema([
            ("id", pa.string()), ("doc", pa.string()), ("model_version", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
        ])
        self.dim = dim
        self.rows_per_shard = rows_per_shard
        now = time.time_ns()  # to the nanosecond: a second run in the same second must not replace these shards
        self.run = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9)) + f"{now % 10**9:09d}-{os.getpid()}"
        self.shards: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows = 0

    def write(self, batch: pa.Table, vectors: np.ndarray, model_version: str) -> bool:
        """Append a batch of points; True when this closed a shard (its rows are now on disk for good)."""
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
        self._append(pa.table({
            "id": batch.column("id"), "doc": batch.column("doc"),
            "model_version": pa.array([model_version] * batch.num_rows, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, self.dim),
        }, schema=self.schema))
        if self._rows >= self.rows_per_shard:
            self.flush()
            return True
        return False

    def delete(self, ids: list[str], docs: list[str]) -> None:
        """Record deleted points (rows with a null vector) and close the shard: they are on disk when this returns."""
        if not ids:
            return
        self._append(pa.table({
            "id": pa.array(ids, pa.string()), "doc": pa.array(docs, pa.string()),
            "model_version": pa.nulls(len(ids), pa.string()), "vector": pa.nulls(len(ids), self.schema.field("vector").type),
        }, schema=self.schema))
        self.flush()

    def _append(self, table: pa.Table) -> None:
        if self._writer is None:
            self._tmp = self.directory / f"embeddings-{self.run}-{len(self.shards):05d}.parquet.tmp"
            self._writer = pq.ParquetWriter(self._tmp, self.schema)
        self._writer.write_table(table)
        self._rows += table.num_rows

    def flush(self) -> None:
        """Close the open shard, if any (rename it into place)."""
        if self._writer is None:
            return
        self._writer.close()
        final = self._tmp.with_suffix("")  # drop .tmp
        os.replace(self._tmp, final)
        self.shards.append(final)
        self._writer, self._rows = None, 0
