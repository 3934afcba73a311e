"""Embed texts in batches and upsert them into a collection, with a progress bar: the one ingest loop.

Every way texts reach a collection (``telescope index add``, the demo, the batch pipelines) goes through
``ingest``; it records the embedder's model version with every vector.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from telescope.embedder import Embedder
from telescope.index import Collection
from telescope.embedder.progress import progress_bar


@dataclass
class IngestReport:
    points: int = 0
    truncated: int = 0


def ingest(
    collection: Collection,
    embedder: Embedder,
    ids: Sequence[str],
    texts: Sequence[str],
    payloads: Sequence[dict] | None = None,
    *,
    layer: int | None = None,
    batch_size: int = 256,
    show_progress: bool = True,
    description: str = "embedding",
) -> IngestReport:
    """Embed ``texts`` at ``layer`` (full dim) and upsert them under ``ids`` with ``payloads``."""
    if len(ids) != len(texts):
        raise ValueError(f"ids: expected one id per text ({len(texts)}), got {len(ids)}")
    if payloads is not None and len(payloads) != len(texts):
        raise ValueError(f"payloads: expected one payload per text ({len(texts)}), got {len(payloads)}")
    report = IngestReport()
    truncated_before = embedder.truncated_texts
    with progress_bar(description, total=len(texts), unit="texts", enabled=show_progress) as advance:
        for start in _starts(len(texts), batch_size):
            stop = start + batch_size
            vectors = embedder.encode(texts[start:stop], layer=layer)
            collection.upsert(
                list(ids[start:stop]),
                vectors,
                None if payloads is None else list(payloads[start:stop]),
                model_version=embedder.manifest.tag,
            )
            report.points += len(vectors)
            advance(len(vectors))
    report.truncated = embedder.truncated_texts - truncated_before
    return report


def _starts(n: int, step: int) -> Iterable[int]:
    return range(0, n, step)
