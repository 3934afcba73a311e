"""BEIR retrieval over the grid and through the index: metrics, plans, the cache, cross-model, the reference check."""

from __future__ import annotations

import json

import pytest

from telescope.embedder import Embedder
from telescope.eval.beir import default_plans, evaluate_beir
from telescope.eval.cache import EmbeddingCache
from telescope.eval.datasets import read_beir
from telescope.eval.grid import parse_grid
from telescope.index import Plan
from cli_helpers import run_cli
from test_eval_helpers import build_compatible_model, make_beir


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory):
    return make_beir(tmp_path_factory.mktemp("beir"))


def test_grid_and_plans(tiny_embedder, beir_dir):
    data = read_beir(beir_dir)
    result = evaluate_beir(tiny_embedder, data, parse_grid("full", tiny_embedder), repeats=1)
    assert (result.queries, result.documents) == (8, 40)
    for metrics in result.grid.values():
        assert set(metrics) == {"ndcg@10", "recall@100", "mrr@10"}
        assert metrics["mrr@10"] == pytest.approx(100)  # each query is a copy of its grade-2 document
        assert metrics["recall@100"] == pytest.approx(100)  # 40 documents: all are ranked
        assert 0 < metrics["ndcg@10"] <= 100
    exact, *plans = result.plans
    assert exact["exact"] and exact["plan"] == "64:10" and exact["recall_at_k"] == 1.0
    # the index's exact search and the grid's reference ranking give the same figures
    for metric in ("ndcg@10", "mrr@10", "recall@100"):
        assert exact[metric] == pytest.approx(result.grid[(4, 64)][metric], abs=1e-6)
    assert [p["plan"] for p in plans] == [str(p) for p in default_plans(64)]
    for p in plans:
        assert 0 <= p["recall_at_k"] <= 1 and p["queries_per_s"] > 0 and p["flops_per_query"] > 0


def test_listed_plans_and_no_plans(tiny_embedder, beir_dir):
    data = read_beir(beir_dir)
    result = evaluate_beir(tiny_embedder, data, [(2, 16)], plans=["16:20,64:10"], repeats=1)
    assert [p["plan"] for p in result.plans] == ["64:10", "16:20,64:10"]
    assert evaluate_beir(tiny_embedder, data, [(2, 16)], plans=[]).plans == []
    with pytest.raises(ValueError, match="plan 16:20,128:10: expected stage dims at most the shared prefix 64"):
        evaluate_beir(tiny_embedder, data, [(2, 16)], plans=[Plan.parse("16:20,128:10")])


def test_documents_are_cached_by_model_and_data(tiny_embedder, beir_dir, tmp_path, monkeypatch):
    data = read_beir(beir_dir)
    first = evaluate_beir(tiny_embedder, data, [(2, 16), (4, 64)], plans=[], cache=EmbeddingCache(tmp_path))

    def refuse(*args, **kwargs):
        raise AssertionError("re-encoded although cached")

    monkeypatch.setattr(Embedder, "encode_grid", refuse)
    cache = EmbeddingCache(tmp_path)
    second = evaluate_beir(tiny_embedder, data, [(2, 32), (4, 64)], plans=[], cache=cache)
    assert cache.misses == 0 and cache.hits == 4  # layers 2 and 4, documents and queries
    assert second.grid[(4, 64)] == first.grid[(4, 64)]


def test_cross_model_queries_by_one_model_documents_by_the_other(tiny_embedder, beir_dir, tmp_path):
    from telescope.embedder import load_embedder

    new = load_embedder(build_compatible_model(tmp_path / "new"))
    data = read_beir(beir_dir)
    points = parse_grid(None, new, tiny_embedder)
    result = evaluate_beir(new, data, points, doc_model=tiny_embedder, prefix=16, plans=["8:20,16:10"], repeats=1)
    assert set(result.grid) == {(1, 4), (2, 8), (3, 16), (4, 16)}
    assert [p["plan"] for p in result.plans] == ["16:10", "8:20,16:10"]  # the collection holds the shared prefix
    # unrelated random models: retrieval across them is near chance, unlike each model with itself
    same = evaluate_beir(tiny_embedder, data, [(4, 16)], plans=[])
    assert result.grid[(4, 16)]["mrr@10"] < same.grid[(4, 16)]["mrr@10"] == pytest.approx(100)


def test_cli_report_with_plans_and_reference_check(tiny_model_path, tmp_path, capsys):
    data = make_beir(tmp_path / "binary", graded=False)
    out = tmp_path / "reports"
    code, stdout, err = run_cli(
        ["eval", "beir", "--model", str(tiny_model_path), "--data", str(data), "--out", str(out), "--name", "tiny",
         "--plans", "16:20,64:10;32:20,64:10", "--repeats", "1", "--crosscheck", "--cache-dir", str(tmp_path / "c")],
        capsys,
    )
    assert code == 0, err
    report = json.loads((out / "tiny.json").read_text())
    assert report["data"]["files"].keys() == {"corpus.jsonl", "queries.jsonl", "qrels/test.tsv"}
    assert report["models"]["doc"]["hash"] == report["models"]["query"]["hash"]
    assert [p["plan"] for p in report["plans"]] == ["64:10", "16:20,64:10", "32:20,64:10"]
    check = report["crosscheck"]
    assert check["qrels_graded"] is False and check["point"] == [4, 64]
    assert check["agrees"] and abs(check["ndcg@10_difference"]) <= 0.3  # binary qrels: the two must agree
    assert (out / "tiny.png").stat().st_size > 1000
    md = (out / "tiny.md").read_text()
    assert "## Search plans through the index" in md and "Reference check" in md
    assert "reference nDCG@10" in stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--plans", "16-20"], "plans: plan: expected stages 'dim:keep'"),
        (["--grid", "1:16,9:16"], "grid: point 9:16 is outside the model"),
        (["--split", "dev"], "qrels: no such file"),
    ],
)
def test_cli_bad_input_exits_2(tiny_model_path, beir_dir, tmp_path, capsys, argv, message):
    code, _, err = run_cli(["eval", "beir", "--model", str(tiny_model_path), "--data", str(beir_dir),
                            "--out", str(tmp_path), *argv], capsys)
    assert code == 2 and message in " ".join(err.split())


def test_cli_qrels_naming_unknown_document(tiny_model_path, tmp_path, capsys):
    data = make_beir(tmp_path / "b")
    with open(data / "qrels" / "test.tsv", "a") as f:
        f.write("q0\tnot-a-doc\t1\n")
    code, _, err = run_cli(["eval", "beir", "--model", str(tiny_model_path), "--data", str(data), "--out", str(tmp_path)], capsys)
    assert code == 2
    assert f"{data}/qrels/test.tsv:18: corpus-id 'not-a-doc' is not in corpus.jsonl" in err


def test_reference_check_with_our_vectors_equals_its_own_full_encoding(tiny_embedder, tmp_path):
    from telescope.eval.crosscheck import st_information_retrieval

    data = read_beir(make_beir(tmp_path / "binary", graded=False))
    ours = st_information_retrieval(tiny_embedder, data, sample=8)
    independent = st_information_retrieval(tiny_embedder, data, sample=None)
    assert ours["min_cosine_vs_st_encode"] > 0.9999 and ours["documents_sampled"] == 8
    assert independent["documents"] == "encoded by sentence-transformers"
    for metric in ("ndcg@10", "mrr@10", "recall@100"):
        assert ours[metric] == pytest.approx(independent[metric], abs=1e-6)


def test_without_disk_cache_a_run_encodes_each_layer_once(tiny_embedder, beir_dir, tmp_path):
    from telescope.eval.crosscheck import st_information_retrieval

    data = read_beir(beir_dir)
    cache = EmbeddingCache(None)
    evaluate_beir(tiny_embedder, data, [(4, 64)], plans=[], cache=cache)
    st_information_retrieval(tiny_embedder, data, cache, sample=4)  # the reference reuses the run's vectors
    assert (cache.misses, cache.hits) == (2, 1) and not list(tmp_path.iterdir())


def test_plan_recall_is_against_exact_search_when_stage_one_is_approximate_at_the_full_dim(tiny_embedder, beir_dir):
    # PQ4x4 at the full 64 dims: the plan 64:10 searches the quantised index, the baseline must still be exact
    data = read_beir(beir_dir)
    result = evaluate_beir(tiny_embedder, data, [(4, 64)], plans=["64:10"], stage_one="PQ4x4", repeats=1)
    exact, plan = result.plans
    assert exact["exact"] and not plan["exact"]
    for metric in ("ndcg@10", "mrr@10", "recall@100"):
        assert exact[metric] == pytest.approx(result.grid[(4, 64)][metric], abs=1e-6)
    assert plan["ndcg@10"] != pytest.approx(exact["ndcg@10"])  # the quantised search ranks otherwise ...
    assert plan["recall_at_k"] < 1.0  # ... so it does not find all of exact search's top 10


def test_cli_negative_crosscheck_sample_exits_2_naming_the_option(tiny_model_path, beir_dir, tmp_path, capsys):
    code, _, err = run_cli(["eval", "beir", "--model", str(tiny_model_path), "--data", str(beir_dir), "--out",
                            str(tmp_path), "--plans", "none", "--crosscheck", "--crosscheck-sample", "-1"], capsys)
    assert code == 2 and "--crosscheck-sample: expected an integer >= 0 (0: the whole corpus), got -1" in " ".join(err.split())
