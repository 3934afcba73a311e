"""Where stage one runs: CPU by default, GPU where FAISS has GPUs; a GPU search drops deleted rows itself."""

from __future__ import annotations

import numpy as np
import pytest

from telescope.index.stage_one import StageOne, faiss_gpus, prefix_normalize, search_dropping_dead, stage_one_device


def _vectors(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("deleted", [0, 7, 150, 199])
def test_dropping_dead_rows_equals_the_selector_search(deleted):
    """The over-fetch-and-drop search a GPU index needs gives the rows and scores of FAISS's IDSelector search."""
    stage = StageOne(16, "Flat")
    stage.add(_vectors(200, 32, 0))
    alive = np.ones(200, bool)
    alive[np.random.default_rng(1).choice(200, deleted, replace=False)] = False
    queries = _vectors(5, 32, 2)
    for k in (1, 10, 60):
        want_scores, want_rows = stage.search(queries, k, alive)
        got_scores, got_rows = search_dropping_dead(stage.index, prefix_normalize(queries, 16), k, alive)
        np.testing.assert_array_equal(got_rows, want_rows)
        live = want_rows >= 0
        np.testing.assert_allclose(got_scores[live], want_scores[live], atol=1e-6)
        assert np.all(alive[got_rows[got_rows >= 0]])


def test_device_follows_the_environment(monkeypatch):
    monkeypatch.setenv("TELESCOPE_FAISS_DEVICE", "cpu")
    assert stage_one_device() == "cpu"
    monkeypatch.setenv("TELESCOPE_FAISS_DEVICE", "tpu")
    with pytest.raises(ValueError, match=r"TELESCOPE_FAISS_DEVICE: expected one of auto, cpu, gpu, got 'tpu'"):
        stage_one_device()
    monkeypatch.delenv("TELESCOPE_FAISS_DEVICE")
    assert stage_one_device() == ("gpu" if faiss_gpus() else "cpu")
    assert StageOne(8, "HNSW32").device == "cpu"  # no GPU HNSW in FAISS


@pytest.mark.skipif(faiss_gpus() > 0, reason="checks the error on a machine without FAISS GPUs")
def test_asking_for_a_gpu_without_one_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TELESCOPE_FAISS_DEVICE", "gpu")
    with pytest.raises(ValueError, match="expected a FAISS build with GPUs"):
        stage_one_device()


@pytest.mark.skipif(faiss_gpus() == 0, reason="needs FAISS with GPUs (pip install 'telescope[gpu]' on a GPU machine)")
def test_gpu_stage_one_equals_cpu(monkeypatch):
    vectors, queries = _vectors(5000, 64, 3), _vectors(20, 64, 4)
    alive = np.ones(5000, bool)
    alive[::7] = False
    results = {}
    for device in ("cpu", "gpu"):
        monkeypatch.setenv("TELESCOPE_FAISS_DEVICE", device)
        stage = StageOne(32, "Flat")
        stage.add(vectors)
        assert stage.device == device
        results[device] = [stage.search(queries, k, alive) for k in (10, 400, 3000)]  # 3000: CPU fallback
    for (cpu_s, cpu_r), (gpu_s, gpu_r) in zip(results["cpu"], results["gpu"]):
        assert np.mean(cpu_r == gpu_r) > 0.99  # float ties may order differently on GPU
        np.testing.assert_allclose(np.sort(gpu_s, axis=1), np.sort(cpu_s, axis=1), atol=1e-4)
