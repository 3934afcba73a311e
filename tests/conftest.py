"""Shared fixtures: the tiny random BERT built at test time, the packaged model, the shared datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; the test is skipped (saying so) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
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
def default_embedder():
    from telescope.embedder import load_embedder

    return load_embedder("default")
