"""telescope.eval: quality and speed of embeddings and search plans, measured with kept libraries.

Uses telescope.embedder and telescope.index. Modules, one job each:

- ``datasets``: STS (STS-B csv, TSV with header, SICK) and BEIR loaders, with errors naming file and line;
- ``grid``: which (layer, dim) points to evaluate, and the prefix two models share;
- ``cache``: document/sentence embeddings on disk, keyed by model hash and data hash;
- ``metrics``: pytrec_eval (nDCG@10, Recall@100, MRR@10) and scipy (Spearman) wrappers;
- ``sts`` / ``beir``: the two evaluations; ``plans``: recall@k and latency of search plans;
- ``crosscheck``: the reference figure from sentence-transformers' InformationRetrievalEvaluator;
- ``report``: JSON + markdown + PNG; ``run``: one run end to end (what ``telescope eval`` calls).
"""
