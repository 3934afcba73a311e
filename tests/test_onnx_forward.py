"""The ONNX Runtime backend: the same vectors as torch at every (layer, dim), graphs cached by model hash."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from telescope.embedder import load_embedder
from telescope.embedder.onnx_forward import GRAPH_VERSION

TEXTS = [
    "a small dog runs in the park",
    "the stock market fell sharply today",
    "x",
    "a very long sentence " * 20,
    "",
    "glacier ice melts in the summer sun",
]
POINTS = [(1, 4), (2, 16), (3, 32), (4, 64)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("onnx-cache")
    monkeypatch_module.setenv("TELESCOPE_CACHE_DIR", str(root))
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_onnx_equals_torch_at_every_point(tiny_model_path, tiny_torch_embedder, cache):
    onnx = load_embedder(tiny_model_path, backend="onnx")
    assert onnx.backend == "onnx"
    onnx.encode(TEXTS, layer=1)
    assert not onnx.model.training  # exporting must leave the torch model in eval mode
    for layer, dim in POINTS:
        np.testing.assert_allclose(
            onnx.encode(TEXTS, layer=layer, dim=dim, batch_size=4),
            tiny_torch_embedder.encode(TEXTS, layer=layer, dim=dim, batch_size=4),
            atol=1e-5,
        )
    grid = onnx.encode_grid(TEXTS, POINTS, batch_size=3)
    reference = tiny_torch_embedder.encode_grid(TEXTS, POINTS, batch_size=3)
    for point in POINTS:
        np.testing.assert_allclose(grid[point], reference[point], atol=1e-5)


def test_graphs_are_cached_by_model_hash_and_reused(tiny_model_path, cache):
    first = load_embedder(tiny_model_path, backend="onnx")
    first.encode(TEXTS, layer=2)
    graph = cache / "onnx" / f"{first.model_hash}-g{GRAPH_VERSION}" / "fp32-L2.onnx"
    assert graph.is_file()
    stamp = graph.stat().st_mtime_ns
    again = load_embedder(tiny_model_path, backend="onnx")
    np.testing.assert_array_equal(again.encode(TEXTS, layer=2), first.encode(TEXTS, layer=2))
    assert graph.stat().st_mtime_ns == stamp  # read back, not exported again
    assert not [p for p in graph.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_int8_is_close_to_fp32(tiny_model_path, tiny_torch_embedder, cache):
    int8 = load_embedder(tiny_model_path, backend="onnx-int8")
    quantized = int8.encode(TEXTS, layer=4)
    exact = tiny_torch_embedder.encode(TEXTS, layer=4)
    assert quantized.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(quantized * exact, axis=1)) > 0.95
    assert (cache / "onnx" / f"{int8.model_hash}-g{GRAPH_VERSION}" / "int8-L4.onnx").is_file()


def test_concurrent_encodes_agree(tiny_model_path, cache):
    onnx = load_embedder(tiny_model_path, backend="onnx")
    expected = onnx.encode(TEXTS, layer=3)
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(onnx.encode(TEXTS, layer=3))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got in results:
        np.testing.assert_array_equal(got, expected)


def test_backend_from_environment_and_bad_names(tiny_model_path, monkeypatch):
    monkeypatch.setenv("TELESCOPE_BACKEND", "torch")
    assert load_embedder(tiny_model_path).backend == "torch"
    monkeypatch.setenv("TELESCOPE_BACKEND", "tensorrt")
    with pytest.raises(ValueError, match=r"backend: expected one of auto, torch, onnx, onnx-int8, got 'tensorrt'"):
        load_embedder(tiny_model_path)
    monkeypatch.delenv("TELESCOPE_BACKEND")
    assert load_embedder(tiny_model_path).backend == "auto"


def test_export_leaves_the_torch_attention_as_it_was(tiny_model_path, cache):
    onnx = load_embedder(tiny_model_path, backend="onnx")
    auto = onnx.model[0].auto_model
    before = auto.config._attn_implementation
    onnx.encode(TEXTS, layer=3)
    assert auto.config._attn_implementation == before
