"""Batches for the embedder's forward pass: at most ``batch_size`` texts and ``MAX_BATCH_TOKENS`` padded tokens each.

Texts come sorted by token length, longest first, so a batch's padded size is ``count x length of its first text``.
A batch grows while ``(count + 1) x first_length <= MAX_BATCH_TOKENS`` and ``count < batch_size`` (always at
least one text). Short texts therefore go in batches of ``batch_size`` and long ones in small batches: on 2 CPU
cores the default model's forward pass on 240-token SciFact passages ran at 17.5 passages/s in batches of 4-8
and 12-15 passages/s in batches of 16-64 (attention and activations of a big batch of long texts leave the
cache), while 18-token glosses ran at the same ~230 texts/s in batches of 16 to 64.

Why by hand: sentence-transformers' ``encode`` batches a fixed number of texts, whatever their length.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

MAX_BATCH_TOKENS = 1024


def token_budget_batches(
    sorted_lengths: np.ndarray, batch_size: int, max_tokens: int = MAX_BATCH_TOKENS
) -> Iterator[slice]:
    """Slices of ``sorted_lengths`` (token counts, longest first, already cut to the model's limit), one per batch."""
    start, total = 0, len(sorted_lengths)
    while start < total:
        fits = max(1, max_tokens // max(int(sorted_lengths[start]), 1))
        stop = min(total, start + min(batch_size, fits))
        yield slice(start, stop)
        start = stop
