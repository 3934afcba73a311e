"""Which (layer, dim) points an evaluation covers, and at which prefix two models can be compared.

Grid specs (``--grid``):

- omitted or ``pairs``: the model's trained pairs (``ModelManifest.pairs``; for the packaged all-MiniLM-L6-v2
  (1,16) (2,32) (3,64) (4,128) (5,256) (6,384));
- ``full``: every layer x every dim in {16, 32, 64, 128, 256, D} that is at most D;
- ``1:16,3:64``: the points listed.

Cross-model comparison (a query model and a document model that differ, for a rollout) happens on the prefix the
two share, ``P``:

1. if either model's manifest says ``compatible_with`` the other model's id, ``P`` is that ``prefix_dim``;
2. if both are the same weights (same model hash), ``P`` is the full dim;
3. otherwise nothing is declared, and ``P = min(full dims)`` (the report says the prefix was not declared: such
   vectors are comparable only if the models were trained to be).

A point ``(l, d)`` then means: each model runs ``l`` layers and keeps its first ``d <= P`` coordinates. The
default cross-model grid is the query model's pairs with each dim cut to ``P`` and each layer to the shallower
model's depth.
"""

from __future__ import annotations

from dataclasses import dataclass

from telescope.embedder import Embedder

FULL_GRID_DIMS = (16, 32, 64, 128, 256)


@dataclass(frozen=True)
class SharedPrefix:
    dim: int
    rule: str  # "same model" | "declared by <id>" | "not declared: min full dim"


def shared_prefix(query: Embedder, doc: Embedder) -> SharedPrefix:
    """The prefix length on which ``query`` vectors are compared with ``doc`` vectors (rule in the module doc)."""
    for a, b in ((query, doc), (doc, query)):
        compat = a.manifest.compatible_with
        if compat is not None and compat.model_id in (b.manifest.id, b.manifest.tag):
            if compat.prefix_dim > min(query.full_dim, doc.full_dim):
                raise ValueError(
                    f"compatible_with.prefix_dim of {a.manifest.tag}: expected at most both full dims "
                    f"({query.full_dim}, {doc.full_dim}), got {compat.prefix_dim}"
                )
            return SharedPrefix(compat.prefix_dim, f"declared by {a.manifest.tag}")
    if query is doc or (query.path is not None and doc.path is not None and query.model_hash == doc.model_hash):
        return SharedPrefix(query.full_dim, "same model")
    return SharedPrefix(min(query.full_dim, doc.full_dim), "not declared: min full dim")


def parse_grid(spec: str | None, query: Embedder, doc: Embedder | None = None) -> list[tuple[int, int]]:
    """The points of ``spec`` (see the module doc), checked against both models; sorted, without repeats."""
    doc = doc or query
    prefix = shared_prefix(query, doc).dim
    depth = min(query.num_layers, doc.num_layers)
    spec = (spec or "pairs").strip()
    if spec == "pairs":
        points = [(min(layer, depth), min(dim, prefix)) for layer, dim in query.manifest.pairs]
    elif spec == "full":
        dims = sorted({d for d in FULL_GRID_DIMS if d < prefix} | {prefix})
        points = [(layer, dim) for layer in range(1, depth + 1) for dim in dims]
    else:
        points = []
        for part in [p.strip() for p in spec.split(",")]:
            layer, sep, dim = part.partition(":")
            if not sep or not layer.strip().isdigit() or not dim.strip().isdigit():
                raise ValueError(f"grid: expected 'pairs', 'full' or points 'layer:dim' separated by commas, got {spec!r}")
            points.append((int(layer), int(dim)))
    for layer, dim in points:
        if not 1 <= layer <= depth or not 1 <= dim <= prefix:
            models = query.manifest.tag if doc is query else f"{query.manifest.tag} and {doc.manifest.tag}"
            raise ValueError(
                f"grid: point {layer}:{dim} is outside the model ({models}): expected 1 <= layer <= {depth} "
                f"and 1 <= dim <= {prefix}"
            )
    return sorted(set(points))
