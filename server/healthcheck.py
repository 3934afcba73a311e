"""``python -m telescope.server.healthcheck [HOST:PORT]``: exit 0 when the server's grpc.health.v1 says SERVING.

For container health checks (Dockerfile HEALTHCHECK, docker-compose ``healthcheck``); the health service needs
no token. TELESCOPE_TLS_CA names the CA certificate of a server that serves TLS (unset or empty: plaintext).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from telescope.server.client import Client, RemoteError

TLS_CA = "TELESCOPE_TLS_CA"


def tls_ca() -> bytes | None:
    """The CA certificate TELESCOPE_TLS_CA names, None when unset or empty; OSError naming the variable and path."""
    path = os.environ.get(TLS_CA) or None
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise OSError(f"{TLS_CA}: expected a readable CA certificate file, got {path!r} ({e.strerror})") from None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = args[0] if args else "127.0.0.1:50051"
    try:
        ca = tls_ca()
    except OSError as e:
        print(f"{target}: {e}", file=sys.stderr)
        return 1
    with Client(target, tls_ca=ca) as client:
        try:
            status = client.health(timeout=3.0)
        except RemoteError as e:
            print(f"{target}: {e}", file=sys.stderr)
            return 1
    print(f"{target}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
