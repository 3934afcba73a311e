"""The independent reference figure for retrieval: sentence-transformers' InformationRetrievalEvaluator.

The harness computes nDCG@10 with its own encoding path (early exit, ``Embedder.encode_grid``), its own ranking
(``telescope.index.exact_search``) and pytrec_eval. This module gets the same figure from another code path:
the model's own ``SentenceTransformer.encode`` and sentence-transformers' evaluator, on the same BEIR data, at the
model's full depth and dim. The evaluator counts relevance as binary (a judged document with score > 0 is
relevant), so the two agree only on binary qrels such as SciFact's; the report says which kind the data has.

The result is cached next to the embeddings (key: model hash, data hash) because it re-encodes the corpus.
"""

from __future__ import annotations

import time

from telescope.embedder import Embedder
from telescope.eval.cache import EmbeddingCache
from telescope.eval.datasets import BeirData


def st_information_retrieval(
    embedder: Embedder, data: BeirData, cache: EmbeddingCache | None = None, batch_size: int = 64
) -> dict:
    """nDCG@10, MRR@10 and Recall@100 x100 by sentence-transformers' evaluator; cached when ``cache`` is given."""
    key = f"st-ir-{embedder.model_hash}-{data.hash}-{batch_size}"
    if cache is not None and (hit := cache.get_json(key)) is not None:
        return hit | {"cached": True}
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

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
    )
    start = time.perf_counter()
    scores = evaluator(embedder.model)
    seconds = time.perf_counter() - start
    graded = any(grade > 1 for docs in data.qrels.values() for grade in docs.values())
    result = {
        "tool": "sentence_transformers InformationRetrievalEvaluator",
        "point": [embedder.num_layers, embedder.full_dim],
        "ndcg@10": 100 * scores["st_cosine_ndcg@10"],
        "mrr@10": 100 * scores["st_cosine_mrr@10"],
        "recall@100": 100 * scores["st_cosine_recall@100"],
        "qrels_graded": graded,
        "wall_s": round(seconds, 1),
    }
    if cache is not None:
        cache.put_json(key, result)
    return result | {"cached": False}
