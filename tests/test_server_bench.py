"""The serving benchmark's load generator against a real server: every call counted, none lost across processes."""

from __future__ import annotations

import pytest

from server_helpers import fill, running_server
from telescope.server.app import set_switch_interval
from telescope.server.bench import Searches, run_clients
from telescope.server.client import Client


@pytest.mark.parametrize("processes", [1, 2])
def test_closed_loop_clients_in_one_and_two_processes(tmp_path, tiny_model_path, processes):
    with running_server(tmp_path / "data", tiny_model_path) as server, Client(server.target) as client:
        vectors = fill(client, "c", n=100)
        # long enough that spawned processes, slow to make their first call on a loaded machine, measure some
        result = run_clients(server.target, Searches("c", vectors[:10], 5), clients=3, seconds=1.5, warmup=0.5,
                             query="vector", processes=processes)
    assert result.errors == 0 and result.client_processes == min(processes, 3)
    assert result.requests > 0 and result.calls_total >= result.requests
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms


def test_errors_are_counted_not_raised(tmp_path, tiny_model_path):
    with running_server(tmp_path / "data", tiny_model_path) as server, Client(server.target) as client:
        vectors = fill(client, "c", n=50)
        result = run_clients(server.target, Searches("missing", vectors[:2], 5), clients=2, seconds=0.3, warmup=0.0)
    assert result.requests == 0 and result.errors > 0 and set(result.error_codes) == {"NOT_FOUND"}


@pytest.mark.parametrize("ms", [0, -1, 1001])
def test_switch_interval_out_of_range_is_refused(ms):
    with pytest.raises(ValueError, match="--switch-interval-ms"):
        set_switch_interval(ms)


def test_canned_server_answers_every_search_with_its_response():
    import numpy as np

    from telescope.server.bench import CannedServer
    from telescope.server.hits import PayloadCache, search_response

    response = search_response([("a", 0.5, '{"n": 1}', "m:1"), ("b", 0.25, "{}", "m:1")], True, PayloadCache())
    response.plan = "16:10"
    with CannedServer(response.SerializeToString()) as server, Client(server.target) as client:
        for query in (np.ones(8, dtype=np.float32), np.arange(1, 5, dtype=np.float32)):
            result = client.search("any", vector=query, k=3)
            assert [(h.id, h.score, h.payload) for h in result.hits] == [("a", 0.5, {"n": 1}), ("b", 0.25, {})]
            assert result.plan == "16:10"


def test_report_names_the_cpus_the_benchmark_could_use():
    """Under ``taskset -c 0`` the server and clients share one CPU: the report must not say the machine's two."""
    from telescope.cli.bench_serve import _cpus

    assert _cpus({"cpus": 2, "cpus_machine": 2}) == "2 CPUs"
    assert _cpus({"cpus": 1, "cpus_machine": 2}) == "1 of 2 CPUs (CPU affinity)"
    assert _cpus({"cpus": 2}) == "2 CPUs"  # reports written before cpus_machine was recorded
