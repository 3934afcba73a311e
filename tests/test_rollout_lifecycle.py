"""A rollout as a user lives it end to end: ``telescope rollout`` refusing bad input before it switches the
collection, collections whose text is not under ``text`` (the field is recorded, so the server's backfill and a
later ``--abort`` read it too), a server answering text queries of the old version whatever its default model,
and a backfill's report counting every point it set out to do."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cli_helpers import run_cli as _run_cli
from server_helpers import running_server
from telescope.index import Collection
from telescope.pipelines.rollout import rollout_status, run_backfill, start_rollout
from telescope.server.client import Client
from test_rollout_backfill import QUERIES, TEXTS, make_collection, new_embedder, new_model_path  # noqa: F401 (fixtures)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code, out, err = _run_cli(argv, capsys)
    return code, out, " ".join(err.split())


def build_with_body(path: Path, model: Path, capsys) -> None:
    """A collection built from a source whose text column is ``body``: the payloads hold the text there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    source = path.parent / f"{path.name}.jsonl"
    source.write_text("".join(json.dumps({"id": f"d{i}", "body": t}) + "\n" for i, t in enumerate(TEXTS)))
    code, _, err = run_cli(["index", "build", str(path), "--source", str(source), "--text-column", "body",
                            "--model", str(model), "--no-progress"], capsys)
    assert code == 0, err


def assert_untouched(path: Path) -> None:
    with Collection.open(path, read_only=True) as c:
        assert "rollout" not in c.properties and c.dim == 64 and c.properties["model_version"] == "tiny-bert:1"


def test_bad_backfill_options_are_refused_before_the_collection_switches(tmp_path, tiny_embedder, tiny_model_path,
                                                                         new_model_path, capsys):  # noqa: F811
    make_collection(tmp_path / "c", tiny_embedder, tiny_model_path).close()
    for option, message in ((["--batch-size", "0"], "batch_size: expected an integer >= 1, got 0"),
                            (["--rate", "0"], "rate: expected points per second > 0 (or none for no limit), got 0.0")):
        code, _, err = run_cli(["rollout", str(tmp_path / "c"), "--model", str(new_model_path), *option], capsys)
        assert code == 2 and message in err
        assert_untouched(tmp_path / "c")  # exit 2 means nothing happened: no half-started rollout


def test_a_missing_text_field_is_refused_before_the_collection_switches(tmp_path, tiny_model_path, new_model_path,
                                                                        capsys):  # noqa: F811
    build_with_body(tmp_path / "c", tiny_model_path, capsys)
    argv = ["rollout", str(tmp_path / "c"), "--model", str(new_model_path)]
    code, _, err = run_cli([*argv, "--text-field", "text"], capsys)
    assert code == 2 and "payload['text'] of point 'd0': expected the text to re-embed, got None" in err
    assert_untouched(tmp_path / "c")
    assert run_cli([*argv, "--text-field", "body", "--no-backfill"], capsys)[0] == 0
    code, _, err = run_cli([*argv, "--text-field", "title"], capsys)  # a resume naming a field the points lack
    assert code == 2 and "payload['title'] of point 'd0': expected the text to re-embed, got None" in err
    code, out, err = run_cli(argv, capsys)  # a resume without --text-field: the recorded one
    assert code == 0, err
    status = json.loads(out[out.index("{"):])
    assert (status["state"], status["backfilled"], status["text_field"]) == ("complete", 40, "body")


def test_the_server_resumes_a_rollout_with_the_text_field_it_was_started_with(tmp_path, tiny_model_path,
                                                                              new_model_path, capsys):  # noqa: F811
    data = tmp_path / "data"
    build_with_body(data / "docs", tiny_model_path, capsys)
    code, _, err = run_cli(["rollout", str(data / "docs"), "--model", str(new_model_path), "--text-field", "body",
                            "--no-backfill"], capsys)
    assert code == 0, err
    with running_server(data, tiny_model_path) as server, Client(server.target) as client:
        deadline = time.monotonic() + 60
        while (r := client.get_collection("docs").rollout).state != "complete":
            assert r.backfill_error == "" and time.monotonic() < deadline, r
            time.sleep(0.1)
    with Collection.open(data / "docs", read_only=True) as c:
        assert c.info()["model_versions"] == {"tiny-bt2:1": 40} and rollout_status(c).state == "complete"


def test_an_abort_can_name_the_text_field_and_later_backfills_use_it(tmp_path, tiny_model_path, new_model_path,
                                                                     capsys):  # noqa: F811
    build_with_body(tmp_path / "c", tiny_model_path, capsys)
    path = str(tmp_path / "c")
    assert run_cli(["rollout", path, "--model", str(new_model_path), "--text-field", "body"], capsys)[0] == 0
    code, _, err = run_cli(["rollout", path, "--abort", "--text-field", "title", "--no-backfill"], capsys)
    assert code == 2 and "payload['title'] of point 'd0': expected the text to re-embed, got None" in err
    with Collection.open(path, read_only=True) as c:
        assert rollout_status(c).state == "complete"  # the refused abort changed nothing
    code, out, err = run_cli(["rollout", path, "--abort"], capsys)  # the recorded field: body
    assert code == 0, err
    assert json.loads(out[out.index("{"):])["state"] == "aborted"


def test_a_text_search_of_the_old_version_on_a_server_whose_default_model_is_another(
        tmp_path, tiny_embedder, tiny_model_path, new_embedder, new_model_path):  # noqa: F811
    """``telescope serve`` holds its default model and the collections' own: during a rollout the old model (no
    longer the collection's) embeds a text query of the old version all the same."""
    data = tmp_path / "data"
    c = make_collection(data / "docs", tiny_embedder, tiny_model_path)
    start_rollout(c, new_embedder, str(new_model_path))
    c.close()
    with running_server(data, new_model_path, load=False) as server, Client(server.target) as client:
        server.state.registry.backfill_rate, server.state.registry.backfill_batch_size = 0.01, 1  # 1 point per 100 s
        server.load()
        deadline = time.monotonic() + 30
        while client.get_collection("docs").rollout.backfilled < 1:  # then nothing changes for 100 s
            assert time.monotonic() < deadline, "the background backfill did not start"
            time.sleep(0.05)
        result = client.search("docs", k=5, model_version="tiny-bert:1", text=QUERIES[0])
        with Collection.open(data / "docs", read_only=True) as c:
            expected = c.search(tiny_embedder.encode(QUERIES[:1]), k=5, model_version="tiny-bert:1")[0]
        assert [h.id for h in result.hits] == [h.id for h in expected]
        assert {h.model_version for h in result.hits} == {"tiny-bert:1"}


def test_points_rewritten_by_the_new_model_meanwhile_count_as_skipped(tmp_path, tiny_embedder, tiny_model_path,
                                                                      new_embedder, new_model_path):  # noqa: F811
    """The CLI prints "N re-embedded, M skipped (changed meanwhile)": every point the backfill set out to do is one
    or the other, also one an ingest with the new model wrote before the backfill reached it."""
    c = make_collection(tmp_path / "c", tiny_embedder, tiny_model_path)
    start_rollout(c, new_embedder, str(new_model_path))

    def ingest_meanwhile(report):
        if report.batches == 1:
            c.upsert(["d30"], new_embedder.encode(["rewritten"]), [{"text": "rewritten"}], model_version="tiny-bt2:1")

    report = run_backfill(c, new_embedder, batch_size=8, show_progress=False, on_batch=ingest_meanwhile)
    assert (report.written, report.skipped, report.remaining) == (39, 1, 0)
    assert c.get(["d30"])[0].payload == {"text": "rewritten"} and rollout_status(c).state == "complete"
    c.close()


def test_a_collection_built_from_another_text_column_keeps_texts_there(tmp_path, tiny_model_path, new_model_path,
                                                                       capsys):  # noqa: F811
    """index build --text-column body records it: the server's text upserts store their text under body too, and
    a rollout backfills from body without being told."""
    data = tmp_path / "data"
    build_with_body(data / "docs", tiny_model_path, capsys)
    with running_server(data, tiny_model_path) as server, Client(server.target) as client:
        client.upsert("docs", ["late"], texts=["a late document"])
        assert client.get("docs", ["late"])[0].payload == {"body": "a late document"}
    code, out, err = run_cli(["rollout", str(data / "docs"), "--model", str(new_model_path)], capsys)
    assert code == 0, err
    status = json.loads(out[out.index("{"):])
    assert (status["state"], status["backfilled"], status["text_field"]) == ("complete", 41, "body")


@pytest.mark.parametrize("state, refused, message", [
    ("backfilling", None, None),
    ("aborting", None, None),
    ("complete", "a:1", "model_version: expected '' or 'b:1' (the rollout from 'a:1' is complete), got 'a:1'"),
    ("aborted", "b:1", "model_version: expected '' or 'a:1' (the rollout to 'b:1' was aborted), got 'b:1'"),
])
def test_only_a_finished_rollout_refuses_the_version_it_left(tmp_path, state, refused, message):
    from telescope.pipelines.rollout import check_writable_version

    record = {"state": state, "from": {"model_version": "a:1"}, "to": {"model_version": "b:1"}}
    with Collection.create(tmp_path / "c", 8, properties={"rollout": record}) as c:
        for version in ("a:1", "b:1", "c:1"):
            if version == refused:
                with pytest.raises(ValueError) as e:
                    check_writable_version(c, version)
                assert str(e.value) == message
            else:
                check_writable_version(c, version)
