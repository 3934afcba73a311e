"""telescope.pipelines: getting texts into collections: batch ingest with progress, files and SQL sources.

Uses telescope.embedder to embed and telescope.index to store.
"""

from telescope.pipelines.ingest import IngestReport, ingest
from telescope.embedder.progress import progress_bar

__all__ = ["IngestReport", "ingest", "progress_bar"]
