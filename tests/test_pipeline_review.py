"""telescope index build as a user reruns it: incremental runs over a changed source, several jobs, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.index import Collection
from test_pipeline_build import build, write_jsonl

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def payloads(collection: Path) -> dict[str, dict]:
    c = Collection.open(collection, read_only=True)
    return {p.id: p.payload for p in c.get(c.ids())}


def test_rows_and_keys_in_another_order_embed_nothing_again(tmp_path, tiny_model_path):
    rows = [{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta", "lang": "en"}, {"id": "c", "text": "gamma", "url": "u"}]
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    assert build(tmp_path / "c", source, tiny_model_path)["docs_embedded"] == 3
    write_jsonl(source, [dict(reversed(list(r.items()))) for r in reversed(rows)])  # same documents, other order
    report = build(tmp_path / "c", source, tiny_model_path)
    assert (report["docs_embedded"], report["unchanged"]) == (0, 3)
    assert payloads(tmp_path / "c")["b"] == {"text": "beta", "lang": "en", "url": None}


def test_a_document_another_job_replaced_or_deleted_is_written_again_by_its_job(tmp_path, tiny_model_path, tiny_embedder):
    one = write_jsonl(tmp_path / "one.jsonl", [{"id": "x", "text": "from job one"}, {"id": "y", "text": "only one"}])
    two = write_jsonl(tmp_path / "two.jsonl", [{"id": "x", "text": "from job two"}])
    build(tmp_path / "c", one, tiny_model_path, "--job", "one")
    build(tmp_path / "c", two, tiny_model_path, "--job", "two")  # replaces x
    report = build(tmp_path / "c", one, tiny_model_path, "--job", "one")
    assert (report["docs_embedded"], report["unchanged"], report["written_again"]) == (1, 1, 1)
    assert payloads(tmp_path / "c")["x"] == {"text": "from job one"}

    write_jsonl(two, [{"id": "z", "text": "other"}])
    build(tmp_path / "c", two, tiny_model_path, "--job", "two")  # job two drops x, and deletes it
    build(tmp_path / "c", one, tiny_model_path, "--job", "one")
    c = Collection.open(tmp_path / "c", read_only=True)
    assert sorted(c.ids()) == ["x", "y", "z"]
    np.testing.assert_allclose(c.get(["x"])[0].vector, tiny_embedder.encode(["from job one"])[0], atol=1e-5)


def test_an_unchanged_chunked_document_is_not_embedded_again(tmp_path, tiny_model_path):
    rows = [{"id": "long", "text": " ".join(f"word{i}" for i in range(60)), "lang": "en"}, {"id": "short", "text": "tiny"}]
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    chunking = ("--chunk-tokens", "20", "--chunk-overlap", "5")
    assert build(tmp_path / "c", source, tiny_model_path, *chunking)["points_upserted"] > 3
    report = build(tmp_path / "c", source, tiny_model_path, *chunking)
    assert (report["docs_embedded"], report["unchanged"], report["points_upserted"]) == (0, 2, 0)


def test_jsonl_nested_values_are_stored_as_each_line_holds_them_and_a_new_line_changes_no_other_row(tmp_path, tiny_model_path):
    rows = [{"id": "a", "text": "alpha", "meta": {"x": 1}, "tags": ["p", "q"]},
            {"id": "b", "text": "beta", "meta": {"x": 2, "deep": {"k": [1, 2]}}, "tags": []}]
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    build(tmp_path / "c", source, tiny_model_path)
    rows += [{"id": "c", "text": "gamma", "meta": {"y": [1, 2]}, "tags": None}, {"id": "d", "text": "delta"}]
    write_jsonl(source, rows)
    report = build(tmp_path / "c", source, tiny_model_path)
    assert (report["docs_embedded"], report["unchanged"]) == (2, 2)
    stored = payloads(tmp_path / "c")
    assert stored["a"] == {"text": "alpha", "meta": {"x": 1}, "tags": ["p", "q"]}
    assert stored["b"]["meta"] == {"x": 2, "deep": {"k": [1, 2]}} and stored["b"]["tags"] == []
    assert stored["c"]["meta"] == {"y": [1, 2]} and stored["c"]["tags"] is None
    assert stored["d"] == {"text": "delta", "meta": None, "tags": None}


def test_chunk_overlap_without_chunk_tokens_is_refused_naming_both(tmp_path, tiny_model_path):
    source = write_jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": "alpha"}])
    args = ["index", "build", str(tmp_path / "c"), "--source", str(source), "--model", str(tiny_model_path), "--no-progress"]
    result = runner.invoke(app, [*args, "--chunk-overlap", "8"])
    assert isinstance(result.exception, ValueError)
    assert "--chunk-overlap" in str(result.exception) and "--chunk-tokens" in str(result.exception) and "8" in str(result.exception)
    assert not (tmp_path / "c").exists()


def newest_shard_rows(directory: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    rows: dict[str, dict] = {}
    for shard in sorted(directory.glob("*.parquet")):  # names sort by run start, then shard number
        for row in pq.read_table(shard).to_pylist():
            rows[row["id"]] = row
    return rows


def test_parquet_shards_mark_the_points_a_rerun_deleted(tmp_path, tiny_model_path):
    rows = [{"id": "long", "text": " ".join(f"word{i}" for i in range(80))}, {"id": "gone", "text": "to be removed"},
            {"id": "kept", "text": "stays as it is"}]
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    shards = tmp_path / "shards"
    options = ("--chunk-tokens", "20", "--chunk-overlap", "4", "--parquet-out", str(shards))
    build(tmp_path / "c", source, tiny_model_path, *options)
    before = newest_shard_rows(shards)
    assert len([i for i in before if i.startswith("long#")]) >= 5
    write_jsonl(source, [{"id": "long", "text": "now short"}, rows[2]])
    report = build(tmp_path / "c", source, tiny_model_path, *options)
    assert report["deleted_docs"] == 1 and report["shards"]
    c = Collection.open(tmp_path / "c", read_only=True)
    after = newest_shard_rows(shards)
    live = {i for i, row in after.items() if row["vector"] is not None}
    assert live == set(c.ids()) == {"long#0", "kept#0"}
    assert {i for i, row in after.items() if row["vector"] is None} == set(before) - live
    assert all(row["model_version"] is None for row in after.values() if row["vector"] is None)


def test_shards_of_two_runs_started_in_the_same_second_are_all_kept(tmp_path):
    import pyarrow as pa

    from telescope.pipelines.shards import ShardWriter

    batch = pa.table({"id": ["a"], "doc": ["a"]})
    written = []
    for _ in range(2):  # two jobs in one process, well within one second
        writer = ShardWriter(tmp_path, 4)
        writer.write(batch, np.ones((1, 4), np.float32), "m")
        writer.flush()
        written += writer.shards
    assert len(set(written)) == 2 and all(path.exists() for path in written)
    assert sorted(written) == written  # names sort by run start


def test_the_ray_embedding_udf_counts_the_texts_it_truncated(tiny_model_path, tiny_embedder):
    import pyarrow as pa

    from telescope.pipelines.ray_engine import EmbedBatch

    udf = EmbedBatch(str(tiny_model_path), tiny_embedder.num_layers, 32, 8, threads=1)
    texts = ["word " * 1000, "short", "long " * 300]
    out = udf(pa.table({"id": ["a", "b", "c"], "text": texts}))
    assert sum(out.column("truncated").to_pylist()) == 2
    np.testing.assert_allclose(out.column("vector").to_pylist()[1], tiny_embedder.encode(["short"], dim=32)[0], atol=1e-5)


@pytest.mark.parametrize("flag", ["--sort-window", "--upsert-rows", "--shard-rows", "--batch-size"])
def test_a_bad_size_option_is_refused_naming_its_flag(tmp_path, tiny_model_path, flag):
    source = write_jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": "alpha"}])
    args = ["index", "build", str(tmp_path / "c"), "--source", str(source), "--model", str(tiny_model_path), "--no-progress"]
    result = runner.invoke(app, [*args, flag, "0"])
    assert isinstance(result.exception, ValueError) and str(result.exception).startswith(f"{flag}: expected an integer >= 1, got 0")


def test_sql_over_nested_jsonl_still_addresses_struct_fields(tmp_path, tiny_model_path):
    source = write_jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": "alpha", "meta": {"lang": "en", "n": 1}}])
    build(tmp_path / "c", source, tiny_model_path, "--sql", "SELECT id, text, meta.lang AS lang FROM src")
    assert payloads(tmp_path / "c") == {"a": {"text": "alpha", "lang": "en"}}


def test_documents_a_crashed_run_never_stored_are_not_counted_as_deleted(tmp_path, tiny_embedder):
    from telescope.pipelines.build import BuildOptions, run_build
    from telescope.pipelines.checks import Policies, check_source
    from telescope.pipelines.ingest import LocalEncoder
    from telescope.pipelines.sources import SourceSpec

    class Killed(LocalEncoder):  # dies before its first batch is stored: every document was noted, none written
        def embed(self, windows):
            for _ in super().embed(windows):
                raise KeyboardInterrupt
            yield from ()

    rows = [{"id": f"d{i}", "text": f"text {i}"} for i in range(10)]
    source = write_jsonl(tmp_path / "docs.jsonl", rows)

    def run(encoder_class):
        spec = SourceSpec(str(source))
        check, con = check_source(spec, Policies())
        path = tmp_path / "c"
        with Collection.open(path) if path.exists() else Collection.create(path, tiny_embedder.full_dim) as c:
            return run_build(c, tiny_embedder, spec, check, con, encoder_class(tiny_embedder, None, None, 4),
                             options=BuildOptions(batch_size=4, show_progress=False))

    with pytest.raises(KeyboardInterrupt):
        run(Killed)
    write_jsonl(source, rows[3:])
    report = run(LocalEncoder)
    assert (report.deleted_docs, report.deleted_points, report.docs_embedded, report.collection_points) == (0, 0, 7, 7)


def test_turning_chunking_on_or_off_keeps_points_whose_ids_two_documents_share(tmp_path, tiny_model_path):
    # 'a#1' is document 'a#1' unchunked and chunk 1 of 'a': re-embedding one must not delete the other's point
    rows = [{"id": "a", "text": " ".join(f"word{i}" for i in range(60))}, {"id": "a#1", "text": "tiny doc"}]
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    build(tmp_path / "c", source, tiny_model_path)
    build(tmp_path / "c", source, tiny_model_path, "--chunk-tokens", "20")
    stored = payloads(tmp_path / "c")
    chunks = sorted(p for p, payload in stored.items() if payload["doc_id"] == "a")
    assert len(chunks) >= 3 and "a#1" in chunks and sorted(stored) == sorted(chunks + ["a#1#0"])

    build(tmp_path / "c", source, tiny_model_path)  # and back: chunk 'a#1' of 'a' is gone, document 'a#1' is there
    assert payloads(tmp_path / "c") == {"a": {"text": rows[0]["text"]}, "a#1": {"text": "tiny doc"}}


@pytest.mark.parametrize("sort_keys", [False, True], ids=["source-order", "sorted"])
def test_a_state_hashed_by_an_earlier_version_embeds_nothing_again(tmp_path, tiny_model_path, sort_keys):
    """Upgrading telescope re-embeds nothing: a hash recorded in an earlier form (one hash of setup, text and
    payload; the payload in source order before its keys were sorted) is still its document's, and is rewritten
    in the present form."""
    import duckdb

    from telescope.pipelines.build import _legacy_hash

    rows = [{"id": f"d{i}", "text": f"text {i}", "zeta": i, "alpha": "a"} for i in range(6)]
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    assert build(tmp_path / "c", source, tiny_model_path)["docs_embedded"] == 6
    with Collection.open(tmp_path / "c", read_only=True) as c:
        stored = {p.id: p.payload for p in c.get([r["id"] for r in rows])}
    assert list(stored["d0"]) == ["text", "zeta", "alpha"]  # source order, as hashed before
    con = duckdb.connect(str(tmp_path / "c" / "jobs" / "build.duckdb"))
    setup = con.execute("SELECT value FROM meta WHERE key = 'setup'").fetchall()[0][0]
    for doc, payload in stored.items():
        legacy = _legacy_hash(setup, payload["text"], json.dumps(payload, sort_keys=sort_keys))
        con.execute("UPDATE docs SET hash = ? WHERE id = ?", [legacy, doc])
    con.close()
    rows[0]["text"] = "a changed text"
    report = build(tmp_path / "c", write_jsonl(source, rows), tiny_model_path)
    assert (report["docs_embedded"], report["unchanged"], report["payloads_updated"]) == (1, 5, 0)
    assert build(tmp_path / "c", source, tiny_model_path)["docs_embedded"] == 0
