"""telescope index build: the local engine end to end on the tiny model (issue 6, points 1-5)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.index import Collection

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(collection: Path, source: Path, model: Path, *extra: str, report: Path | None = None) -> dict:
    report = report or collection.parent / "report.json"
    args = ["index", "build", str(collection), "--source", str(source), "--model", str(model), "--no-progress",
            "--report", str(report), *extra]
    result = runner.invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return json.loads(report.read_text())


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def docs(n: int, prefix: str = "doc") -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": f"text number {i} about {'cats' if i % 2 else 'dogs'} " * (1 + i % 4),
             "lang": "en" if i % 3 else "fr"} for i in range(n)]


def stored(collection: Path) -> dict[str, tuple[np.ndarray, dict]]:
    c = Collection.open(collection, read_only=True)
    ids = [p.id for p in c.get(list(_all_ids(collection))) if p is not None]
    return {p.id: (p.vector, p.payload) for p in c.get(ids)}


def _all_ids(collection: Path) -> set[str]:
    import duckdb

    con = duckdb.connect(str(collection / "jobs" / "build.duckdb"), read_only=True)
    return {p for (points,) in con.execute("SELECT points FROM docs").fetchall() for p in points}


def test_build_writes_ids_vectors_metadata_and_shards(tmp_path, tiny_model_path, tiny_embedder):
    source = pq.write_table(pa.Table.from_pylist(docs(150)), tmp_path / "docs.parquet") or tmp_path / "docs.parquet"
    shards = tmp_path / "shards"
    report = build(tmp_path / "c", source, tiny_model_path, "--layer", "2", "--dim", "32", "--batch-size", "16",
                   "--sort-window", "50", "--parquet-out", str(shards), "--shard-rows", "64")
    assert report["rows_read"] == 150 and report["docs_embedded"] == 150 and report["points_upserted"] == 150
    assert report["skipped"] == {} and report["collection_points"] == 150
    c = Collection.open(tmp_path / "c", read_only=True)
    assert c.dim == 32 and len(c) == 150
    point = c.get(["doc7"])[0]
    assert point.payload == {"text": docs(150)[7]["text"], "lang": "en"}
    expected = tiny_embedder.encode([docs(150)[7]["text"]], layer=2, dim=32)[0]
    np.testing.assert_allclose(point.vector, expected, atol=1e-5)
    table = pq.read_table(shards)  # every embedded point once, across closed shards
    assert sorted(table.column("id").to_pylist()) == sorted(d["id"] for d in docs(150))
    assert len(list(shards.glob("*.parquet"))) == 3 and not list(shards.glob("*.tmp"))
    vec = np.asarray(table.filter(pa.compute.equal(table["id"], "doc7")).column("vector").to_pylist()[0])
    np.testing.assert_allclose(vec, point.vector, atol=1e-6)


def test_a_collection_built_at_a_layer_embeds_every_text_there(tmp_path, tiny_model_path, tiny_embedder, capsys):
    """Later builds, library ingests and text searches embed at the recorded layer; another layer is refused."""
    from telescope.pipelines import ingest

    source = write_jsonl(tmp_path / "docs.jsonl", docs(12))
    assert build(tmp_path / "c", source, tiny_model_path, "--layer", "2")["docs_embedded"] == 12
    assert build(tmp_path / "c", source, tiny_model_path)["docs_embedded"] == 0  # no --layer: the recorded one
    with pytest.raises(ValueError, match=r"--layer: the collection holds layer-2 vectors of 'tiny-bert:1', got 4"):
        build(tmp_path / "c", source, tiny_model_path, "--layer", "4")
    with Collection.open(tmp_path / "c") as c:
        assert c.properties["layers"] == {"tiny-bert:1": 2}
        ingest(c, tiny_embedder, ["late"], ["a late text"], show_progress=False)
        np.testing.assert_allclose(c.get(["late"])[0].vector, tiny_embedder.encode(["a late text"], layer=2)[0], atol=1e-5)
    result = runner.invoke(app, ["search", str(tmp_path / "c"), docs(12)[5]["text"], "--k", "1"])
    assert result.exit_code == 0, result.output
    assert "doc5" in result.output and "1.000" in result.output  # the query embedded as the document was


def test_sql_and_metadata_columns_over_a_jsonl_glob(tmp_path, tiny_model_path):
    rows = [{"key": f"k{i}", "title": f"title {i}", "body": f"body {i}", "lang": "en", "extra": i} for i in range(20)]
    write_jsonl(tmp_path / "part-1.jsonl", rows[:10])
    write_jsonl(tmp_path / "part-2.jsonl", rows[10:])
    build(tmp_path / "c", tmp_path / "part-*.jsonl", tiny_model_path, "--format", "jsonl",
          "--sql", "SELECT key, title || ' ' || body AS text, lang, extra FROM src",
          "--id-column", "key", "--metadata-columns", "lang")
    c = Collection.open(tmp_path / "c", read_only=True)
    assert len(c) == 20
    assert c.get(["k13"])[0].payload == {"text": "title 13 body 13", "lang": "en"}


def test_incremental_rerun_embeds_only_changed_and_new_and_removes_deleted(tmp_path, tiny_model_path):
    rows = docs(40)
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    first = build(tmp_path / "c", source, tiny_model_path)
    assert first["docs_embedded"] == 40
    before = stored(tmp_path / "c")

    again = build(tmp_path / "c", source, tiny_model_path)  # nothing changed: nothing embedded
    assert again["docs_embedded"] == 0 and again["unchanged"] == 40 and again["deleted_docs"] == 0

    rows[3]["text"] = "a completely new text"  # changed text
    rows[5]["lang"] = "de"  # changed metadata
    del rows[10:13]  # deleted
    rows.append({"id": "new1", "text": "a new document", "lang": "en"})  # new
    write_jsonl(source, rows)
    third = build(tmp_path / "c", source, tiny_model_path)
    assert third["docs_embedded"] == 2 and third["unchanged"] == 35
    assert third["payloads_updated"] == 1 and third["points_upserted"] == 3  # doc5 keeps its vector
    assert third["deleted_docs"] == 3 and third["deleted_points"] == 3
    after = stored(tmp_path / "c")
    assert set(after) == {r["id"] for r in rows}
    assert after["doc3"][1]["text"] == "a completely new text" and after["doc5"][1]["lang"] == "de"
    assert not np.allclose(after["doc3"][0], before["doc3"][0])
    np.testing.assert_array_equal(after["doc0"][0], before["doc0"][0])
    np.testing.assert_array_equal(after["doc5"][0], before["doc5"][0])
    again = build(tmp_path / "c", source, tiny_model_path)
    assert (again["docs_embedded"], again["payloads_updated"], again["unchanged"]) == (0, 0, 38)


def test_chunks_map_to_documents_and_search_returns_documents(tmp_path, tiny_model_path, tiny_embedder):
    from telescope.pipelines.documents import search_documents

    long_text = " ".join(f"word{i}" for i in range(60))
    rows = [{"id": "long", "text": long_text}, {"id": "short", "text": "just a short one"}]
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    report = build(tmp_path / "c", source, tiny_model_path, "--chunk-tokens", "40", "--chunk-overlap", "10")
    assert report["docs_embedded"] == 2 and report["points_upserted"] > 2
    c = Collection.open(tmp_path / "c", read_only=True)
    chunks = [p for p in c.get([f"long#{i}" for i in range(20)]) if p is not None]
    assert len(chunks) >= 3 and all(p.payload["doc_id"] == "long" for p in chunks)
    assert [p.payload["chunk"] for p in chunks] == list(range(len(chunks)))
    tokens = [tiny_embedder.tokenizer(p.payload["text"], add_special_tokens=False)["input_ids"] for p in chunks]
    assert all(len(t) <= 40 for t in tokens)
    assert tokens[0][-10:] == tokens[1][:10]  # consecutive chunks share the overlap
    assert c.get(["short#0"])[0].payload["text"] == "just a short one"

    query = tiny_embedder.encode([chunks[1].payload["text"]])
    (hits,) = search_documents(c, query, k=2)
    assert [h.doc_id for h in hits] == ["long", "short"]
    assert hits[0].best_chunk.id == "long#1" and hits[0].score == pytest.approx(1.0, abs=1e-4)

    rows[0]["text"] = "now a short text"  # one chunk: the extra ones are deleted
    write_jsonl(source, rows)
    report = build(tmp_path / "c", source, tiny_model_path, "--chunk-tokens", "40", "--chunk-overlap", "10")
    c = Collection.open(tmp_path / "c", read_only=True)
    assert report["docs_embedded"] == 1 and report["deleted_points"] >= 2
    assert sorted(p.id for p in c.get([f"long#{i}" for i in range(20)]) if p) == ["long#0"]


def _run_in_child(args: list[str]) -> None:
    import torch

    torch.set_num_threads(1)  # no OpenMP team in a forked child
    result = CliRunner().invoke(app, args)
    os._exit(0 if result.exit_code == 0 else 1)


def test_sigkill_part_way_then_rerun_continues_and_ends_with_every_id_once(tmp_path, tiny_model_path):
    import multiprocessing

    n = 1_000
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(n)], "text": [f"short text {i}" for i in range(n)]}),
                   tmp_path / "docs.parquet")
    collection = tmp_path / "c"
    args = ["index", "build", str(collection), "--source", str(tmp_path / "docs.parquet"), "--model", str(tiny_model_path),
            "--batch-size", "10", "--upsert-rows", "20", "--checkpoint-seconds", "0", "--no-progress",
            "--report", str(tmp_path / "report.json")]
    # A forked child (torch and the CLI already imported) is the job to kill: SIGKILL gives it no chance to clean up.
    child = multiprocessing.get_context("fork").Process(target=_run_in_child, args=(args,))
    child.start()
    wal = collection / "wal-000000.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.is_alive():
        if wal.exists() and wal.stat().st_size > 10_000:  # some upserts acknowledged
            break
        time.sleep(0.002)
    assert child.is_alive(), "the job ended before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL
    killed = Collection.open(collection, read_only=True)
    assert 0 < len(killed) < n
    del killed

    report = build(collection, tmp_path / "docs.parquet", tiny_model_path, "--batch-size", "10")  # the same job again
    assert report["unchanged"] > 0, "the rerun should skip what the killed run had committed"
    assert report["unchanged"] + report["docs_embedded"] == n
    c = Collection.open(collection, read_only=True)
    assert len(c) == n and c.info()["points"] == n
    assert all(p is not None for p in c.get([f"d{i}" for i in range(n)]))


def test_rerun_after_a_crash_with_changed_source_and_options_leaves_no_orphan_points(tmp_path, tiny_embedder):
    """The points a crashed run wrote before its checkpoint are cleaned up even when the rerun does not write
    the same ids again (a document gone from the source, chunking turned off)."""
    from telescope.pipelines.build import BuildOptions, run_build
    from telescope.pipelines.checks import Policies, check_source
    from telescope.pipelines.ingest import LocalEncoder
    from telescope.pipelines.sources import SourceSpec

    class Killed(LocalEncoder):  # dies after a few batches are durable, before any checkpoint
        def embed(self, windows):
            for i, item in enumerate(super().embed(windows)):
                if i == 3:
                    raise KeyboardInterrupt
                yield item

    rows = docs(30)
    source = write_jsonl(tmp_path / "docs.jsonl", rows)

    def run(encoder_class, options: BuildOptions):
        check, con = check_source(SourceSpec(str(source)), Policies())
        path = tmp_path / "c"
        with Collection.open(path) if path.exists() else Collection.create(path, tiny_embedder.full_dim) as c:
            return run_build(c, tiny_embedder, SourceSpec(str(source)), check, con,
                             encoder_class(tiny_embedder, None, None, 4), options=options)

    with pytest.raises(KeyboardInterrupt):
        run(Killed, BuildOptions(batch_size=4, upsert_rows=4, chunk_tokens=4, checkpoint_seconds=3600, show_progress=False))
    written = Collection.open(tmp_path / "c", read_only=True).ids()
    assert written and all("#" in p for p in written)
    gone = {p.split("#")[0] for p in written[:3]}
    kept = [r for r in rows if r["id"] not in gone]
    write_jsonl(source, kept)  # the source changed before the rerun, and so did the options
    report = run(LocalEncoder, BuildOptions(batch_size=4, show_progress=False))
    c = Collection.open(tmp_path / "c", read_only=True)
    assert sorted(c.ids()) == sorted(r["id"] for r in kept)
    assert report.collection_points == len(kept)


@pytest.mark.parametrize("bad", [["--dim", "1000"], ["--layer", "9"], ["--chunk-tokens", "100000"]])
def test_refused_options_create_no_collection(tmp_path, tiny_model_path, bad):
    source = write_jsonl(tmp_path / "docs.jsonl", docs(5))
    args = ["index", "build", str(tmp_path / "c"), "--source", str(source), "--model", str(tiny_model_path), "--no-progress"]
    result = runner.invoke(app, [*args, *bad])
    assert isinstance(result.exception, ValueError) and bad[0].strip("-").split("-")[0] in str(result.exception)
    assert not (tmp_path / "c").exists()  # else the corrected command is refused: "the collection holds 1000-dim"
    assert build(tmp_path / "c", source, tiny_model_path, "--dim", "32")["collection_points"] == 5


def test_ingest_counts_the_texts_it_truncated(tmp_path, tiny_embedder):
    from telescope.pipelines import ingest

    with Collection.create(tmp_path / "c", tiny_embedder.full_dim) as c:
        report = ingest(c, tiny_embedder, ["a", "b", "c"], ["word " * 1000, "short", "long " * 200], show_progress=False)
    assert (report.points, report.truncated) == (3, 2)
