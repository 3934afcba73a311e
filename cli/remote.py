"""``--remote HOST:PORT`` for ``telescope search`` and ``telescope index add``: the same work through the gRPC
client (telescope.server.client) instead of a collection on local disk. PATH names a collection on the server;
the server embeds texts with the collection's model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from telescope.index import Hit


def _client(remote: str, token: str | None, tls_ca: Path | None):
    from telescope.server.client import Client

    if ":" not in remote:
        raise ValueError(f"--remote: expected HOST:PORT, got {remote!r}")
    return Client(remote, token=token or None, tls_ca=tls_ca, timeout=600.0)


def remote_search(
    remote: str, token: str | None, tls_ca: Path | None, collection: str, queries: Sequence[str], k: int,
    plan: str | None,
) -> tuple[list[list[Hit]], str]:
    """Hits per query text, and a line of timings."""
    with _client(remote, token, tls_ca) as client:
        start = time.perf_counter()
        results = client.search_batch(collection, list(queries), k=k, plan=plan)
        ms = 1000 * (time.perf_counter() - start)
    first = results[0]
    return [r.hits for r in results], (
        f"remote {remote}: round trip {ms:.1f} ms (server: embed {first.embed_ms:.1f} ms, "
        f"search {first.search_ms:.1f} ms), plan {first.plan}"
    )


def remote_add(
    remote: str, token: str | None, tls_ca: Path | None, collection: str, ids: Sequence[str], texts: Sequence[str],
    payloads: Sequence[dict], batch_size: int,
) -> str:
    """Stream the documents to the server in batches (it embeds them); returns the summary line."""
    with _client(remote, token, tls_ca) as client:
        batches = (
            {"ids": ids[i : i + batch_size], "texts": texts[i : i + batch_size], "payloads": payloads[i : i + batch_size]}
            for i in range(0, len(ids), batch_size)
        )
        response = client.upsert_stream(collection, batches)
    return (
        f"added {response.upserted} points ({response.truncated_texts} truncated texts) to {collection!r} on {remote}; "
        f"{response.points} in collection"
    )
