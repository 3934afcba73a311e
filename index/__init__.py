"""telescope.index: collections on disk, searched coarse-to-fine over nested vector prefixes.

Owns the collection format (segments, WAL, atomic commits), the search plan, the FAISS stage one (GPU when
present) and the re-ranking stages, and the model version of every stored vector. It stores and searches float
vectors; it never computes them (no import of telescope.embedder).
"""

from telescope.index.collection import Collection, Hit, Point
from telescope.index.exact import exact_search
from telescope.index.plan import Plan, Stage
from telescope.index.stage_one import prefix_normalize

__all__ = ["Collection", "Hit", "Plan", "Point", "Stage", "exact_search", "prefix_normalize"]
