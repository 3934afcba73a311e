"""--engine ray (issue 6, point 6): the same job on a local Ray (num_cpus=2) stores the same ids and vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.index import Collection

ray = pytest.importorskip("ray", reason="Ray comes with the 'distributed' extra")


def test_ray_engine_matches_local_engine(tmp_path, tiny_model_path):
    rows = [{"id": f"d{i}", "text": f"document {i} " + "word " * (i % 7), "n": i} for i in range(60)]
    rows.append({"id": "long", "text": " ".join(f"w{i}" for i in range(80)), "n": -1})
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--source", str(source), "--model", str(tiny_model_path), "--layer", "3", "--dim", "32", "--batch-size", "8",
              "--chunk-tokens", "30", "--chunk-overlap", "5", "--no-progress", "--threads", "1"]
    runner = CliRunner()
    local = runner.invoke(app, ["index", "build", str(tmp_path / "local"), *common])
    assert local.exit_code == 0, local.output
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 1024**2)
    try:
        remote = runner.invoke(app, ["index", "build", str(tmp_path / "ray"), *common, "--engine", "ray", "--ray-actors", "2",
                                     "--report", str(tmp_path / "ray.json")])
    finally:
        ray.shutdown()
    if remote.exception is not None:
        raise remote.exception
    report = json.loads((tmp_path / "ray.json").read_text())
    assert report["engine"] == "ray" and report["docs_embedded"] == 61
    a, b = Collection.open(tmp_path / "local", read_only=True), Collection.open(tmp_path / "ray", read_only=True)
    ids = [r["id"] for r in rows[:-1]] + [f"long#{i}" for i in range(10)]
    pa_, pb = a.get(ids), b.get(ids)
    assert [p is None for p in pa_] == [p is None for p in pb] and len(a) == len(b) == report["points_upserted"]
    for x, y in zip(pa_, pb):
        if x is not None:
            assert x.id == y.id and x.payload == y.payload and x.model_version == y.model_version
            np.testing.assert_allclose(x.vector, y.vector, atol=1e-5)
