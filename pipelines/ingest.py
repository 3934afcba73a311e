"""Embed texts in batches and upsert them into a collection: the one ingest loop.

Every way texts reach a collection (``telescope index add``, the demo, ``telescope index build`` on either
engine) goes through ``ingest_windows``; it records the embedder's model version with every vector.

Texts arrive as *windows*: Arrow tables of points (``id``, ``text``, ``payload`` as JSON text, ``doc``). An
*encoder* turns windows into (batch, vectors) pairs: ``LocalEncoder`` here sorts each window by text length and
embeds it batch by batch in this process (sorting across a window of thousands of texts, rather than within
one batch, is what cuts padding); ``telescope.pipelines.ray_engine.RayEncoder`` does the same on a Ray actor
pool. The loop upserts the embedded batches a few hundred points at a time (durable when ``upsert`` returns:
one WAL fsync per upsert), and reports each batch to ``on_batch`` (Parquet shards; the build job records
finished documents there).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from telescope.embedder import Embedder
from telescope.embedder.progress import progress_bar
from telescope.index import Collection

LAYERS = "layers"  # collection property: {model version: the layer its vectors were built at}, shallow ones only
TEXT_FIELD = "text"  # the payload field holding a point's text, unless the collection records another (text_field)
POINTS_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("payload", pa.string()), ("doc", pa.string())])


@dataclass
class IngestReport:
    points: int = 0
    truncated: int = 0


class Encoder(Protocol):
    """Turns windows of points into (batch of points, unit vectors) pairs, in any order."""

    def embed(self, windows: Iterable[pa.Table]) -> Iterator[tuple[pa.Table, np.ndarray]]: ...


def by_length(window: pa.Table, lengths: np.ndarray | None = None) -> pa.Table:
    """The window's points, longest first: by ``lengths`` (e.g. tokens per text) when given, else by characters."""
    if lengths is None:
        return window.take(pc.array_sort_indices(pc.utf8_length(window.column("text")), order="descending"))
    return window.take(np.argsort(-np.asarray(lengths), kind="stable"))


class LocalEncoder:
    """Embeds in this process with ``embedder`` at (``layer``, ``dim``), ``batch_size`` texts per forward pass."""

    def __init__(self, embedder: Embedder, layer: int | None = None, dim: int | None = None, batch_size: int = 64):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        self.embedder = embedder
        self.layer, self.dim = embedder.check_point(layer, dim)
        self.batch_size = batch_size
        self.truncated = 0  # texts over the model's token limit, counted from the lengths the batching measures

    def embed(self, windows: Iterable[pa.Table]) -> Iterator[tuple[pa.Table, np.ndarray]]:
        for window in windows:
            # by tokens, not characters: forward passes pad to the longest text of a batch in tokens, and batches
            # cut from a character-sorted window padded enough to make the job ~25% slower than one encode call
            lengths = self.embedder.token_lengths(window.column("text").to_pylist())
            self.truncated += int((lengths > self.embedder.max_seq_length).sum())
            window, lengths = by_length(window, lengths), np.sort(lengths)[::-1]
            for start in range(0, window.num_rows, self.batch_size):
                batch = window.slice(start, self.batch_size)
                texts = batch.column("text").to_pylist()
                yield batch, self.embedder.encode(texts, layer=self.layer, dim=self.dim, batch_size=self.batch_size,
                                                  lengths=lengths[start : start + self.batch_size])


def ingest_windows(
    collection: Collection,
    windows: Iterable[pa.Table],
    encoder: Encoder,
    model_version: str,
    *,
    on_batch: Callable[[pa.Table, np.ndarray], None] | None = None,
    upsert_rows: int = 512,
) -> int:
    """Embed every point of ``windows`` with ``encoder`` and upsert it; returns the number of points upserted.

    Embedded batches are upserted together once ``upsert_rows`` points are waiting (one WAL fsync per upsert,
    not per forward pass), and at the end. After an upsert is durable, ``on_batch(batch, vectors)`` is called for
    each of its batches (Parquet shards, job state, progress).
    """
    if isinstance(upsert_rows, bool) or not isinstance(upsert_rows, int) or upsert_rows < 1:
        raise ValueError(f"upsert_rows: expected an integer >= 1, got {upsert_rows!r}")
    points = 0
    waiting: list[tuple[pa.Table, np.ndarray]] = []

    def flush() -> None:
        nonlocal points
        batch = pa.concat_tables([b for b, _ in waiting])
        points += upsert_points(collection, batch, np.concatenate([v for _, v in waiting]), model_version)
        if on_batch is not None:
            for b, v in waiting:
                on_batch(b, v)
        waiting.clear()

    for batch, vectors in encoder.embed(windows):
        waiting.append((batch, vectors))
        if sum(b.num_rows for b, _ in waiting) >= upsert_rows:
            flush()
    if waiting:
        flush()
    return points


def upsert_points(collection: Collection, batch: pa.Table, vectors: np.ndarray, model_version: str) -> int:
    """Upsert a window's points (``POINTS_SCHEMA``) with their vectors, durable when it returns; their number."""
    payloads = [json.loads(p) for p in batch.column("payload").to_pylist()]
    collection.upsert(batch.column("id").to_pylist(), vectors, payloads, model_version=model_version)
    return batch.num_rows


def points_table(ids: Sequence[str], texts: Sequence[str], payloads: Sequence[dict] | None, docs: Sequence[str] | None = None) -> pa.Table:
    """A window of points from Python lists (payloads as dicts)."""
    payload_texts = ["{}"] * len(ids) if payloads is None else [json.dumps(p, allow_nan=False) for p in payloads]
    return pa.table(
        [pa.array(list(ids), pa.string()), pa.array(list(texts), pa.string()), pa.array(payload_texts, pa.string()),
         pa.array(list(docs if docs is not None else ids), pa.string())],
        schema=POINTS_SCHEMA,
    )


def ingest(
    collection: Collection,
    embedder: Embedder,
    ids: Sequence[str],
    texts: Sequence[str],
    payloads: Sequence[dict] | None = None,
    *,
    batch_size: int = 64,
    window: int = 8192,
    show_progress: bool = True,
    description: str = "embedding",
) -> IngestReport:
    """Embed ``texts`` at the collection's layer and dim for this model (``text_layer``, ``text_dim``) and upsert
    them under ``ids`` with ``payloads``; ``truncated`` counts the texts over the model's token limit."""
    if len(ids) != len(texts):
        raise ValueError(f"ids: expected one id per text ({len(texts)}), got {len(ids)}")
    if payloads is not None and len(payloads) != len(texts):
        raise ValueError(f"payloads: expected one payload per text ({len(texts)}), got {len(payloads)}")
    encoder = LocalEncoder(embedder, text_layer(collection, embedder), text_dim(collection, embedder), batch_size)
    windows = (
        points_table(ids[s : s + window], texts[s : s + window], None if payloads is None else payloads[s : s + window])
        for s in range(0, len(ids), window)
    )
    with progress_bar(description, total=len(texts), unit="texts", enabled=show_progress) as advance:
        points = ingest_windows(
            collection, windows, encoder, embedder.manifest.tag, on_batch=lambda batch, _: advance(batch.num_rows)
        )
    # counted for these texts alone: the embedder's running total also counts concurrent callers' texts
    return IngestReport(points=points, truncated=encoder.truncated)


def check_collection_dim(dim: int | None, full_dim: int, field: str = "dim") -> None:
    """A new collection holds a model's vectors or a prefix of them (nested embeddings), never longer ones."""
    if dim is not None and dim > full_dim:
        raise ValueError(f"{field}: expected at most {full_dim} (the model's full dim), got {dim}")


def text_layer(collection: Collection, embedder: Embedder) -> int:
    """The layer ``embedder`` embeds texts at for ``collection``: the one its vectors of this model were built at
    (``index build --layer`` records it under the ``layers`` property when shallower than the model's last), else
    the last."""
    layer = collection.properties.get(LAYERS, {}).get(embedder.manifest.tag)
    return embedder.num_layers if layer is None else int(layer)


def text_field(collection: Collection) -> str:
    """The payload field a collection's points hold their text in: ``index build --text-column`` records it."""
    return collection.properties.get("text_field", TEXT_FIELD)


def layer_properties(embedder: Embedder, layer: int | None) -> dict:
    """What a new collection records of the layer its vectors come from: nothing for the model's last layer."""
    layer, _ = embedder.check_point(layer, None)
    return {} if layer == embedder.num_layers else {LAYERS: {embedder.manifest.tag: layer}}


def text_dim(collection: Collection, embedder: Embedder) -> int:
    """The dim ``embedder`` embeds texts at for ``collection``: the length of its version's vectors there
    (``version_dim``: a collection may be shorter than its model, whose nested prefixes are embeddings too, as
    ``telescope index build --dim`` writes them), at most the model's full dim."""
    return min(collection.version_dim(embedder.manifest.tag), embedder.full_dim)
