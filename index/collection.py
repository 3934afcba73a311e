"""A collection: nested unit vectors with ids, payloads and model versions, on a directory, searched coarse-to-fine.

On disk::

    manifest.json            the committed state: config, generation, segment list (replaced atomically)
    seg-<gen>.vec.npy        full vectors (float32, or float16: ``vector_dtype``), unit length, one copy of each
    seg-<gen>.meta.parquet   row, id, model_version, payload (JSON text): queryable with DuckDB
    deleted-<gen>.npy        rows that are dead (deleted or replaced)
    stage1-<gen>.faiss       the stage-one index when it is not Flat (Flat is rebuilt on open, as fast as a load)
                             and holds rows (an IVF with fewer rows than it trains on has none yet)
    wal-<gen>.log            writes acknowledged since that generation was committed

A write is acknowledged when its WAL record is fsynced. ``commit()`` writes new segment files, then the new
manifest (atomic rename), then starts a new WAL: a crash at any point leaves the last manifest readable, and its
WAL replays every acknowledged write after it. Files no manifest names are debris of a cut commit and removed.
A manifest write that fails after its rename (the directory fsync) raises, but the disk holds the new manifest:
so does memory then, and later writes go to that generation's WAL.

One process writes a collection at a time (an flock on ``LOCK``); any number may open it read-only. A commit
removes the files of the generation before it: a read-only open that finds them gone reads the new manifest and
loads that (up to ``OPEN_TRIES`` times), and ``catch_up`` finds its WAL gone and says so (open again).

**Several model versions, several lengths.** During a model rollout a collection holds vectors of an old model
and of a new, longer one whose first coordinates are comparable with the old (BT^2: ``[b ; a]``). The
collection's ``dim`` is the longest; the manifest's ``version_dims`` records each shorter version's valid length.
Such rows are stored zero-padded (so they stay unit length at every prefix up to their valid length) and a
search scores them only there: each version group is searched with ``plan.within(its length)`` (the plan's
shorter stages, then a last stage at its length), the groups' top-k merged by score under one lock, so a
query sees one consistent state and an id at most once. ``reconfigure(dim=...)`` widens or narrows a collection
(one atomic commit that rewrites the rows); ``upsert`` takes a version's own length and pads it.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from telescope.index.autoplan import PlanChoice, candidate_plans, recall_at_k, without_self
from telescope.index.checks import (
    check_dim,
    check_ids,
    check_payloads,
    check_properties,
    check_queries,
    check_text,
    check_vectors,
    check_where,
)
from telescope.index.files import write_atomic, write_json, write_npy, write_parquet
from telescope.index.plan import Plan
from telescope.index.rerank import merge_top, rerank, upcast
from telescope.index.rows import Rows, check_vector_dtype
from telescope.index.stage_one import StageOne
from telescope.index.wal import WriteAheadLog, read_records

FORMAT = 1
MANIFEST = "manifest.json"
OPEN_TRIES = 5  # a read-only open reads the manifest again after a commit removed the files it named


@dataclass(frozen=True)
class Point:
    id: str
    vector: np.ndarray
    payload: dict
    model_version: str


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict
    model_version: str


def _read_manifest(path: Path) -> dict:
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path / MANIFEST}: expected format {FORMAT}, got {manifest.get('format')!r}")
    return manifest


class Collection:
    """Create with ``Collection.create(path, dim)``, open with ``Collection.open(path)``."""

    def __init__(self, path: Path, manifest: dict, read_only: bool, lock_fd: int | None):
        self.path = path
        self._manifest = manifest
        self.dim = int(manifest["dim"])
        self.read_only = read_only
        self._lock_fd = lock_fd
        self._lock = threading.RLock()
        self.vector_dtype = str(manifest.get("vector_dtype", "float32"))
        self._rows = Rows(self.dim, self.vector_dtype)
        self._stage_ones: dict[int, StageOne] = {}
        self._wal: WriteAheadLog | None = None
        self._load()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        dim: int,
        *,
        default_plan: Plan | str | None = None,
        stage_one: str = "Flat",
        stage_one_dim: int | None = None,
        stage_one_params: str = "",
        flush_rows: int = 50_000,
        properties: dict | None = None,
        vector_dtype: str = "float32",
    ) -> "Collection":
        """A new, empty collection of ``dim``-dimensional vectors at ``path``.

        ``vector_dtype`` ``"float16"`` holds (and stores) the full vectors at half the bytes; re-ranking scores
        upcast rows in float32 (see telescope.index.rows). ``properties`` is free-form JSON kept in the manifest
        (which model embeds queries, for example); the index does not interpret it.
        """
        path = Path(path)
        check_dim(dim)
        if (path / MANIFEST).exists():
            raise FileExistsError(f"collection: {str(path)!r} already holds a collection")
        plan = Plan.of(default_plan) if default_plan is not None else Plan.exact(dim)
        plan.check_dim(dim)
        s1_dim = stage_one_dim if stage_one_dim is not None else plan.stages[0].dim
        if not 1 <= s1_dim <= dim:
            raise ValueError(f"stage_one_dim: expected 1..{dim}, got {s1_dim}")
        StageOne(s1_dim, stage_one, stage_one_params)  # checks the factory string and parameters
        check_vector_dtype(vector_dtype)
        if isinstance(flush_rows, bool) or not isinstance(flush_rows, int) or flush_rows < 1:
            raise ValueError(f"flush_rows: expected an integer >= 1, got {flush_rows!r}")
        properties = check_properties(properties)
        path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT,
            "dim": dim,
            "vector_dtype": vector_dtype,
            "default_plan": str(plan),
            "stage_one": {"dim": s1_dim, "factory": stage_one, "params": stage_one_params},
            "flush_rows": int(flush_rows),
            "generation": 0,
            "segments": [],
            "deleted": None,
            "stage_one_file": None,
            "created": time.time(),
            "properties": properties,
        }
        write_json(path / MANIFEST, manifest)
        return cls.open(path)

    @classmethod
    def open(cls, path: str | Path, read_only: bool = False) -> "Collection":
        path = Path(path)
        if not (path / MANIFEST).exists():
            raise LookupError(f"collection: no collection at {str(path)!r} (no {MANIFEST})")
        lock_fd = None
        if not read_only:
            lock_fd = os.open(path / "LOCK", os.O_CREAT | os.O_RDWR)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)
                raise RuntimeError(f"collection: {str(path)!r} is open for writing by another process") from None
        try:
            return cls._load_tries(path, read_only, lock_fd)
        except BaseException:
            if lock_fd is not None:  # a failed open holds no lock: a later one (the disk back) may take it
                os.close(lock_fd)
            raise

    @classmethod
    def _load_tries(cls, path: Path, read_only: bool, lock_fd: int | None) -> "Collection":
        manifest = _read_manifest(path)
        for tries in range(1, OPEN_TRIES + 1):
            try:
                return cls(path, manifest, read_only, lock_fd)
            except (OSError, RuntimeError):  # a file gone (FAISS says so with a RuntimeError)
                if not read_only or (latest := _read_manifest(path)) == manifest:
                    raise  # no commit removed it: a damaged collection
                if tries == OPEN_TRIES:
                    raise RuntimeError(
                        f"collection: {str(path)!r} changed on disk at each of {OPEN_TRIES} tries to open it "
                        "read-only (its writer committed while the files were loading); open it again"
                    ) from None
                manifest = latest

    def close(self) -> None:
        """Commit and let go of the files and the write lock. A commit that fails (a failing disk) raises with the
        collection closed still: every acknowledged write is in the WAL, and the next open replays it."""
        with self._lock:
            if self._lock_fd is None:  # read-only, or closed already
                return
            try:
                if self._rows.n > self._committed_rows or self._wal_records:
                    self.commit()
            finally:
                if self._wal is not None:
                    self._wal.close()
                    self._wal = None
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading the committed state ---------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return int(self._manifest["generation"])

    @property
    def state_key(self) -> tuple[float, int, int]:
        """(created, generation, WAL records since that generation): every acknowledged write changes it, and two
        copies of a collection with equal keys hold the same points. Read it holding ``lock``."""
        return (float(self._manifest.get("created", 0.0)), self.generation, self._wal_records)

    def catch_up(self, key: tuple[float, int, int]) -> bool:
        """Read-only copy: apply the WAL records its writer acknowledged since this copy was opened or last caught
        up, up to the state ``key`` (a writer's ``state_key``); True when this copy now holds exactly that state.
        False when the writer has committed another generation since (open the collection again to follow it) or
        this copy is already past ``key``."""
        if not self.read_only:
            raise RuntimeError(f"collection: catch_up is for read-only copies; {str(self.path)!r} is open for writing")
        with self._lock:
            here = self.state_key
            if here[:2] != tuple(key[:2]) or here[2] > key[2]:
                return False
            if here[2] < key[2]:
                records, end = read_records(self.path / f"wal-{self.generation:06d}.log", self._wal_end, key[2] - here[2])
                for record in records:
                    self._apply(record)
                self._wal_end = end
            return self.state_key == tuple(key)

    @property
    def properties(self) -> dict:
        return dict(self._manifest.get("properties", {}))

    @property
    def default_plan(self) -> Plan:
        return Plan.parse(self._manifest["default_plan"])

    @property
    def lock(self) -> threading.RLock:
        """The re-entrant lock every read and write of this collection takes (a holder sees one state)."""
        return self._lock

    def exact_scan_size(self, dim: int) -> int:
        """Coordinates a stage one at prefix ``dim`` reads per query when it scans every row (Flat: rows x dim);
        0 when the configured index there does not (HNSW, IVF)."""
        cfg = self._manifest["stage_one"]
        if dim == cfg["dim"] and not cfg["factory"].startswith("Flat"):
            return 0
        return self._rows.n * dim

    def _load(self) -> None:
        m = self._manifest
        for seg in m["segments"]:
            vectors = np.load(self.path / f"{seg['name']}.vec.npy")
            self._rows.append_table(pq.read_table(self.path / f"{seg['name']}.meta.parquet"), vectors)
        if m["deleted"]:
            self._rows.kill_rows(np.load(self.path / m["deleted"]))
        self._committed_rows = self._rows.n
        cfg = m["stage_one"]
        if m["stage_one_file"]:
            s1 = StageOne.read(str(self.path / m["stage_one_file"]["name"]), cfg["dim"], cfg["factory"], cfg["params"])
            if s1.ntotal <= self._rows.n:
                self._stage_ones[cfg["dim"]] = s1
        wal_path = self.path / f"wal-{self.generation:06d}.log"
        records, good_end = read_records(wal_path)
        for record in records:
            self._apply(record)
        self._wal_records = len(records)
        self._wal_end = good_end
        if not self.read_only:
            self._remove_debris(keep={wal_path.name})
            self._wal = WriteAheadLog(wal_path, good_end)

    def _remove_debris(self, keep: set[str]) -> None:
        m = self._manifest
        keep |= {MANIFEST, "LOCK"}
        keep |= {f"{s['name']}.vec.npy" for s in m["segments"]} | {f"{s['name']}.meta.parquet" for s in m["segments"]}
        keep |= {m["deleted"]} if m["deleted"] else set()
        keep |= {m["stage_one_file"]["name"]} if m["stage_one_file"] else set()
        for file in self.path.iterdir():
            if file.is_file() and file.name not in keep:
                file.unlink()

    # -- writing -----------------------------------------------------------------------------------------------
    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict] | None = None,
        model_version: str = "unknown",
        *,
        if_version: str | None = None,
        if_same_payload: bool = False,
    ) -> int:
        """Insert or replace points; returns how many were written, once the write is durable (WAL fsync).

        Vectors are normalised to unit length. They have the collection's dim, or the valid length of
        ``model_version`` when ``version_dims`` records a shorter one, and a non-zero stage-one prefix (their
        first ``stage_one.dim`` values: stage one searches them). A batch must not repeat an id.
        ``if_version`` writes only the ids whose live point was stored with that model version (the others are
        skipped, atomically with the write); with ``if_same_payload``, only those whose live point also holds the
        payload being written: a backfill, which writes back the payload it read with the embedding of its text,
        never overwrites a point written meanwhile.
        """
        check_text(model_version, "model_version")
        if if_version is not None:
            check_text(if_version, "if_version")
        ids = check_ids(ids)
        vectors = check_vectors(vectors, len(ids), self.version_dim(model_version), self._manifest["stage_one"]["dim"])
        payload_texts = check_payloads(payloads, len(ids))
        if not ids:
            return 0
        if vectors.shape[1] < self.dim:  # an older, shorter model version: stored zero-padded
            vectors = np.pad(vectors, ((0, 0), (0, self.dim - vectors.shape[1])))
        with self._lock:
            if if_version is not None or if_same_payload:
                r = self._rows
                keep = [i for i, point_id in enumerate(ids) if point_id in r.row_of
                        and (if_version is None or r.version_of(r.row_of[point_id]) == if_version)
                        and (not if_same_payload or r.payload_of(r.row_of[point_id]) == json.loads(payload_texts[i]))]
                ids, vectors, payload_texts = [ids[i] for i in keep], vectors[keep], [payload_texts[i] for i in keep]
                if not ids:
                    return 0
            record = pa.record_batch(
                {
                    "id": pa.array(ids, pa.string()),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), self.dim),
                    "payload": pa.array(payload_texts, pa.string()),
                },
                metadata={"op": "upsert", "model_version": model_version},
            )
            self._writable().append(record)
            self._apply(record)
            if self._rows.n - self._committed_rows >= self._manifest["flush_rows"]:
                self.commit()
        return len(ids)

    def delete(self, ids: Sequence[str], missing: str = "error") -> int:
        """Delete points by id; returns how many were deleted.

        ``missing="error"`` (default) refuses the whole call when an id is unknown, deleting nothing;
        ``missing="ignore"`` deletes the known ids and skips the rest.
        """
        ids = check_ids(ids, allow_duplicates=True)
        if missing not in ("error", "ignore"):
            raise ValueError(f"missing: expected 'error' or 'ignore', got {missing!r}")
        with self._lock:
            unknown = [i for i in ids if i not in self._rows.row_of]
            if unknown and missing == "error":
                raise LookupError(f"ids: {len(unknown)} unknown id(s), e.g. {unknown[:5]}; nothing was deleted")
            known = list(dict.fromkeys(i for i in ids if i in self._rows.row_of))
            if known:
                record = pa.record_batch({"id": pa.array(known, pa.string())}, metadata={"op": "delete"})
                self._writable().append(record)
                self._apply(record)
            return len(known)

    def _apply(self, record: pa.RecordBatch) -> None:
        meta = {k.decode(): v.decode() for k, v in (record.schema.metadata or {}).items()}
        ids = record.column("id").to_pylist()
        if meta["op"] == "upsert":
            vectors = record.column("vector").values.to_numpy(zero_copy_only=False).reshape(-1, self.dim)
            self._rows.append(ids, vectors, record.column("payload").to_pylist(), [meta["model_version"]] * len(ids))
        elif meta["op"] == "delete":
            self._rows.kill(ids)
        else:
            raise ValueError(f"wal: unknown operation {meta['op']!r}")
        self._wal_records = getattr(self, "_wal_records", 0) + 1

    def _writable(self) -> WriteAheadLog:
        if self._lock_fd is None:
            raise RuntimeError(f"collection: {str(self.path)!r} is open read-only or closed")
        if self._wal is None:  # the last commit could not start its log (a failing disk): start it now
            self._wal = WriteAheadLog(self.path / f"wal-{self.generation:06d}.log", 0)
        return self._wal

    def _write_manifest(self, manifest: dict) -> None:
        """Write ``manifest`` atomically and hold it as this collection's. A write that fails after its rename
        (the directory's fsync) raises with the manifest on disk, where every reader opens it: memory holds it too."""
        try:
            write_json(self.path / MANIFEST, manifest)
        except BaseException:
            if self._on_disk(manifest):
                self._manifest = manifest
            raise
        self._manifest = manifest

    def _on_disk(self, manifest: dict) -> bool:
        try:
            return _read_manifest(self.path) == json.loads(json.dumps(manifest))
        except (OSError, ValueError):
            return False

    def commit(self, compact: bool | None = None) -> None:
        """Make everything written so far part of the committed state (atomic), and start a new WAL.

        ``compact`` rewrites all live rows as one segment; by default it runs when dead rows exceed a third.
        """
        with self._lock:
            self._writable()
            rows = self._rows
            dead = rows.n - rows.live_count
            if compact is None:
                compact = dead > 1000 and dead > rows.n / 3
            segments = list(self._manifest["segments"])
            before = (self._rows, dict(self._stage_ones), self._committed_rows)
            manifest = None
            try:
                if compact:
                    self._rows = rows = rows.compacted()
                    self._stage_ones.clear()
                    segments, self._committed_rows = [], 0
                gen = self.generation + 1
                if rows.n > self._committed_rows:
                    name = f"seg-{gen:06d}"
                    write_npy(self.path / f"{name}.vec.npy", rows.vectors[self._committed_rows :])
                    write_parquet(self.path / f"{name}.meta.parquet", rows.meta_table(self._committed_rows, rows.n))
                    segments.append({"name": name, "rows": rows.n - self._committed_rows})
                deleted = None
                if rows.n > rows.live_count:
                    deleted = f"deleted-{gen:06d}.npy"
                    write_npy(self.path / deleted, np.flatnonzero(~rows.alive))
                manifest = dict(self._manifest, generation=gen, segments=segments, deleted=deleted)
                manifest["stage_one_file"] = self._write_stage_one(gen)
                self._write_manifest(manifest)
            except BaseException:
                if self._manifest is not manifest:  # cut before the manifest: the old state is committed, in memory too
                    self._rows, self._stage_ones, self._committed_rows = before
                    raise
                self._start_generation()  # the manifest landed, making it durable failed: the disk is at ``gen``
                raise
            self._start_generation()

    def _start_generation(self) -> None:
        """Follow the manifest just written: every row is committed, a new WAL starts, older files go."""
        self._committed_rows = self._rows.n
        self._wal.close()
        self._wal, self._wal_records = None, 0
        new_wal = self.path / f"wal-{self.generation:06d}.log"
        self._wal = WriteAheadLog(new_wal, 0)
        self._remove_debris(keep={new_wal.name})

    def _write_stage_one(self, gen: int) -> dict | None:
        cfg = self._manifest["stage_one"]
        if cfg["factory"] == "Flat" or self._rows.n == 0:
            return None
        s1 = self._stage_one(cfg["dim"])
        if not s1.trained:
            return None  # too few rows to train it (IVF) yet: its rows are searched exactly, rebuilt from the rows
        name = f"stage1-{gen:06d}.faiss"
        write_atomic(self.path / name, lambda tmp: s1.write(str(tmp)))
        return {"name": name, "rows": s1.ntotal}

    # -- reading -----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._rows.live_count

    def get(self, ids: Sequence[str]) -> list[Point | None]:
        """The stored points, in the order asked; ``None`` for an id that is not stored."""
        ids = check_ids(ids, allow_duplicates=True)
        with self._lock:
            return [self._point(self._rows.row_of.get(i)) for i in ids]

    def _point(self, row: int | None) -> Point | None:
        if row is None:
            return None
        r = self._rows
        version = r.version_of(row)
        return Point(r.ids[row], r.vectors[row, : self.version_dim(version)].astype(np.float32), r.payload_of(row), version)

    def search(
        self,
        queries: np.ndarray,
        k: int | None = None,
        plan: Plan | str | None = None,
        *,
        where: dict | None = None,
        model_version: str | None = None,
    ) -> list[list[Hit]]:
        """Top-``k`` hits per query, coarse-to-fine along ``plan`` (default: the collection's plan).

        ``where`` keeps points whose payload has every given field equal to the given value (exact match:
        numbers as numbers, strings, booleans, null); ``model_version`` keeps points stored with that model
        version. Both are applied in stage one with the deleted rows, so fewer than ``k`` hits come back only
        when fewer points match.
        """
        records = self.search_records(queries, k, plan, where=where, model_version=model_version)
        return [[Hit(i, s, json.loads(p), v) for i, s, p, v in row] for row in records]

    def search_records(
        self,
        queries: np.ndarray,
        k: int | None = None,
        plan: Plan | str | None = None,
        *,
        where: dict | None = None,
        model_version: str | None = None,
    ) -> list[list[tuple[str, float, str, str]]]:
        """``search`` with each hit as stored: (id, score, payload as JSON text, model version). For callers that
        pass payloads on without reading them (the gRPC server), decoding them would be wasted."""
        with self._lock:  # row numbers stay valid until the lock is let go (a commit may compact)
            scores, rows = self.search_rows(queries, k, plan, where=where, model_version=model_version)
            r = self._rows
            ids, payloads, versions, codes = r.ids, r.payloads, r.versions, r.version_codes
            return [
                [(ids[row], s, payloads[row], versions[codes[row]]) for s, row in zip(srow, rrow) if row >= 0]
                for srow, rrow in zip(scores.tolist(), rows.tolist())
            ]

    def search_rows(
        self,
        queries: np.ndarray,
        k: int | None = None,
        plan: Plan | str | None = None,
        *,
        where: dict | None = None,
        model_version: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row numbers (-1 pads when fewer matching rows than k): the search without the payloads."""
        plan = Plan.of(plan) if plan is not None else self.default_plan
        plan.check_dim(self.dim)
        plan = self.version_plan(plan.for_k(plan.k if k is None else k), model_version)
        queries = check_queries(queries, plan, self.dim)
        with self._lock:
            alive = self._row_mask(where, model_version)
            groups = self._length_groups(plan.max_dim, alive)
            if groups is None:
                return self._run_plan(queries, plan, alive)
            found = [self._run_plan(queries, plan.within(length), mask) for length, mask in groups]
        return merge_top(found, plan.k)

    def _run_plan(self, queries: np.ndarray, plan: Plan, alive: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        first = plan.stages[0]
        scores, rows = self._stage_one(first.dim).search(queries, first.keep, alive)
        if alive is not None:
            scores, rows = self._fill_shortlists(queries, first.dim, scores, rows, alive)
        for s in plan.stages[1:]:
            scores, rows = rerank(queries, rows, self._rows.vectors, s.dim, s.keep)
        return scores, rows

    def _fill_shortlists(
        self, queries: np.ndarray, dim: int, scores: np.ndarray, rows: np.ndarray, alive: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stage one again, as an exact scan of the allowed rows, for each query that came back with fewer rows
        than are allowed: a graph (HNSW) or inverted lists (IVF) searched under a selective filter or after
        many deletes find few allowed rows (as Qdrant, a full scan where the filter leaves few)."""
        short = np.count_nonzero(rows >= 0, axis=1) < min(rows.shape[1], np.count_nonzero(alive))
        if not short.any():
            return scores, rows
        allowed = np.flatnonzero(alive)
        exact = StageOne(dim)
        exact.add(self._rows.vectors[allowed])
        found_scores, found = exact.search(queries[short], rows.shape[1], None)
        scores[short] = found_scores
        rows[short] = np.where(found >= 0, allowed[np.maximum(found, 0)], -1)
        return scores, rows

    def _length_groups(self, max_dim: int, alive: np.ndarray | None) -> list[tuple[int, np.ndarray]] | None:
        """None when every searchable row is at least ``max_dim`` long; else (length, row mask) per group of
        model versions, a version's length being ``min(its valid dim, max_dim)``."""
        r = self._rows
        lengths = {code: min(self.version_dim(v), max_dim) for code, v in enumerate(r.versions)}
        if all(length == max_dim for length in lengths.values()):
            return None
        searchable = r.alive if alive is None else alive
        groups = []
        for length in sorted(set(lengths.values()), reverse=True):
            codes = [code for code, n in lengths.items() if n == length]
            mask = searchable & np.isin(r.version_codes, codes)
            if mask.any():
                groups.append((length, mask))
        return groups or [(max_dim, searchable)]

    def _row_mask(self, where: dict | None, model_version: str | None) -> np.ndarray | None:
        """Rows a search may return (bool per row), or None for every row: live, matching ``where`` and version."""
        r = self._rows
        mask = None if r.live_count == r.n else r.alive.copy()
        if model_version is not None:
            live = sorted({r.versions[c] for c in np.unique(r.version_codes[r.alive])})
            if model_version not in live:
                raise LookupError(f"model_version: expected one of the stored versions {live}, got {model_version!r}")
            by_version = r.version_codes == r.versions.index(model_version)
            mask = by_version if mask is None else mask & by_version
        if where:
            by_payload = r.payload_mask(check_where(where))
            mask = by_payload if mask is None else mask & by_payload
        return mask

    def choose_plan(self, target: float, k: int = 10, sample: int = 500, seed: int = 0) -> PlanChoice:
        """The cheapest plan whose recall@k against exact full-dim search meets ``target`` on a sample of this
        collection's own vectors (see telescope.index.autoplan); exact search when none does."""
        if not isinstance(target, (int, float)) or not 0 < target <= 1:
            raise ValueError(f"recall_target: expected a number in (0, 1], got {target!r}")
        for name, value in (("k", k), ("sample", sample)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        with self._lock:
            live = np.flatnonzero(self._rows.alive)
            if len(live) <= k + 1:
                return PlanChoice(Plan.exact(self.dim, k), 1.0, float(target), k, 0, len(live))
            rng = np.random.default_rng(seed)
            own = rng.choice(live, size=min(sample, len(live)), replace=False)
            queries = upcast(self._rows.vectors[own])  # fancy indexing copied them
            truth = without_self(self._exact_rows(queries, k + 1), own, k)
            cfg = self._manifest["stage_one"]
            first_dims = None if cfg["factory"] == "Flat" else [cfg["dim"]]
            best: PlanChoice | None = None
            for plans in candidate_plans(self.dim, k, len(live), first_dims).values():
                for plan in plans:
                    if best is not None and plan.flops(len(live)) >= best.plan.flops(len(live)):
                        break
                    found = without_self(self.search_rows(queries, k + 1, plan.for_k(k + 1))[1], own, k)
                    recall = recall_at_k(found, truth)
                    if recall >= target:
                        best = PlanChoice(plan, recall, float(target), k, len(own), len(live))
                        break
            if best is not None:
                return best
            recall = 1.0  # exact search, unless the stage one at the full dim is an index (HNSW, IVF): measured then
            if cfg["dim"] == self.dim and cfg["factory"] != "Flat":
                recall = recall_at_k(without_self(self.search_rows(queries, k + 1)[1], own, k), truth)
            return PlanChoice(Plan.exact(self.dim, k), recall, float(target), k, len(own), len(live))

    def _exact_rows(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Rows of exact full-dim search, through a Flat stage one even where the configured one (HNSW, IVF) sits at
        the full dim: there ``Plan.exact`` is that approximate index. The Flat copy lasts this call (under the lock)."""
        cfg = self._manifest["stage_one"]
        if cfg["dim"] != self.dim or cfg["factory"] == "Flat":
            return self.search_rows(queries, k, Plan.exact(self.dim, k))[1]
        with self._lock:
            configured = self._stage_ones.pop(self.dim, None)
            self._stage_ones[self.dim] = StageOne(self.dim)
            try:
                return self.search_rows(queries, k, Plan.exact(self.dim, k))[1]
            finally:
                del self._stage_ones[self.dim]
                if configured is not None:
                    self._stage_ones[self.dim] = configured

    def version_dim(self, version: str) -> int:
        """The valid length of ``version``'s vectors: its ``version_dims`` entry, else the collection's dim."""
        return int(self._manifest.get("version_dims", {}).get(version, self.dim))

    def version_plan(self, plan: Plan, model_version: str | None) -> Plan:
        """``plan`` for a search of ``model_version``'s vectors only (None: every version's): cut to their length,
        so an older model's query (as short as its vectors) searches them during a rollout."""
        return plan if model_version is None else plan.within(self.version_dim(model_version))

    def ids(self, *, model_version: str | None = None, other_than: str | None = None, limit: int | None = None) -> list[str]:
        """Live ids in storage order: all, those stored with ``model_version``, or those with any other version
        than ``other_than``; at most ``limit``."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit: expected an integer >= 0 or None, got {limit!r}")
        with self._lock:
            r = self._rows
            mask = r.alive.copy()
            for version, keep in ((model_version, True), (other_than, False)):
                if version is not None:
                    match = np.zeros(r.n, bool) if version not in r.versions else r.version_codes == r.versions.index(version)
                    mask &= match if keep else ~match
            rows = np.flatnonzero(mask)[:limit]
            return [r.ids[row] for row in rows.tolist()]

    def reconfigure(
        self, *, dim: int | None = None, default_plan: Plan | str | None = None, properties: dict | None = None
    ) -> None:
        """Change the dim, the default plan and/or the properties in one atomic manifest write.

        A new ``dim`` rewrites every live row, zero-padded or cut, as one new segment (a compacting commit):
        versions shorter than the new dim are recorded in ``version_dims``. Narrowing below a stored version's
        valid length is refused (re-embed those points first).
        """
        if properties is not None:
            properties = check_properties(properties)
        with self._lock:
            self._writable()
            new_dim = self.dim if dim is None else check_dim(dim)
            plan = Plan.of(default_plan) if default_plan is not None else self.default_plan
            plan.check_dim(new_dim)
            r = self._rows
            live = sorted({r.versions[c] for c in np.unique(r.version_codes[r.alive])})
            lengths = {v: self.version_dim(v) for v in live}
            too_long = {v: n for v, n in lengths.items() if n > new_dim}
            if too_long:
                raise ValueError(
                    f"dim: expected at least the stored vectors' length {max(too_long.values())} "
                    f"(model versions {sorted(too_long)}), got {new_dim}"
                )
            if new_dim == self.dim:
                manifest = dict(self._manifest, default_plan=str(plan))
                if properties is not None:
                    manifest["properties"] = properties
                self._write_manifest(manifest)
                return
            self.commit(compact=True)  # the WAL is empty and the live rows one segment from here on
            manifest = dict(self._manifest, default_plan=str(plan))
            if properties is not None:
                manifest["properties"] = properties
            rows = Rows(new_dim, self.vector_dtype)
            old = self._rows
            vectors = np.zeros((old.n, new_dim), dtype=np.float32)
            keep = min(new_dim, self.dim)
            vectors[:, :keep] = old.vectors[:, :keep]
            rows.append(old.ids, vectors, old.payloads, [old.version_of(i) for i in range(old.n)])
            s1 = dict(self._manifest["stage_one"])
            s1["dim"] = min(s1["dim"], new_dim)
            manifest.update(
                dim=new_dim,
                stage_one=s1,
                segments=[],
                deleted=None,
                version_dims={v: n for v, n in lengths.items() if n < new_dim},
            )
            before = (self._manifest, self.dim, self._rows, dict(self._stage_ones), self._committed_rows)
            self._manifest, self.dim, self._rows = manifest, new_dim, rows
            self._stage_ones.clear()
            self._committed_rows = 0
            try:
                self.commit(compact=False)
            except BaseException:
                if self.generation == before[0]["generation"]:  # the disk holds the old dim still: so does memory
                    self._manifest, self.dim, self._rows, self._stage_ones, self._committed_rows = before
                raise

    def set_default_plan(self, plan: Plan | str) -> None:
        """Make ``plan`` the collection's default (written to the manifest atomically)."""
        plan = Plan.of(plan)
        plan.check_dim(self.dim)
        with self._lock:
            self._writable()
            self._write_manifest(dict(self._manifest, default_plan=str(plan)))

    def set_stage_one_params(self, params: str) -> None:
        """Set the stage one's FAISS search knobs (``"nprobe=32"`` for IVF, ``"efSearch=128"`` for HNSW) without
        rebuilding it: checked against a fresh index of its factory, written to the manifest atomically, then
        applied to the index in memory."""
        cfg = self._manifest["stage_one"]
        StageOne(cfg["dim"], cfg["factory"], params)  # the same error a create with these params would raise
        with self._lock:
            self._writable()
            self._write_manifest(dict(self._manifest, stage_one=dict(cfg, params=params)))
            s1 = self._stage_ones.get(cfg["dim"])
            if s1 is not None:
                s1.set_params(params)

    def _stage_one(self, dim: int) -> StageOne:
        """The stage-one index for a prefix dim, brought up to date with the rows (built on first use).

        The configured stage-one dim uses the configured factory; any other first-stage dim an exact Flat scan.
        """
        cfg = self._manifest["stage_one"]
        s1 = self._stage_ones.get(dim)
        if s1 is None:
            s1 = StageOne(dim, cfg["factory"], cfg["params"]) if dim == cfg["dim"] else StageOne(dim)
            self._stage_ones[dim] = s1
        if s1.ntotal < self._rows.n:
            s1.add(self._rows.vectors[s1.ntotal :])
        return s1

    def stage_one_device(self, plan: Plan | str) -> str:
        """``cpu`` or ``gpu``: where ``plan``'s stage one runs on this collection (deleted rows counted)."""
        first = Plan.of(plan).stages[0]
        with self._lock:
            return self._stage_one(first.dim).device_for(first.keep, self._rows.n - self._rows.live_count)

    def info(self) -> dict:
        with self._lock:
            versions: dict[str, int] = {}
            codes = self._rows.version_codes[self._rows.alive]
            for code, count in zip(*np.unique(codes, return_counts=True)):
                versions[self._rows.versions[code]] = int(count)
            return {
                "path": str(self.path),
                "points": len(self),
                "rows": self._rows.n,
                "dim": self.dim,
                "vector_dtype": self.vector_dtype,
                "default_plan": self._manifest["default_plan"],
                "stage_one": self._manifest["stage_one"],
                "generation": self.generation,
                "segments": len(self._manifest["segments"]),
                "uncommitted_writes": self._wal_records,
                "model_versions": versions,
                "version_dims": dict(self._manifest.get("version_dims", {})),
                "properties": self.properties,
            }

    def memory_bytes(self) -> dict:
        """Bytes this collection holds to answer searches: ``vectors`` (the full-dim rows that every plan re-ranks
        from, rows x dim x 4, or x 2 for float16) and ``stage_one`` (per prefix dim built so far: its FAISS index, serialised size).
        Ids and payloads are not counted."""
        with self._lock:
            return {
                "vectors": int(self._rows.n) * self.dim * np.dtype(self.vector_dtype).itemsize,
                "stage_one": {dim: s1.nbytes for dim, s1 in self._stage_ones.items()},
            }
