"""``telescope serve``: the gRPC server over a directory of collections, until SIGTERM or Ctrl-C.

Prints ``listening on HOST:PORT`` as soon as it answers (health NOT_SERVING), loads the collections and their
models, then reports SERVING. SIGTERM or SIGINT: NOT_SERVING, calls in flight drain (up to ``--grace``
seconds), every collection is committed, exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    data: Annotated[Path, typer.Option("--data", help="Directory of collections (one sub-directory each; created if missing).")],
    host: Annotated[str, typer.Option(help="Address to bind. 127.0.0.1 unless told otherwise (0.0.0.0 exposes it).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind; 0 picks a free one (printed).")] = 50051,
    token: Annotated[Optional[str], typer.Option(help="Require 'authorization: Bearer TOKEN' on every call but health.", envvar="TELESCOPE_TOKEN")] = None,
    token_file: Annotated[Optional[Path], typer.Option(help="Read the token from the first line of this file.")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option(help="PEM certificate chain: serve TLS (with --tls-key).")] = None,
    tls_key: Annotated[Optional[Path], typer.Option(help="PEM private key of --tls-cert.")] = None,
    model: Annotated[str, typer.Option(help="Model for Embed calls and new collections: 'default' or a folder.")] = "default",
    max_workers: Annotated[int, typer.Option(help="Threads for the calls not answered on the event loop (text queries, writes, embeds, long searches).")] = 16,
    grace: Annotated[float, typer.Option(help="Seconds calls in flight may take to finish at shutdown.")] = 30.0,
    gzip: Annotated[bool, typer.Option(help="Compress responses with gzip for clients that accept it.")] = True,
    compute_threads: Annotated[int, typer.Option(help="torch and FAISS threads per call (calls run in parallel).")] = 1,
    switch_interval_ms: Annotated[float, typer.Option(help="How long a Python thread may hold the GIL while others wait (sys.setswitchinterval).")] = 5.0,
    search_processes: Annotated[int, typer.Option(help="Replica processes answering plain vector searches on other cores, each with its own copy of the collections it searches (memory); 0: none.")] = 0,
    keepalive_s: Annotated[float, typer.Option(help="Ping each client this often; one that does not answer within 20 s is dropped and its calls end.")] = 60.0,
    max_concurrent_rpcs: Annotated[int, typer.Option(help="Telescope calls at once; more get RESOURCE_EXHAUSTED (health checks are not counted).")] = 256,
) -> None:
    """Serve the collections under --data over gRPC (telescope.v1 + health + reflection)."""
    from telescope.server.app import ServerConfig, TelescopeServer, set_compute_threads, set_switch_interval
    from telescope.server.auth import read_token
    from telescope.server.limits import Limits

    if max_concurrent_rpcs < 1:
        raise ValueError(f"--max-concurrent-rpcs: expected an integer >= 1, got {max_concurrent_rpcs}")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServerConfig(
        data_dir=data, host=host, port=port, token=read_token(token or None, token_file),
        tls_cert=tls_cert, tls_key=tls_key, model=model, max_workers=max_workers, gzip=gzip,
        search_processes=search_processes, limits=Limits(max_concurrent_rpcs=max_concurrent_rpcs), keepalive_s=keepalive_s,
    )
    set_compute_threads(compute_threads)
    set_switch_interval(switch_interval_ms)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    server = TelescopeServer(config)
    server.start()
    auth = "token" if config.token else "no auth"
    print(f"listening on {server.target} ({'TLS' if tls_cert else 'plaintext'}, {auth}); loading collections", flush=True)
    start = time.perf_counter()
    try:
        names = server.load()
    except BaseException:
        server.stop(0)  # a collection or model that cannot load: release the port and the locks, then report it
        raise
    print(f"SERVING {len(names)} collection(s) {names} from {data} (loaded in {time.perf_counter() - start:.1f} s)", flush=True)
    while not stop.wait(1.0):
        pass
    print(f"stopping: draining calls in flight (up to {grace:g} s)", flush=True)
    committed = server.stop(grace)
    print(f"stopped; committed {len(committed)} collection(s) {committed}", flush=True)
