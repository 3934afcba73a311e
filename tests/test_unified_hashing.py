"""Unified Embedding hashing: stable across runs and processes, collision rates as theory says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from telescope.embedder.unified import FeatureSpec, PerFeatureHashedEmbedding, UnifiedEmbedding, salt_key, stable_hash

SPECS = [FeatureSpec("user", chunks=3), FeatureSpec("genres", chunks=1, multi=True, sep="|")]
TOKENS = ["0", "1", "42", "Comedy", "Misérables, Les (1995)", "x" * 300]


def rows_of(module: UnifiedEmbedding) -> list[list[int]]:
    return [module.lookup("user", [t]).rows[0, 0].tolist() for t in TOKENS]


def test_golden_hashes_pin_the_hash_across_machines_and_versions():
    # Literal values: a change to the hash (or to a token's canonical bytes) would move every stored model's rows.
    key = salt_key(0, "user", 0)
    assert stable_hash(key, "42") == 17224396311999923798
    assert stable_hash(key, "Comedy") == 10434200562584262944
    m = UnifiedEmbedding([FeatureSpec("user", chunks=1)], chunk_dim=1, rows=1000, seed=0)
    assert m.lookup("user", [42]).rows[0, 0, 0].item() == 17224396311999923798 % 1000


def test_same_rows_in_a_fresh_process_with_another_hash_seed():
    module = UnifiedEmbedding(SPECS, chunk_dim=1, rows=1 << 16, seed=7)
    # The module file alone (torch, numpy, stdlib), loaded in a fresh interpreter with another hash seed.
    import telescope.embedder.unified as unified

    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('unified_fresh', {unified.__file__!r})\n"
        "u = importlib.util.module_from_spec(spec); sys.modules['unified_fresh'] = u; spec.loader.exec_module(u)\n"
        f"m = u.UnifiedEmbedding([u.FeatureSpec('user', chunks=3), u.FeatureSpec('genres', multi=True, sep='|')], 1, {1 << 16}, seed=7)\n"
        f"print(json.dumps([m.lookup('user', [t]).rows[0, 0].tolist() for t in {TOKENS!r}]))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == rows_of(module)


def test_same_rows_across_instances_and_independent_of_table_init():
    a = UnifiedEmbedding(SPECS, chunk_dim=4, rows=1000, seed=3)
    b = UnifiedEmbedding(SPECS, chunk_dim=8, rows=1000, seed=3)
    assert rows_of(a) == rows_of(b)
    c = UnifiedEmbedding(SPECS, chunk_dim=4, rows=1000, seed=4)
    assert rows_of(a) != rows_of(c)  # the seed salts the hash


def test_chunks_and_features_use_different_hashes():
    # Full 64-bit hashes (no table): distinct salts give distinct functions.
    hashes = {stable_hash(salt_key(0, f, j), "v") for f in ("a", "b") for j in range(3)}
    assert len(hashes) == 6


def test_pairwise_collision_rate_matches_one_over_b():
    n, b = 20_000, 1_000
    m = UnifiedEmbedding([FeatureSpec("f", chunks=2)], chunk_dim=1, rows=b)
    rows = m.lookup("f", [f"value-{i}" for i in range(n)]).rows[:, 0, :].numpy()
    pairs = n * (n - 1) / 2
    for j in range(2):
        counts = np.bincount(rows[:, j], minlength=b)
        rate = (counts * (counts - 1) / 2).sum() / pairs
        assert rate == pytest.approx(1 / b, rel=0.05)
        empty = (counts == 0).sum()
        assert empty == pytest.approx(b * (1 - 1 / b) ** n, abs=5 * np.sqrt(b * np.exp(-n / b)) + 1)
    # Both chunks collide for ~ pairs / B^2 pairs if the (feature, chunk) hashes are independent.
    _, counts = np.unique(rows[:, 0] * b + rows[:, 1], return_counts=True)
    both = (counts * (counts - 1) / 2).sum()
    expected = pairs / b**2
    assert abs(both - expected) < 5 * np.sqrt(expected)


def test_per_feature_table_collision_rate():
    n, b = 5_000, 250
    m = PerFeatureHashedEmbedding([FeatureSpec("f")], chunk_dim=1, rows={"f": b})
    counts = np.bincount(m.lookup("f", list(range(n))).rows[:, 0, 0].numpy(), minlength=b)
    assert (counts * (counts - 1) / 2).sum() / (n * (n - 1) / 2) == pytest.approx(1 / b, rel=0.08)
