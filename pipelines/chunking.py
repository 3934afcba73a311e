"""Cutting long documents into overlapping windows of tokens, and the ids that map chunks back to documents.

The model's own (fast) tokenizer does the windowing: ``return_overflowing_tokens`` with ``stride`` yields
windows of at most ``max_tokens`` tokens, consecutive windows sharing ``overlap`` tokens, and its offset mapping
gives each window's span of the original text, so a chunk is a slice of the document (re-tokenising it gives
back the same tokens, and no text is rewritten).

A chunked document with id ``d`` is stored as points ``d#0``, ``d#1``, ...; each point's payload carries
``doc_id`` and ``chunk`` (see ``telescope.pipelines.documents`` for document-level search).
"""

from __future__ import annotations

from collections.abc import Sequence

CHUNK_SEP = "#"


def chunk_id(doc_id: str, index: int) -> str:
    return f"{doc_id}{CHUNK_SEP}{index}"


def check_chunking(max_tokens: int, overlap: int, model_max_tokens: int) -> None:
    """``max_tokens`` must leave room for the model's special tokens; ``overlap`` must be shorter than a chunk."""
    limit = model_max_tokens - 2
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= limit:
        raise ValueError(f"--chunk-tokens: expected an integer in 1..{limit} (the model's limit less 2 special tokens), got {max_tokens!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < max_tokens:
        raise ValueError(f"--chunk-overlap: expected an integer in 0..{max_tokens - 1} (less than --chunk-tokens), got {overlap!r}")


def chunk_texts(tokenizer, texts: Sequence[str], max_tokens: int, overlap: int) -> list[list[str]]:
    """The chunks of each text: the text itself when it fits in ``max_tokens`` tokens, else overlapping slices."""
    if not texts:
        return []
    enc = tokenizer(
        list(texts),
        add_special_tokens=False,
        truncation=True,
        max_length=max_tokens,
        stride=overlap,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    out: list[list[str]] = [[] for _ in texts]
    for window, doc in enumerate(enc["overflow_to_sample_mapping"]):
        offsets = [o for o in enc["offset_mapping"][window] if o[1] > o[0]]
        if offsets:
            out[doc].append(texts[doc][offsets[0][0] : offsets[-1][1]])
    return [chunks if len(chunks) > 1 else [text] for chunks, text in zip(out, texts)]
