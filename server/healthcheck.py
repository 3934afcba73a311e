"""``python -m telescope.server.healthcheck [HOST:PORT]``: exit 0 when the server's grpc.health.v1 says SERVING.

For container health checks (Dockerfile HEALTHCHECK, docker-compose ``healthcheck``); the health service needs
no token.
"""

from __future__ import annotations

import os
import sys

from telescope.server.client import Client, RemoteError


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = args[0] if args else "127.0.0.1:50051"
    with Client(target, tls_ca=os.environ.get("TELESCOPE_TLS_CA")) as client:
        try:
            status = client.health(timeout=3.0)
        except RemoteError as e:
            print(f"{target}: {e}", file=sys.stderr)
            return 1
    print(f"{target}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
