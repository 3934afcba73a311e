"""Bad input, found before anything is written: a read-only pass over the source that applies the policies.

Each case has a policy, ``skip`` (leave the rows out and count them) or ``fail`` (stop with a message naming the
case, an example and the flag that skips it):

==================  ==================================================  ================
case                what                                                default
==================  ==================================================  ================
``unreadable``      a file DuckDB cannot open or parse at all           fail
``invalid``         rows DuckDB cannot decode (invalid UTF-8, a         fail
                    malformed CSV/JSON line)
``empty``           a NULL or blank id or text                          skip
``duplicate``       an id that occurs more than once (skip keeps the    fail
                    first occurrence)
==================  ==================================================  ================

A missing column always fails. Every check runs as a DuckDB query over the source before the collection is
created or opened for writing, so a refused source never leaves a half-written collection; the pipeline then
applies the same policies row by row while it streams (``skip`` counts land in the job summary).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from telescope.pipelines.sources import (
    ID, TEXT, SourceSpec, check_columns, connect, file_view, ident, json_as_text, read_problem, scan_sql, source_query,
    undecodable, user_query,
)

POLICIES = ("skip", "fail")
# What Python's str.strip() removes (DuckDB's trim() keeps tabs and newlines): blank ids and texts are counted
# here exactly as the pipeline skips them.
WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
FLAGS = {"unreadable": "--on-unreadable", "invalid": "--on-invalid", "empty": "--on-empty", "duplicate": "--on-duplicate"}


@dataclass(frozen=True)
class Policies:
    """What to do with each kind of bad input: ``"skip"`` (count and leave out) or ``"fail"``."""

    unreadable: str = "fail"
    invalid: str = "fail"
    empty: str = "skip"
    duplicate: str = "fail"

    def __post_init__(self) -> None:
        for case, flag in FLAGS.items():
            value = getattr(self, case)
            if value not in POLICIES:
                raise ValueError(f"{flag}: expected one of {list(POLICIES)}, got {value!r}")


@dataclass
class SourceCheck:
    """What the read-only pass found: the readable files, the documents query, and the bad input it will skip."""

    format: str
    files: list[Path]
    query: str  # the documents query over the view ``src`` (columns __id, __text, payload columns)
    payload_columns: list[str]
    json_columns: list[str] = field(default_factory=list)  # payload columns read as JSON text, parsed per row
    rows: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, DuckDB's message)
    invalid_rows: int = 0
    null_ids: int = 0
    empty_texts: int = 0
    duplicate_rows: int = 0  # occurrences after the first
    duplicate_ids: set[str] = field(default_factory=set)
    duplicate_examples: list[tuple[str, int]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether the job sees the whole source (no file skipped): only then may it delete missing documents."""
        return not self.unreadable


def _fail(case: str, message: str) -> None:
    raise ValueError(f"{message} (pass {FLAGS[case]} skip to leave them out and count them)")


def _message(error: Exception) -> str:
    """DuckDB's message on one line, without its closing hints."""
    lines = str(error).split("Potential Fixes")[0].splitlines()
    return " ".join(line.strip() for line in lines if line.strip()) or type(error).__name__


def _is_encoding_error(error: Exception) -> bool:
    text = str(error).lower()
    return "utf-8" in text or "unicode" in text or "encoding" in text


def check_source(spec: SourceSpec, policies: Policies, con: duckdb.DuckDBPyConnection | None = None) -> tuple[SourceCheck, duckdb.DuckDBPyConnection]:
    """Run every check; return what was found and a connection whose view ``src`` covers the readable files.

    Raises ``ValueError`` (bad input under a ``fail`` policy, a missing column) or ``FileNotFoundError``.
    """
    con = con or connect()
    files = spec.files()
    fmt = spec.resolved_format(files)
    tolerant = policies.invalid == "skip"
    good: list[Path] = []
    unreadable: list[tuple[str, str]] = []
    for file in files if fmt != "duckdb" else []:
        message = read_problem(fmt, file)  # an empty file
        if message is None:
            try:
                # count(COLUMNS(*)) decodes every value: a plain count(*) skips decoding and misses bad bytes.
                con.execute(f"SELECT count(COLUMNS(*)) FROM {scan_sql(fmt, [file], tolerant)}").fetchall()
                good.append(file)
                continue
            except duckdb.Error as e:
                message = read_problem(fmt, file, e) or (str(e).splitlines()[0] if str(e) else type(e).__name__)
                if _is_encoding_error(e) and policies.invalid == "fail":
                    _fail("invalid", f"--source: {str(file)!r} has rows that are not valid UTF-8 or not well formed: {message}")
        if policies.unreadable == "fail":
            _fail("unreadable", f"--source: cannot read {str(file)!r} as {fmt}: {message}")
        unreadable.append((str(file), message))
    if fmt == "duckdb":
        good = files
    if not good:
        raise ValueError(f"--source: none of the {len(files)} file(s) matching {spec.source!r} can be read as {fmt}")
    nested: frozenset[str] = frozenset()
    try:
        nested = file_view(con, fmt, good, tolerant, nested_json=not spec.sql)
    except duckdb.Error as e:
        if policies.unreadable == "fail" or fmt == "duckdb":
            raise ValueError(f"--source: cannot read {[str(f) for f in good]} as {fmt}: {e}") from e
    base = user_query(con, spec, fmt)
    try:
        base = json_as_text(con, base, nested - {spec.id_column, spec.text_column})
        relation = con.sql(base)
        columns = list(relation.columns)
        binary = frozenset(c for c, t in zip(columns, relation.types) if str(t) == "BLOB")
        nested = frozenset(c for c, t in zip(columns, relation.types) if c in nested and str(t) == "JSON")
    except duckdb.Error as e:
        raise ValueError(f"--sql: DuckDB cannot run {base!r}: {str(e).splitlines()[0]}") from e
    check_columns(spec, columns)
    undecodable = _check_utf8(con, spec, base, binary, policies)
    query = source_query(spec, base, columns, binary, nested)
    payload = [c for c in con.sql(query).columns if c not in (ID, TEXT)]
    check = SourceCheck(fmt, good, query, payload, unreadable=unreadable, json_columns=[c for c in payload if c in nested])
    try:
        _count(con, check, fmt, tolerant)  # the first pass over every row: where DuckDB meets what binding did not
    except duckdb.Error as e:
        through = " through --sql" if spec.sql else ""
        raise ValueError(f"--source: DuckDB cannot read the documents of {spec.source!r}{through}: {_message(e)}") from e
    check.invalid_rows += undecodable
    _apply(check, policies)
    return check, con


def _check_utf8(con: duckdb.DuckDBPyConnection, spec: SourceSpec, base: str, binary: frozenset[str],
                policies: Policies) -> int:
    """An id or text in a BLOB column (Parquet BINARY) that is not valid UTF-8: refused, naming the column and the id
    (``--on-invalid fail``), or counted (``skip``: ``source_query`` leaves such rows out). Returns the count."""
    if policies.invalid == "skip":
        where = undecodable(spec, binary)
        return int(con.execute(f"SELECT count(*) FROM ({base}) AS q WHERE {where}").fetchone()[0]) if where else 0
    for option, column in (("--id-column", spec.id_column), ("--text-column", spec.text_column)):
        if column not in binary:
            continue
        bad = con.execute(
            f"SELECT CAST({ident(spec.id_column)} AS VARCHAR), CAST({ident(column)} AS VARCHAR) FROM ({base}) AS q "
            f"WHERE {undecodable(spec, frozenset([column]))} LIMIT 1"
        ).fetchone()
        if bad is not None:
            raise ValueError(
                f"{option}: the binary column {column!r} holds bytes that are not UTF-8 text (id {bad[0]!r}): "
                f"expected UTF-8, got {bad[1]!r} (pass --on-invalid skip to leave such rows out)"
            )
    return 0


def _count(con: duckdb.DuckDBPyConnection, check: SourceCheck, fmt: str, tolerant: bool) -> None:
    blank_id, blank_text = (f"({c} IS NULL OR trim({c}, '{WHITESPACE}') = '')" for c in (ID, TEXT))
    rows, null_ids, empty = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {blank_id}), "
        f"count(*) FILTER (WHERE NOT {blank_id} AND {blank_text}) FROM ({check.query})"
    ).fetchone()
    check.rows, check.null_ids, check.empty_texts = int(rows), int(null_ids), int(empty)
    if tolerant and fmt in ("csv", "tsv"):
        check.invalid_rows = _rejects(con)
    elif tolerant and fmt == "jsonl":
        raw = con.execute(f"SELECT count(*) FROM {scan_sql(fmt, check.files, True)}").fetchone()[0]
        kept = con.execute("SELECT count(*) FROM src").fetchone()[0]
        check.invalid_rows = int(raw) - int(kept)
    dups = con.execute(
        f"SELECT {ID}, count(*) AS n FROM ({check.query}) WHERE NOT {blank_id} GROUP BY {ID} HAVING n > 1 ORDER BY {ID}"
    ).fetchall()
    check.duplicate_ids = {d[0] for d in dups}
    check.duplicate_rows = sum(int(d[1]) - 1 for d in dups)
    check.duplicate_examples = [(d[0], int(d[1])) for d in dups[:3]]


def _rejects(con: duckdb.DuckDBPyConnection) -> int:
    """Rows DuckDB rejects in one fresh scan of ``src`` (its reject log gains entries at every scan)."""
    before = con.execute("SELECT coalesce(max(scan_id), -1) FROM reject_errors").fetchone()[0]
    con.execute("SELECT count(COLUMNS(*)) FROM src").fetchall()
    return int(con.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT scan_id, file_id, line FROM reject_errors WHERE scan_id > {int(before)})"
    ).fetchone()[0])


def _apply(check: SourceCheck, policies: Policies) -> None:
    if check.invalid_rows and policies.invalid == "fail":  # only reachable when DuckDB tolerated them
        _fail("invalid", f"--source: {check.invalid_rows} rows are not valid UTF-8 or not well formed")
    if policies.empty == "fail" and (check.null_ids or check.empty_texts):
        _fail("empty", f"--source: {check.null_ids} rows have a NULL or blank id and {check.empty_texts} a NULL or blank text")
    if policies.duplicate == "fail" and check.duplicate_rows:
        examples = ", ".join(f"{i!r} x{n}" for i, n in check.duplicate_examples)
        _fail("duplicate", f"--source: {len(check.duplicate_ids)} ids occur more than once, e.g. {examples}")
