"""telescope.embedder: loading, early exit, prefixes, manifest, bad input."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from telescope.embedder import ModelManifest, load_embedder

TEXTS = ["a cat sits on the mat", "stock markets fell sharply today", "the quick brown fox", "hello"]


def test_encode_is_unit_float32_at_every_point(tiny_embedder):
    for layer in range(1, tiny_embedder.num_layers + 1):
        for dim in (4, 16, tiny_embedder.full_dim):
            v = tiny_embedder.encode(TEXTS, layer=layer, dim=dim)
            assert v.dtype == np.float32 and v.shape == (len(TEXTS), dim)
            np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_prefix_is_renormalised_cut_of_full_vector(tiny_embedder):
    full = tiny_embedder.encode(TEXTS, layer=2)
    cut = tiny_embedder.encode(TEXTS, layer=2, dim=8)
    expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-5)


def test_early_exit_equals_hidden_state_of_that_layer(tiny_embedder):
    """encode(layer=l) is the mean-pooled output of block l, computed without running later blocks."""
    model = tiny_embedder.model
    features = model.preprocess(TEXTS)
    bert = model[0].auto_model
    with torch.inference_mode():
        hidden = bert(
            input_ids=features["input_ids"], attention_mask=features["attention_mask"], output_hidden_states=True
        ).hidden_states
    mask = features["attention_mask"].unsqueeze(-1).float()
    for layer in (1, 3):
        pooled = (hidden[layer] * mask).sum(1) / mask.sum(1)
        expected = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        np.testing.assert_allclose(tiny_embedder.encode(TEXTS, layer=layer), expected, atol=1e-5)


def test_early_exit_runs_only_the_first_blocks(tiny_torch_embedder):
    tiny_embedder = tiny_torch_embedder
    calls = []
    blocks = tiny_embedder.model[0].auto_model.encoder.layer
    hooks = [b.register_forward_hook(lambda m, i, o, n=n: calls.append(n)) for n, b in enumerate(blocks)]
    try:
        tiny_embedder.encode(TEXTS, layer=2)
    finally:
        for h in hooks:
            h.remove()
    assert sorted(set(calls)) == [0, 1]
    assert len(tiny_embedder.model[0].auto_model.encoder.layer) == tiny_embedder.num_layers  # restored


def test_shallow_first_call_does_not_hide_deeper_layers(tiny_model_path, tiny_torch_embedder):
    """A fresh model whose first encode exits early still gives every deeper layer afterwards."""
    fresh = load_embedder(tiny_model_path, backend="torch")
    fresh.encode(TEXTS, layer=1)
    for layer in range(2, fresh.num_layers + 1):
        np.testing.assert_allclose(
            fresh.encode(TEXTS, layer=layer), tiny_torch_embedder.encode(TEXTS, layer=layer), atol=1e-6
        )


def test_default_layer_is_the_last_while_another_thread_exits_early(tiny_torch_embedder):
    """Early exit cuts the block list during a forward pass; a concurrent call that asks for the default (last)
    layer, or checks a layer against the depth, must still see the model's full depth (the server encodes from
    many threads)."""
    import threading

    embedder = tiny_torch_embedder
    expected = embedder.encode(TEXTS)
    stop = threading.Event()

    def shallow() -> None:
        while not stop.is_set():
            embedder.encode(TEXTS, layer=1)

    worker = threading.Thread(target=shallow)
    worker.start()
    try:
        for _ in range(30):
            assert embedder.check_point(None, None) == (4, 64)
            np.testing.assert_allclose(embedder.encode(TEXTS), expected, atol=1e-5)
    finally:
        stop.set()
        worker.join()


def test_encode_grid_matches_encode(tiny_embedder):
    points = [(1, 8), (2, 16), (4, 64)]
    grid = tiny_embedder.encode_grid(TEXTS * 5, points, batch_size=3)
    for layer, dim in points:
        np.testing.assert_allclose(grid[(layer, dim)], tiny_embedder.encode(TEXTS * 5, layer=layer, dim=dim), atol=1e-5)


def test_empty_input_gives_zero_rows(tiny_embedder):
    assert tiny_embedder.encode([], dim=16).shape == (0, 16)
    assert tiny_embedder.encode([]).shape == (0, tiny_embedder.full_dim)


@pytest.mark.parametrize(
    "texts, kwargs, message",
    [
        (["ok", None], {}, r"texts\[1\]: expected a string, got NoneType"),
        (["ok", 3], {}, r"texts\[1\]: expected a string, got int"),
        ("just a string", {}, "texts: expected a list of strings, got str"),
        (["ok"], {"layer": 0}, r"layer: expected an integer in 1\.\.4, got 0"),
        (["ok"], {"layer": 5}, r"layer: expected an integer in 1\.\.4, got 5"),
        (["ok"], {"dim": 65}, r"dim: expected an integer in 1\.\.64, got 65"),
        (["ok"], {"dim": 0}, r"dim: expected an integer in 1\.\.64, got 0"),
        (["ok"], {"dim": 2.5}, r"dim: expected an integer in 1\.\.64, got 2\.5"),
    ],
)
def test_bad_input_names_the_allowed_values(tiny_embedder, texts, kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        tiny_embedder.encode(texts, **kwargs)


def test_count_truncated_counts_tokens_not_characters(tiny_embedder, monkeypatch):
    """A byte-level BPE tokenizer gives a character of several UTF-8 bytes several tokens: a text shorter than
    the limit in characters can still be cut."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    byte_level = PreTrainedTokenizerFast(tokenizer_object=tok)
    monkeypatch.setattr(type(tiny_embedder), "tokenizer", property(lambda self: byte_level))
    limit = tiny_embedder.max_seq_length
    texts = ["é" * (limit // 2 + 1), "a" * (limit - 2), "é" * (limit // 2 - 1)]  # 2 bytes, 2 tokens per é
    assert list(tiny_embedder.token_lengths(texts)) == [limit + 2, limit - 2, limit - 2]
    assert tiny_embedder.count_truncated(texts) == 1


def test_long_texts_are_truncated_and_counted(tiny_embedder):
    before = tiny_embedder.truncated_texts
    long_text = "word " * 1000
    v = tiny_embedder.encode([long_text, "short"])
    assert v.shape == (2, tiny_embedder.full_dim)
    assert tiny_embedder.truncated_texts - before == 1


def test_manifest_round_trip_and_load(tiny_model_path, tmp_path):
    e = load_embedder(tiny_model_path)
    assert e.manifest.id == "tiny-bert" and e.manifest.tag == "tiny-bert:1"
    m = ModelManifest(id="x", version="2", num_layers=4, full_dim=64, pairs=[(1, 8), (4, 64)], objective="mrl",
                      compatible_with={"model_id": "old", "prefix_dim": 32})
    m.save(tmp_path)
    assert ModelManifest.load(tmp_path) == m
    with pytest.raises(ValueError, match=r"pairs: expected \(layer, dim\).*got \(5, 8\)"):
        ModelManifest(id="x", version="1", num_layers=4, full_dim=64, pairs=[(5, 8)])


def _copy_with_manifest(tiny_model_path, tmp_path, **changes):
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_path, folder)
    manifest = json.loads((folder / "telescope.json").read_text())
    (folder / "telescope.json").write_text(json.dumps({**manifest, **changes}))
    return folder


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"full_dim": 32, "pairs": [[1, 8]]}, r"full_dim: expected 64 \(the model's embedding dim\), got 32"),
        ({"num_layers": 6}, r"num_layers: expected 4 \(the model's transformer blocks\), got 6"),
    ],
)
def test_manifest_that_disagrees_with_the_model_is_refused(tiny_model_path, tmp_path, changes, message):
    """A telescope.json describing another model (hand-edited, copied beside the wrong weights) must not load:
    its pairs and dims would be used for grids and collections the model cannot produce."""
    folder = _copy_with_manifest(tiny_model_path, tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        load_embedder(folder, backend="torch")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[]", r"expected a JSON object, got list"),
        ('{"id": "x", "version": "1", "num_layers": "4", "full_dim": 64, "pairs": [[1, 8]]}',
         r"num_layers: expected an integer >= 1, got '4'"),
        ('{"id": "x", "version": "1", "num_layers": 4, "full_dim": 64, "pairs": [[1]]}',
         r"pairs: expected \(layer, dim\) pairs of integers, got \[1\]"),
        ('{"id": "x", "version": "1", "num_layers": 4, "full_dim": 64, "pairs": null}',
         r"pairs: expected a list of \(layer, dim\) pairs, got None"),
    ],
)
def test_corrupt_manifest_errors_name_the_field(tmp_path, text, message):
    (tmp_path / "telescope.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        ModelManifest.load(tmp_path)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_embedder(tmp_path / "nope")


def test_folder_without_a_model_is_a_clear_error(tmp_path):
    """A folder that exists but holds no model (a typo'd parent folder) names what was expected and what is there."""
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(FileNotFoundError, match=r"model: expected 'default' or a sentence-transformers folder.*"
                       r"no modules\.json or config\.json"):
        load_embedder(tmp_path)


def test_default_model_loads_offline_and_describes_itself(default_embedder):
    m = default_embedder.manifest
    assert (m.id, m.num_layers, m.full_dim) == ("all-MiniLM-L6-v2", 6, 384)
    assert m.pairs == [(1, 16), (2, 32), (3, 64), (4, 128), (5, 256), (6, 384)]
    v = default_embedder.encode(["a man is playing a guitar", "someone plays the guitar", "the stock market crashed"])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_model_hash_covers_the_vocabulary_a_tokenizer_is_built_from(tmp_path):
    from telescope.embedder.model import folder_hash

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "vocab.txt").write_text("[PAD]\na\n")
    (tmp_path / "spm.model").write_bytes(b"\x00\x01")
    (tmp_path / "README.md").write_text("about")
    first = folder_hash(tmp_path)
    (tmp_path / "README.md").write_text("about, edited")
    assert folder_hash(tmp_path) == first  # not read by the model
    (tmp_path / "vocab.txt").write_text("[PAD]\nb\n")
    second = folder_hash(tmp_path)
    assert second != first  # no tokenizer.json: the vocabulary decides the token ids
    (tmp_path / "spm.model").write_bytes(b"\x00\x02")
    assert folder_hash(tmp_path) != second
    (tmp_path / "tokenizer.json").write_text('{"model": {}}')
    fast = folder_hash(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\nc\n")
    assert folder_hash(tmp_path) == fast  # a fast tokenizer is built from tokenizer.json alone
    (tmp_path / "tokenizer.json").write_text('{"model": {"vocab": 1}}')
    assert folder_hash(tmp_path) != fast
