"""TextBatcher: texts of concurrent calls share forward passes, each caller gets its own rows back, a caller
whose client is gone leaves the queue."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from telescope.server.batcher import TextBatcher
from telescope.server.errors import Abandoned


class GatedEmbedder:
    """Encodes text i as a one-hot-ish vector; its first pass waits for ``gate`` so that others queue up."""

    def __init__(self):
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.passes: list[list[str]] = []

    def encode(self, texts, layer=None, dim=None, batch_size=64):
        self.passes.append(list(texts))
        if len(self.passes) == 1:
            self.entered.set()
            assert self.gate.wait(30)
        return np.array([[float(len(t)), float(t.count("x")), 1.0] for t in texts], dtype=np.float32)


def expected(texts):
    return np.array([[float(len(t)), float(t.count("x")), 1.0] for t in texts], dtype=np.float32)


def test_concurrent_callers_share_a_pass_and_get_their_own_rows():
    embedder, batcher = GatedEmbedder(), TextBatcher(max_texts=64)
    results: dict[int, np.ndarray] = {}

    def call(i: int, texts: list[str]) -> None:
        results[i] = batcher.encode(embedder, texts, lambda: None)

    first = threading.Thread(target=call, args=(0, ["first"]))
    first.start()
    assert embedder.entered.wait(30)
    inputs = {i: ["x" * i, "y" * (i + 1)] for i in range(1, 9)}
    others = [threading.Thread(target=call, args=(i, texts)) for i, texts in inputs.items()]
    for t in others:
        t.start()
    while sum(len(q.items) for q in batcher._queues.values()) < 8:
        threading.Event().wait(0.01)
    embedder.gate.set()
    for t in [first, *others]:
        t.join(30)
    assert len(embedder.passes) == 2 and len(embedder.passes[1]) == 16  # eight callers, one pass
    np.testing.assert_array_equal(results[0], expected(["first"]))
    for i, texts in inputs.items():
        np.testing.assert_array_equal(results[i], expected(texts))


def test_a_caller_whose_client_left_leaves_the_queue():
    embedder, batcher = GatedEmbedder(), TextBatcher()
    first = threading.Thread(target=lambda: batcher.encode(embedder, ["first"], lambda: None))
    first.start()
    assert embedder.entered.wait(30)

    def gone():
        raise Abandoned("deadline: gone")

    with pytest.raises(Abandoned):
        batcher.encode(embedder, ["never embedded"], gone)
    embedder.gate.set()
    first.join(30)
    assert embedder.passes == [["first"]]


def test_max_texts_splits_passes_and_errors_reach_every_caller():
    class Failing:
        def encode(self, texts, **kw):
            raise ValueError("texts: boom")

    with pytest.raises(ValueError, match="boom"):
        TextBatcher().encode(Failing(), ["a"], lambda: None)
    embedder = GatedEmbedder()
    embedder.gate.set()
    out = TextBatcher(max_texts=2).encode(embedder, ["a", "bb", "ccc"], lambda: None)  # one caller over the cap
    np.testing.assert_array_equal(out, expected(["a", "bb", "ccc"]))


def test_concurrent_searches_share_one_collection_search_and_get_their_own_hits():
    from telescope.server.batcher import SearchBatcher

    class GatedCollection:
        """Answers query q with one hit whose id is q's first value; its first search waits for ``gate``."""

        def __init__(self):
            self.gate, self.entered = threading.Event(), threading.Event()
            self.calls: list[tuple] = []

        def search_records(self, queries, k, plan, where=None, model_version=None):
            self.calls.append((len(queries), k, plan, where, model_version))
            if len(self.calls) == 1:
                self.entered.set()
                assert self.gate.wait(30)
            return [[f"hit-{int(q[0])}"] for q in queries]

    collection, batcher = GatedCollection(), SearchBatcher()
    results: dict[int, list] = {}

    def call(i: int) -> None:
        results[i] = batcher.search(collection, [np.array([i, 1.0])], 10, "p", lambda: None, where={"a": 1}, key="x")

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert collection.entered.wait(30)
    others = [threading.Thread(target=call, args=(i,)) for i in range(1, 9)]
    for t in others:
        t.start()
    while sum(len(q.items) for q in batcher._queues.values()) < 8:
        threading.Event().wait(0.01)
    collection.gate.set()
    for t in [first, *others]:
        t.join(30)
    assert collection.calls == [(1, 10, "p", {"a": 1}, None), (8, 10, "p", {"a": 1}, None)]  # eight callers, one search
    assert results == {i: [[f"hit-{i}"]] for i in range(9)}
    assert (batcher.passes, batcher.items) == (2, 9)
