"""The crash contract of a collection: a crash at any point leaves it readable and loses no acknowledged write.

A driver process (this file run as a script) forks one writer per kill point. A writer runs a fixed, seeded
sequence of operations (upserts, deletes, commits, a compaction, a close and reopen, a widening
``reconfigure``) and counts the file-system calls the collection makes: each fsync, rename (before and
after), unlink and WAL write. At the chosen one it kills itself with SIGKILL, leaving the disk as a crash there
would: a WAL write lands half first, a temporary file being fsynced is cut to half its bytes. Each test then
opens every collection left behind, read-only and read-write, and compares it with the model state after the
acknowledged operations (or after the one in flight too: an unacknowledged write may land), searches it
against an exact recomputation, writes to it and "crashes" again.

The other tests here cut a disk in-process (an fsync, a truncate or a read that fails) and check the same.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

from index_helpers import nested_vectors
from telescope.index import Collection
import telescope.index.wal as wal_module

HERE = Path(__file__).parent

SCENARIOS = {
    "flat": dict(dim=8, create=dict(flush_rows=40)),
    "float16-hnsw": dict(
        dim=8, create=dict(vector_dtype="float16", stage_one="HNSW8", stage_one_params="efSearch=64", flush_rows=40)
    ),
    "ivf": dict(dim=8, create=dict(stage_one="IVF1,Flat", stage_one_params="nprobe=1", flush_rows=60)),
    "widen": dict(dim=8, create=dict(stage_one="HNSW8", stage_one_dim=4, default_plan="4:200,8:10", flush_rows=40)),
}
KILL_POINTS = 32  # per scenario, spread evenly over all of its file-system calls


def operations(scenario: str) -> list[tuple]:
    """The writer's operations, the same in the writer and in the checks."""
    rng = np.random.default_rng(sorted(SCENARIOS).index(scenario))
    widen = scenario == "widen"
    ops: list[tuple] = []

    def upsert(ids: list[str], version: str = "m1", dim: int = 8) -> None:
        vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
        payloads = [{"id": i, "n": int(rng.integers(1_000_000))} for i in ids]
        ops.append(("upsert", ids, vectors, payloads, version))

    def names(prefix: str, lo: int, hi: int) -> list[str]:
        return [f"{prefix}{i}" for i in range(lo, hi)]

    upsert(names("p", 0, 90))  # past flush_rows: a commit inside the upsert (an IVF trains on these)
    upsert(names("p", 80, 100), "m2")  # replaces p80..p89
    ops.append(("delete", names("p", 0, 10)))
    ops.append(("commit", None))
    upsert(names("p", 5, 15))  # p5..p9 come back
    ops.append(("delete", names("p", 50, 80)))
    ops.append(("commit", True))  # compaction
    if widen:
        ops.append(("reconfigure", 12))
    new = ("m3", 12) if widen else ("m2", 8)
    upsert(names("q", 0, 30), *new)
    upsert(names("p", 20, 25))  # an older version (8 long after a widening)
    ops.append(("delete", names("p", 85, 91) + ["q0"]))
    ops.append(("reopen", None))  # close commits
    upsert(names("q", 0, 5), *new)
    ops.append(("delete", ["p11"]))
    return ops  # the last writes are in the WAL only


def states(scenario: str, skip: int | None = None) -> list[tuple[int, dict]]:
    """(dim, {id: (unit vector, payload, model version)}) after each prefix of the operations (but ``skip``)."""
    dim, state = SCENARIOS[scenario]["dim"], {}
    out = [(dim, dict(state))]
    for i, op in enumerate(operations(scenario)):
        if op[0] == "upsert" and i != skip:
            for point_id, v, payload in zip(op[1], op[2], op[3]):
                state[point_id] = (v / np.linalg.norm(v), payload, op[4])
        elif op[0] == "delete" and i != skip:
            for point_id in op[1]:
                state.pop(point_id, None)
        elif op[0] == "reconfigure" and i != skip:
            dim = op[1]
        out.append((dim, dict(state)))
    return out


def _do(c: Collection, op: tuple) -> Collection:
    """Run one operation on ``c``; returns the collection to go on with (another after a reopen)."""
    if op[0] == "upsert":
        c.upsert(op[1], op[2], op[3], model_version=op[4])
    elif op[0] == "delete":
        c.delete(op[1], missing="ignore")  # after a failed upsert, some ids may be unknown
    elif op[0] == "commit":
        c.commit(compact=op[1])
    elif op[0] == "reconfigure":
        c.reconfigure(dim=op[1])
    else:
        c.close()
        c = Collection.open(c.path)
    return c


# -- the writer (in the driver's forked children) -----------------------------------------------------------------
class _CountedFile:
    """The WAL's file: each write is a kill point, where half of the record lands first."""

    def __init__(self, real, point):
        self._real, self._point = real, point

    def write(self, data):
        self._point("wal write", lambda: self._real.write(bytes(data)[: len(data) // 2]))
        return self._real.write(data)

    def __getattr__(self, name):
        return getattr(self._real, name)


def _arm(kill_at: int, note: Path) -> list[int]:
    """Count the collection's file-system calls from here on; SIGKILL this process at call ``kill_at``. The
    fsyncs do nothing else: a killed process loses no page cache, so they would only cost time."""
    count = [0]
    real_replace, real_unlink, real_open = os.replace, os.unlink, builtins.open

    def point(what: str, cut=None) -> None:
        count[0] += 1
        if count[0] == kill_at:
            if cut is not None:
                cut()
            note.write_text(what)
            os.kill(os.getpid(), signal.SIGKILL)

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        half = (lambda: os.truncate(name, os.path.getsize(name) // 2)) if name.endswith(".tmp") else None
        point(f"fsync {name}", half)

    def replace(src, dst, **kwargs):
        point(f"before rename {src}")
        real_replace(src, dst, **kwargs)
        point(f"after rename {dst}")

    def unlink(path, **kwargs):
        point(f"unlink {path}")
        real_unlink(path, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return _CountedFile(f, point) if mode == "ab" else f

    os.fsync, os.replace, os.unlink = fsync, replace, unlink
    wal_module.open = open_
    return count


def _write(scenario: str, root: Path, kill_at: int) -> None:
    path = root / f"c{kill_at}"
    spec = SCENARIOS[scenario]
    c = Collection.create(path, spec["dim"], **spec["create"])
    count = _arm(kill_at, root / f"c{kill_at}.point")
    acks = os.open(root / f"c{kill_at}.acks", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for i, op in enumerate(operations(scenario)):
        c = _do(c, op)
        os.write(acks, f"{i}\n".encode())
    (root / "count").write_text(str(count[0]))


def _fork_writer(scenario: str, root: Path, kill_at: int) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _write(scenario, root, kill_at)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def drive(scenario: str, root: Path, points: int) -> None:
    """Count the scenario's kill points (a run that is never killed), then run it killed at ``points`` of them."""
    status = _fork_writer(scenario, root, 0)
    if status != 0:
        raise SystemExit(f"the writer failed without a kill (status {status})")
    total = int((root / "count").read_text())
    chosen = sorted({int(k) for k in np.linspace(1, total, points).round()})
    runs = {k: _fork_writer(scenario, root, k) for k in chosen}
    print(json.dumps({"total": total, "runs": runs}))


# -- the checks ------------------------------------------------------------------------------------------------------
def _diff(c: Collection, dim: int, state: dict, atol: float) -> str | None:
    """How ``c`` differs from the model ``state`` (None: it holds exactly that)."""
    if c.dim != dim:
        return f"dim {c.dim}, expected {dim}"
    ids = set(c.ids())
    if ids != set(state) or len(c) != len(state):
        return f"ids: missing {sorted(set(state) - ids)[:5]}, unexpected {sorted(ids - set(state))[:5]}"
    for point in c.get(sorted(state)):
        vector, payload, version = state[point.id]
        if point.payload != payload or point.model_version != version:
            return f"{point.id}: {point.payload} {point.model_version}, expected {payload} {version}"
        if point.vector.shape != vector.shape or not np.allclose(point.vector, vector, atol=atol):
            return f"{point.id}: vector {point.vector}, expected {vector}"
    return None


def _check_search(c: Collection, state: dict, atol: float, seed: int) -> None:
    """Each query's hits are the exact top 5 (cosine on each point's own length), with their payloads."""
    if not state:
        return
    ids = sorted(state)
    rng = np.random.default_rng(seed)
    for query_id in rng.choice(ids, size=min(4, len(ids)), replace=False):
        q = np.zeros(c.dim, np.float32)
        q[: len(state[query_id][0])] = state[query_id][0]
        q[len(state[query_id][0]) :] = rng.standard_normal(c.dim - len(state[query_id][0])) * 0.1
        expected = {}
        for point_id, (v, _, _) in state.items():
            prefix = q[: len(v)]
            expected[point_id] = float(prefix @ v / np.linalg.norm(prefix))
        first = c.info()["stage_one"]["dim"]
        hits = c.search(q, k=5, plan=f"{first}:200,{c.dim}:5" if first < c.dim else None)[0]
        assert hits[0].id == query_id
        best = sorted(expected.values(), reverse=True)[:5]
        np.testing.assert_allclose([h.score for h in hits], best, atol=atol)
        for h in hits:
            assert abs(h.score - expected[h.id]) <= atol
            assert (h.payload, h.model_version) == state[h.id][1:]


def _atol(scenario: str) -> float:
    return 2e-3 if SCENARIOS[scenario]["create"].get("vector_dtype") == "float16" else 1e-5


def _crash(c: Collection) -> None:
    """Leave ``c`` as a killed process would: files closed, nothing committed."""
    c._wal.close()
    os.close(c._lock_fd)


def check_crashed(scenario: str, root: Path, kill_at: int, models: list[tuple[int, dict]]) -> None:
    path = root / f"c{kill_at}"
    acked = len((root / f"c{kill_at}.acks").read_text().split())
    at = (root / f"c{kill_at}.point").read_text()
    atol = _atol(scenario)
    candidates = models[acked : acked + 2]  # the acknowledged state, or that and the operation in flight
    read_only = Collection.open(path, read_only=True)
    diffs = [_diff(read_only, dim, state, atol) for dim, state in candidates]
    assert None in diffs, f"killed at {at} after {acked} acknowledged operations (read-only): {diffs}"
    dim, state = candidates[diffs.index(None)]
    c = Collection.open(path)
    assert _diff(c, dim, state, atol) is None, f"killed at {at}: read-write open differs from read-only"
    _check_search(c, state, atol, kill_at)
    probe = np.ones((1, c.version_dim("m1")), np.float32)
    c.upsert(["probe"], probe, [{"probe": True}], model_version="m1")
    _crash(c)
    after = dict(state, probe=(probe[0] / np.linalg.norm(probe), {"probe": True}, "m1"))
    assert _diff(Collection.open(path, read_only=True), dim, after, atol) is None, f"killed at {at}: probe lost"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_sigkill_at_any_point_keeps_every_acknowledged_write(tmp_path, scenario):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, __file__, scenario, str(tmp_path), str(KILL_POINTS)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["total"] > KILL_POINTS
    assert all(status == signal.SIGKILL for status in report["runs"].values()), done.stderr[-3000:]
    models = states(scenario)
    for kill_at in report["runs"]:
        check_crashed(scenario, tmp_path, int(kill_at), models)


# -- failures inside a process: a disk that fails one call ---------------------------------------------------------
def _run_failing_at(scenario: str, path: Path, fail_at: int, monkeypatch) -> tuple[Collection, int | None, int]:
    """Run the scenario with the ``fail_at``-th fsync or rename raising EIO (rename: before it happens). Returns
    the collection, the operation that raised (None: none did), and how many calls there were. The other fsyncs
    do nothing: this process "crashes" by closing its files (``_crash``), which loses no page cache."""
    spec = SCENARIOS[scenario]
    c = Collection.create(path, spec["dim"], **spec["create"])
    calls, real_replace = [0], os.replace

    def failing(real):
        def call(*args, **kwargs):
            calls[0] += 1
            if calls[0] == fail_at:
                raise OSError(errno.EIO, "Input/output error")
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(os, "fsync", failing(lambda fd: None))
    monkeypatch.setattr(os, "replace", failing(real_replace))
    failed = None
    for i, op in enumerate(operations(scenario)):
        try:
            c = _do(c, op)
        except OSError:
            assert failed is None
            failed = i
            if op[0] in ("commit", "reconfigure", "reopen"):  # they change no point: as a caller would, try again
                c = _do(c, op)
    monkeypatch.undo()
    return c, failed, calls[0]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_failed_fsync_or_rename_anywhere_loses_no_acknowledged_write(tmp_path, monkeypatch, scenario):
    """One fsync or rename fails (EIO) somewhere in the scenario; the operation that raised may or may not have
    landed, every other one did: in memory, after a crash and reopen, and in a read-only copy alike."""
    _, _, total = _run_failing_at(scenario, tmp_path / "count", 0, monkeypatch)
    full = states(scenario)[-1]
    for fail_at in range(1, total + 1):
        path = tmp_path / f"c{fail_at}"
        c, failed, _ = _run_failing_at(scenario, path, fail_at, monkeypatch)
        candidates = [full] if failed is None else [full, states(scenario, skip=failed)[-1]]
        diffs = [_diff(c, dim, state, _atol(scenario)) for dim, state in candidates]
        assert None in diffs, f"call {fail_at} failed, operation {failed}: in memory {diffs}"
        dim, state = candidates[diffs.index(None)]
        _crash(c)
        for read_only in (True, False):
            again = Collection.open(path, read_only=read_only)
            assert _diff(again, dim, state, _atol(scenario)) is None, f"call {fail_at}, operation {failed}: reopened"
        again.close()


def _fail_the_directory_fsync_after(name: str, nth: int = 1):
    """An ``os.fsync`` whose ``nth`` call on a directory right after one on a file named ``name`` fails (EIO):
    the rename of an atomic write happened, making it durable did not."""
    real, names, seen = os.fsync, [], [0]

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isdir(target) and names and names[-1] == name:
            seen[0] += 1
            if seen[0] == nth:
                raise OSError(errno.EIO, "Input/output error")
        names.append(os.path.basename(target))
        real(fd)

    return fsync


@pytest.mark.parametrize("call", ["commit", "reconfigure", "set_default_plan"])
def test_a_manifest_renamed_before_its_directory_fsync_failed_is_the_state_in_memory(tmp_path, monkeypatch, call):
    """The call raised, but its new manifest is on disk (every reader opens it): memory must hold it too, or the
    writes acknowledged after it go to a log that generation never reads (lost at the next open), or a later
    commit silently takes back the new default plan."""
    v = nested_vectors(12, 8)
    c = Collection.create(tmp_path / "c", 8)
    c.upsert([f"p{i}" for i in range(10)], v[:10])
    nth = 2 if call == "reconfigure" else 1  # a widening commits twice: the second manifest holds the new dim
    monkeypatch.setattr(os, "fsync", _fail_the_directory_fsync_after("manifest.json.tmp", nth))
    with pytest.raises(OSError):
        if call == "commit":
            c.commit()
        elif call == "reconfigure":
            c.reconfigure(dim=12)
        else:
            c.set_default_plan("4:20,8:10")
    monkeypatch.undo()
    on_disk = Collection.open(tmp_path / "c", read_only=True)
    assert (c.generation, c.dim, str(c.default_plan)) == (on_disk.generation, on_disk.dim, str(on_disk.default_plan))
    c.upsert(["late"], v[10:11])  # acknowledged
    c.delete(["p0"])
    if call == "set_default_plan":
        c.close()  # a commit writes the manifest held in memory
    else:
        _crash(c)
    reopened = Collection.open(tmp_path / "c")
    assert sorted(reopened.ids()) == sorted([f"p{i}" for i in range(1, 10)] + ["late"])
    np.testing.assert_allclose(reopened.get(["late"])[0].vector[:8], v[10] / np.linalg.norm(v[10]), atol=1e-6)
    assert (reopened.dim, str(reopened.default_plan)) == (on_disk.dim, str(on_disk.default_plan))
    reopened.close()


def _fail_fsync(fd):
    raise OSError(errno.EIO, "Input/output error")


class _FailingDisk:
    """A WAL file on a failing disk: half of the next write lands, then ENOSPC, and cutting it back fails (EIO)."""

    def __init__(self, real):
        self._real = real

    def write(self, data):
        self._real.write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def truncate(self, size):
        raise OSError(errno.EIO, "Input/output error")

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_a_torn_record_that_could_not_be_cut_back_hides_no_later_write(tmp_path):
    """A failed append whose cutting back failed too leaves half a record in the log: the next acknowledged write
    must not land after it (every reader stops at a torn record)."""
    v = nested_vectors(3, 8)
    c = Collection.create(tmp_path / "c", 8)
    c.upsert(["a"], v[:1])
    real = c._wal._file
    c._wal._file = _FailingDisk(real)
    with pytest.raises(OSError):
        c.upsert(["failed"], v[1:2])
    c._wal._file = real
    c.upsert(["b"], v[2:3])  # acknowledged
    _crash(c)
    for read_only in (True, False):
        reopened = Collection.open(tmp_path / "c", read_only=read_only)
        assert [p is not None for p in reopened.get(["a", "failed", "b"])] == [True, False, True]
    reopened.close()


def test_an_open_that_failed_leaves_the_collection_unlocked(tmp_path):
    """A read-write open that fails (a segment unreadable for a while) must let go of the write lock: the next
    open in the same process works once the file is back."""
    c = Collection.create(tmp_path / "c", 8)
    c.upsert([f"p{i}" for i in range(10)], nested_vectors(10, 8))
    c.close()
    segment = next((tmp_path / "c").glob("seg-*.vec.npy"))
    segment.rename(tmp_path / "aside")
    with pytest.raises(OSError):
        Collection.open(tmp_path / "c")
    (tmp_path / "aside").rename(segment)
    c = Collection.open(tmp_path / "c")
    assert len(c) == 10
    c.close()


def test_a_close_whose_commit_failed_lets_go_of_the_collection(tmp_path, monkeypatch):
    """``close()`` commits; when that fails (EIO) it raises, but must not keep the write lock: the next open in
    the same process works and replays every acknowledged write from the WAL."""
    v = nested_vectors(10, 8)
    c = Collection.create(tmp_path / "c", 8)
    c.upsert([f"p{i}" for i in range(10)], v)
    c.delete(["p3"])
    monkeypatch.setattr(os, "fsync", _fail_fsync)
    with pytest.raises(OSError):
        c.close()
    monkeypatch.undo()
    c = Collection.open(tmp_path / "c")
    assert sorted(c.ids()) == sorted(f"p{i}" for i in range(10) if i != 3)
    np.testing.assert_allclose(c.get(["p7"])[0].vector, v[7] / np.linalg.norm(v[7]), atol=1e-6)
    c.close()


def test_an_ivf_collection_commits_and_closes_below_its_training_size(tmp_path):
    """IVF trains on 39 vectors per list: a commit (or the close that commits) of fewer live rows, before the
    index first trained or after a compaction, must still commit: not raise and leave the write lock held."""
    v = nested_vectors(100, 8)
    ids = [f"p{i}" for i in range(100)]
    c = Collection.create(tmp_path / "c", 8, stage_one="IVF2,Flat", stage_one_params="nprobe=2")  # trains on 78
    c.upsert(ids[:50], v[:50])
    c.close()
    c = Collection.open(tmp_path / "c")
    c.upsert(ids[50:], v[50:])
    c.commit()
    assert c.generation == 2 and (tmp_path / "c" / "stage1-000002.faiss").exists()
    assert c.search(v[70], k=1)[0][0].id == "p70"
    c.delete(ids[:70])
    c.commit(compact=True)
    c.close()
    c = Collection.open(tmp_path / "c", read_only=True)
    assert sorted(c.ids()) == sorted(ids[70:])
    np.testing.assert_allclose(c.get(["p80"])[0].vector, v[80] / np.linalg.norm(v[80]), atol=1e-6)


def test_a_wal_cut_at_any_byte_keeps_exactly_its_whole_records(tmp_path):
    """A log cut anywhere (a crash mid-append) opens, read-only and read-write, with exactly the records wholly
    before the cut; the next write follows the last of them and is found after a crash."""
    scenario, models = "flat", states("flat")
    ops = operations(scenario)[:3]  # two upserts and a delete, all in the log (no commit)
    spec = SCENARIOS[scenario]
    c = Collection.create(tmp_path / "c", spec["dim"], **dict(spec["create"], flush_rows=1000))
    manifest, ends = (tmp_path / "c" / "manifest.json").read_text(), []
    for op in ops:
        _do(c, op)
        ends.append(c._wal.path.stat().st_size)
    log = c._wal.path.read_bytes()
    _crash(c)
    cuts = sorted({*range(0, len(log), 61), *(e + d for e in ends for d in (-1, 0, 1) if 0 <= e + d <= len(log))})
    for cut in cuts:
        path = tmp_path / f"cut{cut}"
        path.mkdir()
        (path / "manifest.json").write_text(manifest)
        (path / "wal-000000.log").write_bytes(log[:cut])
        whole = sum(e <= cut for e in ends)
        dim, state = models[whole]
        for read_only in (True, False):
            again = Collection.open(path, read_only=read_only)
            assert _diff(again, dim, state, 1e-5) is None, f"cut at byte {cut} of {len(log)}"
        again.upsert(["late"], np.ones((1, dim), np.float32))
        _crash(again)
        assert len(Collection.open(path, read_only=True)) == len(state) + 1, f"cut at byte {cut}"


if __name__ == "__main__":
    drive(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
