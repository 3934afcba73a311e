"""Durability: WAL replay, torn tails, debris of a cut commit, SIGKILL in a stream of upserts, locking."""

from __future__ import annotations

import errno
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from index_helpers import nested_vectors, vector_for
from telescope.index import Collection
from telescope.index.files import write_json
from telescope.index.stage_one import StageOne

HERE = Path(__file__).parent


def test_uncommitted_writes_replay_from_the_wal(tmp_path):
    v = nested_vectors(30, 8)
    c = Collection.create(tmp_path / "c", 8)
    c.upsert([f"a{i}" for i in range(20)], v[:20])
    c.commit()
    c.upsert([f"b{i}" for i in range(10)], v[20:], model_version="m:2")
    c.delete(["a0"])
    # no close, no commit: the process "dies" here
    c._wal.close()
    os.close(c._lock_fd)
    reopened = Collection.open(tmp_path / "c")
    assert len(reopened) == 29 and reopened.get(["a0"]) == [None]
    assert reopened.get(["b3"])[0].model_version == "m:2"
    np.testing.assert_allclose(reopened.get(["b3"])[0].vector, v[23] / np.linalg.norm(v[23]), atol=1e-6)


def test_torn_wal_tail_is_dropped_and_writing_continues(tmp_path):
    c = Collection.create(tmp_path / "c", 8)
    c.upsert(["x"], nested_vectors(1, 8))
    wal = c._wal.path
    c._wal.close()
    os.close(c._lock_fd)
    with open(wal, "ab") as f:
        f.write(b"TWAL\x99\x00\x00\x00garbage")  # a record cut by a crash
    c = Collection.open(tmp_path / "c")
    assert len(c) == 1
    c.upsert(["y"], nested_vectors(1, 8, seed=5))
    c._wal.close()
    os.close(c._lock_fd)
    assert len(Collection.open(tmp_path / "c", read_only=True)) == 2


class _TornFile:
    """A WAL file on a full disk: half of the next write lands, then ENOSPC."""

    def __init__(self, real):
        self._real = real

    def write(self, data):
        self._real.write(bytes(data)[: len(data) // 2])
        self._real.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._real, name)


def _fail_fsync(fd):
    raise OSError(errno.EIO, "Input/output error")


@pytest.mark.parametrize("failure", ["torn write", "fsync"])
def test_a_failed_wal_append_leaves_no_record_behind(tmp_path, monkeypatch, failure):
    """An upsert whose WAL append fails raised, so it was not acknowledged: the log is cut back, the next write
    is durable after the last good record, and neither a reopen nor a read-only copy sees the failed one."""
    v = nested_vectors(3, 8)
    c = Collection.create(tmp_path / "c", 8)
    c.upsert(["a"], v[:1])
    wal = c._wal
    if failure == "torn write":
        real = wal._file
        wal._file = _TornFile(real)
    else:
        monkeypatch.setattr("telescope.index.wal.os.fsync", _fail_fsync)
    with pytest.raises(OSError):
        c.upsert(["failed"], v[1:2])
    if failure == "torn write":
        wal._file = real
    monkeypatch.undo()
    c.upsert(["b"], v[2:3])  # acknowledged
    copy = Collection.open(tmp_path / "c", read_only=True)
    assert copy.catch_up(c.state_key) or copy.state_key == c.state_key
    assert [p is not None for p in copy.get(["a", "failed", "b"])] == [True, False, True]
    c._wal.close()
    os.close(c._lock_fd)  # the process dies here
    reopened = Collection.open(tmp_path / "c")
    assert [p is not None for p in reopened.get(["a", "failed", "b"])] == [True, False, True]


def test_a_failed_compacting_commit_changes_nothing(tmp_path, monkeypatch):
    """A compaction cut by a full disk raises and leaves the collection as it was: the next commit and a reopen
    hold exactly the live points (no deleted point comes back, none is lost)."""
    v = nested_vectors(31, 8)
    c = Collection.create(tmp_path / "c", 8)
    c.upsert([f"p{i}" for i in range(30)], v[:30])
    c.commit()
    c.delete([f"p{i}" for i in range(0, 30, 2)])
    monkeypatch.setattr("telescope.index.collection.write_npy", lambda path, array: _fail_fsync(None))
    with pytest.raises(OSError):
        c.commit(compact=True)
    monkeypatch.undo()
    c.upsert(["late"], v[30:])
    c.commit()
    c.close()
    reopened = Collection.open(tmp_path / "c")
    assert sorted(reopened.ids()) == sorted([f"p{i}" for i in range(1, 30, 2)] + ["late"])
    np.testing.assert_allclose(reopened.get(["p7"])[0].vector, v[7] / np.linalg.norm(v[7]), atol=1e-6)


def test_a_commit_fsyncs_every_file_its_manifest_names(tmp_path, monkeypatch):
    """The manifest may name only files already on disk (fsynced), or a power cut right after the commit leaves
    a collection that cannot open: segments, deleted rows and the stage-one index alike."""
    c = Collection.create(tmp_path / "c", 8, stage_one="HNSW8")
    c.upsert([f"p{i}" for i in range(20)], nested_vectors(20, 8))
    c.delete(["p0"])
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr("telescope.index.files.os.fsync", recording_fsync)
    c.commit()
    monkeypatch.undo()
    m = c._manifest
    named = [f"{m['segments'][0]['name']}.vec.npy", f"{m['segments'][0]['name']}.meta.parquet", m["deleted"]]
    named.append(m["stage_one_file"]["name"])
    assert [name for name in named if name + ".tmp" not in synced] == []
    c.close()


def test_debris_of_a_cut_commit_is_removed(tmp_path):
    c = Collection.create(tmp_path / "c", 8)
    c.upsert(["x"], nested_vectors(1, 8))
    c.close()
    (tmp_path / "c" / "seg-000099.vec.npy").write_bytes(b"half written")
    (tmp_path / "c" / "manifest.json.tmp").write_text("{")
    c = Collection.open(tmp_path / "c")
    assert len(c) == 1
    assert not (tmp_path / "c" / "seg-000099.vec.npy").exists()
    assert not (tmp_path / "c" / "manifest.json.tmp").exists()


def test_one_writer_at_a_time(tmp_path):
    c = Collection.create(tmp_path / "c", 8)
    with pytest.raises(RuntimeError, match="open for writing by another process"):
        Collection.open(tmp_path / "c")
    reader = Collection.open(tmp_path / "c", read_only=True)
    with pytest.raises(RuntimeError, match="read-only"):
        reader.upsert(["x"], nested_vectors(1, 8))
    c.close()


def test_compaction_keeps_every_live_point(tmp_path):
    v = nested_vectors(3000, 8)
    c = Collection.create(tmp_path / "c", 8)
    c.upsert([f"p{i}" for i in range(3000)], v)
    c.delete([f"p{i}" for i in range(2000)])
    c.commit()  # dead rows > 1/3: compacts
    assert c.info()["rows"] == 1000 and c.info()["segments"] == 1
    c.close()
    c = Collection.open(tmp_path / "c")
    assert len(c) == 1000 and c.search(v[2500], k=1)[0][0].id == "p2500"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_mid_stream_loses_no_acknowledged_write(tmp_path, seed):
    dim = 16
    Collection.create(tmp_path / "c", dim, flush_rows=50).close()  # small flush: kills land inside commits too
    env = dict(os.environ, PYTHONPATH=str(HERE))
    acked: list[tuple[int, int]] = []
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "index_writer.py"), str(tmp_path / "c"), str(dim)],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    target = random.Random(seed).randint(20, 80)
    deadline = time.monotonic() + 60
    while len(acked) < target and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        _, first, last = line.split()
        acked.append((int(first), int(last)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(acked) >= target, "the writer stopped early"
    c = Collection.open(tmp_path / "c")
    last_acked = acked[-1][1]
    expected_ids = [f"p{i}" for i in range(last_acked + 1)]
    points = c.get(expected_ids)
    assert all(p is not None for p in points), "an acknowledged upsert was lost"
    for p in c.get([f"p{i}" for i in range(len(c))]):  # everything stored, acked or not, is whole
        assert p is not None
        i = int(p.id[1:])
        np.testing.assert_allclose(p.vector, vector_for(i, dim), atol=1e-6)
        assert p.payload == {"i": i}
    assert len(c) % 7 == 0  # whole batches only
    assert len(c) - (last_acked + 1) <= 7  # at most the one batch written but not yet acknowledged


def test_a_read_only_copy_catches_up_with_its_writer(tmp_path):
    """``catch_up(key)`` applies exactly the WAL records up to the writer's ``state_key``; after a commit (new
    generation) or past the key it says False, and a writable collection refuses it."""
    v = nested_vectors(40, 8)
    writer = Collection.create(tmp_path / "c", 8)
    writer.upsert([f"p{i}" for i in range(10)], v[:10])
    copy = Collection.open(tmp_path / "c", read_only=True)
    assert copy.state_key == writer.state_key and len(copy) == 10
    writer.upsert([f"p{i}" for i in range(10, 20)], v[10:20])
    middle = writer.state_key
    writer.delete(["p0"])
    writer.upsert(["p30"], v[30:31])
    assert copy.catch_up(middle) and len(copy) == 20  # not the records after the key
    assert copy.catch_up(writer.state_key) and copy.state_key == writer.state_key
    assert len(copy) == 20 and copy.get(["p0"]) == [None] and copy.search(v[30], k=1)[0][0].id == "p30"
    assert not copy.catch_up(middle)  # already past it
    writer.commit()
    assert not copy.catch_up(writer.state_key)  # another generation: open it again
    assert Collection.open(tmp_path / "c", read_only=True).state_key == writer.state_key
    with pytest.raises(RuntimeError, match="read-only copies"):
        writer.catch_up(writer.state_key)
    writer.close()


def _writer_with_a_stage_one_file(path: Path) -> Collection:
    writer = Collection.create(path, 8, stage_one="HNSW8")  # segments, deleted rows and a stage-one file
    writer.upsert([f"p{i}" for i in range(20)], nested_vectors(20, 8))
    writer.commit()
    writer.delete(["p0"])
    writer.commit()
    return writer


@pytest.mark.parametrize("hook", ["_load", "stage one read"])
def test_a_read_only_open_follows_a_commit_that_removed_its_files(tmp_path, monkeypatch, hook):
    """A copy that read a manifest whose files a commit then removed (before loading them) reads the new
    manifest and loads that state; when the writer commits at every try, the open gives up with a clear error."""
    writer = _writer_with_a_stage_one_file(tmp_path / "c")
    v = nested_vectors(10, 8, seed=3)
    commits_left = [2]
    owner, name = (Collection, "_load") if hook == "_load" else (StageOne, "read")
    real = getattr(owner, name)

    def commit_first(*args, **kwargs):
        if commits_left[0] > 0:  # the writer commits between the copy's manifest read and this load
            commits_left[0] -= 1
            n = commits_left[0] % len(v)
            writer.upsert([f"q{n}"], v[n : n + 1])
            writer.commit(compact=True)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, commit_first)
    copy = Collection.open(tmp_path / "c", read_only=True)
    assert copy.state_key == writer.state_key and sorted(copy.ids()) == sorted(writer.ids())
    assert copy.search(v[1], k=1)[0][0].id == "q1"
    commits_left[0] = 100
    with pytest.raises(RuntimeError, match=r"changed on disk at each of 5 tries to open it read-only"):
        Collection.open(tmp_path / "c", read_only=True)
    writer.close()


def test_read_only_opens_never_fail_while_a_writer_compacts(tmp_path, monkeypatch):
    """A writer thread compacting in a loop (each commit removes the previous generation's files) while this
    thread opens read-only copies: every open succeeds. Every other load waits for the writer's next commit
    between the manifest read and the loads, where a real race lands once in a while."""
    writer = _writer_with_a_stage_one_file(tmp_path / "c")
    v = nested_vectors(1, 8, seed=3)
    committed, stop = threading.Condition(), threading.Event()

    def write():
        for i in itertools.count():
            if stop.is_set():
                return
            writer.upsert([f"w{i % 50}"], v)
            writer.commit(compact=True)
            with committed:
                committed.notify_all()

    real_load, loads = Collection._load, itertools.count()

    def load_after_a_commit(self):
        if next(loads) % 2 == 0:
            with committed:
                committed.wait(timeout=5)
        real_load(self)

    monkeypatch.setattr(Collection, "_load", load_after_a_commit)
    thread = threading.Thread(target=write)
    thread.start()
    try:
        for _ in range(10):
            copy = Collection.open(tmp_path / "c", read_only=True)
            assert len(copy) >= 19 and copy.generation > 2
    finally:
        stop.set()
        thread.join()
    writer.close()


def test_catch_up_after_its_wal_was_removed_says_false(tmp_path, monkeypatch):
    """The writer commits (removing the copy's WAL) while the copy catches up: not an error, but False (the
    replica then opens the collection again)."""
    writer = Collection.create(tmp_path / "c", 8)
    writer.upsert(["a"], nested_vectors(1, 8))
    copy = Collection.open(tmp_path / "c", read_only=True)
    writer.upsert(["b"], nested_vectors(1, 8, seed=1))
    key = writer.state_key

    def open_after_a_commit(file, *args, **kwargs):  # the commit lands after the copy found its WAL there
        if str(file).endswith(".log") and writer.state_key == key:
            writer.commit()
        return open(file, *args, **kwargs)

    monkeypatch.setattr("telescope.index.wal.open", open_after_a_commit, raising=False)
    assert not copy.catch_up(key)
    monkeypatch.undo()
    assert Collection.open(tmp_path / "c", read_only=True).state_key == writer.state_key
    writer.close()


def test_a_failed_reconfigure_leaves_memory_as_the_disk(tmp_path, monkeypatch):
    """``reconfigure(dim=...)`` whose second commit fails keeps the old dim in memory as on disk: later writes
    go to the WAL at the old width and replay after a crash; a reconfigure after it works."""
    v = nested_vectors(21, 8)
    c = Collection.create(tmp_path / "c", 8)
    c.upsert([f"p{i}" for i in range(20)], v[:20])
    manifests = []

    def fail_the_second_manifest(path, data):
        manifests.append(data)
        if len(manifests) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_json(path, data)

    monkeypatch.setattr("telescope.index.collection.write_json", fail_the_second_manifest)
    with pytest.raises(OSError):
        c.reconfigure(dim=12)
    monkeypatch.undo()
    assert c.dim == 8 and c.info()["dim"] == 8 and c.info()["segments"] == 1 and c.info()["version_dims"] == {}
    c.upsert(["late"], v[20:])
    assert c.search(v[20], k=1)[0][0].id == "late"
    c._wal.close()
    os.close(c._lock_fd)  # the process dies here
    c = Collection.open(tmp_path / "c")
    assert c.dim == 8 and len(c) == 21
    np.testing.assert_allclose(c.get(["late"])[0].vector, v[20] / np.linalg.norm(v[20]), atol=1e-6)
    c.reconfigure(dim=12)
    assert c.dim == 12 and len(c) == 21 and c.get(["late"])[0].vector.shape == (8,)
    c.close()
