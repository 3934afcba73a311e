"""The independent reference figure for retrieval: sentence-transformers' InformationRetrievalEvaluator.

The harness computes nDCG@10 with its own encoding path (early exit, ``Embedder.encode_grid``), its own ranking
(``telescope.index.exact_search``) and pytrec_eval. Here sentence-transformers' evaluator gets the figure on the
same data at the model's full depth and dim, with its own query encoding (``SentenceTransformer.encode``), its
own ranking and its own metric code.

The document side: re-encoding a corpus costs minutes (SciFact ~200 s on 2 idle cores), so the evaluator is
given the harness's document vectors (``corpus_embeddings``), and the two encoding paths are compared instead on
an evenly spaced sample of documents that sentence-transformers encodes itself: the report gives the smallest
cosine between the two (1.0 up to float error when the paths agree). ``sample=None`` re-encodes the whole corpus
with sentence-transformers (fully independent, slow).

The evaluator counts relevance as binary (a judged document with score > 0 is relevant), so the two nDCG@10
figures must agree only on binary qrels such as SciFact's; the result says whether the qrels are graded. It also
leaves out the queries that have no relevant document (every judgement 0), which this harness counts as 0 as BEIR
does: the result counts them, and the two figures are comparable only when there are none.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from telescope.embedder import Embedder
from telescope.eval.cache import EmbeddingCache
from telescope.eval.datasets import BeirData

DEFAULT_SAMPLE = 256


def st_information_retrieval(
    embedder: Embedder,
    data: BeirData,
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    sample: int | None = DEFAULT_SAMPLE,
) -> dict:
    """nDCG@10, MRR@10 and Recall@100 x100 by sentence-transformers' evaluator at (last layer, full dim)."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    start = time.perf_counter()
    point = (embedder.num_layers, embedder.full_dim)
    result: dict = {"tool": "sentence_transformers InformationRetrievalEvaluator", "point": list(point)}
    corpus_embeddings = None
    if sample is not None:
        cache = cache or EmbeddingCache(None)
        ours = cache.grid(embedder, data.doc_texts, [point], batch_size)[point]
        corpus_embeddings = torch.from_numpy(ours)
        picked = np.linspace(0, len(data.doc_texts) - 1, num=min(sample, len(data.doc_texts))).round().astype(int)
        theirs = embedder.model.encode(
            [data.doc_texts[i] for i in picked], batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        cosines = np.einsum("ij,ij->i", theirs.astype(np.float32), ours[picked])
        result |= {"documents": "harness vectors", "documents_sampled": len(picked), "min_cosine_vs_st_encode": float(cosines.min())}
    else:
        result |= {"documents": "encoded by sentence-transformers"}

    relevant = {q: {d for d, grade in docs.items() if grade > 0} for q, docs in data.qrels.items()}
    evaluator = InformationRetrievalEvaluator(
        queries=dict(zip(data.query_ids, data.query_texts)),
        corpus=dict(zip(data.doc_ids, data.doc_texts)),
        relevant_docs=relevant,
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1],
        precision_recall_at_k=[100],
        map_at_k=[100],
        batch_size=batch_size,
        show_progress_bar=True,
        write_csv=False,
        name="st",
        score_functions={"cosine": cos_sim},
    )
    scores = evaluator.compute_metrices(embedder.model, corpus_embeddings=corpus_embeddings)["cosine"]
    graded = any(grade > 1 for docs in data.qrels.values() for grade in docs.values())
    return result | {
        "queries_without_relevant": sum(1 for docs in relevant.values() if not docs),
        "ndcg@10": 100 * float(scores["ndcg@k"][10]),
        "mrr@10": 100 * float(scores["mrr@k"][10]),
        "recall@100": 100 * float(scores["recall@k"][100]),
        "qrels_graded": graded,
        "wall_s": round(time.perf_counter() - start, 1),
    }
