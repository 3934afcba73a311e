"""Which model embeds a collection's queries: recorded in the collection's properties at create time."""

from __future__ import annotations

from telescope.embedder import Embedder, load_embedder
from telescope.embedder.model import model_location
from telescope.index import Collection


def collection_model_properties(model: str, layer: int | None = None, embedder: Embedder | None = None) -> tuple[dict, int]:
    """The properties a new collection records for ``model`` (its vectors taken after ``layer``, default the
    last), and the model's full dim; ``embedder``: ``model`` loaded already."""
    from telescope.pipelines.ingest import layer_properties

    embedder = embedder or load_embedder(model)
    location = model_location(model)
    props = {"model": location, "model_version": embedder.manifest.tag, **layer_properties(embedder, layer)}
    return props, embedder.full_dim


def collection_embedder(collection: Collection) -> Embedder:
    model = collection.properties.get("model")
    if model is None:
        raise ValueError(f"collection {str(collection.path)!r}: expected a 'model' property (create it with --model)")
    return load_embedder(model)
