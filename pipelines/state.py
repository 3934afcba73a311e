"""A build job's memory of what it indexed: per document, its content hash and the point ids it wrote.

Kept in a DuckDB file next to the collection's files (``<collection>/jobs/<name>.duckdb``), two tables::

    docs(id VARCHAR PRIMARY KEY, hash VARCHAR, points VARCHAR[])   -- hash: '<text part>.<payload part>'
    pending(id VARCHAR, points VARCHAR[])    -- documents noted before their points are written
    meta(key VARCHAR PRIMARY KEY, value VARCHAR)  -- the setup the hashes are made with, and the one before it

It is what makes a job resumable and incremental with one rule: a document is embedded when its hash differs
from the recorded one (new documents have none), unless only the payload part differs: then its points keep
their vectors and take the new payload. A document is recorded only after every one of its points is
durable in the collection (``Collection.upsert`` returns after its WAL fsync), so after a crash the state can lag
the collection but never lead it: a rerun re-embeds at most the documents of the batches in flight, and an
upsert of a known id replaces it, so every id ends up stored exactly once. Documents recorded here but absent
from a complete read of the source are the deleted ones.

A rerun need not write the same point ids again (the source or the chunking changed meanwhile), so a document is
noted in ``pending`` before its points are written. Opening the state turns what a crashed run left pending
into ``docs`` entries with no hash and every point they may have written: the rerun then re-embeds such a
document (deleting the points it no longer has) or, when the source no longer has it, deletes its points.

The ids seen during a run go to a temporary table, so neither the seen set nor the state is held in Python
memory; DuckDB spills both to disk when they grow.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa


class JobState:
    """Open (or create) the state file of a job; ``close()`` when done."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(self.path))
        self.con.execute("CREATE TABLE IF NOT EXISTS docs (id VARCHAR PRIMARY KEY, hash VARCHAR NOT NULL, points VARCHAR[] NOT NULL)")
        self.con.execute("CREATE TABLE IF NOT EXISTS pending (id VARCHAR, points VARCHAR[] NOT NULL)")
        self.con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
        self.con.execute("CREATE TEMP TABLE IF NOT EXISTS seen (id VARCHAR)")
        self._recover()

    def _recover(self) -> None:
        """Record what a crashed run left pending with no hash (never a document's hash) and all its points."""
        self.con.execute("BEGIN")
        self.con.execute(
            "INSERT OR REPLACE INTO docs SELECT p.id, '', list_distinct(flatten(list(p.points)) || coalesce(any_value(d.points), [])) "
            "FROM pending p LEFT JOIN docs d USING (id) GROUP BY p.id"
        )
        self.con.execute("DELETE FROM pending")
        self.con.execute("COMMIT")

    def setup(self, fingerprint: str) -> str | None:
        """Record the setup this run hashes with; returns the one before it, if it differed (a state written
        before setups were recorded has none). Until every document is hashed again, some hashes are the old one's."""
        current = self._meta("setup")
        if current != fingerprint:
            self.con.execute("BEGIN")
            if current is not None:
                self.con.execute("INSERT OR REPLACE INTO meta VALUES ('previous_setup', ?)", [current])
            self.con.execute("INSERT OR REPLACE INTO meta VALUES ('setup', ?)", [fingerprint])
            self.con.execute("COMMIT")
        previous = self._meta("previous_setup")
        return previous if previous != fingerprint else None

    def _meta(self, key: str) -> str | None:
        rows = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
        return rows[0][0] if rows else None

    def _ask(self, sql: str, ids: list[str], hashes: list[str] | None = None) -> list[tuple]:
        """Rows of ``sql``, which reads the asked documents as table ``asked`` (``id``, and ``hash`` if given)."""
        asked = {"id": pa.array(ids, pa.string())}
        if hashes is not None:
            asked["hash"] = pa.array(hashes, pa.string())
        self.con.register("asked", pa.table(asked))
        try:
            return self.con.sql(sql).fetchall()
        finally:
            self.con.unregister("asked")

    def matching(self, ids: list[str], hashes: list[str]) -> set[str]:
        """The documents among ``ids`` whose recorded hash is the given one."""
        return {r[0] for r in self._ask("SELECT a.id FROM asked a JOIN docs d ON d.id = a.id AND d.hash = a.hash", ids, hashes)}

    def same_text(self, ids: list[str], hashes: list[str]) -> dict[str, str]:
        """The documents among ``ids`` recorded with the same text part as the given hash (``<text>.<payload>``,
        ``telescope.pipelines.build.content_hash``) and another payload part, mapped to their recorded hash."""
        return dict(self._ask(
            "SELECT a.id, d.hash FROM asked a JOIN docs d ON d.id = a.id AND d.hash <> a.hash "
            "AND contains(d.hash, '.') AND split_part(d.hash, '.', 1) = split_part(a.hash, '.', 1)", ids, hashes))

    def __len__(self) -> int:
        return int(self.con.sql("SELECT count(*) FROM docs").fetchone()[0])

    def changed(self, ids: list[str], hashes: list[str]) -> dict[str, list[str] | None]:
        """The documents among ``ids`` whose hash differs from the recorded one, mapped to their old point ids
        (None for a new document). Also marks every one of ``ids`` as seen in this run."""
        batch = pa.table({"id": pa.array(ids, pa.string()), "hash": pa.array(hashes, pa.string())})
        self.con.register("batch_docs", batch)
        try:
            self.con.execute("INSERT INTO seen SELECT id FROM batch_docs")
            rows = self.con.sql(
                "SELECT b.id, d.points FROM batch_docs b LEFT JOIN docs d ON d.id = b.id WHERE d.hash IS DISTINCT FROM b.hash"
            ).fetchall()
        finally:
            self.con.unregister("batch_docs")
        return {doc_id: points for doc_id, points in rows}

    def points(self, ids: list[str]) -> dict[str, list[str]]:
        """The recorded point ids of the documents among ``ids`` that the state holds."""
        rows = self._ask("SELECT d.id, d.points FROM asked a JOIN docs d USING (id)", ids)
        return {doc: list(points) for doc, points in rows}

    def points_anywhere(self, ids: list[str]) -> dict[str, set[str]]:
        """The point ids recorded or noted as being written for the documents among ``ids``."""
        rows = self._ask(
            "SELECT id, points FROM docs SEMI JOIN asked USING (id) UNION ALL SELECT id, points FROM pending SEMI JOIN asked USING (id)",
            ids)
        held: dict[str, set[str]] = {}
        for doc, points in rows:
            held.setdefault(doc, set()).update(points)
        return held

    def begin(self, ids: list[str], points: list[list[str]]) -> None:
        """Note documents as being written (call before any of their points is upserted)."""
        if not ids:
            return
        self.con.register("begun_docs", pa.table({"id": pa.array(ids, pa.string()), "points": pa.array(points, pa.list_(pa.string()))}))
        try:
            self.con.execute("INSERT INTO pending SELECT id, points FROM begun_docs")
        finally:
            self.con.unregister("begun_docs")

    def record(self, ids: list[str], hashes: list[str], points: list[list[str]]) -> None:
        """Remember documents as indexed (call only once their points are durable in the collection)."""
        if not ids:
            return
        batch = pa.table({
            "id": pa.array(ids, pa.string()),
            "hash": pa.array(hashes, pa.string()),
            "points": pa.array(points, pa.list_(pa.string())),
        })
        self.con.register("done_docs", batch)
        try:
            self.con.execute("BEGIN")
            try:
                self.con.execute("INSERT OR REPLACE INTO docs SELECT id, hash, points FROM done_docs")
                self.con.execute("DELETE FROM pending WHERE id IN (SELECT id FROM done_docs)")
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            self.con.execute("COMMIT")
        finally:
            self.con.unregister("done_docs")

    def unseen(self) -> list[tuple[str, list[str]]]:
        """Recorded documents not seen in this run, with their point ids: deleted from the source."""
        return [(r[0], list(r[1])) for r in self.con.sql("SELECT id, points FROM docs ANTI JOIN seen USING (id) ORDER BY id").fetchall()]

    def forget(self, ids: list[str]) -> None:
        if not ids:
            return
        self.con.register("gone", pa.table({"id": pa.array(ids, pa.string())}))
        try:
            self.con.execute("DELETE FROM docs WHERE id IN (SELECT id FROM gone)")
        finally:
            self.con.unregister("gone")

    def close(self) -> None:
        self.con.close()
