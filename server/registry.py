"""The collections and models a server holds: one collection per directory under its data directory.

Opens every collection at start (the server reports NOT_SERVING meanwhile), loads each model a collection
names once and shares it, creates and deletes collections by name, and commits and closes them all at
shutdown. A collection's query model is the ``model`` property recorded when it was created (as
``telescope index create`` records it) or by a rollout (``telescope rollout``).

A collection opened in the middle of a rollout (``telescope rollout --no-backfill``, or a backfill that was
cut) has its backfill resumed in a background thread (``backfill_rate`` points/s at most) while the server
answers; ``close`` stops it between two batches, and the next start resumes it.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from pathlib import Path

from telescope.embedder import DEFAULT_MODEL, Embedder, load_embedder
from telescope.embedder.model import model_location
from telescope.index import Collection
from telescope.index.wal import fsync_dir
from telescope.pipelines.backfill import BackfillReport, BackgroundBackfill
from telescope.pipelines.ingest import check_collection_dim
from telescope.pipelines.rollout import ACTIVE, KEY as ROLLOUT, rollout_status, settle

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MANIFEST = "manifest.json"
DELETED = ".deleted-"  # a deleted collection's directory while its files go (no collection name starts with '.')


def check_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{field}: expected 1-64 characters of [A-Za-z0-9_.-] starting with a letter or digit, got {name!r}")
    return name


class Registry:
    def __init__(
        self, data_dir: str | Path, default_model: str = DEFAULT_MODEL, backfill_rate: float | None = 100.0,
        backfill_batch_size: int = 32,
    ):
        self.data_dir = Path(data_dir)
        self.default_model = model_location(default_model)
        self.backfill_rate = backfill_rate  # points per second re-embedded by a background backfill
        self.backfill_batch_size = backfill_batch_size  # the query model waits at most one batch's encoding
        self._backfills: dict[str, BackgroundBackfill] = {}
        self._collections: dict[str, Collection] = {}
        self._embedders: dict[str, Embedder] = {}
        self._lock = threading.RLock()
        self._closed = False  # close() began: no new background backfill starts

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def load(self) -> list[str]:
        """Open every collection under the data directory and load the models they name; returns their names."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.embedder(self.default_model)
        for gone in self.data_dir.glob(f"{DELETED}*"):  # a delete cut short: its name was given up already
            shutil.rmtree(gone, ignore_errors=True)
        for path in sorted(p for p in self.data_dir.iterdir() if not p.name.startswith(DELETED) and (p / MANIFEST).is_file()):
            collection = Collection.open(path)
            with self._lock:
                self._collections[path.name] = collection
            if "model" in collection.properties:
                self.embedder(collection.properties["model"])
            self._resume_backfill(path.name, collection)
        return self.names()

    def _resume_backfill(self, name: str, collection: Collection) -> None:
        status = rollout_status(collection)
        if status is None or status.state not in ACTIVE:
            return
        if not status.remaining:
            settle(collection)
            return
        model = status.to_model if status.state == "backfilling" else status.from_model
        job = BackgroundBackfill(collection, self.embedder(model), on_done=lambda report: self._backfilled(name, collection, report),
                                 rate=self.backfill_rate, batch_size=self.backfill_batch_size,
                                 text_field=status.text_field)
        with self._lock:
            if self._closed or self._collections.get(name) is not collection:
                return  # the server is stopping, or the collection was deleted meanwhile
            self._backfills[name] = job.start()

    def _backfilled(self, name: str, collection: Collection, report: BackfillReport) -> None:
        """A background backfill ended: settle the rollout; points of the version it replaces that were written
        after its last pass and before settling keep it active, and get a backfill of their own."""
        status = settle(collection)
        if not report.stopped and status is not None and status.state in ACTIVE and status.remaining:
            self._resume_backfill(name, collection)

    def backfill_state(self, name: str) -> tuple[bool, str]:
        """Whether this server runs a backfill of ``name`` now, and why it ended early ("" if it did not)."""
        with self._lock:
            job = self._backfills.get(name)
        if job is None:
            return False, ""
        return job.running, "; ".join(job.report.errors)

    def close(self) -> list[str]:
        """Commit and close every collection (called after the last request drained); returns their names."""
        with self._lock:
            self._closed = True
            jobs = list(self._backfills.values())
        for job in jobs:
            job.stop()
        with self._lock:
            names = sorted(self._collections)
            for name in names:
                self._collections.pop(name).close()
            return names

    # -- collections -------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._collections)

    def collection(self, name: str, field: str = "collection") -> Collection:
        with self._lock:
            found = self._collections.get(name)
            if found is None:
                check_name(name, field)
                known = sorted(self._collections)
                shown = known[:20] + (["..."] if len(known) > 20 else [])
                raise LookupError(f"{field}: expected one of the server's collections {shown}, got {name!r}")
            return found

    def create(
        self,
        name: str,
        model: str | None = None,
        dim: int | None = None,
        plan: str | None = None,
        stage_one: str = "Flat",
        stage_one_params: str = "",
        vector_dtype: str = "float32",
    ) -> Collection:
        check_name(name)
        location = model_location(model or self.default_model)
        embedder = self.embedder(location)
        check_collection_dim(dim, embedder.full_dim)
        with self._lock:
            path = self.data_dir / name
            if name in self._collections or (path / MANIFEST).exists():
                raise FileExistsError(f"name: expected a new collection name, got {name!r} (it exists)")
            collection = Collection.create(
                path,
                embedder.full_dim if dim is None else dim,
                default_plan=plan,
                stage_one=stage_one,
                stage_one_params=stage_one_params,
                properties={"model": location, "model_version": embedder.manifest.tag},
                vector_dtype=vector_dtype,
            )
            self._collections[name] = collection
            return collection

    def delete(self, name: str) -> int:
        """Close a collection and remove its directory; returns how many points it held. The directory is first
        renamed out of the collection names (atomic), so a crash while its files go leaves no half collection that
        the next start would fail to open."""
        with self._lock:
            collection = self.collection(name, field="name")
            job = self._backfills.pop(name, None)
            if job is not None:
                job.stop()
            del self._collections[name]
            points = len(collection)
            collection.close()
            gone = collection.path.with_name(f"{DELETED}{name}-{uuid.uuid4().hex[:8]}")
            os.replace(collection.path, gone)
            fsync_dir(self.data_dir)
            shutil.rmtree(gone)
            return points

    # -- models ------------------------------------------------------------------------------------------------
    def embedder(self, model: str) -> Embedder:
        """The model at a location (``"default"`` or a folder), loaded once."""
        location = model_location(model)
        with self._lock:
            found = self._embedders.get(location)
        if found is not None:
            return found
        embedder = load_embedder(location)  # a missing folder: FileNotFoundError naming "model" (INVALID_ARGUMENT)
        with self._lock:
            return self._embedders.setdefault(location, embedder)

    def held_model(self, name: str, field: str = "model") -> Embedder:
        """A model the server already holds, by location or by version tag; ``""`` is the server's default."""
        with self._lock:
            if not name:
                return self._embedders[self.default_model]
            for location, embedder in self._embedders.items():
                if name in (location, embedder.manifest.tag) or model_location(name) == location:
                    return embedder
            held = sorted({e.manifest.tag for e in self._embedders.values()} | set(self._embedders))
        raise LookupError(f"{field}: expected a model the server holds (by location or version) {held}, got {name!r}")

    def query_model(self, collection: Collection, version: str = "", field: str = "model_version") -> Embedder:
        """The model that embeds text for ``collection``: its own, the other model of its rollout (loaded once),
        or the held model of ``version``."""
        model = collection.properties.get("model")
        if model is None:
            raise RuntimeError(
                f"collection {collection.path.name!r}: expected a 'model' property to embed text with, got none; "
                "send vectors"
            )
        own = self.embedder(model)
        if not version or version == own.manifest.tag:
            return own
        rollout = collection.properties.get(ROLLOUT)
        for side in (rollout["from"], rollout["to"]) if rollout else ():
            if side["model_version"] == version and side["model"]:
                return self.embedder(side["model"])
        return self.held_model(version, field)
