"""telescope.pipelines: getting texts into collections: batch ingest with progress, files and SQL sources.

``ingest``/``ingest_windows`` is the one embed-and-upsert loop; ``build.run_build`` is the batch job behind
``telescope index build`` (sources, bad-input checks, job state for resume and incremental runs, chunking,
Parquet shards, local or Ray encoder); ``documents.search_documents`` ranks documents by their best chunk.
Uses telescope.embedder to embed and telescope.index to store.
"""

from telescope.embedder.progress import progress_bar
from telescope.pipelines.ingest import IngestReport, LocalEncoder, ingest, ingest_windows

__all__ = ["IngestReport", "LocalEncoder", "ingest", "ingest_windows", "progress_bar"]
