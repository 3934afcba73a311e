"""The ``telescope`` command end to end on the tiny model: embed, index create|add|info, search, errors."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from cli_helpers import run_cli
from server_helpers import running_server
from telescope.server.client import Client
from telescope.server.limits import Limits


run = run_cli


@pytest.fixture
def docs(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"id": f"d{i}", "text": t, "lang": "en"} for i, t in enumerate(
        ["cats purr and sleep", "dogs bark at night", "stock prices rose", "the sun is a star", "rain falls in spring"]
    )]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_index_create_add_info_search(tmp_path, tiny_model_path, docs, capsys):
    col = str(tmp_path / "col")
    code, out, err = run(["index", "create", col, "--model", str(tiny_model_path), "--plan", "16:4,64:2"], capsys)
    assert code == 0, err
    assert json.loads(out)["dim"] == 64
    code, out, err = run(["index", "add", col, str(docs)], capsys)
    assert code == 0, err
    assert "added 5 points" in out
    code, out, _ = run(["index", "info", col], capsys)
    info = json.loads(out)
    assert info["points"] == 5 and info["model_versions"] == {"tiny-bert:1": 5}
    code, out, err = run(["search", col, "cats purr and sleep", "-k", "2"], capsys)
    assert code == 0, err
    assert "d0" in out and "plan 16:4,64:2" in out


def test_a_collection_shorter_than_its_model_embeds_at_its_dim(tmp_path, tiny_model_path, tiny_embedder, docs, capsys):
    col = str(tmp_path / "col")
    code, _, err = run(["index", "create", col, "--model", str(tiny_model_path), "--dim", "80"], capsys)
    assert code == 2 and "--dim: expected at most 64 (the model's full dim), got 80" in err
    assert not (tmp_path / "col").exists()
    code, out, err = run(["index", "create", col, "--model", str(tiny_model_path), "--dim", "32"], capsys)
    assert code == 0 and json.loads(out)["dim"] == 32, err
    code, out, err = run(["index", "add", col, str(docs)], capsys)
    assert code == 0 and "added 5 points" in out, err
    code, out, err = run(["search", col, "cats purr and sleep", "-k", "2"], capsys)
    assert code == 0 and "d0" in out, err
    from telescope.index import Collection

    with Collection.open(col, read_only=True) as c:
        stored = c.get(["d0"])[0].vector
    text = [json.loads(line) for line in docs.read_text().splitlines()][0]["text"]
    assert np.allclose(stored, tiny_embedder.encode([text], dim=32)[0], atol=1e-5)


def test_embed_writes_unit_vectors(tmp_path, tiny_model_path, capsys):
    out_file = tmp_path / "v.npy"
    code, _, err = run(["embed", "one", "two", "--model", str(tiny_model_path), "--layer", "2", "--dim", "16",
                        "-o", str(out_file)], capsys)
    assert code == 0, err
    v = np.load(out_file)
    assert v.shape == (2, 16) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)


def test_embed_input_refuses_blank_lines_naming_them(tmp_path, tiny_model_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("one\ntwo\n\nfour\n  \nsix\n")
    code, _, err = run(["embed", "--input", str(texts), "--model", str(tiny_model_path), "-o", str(tmp_path / "v")],
                       capsys)
    assert code == 2
    assert ("--input: line 3: expected a text on every line (row i of the output is line i), got a blank line "
            "(2 blank lines in all: 3, 5); remove the blank lines or put a text on each") in " ".join(err.split()), err
    assert not (tmp_path / "v.npy").exists()


def test_embed_input_row_i_is_line_i(tmp_path, tiny_model_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("one\ntwo\u2028still two\r\nthree\n", encoding="utf-8")  # the final newline is no blank line
    out_file = tmp_path / "v.npy"
    code, _, err = run(["embed", "--input", str(texts), "--model", str(tiny_model_path), "-o", str(out_file)], capsys)
    assert code == 0, err
    code, out, err = run(["embed", "two\u2028still two", "--model", str(tiny_model_path)], capsys)
    assert code == 0, err
    v = np.load(out_file)
    assert v.shape == (3, 64) and np.allclose(v[1], json.loads(out)[0], atol=1e-5)


def test_embed_output_names_the_npy_file_it_wrote(tmp_path, tiny_model_path, capsys):
    code, _, err = run(["embed", "one", "--model", str(tiny_model_path), "-o", str(tmp_path / "vectors")], capsys)
    assert code == 0, err
    assert (tmp_path / "vectors.npy").is_file() and not (tmp_path / "vectors").exists()
    assert f"wrote {tmp_path / 'vectors.npy'}" in err, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["embed", "x", "--model", "/no/such/model"], "model: expected 'default' or a sentence-transformers folder"),
        (["embed", "x", "--model", "{tiny}", "--layer", "9"], r"layer: expected an integer in 1..4, got 9"),
        (["embed", "--model", "{tiny}"], "texts: expected at least one text"),
        (["index", "info", "{tmp}/nothing"], "no collection at"),
        (["index", "create", "{tmp}/c", "--model", "{tiny}", "--plan", "64:5,16:2"], r"plan\[1\].dim: expected more"),
        (["index", "create", "{tmp}/c", "--model", "{tiny}", "--stage-one", "Bogus"], "stage_one.factory"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, tiny_model_path, capsys, argv, message):
    argv = [a.format(tiny=tiny_model_path, tmp=tmp_path) for a in argv]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert __import__("re").search(message, " ".join(err.split())), err


def test_add_refuses_a_file_without_the_text_column(tmp_path, tiny_model_path, capsys):
    col = str(tmp_path / "col")
    run(["index", "create", col, "--model", str(tiny_model_path)], capsys)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,body\n1,hello\n")
    code, _, err = run(["index", "add", col, str(bad)], capsys)
    assert code == 2 and "text: expected a column named 'text'" in " ".join(err.split())


def test_bench_embed_writes_its_report(tmp_path, tiny_model_path, capsys):
    sts = tmp_path / "sts.tsv"
    sts.write_text("sentence1\tsentence2\tscore\n" + "".join(
        f"a dog number {i}\ta cat number {i * 7 % 5}\t{i % 5}\n" for i in range(12)))
    code, out, err = run(["bench", "embed", "--model", str(tiny_model_path), "--texts", "40", "--repeats", "1",
                          "--sts-dev", str(sts), "--out", str(tmp_path), "--name", "be"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "be.json").read_text())
    results = report["results"]
    assert results["texts"] == 40 and len(results["early_exit"]) == 4
    encoders = [row["encoder"] for row in results["throughput"]]
    assert encoders == ["sentence-transformers", "onnx", "onnx-int8", "torch"]
    assert set(results["sts_dev"]) == {"onnx", "onnx-int8", "torch"}
    assert results["sts_dev"]["onnx"]["3,64"] == pytest.approx(results["sts_dev"]["torch"]["3,64"], abs=0.01)
    assert report["command"].startswith("telescope bench embed")
    assert (tmp_path / "be.md").exists()


class _Calls(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """(method, deadline in seconds) of every call made through a channel, as they go to the server."""

    def __init__(self):
        self.calls: list[tuple[str, float | None]] = []

    def intercept_unary_unary(self, continuation, details, request):
        self.calls.append((details.method, details.timeout))
        return continuation(details, request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        self.calls.append((details.method, details.timeout))
        return continuation(details, request_iterator)


@pytest.fixture(scope="module")
def remote(tmp_path_factory, tiny_model_path):
    """A real server (texts of at most 100 characters) and a client to it."""
    with running_server(tmp_path_factory.mktemp("data"), tiny_model_path, limits=Limits(max_text_chars=100)) as srv:
        with Client(srv.target) as client:
            yield srv.target, client


def write_docs(path, texts: list[str]):
    path.write_text("\n".join(json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(texts)))
    return path


def test_index_add_remote_sends_each_batch_as_its_own_call_with_its_own_deadline(remote, tmp_path, capsys, monkeypatch):
    """One Points.Upsert per batch, each with a deadline: a file of any size never meets one whole-file deadline."""
    target, client = remote
    client.create_collection("batched")
    source = write_docs(tmp_path / "docs.jsonl", [f"document number {i}" for i in range(10)])
    calls, channel = _Calls(), grpc.insecure_channel
    monkeypatch.setattr(grpc, "insecure_channel", lambda *a, **kw: grpc.intercept_channel(channel(*a, **kw), calls))
    code, out, err = run(["index", "add", "batched", str(source), "--remote", target, "--batch-size", "4"], capsys)
    assert code == 0, err
    assert "added 10 points (0 truncated texts) to 'batched' on" in out and "; 10 in collection" in out
    assert [method for method, _ in calls.calls] == ["/telescope.v1.Points/Upsert"] * 3
    assert all(deadline is not None and deadline > 0 for _, deadline in calls.calls)
    assert client.get_collection("batched").points == 10


def test_index_add_remote_error_says_how_many_documents_were_written(remote, tmp_path, capsys):
    """A failed batch names its documents, the server's reason and how many earlier batches wrote (they stay)."""
    target, client = remote
    client.create_collection("failing")
    texts = [f"document number {i}" for i in range(10)]
    texts[9] = "long " * 30  # 150 characters, over the server's limit: the third batch fails
    source = write_docs(tmp_path / "docs.jsonl", texts)
    code, _, err = run(["index", "add", "failing", str(source), "--remote", target, "--batch-size", "4"], capsys)
    message = " ".join(err.split())
    assert code == 2, err
    assert "RESOURCE_EXHAUSTED: documents[8:12]: points[1].text: expected at most 100 characters, got 150" in message
    assert "(8 documents of earlier batches were written)" in message
    assert client.get_collection("failing").points == 8
