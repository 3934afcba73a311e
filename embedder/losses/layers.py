"""Nested embeddings ``e(l, d)`` of every layer from one forward pass: the shared step of the layer-wise losses.

sentence-transformers' ``AdaptiveLayerLoss`` reaches shallow layers by decorating ``forward`` and calling the
base loss once per layer with cached hidden states. The Starbucks and 2DMSE-paper losses need several
(layer, dim) embeddings of the same batch at once (for the KL term between score matrices), so they run the
Transformer once with all hidden states and pool each asked layer with the model's own pooling module (mean
pooling, or multi-layer trainable pooling over the first ``l`` layers), here.

    e(l, d) = normalize(pool(h_1 .. h_l)[:d])
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from torch import Tensor


def transformer_with_hidden_states(model: SentenceTransformer, features: dict[str, Tensor]) -> dict[str, Tensor]:
    """Run the model's first module (the Transformer) with ``all_layer_embeddings`` in its output."""
    transformer = model[0]
    config = transformer.auto_model.config
    previous = config.output_hidden_states
    config.output_hidden_states = True
    try:
        out = transformer(dict(features))
    finally:
        config.output_hidden_states = previous
    if "all_layer_embeddings" not in out:
        raise ValueError(f"model: its first module {type(transformer).__name__} gave no hidden states")
    return out


def pool_layer(model: SentenceTransformer, out: dict[str, Tensor], layer: int) -> Tensor:
    """The sentence vector after ``layer`` blocks (``layer`` in 0..L), through every module after the Transformer.

    The pooling module sees ``token_embeddings = h_layer`` and ``all_layer_embeddings = (h_0 .. h_layer)``, the
    same features an early-exit forward pass cut after ``layer`` blocks gives it.
    """
    hidden = out["all_layer_embeddings"]
    features = {
        **out,
        "token_embeddings": hidden[layer],
        "all_layer_embeddings": tuple(hidden[: layer + 1]),
    }
    for module in list(model)[1:]:
        features = module(features)
    return features["sentence_embedding"]


def shrink(embedding: Tensor, dim: int) -> Tensor:
    """First ``dim`` coordinates, re-normalised to unit length."""
    return F.normalize(embedding[..., :dim], p=2, dim=-1)


def nested_embeddings(
    model: SentenceTransformer,
    sentence_features: Iterable[dict[str, Tensor]],
    points: Sequence[tuple[int, int]],
) -> dict[tuple[int, int], list[Tensor]]:
    """``{(l, d): [e(l, d) of each input column]}`` from one Transformer pass per column."""
    outs = [transformer_with_hidden_states(model, f) for f in sentence_features]
    layers = sorted({layer for layer, _ in points})
    pooled = {layer: [pool_layer(model, out, layer) for out in outs] for layer in layers}
    return {(layer, dim): [shrink(p, dim) for p in pooled[layer]] for layer, dim in points}


def num_layers(model: SentenceTransformer) -> int:
    return int(model[0].auto_model.config.num_hidden_layers)


def score_kl(student: list[Tensor], teacher: list[Tensor], temperature: float) -> Tensor:
    """KL(softmax(S_teacher / t).detach() || softmax(S_student / t)), batch mean, over in-batch score rows.

    ``S`` is the cosine score matrix of the first column (queries) against all other columns concatenated
    (positives then negatives): each row is the query's score distribution over the batch's documents. The
    teacher's scores are detached: the small embedding learns to rank like the full one, not the reverse.
    """
    s_student = student[0] @ torch.cat(student[1:]).T
    with torch.no_grad():
        s_teacher = teacher[0] @ torch.cat(teacher[1:]).T
    return F.kl_div(
        F.log_softmax(s_student / temperature, dim=-1),
        F.softmax(s_teacher / temperature, dim=-1),
        reduction="batchmean",
    )


def check_pairs(pairs: Sequence[tuple[int, int]], model: SentenceTransformer) -> list[tuple[int, int]]:
    """Validate (layer, dim) pairs against the model; raise naming the bad pair.

    Each pair is two integers (a float such as 1.5 is refused, not truncated) with ``1 <= layer <= L`` and
    ``1 <= dim <= D``; a pair given twice is refused (a loss summing over pairs would count it twice).
    """
    depth, full = num_layers(model), int(model.get_embedding_dimension())
    if not pairs:
        raise ValueError("pairs: expected at least one (layer, dim), got none")
    checked = []
    for pair in pairs:
        if not is_integer_pair(pair):
            raise ValueError(f"pairs: expected (layer, dim) tuples of two integers, got {pair!r}")
        layer, dim = int(pair[0]), int(pair[1])
        if not (1 <= layer <= depth and 1 <= dim <= full):
            raise ValueError(f"pairs: expected 1 <= layer <= {depth} and 1 <= dim <= {full}, got ({layer}, {dim})")
        if (layer, dim) in checked:
            raise ValueError(f"pairs: expected each (layer, dim) once, got ({layer}, {dim}) twice in {list(pairs)!r}")
        checked.append((layer, dim))
    return checked


def is_integer(value: object) -> bool:
    """An integer (``numbers.Integral``, not bool) or an integral float such as 16.0."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, float) and value.is_integer()


def is_integer_pair(pair: object) -> bool:
    return isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2 and all(map(is_integer, pair))
