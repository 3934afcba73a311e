"""Later stages of a plan: re-rank a shortlist of rows on a longer, re-normalised prefix of the stored vectors.

Matryoshka adaptive retrieval (Kusupati et al., NeurIPS 2022): for query q and candidate rows C,

    score(q, c) = <q[:d] / |q[:d]|, v_c[:d] / |v_c[:d]|>,   keep the top ``keep`` of C.

At full dim the stored rows are unit length and FAISS's ``knn_inner_products_by_idx`` scores the shortlist in
place (no copy, multi-threaded, top-k in C++): measured 10x faster than a numpy gather at 500 queries x 400
candidates x 384 dims. FAISS has no re-ranking on a *prefix* of stored rows (it would need the prefix norms), so
shorter intermediate stages, and float16 rows (``vector_dtype``) at any length, are numpy: one gather of every
query's candidates, an upcast to float32 (``upcast``), one batched matrix-vector product and the norms.
Candidate lists hold their ``-1`` padding at the end (as FAISS search returns them).
"""

from __future__ import annotations

import faiss
import numpy as np

from telescope.index.stage_one import prefix_normalize

RERANK_CHUNK = 4_000_000  # candidate coordinates upcast at once (16 MB of float32)
UPCAST_GRAIN = 32_768  # torch's internal::GRAIN_SIZE: a smaller copy runs on one thread


def rerank(
    queries: np.ndarray, rows: np.ndarray, vectors: np.ndarray, dim: int, keep: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and rows of the best ``keep`` of each query's candidate ``rows`` (-1 marks no candidate)."""
    keep = min(keep, rows.shape[1])
    if dim == vectors.shape[1] and vectors.dtype == np.float32:
        return _rerank_full(prefix_normalize(queries, dim), np.ascontiguousarray(rows, dtype=np.int64), vectors, keep)
    return _rerank_prefix(prefix_normalize(queries, dim), rows, vectors, dim, keep)


def _rerank_full(q: np.ndarray, rows: np.ndarray, vectors: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.ascontiguousarray(vectors)
    scores = np.empty((len(q), keep), dtype=np.float32)
    out = np.empty((len(q), keep), dtype=np.int64)
    faiss.knn_inner_products_by_idx(
        faiss.swig_ptr(q), faiss.swig_ptr(vectors), faiss.swig_ptr(rows), q.shape[1], len(q), len(vectors),
        rows.shape[1], keep, faiss.swig_ptr(scores), faiss.swig_ptr(out), rows.shape[1],
    )
    scores[out < 0] = -np.inf
    return scores, out


def _rerank_prefix(
    q: np.ndarray, rows: np.ndarray, vectors: np.ndarray, dim: int, keep: int
) -> tuple[np.ndarray, np.ndarray]:
    scores = np.empty(rows.shape, dtype=np.float32)
    per_chunk = max(1, RERANK_CHUNK // max(1, rows.shape[1] * dim))
    for s in range(0, len(rows), per_chunk):
        scores[s : s + per_chunk] = _prefix_scores(q[s : s + per_chunk], rows[s : s + per_chunk], vectors, dim)
    top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    out_scores = np.take_along_axis(scores, top, axis=1)
    out_rows = np.take_along_axis(rows, top, axis=1)
    out_rows[~np.isfinite(out_scores)] = -1
    return out_scores, out_rows


def _prefix_scores(q: np.ndarray, rows: np.ndarray, vectors: np.ndarray, dim: int) -> np.ndarray:
    """Cosine of each query's ``dim``-prefix with each of its candidates' (-inf where a row is -1)."""
    valid = rows >= 0
    safe = np.where(valid, rows, 0).reshape(-1)
    gathered = np.take(vectors, safe, axis=0) if dim == vectors.shape[1] else vectors[safe, :dim]  # take: 1.6x faster
    candidates = upcast(gathered).reshape(*rows.shape, dim)
    dots = np.einsum("bkd,bd->bk", candidates, q)
    norms = np.sqrt(np.einsum("bkd,bkd->bk", candidates, candidates))
    return np.where(valid, dots / np.maximum(norms, 1e-12), -np.inf).astype(np.float32, copy=False)


def upcast(rows: np.ndarray) -> np.ndarray:
    """``rows`` (2-D) as float32. numpy's float16 cast runs without SIMD here (64 us for 100 x 384); torch's uses
    F16C (4 us), so float16 rows go through torch (imported on first use: collections of float32 rows never load
    it), in pieces under torch's parallel grain (32,768 values) so that each runs on the calling thread: torch's
    OpenMP threads woken right after FAISS's (stage one) fought them for the cores, measured 266 us per query
    at batch 64 for a stage one of 25 us and a re-rank of 124."""
    if rows.dtype == np.float32:
        return rows
    import torch

    rows = np.ascontiguousarray(rows)
    out = np.empty(rows.shape, dtype=np.float32)
    step = max(1, UPCAST_GRAIN // max(1, rows.shape[1]))
    for s in range(0, len(rows), step):
        torch.from_numpy(out[s : s + step]).copy_(torch.from_numpy(rows[s : s + step]))
    return out


def merge_top(found: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` (score, row) per query over several searches' results (-1 / -inf pads)."""
    scores = np.concatenate([s for s, _ in found], axis=1)
    rows = np.concatenate([r for _, r in found], axis=1)
    scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores, top_rows = np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)
    if top_rows.shape[1] < k:
        pad = k - top_rows.shape[1]
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        top_rows = np.pad(top_rows, ((0, 0), (0, pad)), constant_values=-1)
    top_rows[~np.isfinite(top_scores)] = -1
    return top_scores, top_rows
