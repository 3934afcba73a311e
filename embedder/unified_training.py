"""Contrastive training of fused towers (``telescope train --objective unified``), and the one training loop.

The categorical side is Unified Embedding (Coleman et al., NeurIPS 2023): feature f of value v is
E_f(v) = concat_{j<k_f} W_{j mod T}[h_{f,j}(v) mod B]; telescope.embedder.fused puts it as a tail after the text
vector. The text model stays frozen (its vectors, and so every text prefix in a collection, are unchanged);
the tables, the tail MLP and the mix angle learn.

Loss: softmax cross-entropy of each query against its positive, with the batch's other positives and
``negatives`` documents drawn uniformly from all documents as negatives (the sampled softmax of two-tower
retrieval; sentence-transformers' MultipleNegativesRankingLoss when ``negatives=0``):

    L = -log( exp(s * <q, d+>) / sum_{d in candidates} exp(s * <q, d>) )      s = ``scale`` (1 / temperature)

Duplicated documents in a batch are scored once, so a query is never pushed away from its own positive.
sentence-transformers trains SentenceTransformer modules on texts; these towers take precomputed text vectors
and hashed bags, hence this small loop. ``train_towers`` serves both the CLI (one symmetric tower) and the
MovieLens benchmark (a user tower and an item tower).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from telescope.embedder.fused import FusedModel, FusedTower, lookup_payloads
from telescope.embedder.unified import (
    Bags,
    CategoricalEmbedding,
    CollisionFreeEmbedding,
    FeatureSpec,
    PerFeatureHashedEmbedding,
    UnifiedEmbedding,
    bag_tokens,
)


@dataclass
class TowerInputs:
    """What a tower reads for n examples: text vectors (or None) and each field's bags."""

    text: torch.Tensor | None
    bags: dict[str, Bags]

    def select(self, idx: torch.Tensor) -> "TowerInputs":
        return TowerInputs(None if self.text is None else self.text[idx], {k: b.select(idx) for k, b in self.bags.items()})

    def __len__(self) -> int:
        return len(next(iter(self.bags.values())))


def train_towers(
    query_tower: FusedTower,
    doc_tower: FusedTower,
    queries: TowerInputs,
    docs: TowerInputs,
    pairs: np.ndarray,
    *,
    epochs: int = 5,
    batch_size: int = 512,
    negatives: int = 0,
    scale: float = 20.0,
    lr: float = 1e-2,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[float]:
    """Train on (query index, doc index) ``pairs``; returns the mean loss of each epoch."""
    pairs = np.asarray(pairs, dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) == 0:
        raise ValueError(f"pairs: expected a non-empty (m, 2) array of (query, doc) indices, got shape {pairs.shape}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    if isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 0:
        raise ValueError(f"negatives: expected an integer >= 0, got {negatives!r}")
    if not scale > 0 or not lr > 0:
        raise ValueError(f"scale and lr: expected positive numbers, got scale={scale!r}, lr={lr!r}")
    params = list(dict.fromkeys([*query_tower.parameters(), *doc_tower.parameters()]))
    optimizer = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(seed)
    n_docs = len(docs)
    losses = []
    query_tower.train()
    doc_tower.train()
    for epoch in range(epochs):
        start, total, steps = time.perf_counter(), 0.0, 0
        order = rng.permutation(len(pairs))
        for b in range(0, len(order), batch_size):
            batch = pairs[order[b : b + batch_size]]
            extra = rng.integers(0, n_docs, size=negatives) if negatives else np.zeros(0, dtype=np.int64)
            candidates, inverse = np.unique(np.concatenate([batch[:, 1], extra]), return_inverse=True)
            target = torch.from_numpy(inverse[: len(batch)])
            q = query_tower(*_args(queries.select(torch.from_numpy(batch[:, 0]))))
            d = doc_tower(*_args(docs.select(torch.from_numpy(candidates))))
            loss = F.cross_entropy(scale * q @ d.T, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            steps += 1
        losses.append(total / steps)
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f} ({time.perf_counter() - start:.1f} s)")
    query_tower.eval()
    doc_tower.eval()
    return losses


def _args(inputs: TowerInputs) -> tuple[torch.Tensor | None, dict[str, Bags]]:
    return inputs.text, inputs.bags


def encode_towers(tower: FusedTower, inputs: TowerInputs, batch_size: int = 4096) -> np.ndarray:
    """Unit fused vectors of all ``inputs``, float32."""
    out = []
    with torch.inference_mode():
        for b in range(0, len(inputs), batch_size):
            idx = torch.arange(b, min(b + batch_size, len(inputs)))
            out.append(tower(*_args(inputs.select(idx))))
    return torch.cat(out).numpy().astype(np.float32)


# -- the CLI's objective: pairs of (text + fields) ----------------------------------------------------------------
def build_categorical(
    kind: str, features: Sequence[FeatureSpec], chunk_dim: int, *, rows: int | None = None, budget_bytes: int | None = None,
    values: Mapping[str, Sequence[object]] | None = None, num_tables: int = 1, seed: int = 0,
    allocation: str = "proportional",
) -> CategoricalEmbedding:
    """One of the three categorical modules. ``values`` (every value seen per feature) sizes per-feature tables
    and is the collision-free vocabulary; ``rows`` (per table) or ``budget_bytes`` sizes the hashed ones
    (``allocation``: how per-feature tables split a budget, see PerFeatureHashedEmbedding.for_budget)."""
    if kind == "unified":
        if rows is not None:
            return UnifiedEmbedding(features, chunk_dim, rows, num_tables, seed)
        if budget_bytes is None:
            raise ValueError("unified: expected rows or budget_bytes, got neither")
        return UnifiedEmbedding.for_budget(features, chunk_dim, budget_bytes, num_tables, seed)
    vocab = _vocabulary(features, values or {})
    if kind == "per_feature":
        if budget_bytes is None:
            if rows is None:
                raise ValueError("per_feature: expected rows or budget_bytes, got neither")
            return PerFeatureHashedEmbedding(features, chunk_dim, {f.name: rows for f in features}, seed)
        return PerFeatureHashedEmbedding.for_budget(
            features, chunk_dim, budget_bytes, {n: max(1, len(v)) for n, v in vocab.items()}, seed, allocation
        )
    if kind == "collision_free":
        return CollisionFreeEmbedding(features, chunk_dim, {n: v or ["<none>"] for n, v in vocab.items()}, seed=seed)
    raise ValueError(f"kind: expected 'unified', 'per_feature' or 'collision_free', got {kind!r}")


def _vocabulary(features: Sequence[FeatureSpec], values: Mapping[str, Sequence[object]]) -> dict[str, list[str]]:
    vocab = {}
    for f in features:
        tokens: dict[str, None] = {}
        for v in values.get(f.name, ()):
            tokens.update(dict.fromkeys(bag_tokens(f, v)))
        vocab[f.name] = list(tokens)
    return vocab


def train_unified(
    table: pa.Table,
    out: str | Path,
    features: Sequence[FeatureSpec],
    *,
    text_model: str | Path = "default",
    kind: str = "unified",
    chunk_dim: int = 16,
    rows: int = 4096,
    num_tables: int = 1,
    tail_dim: int = 64,
    epochs: int = 3,
    batch_size: int = 256,
    lr: float = 1e-2,
    scale: float = 20.0,
    seed: int = 0,
    model_id: str = "fused",
    version: str = "1",
    source: str = "",
    log: Callable[[str], None] | None = None,
) -> FusedModel:
    """Train a fused model on a table of pairs and save it to ``out``.

    The table (the CLI reads JSONL, CSV/TSV or Parquet with telescope.pipelines.sources) has text columns
    ``anchor`` and ``positive``; a field whose metadata column is ``c`` is read from ``anchor_c`` and
    ``positive_c`` (a side without the column has the field missing; a field with neither column is refused). One
    symmetric tower embeds both sides; negatives are the other positives of the batch. ``source`` names the data in
    the saved training record.
    """
    from telescope.embedder.model import load_embedder

    torch.manual_seed(seed)
    for column in ("anchor", "positive"):
        if column not in table.column_names:
            raise ValueError(f"{column}: expected a text column named {column!r}, got columns {table.column_names}")
    features = list(features)
    for f in features:  # a misspelt field would train as always missing, then read a real column when serving
        if f"anchor_{f.source}" not in table.column_names and f"positive_{f.source}" not in table.column_names:
            raise ValueError(
                f"field {f.name!r}: expected a column anchor_{f.source} or positive_{f.source}, got columns {table.column_names}"
            )
    sides = {}
    for side in ("anchor", "positive"):
        payloads = [{} for _ in range(table.num_rows)]
        for f in features:
            column = f"{side}_{f.source}"
            if column in table.column_names:
                for p, v in zip(payloads, table.column(column).to_pylist()):
                    p[f.source] = v
        sides[side] = payloads
    if not any(f"anchor_{f.source}" in table.column_names for f in features):
        raise ValueError(f"fields: no anchor_<column> for any of {[f.source for f in features]}: the tail would never change a score")
    values = {f.name: [p.get(f.source) for s in sides.values() for p in s] for f in features}
    categorical = build_categorical(kind, features, chunk_dim, rows=rows, values=values, num_tables=num_tables, seed=seed)
    embedder = load_embedder(text_model)
    tower = FusedTower(categorical, [f.name for f in features], embedder.full_dim, tail_dim)
    inputs = {}
    for side in ("anchor", "positive"):
        texts = table.column(side).to_pylist()
        text = torch.from_numpy(embedder.encode(texts))
        inputs[side] = TowerInputs(text, lookup_payloads(categorical, tower.fields, sides[side]))
    n = table.num_rows
    both = TowerInputs(
        torch.cat([inputs["anchor"].text, inputs["positive"].text]),
        {k: _concat_bags(inputs["anchor"].bags[k], inputs["positive"].bags[k]) for k in tower.fields},
    )
    pairs = np.stack([np.arange(n), np.arange(n) + n], axis=1)
    losses = train_towers(tower, tower, both, both, pairs, epochs=epochs, batch_size=batch_size, lr=lr, scale=scale, seed=seed, log=log)
    training = {
        "objective": "unified", "source": source, "examples": n, "kind": kind, "chunk_dim": chunk_dim,
        "rows": rows, "num_tables": num_tables, "tail_dim": tail_dim, "epochs": epochs, "batch_size": batch_size,
        "lr": lr, "scale": scale, "seed": seed, "losses": losses, "parameter_bytes": categorical.parameter_bytes,
    }
    model = FusedModel(embedder, tower, model_id, version, training)
    model.save(out)
    return model


def _concat_bags(a: Bags, b: Bags) -> Bags:
    width = max(a.rows.shape[1], b.rows.shape[1])

    def pad(x: Bags) -> Bags:
        extra = width - x.rows.shape[1]
        return Bags(F.pad(x.rows, (0, 0, 0, extra)), F.pad(x.weights, (0, extra)))

    a, b = pad(a), pad(b)
    return Bags(torch.cat([a.rows, b.rows]), torch.cat([a.weights, b.weights]))
