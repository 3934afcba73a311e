"""telescope index build: a document whose payload alone changed keeps its vectors (upserted again with the new
payload), unless the collection no longer holds its points as the job wrote them."""

from __future__ import annotations

import numpy as np

from telescope.index import Collection
from test_pipeline_build import build, docs, stored, write_jsonl

CHUNKING = ("--chunk-tokens", "20", "--chunk-overlap", "5")


def test_a_column_added_to_the_source_embeds_nothing_again(tmp_path, tiny_model_path):
    rows = docs(12)
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    build(tmp_path / "c", source, tiny_model_path)
    before = stored(tmp_path / "c")
    for i, row in enumerate(rows):
        row["url"] = f"https://example.org/{i}"
    report = build(tmp_path / "c", write_jsonl(source, rows), tiny_model_path)
    assert (report["docs_embedded"], report["payloads_updated"], report["points_upserted"]) == (0, 12, 12)
    after = stored(tmp_path / "c")
    for row in rows:
        assert after[row["id"]][1] == {**before[row["id"]][1], "url": row["url"]}
        np.testing.assert_array_equal(after[row["id"]][0], before[row["id"]][0])


def test_a_chunked_document_keeps_its_chunks_vectors_and_takes_the_new_metadata(tmp_path, tiny_model_path):
    rows = [{"id": "long", "text": " ".join(f"word{i}" for i in range(60)), "lang": "en"}, {"id": "short", "text": "tiny", "lang": "en"}]
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    build(tmp_path / "c", source, tiny_model_path, *CHUNKING)
    before = stored(tmp_path / "c")
    rows[0]["lang"] = "fr"
    report = build(tmp_path / "c", write_jsonl(source, rows), tiny_model_path, *CHUNKING)
    chunks = sorted(p for p in before if p.startswith("long"))
    assert len(chunks) > 2
    assert (report["docs_embedded"], report["payloads_updated"], report["unchanged"]) == (0, 1, 1)
    assert report["points_upserted"] == len(chunks)
    after = stored(tmp_path / "c")
    assert sorted(after) == sorted(before)
    for point in chunks:
        np.testing.assert_array_equal(after[point][0], before[point][0])
        assert after[point][1] == {**before[point][1], "lang": "fr"}  # its chunk text, doc_id and chunk kept
    for point in (p for p in before if p.startswith("short")):
        np.testing.assert_array_equal(after[point][0], before[point][0])
        assert after[point][1] == before[point][1]


def test_points_another_job_replaced_are_embedded_again_not_reused(tmp_path, tiny_model_path, tiny_embedder):
    one = write_jsonl(tmp_path / "one.jsonl", [{"id": "x", "text": "from job one", "lang": "en"}])
    two = write_jsonl(tmp_path / "two.jsonl", [{"id": "x", "text": "from job two", "lang": "en"}])
    build(tmp_path / "c", one, tiny_model_path, "--job", "one")
    build(tmp_path / "c", two, tiny_model_path, "--job", "two")  # x now holds job two's text and vector
    write_jsonl(one, [{"id": "x", "text": "from job one", "lang": "de"}])
    report = build(tmp_path / "c", one, tiny_model_path, "--job", "one")
    assert (report["docs_embedded"], report["payloads_updated"]) == (1, 0)
    (point,) = Collection.open(tmp_path / "c", read_only=True).get(["x"])
    assert point.payload == {"text": "from job one", "lang": "de"}
    np.testing.assert_allclose(point.vector, tiny_embedder.encode(["from job one"])[0], atol=1e-5)


def test_a_payload_change_under_another_setup_embeds_again(tmp_path, tiny_model_path):
    rows = docs(3)
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    build(tmp_path / "c", source, tiny_model_path)
    rows[0]["lang"] = "de"
    report = build(tmp_path / "c", write_jsonl(source, rows), tiny_model_path, *CHUNKING)
    assert (report["docs_embedded"], report["payloads_updated"]) == (3, 0)  # the text part is the setup's too
