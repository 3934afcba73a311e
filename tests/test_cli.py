"""The ``telescope`` command end to end on the tiny model: embed, index create|add|info, search, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import run_cli


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


def test_embed_writes_unit_vectors(tmp_path, tiny_model_path, capsys):
    out_file = tmp_path / "v.npy"
    code, _, err = run(["embed", "one", "two", "--model", str(tiny_model_path), "--layer", "2", "--dim", "16",
                        "-o", str(out_file)], capsys)
    assert code == 0, err
    v = np.load(out_file)
    assert v.shape == (2, 16) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)


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
