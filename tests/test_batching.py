"""Token-budget batches: long texts in small batches, short ones in batches of ``batch_size``, none lost."""

from __future__ import annotations

import numpy as np
import pytest

from telescope.embedder.batching import token_budget_batches


def sizes(lengths, batch_size, max_tokens):
    batches = list(token_budget_batches(np.array(lengths), batch_size, max_tokens))
    covered = [i for b in batches for i in range(b.start, b.stop)]
    assert covered == list(range(len(lengths)))  # every text once, in order
    return [b.stop - b.start for b in batches]


def test_long_texts_get_small_batches_and_short_ones_full_batches():
    assert sizes([256] * 10 + [16] * 100, batch_size=64, max_tokens=1024) == [4, 4, 4, 64, 34]


def test_a_text_over_the_budget_goes_alone():
    assert sizes([5000, 5000, 3], batch_size=8, max_tokens=1024) == [1, 1, 1]


def test_padding_follows_the_first_text_of_each_batch():
    # 300 tokens x 3 = 900 <= 1024; the fourth would make 1200
    assert sizes([300, 10, 10, 10, 10], batch_size=64, max_tokens=1024) == [3, 2]


@pytest.mark.parametrize("lengths", [[], [0, 0]])
def test_empty_input_and_empty_texts(lengths):
    assert sum(sizes(lengths, batch_size=4, max_tokens=16)) == len(lengths)


def test_windows_sort_by_the_given_lengths_else_by_characters():
    import pyarrow as pa

    from telescope.pipelines.ingest import by_length

    window = pa.table({"text": ["aaaa", "b", "cc"]})
    assert by_length(window).column("text").to_pylist() == ["aaaa", "cc", "b"]
    assert by_length(window, np.array([1, 7, 3])).column("text").to_pylist() == ["b", "cc", "aaaa"]


def test_known_lengths_are_used_and_checked(tiny_embedder):
    texts = ["a short one", "a somewhat longer text than the first", "x"]
    lengths = tiny_embedder.token_lengths(texts)
    np.testing.assert_array_equal(tiny_embedder.encode(texts, lengths=lengths), tiny_embedder.encode(texts))
    with pytest.raises(ValueError, match="lengths: expected one token count per text"):
        tiny_embedder.encode(texts, lengths=lengths[:2])
