"""Document-level search over a chunked collection: each document ranked by its best chunk.

A build job with ``--chunk-tokens`` stores a document ``d`` as points ``d#0``, ``d#1``, ... whose payloads carry
``doc_id`` (``telescope.pipelines.chunking``). ``search_documents`` asks the collection for more chunks than
documents wanted (``oversample`` x ``k``), keeps the best-scoring chunk of each document (max-passage scoring,
the usual choice for passage-level retrieval of long documents), and returns the top ``k`` documents. Points
without a ``doc_id`` (unchunked documents) stand for themselves, so it works on any collection. It lives with
the pipelines because they define how chunks name their documents; the index stays unaware of chunking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from telescope.index import Collection, Hit, Plan


@dataclass(frozen=True)
class DocumentHit:
    doc_id: str
    score: float  # the best chunk's score
    best_chunk: Hit
    chunks_matched: int  # how many of the document's chunks were among the candidates


def group_by_document(hits: list[Hit], k: int) -> list[DocumentHit]:
    """Collapse one query's chunk hits (best first) into at most ``k`` documents, each scored by its best chunk."""
    best: dict[str, Hit] = {}
    counts: dict[str, int] = {}
    for hit in hits:
        doc = str(hit.payload.get("doc_id", hit.id))
        counts[doc] = counts.get(doc, 0) + 1
        if doc not in best or hit.score > best[doc].score:
            best[doc] = hit
    ranked = sorted(best.items(), key=lambda item: -item[1].score)[:k]
    return [DocumentHit(doc, hit.score, hit, counts[doc]) for doc, hit in ranked]


def search_documents(
    collection: Collection,
    queries: np.ndarray,
    k: int = 10,
    *,
    oversample: int = 5,
    plan: Plan | str | None = None,
) -> list[list[DocumentHit]]:
    """Top-``k`` documents per query from the top ``oversample * k`` chunks (fewer when a few documents fill them)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected an integer >= 1, got {k!r}")
    if isinstance(oversample, bool) or not isinstance(oversample, int) or oversample < 1:
        raise ValueError(f"oversample: expected an integer >= 1, got {oversample!r}")
    hits = collection.search(queries, k=k * oversample, plan=plan)
    return [group_by_document(row, k) for row in hits]
