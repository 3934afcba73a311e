"""Stage one of a plan: a FAISS index over the normalised first ``dim`` coordinates of every stored vector.

The index kind is a FAISS index-factory string (``"Flat"`` exact, ``"HNSW32"``, ``"IVF1024,Flat"``, ...) with
inner-product metric; FAISS row ids are the collection's row numbers. Deleted rows are skipped with an
``IDSelectorBitmap`` in the search parameters, so graph and inverted-list indexes need no removal support.
Index-level knobs (``efSearch=128``, ``nprobe=16``) go through FAISS's ``ParameterSpace``.

GPU: where FAISS reports GPUs (the ``gpu`` extra installs faiss-gpu) and ``$TELESCOPE_FAISS_DEVICE`` is ``auto``
(default) or ``gpu``, a Flat or IVF stage one is copied to GPU 0 and searched there; HNSW has no GPU version and
stays on CPU, and so does any search whose shortlist (plus the deleted rows, below) exceeds FAISS-GPU's k limit of
2048. GPU indexes ignore ``IDSelector`` (faiss issues 3114, 3924), so a GPU search asks for ``k + deleted`` rows
and drops the deleted ones: no live row can be pushed out of the top ``k`` by more than ``deleted`` dead ones.
``TELESCOPE_FAISS_DEVICE=cpu`` keeps everything on CPU.
"""

from __future__ import annotations

import functools
import os
import threading

import faiss
import numpy as np

GPU_MAX_K = 2048  # FAISS-GPU's largest k per search (GPU_MAX_SELECTION_K)
DEVICES = ("auto", "cpu", "gpu")

# FAISS switches from its SIMD kernel to BLAS for batches of at least this many queries. Measured
# (ENVIRONMENT.md): with the default of 20 a 64-dim prefix scan was no faster than the 384-dim one; BLAS at
# 20+ queries restores the expected speed-up. Set once, here, for every exact scan telescope runs.
faiss.cvar.distance_compute_blas_threshold = 20


def prefix_normalize(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` coordinates of each row, scaled to unit length (float32, C-contiguous)."""
    prefix = np.ascontiguousarray(vectors[..., :dim], dtype=np.float32)
    norms = np.sqrt(np.einsum("...i,...i->...", prefix, prefix))[..., None]  # np.linalg.norm's, 4x faster on one row
    return prefix / np.maximum(norms, 1e-12)


@functools.cache
def faiss_gpus() -> int:
    """GPUs FAISS can use: 0 with faiss-cpu."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def stage_one_device() -> str:
    """``cpu`` or ``gpu``: where stage one searches, from ``$TELESCOPE_FAISS_DEVICE`` and the GPUs FAISS sees."""
    wanted = os.environ.get("TELESCOPE_FAISS_DEVICE") or "auto"
    if wanted not in DEVICES:
        raise ValueError(f"TELESCOPE_FAISS_DEVICE: expected one of {', '.join(DEVICES)}, got {wanted!r}")
    gpus = faiss_gpus()
    if wanted == "gpu" and gpus == 0:
        raise ValueError("TELESCOPE_FAISS_DEVICE: expected a FAISS build with GPUs for 'gpu', got none (faiss-cpu?)")
    return "gpu" if wanted != "cpu" and gpus > 0 else "cpu"


def search_dropping_dead(
    index: faiss.Index, prefix: np.ndarray, k: int, alive: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` live rows from an index that cannot filter (a GPU index): ask for ``k + dead`` and drop the dead."""
    if alive is None:
        return index.search(prefix, k)
    ntotal = int(index.ntotal)
    dead = ntotal - int(np.count_nonzero(alive[:ntotal]))
    scores, rows = index.search(prefix, min(k + dead, ntotal) if ntotal else k)
    live = rows >= 0
    live[live] = alive[rows[live]]
    order = np.argsort(~live, axis=1, kind="stable")[:, :k]  # live rows first, each in score order
    scores, rows, live = (np.take_along_axis(a, order, axis=1) for a in (scores, rows, live))
    scores, rows = np.where(live, scores, -np.inf).astype(np.float32), np.where(live, rows, -1)
    if rows.shape[1] < k:  # fewer rows than k in the whole index: pad as FAISS does
        pad = k - rows.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
    return scores, rows


def serialized_bytes(index: faiss.Index) -> int:
    """Bytes of a FAISS index written out: the memory it holds for its vectors or codes, links and lists."""
    return int(faiss.serialize_index(index).nbytes)


class StageOne:
    """A FAISS index over the ``dim``-prefix of rows ``0 .. ntotal-1``.

    An index that must be trained (IVF: 39 vectors per list) is searched exactly (a Flat index of the rows) until
    it has enough rows to train on; then it trains on them and takes over, so a small or growing collection
    answers from its first row."""

    def __init__(self, dim: int, factory: str = "Flat", params: str = "", index: faiss.Index | None = None):
        self.dim = dim
        self.factory = factory
        self.params = params
        self._gpu_index: faiss.Index | None = None  # a GPU copy of ``index``, made on first GPU search
        self._gpu_lock = threading.Lock()
        self._beams: dict[int, faiss.SearchParametersHNSW] = {}  # HNSW parameters per beam width, without a selector
        try:
            self.index = index if index is not None else faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise ValueError(f"stage_one.factory: expected a FAISS index-factory string, got {factory!r}") from e
        if params:
            self.set_params(params)
        # the rows while ``index`` cannot be trained yet, searched exactly
        self._untrained = None if self.index.is_trained else faiss.IndexFlatIP(dim)

    def set_params(self, params: str) -> None:
        """Set index-level search knobs (``nprobe=32``, ``efSearch=128``) through FAISS's ``ParameterSpace``."""
        try:
            faiss.ParameterSpace().set_index_parameters(self.index, params)
        except RuntimeError as e:
            raise ValueError(f"stage_one.params: expected FAISS parameters like 'efSearch=64', got {params!r}") from e
        self.params = params
        self._beams = {}  # the HNSW beams derive from efSearch
        self._gpu_index = None  # a GPU copy carries the old knobs: copied again on the next GPU search

    @property
    def trained(self) -> bool:
        """False while the rows wait, searched exactly, for enough of them to train the index on."""
        return self._untrained is None

    @property
    def _active(self) -> faiss.Index:
        return self.index if self._untrained is None else self._untrained

    @property
    def ntotal(self) -> int:
        return int(self._active.ntotal)

    @property
    def nbytes(self) -> int:
        """Size of the FAISS index, serialised (its vectors or codes, graph links and lists)."""
        return serialized_bytes(self._active)

    def add(self, vectors: np.ndarray) -> None:
        """Append rows (full vectors; their prefix is taken and normalised here)."""
        if len(vectors) == 0:
            return
        prefix = prefix_normalize(vectors, self.dim)
        self._gpu_index = None  # stale: copied again on the next GPU search
        if self._untrained is not None:
            self._untrained.add(prefix)
            if self._untrained.ntotal < _training_size(self.index):
                return
            prefix = self._untrained.reconstruct_n(0, self._untrained.ntotal)
            self.index.train(prefix)
            self._untrained = None
        self.index.add(prefix)

    def search(self, queries: np.ndarray, k: int, alive: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by prefix inner product; ``alive`` (bool per row) excludes deleted rows.

        A graph (HNSW) searches with a beam of ``max(efSearch, k)``, as hnswlib does: FAISS keeps its
        ``efSearch`` whatever ``k`` is and pads with -1, so a shortlist longer than efSearch would come back
        mostly empty (measured: 200 asked at efSearch 16 over 10k real vectors, 0.64 of the exact prefix top-200).
        """
        if self.ntotal == 0:  # nothing to find (and an IVF index not yet trained cannot search)
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        prefix = prefix_normalize(queries, self.dim)
        gpu = self._on_gpu(k, alive)
        if gpu is not None:
            return search_dropping_dead(gpu, prefix, k, alive)
        selector = keep = None
        if alive is not None:
            bits = np.packbits(alive[: self.ntotal], bitorder="little")
            selector = faiss.IDSelectorBitmap(self.ntotal, faiss.swig_ptr(bits))
            keep = (bits, selector)
        params = self._params(selector, k)
        if params is not None:
            params._keep = keep  # FAISS holds raw pointers: keep both alive for the call
        scores, rows = self._active.search(prefix, k, params=params)
        return scores, rows

    @property
    def device(self) -> str:
        """Where a search with a short shortlist runs: ``gpu`` for a Flat or IVF index when FAISS has GPUs."""
        return "gpu" if self._gpu_capable() and stage_one_device() == "gpu" else "cpu"

    def _gpu_capable(self) -> bool:
        return isinstance(self._active, (faiss.IndexFlat, faiss.IndexIVF))

    def device_for(self, k: int, dead: int = 0) -> str:
        """Where a search for a shortlist of ``k`` runs with ``dead`` deleted rows to skip: ``gpu`` when this index
        is on the GPU and ``k + dead`` is within FAISS-GPU's k limit (``GPU_MAX_K``), else ``cpu``."""
        return "gpu" if self.device == "gpu" and k + dead <= GPU_MAX_K else "cpu"

    def _on_gpu(self, k: int, alive: np.ndarray | None) -> faiss.Index | None:
        if self.device != "gpu" or self.ntotal == 0:
            return None
        dead = 0 if alive is None else self.ntotal - int(np.count_nonzero(alive[: self.ntotal]))
        if self.device_for(k, dead) != "gpu":
            return None
        with self._gpu_lock:
            if self._gpu_index is None:
                self._gpu_index = faiss.index_cpu_to_gpu(gpu_resources(), 0, self._active)
            return self._gpu_index

    def _params(self, selector: faiss.IDSelector | None, k: int) -> faiss.SearchParameters | None:
        index = self._active
        if isinstance(index, faiss.IndexHNSW):
            beam = max(index.hnsw.efSearch, k)
            if selector is None and beam in self._beams:
                return self._beams[beam]  # read-only for FAISS: shared by concurrent searches
            params = faiss.SearchParametersHNSW()
            params.efSearch = beam
            if selector is None:
                self._beams[beam] = params
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
        if self._untrained is not None:
            raise ValueError(f"stage_one: {self.factory!r} is not trained yet (its rows are searched exactly): nothing to write")
        faiss.write_index(self.index, path)

    @classmethod
    def read(cls, path: str, dim: int, factory: str, params: str = "") -> "StageOne":
        return cls(dim, factory, params, index=faiss.read_index(path))


_GPU_RESOURCES: list = []


def gpu_resources():
    """One ``StandardGpuResources`` (scratch memory, streams) for the process, as FAISS recommends."""
    if not _GPU_RESOURCES:
        _GPU_RESOURCES.append(faiss.StandardGpuResources())
    return _GPU_RESOURCES[0]


def _training_size(index: faiss.Index) -> int:
    ivf = faiss.try_extract_index_ivf(index)
    return 39 * ivf.nlist if ivf is not None else 1
