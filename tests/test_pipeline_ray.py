"""--engine ray (issue 6, point 6): the same job on a local Ray (num_cpus=2) stores the same ids and vectors; the
encoder embeds a long source a group of windows at a time."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.index import Collection

ray = pytest.importorskip("ray", reason="Ray comes with the 'distributed' extra")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 1024**2)
    yield
    ray.shutdown()


def test_ray_engine_matches_local_engine(tmp_path, tiny_model_path, local_ray):
    rows = [{"id": f"d{i}", "text": f"document {i} " + "word " * (i % 7), "n": i} for i in range(60)]
    rows.append({"id": "long", "text": " ".join(f"w{i}" for i in range(80)), "n": -1})
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--source", str(source), "--model", str(tiny_model_path), "--layer", "3", "--dim", "32", "--batch-size", "8",
              "--chunk-tokens", "30", "--chunk-overlap", "5", "--no-progress", "--threads", "1"]
    runner = CliRunner()
    local = runner.invoke(app, ["index", "build", str(tmp_path / "local"), *common])
    assert local.exit_code == 0, local.output
    remote = runner.invoke(app, ["index", "build", str(tmp_path / "ray"), *common, "--engine", "ray", "--ray-actors", "2",
                                 "--report", str(tmp_path / "ray.json")])
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


def test_windows_are_embedded_a_group_at_a_time_as_the_source_is_read(tiny_model_path, tiny_embedder, local_ray, monkeypatch):
    from telescope.pipelines.ingest import LocalEncoder, points_table
    from telescope.pipelines.ray_engine import RayEncoder

    texts = [f"text {i} " + "word " * (i % 5) for i in range(50)]
    windows = [points_table([f"p{i}" for i in range(s, s + 10)], texts[s : s + 10], None) for s in range(0, 50, 10)]
    read, groups = [], []

    def source():
        for w in windows:
            read.append(len(groups))  # groups embedded when this window is read
            yield w

    embed_group = RayEncoder._embed_group
    monkeypatch.setattr(RayEncoder, "_embed_group", lambda self, ws: groups.append(len(ws)) or embed_group(self, ws))
    encoder = RayEncoder(str(tiny_model_path), 2, 16, batch_size=4, actors=1, group_points=20)
    got = {i: v for batch, vectors in encoder.embed(source()) for i, v in zip(batch.column("id").to_pylist(), vectors)}
    assert groups == [2, 2, 1] and read == [0, 0, 1, 1, 2]  # never more than a group ahead of the embedding
    local = LocalEncoder(tiny_embedder, 2, 16, batch_size=4)
    want = {i: v for batch, vectors in local.embed(windows) for i, v in zip(batch.column("id").to_pylist(), vectors)}
    assert sorted(got) == sorted(want)
    for i in want:
        np.testing.assert_allclose(got[i], want[i], atol=1e-5)
