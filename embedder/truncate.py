"""A model folder holding only the first ``layers`` transformer blocks of another model: a weaker, cheaper model.

Rollout experiments need an *old* model whose vectors fill a collection, distinct from the new one (its own
version tag, its own folder). The packaged model cut to 3 layers is such a model: its vectors equal the packaged
model's early exit at layer 3 (``Embedder.encode(texts, layer=3)``), because the kept blocks, embeddings and
pooling are the same weights. The folder is a plain sentence-transformers folder plus ``telescope.json``
(id ``<base id>-L<layers>``, version ``1``, objective ``truncated``, pairs cut to the kept layers).

Example::

    from telescope.embedder.truncate import save_truncated
    save_truncated("default", 3, "models/minilm-l3")   # then load_embedder("models/minilm-l3")
"""

from __future__ import annotations

from pathlib import Path

from telescope.embedder.manifest import ModelManifest
from telescope.embedder.model import load_embedder


def save_truncated(base: str | Path, layers: int, out: str | Path) -> ModelManifest:
    """Write ``base`` cut to its first ``layers`` blocks to ``out``; returns the new manifest."""
    embedder = load_embedder(base, device="cpu")
    depth = embedder.num_layers
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers < depth:
        raise ValueError(f"layers: expected an integer in 1..{depth - 1} (fewer than the base's {depth}), got {layers!r}")
    out = Path(out)
    if (out / "modules.json").exists():
        raise FileExistsError(f"out: {str(out)!r} already holds a model; choose another folder")
    blocks, owner, attr = embedder._block_owner()
    auto = embedder.model[0].auto_model
    setattr(owner, attr, blocks[:layers])
    auto.config.num_hidden_layers = layers
    try:
        embedder.model.save(str(out))
    finally:
        setattr(owner, attr, blocks)
        auto.config.num_hidden_layers = depth
    base_manifest = embedder.manifest
    manifest = ModelManifest(
        id=f"{base_manifest.id}-L{layers}",
        version="1",
        num_layers=layers,
        full_dim=embedder.full_dim,
        pairs=list(dict.fromkeys([p for p in base_manifest.pairs if p[0] < layers] + [(layers, embedder.full_dim)])),
        base_model=base_manifest.tag,
        objective="truncated",
        pooling=base_manifest.pooling,
        training={"truncated_from": base_manifest.tag, "kept_layers": layers},
    )
    manifest.save(out)
    return manifest
