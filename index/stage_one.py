"""Stage one of a plan: a FAISS index over the normalised first ``dim`` coordinates of every stored vector.

The index kind is a FAISS index-factory string (``"Flat"`` exact, ``"HNSW32"``, ``"IVF1024,Flat"``, ...) with
inner-product metric; FAISS row ids are the collection's row numbers. Deleted rows are skipped with an
``IDSelectorBitmap`` in the search parameters, so graph and inverted-list indexes need no removal support.
Index-level knobs (``efSearch=128``, ``nprobe=16``) go through FAISS's ``ParameterSpace``.
"""

from __future__ import annotations

import faiss
import numpy as np

# FAISS switches from its SIMD kernel to BLAS for batches of at least this many queries. Measured
# (ENVIRONMENT.md): with the default of 20 a 64-dim prefix scan was no faster than the 384-dim one; BLAS at
# 20+ queries restores the expected speed-up. Set once, here, for every exact scan telescope runs.
faiss.cvar.distance_compute_blas_threshold = 20


def prefix_normalize(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` coordinates of each row, scaled to unit length (float32, C-contiguous)."""
    prefix = np.ascontiguousarray(vectors[..., :dim], dtype=np.float32)
    norms = np.linalg.norm(prefix, axis=-1, keepdims=True)
    return prefix / np.maximum(norms, 1e-12)


def serialized_bytes(index: faiss.Index) -> int:
    """Bytes of a FAISS index written out: the memory it holds for its vectors or codes, links and lists."""
    return int(faiss.serialize_index(index).nbytes)


class StageOne:
    """A FAISS index over the ``dim``-prefix of rows ``0 .. ntotal-1``."""

    def __init__(self, dim: int, factory: str = "Flat", params: str = "", index: faiss.Index | None = None):
        self.dim = dim
        self.factory = factory
        self.params = params
        try:
            self.index = index if index is not None else faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise ValueError(f"stage_one.factory: expected a FAISS index-factory string, got {factory!r}") from e
        if params:
            try:
                faiss.ParameterSpace().set_index_parameters(self.index, params)
            except RuntimeError as e:
                raise ValueError(f"stage_one.params: expected FAISS parameters like 'efSearch=64', got {params!r}") from e

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def nbytes(self) -> int:
        """Size of the FAISS index, serialised (its vectors or codes, graph links and lists)."""
        return serialized_bytes(self.index)

    def add(self, vectors: np.ndarray) -> None:
        """Append rows (full vectors; their prefix is taken and normalised here)."""
        if len(vectors) == 0:
            return
        prefix = prefix_normalize(vectors, self.dim)
        if not self.index.is_trained:
            needed = _training_size(self.index)
            if len(prefix) < needed:
                raise ValueError(
                    f"stage_one.factory: {self.factory!r} needs at least {needed} vectors to train, "
                    f"got {len(prefix)}; use 'Flat' or 'HNSW32' for small collections"
                )
            self.index.train(prefix)
        self.index.add(prefix)

    def search(self, queries: np.ndarray, k: int, alive: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by prefix inner product; ``alive`` (bool per row) excludes deleted rows.

        A graph (HNSW) searches with a beam of ``max(efSearch, k)``, as hnswlib does: FAISS keeps its
        ``efSearch`` whatever ``k`` is and pads with -1, so a shortlist longer than efSearch would come back
        mostly empty (measured: 200 asked at efSearch 16 over 10k real vectors, 0.64 of the exact prefix top-200).
        """
        prefix = prefix_normalize(queries, self.dim)
        selector = keep = None
        if alive is not None:
            bits = np.packbits(alive[: self.ntotal], bitorder="little")
            selector = faiss.IDSelectorBitmap(self.ntotal, faiss.swig_ptr(bits))
            keep = (bits, selector)
        params = self._params(selector, k)
        if params is not None:
            params._keep = keep  # FAISS holds raw pointers: keep both alive for the call
        scores, rows = self.index.search(prefix, k, params=params)
        return scores, rows

    def _params(self, selector: faiss.IDSelector | None, k: int) -> faiss.SearchParameters | None:
        index = self.index
        if isinstance(index, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(index.hnsw.efSearch, k)
        elif selector is None:
            return None
        elif isinstance(index, faiss.IndexIVF):
            params = faiss.SearchParametersIVF()
            params.nprobe = index.nprobe
        elif isinstance(index, faiss.IndexFlat):
            params = faiss.SearchParameters()
        else:
            raise ValueError(
                f"stage_one.factory: deleting from {self.factory!r} is not supported; use Flat, HNSW or IVF"
            )
        if selector is not None:
            params.sel = selector
        return params

    def write(self, path: str) -> None:
        faiss.write_index(self.index, path)

    @classmethod
    def read(cls, path: str, dim: int, factory: str, params: str = "") -> "StageOne":
        return cls(dim, factory, params, index=faiss.read_index(path))


def _training_size(index: faiss.Index) -> int:
    ivf = faiss.try_extract_index_ivf(index)
    return 39 * ivf.nlist if ivf is not None else 1
