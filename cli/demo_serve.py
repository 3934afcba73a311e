"""The demo's last act: the same collection served over gRPC, as users meet it.

Starts ``telescope serve`` on the demo's data directory (a child process on a free loopback port), sends the
example queries through the Python client, prints hits with the round-trip and server-side times, then stops
the server with SIGTERM and checks that it drained, committed and exited 0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console


def show_service(data_dir: Path, collection: str, examples: Sequence[str], k: int = 3, console: Console | None = None) -> None:
    from telescope.server.client import Client
    from telescope.server.process import ServerProcess

    console = console or Console()
    console.print(f"\n[bold]Over gRPC[/]: telescope serve --data {data_dir} --port 0")
    start = time.perf_counter()
    server = ServerProcess(data_dir).start()
    try:
        console.print(f"  SERVING on {server.target} after {time.perf_counter() - start:.1f} s (health: grpc.health.v1)")
        with Client(server.target) as client:
            info = client.get_collection(collection)
            console.print(f"  collection {info.name!r}: {info.points:,} points, plan {info.default_plan}, model {info.model_version}")
            client.search(collection, text=examples[0], k=k)  # first call opens the channel
            for text in examples:
                t0 = time.perf_counter()
                result = client.search(collection, text=text, k=k)
                ms = 1000 * (time.perf_counter() - t0)
                console.print(
                    f"  [cyan]{text}[/]  (round trip {ms:.1f} ms: server embed {result.embed_ms:.1f} ms, "
                    f"search {result.search_ms:.2f} ms)"
                )
                for hit in result.hits:
                    payload = hit.payload
                    console.print(f"    {hit.score:.3f}  {payload.get('lemmas', hit.id)}: {str(payload.get('text', ''))[:90]}")
            t0 = time.perf_counter()
            batch = client.search_batch(collection, list(examples), k=k)
            console.print(
                f"  SearchBatch of all {len(batch)} queries in one call: {1000 * (time.perf_counter() - t0):.1f} ms"
            )
    finally:
        code = server.stop()
    committed = [line for line in server.lines if line.startswith("stopped")]
    console.print(f"  SIGTERM: server drained and exited with status {code}; {committed[-1] if committed else 'no stop line'}")
    if code != 0:
        raise RuntimeError(f"server: expected exit status 0 after SIGTERM, got {code}:\n{server.output()}")
