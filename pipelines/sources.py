"""Reading a small source file into Arrow through DuckDB: JSON lines, CSV/TSV with a header, plain text.

Plain text (``.txt``) is one document per line, ids ``line-<n>``. Large sources are streamed by the batch
pipelines; this reads a whole file and suits ``telescope index add``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "txt",
           ".parquet": "parquet", ".gz": None}


def detect_format(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise ValueError(f"format: expected a file ending in .jsonl, .csv, .tsv, .txt or .parquet, got {path.name!r}")
    return fmt


def read_table(path: str | Path, fmt: str | None = None) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source: no such file {str(path)!r}")
    fmt = fmt or detect_format(path)
    con = duckdb.connect()
    p = str(path).replace("'", "''")
    if fmt == "txt":
        text = pa.array([line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()], pa.string())
        return pa.table({"id": pa.array([f"line-{i}" for i in range(len(text))]), "text": text})
    queries = {
        "jsonl": f"SELECT * FROM read_json_auto('{p}', format='newline_delimited')",
        "csv": f"SELECT * FROM read_csv('{p}', header=true)",
        "tsv": f"SELECT * FROM read_csv('{p}', header=true, delim='\t', quote='')",
        "parquet": f"SELECT * FROM read_parquet('{p}')",
    }
    if fmt not in queries:
        raise ValueError(f"format: expected one of {sorted(queries) + ['txt']}, got {fmt!r}")
    try:
        return con.sql(queries[fmt]).to_arrow_table()
    except duckdb.Error as e:
        raise ValueError(f"source {str(path)!r}: cannot read as {fmt}: {e}") from e


def texts_from(table: pa.Table, id_column: str = "id", text_column: str = "text") -> tuple[list[str], list[str], list[dict]]:
    """ids, texts and payloads (the text plus every other column) of a source table."""
    for column in (id_column, text_column):
        if column not in table.column_names:
            raise ValueError(f"{column}: expected a column named {column!r}, got columns {table.column_names}")
    ids = [str(v) for v in table.column(id_column).to_pylist()]
    texts = table.column(text_column).to_pylist()
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{text_column}: row {i} (id {ids[i]!r}): expected non-empty text, got {text!r}")
    others = [c for c in table.column_names if c != id_column]
    columns = {c: table.column(c).to_pylist() for c in others}
    payloads = [{c: _jsonable(columns[c][i]) for c in others} for i in range(len(ids))]
    return ids, texts, payloads


def _jsonable(value):
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return str(value)
