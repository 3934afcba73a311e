"""Sources and bad input of the batch pipelines (issue 6, points 1 and 8): formats, globs, SQL, streaming, policies."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.pipelines.checks import Policies, check_source
from telescope.pipelines.sources import ID, TEXT, SourceSpec, read_table, stream, texts_from

ROWS = [{"id": f"r{i}", "text": f"text {i}", "lang": "en" if i % 2 else "fr"} for i in range(10)]


def write(tmp: Path, fmt: str, rows=ROWS, name: str = "src") -> Path:
    table = pa.Table.from_pylist(rows)
    if fmt == "parquet":
        pq.write_table(table, path := tmp / f"{name}.parquet")
    elif fmt == "jsonl":
        (path := tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        lines = [sep.join(rows[0])] + [sep.join("" if v is None else str(v) for v in r.values()) for r in rows]
        (path := tmp / f"{name}.{fmt}").write_text("\n".join(lines) + "\n")
    elif fmt == "duckdb":
        con = duckdb.connect(str(path := tmp / f"{name}.duckdb"))
        con.register("rows_in", table)
        con.execute("CREATE TABLE docs AS SELECT * FROM rows_in")
        con.close()
    return path


def read_all(spec: SourceSpec, policies: Policies = Policies(), batch_rows: int = 3) -> tuple[list[dict], object]:
    check, con = check_source(spec, policies)
    batches = list(stream(con, check.query, batch_rows))
    return [r for b in batches for r in b.to_pylist()], check


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv", "tsv", "duckdb"])
def test_every_format_streams_the_same_documents_in_batches(tmp_path, fmt):
    path = write(tmp_path, fmt)
    check, con = check_source(SourceSpec(str(path)), Policies())
    batches = list(stream(con, check.query, 4))
    assert [b.num_rows for b in batches] == [4, 4, 2]  # Arrow batches, never the whole source at once
    rows = [r for b in batches for r in b.to_pylist()]
    assert [(r[ID], r[TEXT], r["lang"]) for r in rows] == [(r["id"], r["text"], r["lang"]) for r in ROWS]
    assert check.payload_columns == ["text", "lang"] and check.rows == 10


def test_glob_sql_and_limit(tmp_path):
    write(tmp_path, "parquet", ROWS[:5], "a")
    write(tmp_path, "parquet", ROWS[5:], "b")
    spec = SourceSpec(str(tmp_path / "*.parquet"), sql="SELECT id, lang || ': ' || text AS body FROM src",
                      text_column="body", limit=7)
    rows, check = read_all(spec)
    assert len(check.files) == 2 and len(rows) == 7
    assert rows[6][TEXT] == "fr: text 6" and check.payload_columns == ["body"]


def test_missing_column_always_fails_naming_it(tmp_path):
    path = write(tmp_path, "parquet")
    with pytest.raises(ValueError, match=r"--text-column: expected a column named 'body'.*\['id', 'text', 'lang'\]"):
        check_source(SourceSpec(str(path), text_column="body"), Policies(empty="skip", duplicate="skip"))
    with pytest.raises(ValueError, match="--metadata-columns: expected a column named 'nope'"):
        check_source(SourceSpec(str(path), metadata_columns=("nope",)), Policies())


def test_unreadable_file_fails_or_is_skipped(tmp_path):
    write(tmp_path, "parquet", ROWS, "good")
    (tmp_path / "torn.parquet").write_bytes(b"PAR1 not really")
    spec = SourceSpec(str(tmp_path / "*.parquet"))
    with pytest.raises(ValueError, match=r"cannot read '.*torn.parquet'.*--on-unreadable skip"):
        check_source(spec, Policies())
    rows, check = read_all(spec, Policies(unreadable="skip"))
    assert len(rows) == 10 and [Path(f).name for f, _ in check.unreadable] == ["torn.parquet"]
    assert not check.complete  # a partial read never deletes documents
    with pytest.raises(FileNotFoundError, match="no file matches"):
        check_source(SourceSpec(str(tmp_path / "*.csv")), Policies())


# NULL and blank texts and ids; blank as Python's str.strip() sees it (the stream's test), which DuckDB's trim() is not
BLANKS = {
    "null and spaces": [("e1", "   "), ("e2", None), (None, "no id")],
    "newline, tab and wide spaces": [("nl", "\n"), ("wide", "\t\u3000"), ("\u00a0", "no id")],
}


@pytest.mark.parametrize("blanks", BLANKS.values(), ids=BLANKS.keys())
def test_null_and_blank_texts_and_ids_skipped_by_default_or_fail(tmp_path, blanks):
    rows = ROWS[:4] + [{"id": doc, "text": text, "lang": "en"} for doc, text in blanks]
    path = write(tmp_path, "jsonl", rows)
    _, check = read_all(SourceSpec(str(path)))
    assert (check.empty_texts, check.null_ids) == (2, 1)
    with pytest.raises(ValueError, match=r"1 rows have a NULL or blank id and 2 a NULL or blank text.*--on-empty skip"):
        check_source(SourceSpec(str(path)), Policies(empty="fail"))


def test_duplicate_ids_fail_by_default_or_keep_the_first(tmp_path):
    path = write(tmp_path, "csv", ROWS + [{"id": "r3", "text": "again", "lang": "en"}])
    with pytest.raises(ValueError, match=r"1 ids occur more than once, e.g. 'r3' x2.*--on-duplicate skip"):
        check_source(SourceSpec(str(path)), Policies())
    _, check = read_all(SourceSpec(str(path)), Policies(duplicate="skip"))
    assert check.duplicate_ids == {"r3"} and check.duplicate_rows == 1


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_invalid_utf8_fails_or_is_skipped_and_counted(tmp_path, fmt):
    if fmt == "csv":
        data = b"id,text\nr1,hello\nr2,bad \xff\xfe bytes\nr3,fine\n"
    else:
        data = b'{"id":"r1","text":"hello","lang":null}\n{"id":"r2","text":"bad \xff bytes"}\n{"id":"r3","text":"fine","lang":"en"}\n'
    (path := tmp_path / f"bad.{fmt}").write_bytes(data)
    with pytest.raises(ValueError, match=r"not valid UTF-8.*--on-invalid skip"):
        check_source(SourceSpec(str(path)), Policies())
    rows, check = read_all(SourceSpec(str(path)), Policies(invalid="skip"))
    assert [r[ID] for r in rows] == ["r1", "r3"] and check.invalid_rows == 1


def test_policy_values_are_checked():
    with pytest.raises(ValueError, match="--on-duplicate: expected one of \\['skip', 'fail'\\], got 'keep'"):
        Policies(duplicate="keep")


def test_refused_source_leaves_no_collection_and_an_existing_one_untouched(tmp_path, tiny_model_path):
    runner = CliRunner()
    bad = write(tmp_path, "jsonl", ROWS + [{"id": "r1", "text": "dup", "lang": "en"}], "dup")
    args = ["index", "build", str(tmp_path / "c"), "--source", str(bad), "--model", str(tiny_model_path), "--no-progress"]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, ValueError) and "--on-duplicate" in str(result.exception)
    assert not (tmp_path / "c").exists()

    good = write(tmp_path, "jsonl", ROWS[:3], "good")
    ok = runner.invoke(app, ["index", "build", str(tmp_path / "c"), "--source", str(good), "--model", str(tiny_model_path),
                             "--no-progress", "--on-empty", "fail"])
    assert ok.exit_code == 0, ok.output
    before = sorted(p.name for p in (tmp_path / "c").iterdir())
    manifest = (tmp_path / "c" / "manifest.json").read_text()
    result = runner.invoke(app, ["index", "build", str(tmp_path / "c"), "--source", str(bad), "--no-progress"])
    assert isinstance(result.exception, ValueError)
    assert (tmp_path / "c" / "manifest.json").read_text() == manifest
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == before


def test_skipped_rows_are_counted_in_the_summary(tmp_path, tiny_model_path):
    rows = ROWS[:5] + [{"id": "r1", "text": "dup", "lang": "en"}, {"id": "e", "text": "", "lang": "en"}]
    src = write(tmp_path, "jsonl", rows)
    report = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["index", "build", str(tmp_path / "c"), "--source", str(src), "--model",
                                      str(tiny_model_path), "--no-progress", "--on-duplicate", "skip", "--threads", "1",
                                      "--report", str(report)])
    assert result.exit_code == 0, result.output
    summary = json.loads(report.read_text())
    assert summary["rows_read"] == 7 and summary["docs_embedded"] == 5
    assert summary["skipped"] == {"duplicate_id": 1, "empty_text": 1}
    assert "skipped: duplicate_id" in result.output and "wall time" in result.output


def test_jsonl_values_of_mixed_types_are_read_without_json_quotes(tmp_path):
    # DuckDB types a JSON field whose values mix strings and numbers as JSON: its strings keep their quotes
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"id": 1, "text": "plain words", "tag": "a"}\n{"id": "x2", "text": 5, "tag": 3}\n')
    rows, _ = read_all(SourceSpec(str(path)))
    assert [(r[ID], r[TEXT], r["text"], r["tag"]) for r in rows] == [("1", "plain words", "plain words", "a"),
                                                                     ("x2", "5", "5", "3")]
    ids, texts, payloads = texts_from(read_table(path))  # telescope index add
    assert (ids, texts, payloads[0]) == (["1", "x2"], ["plain words", "5"], {"text": "plain words", "tag": "a"})


def test_index_add_refuses_a_repeated_id_naming_the_rows(tmp_path):
    path = write(tmp_path, "jsonl", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}])
    with pytest.raises(ValueError, match=r"id: rows 0 and 2: expected unique ids, got 'a' twice"):
        texts_from(read_table(path))


def test_index_add_refuses_a_null_id_naming_the_row(tmp_path):
    path = write(tmp_path, "jsonl", [{"id": "a", "text": "x"}, {"id": None, "text": "y"}])
    with pytest.raises(ValueError, match=r"id: row 1: expected an id, got None"):
        texts_from(read_table(path))


def test_csv_files_of_one_glob_with_different_columns_fail_naming_the_file_and_column(tmp_path):
    write(tmp_path, "csv", ROWS[:3], "a")
    write(tmp_path, "csv", [{"id": "x", "text": "no lang column"}], "b")
    with pytest.raises(ValueError, match=r"--source: DuckDB cannot read .*\*\.csv.*b\.csv.*\"lang\" is missing"):
        check_source(SourceSpec(str(tmp_path / "*.csv")), Policies())


def test_binary_id_and_text_are_decoded_as_utf8_by_build_and_add_and_bad_bytes_fail_naming_them(tmp_path):
    # older Parquet writers (or pa.binary()) store strings as BINARY: DuckDB's cast gives 'caf\xC3\xA9'
    table = pa.table({"id": pa.array([b"a1", b"a2"], pa.binary()), "text": pa.array(["café".encode(), b"plain"], pa.binary()),
                      "blob": pa.array([b"\x00\xff", b"x"], pa.binary())})
    pq.write_table(table, path := tmp_path / "binary.parquet")
    rows, _ = read_all(SourceSpec(str(path)))  # telescope index build
    assert [(r[ID], r[TEXT], r["text"]) for r in rows] == [("a1", "café", "café"), ("a2", "plain", "plain")]
    assert [r["blob"] for r in rows] == [b"\x00\xff", b"x"]  # other payload columns are left alone
    ids, texts, payloads = texts_from(read_table(path))  # telescope index add
    assert (ids, texts, [p["text"] for p in payloads]) == (["a1", "a2"], ["café", "plain"], ["café", "plain"])

    pq.write_table(pa.table({"id": ["a", "b"], "text": pa.array([b"ok", b"bad \xff"], pa.binary())}), bad := tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"--text-column: the binary column 'text' .*not UTF-8.*id 'b'"):
        check_source(SourceSpec(str(bad)), Policies())
    with pytest.raises(ValueError, match=r"text: row 1 \(id 'b'\): expected UTF-8 text"):
        texts_from(read_table(bad))


def test_on_invalid_skip_drops_binary_rows_that_are_not_utf8_and_counts_them(tmp_path):
    table = pa.table({"id": pa.array([b"a", b"b\xfe", b"c", b"d"], pa.binary()),
                      "text": pa.array([b"ok", b"fine", b"bad \xff", None], pa.binary())})
    pq.write_table(table, path := tmp_path / "mixed.parquet")
    rows, check = read_all(SourceSpec(str(path)), Policies(invalid="skip", empty="skip"))
    assert [(r[ID], r[TEXT]) for r in rows] == [("a", "ok"), ("d", None)]  # d: an empty text, the empty policy's
    assert (check.rows, check.invalid_rows, check.empty_texts) == (2, 2, 1)
    with pytest.raises(ValueError, match=r"--id-column: the binary column 'id' .*not UTF-8.*pass --on-invalid skip"):
        check_source(SourceSpec(str(path)), Policies())


@pytest.mark.parametrize("name, data, what", [
    ("empty.jsonl", b"", "got an empty file"), ("empty.csv", b"", "got an empty file"),
    ("array.json", b'[{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]', "not objects"),
], ids=["empty jsonl", "empty csv", "json array"])
def test_empty_files_and_json_arrays_fail_naming_the_file(tmp_path, name, data, what):
    (path := tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match=rf"cannot read '.*{name}' as .*{what}"):
        check_source(SourceSpec(str(path)), Policies())
    with pytest.raises(ValueError, match=rf"source '.*{name}': cannot read as .*{what}"):
        read_table(path)


def test_txt_source_of_index_build_lists_the_accepted_formats(tmp_path):
    (path := tmp_path / "lines.txt").write_text("one\ntwo\n")
    with pytest.raises(ValueError, match=r"--format: expected .*\['parquet', 'jsonl', 'csv', 'tsv', 'duckdb'\].*got \['txt'\].*index add"):
        check_source(SourceSpec(str(path)), Policies())


def test_txt_ids_are_line_numbers_of_the_file_blank_lines_counted(tmp_path):
    """A line's id does not move when a blank line is added above it; only newlines end a line."""
    (path := tmp_path / "lines.txt").write_text("first\n\n  \nfourth has a\u2028line separator\r\nfifth\n", newline="")
    table = read_table(path)
    assert table.column("id").to_pylist() == ["line-0", "line-3", "line-4"]
    assert table.column("text").to_pylist() == ["first", "fourth has a\u2028line separator", "fifth"]


def test_index_add_of_a_txt_file_that_is_not_utf8_names_the_file_and_line(tmp_path):
    (path := tmp_path / "latin1.txt").write_bytes("fine\ncafé\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"source '.*latin1.txt': line 2: expected UTF-8 text, got the bytes b'\\xe9'"):
        read_table(path)
