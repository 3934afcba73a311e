"""Sources as DuckDB queries: files (Parquet, JSON lines, CSV/TSV, one glob or path) or a DuckDB database, an
optional SQL over them, read as a stream of Arrow record batches.

Two readers share the format table below:

- ``SourceSpec`` + ``connect``/``source_query``/``stream``: the batch pipelines. DuckDB scans the files and
  hands Arrow batches over (``to_arrow_reader``), so no source is ever held in memory whole; an SQL given by
  the user runs over a view named ``src``.
- ``read_table`` + ``texts_from``: a whole small file at once, for ``telescope index add`` and the demo.

DuckDB does the parsing, type inference, globbing and decompression; this module only builds its queries.
"""

from __future__ import annotations

import glob as globlib
import json as json_module
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from telescope.index.checks import first_repeat

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "txt",
           ".parquet": "parquet", ".duckdb": "duckdb", ".db": "duckdb", ".gz": None}
STREAM_FORMATS = ("parquet", "jsonl", "csv", "tsv", "duckdb")
SHAPES = {"jsonl": "one JSON object per line", "csv": "a header row, then one row per document",
          "tsv": "a header row, then one row per document"}  # what a text source holds; DuckDB reads anything else
# (an empty file, a JSON array) as one column, 'json' or 'column0', and the id column would then be missing
ID, TEXT = "__id", "__text"  # the id and text columns of a source query, whatever the source calls them


def detect_format(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise ValueError(
            f"format: expected a file ending in .jsonl, .csv, .tsv, .txt, .parquet or .duckdb, got {path.name!r}"
        )
    return fmt


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A DuckDB identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def scan_sql(fmt: str, files: list[Path], tolerant: bool = False, columns: dict[str, str] | None = None) -> str:
    """The DuckDB table function reading ``files`` as ``fmt``; ``columns`` gives JSON lines' column types.

    ``tolerant`` skips the rows DuckDB cannot decode (invalid UTF-8, malformed lines) instead of failing:
    CSV/TSV keep them in DuckDB's ``reject_errors`` table, JSON lines turn them into all-NULL rows (dropped by
    ``file_view``).
    """
    paths = "[" + ", ".join(_quote(str(f)) for f in files) + "]"
    lenient = ", ignore_errors=true" if tolerant else ""
    if fmt == "parquet":
        return f"read_parquet({paths}, union_by_name=true)"
    if fmt == "jsonl":  # records: a line that is not an object (a JSON array, a bare value) is an error
        typed = ", columns={" + ", ".join(f"{_quote(c)}: {_quote(t)}" for c, t in columns.items()) + "}" if columns else ""
        return f"read_json({paths}, format='newline_delimited', records='true', union_by_name=true{lenient}{typed})"
    if fmt in ("csv", "tsv"):
        delim = ", delim='\t', quote=''" if fmt == "tsv" else ""
        # DuckDB refuses store_rejects together with union_by_name: CSV files of one source share a header.
        rejects = ", store_rejects=true" if tolerant else ""
        return f"read_csv({paths}, header=true{delim}{lenient}{rejects})"
    raise ValueError(f"format: expected one of {list(STREAM_FORMATS)}, got {fmt!r}")


# -- the batch pipelines' reader ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceSpec:
    """What to read: a path or glob, its format, an optional SQL over the view ``src``, and which columns are what.

    ``metadata_columns`` None keeps every column other than the id (the text included) in each point's payload;
    a tuple keeps the text plus exactly those. ``limit`` reads only the first rows (benchmarks, trials): a limited
    job never deletes documents it did not see.
    """

    source: str
    format: str | None = None
    sql: str | None = None
    id_column: str = "id"
    text_column: str = "text"
    metadata_columns: tuple[str, ...] | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in STREAM_FORMATS:
            raise ValueError(f"--format: expected one of {list(STREAM_FORMATS)}, got {self.format!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
            raise ValueError(f"--limit: expected an integer >= 1, got {self.limit!r}")
        for name, value in (("--id-column", self.id_column), ("--text-column", self.text_column)):
            if not value:
                raise ValueError(f"{name}: expected a column name, got {value!r}")

    def files(self) -> list[Path]:
        """The files the path or glob names, sorted; an error naming the pattern when there are none."""
        if any(ch in self.source for ch in "*?["):
            files = sorted(Path(p) for p in globlib.glob(self.source, recursive=True) if Path(p).is_file())
        else:
            files = [Path(self.source)] if Path(self.source).is_file() else []
        if not files:
            raise FileNotFoundError(f"--source: no file matches {self.source!r}")
        return files

    def resolved_format(self, files: list[Path]) -> str:
        if self.format is not None:
            return self.format
        formats = {detect_format(f) for f in files}
        if len(formats) != 1 or "txt" in formats:
            raise ValueError(
                f"--format: expected files of one format among {list(STREAM_FORMATS)} (or --format with one of them), "
                f"got {sorted(formats)}" + ("; plain text (.txt) is read by `telescope index add`" if "txt" in formats else "")
            )
        return formats.pop()


def read_problem(fmt: str, path: Path, error: Exception | None = None) -> str | None:
    """Why ``path`` holds no table of ``fmt``, in words, or None: an empty file, JSON that is not one object per line
    (``error``: DuckDB's, when it refused the file)."""
    if fmt in SHAPES and path.stat().st_size == 0:
        return f"expected {SHAPES[fmt]}, got an empty file"
    if fmt == "jsonl" and error is not None and "expected records" in str(error):
        return f"expected JSON lines ({SHAPES[fmt]}), got JSON values that are not objects (a JSON array?)"
    return None


def connect() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for reading sources: insertion order kept (first occurrence means first in the file)."""
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    return con


def file_view(con: duckdb.DuckDBPyConnection, fmt: str, files: list[Path], tolerant: bool,
              nested_json: bool = False) -> frozenset[str]:
    """Define the view ``src`` over the files (a DuckDB database: attach it read-only and make it current).
    ``nested_json``: JSON lines' nested values as JSON (``nested_as_json``), whose columns it returns; else as
    DuckDB infers them (STRUCTs, which an ``--sql`` may address as ``meta.lang``)."""
    nested: frozenset[str] = frozenset()
    if fmt == "duckdb":
        if len(files) != 1:
            raise ValueError(f"--source: expected one DuckDB database file, got {len(files)} ({[str(f) for f in files[:3]]})")
        con.execute(f"ATTACH {_quote(str(files[0]))} AS source_db (READ_ONLY)")
        con.execute("USE source_db")
        return frozenset()
    scan = scan_sql(fmt, files, tolerant)
    if fmt == "jsonl" and nested_json:
        types, nested = nested_as_json(con, scan)
        scan = scan_sql(fmt, files, tolerant, types)
    where = ""
    if tolerant and fmt == "jsonl":  # DuckDB turns a line it cannot decode into a row of NULLs in every column
        all_null = " AND ".join(f"{ident(c)} IS NULL" for c in con.sql(f"SELECT * FROM {scan}").columns)
        where = f" WHERE NOT ({all_null})"
    con.execute(f"CREATE OR REPLACE TEMP VIEW src AS SELECT * FROM {scan}{where}")
    return nested


def nested_as_json(con: duckdb.DuckDBPyConnection, scan: str) -> tuple[dict[str, str], frozenset[str]]:
    """The column types DuckDB infers for a JSON lines scan with the nested ones (objects, lists) as JSON, and
    those columns: each row then holds the value its line holds. An inferred STRUCT is the union of every line's
    keys: it adds the other lines' keys to each object as nulls, so a new line changed every other row."""
    relation = con.sql(f"SELECT * FROM {scan}")
    types = {c: str(t) for c, t in zip(relation.columns, relation.types)}
    # not a column DuckDB types JSON itself (values of mixed types): json_as_text reads that one as text
    nested = frozenset(c for c, t in types.items() if t.startswith(("STRUCT", "MAP", "UNION")) or t.endswith("]"))
    return {c: "JSON" if c in nested else t for c, t in types.items()}, nested


def user_query(con: duckdb.DuckDBPyConnection, spec: SourceSpec, fmt: str) -> str:
    """The SQL whose rows are the documents: ``--sql``, or every row of ``src`` (or of a database's one table)."""
    if spec.sql:
        return spec.sql
    if fmt != "duckdb":
        return "SELECT * FROM src"
    tables = [r[0] for r in con.sql(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = 'source_db' ORDER BY table_name").fetchall()]
    if len(tables) != 1:
        raise ValueError(f"--sql: the database holds {len(tables)} tables {tables}; pass --sql to say which rows to index")
    return f"SELECT * FROM {ident(tables[0])}"


def metadata_of(spec: SourceSpec, columns: list[str]) -> list[str]:
    """The payload columns: the text plus ``metadata_columns`` (or every column but the id)."""
    if spec.metadata_columns is None:
        return [c for c in columns if c != spec.id_column]
    return [spec.text_column] + [c for c in spec.metadata_columns if c != spec.text_column]


def check_columns(spec: SourceSpec, columns: list[str]) -> None:
    wanted = [("--id-column", spec.id_column), ("--text-column", spec.text_column)]
    wanted += [("--metadata-columns", c) for c in spec.metadata_columns or ()]
    for option, column in wanted:
        if column not in columns:
            raise ValueError(f"{option}: expected a column named {column!r} in the source, got columns {columns}")


def json_as_text(con: duckdb.DuckDBPyConnection, query: str, keep: frozenset[str] = frozenset()) -> str:
    """``query`` with each JSON column but those of ``keep`` read as its values' text (a JSON string without its
    quotes).

    DuckDB types a JSON field whose values mix types (ids that are numbers on some lines and strings on others)
    as JSON, and casting that to VARCHAR keeps a string's quotes: the id ``"x2"`` would be stored as ``'"x2"'``.
    """
    relation = con.sql(query)
    types = [str(t) for t in relation.types]
    convert = [t == "JSON" and c not in keep for c, t in zip(relation.columns, types)]
    if not any(convert):
        return query
    select = ", ".join(f"({ident(c)} ->> '$') AS {ident(c)}" if x else ident(c) for c, x in zip(relation.columns, convert))
    return f"SELECT {select} FROM ({query}) AS j"


def as_text(column: str, binary: bool) -> str:
    """A column as VARCHAR: BLOB (Parquet BINARY from older writers) decoded as UTF-8, not cast to its escaped bytes."""
    return f"try(decode({ident(column)}))" if binary else f"CAST({ident(column)} AS VARCHAR)"  # bad rows: filtered


def undecodable(spec: SourceSpec, binary: frozenset[str]) -> str:
    """SQL condition of the rows whose id or text is a BLOB that is not UTF-8 ('' when neither is a BLOB)."""
    columns = sorted({spec.id_column, spec.text_column} & binary)
    return " OR ".join(f"({ident(c)} IS NOT NULL AND try(decode({ident(c)})) IS NULL)" for c in columns)


def source_query(spec: SourceSpec, base: str, columns: list[str], binary: frozenset[str] = frozenset(),
                 json: frozenset[str] = frozenset()) -> str:
    """The documents query: id and text as VARCHAR under fixed names, then the payload columns.

    ``binary``: the BLOB columns; the id and text among them are decoded as UTF-8 (in the payload too), the others
    kept; a row whose id or text does not decode is left out (``check_source`` has refused or counted it).
    ``json``: payload columns holding JSON, selected as JSON text (``parse_json_columns`` reads them back).
    """
    texts = {spec.id_column, spec.text_column} & binary
    payload = ", ".join(_payload_column(c, c in texts, c in json) for c in metadata_of(spec, columns))
    where = undecodable(spec, binary)
    limit = f" LIMIT {int(spec.limit)}" if spec.limit else ""
    return (
        f"SELECT {as_text(spec.id_column, spec.id_column in binary)} AS {ID}, "
        f"{as_text(spec.text_column, spec.text_column in binary)} AS {TEXT}"
        f"{', ' + payload if payload else ''} FROM ({base}) AS q{f' WHERE NOT ({where})' if where else ''}{limit}"
    )


def _payload_column(column: str, decode: bool, json: bool) -> str:
    if decode:
        return f"{as_text(column, True)} AS {ident(column)}"
    return f"CAST(to_json({ident(column)}) AS VARCHAR) AS {ident(column)}" if json else ident(column)


def parse_json_columns(rows: list[dict], columns: list[str]) -> None:
    """Read back, in place, the JSON text ``source_query`` selected for the ``json`` columns."""
    for row in rows:
        for column in columns:
            if row[column] is not None:
                row[column] = json_module.loads(row[column])


def stream(con: duckdb.DuckDBPyConnection, query: str, batch_rows: int = 8192) -> pa.RecordBatchReader:
    """The query's rows as Arrow record batches, produced as they are read."""
    return con.sql(query).to_arrow_reader(batch_rows)


# -- whole small files (telescope index add, the demo) -----------------------------------------------------------
def read_table(path: str | Path, fmt: str | None = None) -> pa.Table:
    """A whole small file as one Arrow table. Plain text (``.txt``) is one document per non-blank line, ids
    ``line-<n>``: n is the line's index in the file (from 0, blank lines counted; lines end at ``\n``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source: no such file {str(path)!r}")
    fmt = fmt or detect_format(path)
    if fmt == "txt":
        lines = [(i, line.removesuffix("\r")) for i, line in enumerate(_utf8_text(path).split("\n"))]
        kept = [(i, line) for i, line in lines if line.strip()]
        return pa.table({"id": pa.array([f"line-{i}" for i, _ in kept], pa.string()),
                         "text": pa.array([line for _, line in kept], pa.string())})
    if fmt not in ("jsonl", "csv", "tsv", "parquet"):
        raise ValueError(f"format: expected one of ['csv', 'jsonl', 'parquet', 'tsv', 'txt'], got {fmt!r}")
    if problem := read_problem(fmt, path):
        raise ValueError(f"source {str(path)!r}: cannot read as {fmt}: {problem}")
    try:
        con = connect()
        return con.sql(json_as_text(con, f"SELECT * FROM {scan_sql(fmt, [path])}")).to_arrow_table()
    except duckdb.Error as e:
        raise ValueError(f"source {str(path)!r}: cannot read as {fmt}: {read_problem(fmt, path, e) or e}") from e


def _utf8_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"source {str(path)!r}: line {line}: expected UTF-8 text, got the bytes {data[e.start:e.end]!r} at byte {e.start}"
        ) from None


def _text_values(table: pa.Table, column: str, ids: list[str] | None = None) -> list:
    """A column's values; a binary column (Parquet BINARY) decoded as UTF-8, an error naming the row when it is not."""
    values = table.column(column).to_pylist()
    kind = table.schema.field(column).type
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)):
        return values
    decoded = []
    for i, value in enumerate(values):
        try:
            decoded.append(None if value is None else value.decode("utf-8"))
        except UnicodeDecodeError:
            where = f"row {i}" + (f" (id {ids[i]!r})" if ids is not None else "")
            raise ValueError(f"{column}: {where}: expected UTF-8 text in the binary column, got {value!r}") from None
    return decoded


def _check_unique(ids: list[str], id_column: str) -> None:
    """Each id once: a repeated one would silently replace the earlier row (``index build`` refuses it too)."""
    if (repeat := first_repeat(ids)) is not None:
        a, b = repeat
        raise ValueError(f"{id_column}: rows {a} and {b}: expected unique ids, got {ids[b]!r} twice")


def texts_from(table: pa.Table, id_column: str = "id", text_column: str = "text") -> tuple[list[str], list[str], list[dict]]:
    """ids, texts and payloads (the text plus every other column) of a source table."""
    for column in (id_column, text_column):
        if column not in table.column_names:
            raise ValueError(f"{column}: expected a column named {column!r}, got columns {table.column_names}")
    ids = _text_values(table, id_column)
    for i, doc in enumerate(ids):
        if doc is None:
            raise ValueError(f"{id_column}: row {i}: expected an id, got None")
    ids = [str(v) for v in ids]
    _check_unique(ids, id_column)
    texts = _text_values(table, text_column, ids)
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{text_column}: row {i} (id {ids[i]!r}): expected non-empty text, got {text!r}")
    others = [c for c in table.column_names if c != id_column]
    columns = {c: texts if c == text_column else table.column(c).to_pylist() for c in others}
    payloads = [{c: jsonable(columns[c][i]) for c in others} for i in range(len(ids))]
    return ids, texts, payloads


def jsonable(value):
    """A payload value JSON can hold: lists and dicts recursively, anything else DuckDB returns as its text."""
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)
