"""The rows of a collection in memory: one full unit vector per row, its id, model version and payload.

Vectors are held as ``float32`` or, for a collection created with ``vector_dtype="float16"``, as ``float16``: half
the memory and disk (Qdrant's and Milvus's float16 vectors); every score is still computed in float32 on
upcast rows. Float16 keeps about 3 significant digits per coordinate, so scores move by ~1e-4.

Rows are only appended; an upsert of a known id appends a new row and marks the old one dead, a delete marks
rows dead. Row numbers are FAISS ids in stage one. ``compacted()`` drops dead rows (and renumbers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa


VECTOR_DTYPES = ("float32", "float16")


def check_vector_dtype(dtype: str) -> str:
    if dtype not in VECTOR_DTYPES:
        raise ValueError(f"vector_dtype: expected one of {', '.join(VECTOR_DTYPES)}, got {dtype!r}")
    return dtype


class Rows:
    def __init__(self, dim: int, dtype: str = "float32"):
        self.dim = dim
        self.dtype = check_vector_dtype(dtype)
        self._vectors = np.zeros((0, dim), dtype=dtype)
        self._alive = np.zeros(0, dtype=bool)
        self._version_codes = np.zeros(0, dtype=np.int32)
        self.n = 0
        self.ids: list[str] = []
        self.payloads: list[str] = []  # JSON text per row
        self.versions: list[str] = []  # the model versions seen, indexed by code
        self.row_of: dict[str, int] = {}  # live id -> row
        self._fields: dict[str, list] = {}  # payload field -> its value per row (_MISSING when absent), filled lazily

    # -- views -------------------------------------------------------------------------------------------------
    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: self.n]

    @property
    def alive(self) -> np.ndarray:
        return self._alive[: self.n]

    @property
    def version_codes(self) -> np.ndarray:
        return self._version_codes[: self.n]

    @property
    def live_count(self) -> int:
        return len(self.row_of)

    def version_of(self, row: int) -> str:
        return self.versions[self._version_codes[row]]

    def payload_of(self, row: int) -> dict:
        return json.loads(self.payloads[row])

    def payload_mask(self, where: dict) -> np.ndarray:
        """Rows whose payload has every field of ``where`` equal to its value (bool per row)."""
        mask = np.ones(self.n, dtype=bool)
        for key, wanted in where.items():
            values = self._field_values(key)
            mask &= np.fromiter((_same(v, wanted) for v in values), dtype=bool, count=self.n)
        return mask

    def _field_values(self, key: str) -> list:
        values = self._fields.setdefault(key, [])
        for row in range(len(values), self.n):
            values.append(json.loads(self.payloads[row]).get(key, _MISSING))
        return values

    # -- changes -----------------------------------------------------------------------------------------------
    def append(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[str], versions: Sequence[str]) -> None:
        m = len(ids)
        self._reserve(self.n + m)
        start = self.n
        self._vectors[start : start + m] = vectors
        self._alive[start : start + m] = True
        self._version_codes[start : start + m] = [self._code(v) for v in versions]
        for offset, point_id in enumerate(ids):
            old = self.row_of.get(point_id)
            if old is not None:
                self._alive[old] = False
            self.row_of[point_id] = start + offset
        self.ids.extend(ids)
        self.payloads.extend(payloads)
        self.n += m

    def kill(self, ids: Sequence[str]) -> None:
        for point_id in ids:
            row = self.row_of.pop(point_id, None)
            if row is not None:
                self._alive[row] = False

    def kill_rows(self, rows: np.ndarray) -> None:
        for row in rows.tolist():
            if self._alive[row]:
                self._alive[row] = False
                del self.row_of[self.ids[row]]

    def _code(self, version: str) -> int:
        try:
            return self.versions.index(version)
        except ValueError:
            self.versions.append(version)
            return len(self.versions) - 1

    def _reserve(self, size: int) -> None:
        if size <= len(self._vectors):
            return
        capacity = max(size, 2 * len(self._vectors), 1024)
        for name in ("_vectors", "_alive", "_version_codes"):
            old = getattr(self, name)
            new = np.zeros((capacity,) + old.shape[1:], dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    # -- segments ----------------------------------------------------------------------------------------------
    def meta_table(self, start: int, stop: int) -> pa.Table:
        """Rows ``start .. stop-1`` as the Arrow table stored beside their vectors (queryable with DuckDB)."""
        return pa.table(
            {
                "row": pa.array(np.arange(start, stop), pa.int64()),
                "id": pa.array(self.ids[start:stop], pa.string()),
                "model_version": pa.array(
                    [self.versions[c] for c in self._version_codes[start:stop]], pa.string()
                ).dictionary_encode(),
                "payload": pa.array(self.payloads[start:stop], pa.string()),
            }
        )

    def append_table(self, table: pa.Table, vectors: np.ndarray) -> None:
        self.append(
            table.column("id").to_pylist(),
            vectors,
            table.column("payload").to_pylist(),
            [str(v) for v in table.column("model_version").to_pylist()],
        )

    def compacted(self) -> "Rows":
        rows = Rows(self.dim, self.dtype)
        keep = np.flatnonzero(self.alive)
        rows.append(
            [self.ids[r] for r in keep],
            self.vectors[keep],
            [self.payloads[r] for r in keep],
            [self.version_of(r) for r in keep],
        )
        return rows


_MISSING = object()


def _same(stored: object, wanted: object) -> bool:
    """Exact match of payload values: booleans only equal booleans (JSON true is not 1), numbers compare as numbers."""
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return type(stored) is type(wanted) and stored == wanted
    if stored is _MISSING or isinstance(stored, (list, dict)):
        return False
    return stored == wanted
