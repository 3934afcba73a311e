"""STS over the grid: one forward pass per layer set, the cache, cross-model, the CLI report, the STS-B anchor."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from telescope.embedder import Embedder
from telescope.eval.cache import EmbeddingCache
from telescope.eval.datasets import read_sts
from telescope.eval.grid import parse_grid
from telescope.eval.metrics import spearman_x100
from telescope.eval.sts import evaluate_sts
from cli_helpers import run_cli
from test_eval_helpers import build_compatible_model, make_sts


@pytest.fixture
def sts_file(tmp_path):
    return make_sts(tmp_path / "pairs.tsv")


@pytest.fixture
def count_passes(monkeypatch):
    """Records (model id, number of texts, layers) of every Embedder.encode_grid call."""
    calls = []
    original = Embedder.encode_grid

    def wrapped(self, texts, points, *args, **kwargs):
        calls.append((self.manifest.id, len(texts), sorted({layer for layer, _ in points})))
        return original(self, texts, points, *args, **kwargs)

    monkeypatch.setattr(Embedder, "encode_grid", wrapped)
    return calls


def test_full_grid_in_one_forward_pass_matches_per_point_encoding(tiny_embedder, sts_file, count_passes):
    data = read_sts(sts_file)
    points = parse_grid("full", tiny_embedder)
    result = evaluate_sts(tiny_embedder, data, points)
    assert count_passes == [("tiny-bert", 2 * len(data), [1, 2, 3, 4])]  # both columns, every layer, one pass
    assert set(result.scores) == set(points)
    for layer, dim in [(1, 16), (3, 64)]:
        a = tiny_embedder.encode(data.sentences1, layer, dim)
        b = tiny_embedder.encode(data.sentences2, layer, dim)
        expected = spearman_x100(np.einsum("ij,ij->i", a, b), data.scores)
        assert result.scores[(layer, dim)] == pytest.approx(expected, abs=0.01)


def test_cache_serves_a_rerun_without_encoding(tiny_embedder, sts_file, tmp_path, count_passes):
    data = read_sts(sts_file)
    cache = EmbeddingCache(tmp_path / "cache")
    first = evaluate_sts(tiny_embedder, data, [(2, 16), (4, 64)], cache=cache)
    assert cache.misses == 2 and len(count_passes) == 1
    again = EmbeddingCache(tmp_path / "cache")
    second = evaluate_sts(tiny_embedder, data, [(2, 32), (4, 16)], cache=again)  # other dims, same layers
    assert again.misses == 0 and again.hits == 2 and len(count_passes) == 1
    assert set(second.scores) == {(2, 32), (4, 16)}
    assert first.scores[(2, 16)] == pytest.approx(
        evaluate_sts(tiny_embedder, data, [(2, 16)], cache=again).scores[(2, 16)], abs=1e-9
    )
    files = sorted(p.name for p in (tmp_path / "cache" / tiny_embedder.model_hash).iterdir())
    assert len(files) == 2 and all(f.endswith((".npy")) for f in files)


def test_cache_keeps_int8_vectors_apart_from_float_vectors(tiny_model_path, tiny_embedder, sts_file, tmp_path):
    """onnx-int8 (``$TELESCOPE_BACKEND``) encodes other vectors from the same weights: a float run's cache must not
    serve them (nor the other way round)."""
    from telescope.embedder import load_embedder

    texts = read_sts(sts_file).sentences1
    floats = EmbeddingCache(tmp_path / "cache").grid(tiny_embedder, texts, [(4, 64)])[(4, 64)]
    int8 = load_embedder(tiny_model_path, backend="onnx-int8")
    cache = EmbeddingCache(tmp_path / "cache")
    vectors = cache.grid(int8, texts, [(4, 64)])[(4, 64)]
    assert (cache.hits, cache.misses) == (0, 1)
    assert np.abs(vectors - int8.encode(texts, 4, 64)).max() < 1e-6
    assert np.abs(vectors - floats).max() > 1e-4
    again = EmbeddingCache(tmp_path / "cache")
    assert np.abs(again.grid(tiny_embedder, texts, [(4, 64)])[(4, 64)] - floats).max() < 1e-6
    assert (again.hits, again.misses) == (1, 0)  # the float entry, kept

def test_cross_model_embeds_sentence1_by_query_model_and_sentence2_by_doc_model(
    tiny_embedder, sts_file, tmp_path, count_passes
):
    from telescope.embedder import load_embedder

    new = load_embedder(build_compatible_model(tmp_path / "new"))
    data = read_sts(sts_file)
    points = parse_grid(None, new, tiny_embedder)
    result = evaluate_sts(new, data, points, doc_model=tiny_embedder)
    assert [(model, n) for model, n, _ in count_passes] == [("tiny-new", len(data)), ("tiny-bert", len(data))]
    a = new.encode(data.sentences1, 3, 16)
    b = tiny_embedder.encode(data.sentences2, 3, 16)
    assert result.scores[(3, 16)] == pytest.approx(spearman_x100(np.einsum("ij,ij->i", a, b), data.scores), abs=0.01)


def test_cli_writes_json_markdown_and_png(tiny_model_path, sts_file, tmp_path, capsys):
    out = tmp_path / "reports"
    code, stdout, err = run_cli(
        ["eval", "sts", "--model", str(tiny_model_path), "--data", str(sts_file), "--grid", "full",
         "--out", str(out), "--name", "tiny-sts", "--cache-dir", str(tmp_path / "cache")],
        capsys,
    )
    assert code == 0, err
    report = json.loads((out / "tiny-sts.json").read_text())
    assert report["command"].startswith("telescope eval sts --model")
    assert report["versions"]["sentence-transformers"] and report["versions"]["torch"]
    assert report["models"]["query"]["id"] == "tiny-bert" and len(report["models"]["query"]["hash"]) == 16
    # the backend ($TELESCOPE_BACKEND, not in the command) changes the vectors where it is onnx-int8
    assert report["models"]["query"]["backend"] == os.environ.get("TELESCOPE_BACKEND", "auto")
    assert report["data"]["hash"] == read_sts(sts_file).hash and report["data"]["layout"] == "tsv"
    assert report["wall_s"] > 0 and len(report["grid"]) == 12
    md = (out / "tiny-sts.md").read_text()
    assert "| layers \\ dims | 16 | 32 | 64 |" in md and report["command"] in md
    assert (out / "tiny-sts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(4, 64) spearman" in stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "5:16"], "grid: point 5:16 is outside the model (tiny-bert:1)"),
        (["--grid", "2:128"], "grid: point 2:128 is outside the model"),
    ],
)
def test_cli_bad_grid_exits_2_naming_the_point(tiny_model_path, sts_file, tmp_path, capsys, args, message):
    code, _, err = run_cli(["eval", "sts", "--model", str(tiny_model_path), "--data", str(sts_file),
                            "--out", str(tmp_path), *args], capsys)
    assert code == 2 and message in " ".join(err.split())


def test_cli_bad_file_exits_2_naming_file_and_line(tiny_model_path, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence1\tsentence2\tscore\nA.\tB.\t1\nC.\tD.\n")
    code, _, err = run_cli(["eval", "sts", "--model", str(tiny_model_path), "--data", str(bad), "--out", str(tmp_path)], capsys)
    assert code == 2 and f"{bad}:3: expected at least 3 tab-separated fields" in err


def test_stsb_test_anchors(default_embedder):
    """The packaged all-MiniLM-L6-v2 on STS-B test, as measured with plain sentence-transformers
    (ENVIRONMENT.md): (6, 384) = 82.03 (= MTEB) within 0.05, and (3, 64) = 39.6 within 0.5 (early exit + prefix)."""
    from conftest import shared_path

    data = read_sts(shared_path("stsb", "sts-test.csv"))
    assert len(data) == 1379
    result = evaluate_sts(default_embedder, data, [(6, 384), (3, 64)])
    assert result.scores[(6, 384)] == pytest.approx(82.03, abs=0.05)
    assert result.scores[(3, 64)] == pytest.approx(39.6, abs=0.5)


def test_rollout_report_records_a_command_that_reruns_it(tiny_model_path, sts_file, tmp_path):
    from telescope.eval.rollout import main

    argv = ["--old", str(tiny_model_path), "--independent", str(tiny_model_path), "--base", str(tiny_model_path),
            "--sts", str(sts_file), "--datasets", "sts", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path)]
    main(argv)
    report = json.loads((tmp_path / "rollout-stsb-pairs.json").read_text())
    assert report["command"] == "python -m telescope.eval.rollout " + " ".join(argv)
    assert report["rows"][0]["row"] == "old/old" and report["data"]["pairs"] == 24
