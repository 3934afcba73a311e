"""`telescope serve` as a child process: token file, the CLI's --remote, and SIGTERM draining a call in flight
and committing every collection before exit 0."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from server_helpers import DIM
from telescope.cli.main import main
from telescope.index import Collection
from telescope.server.client import Client, RemoteError
from telescope.server.process import ServerProcess

from cli_helpers import run_cli  # noqa: E402

TOKEN = "process-token"




@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_path):
    folder = tmp_path_factory.mktemp("served")
    (folder / "token").write_text(TOKEN + "\n")
    process = ServerProcess(folder / "data", args=["--token-file", str(folder / "token"), "--model", str(tiny_model_path)])
    process.start()
    try:
        yield process, folder
    finally:
        process.kill()


def test_serves_on_a_free_loopback_port_and_requires_the_token(served):
    process, _ = served
    assert process.port and "listening on 127.0.0.1:" in process.output()
    with Client(process.target) as anonymous:
        assert anonymous.health() == "SERVING"
        with pytest.raises(RemoteError, match="UNAUTHENTICATED"):
            anonymous.list_collections()


def test_cli_index_add_and_search_remote(served, capsys, monkeypatch):
    process, folder = served
    with Client(process.target, token=TOKEN) as client:
        client.create_collection("docs", plan="16:20,64:5")
    docs = folder / "docs.jsonl"
    rows = [("d0", "cats purr and sleep"), ("d1", "dogs bark at night"), ("d2", "stock prices rose")]
    docs.write_text("\n".join(json.dumps({"id": i, "text": t, "lang": "en"}) for i, t in rows))
    monkeypatch.setenv("TELESCOPE_TOKEN", TOKEN)
    code, out, err = run_cli(["index", "add", "docs", str(docs), "--remote", process.target, "--batch-size", "2"], capsys)
    assert code == 0, err
    assert "added 3 points" in out and "3 in collection" in out
    code, out, err = run_cli(["search", "docs", "dogs bark at night", "-k", "2", "--remote", process.target], capsys)
    assert code == 0, err
    assert "d1" in out and "round trip" in out and "plan 16:20,64:2" in out
    code, out, err = run_cli(["search", "nope", "x", "--remote", process.target], capsys)
    assert code == 2 and "NOT_FOUND" in err and "got 'nope'" in err
    monkeypatch.delenv("TELESCOPE_TOKEN")
    code, out, err = run_cli(["search", "docs", "x", "--remote", process.target], capsys)
    assert code == 2 and "UNAUTHENTICATED" in err


def test_sigterm_drains_the_call_in_flight_and_commits(served):
    process, folder = served
    vectors = np.random.default_rng(2).standard_normal((50, DIM)).astype(np.float32)
    first_sent = threading.Event()

    def batches():
        for j in range(0, 50, 10):
            yield {"ids": [f"v{i}" for i in range(j, j + 10)], "vectors": vectors[j : j + 10]}
            first_sent.set()
            time.sleep(0.3)  # the stream is still open when SIGTERM arrives

    outcome: dict = {}

    def stream() -> None:
        with Client(process.target, token=TOKEN) as client:
            client.create_collection("drain")
            try:
                outcome["response"] = client.upsert_stream("drain", batches())
            except Exception as e:  # noqa: BLE001
                outcome["error"] = e

    thread = threading.Thread(target=stream)
    thread.start()
    assert first_sent.wait(30)
    time.sleep(0.1)
    assert process.stop(timeout=60) == 0, process.output()
    thread.join(30)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["response"].upserted == 50
    stopped = [line for line in process.lines if line.startswith("stopped; committed")]
    assert stopped and "'drain'" in stopped[-1], process.output()
    for name in (p.name for p in (folder / "data").iterdir() if (p / "manifest.json").exists()):
        collection = Collection.open(folder / "data" / name, read_only=True)
        assert collection.info()["uncommitted_writes"] == 0, name
        assert name != "drain" or len(collection) == 50
