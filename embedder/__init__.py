"""telescope.embedder: models that embed text at any (layer, dim) grid point.

Owns loading (the packaged default model or any sentence-transformers folder), encoding with real early exit
and re-normalised prefixes, and the model manifest ``telescope.json``. Nothing here reaches a model hub:
``HF_HUB_OFFLINE=1`` is set before sentence-transformers is first imported.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from telescope.embedder.manifest import CompatibleWith, ModelManifest  # noqa: E402
from telescope.embedder.model import DEFAULT_MODEL, Embedder, load_embedder  # noqa: E402

__all__ = ["CompatibleWith", "DEFAULT_MODEL", "Embedder", "ModelManifest", "load_embedder"]
