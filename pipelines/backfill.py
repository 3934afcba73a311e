"""Lazy backfill: re-embed a collection's points stored by another model version, while it keeps answering.

``backfill(collection, embedder)`` finds the live points whose model version is not ``embedder``'s, reads each
one's text from its payload (``text_field``), embeds it and writes it back under the new version, batch by batch,
at that version's length in the collection (the model's full dim, or its prefix in a collection shorter than the
model); points another version writes meanwhile are taken in a next pass.
Each write is ``upsert(..., if_version=<the version it read>, if_same_payload=True)``: a point written meanwhile
(by an ingest with the new model, rewritten by the old one, or deleted) is left alone, atomically; one rewritten
by the old model is taken in the next pass. Every batch is durable when its upsert returns, and the
collection itself is the progress record (the points still of another version are what is left), so a killed
backfill resumes by running it again: nothing is redone, nothing is skipped.

``rate`` caps the points per second (the backfill shares the machine with the queries it must not slow);
``stop`` (a ``threading.Event``) ends it between batches. ``BackgroundBackfill`` runs it in a daemon thread and
exposes its progress. Queries stay correct throughout: the collection scores each stored vector with the plan
its length allows and returns each id once (see telescope.index.collection).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from telescope.embedder import Embedder
from telescope.embedder.progress import progress_bar
from telescope.index import Collection


def check_options(batch_size: int, rate: float | None) -> None:
    """ValueError naming ``batch_size`` or ``rate`` when out of range: callers check before they change anything."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    if rate is not None and not rate > 0:
        raise ValueError(f"rate: expected points per second > 0 (or none for no limit), got {rate!r}")


@dataclass
class BackfillReport:
    written: int = 0  # points re-embedded and written under the new version
    skipped: int = 0  # points changed or deleted meanwhile (left as they were)
    remaining: int = 0  # points still of another version when it returned
    stopped: bool = False  # ended by ``stop`` before the end
    seconds: float = 0.0
    batches: int = 0
    errors: list[str] = field(default_factory=list)


def backfill(
    collection: Collection,
    embedder: Embedder,
    *,
    text_field: str = "text",
    batch_size: int = 64,
    rate: float | None = None,
    stop: threading.Event | None = None,
    show_progress: bool = True,
    on_batch: Callable[[BackfillReport], None] | None = None,
) -> BackfillReport:
    """Re-embed every live point not stored by ``embedder``'s version; returns what it did (see module doc)."""
    check_options(batch_size, rate)
    target = embedder.manifest.tag
    dim = collection.version_dim(target)  # the model's full dim, or a prefix of it (a collection shorter than it)
    if dim > embedder.full_dim:
        raise ValueError(
            f"model: expected vectors of at least {dim} dims for {target!r} in {str(collection.path)!r}, "
            f"the model gives {embedder.full_dim}"
        )
    report = BackfillReport()
    began = time.perf_counter()
    todo = collection.ids(other_than=target)
    with progress_bar("backfill", total=len(todo), unit="points", enabled=show_progress) as advance:
        while todo:  # a point another version wrote meanwhile is in the next pass
            for start in range(0, len(todo), batch_size):
                if stop is not None and stop.is_set():
                    report.stopped = True
                    break
                points = [(i, p) for i, p in zip(todo[start : start + batch_size], collection.get(todo[start : start + batch_size]))
                          if p and p.model_version != target]
                report.skipped += min(batch_size, len(todo) - start) - len(points)  # deleted or rewritten meanwhile
                by_version: dict[str, list[tuple[str, dict]]] = {}
                for point_id, point in points:
                    by_version.setdefault(point.model_version, []).append((point_id, point.payload))
                for version, group in by_version.items():
                    texts = [text_of(point_id, payload, text_field) for point_id, payload in group]
                    vectors = embedder.encode(texts, dim=dim, batch_size=batch_size)
                    written = collection.upsert(
                        [i for i, _ in group], vectors, [p for _, p in group], model_version=target, if_version=version,
                        if_same_payload=True,
                    )
                    report.written += written
                    report.skipped += len(group) - written
                report.batches += 1
                advance(min(batch_size, len(todo) - start))
                if on_batch is not None:
                    on_batch(report)
                if rate is not None:
                    ahead = (report.written + report.skipped) / rate - (time.perf_counter() - began)
                    if ahead > 0:
                        (stop.wait if stop is not None else time.sleep)(ahead)
            todo = [] if report.stopped else collection.ids(other_than=target)
    if report.written:
        collection.commit()
    report.remaining = len(collection.ids(other_than=target))
    report.seconds = time.perf_counter() - began
    return report


def text_of(point_id: str, payload: dict, text_field: str) -> str:
    text = payload.get(text_field)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"payload[{text_field!r}] of point {point_id!r}: expected the text to re-embed, got {text!r} "
            "(points need their text in the payload to be backfilled; see --text-field)"
        )
    return text


class BackgroundBackfill:
    """``backfill`` in a daemon thread: ``start()``, ``stop()``, ``join()``; ``report`` updates per batch."""

    def __init__(self, collection: Collection, embedder: Embedder, on_done: Callable[[BackfillReport], None] | None = None, **options):
        self.collection, self.embedder, self.options, self.on_done = collection, embedder, options, on_done
        self.report = BackfillReport()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"backfill-{collection.path.name}", daemon=True)

    def start(self) -> "BackgroundBackfill":
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        def progress(report: BackfillReport) -> None:
            self.report = report

        try:
            self.report = backfill(
                self.collection, self.embedder, stop=self._stop, show_progress=False, on_batch=progress, **self.options
            )
            if self.on_done is not None:
                self.on_done(self.report)
        except BaseException as e:  # kept for whoever joins; the thread must not die silently
            self.error = e
            self.report.errors.append(f"{type(e).__name__}: {e}")
