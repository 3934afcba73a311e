"""The eval harness's figures against independent computations, and its defects found in review: the reference check
on queries without a relevant document, stale cache entries, undefined Spearman, conflicting qrels, the markdown."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pytrec_eval
from scipy.stats import spearmanr

from telescope.eval.beir import evaluate_beir
from telescope.eval.cache import EmbeddingCache
from telescope.eval.datasets import read_beir, read_sts
from telescope.eval.run import run_beir
from telescope.eval.sts import evaluate_sts
from cli_helpers import run_cli
from test_eval_helpers import make_beir, make_sts


def add_lines(path, *lines: str) -> None:
    with open(path, "a") as f:
        f.writelines(line + "\n" for line in lines)


def brute_force_metrics(embedder, data, layer: int, dim: int) -> dict[str, float]:
    """nDCG@10, Recall@100, MRR@10 x100 from numpy's exact scores over every document and pytrec_eval by hand."""
    q = embedder.encode(data.query_texts, layer, dim).astype(np.float64)
    d = embedder.encode(data.doc_texts, layer, dim).astype(np.float64)
    scores = q @ d.T
    run = {qid: {did: float(s) for did, s in zip(data.doc_ids, row)} for qid, row in zip(data.query_ids, scores)}
    per_query = pytrec_eval.RelevanceEvaluator(data.qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    # trec_eval's order: score descending, ties by document id descending
    top10 = {qid: dict(sorted(sorted(r.items(), reverse=True), key=lambda kv: -kv[1])[:10]) for qid, r in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(data.qrels, {"recip_rank"}).evaluate(top10)
    n = len(data.qrels)
    return {
        "ndcg@10": 100 * sum(per_query[q]["ndcg_cut_10"] for q in data.qrels) / n,
        "recall@100": 100 * sum(per_query[q]["recall_100"] for q in data.qrels) / n,
        "mrr@10": 100 * sum(rr[q]["recip_rank"] for q in data.qrels) / n,
    }


@pytest.fixture
def odd_beir(tmp_path):
    """Graded qrels, two documents with the text of d0 (tied scores), and a query judged only 0."""
    root = make_beir(tmp_path / "beir", n_docs=40, n_queries=10)
    text = json.loads((root / "corpus.jsonl").read_text().split("\n")[0])["text"]
    add_lines(root / "corpus.jsonl", *(json.dumps({"_id": i, "title": "T", "text": text}) for i in ("zz", "a0")))
    add_lines(root / "qrels" / "test.tsv", "q0\tzz\t1", "q8\td5\t0")
    return root


def test_grid_and_exact_plan_equal_brute_force_with_ties_and_a_query_without_relevant_document(tiny_embedder, odd_beir):
    data = read_beir(odd_beir)
    points = [(1, 8), (2, 16), (3, 64), (4, 32), (4, 64)]
    result = evaluate_beir(tiny_embedder, data, points, plans=["16:20,64:10"], repeats=1)
    for layer, dim in points:
        expected = brute_force_metrics(tiny_embedder, data, layer, dim)
        for metric, value in expected.items():
            assert result.grid[(layer, dim)][metric] == pytest.approx(value, abs=1e-4), (layer, dim, metric)
    exact = result.plans[0]
    for metric in ("ndcg@10", "mrr@10", "recall@100"):
        assert exact[metric] == pytest.approx(result.grid[(4, 64)][metric], abs=1e-6)


def test_sts_equals_scipy_at_several_points_and_sentence_transformers_at_the_full_point(tiny_embedder, tmp_path):
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    path = make_sts(tmp_path / "pairs.tsv", 30)
    add_lines(path, "alpha beta\tgamma delta\t2.0", "brain heart\tblood tissue\t2.0")  # tied gold scores
    data = read_sts(path)
    points = [(1, 8), (2, 32), (3, 1), (4, 64)]
    result = evaluate_sts(tiny_embedder, data, points)
    for layer, dim in points:
        a, b = tiny_embedder.encode(data.sentences1, layer, dim), tiny_embedder.encode(data.sentences2, layer, dim)
        assert result.scores[(layer, dim)] == pytest.approx(100 * spearmanr((a * b).sum(1), data.scores).statistic, abs=1e-3)
    reference = EmbeddingSimilarityEvaluator(data.sentences1, data.sentences2, data.scores, main_similarity="cosine")
    assert result.scores[(4, 64)] == pytest.approx(100 * reference(tiny_embedder.model)["spearman_cosine"], abs=0.01)


def test_reference_check_is_not_comparable_when_a_query_has_no_relevant_document(tiny_model_path, tmp_path):
    """sentence-transformers' evaluator leaves out a query judged only 0; the harness counts it as 0 (as BEIR): on
    binary qrels the two figures then differ by the factor 8/9 and must not be called a disagreement."""
    root = make_beir(tmp_path / "beir", graded=False)
    add_lines(root / "qrels" / "test.tsv", "q8\td5\t0")
    report, paths = run_beir(root, tmp_path / "out", model=str(tiny_model_path), grid="4:64", plans="none",
                             crosscheck=True, crosscheck_sample=4, cache_dir=None, show_progress=False)
    check = report["crosscheck"]
    assert check["ours"]["ndcg@10"] == pytest.approx(check["ndcg@10"] * 8 / 9, abs=1e-4)
    assert check["queries_without_relevant"] == 1 and check["agrees"] is None
    assert "not comparable: 1 queries have no relevant document" in paths[1].read_text()


def test_cache_entry_of_other_texts_joined_differently_is_not_reused(tiny_embedder, tmp_path):
    first, second = ["gene\x00", "cell"], ["gene", "\x00cell"]
    EmbeddingCache(tmp_path).grid(tiny_embedder, first, [(4, 64)])
    cache = EmbeddingCache(tmp_path)
    vectors = cache.grid(tiny_embedder, second, [(4, 64)])[(4, 64)]
    assert (cache.hits, cache.misses) == (0, 1)
    assert np.abs(vectors - tiny_embedder.encode(second, 4, 64)).max() < 1e-6


@pytest.mark.parametrize(
    "damage",
    [
        lambda v, path: path.write_bytes(path.read_bytes()[:200]),  # cut short
        lambda v, path: np.save(path, np.roll(v, 1, axis=0).astype(np.float64)),  # another dtype (and other rows)
        lambda v, path: np.save(path, np.roll(v, 1, axis=0).astype(np.float16)),
        lambda v, path: path.write_text("not an array"),
    ],
    ids=["truncated", "float64", "float16", "not-npy"],
)
def test_unreadable_or_mismatched_cache_entry_is_encoded_again(tiny_embedder, tmp_path, damage):
    texts = ["gene protein cell", "heart blood", "mouse trial dose"]
    vectors = EmbeddingCache(tmp_path).grid(tiny_embedder, texts, [(2, 64)])[(2, 64)]
    (entry,) = (tmp_path / tiny_embedder.model_hash).glob("*-L2.npy")
    damage(vectors, entry)
    cache = EmbeddingCache(tmp_path)
    again = cache.grid(tiny_embedder, texts, [(2, 64)])[(2, 64)]
    assert (cache.hits, cache.misses) == (0, 1)
    assert again.dtype == np.float32 and np.abs(again - vectors).max() < 1e-6
    assert np.abs(np.load(entry) - vectors).max() < 1e-6  # the entry is written again


def test_sts_with_one_gold_score_exits_2_naming_the_field(tiny_model_path, tmp_path, capsys):
    path = tmp_path / "same.tsv"
    path.write_text("sentence1\tsentence2\tscore\nA cat.\tA dog.\t3\nA man.\tA woman.\t3.0\n")
    code, _, err = run_cli(["eval", "sts", "--model", str(tiny_model_path), "--data", str(path),
                            "--out", str(tmp_path / "out"), "--no-cache"], capsys)
    assert code == 2
    assert f"{path}: score: expected at least two different gold scores" in err and "got 2 pairs all scored 3" in err


def test_qrels_grading_one_pair_twice_differently_names_both_lines(tmp_path):
    root = make_beir(tmp_path / "beir")
    add_lines(root / "qrels" / "test.tsv", "q0\td0\t1")  # line 2 graded (q0, d0) 2
    with pytest.raises(ValueError) as e:
        read_beir(root)
    assert f"{root}/qrels/test.tsv:18: score: expected one grade per (query-id, corpus-id), got 1 for ('q0', 'd0'), " \
           "graded 2 on line 2" in str(e.value)
    qrels = root / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text().replace("q0\td0\t1\n", "q0\td0\t2\n"))  # the same judgement twice: accepted
    assert read_beir(root).qrels["q0"] == {"d0": 2, "d1": 1}


def markdown_table(md: str, header_start: str) -> list[list[str]]:
    lines = md.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_every_figure_of_the_markdown_equals_the_json(tiny_model_path, tmp_path):
    root = make_beir(tmp_path / "beir", graded=False)
    report, paths = run_beir(root, tmp_path / "out", model=str(tiny_model_path), grid="full",
                             plans="16:20,64:10;8:200,32:40,64:10", repeats=1, crosscheck=True, crosscheck_sample=4,
                             cache_dir=None, show_progress=False)
    md = paths[1].read_text()
    assert json.loads(paths[0].read_text()) == json.loads(json.dumps(report))
    grid = {(r["layer"], r["dim"]): r for r in report["grid"]}
    header = next(line for line in md.split("\n") if line.startswith("| layers \\ dims"))
    dims = [int(c) for c in header.strip("|").split("|")[1:]]
    for row in markdown_table(md, "| layers \\ dims"):
        for dim, cell in zip(dims, row[1:]):
            assert cell == f"{grid[(int(row[0]), dim)]['ndcg@10']:.2f}"
    for row in markdown_table(md, "| layer | dim |"):
        r = grid[(int(row[0]), int(row[1]))]
        assert row[2:] == [f"{r[k]:.2f}" for k in ("ndcg@10", "recall@100", "mrr@10")]
    plans = markdown_table(md, "| plan |")
    assert len(plans) == len(report["plans"]) == 3
    for row, p in zip(plans, report["plans"]):
        assert row[0] == p["plan"] + (" (exact)" if p["exact"] else "")
        columns = [("ndcg@10", ".2f"), ("mrr@10", ".2f"), ("recall@100", ".2f"), ("recall_at_k", ".3f"),
                   ("queries_per_s", ",.0f"), ("ms_per_batch", ".1f")]
        assert row[1:7] == [format(p[key], spec) for key, spec in columns]
        assert float(row[7]) * 1e6 == pytest.approx(p["flops_per_query"], rel=0.005)  # MFLOPs/query
    assert f"Wall time: {report['wall_s']:.1f} s" in md
    check = report["crosscheck"]
    assert f"nDCG@10 {check['ndcg@10']:.2f}" in md and f"This harness: nDCG@10 {check['ours']['ndcg@10']:.2f}" in md


@pytest.mark.parametrize("plans", ["", " ; "])
def test_cli_empty_plans_exits_2_instead_of_running_none(tiny_model_path, tmp_path, capsys, plans):
    data = make_beir(tmp_path / "beir")
    code, _, err = run_cli(["eval", "beir", "--model", str(tiny_model_path), "--data", str(data), "--out",
                            str(tmp_path / "out"), "--no-cache", "--plans", plans], capsys)
    assert code == 2 and f"plans: expected 'default', 'none' or plans separated by ';', got {plans!r}" in err


def test_plans_on_a_corpus_smaller_than_k(tiny_embedder, tmp_path):
    """9 documents, k = 10: every plan returns all 9, so each finds exact search's results and equals its figures."""
    data = read_beir(make_beir(tmp_path / "beir", n_docs=9, n_queries=3))
    result = evaluate_beir(tiny_embedder, data, [(4, 64)], plans=["16:3,64:2", "8:200,32:40,64:10"], repeats=1)
    exact, *plans = result.plans
    assert [p["plan"] for p in plans] == ["16:10,64:10", "8:200,32:40,64:10"]  # shortlists raised to k = 10
    for p in [exact, *plans]:
        assert p["recall_at_k"] == 1.0
        for metric in ("ndcg@10", "mrr@10", "recall@100"):
            assert p[metric] == pytest.approx(result.grid[(4, 64)][metric], abs=1e-6)


@pytest.mark.parametrize(
    ("command", "argv", "message"),
    [
        ("beir", ["--stage-one", "Bogus"], "stage_one.factory: expected a FAISS index-factory string, got 'Bogus'"),
        ("beir", ["--name", "../x"], "name: expected a file name without '/', got '../x'"),
        ("sts", ["--name", ".hidden"], "name: expected a file name without '/', got '.hidden'"),
    ],
)
def test_cli_bad_option_exits_2_before_encoding_anything(tiny_model_path, tmp_path, capsys, command, argv, message):
    data = make_beir(tmp_path / "beir") if command == "beir" else make_sts(tmp_path / "pairs.tsv")
    cache = tmp_path / "cache"
    code, _, err = run_cli(["eval", command, "--model", str(tiny_model_path), "--data", str(data),
                            "--out", str(tmp_path / "out"), "--cache-dir", str(cache), *argv], capsys)
    assert code == 2 and message in err
    assert not cache.exists()  # nothing was encoded (an encoded layer is written there)


def test_cache_entry_of_a_model_whose_weights_changed_in_place_is_not_reused(tmp_path):
    from telescope.embedder import load_embedder
    from telescope.embedder.tiny import build_tiny_model

    texts = ["gene protein cell", "heart blood"]
    before = load_embedder(build_tiny_model(tmp_path / "model"))
    old = EmbeddingCache(tmp_path / "cache").grid(before, texts, [(3, 32)])[(3, 32)]
    after = load_embedder(build_tiny_model(tmp_path / "model", seed=1))  # same folder, other weights
    cache = EmbeddingCache(tmp_path / "cache")
    new = cache.grid(after, texts, [(3, 32)])[(3, 32)]
    assert (cache.hits, cache.misses) == (0, 1)
    assert np.abs(new - after.encode(texts, 3, 32)).max() < 1e-6 and np.abs(new - old).max() > 1e-3
