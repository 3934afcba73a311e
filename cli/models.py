"""Which model embeds a collection's queries: recorded in the collection's properties at create time."""

from __future__ import annotations

from pathlib import Path

from telescope.embedder import DEFAULT_MODEL, Embedder, load_embedder
from telescope.index import Collection


def collection_model_properties(model: str) -> tuple[dict, int]:
    """The properties a new collection records for ``model``, and the model's full dim."""
    embedder = load_embedder(model)
    location = DEFAULT_MODEL if model == DEFAULT_MODEL else str(Path(model).resolve())
    return {"model": location, "model_version": embedder.manifest.tag}, embedder.full_dim


def collection_embedder(collection: Collection) -> Embedder:
    model = collection.properties.get("model")
    if model is None:
        raise ValueError(f"collection {str(collection.path)!r}: expected a 'model' property (create it with --model)")
    return load_embedder(model)
