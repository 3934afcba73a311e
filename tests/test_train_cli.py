"""``telescope train`` end to end on the tiny model, its errors, and the training-data formats."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from telescope.embedder.training import parse_pairs, read_examples, read_texts
from tests.conftest import shared_path
from cli_helpers import run_cli


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code, out, err = run_cli(argv, capsys)
    return code, out, " ".join(err.split())  # rich wraps long lines


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.tsv.gz"
    rows = [("a man rides a horse", "a person on a horse"), ("dogs in snow", "two dogs play in the snow"),
            ("a woman cooks", "someone is cooking"), ("rain in the city", "it rains downtown")] * 2
    with gzip.open(path, "wt") as f:
        f.write("source\tsource_id\tsentence1\tsentence2\n")
        f.writelines(f"x\t{i}\t{a}\t{b}\n" for i, (a, b) in enumerate(rows))
    return path


def test_train_cli_writes_a_model_with_manifest_and_dev_grid(tmp_path, tiny_model_path, pairs_file, capsys):
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence1\tsentence2\tscore\n" + "\n".join(
        f"s{i} a cat\ts{i} a {'cat' if i % 2 else 'car'}\t{i % 5}" for i in range(10)) + "\n")
    out = tmp_path / "model"
    threads = torch.get_num_threads()
    try:
        code, _, err = run(["train", "--objective", "mrl", "--data", str(pairs_file), "--out", str(out),
                            "--base", str(tiny_model_path), "--pairs", "1:8,2:16,4:64", "--steps", "2",
                            "--batch-size", "4", "--seed", "3", "--dev-sts", str(dev), "--threads", "1"], capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    manifest = json.loads((out / "telescope.json").read_text())
    assert manifest["objective"] == "mrl" and manifest["pairs"] == [[1, 8], [2, 16], [4, 64]]
    t = manifest["training"]
    assert t["seed"] == 3 and t["steps"] == 2 and t["batch_size"] == 4 and "MatryoshkaLoss" in t["loss"]
    assert t["data"][0]["kind"] == "pairs" and len(t["data"][0]["sha256"]) == 64
    assert t["peak_rss_mb"] > 0 and t["steps_per_second"] > 0
    assert str(tiny_model_path) in t["base_path"]
    grid = manifest["eval"]["stsb_dev_spearman_x100"]
    assert set(grid) == {f"{l},{d}" for l in range(1, 5) for d in (8, 16, 64)}
    # a finished model folder is not overwritten
    code, _, err = run(["train", "--objective", "mrl", "--data", str(pairs_file), "--out", str(out),
                        "--base", str(tiny_model_path), "--steps", "2"], capsys)
    assert code == 2 and "already holds a trained model" in err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--objective", "nope", "--steps", "1"], "objective: expected one of"),
        (["--objective", "mrl", "--steps", "1", "--epochs", "1"], "exactly one of them"),
        (["--objective", "mrl"], "exactly one of them"),
        (["--objective", "mrl", "--steps", "1", "--pairs", "1-16"], "LAYER:DIM"),
        (["--objective", "mrl", "--steps", "1", "--pooling", "max"], "pooling: expected one of"),
        (["--objective", "starbucks", "--steps", "1", "--kl-temperature", "0"], "kl_temperature: expected > 0"),
    ],
)
def test_train_cli_errors_exit_2(extra, message, tmp_path, tiny_model_path, pairs_file, capsys):
    code, _, err = run(["train", "--data", str(pairs_file), "--out", str(tmp_path / "o"),
                        "--base", str(tiny_model_path), *extra], capsys)
    assert code == 2 and message in err, err


def test_train_cli_missing_data_and_bad_pairs_for_model(tmp_path, tiny_model_path, pairs_file, capsys):
    code, _, err = run(["train", "--objective", "mrl", "--data", str(tmp_path / "none.tsv"), "--out",
                        str(tmp_path / "o"), "--steps", "1"], capsys)
    assert code == 2 and "no such file" in err
    code, _, err = run(["train", "--objective", "starbucks", "--data", str(pairs_file), "--out", str(tmp_path / "o2"),
                        "--base", str(tiny_model_path), "--steps", "1", "--pairs", "9:16", "--dev-sts", ""], capsys)
    assert code == 2 and "pairs: expected 1 <= layer <= 4" in err


def test_data_formats(tmp_path):
    (tmp_path / "p.tsv").write_text("q one\td one\nq two\td two\n")
    assert read_examples(tmp_path / "p.tsv") == ("pairs", {"anchor": ["q one", "q two"], "positive": ["d one", "d two"]})
    (tmp_path / "t.tsv").write_text("a\tp\tn\n")
    assert read_examples(tmp_path / "t.tsv")[0] == "triplets"
    (tmp_path / "s.tsv").write_text('a "quoted"\tb\t4.0\nc\td\t2\n')
    kind, cols = read_examples(tmp_path / "s.tsv")
    assert kind == "scored" and cols["score"] == [1.0, 0.5] and cols["sentence1"][0] == 'a "quoted"'
    (tmp_path / "h.tsv").write_text("source\tanchor\tpositive\thard_negative\nx\ta\tp\tn\n")
    assert read_examples(tmp_path / "h.tsv") == ("triplets", {"anchor": ["a"], "positive": ["p"], "negative": ["n"]})
    (tmp_path / "bad.tsv").write_text("a\tb\t3\nc\td\n")
    with pytest.raises(ValueError, match="row 2: expected at least 3 columns"):
        read_examples(tmp_path / "bad.tsv")
    (tmp_path / "x.txt").write_text("one\n\ntwo\n")
    assert read_texts(tmp_path / "x.txt") == ("texts", {"text": ["one", "two"]})
    assert parse_pairs("1:16, 2:32") == [(1, 16), (2, 32)]


def test_shared_training_files_are_read_as_published():
    kind, cols = read_examples(shared_path("training_pairs", "positives.tsv.gz"))
    assert kind == "pairs" and len(cols["anchor"]) == 50912
    kind, cols = read_examples(shared_path("training_pairs", "snli_triplets.tsv.gz"))
    assert kind == "triplets" and len(cols["negative"]) == 5864
    kind, cols = read_examples(shared_path("stsb", "tsv", "sts-dev.tsv"))
    assert kind == "scored" and len(cols["score"]) == 1500 and max(cols["score"]) == 1.0
