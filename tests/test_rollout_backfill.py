"""Rollout and lazy backfill on tiny models: compatibility checks, queries during a backfill, kill and resume,
abort, and ``telescope rollout``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from telescope.embedder import CompatibleWith, ModelManifest, load_embedder
from telescope.embedder.basis_transform import attach_basis_transform
from telescope.embedder.tiny import build_tiny_model
from telescope.index import Collection
from telescope.pipelines import ingest
from telescope.pipelines.backfill import BackgroundBackfill, backfill
from telescope.pipelines.rollout import abort_rollout, rollout_status, run_backfill, settle, start_rollout
from cli_helpers import run_cli as _run_cli

HERE = Path(__file__).parent
TEXTS = [f"document {i} about {w} and {v}" for i, (w, v) in enumerate(
    (w, v) for w in ("cats", "rivers", "engines", "music", "bread") for v in ("winter", "glass", "maps", "salt", "dust", "wool", "rain", "ink"))]
QUERIES = ["cats in winter", "engines and salt", "music maps", "bread", "rain on glass"]


def _save_model(model: SentenceTransformer, out: Path, manifest: ModelManifest) -> Path:
    model.save(str(out))
    manifest.save(out)
    return out


@pytest.fixture(scope="module")
def new_model_path(tmp_path_factory, tiny_model_path) -> Path:
    """The tiny model plus a (perturbed) BT^2 head: 64 -> 80 dims, compatible_with tiny-bert:1 at 64."""
    torch.manual_seed(0)
    model = attach_basis_transform(SentenceTransformer(str(tiny_model_path), device="cpu"), old_dim=64)
    with torch.no_grad():
        for p in model[2].parameters():
            p.add_(0.05 * torch.randn_like(p))
    manifest = ModelManifest(id="tiny-bt2", version="1", num_layers=4, full_dim=80, pairs=[(4, 80)],
                             objective="bt2", compatible_with=CompatibleWith("tiny-bert:1", 64))
    return _save_model(model, tmp_path_factory.mktemp("bt2"), manifest)


@pytest.fixture(scope="module")
def new_embedder(new_model_path):
    return load_embedder(new_model_path)


def make_collection(path: Path, embedder, model_path: Path) -> Collection:
    c = Collection.create(path, embedder.full_dim, properties={"model": str(model_path), "model_version": embedder.manifest.tag})
    ids = [f"d{i}" for i in range(len(TEXTS))]
    ingest(c, embedder, ids, TEXTS, [{"text": t, "n": i} for i, t in enumerate(TEXTS)], batch_size=8, show_progress=False)
    c.commit()
    return c


def assert_vectors_are(c: Collection, embedder) -> None:
    expected = embedder.encode(TEXTS)
    points = c.get([f"d{i}" for i in range(len(TEXTS))])
    assert all(p.model_version == embedder.manifest.tag for p in points)
    np.testing.assert_allclose(np.stack([p.vector for p in points]), expected, atol=1e-5)


def test_incompatible_models_are_refused_with_the_reason(tmp_path, tiny_embedder, tiny_model_path, new_embedder):
    c = make_collection(tmp_path / "c", tiny_embedder, tiny_model_path)
    with pytest.raises(ValueError, match="expected a model other than the collection's own 'tiny-bert:1'"):
        start_rollout(c, tiny_embedder, str(tiny_model_path))
    stranger_path = build_tiny_model(tmp_path / "stranger", seed=3)
    manifest = ModelManifest.load(stranger_path)
    manifest.id = "stranger"
    manifest.save(stranger_path)
    with pytest.raises(ValueError, match=r"'stranger:1' is not compatible with the stored vectors \('tiny-bert:1', 64 dims\)"):
        start_rollout(c, load_embedder(stranger_path), str(stranger_path))
    manifest.compatible_with = CompatibleWith("someone-else:1", 64)
    manifest.save(stranger_path)
    with pytest.raises(ValueError, match="is compatible with 'someone-else:1', not with the stored vectors' model 'tiny-bert:1'"):
        start_rollout(c, load_embedder(stranger_path), str(stranger_path))
    manifest.compatible_with = CompatibleWith("tiny-bert:1", 32)
    manifest.save(stranger_path)
    with pytest.raises(ValueError, match="declares a compatible prefix of 32 dims; expected the stored vectors' 64"):
        start_rollout(c, load_embedder(stranger_path), str(stranger_path))
    assert c.dim == 64 and c.properties["model_version"] == "tiny-bert:1" and "rollout" not in c.properties
    c.close()


def test_queries_during_a_background_backfill_never_fail_nor_repeat_an_id(tmp_path, tiny_embedder, tiny_model_path,
                                                                           new_embedder, new_model_path):
    c = make_collection(tmp_path / "c", tiny_embedder, tiny_model_path)
    status = start_rollout(c, new_embedder, str(new_model_path))
    assert (status.state, status.backfilled, status.total, c.dim, str(c.default_plan)) == ("backfilling", 0, 40, 80, "80:10")
    assert c.properties["model_version"] == "tiny-bt2:1"  # queries are embedded by the new model at once
    queries = new_embedder.encode(QUERIES)
    job = BackgroundBackfill(c, new_embedder, on_done=lambda report: settle(c), batch_size=4, rate=25.0).start()
    searches, mixed = 0, 0
    while job.running or searches == 0:
        for row in c.search(queries, k=10):
            ids = [h.id for h in row]
            assert len(ids) == len(set(ids)) == 10
            versions = {h.model_version for h in row}
            assert versions <= {"tiny-bert:1", "tiny-bt2:1"}
            mixed += len(versions) == 2
        searches += 1
    job.join()
    assert job.error is None and job.report.written == 40 and job.report.remaining == 0
    assert searches > 3 and mixed > 0, (searches, mixed)
    status = rollout_status(c)
    assert (status.state, status.backfilled, status.total) == ("complete", 40, 40)
    assert c.info()["model_versions"] == {"tiny-bt2:1": 40}
    assert_vectors_are(c, new_embedder)
    c.close()


def test_a_killed_backfill_resumes_where_it_stopped(tmp_path, tiny_embedder, tiny_model_path, new_embedder, new_model_path):
    c = make_collection(tmp_path / "c", tiny_embedder, tiny_model_path)
    start_rollout(c, new_embedder, str(new_model_path))
    c.close()
    proc = subprocess.Popen([sys.executable, str(HERE / "rollout_backfiller.py"), str(tmp_path / "c"), str(new_model_path)],
                            stdout=subprocess.PIPE, text=True, cwd=HERE)
    acked = 0
    for line in proc.stdout:
        if line.startswith("ACK"):
            acked = int(line.split()[1])
            if acked >= 6:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    c = Collection.open(tmp_path / "c")
    status = rollout_status(c)
    assert status.state == "backfilling" and acked <= status.backfilled < 40  # acknowledged batches survived
    report = run_backfill(c, new_embedder, batch_size=5, show_progress=False)
    assert report.written == 40 - status.backfilled and report.remaining == 0
    assert rollout_status(c).state == "complete" and len(c) == 40 and len(set(c.ids())) == 40
    assert_vectors_are(c, new_embedder)
    c.close()


def test_abort_rolls_back_to_the_old_model_and_dim(tmp_path, tiny_embedder, tiny_model_path, new_embedder, new_model_path):
    c = make_collection(tmp_path / "c", tiny_embedder, tiny_model_path)
    start_rollout(c, new_embedder, str(new_model_path))
    stop = threading.Event()
    report = backfill(c, new_embedder, batch_size=4, stop=stop, show_progress=False,
                      on_batch=lambda r: stop.set() if r.batches >= 3 else None)
    assert report.stopped and report.written == 12
    status = abort_rollout(c)
    assert status.state == "aborting" and status.target_version == "tiny-bert:1" and status.backfilled == 28
    assert c.properties["model_version"] == "tiny-bert:1" and str(c.default_plan) == "64:10"
    for row in c.search(tiny_embedder.encode(QUERIES), k=10):  # old queries meet the new vectors' prefix
        assert len({h.id for h in row}) == 10
    with pytest.raises(ValueError, match="expected the model of 'tiny-bert:1' to backfill with, got 'tiny-bt2:1'"):
        run_backfill(c, new_embedder)
    run_backfill(c, tiny_embedder, show_progress=False)
    status = rollout_status(c)
    assert status.state == "aborted" and c.dim == 64 and c.info()["model_versions"] == {"tiny-bert:1": 40}
    assert_vectors_are(c, tiny_embedder)
    c.close()
    reopened = Collection.open(tmp_path / "c", read_only=True)
    assert reopened.dim == 64 and reopened.properties["rollout"]["state"] == "aborted"


def test_aborting_a_collection_shorter_than_its_model_backfills_at_its_dim(tmp_path, tiny_embedder, tiny_model_path,
                                                                           new_model_path):
    """A collection holding the old model's 32-dim prefixes (shorter than the model): the abort re-embeds at 32."""
    short_path = tmp_path / "bt2-32"
    shutil.copytree(new_model_path, short_path)
    manifest = ModelManifest.load(short_path)
    manifest.id, manifest.compatible_with = "tiny-bt2-32", CompatibleWith("tiny-bert:1", 32)
    manifest.save(short_path)
    new = load_embedder(short_path)
    c = Collection.create(tmp_path / "c", 32, properties={"model": str(tiny_model_path), "model_version": "tiny-bert:1"})
    ingest(c, tiny_embedder, [f"d{i}" for i in range(len(TEXTS))], TEXTS, [{"text": t} for t in TEXTS], show_progress=False)
    assert start_rollout(c, new, str(short_path)).prefix_dim == 32 and c.dim == 80
    stop = threading.Event()
    backfill(c, new, batch_size=4, stop=stop, show_progress=False, on_batch=lambda r: stop.set() if r.batches >= 2 else None)
    assert abort_rollout(c).backfilled == 32
    run_backfill(c, tiny_embedder, show_progress=False)
    assert rollout_status(c).state == "aborted" and c.dim == 32 and c.info()["model_versions"] == {"tiny-bert:1": 40}
    points = c.get([f"d{i}" for i in range(len(TEXTS))])
    np.testing.assert_allclose(np.stack([p.vector for p in points]), tiny_embedder.encode(TEXTS, dim=32), atol=1e-5)
    c.close()


def test_index_build_while_aborting_embeds_with_the_old_model_at_its_dim(tmp_path, tiny_embedder, tiny_model_path,
                                                                         new_embedder, new_model_path, capsys):
    c = make_collection(tmp_path / "c", tiny_embedder, tiny_model_path)
    start_rollout(c, new_embedder, str(new_model_path))
    run_backfill(c, new_embedder, show_progress=False)
    abort_rollout(c)  # 40 points of the new model (80 dims) left to re-embed; the old model gives 64
    c.close()
    source = tmp_path / "more.jsonl"
    source.write_text("".join(json.dumps({"id": f"m{i}", "text": f"more about {w}"}) + "\n" for i, w in enumerate(QUERIES)))
    code, out, err = _run_cli(["index", "build", str(tmp_path / "c"), "--source", str(source), "--no-progress"], capsys)
    assert code == 0, err
    with Collection.open(tmp_path / "c") as c:
        assert c.get(["m0"])[0].model_version == "tiny-bert:1" and len(c.get(["m0"])[0].vector) == 64
        run_backfill(c, tiny_embedder, show_progress=False)
        assert rollout_status(c).state == "aborted" and c.dim == 64 and c.info()["model_versions"] == {"tiny-bert:1": 45}


def test_points_written_by_the_old_version_during_a_backfill_are_backfilled_too(tmp_path, tiny_embedder,
                                                                                tiny_model_path, new_embedder,
                                                                                new_model_path):
    """A client still upserting old-model vectors while the backfill runs: the backfill ends with none left."""
    c = make_collection(tmp_path / "c", tiny_embedder, tiny_model_path)
    start_rollout(c, new_embedder, str(new_model_path))

    def late_write(report):
        if report.batches == 1:
            c.upsert(["late"], tiny_embedder.encode(["a late document"]), [{"text": "a late document"}], model_version="tiny-bert:1")

    report = run_backfill(c, new_embedder, batch_size=8, show_progress=False, on_batch=late_write)
    assert report.remaining == 0 and report.written == 41
    assert rollout_status(c).state == "complete" and c.info()["model_versions"] == {"tiny-bt2:1": 41}
    c.close()


def test_second_rollout_and_missing_text_are_refused(tmp_path, tiny_embedder, tiny_model_path, new_embedder, new_model_path):
    c = Collection.create(tmp_path / "c", 64, properties={"model": str(tiny_model_path), "model_version": "tiny-bert:1"})
    c.upsert(["a", "b"], tiny_embedder.encode(["x", "y"]), [{"text": "x"}, {"body": "y"}], model_version="tiny-bert:1")
    assert start_rollout(c, new_embedder, str(new_model_path)).state == "backfilling"
    assert start_rollout(c, new_embedder, str(new_model_path)).state == "backfilling"  # the same one: resume
    with pytest.raises(ValueError, match=r"payload\['text'\] of point 'b': expected the text to re-embed, got None"):
        run_backfill(c, new_embedder, show_progress=False)
    assert rollout_status(c).backfilled == 0  # the batch holding the bad point wrote nothing
    c.close()


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code, out, err = _run_cli(argv, capsys)
    return code, out, " ".join(err.split())


def test_rollout_cli_switches_backfills_and_aborts(tmp_path, tiny_embedder, tiny_model_path, new_model_path, capsys):
    make_collection(tmp_path / "c", tiny_embedder, tiny_model_path).close()
    code, out, err = run_cli(["rollout", str(tmp_path / "c"), "--model", str(new_model_path), "--rate", "1000"], capsys)
    assert code == 0, err
    status = json.loads(out[out.index("{"):])  # after the progress bar
    assert status["state"] == "complete" and status["backfilled"] == 40 and status["fraction"] == 1.0
    code, out, err = run_cli(["rollout", str(tmp_path / "c"), "--abort", "--batch-size", "16"], capsys)
    assert code == 0, err
    assert json.loads(out[out.index("{"):])["state"] == "aborted"
    code, _, err = run_cli(["rollout", str(tmp_path / "c"), "--model", str(tiny_model_path)], capsys)
    assert code == 2 and "expected a model other than the collection's own 'tiny-bert:1'" in err
    code, _, err = run_cli(["rollout", str(tmp_path / "c")], capsys)
    assert code == 2 and "--model/--abort: expected exactly one of them" in err
    code, _, err = run_cli(["rollout", str(tmp_path / "c"), "--model", str(new_model_path), "--no-backfill"], capsys)
    assert code == 0 and "backfilling" in err
    c = Collection.open(tmp_path / "c", read_only=True)
    assert rollout_status(c).backfilled == 0 and c.dim == 80


def test_rerunning_a_completed_rollout_says_so_and_exits_0(tmp_path, tiny_embedder, tiny_model_path, new_model_path, capsys):
    make_collection(tmp_path / "c", tiny_embedder, tiny_model_path).close()
    argv = ["rollout", str(tmp_path / "c"), "--model", str(new_model_path)]
    assert run_cli(argv, capsys)[0] == 0
    code, out, err = run_cli(argv, capsys)  # a retry script reruns the same command: idempotent
    assert code == 0, err
    assert "already complete" in err and json.loads(out[out.index("{"):])["state"] == "complete"


def test_rerunning_an_abort_that_completed_says_so_and_exits_0(tmp_path, tiny_embedder, tiny_model_path, new_model_path,
                                                               capsys):
    make_collection(tmp_path / "c", tiny_embedder, tiny_model_path).close()
    assert run_cli(["rollout", str(tmp_path / "c"), "--model", str(new_model_path), "--no-backfill"], capsys)[0] == 0
    argv = ["rollout", str(tmp_path / "c"), "--abort"]
    assert run_cli(argv, capsys)[0] == 0
    code, out, err = run_cli(argv, capsys)  # a retry script reruns the same command: idempotent
    assert code == 0, err
    assert "already aborted" in err and json.loads(out[out.index("{"):])["state"] == "aborted"
    make_collection(tmp_path / "d", tiny_embedder, tiny_model_path).close()
    code, _, err = run_cli(["rollout", str(tmp_path / "d"), "--abort"], capsys)  # never rolled out: nothing to abort
    assert code == 2 and "--abort: expected a rollout backfilling or complete on 'd', got none" in err


def test_index_build_after_a_completed_rollout_embeds_only_new_and_changed_documents(tmp_path, tiny_model_path,
                                                                                      new_embedder, new_model_path,
                                                                                      capsys):
    """The backfill re-embedded every stored document with the new model: the next build does not do it again."""
    source, report = tmp_path / "docs.jsonl", tmp_path / "report.json"

    def build(rows: list[dict], *extra: str) -> dict:
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        code, _, err = _run_cli(["index", "build", str(tmp_path / "c"), "--source", str(source), "--no-progress",
                                 "--report", str(report), *extra], capsys)
        assert code == 0, err
        return json.loads(report.read_text())

    rows = [{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS[:12])]
    assert build(rows, "--model", str(tiny_model_path))["docs_embedded"] == 12
    code, _, err = _run_cli(["rollout", str(tmp_path / "c"), "--model", str(new_model_path)], capsys)
    assert code == 0, err
    rows[0]["text"] = "a rewritten first document"
    first = build(rows + [{"id": "d12", "text": "a new document"}])
    assert (first["docs_embedded"], first["unchanged"]) == (2, 11)
    again = build(rows + [{"id": "d12", "text": "a new document"}])
    assert (again["docs_embedded"], again["unchanged"]) == (0, 13)
    with Collection.open(tmp_path / "c", read_only=True) as c:
        points = c.get(["d0", "d1", "d12"])
        assert {p.model_version for p in points} == {"tiny-bt2:1"}
        expected = new_embedder.encode(["a rewritten first document", TEXTS[1], "a new document"])
        np.testing.assert_allclose(np.stack([p.vector for p in points]), expected, atol=1e-5)


def test_a_rollout_keeps_layers_apart(tmp_path, tiny_model_path, new_model_path, capsys):
    """A BT^2 model is compatible with its old model's last layer: a collection built at another is refused; and
    after a rollout, a build at a layer other than the one the backfill embedded at is refused too."""
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS[:6])))
    args = ["index", "build", "--source", str(source), "--no-progress"]
    assert _run_cli([*args[:2], str(tmp_path / "shallow"), *args[2:], "--model", str(tiny_model_path), "--layer", "3"], capsys)[0] == 0
    code, _, err = _run_cli(["rollout", str(tmp_path / "shallow"), "--model", str(new_model_path)], capsys)
    assert code == 2 and "the stored vectors were taken after its layer 3" in " ".join(err.split())
    assert _run_cli([*args[:2], str(tmp_path / "c"), *args[2:], "--model", str(tiny_model_path)], capsys)[0] == 0
    assert _run_cli(["rollout", str(tmp_path / "c"), "--model", str(new_model_path)], capsys)[0] == 0
    code, _, err = _run_cli([*args[:2], str(tmp_path / "c"), *args[2:], "--layer", "3"], capsys)
    assert code == 2 and "--layer: the collection holds layer-4 vectors of 'tiny-bt2:1', got 3" in " ".join(err.split())


def test_a_point_rewritten_while_the_backfill_embeds_it_keeps_the_rewrite(tmp_path, tiny_embedder, tiny_model_path,
                                                                          new_embedder, new_model_path):
    """A client rewrites d0 (old model, new text) after the backfill read it and before it wrote it: the backfill
    must not store its embedding of the replaced text; it re-embeds the rewrite in its next pass."""
    c = make_collection(tmp_path / "c", tiny_embedder, tiny_model_path)
    start_rollout(c, new_embedder, str(new_model_path))

    class RewritingDuringEncode:
        def __init__(self):
            self.rewritten = False

        def __getattr__(self, name):
            return getattr(new_embedder, name)

        def encode(self, texts, **options):
            vectors = new_embedder.encode(texts, **options)
            if not self.rewritten:
                self.rewritten = True
                c.upsert(["d0"], tiny_embedder.encode(["a rewritten text"]), [{"text": "a rewritten text"}],
                         model_version="tiny-bert:1")
            return vectors

    report = backfill(c, RewritingDuringEncode(), batch_size=8, show_progress=False)
    assert report.remaining == 0
    point = c.get(["d0"])[0]
    assert point.payload == {"text": "a rewritten text"} and point.model_version == "tiny-bt2:1"
    np.testing.assert_allclose(point.vector, new_embedder.encode(["a rewritten text"])[0], atol=1e-5)
    c.close()
