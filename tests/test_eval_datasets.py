"""STS and BEIR loaders: the three STS layouts, the BEIR layout, and errors naming file, line and problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from telescope.eval.datasets import read_beir, read_sts


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_beir(root: Path, qrels: str | None = None, corpus: str | None = None, queries: str | None = None) -> Path:
    docs = [{"_id": f"d{i}", "title": "Title", "text": f"document {i}"} for i in range(4)]
    write(root / "corpus.jsonl", corpus if corpus is not None else "".join(json.dumps(d) + "\n" for d in docs))
    qs = [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}, {"_id": "q3", "text": "unjudged"}]
    write(root / "queries.jsonl", queries if queries is not None else "".join(json.dumps(q) + "\n" for q in qs))
    write(root / "qrels" / "test.tsv", qrels if qrels is not None else "query-id\tcorpus-id\tscore\nq1\td0\t2\nq1\td1\t1\nq2\td3\t1\n")
    return root


# -- STS layouts -------------------------------------------------------------------------------------------------


def test_stsb_csv_layout_with_bare_quotes_and_extra_columns(tmp_path):
    path = write(
        tmp_path / "sts-test.csv",
        'main-captions\tMSRvid\t2012test\t0024\t2.500\tA girl is "styling" her hair.\tA girl is brushing her hair.\n'
        "main-news\theadlines\t2013\t0001\t4.0\tOne.\tTwo.\textra source\tmore\n",
    )
    data = read_sts(path)
    assert data.layout == "stsb"
    assert data.sentences1 == ['A girl is "styling" her hair.', "One."]
    assert data.sentences2 == ["A girl is brushing her hair.", "Two."]
    assert data.scores == [2.5, 4.0]
    assert len(data.hash) == 16


def test_generic_tsv_with_header_in_any_column_order(tmp_path):
    path = write(tmp_path / "pairs.tsv", "score\tid\tsentence1\tsentence2\n3.5\tx\tHello there.\tHi there.\n")
    data = read_sts(path)
    assert (data.layout, data.sentences1, data.sentences2, data.scores) == ("tsv", ["Hello there."], ["Hi there."], [3.5])


def test_sick_layout(tmp_path):
    path = write(
        tmp_path / "SICK_test.txt",
        "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
        "1\tA man plays.\tA person plays.\t4.5\tENTAILMENT\n",
    )
    data = read_sts(path)
    assert (data.layout, data.sentences1, data.scores) == ("sick", ["A man plays."], [4.5])


def test_shared_stsb_tsv_copy_reads_as_generic_tsv():
    from conftest import shared_path

    data = read_sts(shared_path("stsb", "tsv", "sts-test.tsv"))
    assert data.layout == "tsv" and len(data) == 1379


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("a\tb\tc\n1\t2\t3\n", ":1: expected a header with columns sentence1, sentence2, score"),
        ("sentence1\tsentence2\tscore\nA.\tB.\t1\n\nC.\tD.\t2\n", ":3: expected a sentence pair, got an empty line"),
        ("sentence1\tsentence2\tscore\nA.\tB.\n", ":2: expected at least 3 tab-separated fields"),
        ("sentence1\tsentence2\tscore\nA.\tB.\thigh\n", ":2: expected a numeric score, got 'high'"),
        ("sentence1\tsentence2\tscore\nA.\t\t1\n", ":2: expected a non-empty sentence2"),
        ("sentence1\tsentence2\tscore\n", "expected at least one sentence pair after the header"),
        ("g\tf\ty\t1\t2.0\tA.\tB.\ng\tf\ty\t2\tx\tC.\tD.\n", ":2: expected a numeric score, got 'x'"),
    ],
)
def test_sts_bad_input_names_file_line_and_problem(tmp_path, text, message):
    path = write(tmp_path / "bad.tsv", text)
    with pytest.raises(ValueError, match=None) as e:
        read_sts(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_sts_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_sts(tmp_path / "nope.csv")


# -- BEIR --------------------------------------------------------------------------------------------------------


def test_beir_layout_reads_judged_queries_and_title_plus_text(tmp_path):
    data = read_beir(make_beir(tmp_path / "b"))
    assert data.doc_ids == ["d0", "d1", "d2", "d3"]
    assert data.doc_texts[0] == "Title document 0"
    assert data.query_ids == ["q1", "q2"]  # q3 has no judgement: not evaluated, as in BEIR
    assert data.qrels == {"q1": {"d0": 2, "d1": 1}, "q2": {"d3": 1}}
    assert set(data.files) == {"corpus.jsonl", "queries.jsonl", "qrels/test.tsv"}


@pytest.mark.parametrize(
    ("kwargs", "file", "message"),
    [
        ({"qrels": "query-id\tcorpus-id\tscore\nq1\td9\t1\n"}, "qrels/test.tsv:2", "corpus-id 'd9' is not in corpus.jsonl"),
        ({"qrels": "query-id\tcorpus-id\tscore\nq1\td0\t1\nq7\td0\t1\n"}, "qrels/test.tsv:3", "query-id 'q7' is not in queries.jsonl"),
        ({"qrels": "query-id\tcorpus-id\tscore\nq1\td0\n"}, "qrels/test.tsv:2", "expected 3 tab-separated fields"),
        ({"qrels": "query-id\tcorpus-id\tscore\nq1\td0\tyes\n"}, "qrels/test.tsv:2", "expected an integer relevance score"),
        ({"qrels": "query-id\tcorpus-id\tscore\n\nq1\td0\t1\n"}, "qrels/test.tsv:2", "got an empty line"),
        ({"qrels": "q1\td0\t1\n"}, "qrels/test.tsv:1", "expected the header"),
        ({"corpus": '{"_id": "d0", "text": "a"}\n\n{"_id": "d1", "text": "b"}\n'}, "corpus.jsonl:2", "got an empty line"),
        ({"corpus": '{"_id": "d0", "text": "a"}\n{"_id": "d1", "text": \n'}, "corpus.jsonl:2", "invalid JSON"),
        ({"corpus": '{"_id": "d0", "text": "a"}\n{"text": "b"}\n'}, "corpus.jsonl:2", "expected a non-empty string field '_id'"),
        ({"corpus": '{"_id": "d0", "text": "a"}\n{"_id": "d0", "text": "b"}\n'}, "corpus.jsonl:2", "unique '_id'"),
        ({"corpus": '{"_id": "d0"}\n'}, "corpus.jsonl:1", "expected string fields 'title' and 'text'"),
        ({"queries": '{"_id": "q1", "text": ""}\n'}, "queries.jsonl:1", "expected a non-empty string field 'text'"),
    ],
)
def test_beir_bad_input_names_file_line_and_problem(tmp_path, kwargs, file, message):
    root = make_beir(tmp_path / "b", **kwargs)
    with pytest.raises((ValueError, LookupError)) as e:
        read_beir(root)
    assert f"{root}/{file}:" in str(e.value) and message in str(e.value)


def test_beir_missing_files_and_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a BEIR folder"):
        read_beir(tmp_path / "none")
    root = make_beir(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match=r"qrels/dev.tsv.*splits here: \['test'\]"):
        read_beir(root, "dev")
    (root / "corpus.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="corpus: no such file .*corpus.jsonl"):
        read_beir(root)


def test_shared_data_is_beside_the_checkout_unless_the_environment_names_it(monkeypatch, tmp_path):
    from telescope.eval.datasets import shared_data

    monkeypatch.delenv("TELESCOPE_SHARED_DATA", raising=False)
    repo = Path(__file__).resolve().parents[1]
    assert shared_data("stsb", "sts-dev.csv") == repo.parent / "shared" / "data" / "stsb" / "sts-dev.csv"
    monkeypatch.setenv("TELESCOPE_SHARED_DATA", str(tmp_path))
    assert shared_data("beir", "scifact") == tmp_path / "beir" / "scifact"
