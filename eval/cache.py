"""The on-disk cache of embeddings for evaluation, so that re-running a grid or a plan never re-encodes.

A cached entry is one layer's full-dim unit vectors of one list of texts, keyed by the model hash (weights and
config, ``Embedder.model_hash``; ``-int8`` added for the ``onnx-int8`` backend, whose vectors differ) and the data
hash (sha256 of the texts, in order)::

    <root>/<model_hash>[-int8]/<texts_hash>-L<layer>.npy

Every (layer, dim) point is cut from its layer's entry: ``normalize(normalize(x)[:d]) = normalize(x[:d])``,
so one entry per layer serves every dim. Missing layers are encoded together in one forward pass
(``Embedder.encode_grid``). Files are written to a temporary name and renamed, so a cut run leaves no torn
entry; an entry that cannot be read, or is not finite float32 of the expected shape, is encoded again.
``EmbeddingCache(None)`` (``--no-cache``) keeps entries in memory only, for one run, so that the grid, the plans
and the reference check of a run still encode each layer once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from telescope.embedder import Embedder
from telescope.index import prefix_normalize

DEFAULT_CACHE = Path(".cache/embeddings")


def texts_hash(texts: Sequence[str]) -> str:
    """sha256 of the texts in order, each prefixed by its byte length (a separator byte could occur in a text)."""
    digest = hashlib.sha256(str(len(texts)).encode())
    for text in texts:
        data = text.encode("utf-8")
        digest.update(b"\x00%d:" % len(data))
        digest.update(data)
    return digest.hexdigest()[:16]


def model_key(embedder: Embedder) -> str:
    """What the vectors depend on besides the texts: the weights' hash, and ``int8`` for the quantised backend (the
    torch and ONNX fp32 backends give the same vectors)."""
    return embedder.model_hash + ("-int8" if embedder.backend == "onnx-int8" else "")


class EmbeddingCache:
    """``EmbeddingCache(root)`` caches on disk; ``EmbeddingCache(None)`` only in memory, for its own lifetime."""

    def __init__(self, root: str | Path | None = DEFAULT_CACHE):
        self.root = Path(root) if root is not None else None
        self._memory: dict[tuple[str, str, int], np.ndarray] = {}  # (model key, texts hash, layer) -> vectors
        self.hits = 0  # layer entries read from disk
        self.misses = 0  # layer entries encoded

    def grid(
        self,
        embedder: Embedder,
        texts: Sequence[str],
        points: Sequence[tuple[int, int]],
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> dict[tuple[int, int], np.ndarray]:
        """Unit vectors ``{(layer, dim): (len(texts), dim)}``, encoding only the layers not cached."""
        points = [embedder.check_point(layer, dim) for layer, dim in points]
        layers = self.layers(embedder, texts, sorted({layer for layer, _ in points}), batch_size, show_progress)
        return {(layer, dim): prefix_normalize(layers[layer], dim) for layer, dim in points}

    def layers(
        self,
        embedder: Embedder,
        texts: Sequence[str],
        layers: Sequence[int],
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> dict[int, np.ndarray]:
        """Full-dim unit vectors per layer, from disk where cached, else from one forward pass."""
        out: dict[int, np.ndarray] = {}
        missing = []
        data = texts_hash(texts)
        for layer in layers:
            if (model_key(embedder), data, layer) in self._memory:
                out[layer] = self._memory[(model_key(embedder), data, layer)]
                self.hits += 1
                continue
            vectors = _read_entry(self._path(embedder, data, layer), (len(texts), embedder.full_dim))
            if vectors is not None:
                out[layer] = vectors
                self.hits += 1
                continue
            missing.append(layer)
        if missing:
            encoded = embedder.encode_grid(
                texts, [(layer, embedder.full_dim) for layer in missing], batch_size=batch_size, show_progress=show_progress
            )
            for layer in missing:
                out[layer] = encoded[(layer, embedder.full_dim)].astype(np.float32, copy=False)
                self.misses += 1
                self._store(embedder, data, layer, out[layer])
        return out

    def put(self, embedder: Embedder, texts: Sequence[str], layer: int, vectors: np.ndarray) -> None:
        """Make ``vectors`` the entry of ``embedder``'s ``layer`` over ``texts`` (written atomically)."""
        self._store(embedder, texts_hash(texts), layer, np.asarray(vectors, dtype=np.float32))

    def _store(self, embedder: Embedder, data: str, layer: int, vectors: np.ndarray) -> None:
        if self.root is None:
            self._memory[(model_key(embedder), data, layer)] = vectors
        else:
            _write_atomic(self._path(embedder, data, layer), lambda f: np.save(f, vectors))

    def _path(self, embedder: Embedder, data: str, layer: int) -> Path | None:
        if self.root is None:
            return None
        return self.root / model_key(embedder) / f"{data}-L{layer}.npy"


def _read_entry(path: Path | None, shape: tuple[int, int]) -> np.ndarray | None:
    """The entry at ``path`` if it holds finite float32 vectors of ``shape``; None (encode again) if it is absent,
    unreadable (cut short, not an array) or of another shape or dtype."""
    if path is None or not path.is_file():
        return None
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if vectors.shape != shape or vectors.dtype != np.float32 or not np.isfinite(vectors).all():
        return None
    return vectors


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
