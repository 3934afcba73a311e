"""The rollout experiment's code path on tiny models and tiny data (the real figures are in docs/results)."""

from __future__ import annotations

import json

from telescope.eval.rollout import half_mask, main, shape_checks
from test_rollout_backfill import new_model_path  # noqa: F401 (fixture)


def test_shape_checks_and_half_mask():
    rows = [{"row": "old/old", "m": 50.0}, {"row": "BCT new/old", "m": 45.0}, {"row": "BT^2 new/old", "m": 52.0},
            {"row": "BT^2 new/new", "m": 80.5}, {"row": "independent new/new", "m": 82.0}]
    assert shape_checks(rows, "m") == {
        "bt2_new_old_above_old_old": True, "bt2_new_old_above_bct_new_old": True,
        "bt2_new_new_within_1_point_of_independent": False, "independent_minus_bt2_new_new": 1.5,
    }
    mask = half_mask(11, 0.5, seed=0)
    assert mask.sum() == 6 and (half_mask(11, 0.5, seed=0) == mask).all()


def test_experiment_runs_end_to_end_on_tiny_data(tmp_path, tiny_model_path, new_model_path):  # noqa: F811
    words = ["cats", "rivers", "engines", "music", "bread", "salt", "glass", "maps"]
    sts = tmp_path / "sts-dev.tsv"
    sts.write_text("sentence1\tsentence2\tscore\n" + "".join(
        f"{a} and {b}\t{b} or {a}\t{(i * 7) % 5}\n" for i, (a, b) in enumerate(zip(words, words[1:] + words[:1]))))
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": w, "text": f"all about {w}"}) + "\n"
                                               for i, w in enumerate(words)))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"what about {w}?"}) + "\n"
                                                for i, w in enumerate(words[:4])))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(4)))
    out = tmp_path / "out"
    main(["--old", str(tiny_model_path), "--independent", str(tiny_model_path), "--bt2", str(new_model_path),
          "--sts", str(sts), "--beir", str(beir), "--cache", str(tmp_path / "cache"), "--out", str(out), "--tag", "t1"])
    sts_report = json.loads((out / "rollout-stsb-dev-t1.json").read_text())  # the split and the tag name it
    names = [r["row"] for r in sts_report["rows"]]
    assert names[0] == "old/old" and "BT^2 new/old" in names and names[-1] == "BT^2 queries, 50% backfilled"
    assert sts_report["rows"][names.index("BT^2 new/old")]["dim"] == 64
    scifact = json.loads((out / "rollout-scifact-test-t1.json").read_text())
    mixed = scifact["rows"][-1]
    assert mixed["stored_versions"] == {"tiny-bert:1": 4, "tiny-bt2:1": 4} and 0 <= mixed["ndcg@10"] <= 100
    assert "bt2_new_old_above_old_old" in scifact["shape_checks"] and (out / "rollout-scifact-test-t1.md").is_file()
    # settings are chosen on the train queries: the split names the report and picks the judgements
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i + 4}\t1\n" for i in range(4)))
    main(["--old", str(tiny_model_path), "--independent", str(tiny_model_path), "--bt2", str(new_model_path),
          "--datasets", "beir", "--beir-split", "train", "--beir", str(beir), "--cache", str(tmp_path / "cache"),
          "--out", str(out)])
    train = json.loads((out / "rollout-scifact-train.json").read_text())
    assert train["data"]["queries"] == 4 and train["rows"] != scifact["rows"]
