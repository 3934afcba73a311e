"""A build job: a checked source streamed into a collection, resumable and incremental, with progress and a summary.

``run_build`` is ``telescope index build`` without the command line. Given a source that passed
``check_source`` and an open collection, it streams the source in Arrow batches and, per document:

1. applies the bad-input policies (NULL/blank id or text, duplicate ids), counting what it skips;
2. hashes the text with the embedding setup (model, layer, dim, chunking), and the payload, and asks the
   job state (``telescope.pipelines.state``) whether that hash is new: unchanged documents are skipped, so a
   rerun after a crash resumes and a rerun on a changed source is incremental (the payload is hashed with its
   keys sorted, so a source that lists its columns in another order is unchanged). An unchanged document whose
   points the collection no longer holds as recorded (another job or an ``index add`` replaced or deleted them)
   is embedded again. A document whose payload alone changed (a metadata column edited, or added to the source)
   keeps its vectors: its points are upserted again with them and the new payload, once the collection is seen
   to hold them as the job wrote them (this model version, the recorded payload);
3. chunks it when asked (``telescope.pipelines.chunking``), and queues its points in a window;

then hands the windows to an encoder (local or Ray) through the one ingest loop, records each document in the
job state once all its points are durable (and its Parquet shard renamed), and at the end removes the
documents the state holds but a complete read of the source did not (never after a ``--limit`` or a skipped
unreadable file).

Recording documents costs a DuckDB commit (~20-40 ms), so it happens at checkpoints: every
``checkpoint_seconds`` (default 5 s; 0 records after every batch), when a Parquet shard closes, and at the end.
A crash loses at most the work since the last checkpoint: those points are already in the collection and are
embedded once more and replaced on the rerun, so no id is ever stored twice; documents are noted in the job state
before their points are written, so the rerun also removes such points when it does not write them again (the
source or the chunking changed meanwhile).

Memory holds one read batch, one window of pending texts and the documents in flight, not the source (the
collection itself keeps its vectors in memory, as the index does). Written here rather than taken from a
library: no embedding or ETL library keeps per-document content hashes against a vector store with this
crash contract; the parts that are generic (reading, SQL, hashing state, Arrow, actor pools) are DuckDB,
pyarrow and Ray.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from telescope.embedder import Embedder
from telescope.embedder.progress import progress_bar
from telescope.index import Collection
from telescope.pipelines.checks import Policies, SourceCheck
from telescope.pipelines.chunking import CHUNK_SEP, check_chunking, chunk_id, chunk_texts
from telescope.pipelines.ingest import POINTS_SCHEMA, Encoder, ingest_windows, points_table, text_dim, upsert_points
from telescope.pipelines.shards import ShardWriter
from telescope.pipelines.sources import ID, TEXT, SourceSpec, jsonable, parse_json_columns, stream
from telescope.pipelines.state import JobState


@dataclass(frozen=True)
class BuildOptions:
    """How a job embeds and writes. ``chunk_tokens`` 0 embeds each document whole (cut at the model's limit)."""

    layer: int | None = None
    dim: int | None = None
    batch_size: int = 64
    upsert_rows: int = 512  # points per durable upsert (one WAL fsync each)
    window: int = 8192  # texts sorted by length together
    read_rows: int = 8192  # rows per Arrow batch read from DuckDB
    chunk_tokens: int = 0
    chunk_overlap: int = 0
    parquet_dir: Path | None = None
    shard_rows: int = 100_000
    checkpoint_seconds: float = 5.0  # how often finished documents are recorded in the job state (0: every batch)
    job: str = "build"
    delete_missing: bool = True
    show_progress: bool = True

    def __post_init__(self) -> None:
        for name, flag in (("batch_size", "--batch-size"), ("upsert_rows", "--upsert-rows"), ("window", "--sort-window"),
                           ("read_rows", "read_rows"), ("shard_rows", "--shard-rows")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{flag}: expected an integer >= 1, got {value!r}")
        if not self.checkpoint_seconds >= 0:
            raise ValueError(f"--checkpoint-seconds: expected a number >= 0, got {self.checkpoint_seconds!r}")
        if not self.job or not all(ch.isalnum() or ch in "-_." for ch in self.job):
            raise ValueError(f"--job: expected a name of letters, digits, '-', '_' or '.', got {self.job!r}")


@dataclass
class BuildReport:
    """The summary of one run. ``skipped`` counts rows left out by reason; unchanged documents are not skipped."""

    engine: str
    rows_read: int = 0
    docs_embedded: int = 0
    points_upserted: int = 0
    unchanged: int = 0
    payloads_updated: int = 0  # documents whose payload alone changed: upserted again with their stored vectors
    written_again: int = 0  # unchanged documents whose points another writer replaced or deleted (embedded again)
    kept_from_backfill: int = 0
    deleted_docs: int = 0
    deleted_points: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    unreadable_files: list[tuple[str, str]] = field(default_factory=list)
    truncated_texts: int = 0
    shards: list[str] = field(default_factory=list)
    collection_points: int = 0
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def state_path(collection: Collection, job: str) -> Path:
    return collection.path / "jobs" / f"{job}.duckdb"


def setup_fingerprint(embedder: Embedder, options: BuildOptions) -> str:
    """What besides a document's content decides its vectors: a change re-embeds everything."""
    layer, dim = embedder.check_point(options.layer, options.dim)
    return f"{embedder.manifest.tag}|{embedder.model_hash}|layer={layer}|dim={dim}|chunk={options.chunk_tokens}/{options.chunk_overlap}"


def check_options(embedder: Embedder, options: BuildOptions) -> tuple[int, int]:
    """The (layer, dim) the job embeds at; ValueError naming the option when the model cannot do what it asks."""
    layer, dim = embedder.check_point(options.layer, options.dim)
    if options.chunk_tokens:
        check_chunking(options.chunk_tokens, options.chunk_overlap, embedder.max_seq_length)
    elif options.chunk_overlap:  # ignored, it would still change every document's hash
        raise ValueError(f"--chunk-overlap: expected 0 without --chunk-tokens, got {options.chunk_overlap!r}")
    return layer, dim


def canonical_json(payload: dict) -> str:
    """A payload as JSON with its keys sorted: what it holds, not the column order a source happens to have."""
    return json.dumps(payload, allow_nan=False, sort_keys=True)


def content_hash(fingerprint: str, text: str, payload_json: str) -> str:
    """The hash a document is recorded with, ``<text part>.<payload part>``: the text's under the setup, and the
    payload's (``hashed_payload``), so that a change of the payload alone is told apart."""
    text_part = hashlib.blake2b(f"{fingerprint}\0{text}".encode(), digest_size=16).hexdigest()
    return f"{text_part}.{payload_hash(payload_json)}"


def payload_hash(payload_json: str) -> str:
    return hashlib.blake2b(payload_json.encode(), digest_size=8).hexdigest()


def hashed_payload(payload: dict, chunk_fields: tuple[str, ...]) -> str:
    """The payload a document's hash covers: its ``canonical_json`` without the fields its chunks overwrite (the
    text, ``doc_id``, ``chunk``; none unchunked), so that a stored chunk's payload gives the same."""
    return canonical_json(_without(payload, chunk_fields))


def _legacy_hash(fingerprint: str, text: str, payload_json: str) -> str:
    """The one hash of setup, text and payload that versions before ``content_hash`` recorded."""
    return hashlib.blake2b(f"{fingerprint}\0{text}\0{payload_json}".encode(), digest_size=16).hexdigest()


def _rehash_legacy(state: JobState, fingerprint: str, docs: list[str], texts: list[str], payloads: list[str],
                   canonical: list[str], hashes: list[str], changed: dict) -> None:
    """Documents recorded in an earlier version's form (``_legacy_hash`` of the payload with its keys sorted, or
    before that in source order) that are unchanged: recorded with their ``content_hash`` and taken out of
    ``changed``, not embedded again."""
    for forms in (canonical, payloads):
        rows = [i for i, doc in enumerate(docs) if changed.get(doc)]
        if not rows:
            return
        same = state.matching([docs[i] for i in rows], [_legacy_hash(fingerprint, texts[i], forms[i]) for i in rows])
        rows = [i for i in rows if docs[i] in same]
        state.record([docs[i] for i in rows], [hashes[i] for i in rows], [changed[docs[i]] for i in rows])
        for i in rows:
            del changed[docs[i]]


def _payload_only(collection: Collection, state: JobState, model_version: str, docs: list[str], hashes: list[str],
                  changed: dict, chunk_fields: tuple[str, ...]) -> dict[str, list]:
    """The documents among ``changed`` whose payload alone changed and whose recorded points the collection holds
    as this job wrote them (this model version, the recorded payload, the document's own chunks), mapped to
    those points as stored: their vectors can be kept."""
    asked = [i for i, doc in enumerate(docs) if changed.get(doc)]
    recorded = state.same_text([docs[i] for i in asked], [hashes[i] for i in asked]) if asked else {}
    stored = collection.get([p for doc in recorded for p in changed[doc]])
    found = iter(stored)
    kept = {}
    for doc, digest in recorded.items():
        points = [next(found) for _ in changed[doc]]
        if all(p is not None and p.model_version == model_version
               and payload_hash(hashed_payload(p.payload, chunk_fields)) == digest.split(".", 1)[1]
               and (not chunk_fields or p.payload.get("doc_id") == doc) for p in points):
            kept[doc] = points
    return kept


def _not_as_recorded(collection: Collection, state: JobState, docs: list[str], payloads: list[str], changed: dict,
                     options: BuildOptions, text_key: str) -> dict[str, list[str]]:
    """Unchanged documents whose points the collection no longer holds as this job wrote them (another job, an
    ``index add`` or a delete replaced or removed them), mapped to their recorded points: they are embedded again."""
    wanted = {doc: payload for doc, payload in zip(docs, payloads) if doc not in changed}
    recorded = state.points(list(wanted)) if wanted else {}
    stored = collection.get([p for points in recorded.values() for p in points])
    found = iter(stored)
    chunk_fields = (text_key, "doc_id", "chunk") if options.chunk_tokens else ()
    stale = {}
    for doc, points in recorded.items():
        expected = _without(json.loads(wanted[doc]), chunk_fields)
        got = [next(found) for _ in points]
        if not all(p is not None and _without(p.payload, chunk_fields) == expected
                   and (not chunk_fields or p.payload.get("doc_id") == doc) for p in got):
            stale[doc] = points
    return stale


def _without(payload: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in payload.items() if k not in keys}


class _InFlight:
    """Documents queued for embedding: each is recorded in the job state once all its points are durable."""

    def __init__(self, collection: Collection, state: JobState, report: BuildReport, advance, shards: ShardWriter | None):
        self.collection, self.state, self.report, self.advance, self.shards = collection, state, report, advance, shards
        self.pending: dict[str, list] = {}  # doc -> [points left, hash, new point ids, old point ids, vectors kept]
        self.done: list[tuple[str, str, list[str], list[str] | None, bool]] = []

    def add(self, doc: str, digest: str, points: list[str], old: list[str] | None, kept: bool = False) -> None:
        self.pending[doc] = [len(points), digest, points, old, kept]

    def landed(self, batch: pa.Table) -> None:
        for doc in batch.column("doc").to_pylist():
            entry = self.pending[doc]
            entry[0] -= 1
            if entry[0] == 0:
                del self.pending[doc]
                self.done.append((doc, *entry[1:]))

    def checkpoint(self) -> None:
        """Delete the points a re-embedded document no longer has, then record the finished documents."""
        if not self.done:
            return
        stale = [(doc, p) for doc, _, new, old, _ in self.done if old for p in sorted(set(old) - set(new))]
        if stale:
            self.report.deleted_points += _delete(self.collection, self.state, self.shards, stale)
        self.state.record([d[0] for d in self.done], [d[1] for d in self.done], [d[2] for d in self.done])
        kept = sum(d[4] for d in self.done)
        self.report.docs_embedded += len(self.done) - kept
        self.report.payloads_updated += kept
        self.advance(len(self.done))
        self.done.clear()


def run_build(
    collection: Collection,
    embedder: Embedder,
    spec: SourceSpec,
    check: SourceCheck,
    con: duckdb.DuckDBPyConnection,
    encoder: Encoder,
    *,
    policies: Policies = Policies(),
    options: BuildOptions = BuildOptions(),
    engine: str = "local",
) -> BuildReport:
    """Stream the checked source into ``collection``; see the module docstring. Returns the run's summary."""
    start = time.perf_counter()
    layer, dim = check_options(embedder, options)
    stored = text_dim(collection, embedder)  # the collection's dim, or the old model's own during an aborting rollout
    if dim != stored:
        raise ValueError(f"--dim: the collection holds {stored}-dim vectors of {embedder.manifest.tag!r}, got {dim}")
    report = BuildReport(engine=engine, unreadable_files=list(check.unreadable))
    if check.unreadable:
        report.skipped["unreadable_file"] = len(check.unreadable)
    if check.invalid_rows:
        report.skipped["invalid_row"] = check.invalid_rows
    fingerprint = setup_fingerprint(embedder, options)
    model_version = embedder.manifest.tag
    truncated_before = embedder.truncated_texts
    state = JobState(state_path(collection, options.job))
    backfilled = _Backfilled.of(collection, embedder, layer, state, fingerprint)
    shards = ShardWriter(options.parquet_dir, dim, options.shard_rows) if options.parquet_dir else None
    total = min(check.rows, spec.limit) if spec.limit else check.rows
    try:
        with progress_bar("indexing", total=total, unit="docs", enabled=options.show_progress) as advance:
            inflight = _InFlight(collection, state, report, advance, shards)

            last = [time.monotonic()]

            def on_batch(batch: pa.Table, vectors: np.ndarray) -> None:
                inflight.landed(batch)
                if shards is not None:
                    if shards.write(batch, vectors, model_version):
                        inflight.checkpoint()
                elif time.monotonic() - last[0] >= options.checkpoint_seconds:
                    inflight.checkpoint()
                    last[0] = time.monotonic()

            def rewrite(batch: pa.Table, vectors: np.ndarray) -> None:  # points keeping their stored vectors
                report.points_upserted += upsert_points(collection, batch, vectors, model_version)
                on_batch(batch, vectors)

            windows = _windows(con, spec, check, policies, options, embedder, fingerprint, state, inflight, report,
                               advance, backfilled, rewrite)
            embedded = ingest_windows(  # runs ``rewrite`` too, which counts its own points
                collection, windows, encoder, model_version, on_batch=on_batch, upsert_rows=options.upsert_rows
            )
            report.points_upserted += embedded
            if shards is not None:
                shards.flush()
            inflight.checkpoint()
        if options.delete_missing and check.complete and not spec.limit:
            gone = state.unseen()
            if gone:
                # a crashed run notes documents before writing them: count those the collection held
                stored = {p.id for p in collection.get([p for _, points in gone for p in points]) if p is not None}
                report.deleted_points += _delete(collection, state, shards, [(doc, p) for doc, points in gone for p in points])
                state.forget([doc for doc, _ in gone])
                report.deleted_docs = sum(any(p in stored for p in points) for _, points in gone)
        if shards is not None:
            report.shards = [str(s) for s in shards.shards]
        collection.commit()
    finally:
        state.close()
    # the encoder's own count: a Ray encoder embeds on its actors, never with this process's embedder
    report.truncated_texts = getattr(encoder, "truncated", embedder.truncated_texts - truncated_before)
    report.collection_points = len(collection)
    report.wall_s = round(time.perf_counter() - start, 3)
    report.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return report


def _delete(collection: Collection, state: JobState, shards: ShardWriter | None, points: list[tuple[str, str]]) -> int:
    """Delete (document, point) pairs from the collection and note them in the Parquet shards; the count deleted.
    A point another document of the job holds now is kept: 'a#1' is document 'a#1' unchunked and chunk 1 of 'a'."""
    owners: dict[str, set[str]] = {}
    for doc, point in points:
        for other in {point, point.rsplit(CHUNK_SEP, 1)[0]} - {doc}:
            owners.setdefault(other, set()).add(point)
    held = state.points_anywhere(list(owners)) if owners else {}
    kept = {p for other, candidates in owners.items() for p in candidates & held.get(other, set())}
    points = [(doc, p) for doc, p in points if p not in kept]
    deleted = collection.delete([p for _, p in points], missing="ignore")
    if shards is not None:
        shards.delete([p for _, p in points], [doc for doc, _ in points])
    return deleted


class _Backfilled:
    """A rollout's backfill re-embeds a collection's stored texts with the new model, so a job's first build with
    that model need not: a document whose content is unchanged since the job hashed it under the setup before
    (another model, same chunking), and whose points are all stored by this model -- so not by this job under
    the setup before -- is recorded under the new setup as it is.
    Only at the model's last layer, the one the backfill embeds at; the dim is the collection's (``run_build``
    checks it), the one the backfill writes at."""

    def __init__(self, collection: Collection, state: JobState, previous: str, version: str):
        self.collection, self.state, self.previous, self.version = collection, state, previous, version

    @classmethod
    def of(cls, collection: Collection, embedder: Embedder, layer: int, state: JobState, fingerprint: str):
        previous = state.setup(fingerprint)
        if previous is None or layer != embedder.num_layers:
            return None
        other_model = previous.split("|", 2)[:2] != fingerprint.split("|", 2)[:2]
        same_chunks = previous.rsplit("|", 1)[-1] == fingerprint.rsplit("|", 1)[-1]
        return cls(collection, state, previous, embedder.manifest.tag) if other_model and same_chunks else None

    def keep(self, ids: list[str], texts: list[str], hashed: list[str], canonical: list[str], hashes: list[str],
             changed: dict) -> list[str]:
        """Record the documents among ``changed`` that the backfill took care of; returns their ids. ``hashed`` and
        ``canonical``: their payloads as ``content_hash`` covers them, and as an earlier version's hash did."""
        rows = [i for i, doc in enumerate(ids) if changed.get(doc)]
        if not rows:
            return []
        asked = [ids[i] for i in rows]
        same = self.state.matching(asked, [content_hash(self.previous, texts[i], hashed[i]) for i in rows])
        same |= self.state.matching(asked, [_legacy_hash(self.previous, texts[i], canonical[i]) for i in rows])
        rows = [i for i in rows if ids[i] in same]
        points = self.collection.get([p for i in rows for p in changed[ids[i]]])
        current = {p.id for p in points if p is not None and p.model_version == self.version}
        rows = [i for i in rows if all(p in current for p in changed[ids[i]])]
        self.state.record([ids[i] for i in rows], [hashes[i] for i in rows], [changed[ids[i]] for i in rows])
        return [ids[i] for i in rows]


def _windows(con, spec, check, policies, options, embedder, fingerprint, state, inflight, report, advance, backfilled,
             rewrite):
    """Windows of points to embed, read batch by batch; skipped and unchanged documents advance the bar here, and
    documents whose payload alone changed are written at once through ``rewrite`` with their stored vectors."""
    skipped = report.skipped
    seen_duplicates: set[str] = set()
    queued: list[pa.Table] = []
    queued_docs: list[str] = []
    queued_points: list[list[str]] = []
    queued_rows = 0
    text_key = spec.text_column
    chunk_fields = (text_key, "doc_id", "chunk") if options.chunk_tokens else ()
    for rb in stream(con, check.query, options.read_rows):
        n = rb.num_rows
        report.rows_read += n
        ids = rb.column(ID).to_pylist()
        texts = rb.column(TEXT).to_pylist()
        payload_rows = rb.select(check.payload_columns).to_pylist() if check.payload_columns else [{} for _ in range(n)]
        parse_json_columns(payload_rows, check.json_columns)
        keep_ids, keep_texts, keep_payloads, canonical, hashed, hashes = [], [], [], [], [], []
        for doc, text, payload in zip(ids, texts, payload_rows):
            reason = None
            if doc is None or not doc.strip():
                reason = "null_id"
            elif text is None or not text.strip():
                reason = "empty_text"
            elif doc in check.duplicate_ids:
                if doc in seen_duplicates:
                    reason = "duplicate_id"
                seen_duplicates.add(doc)
            if reason is not None:
                case = "duplicate" if reason == "duplicate_id" else "empty"
                if getattr(policies, case) == "fail":  # the source changed since it was checked
                    raise ValueError(f"--source: row with id {doc!r}: {reason} (pass --on-{case} skip)")
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            payload = {k: jsonable(v) for k, v in payload.items()}
            keep_ids.append(doc)
            keep_texts.append(text)
            keep_payloads.append(json.dumps(payload, allow_nan=False))
            canonical.append(canonical_json(payload))
            hashed.append(hashed_payload(payload, chunk_fields) if chunk_fields else canonical[-1])  # same text unchunked
            hashes.append(content_hash(fingerprint, text, hashed[-1]))
        changed = state.changed(keep_ids, hashes) if keep_ids else {}
        _rehash_legacy(state, fingerprint, keep_ids, keep_texts, keep_payloads, canonical, hashes, changed)
        lost = _not_as_recorded(inflight.collection, state, keep_ids, keep_payloads, changed, options, text_key)
        changed.update(lost)
        report.written_again += len(lost)
        if backfilled is not None and changed:
            kept = backfilled.keep(keep_ids, keep_texts, hashed, canonical, hashes, changed)
            for doc in kept:
                del changed[doc]
            report.kept_from_backfill += len(kept)
        report.unchanged += len(keep_ids) - len(changed)
        advance(n - len(changed))
        if changed:
            _rewrite_payloads(embedder, options, text_key, state, inflight, keep_ids, keep_texts, keep_payloads,
                              hashes, changed, chunk_fields, rewrite)
        if not changed:
            continue
        rows = [i for i, doc in enumerate(keep_ids) if doc in changed]
        window = _points(embedder, options, text_key, [keep_ids[i] for i in rows], [keep_texts[i] for i in rows],
                         [keep_payloads[i] for i in rows])
        for i in rows:
            doc = keep_ids[i]
            points = window.points_of[doc]
            inflight.add(doc, hashes[i], points, changed[doc])
            queued_docs.append(doc)
            queued_points.append(points)
        queued.append(window.table)
        queued_rows += window.table.num_rows
        if queued_rows >= options.window:
            state.begin(queued_docs, queued_points)
            yield pa.concat_tables(queued)
            queued, queued_docs, queued_points, queued_rows = [], [], [], 0
    if queued:
        state.begin(queued_docs, queued_points)
        yield pa.concat_tables(queued)


def _rewrite_payloads(embedder, options, text_key, state, inflight, docs, texts, payloads, hashes, changed,
                      chunk_fields, rewrite) -> None:
    """Write the documents of ``changed`` whose payload alone changed (``_payload_only``) with their stored
    vectors, and take them out of ``changed``: noted in the job state first, recorded at the next checkpoint."""
    model_version = embedder.manifest.tag
    stored = _payload_only(inflight.collection, state, model_version, docs, hashes, changed, chunk_fields)
    rows = [i for i, doc in enumerate(docs) if doc in stored]
    if not rows:
        return
    window = _points(embedder, options, text_key, [docs[i] for i in rows], [texts[i] for i in rows],
                     [payloads[i] for i in rows])
    vectors = {p.id: p.vector for points in stored.values() for p in points}
    ids = window.table.column("id").to_pylist()
    if set(ids) != set(vectors):  # another chunking of the same text: cannot be, but then embed them
        return
    state.begin([docs[i] for i in rows], [window.points_of[docs[i]] for i in rows])
    for i in rows:
        doc = docs[i]
        inflight.add(doc, hashes[i], window.points_of[doc], changed.pop(doc), kept=True)
    rewrite(window.table, np.stack([vectors[p] for p in ids]))


@dataclass
class _Points:
    table: pa.Table
    points_of: dict[str, list[str]]


def _points(embedder: Embedder, options: BuildOptions, text_key: str, docs: list[str], texts: list[str], payloads: list[str]) -> _Points:
    """The points of documents: one per document, or one per chunk (ids ``doc#i``, payload ``doc_id``/``chunk``)."""
    if not options.chunk_tokens:
        columns = [pa.array(docs, pa.string()), pa.array(texts, pa.string()), pa.array(payloads, pa.string()), pa.array(docs, pa.string())]
        return _Points(pa.table(columns, schema=POINTS_SCHEMA), {d: [d] for d in docs})
    ids, chunk_texts_, chunk_payloads, chunk_docs, points_of = [], [], [], [], {}
    for doc, text, payload, chunks in zip(docs, texts, payloads, chunk_texts(embedder.tokenizer, texts, options.chunk_tokens, options.chunk_overlap)):
        base = json.loads(payload)
        points_of[doc] = []
        for i, chunk in enumerate(chunks):
            point = chunk_id(doc, i)
            points_of[doc].append(point)
            ids.append(point)
            chunk_texts_.append(chunk)
            chunk_payloads.append({**base, **({text_key: chunk} if text_key in base else {}), "doc_id": doc, "chunk": i})
            chunk_docs.append(doc)
    return _Points(points_table(ids, chunk_texts_, chunk_payloads, chunk_docs), points_of)
