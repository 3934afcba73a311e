"""``telescope train --objective unified`` end to end on the tiny model, and its field syntax."""

from __future__ import annotations

import json

import numpy as np
import pytest

from telescope.cli.train_unified import parse_field
from telescope.embedder.unified import FeatureSpec
from cli_helpers import run_cli


run = run_cli


def test_parse_field():
    assert parse_field("lang") == FeatureSpec("lang")
    assert parse_field("genres:chunks=2:sep=|") == FeatureSpec("genres", chunks=2, multi=True, sep="|")
    assert parse_field("tags:multi:column=labels") == FeatureSpec("tags", multi=True, column="labels")
    with pytest.raises(ValueError, match="bad part 'chunks=x'"):
        parse_field("lang:chunks=x")


def test_train_objective_unified_writes_a_fused_model(tmp_path, tiny_model_path, capsys):
    data = tmp_path / "pairs.jsonl"
    rows = [{"anchor": f"q {i}", "positive": f"d {i}", "anchor_lang": ["en", "de"][i % 2],
             "positive_lang": ["en", "de"][i % 2], "positive_genres": "a|b" if i % 3 else None} for i in range(24)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "fused"
    args = ["train", "--objective", "unified", "--data", str(data), "--out", str(out), "--base", str(tiny_model_path),
            "--field", "lang", "--field", "genres:multi:sep=|", "--epochs", "1", "--batch-size", "8",
            "--rows", "64", "--chunk-dim", "4", "--tail-dim", "8"]
    code, out_text, err = run(args, capsys)
    assert code == 0, err
    from telescope.embedder.fused import load_fused

    model = load_fused(out)
    assert model.dim == 64 + 8 and json.loads((out / "fused.json").read_text())["objective"] == "unified"
    vectors = model.encode(["q 1"], [{"lang": "de"}])
    assert np.isfinite(vectors).all()
    code, _, err = run([*args[:-2], "--tail-dim", "8", "--field", "x:bogus"], capsys)
    assert code == 2 and "field" in err


def test_a_field_with_no_column_on_either_side_is_refused(tmp_path, tiny_model_path, capsys):
    # A misspelt field would otherwise train as always missing, then read a real column at serving time.
    data = tmp_path / "pairs.jsonl"
    rows = [{"anchor": f"q {i}", "positive": f"d {i}", "anchor_lang": "en", "positive_genres": "a|b"} for i in range(4)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    args = ["train", "--objective", "unified", "--data", str(data), "--out", str(tmp_path / "m"), "--base", str(tiny_model_path),
            "--field", "lang", "--field", "genre:multi:sep=|", "--epochs", "1"]
    code, _, err = run(args, capsys)
    assert code == 2 and not (tmp_path / "m").exists()
    assert "'genre'" in err and "anchor_genre" in err and "positive_genres" in err
