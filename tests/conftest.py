"""Shared fixtures: the tiny random BERT built at test time, the packaged model, the shared datasets."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Exported ONNX graphs of the models built at test time go to a throw-away folder, not ~/.cache/telescope.
os.environ.setdefault("TELESCOPE_CACHE_DIR", tempfile.mkdtemp(prefix="telescope-test-cache-"))



def shared_path(*parts: str) -> Path:
    """A path under ../shared/data (``telescope.eval.datasets.shared_data``); the test is skipped (saying so) when
    it is absent."""
    from telescope.eval.datasets import shared_data

    path = shared_data(*parts)
    if not path.exists():
        pytest.skip(f"needs ../shared/data/{'/'.join(parts)} (real data kept out of the repo); not found at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    from telescope.embedder.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_embedder(tiny_model_path):
    from telescope.embedder import load_embedder

    return load_embedder(tiny_model_path)


@pytest.fixture(scope="session")
def tiny_torch_embedder(tiny_model_path):
    """The tiny model on the torch backend, for tests that look inside the torch forward pass."""
    from telescope.embedder import load_embedder

    return load_embedder(tiny_model_path, backend="torch")


@pytest.fixture(scope="session")
def default_embedder():
    from telescope.embedder import load_embedder

    return load_embedder("default")


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny model runs fastest on one torch thread, and far faster than on two when the cores are shared
    (modules that train or embed a lot use it: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
