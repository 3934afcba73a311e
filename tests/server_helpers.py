"""Real telescope gRPC servers on loopback ports for the server tests (no mocked gRPC).

``running_server`` starts a ``TelescopeServer`` in this process on port 0 (the bound port is read back) with
the tiny test model; ``ServerProcess`` (telescope.server.process) runs ``telescope serve`` as a child process.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from index_helpers import nested_vectors
from telescope.server.app import ServerConfig, TelescopeServer
from telescope.server.client import Client

DIM = 64  # the tiny model's dim


@contextlib.contextmanager
def running_server(data_dir: Path, model: Path, load: bool = True, **config) -> Iterator[TelescopeServer]:
    server = TelescopeServer(ServerConfig(data_dir=data_dir, port=0, model=str(model), max_workers=8, **config))
    server.start()
    try:
        if load:
            server.load()
        yield server
    finally:
        server.stop(grace=2.0)


def fill(client: Client, name: str, n: int = 200, plan: str = "16:50,64:10") -> np.ndarray:
    """A collection of ``n`` nested vectors p0..p{n-1} with payloads {group: i % 3, name: p<i>}; returns the vectors."""
    client.create_collection(name, plan=plan)
    vectors = nested_vectors(n, DIM, seed=1)
    payloads = [{"group": i % 3, "name": f"p{i}", "even": i % 2 == 0} for i in range(n)]
    client.upsert(name, [f"p{i}" for i in range(n)], vectors=vectors, payloads=payloads)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 / localhost made with the openssl command."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key
