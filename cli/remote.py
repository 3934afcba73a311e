"""``--remote HOST:PORT`` for ``telescope search`` and ``telescope index add``: the same work through the gRPC
client (telescope.server.client) instead of a collection on local disk. PATH names a collection on the server;
the server embeds texts with the collection's model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from telescope.index import Hit

CALL_TIMEOUT = 600.0  # seconds, the deadline of each call (index add: of each batch, not of the whole file)


def _client(remote: str, token: str | None, tls_ca: Path | None):
    from telescope.server.client import Client

    if ":" not in remote:
        raise ValueError(f"--remote: expected HOST:PORT, got {remote!r}")
    return Client(remote, token=token or None, tls_ca=tls_ca, timeout=CALL_TIMEOUT)


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
    """Send the documents to the server (it embeds them), one ``Points.Upsert`` call per batch of ``batch_size``,
    each with its own deadline, so a file of any size fits; returns the summary line. A failed batch raises
    ``RemoteError`` saying how many documents the batches before it wrote (each batch is durable once answered)."""
    from telescope.embedder.progress import progress_bar
    from telescope.server.client import RemoteError

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size: expected an integer >= 1, got {batch_size!r}")
    upserted = truncated = points = 0
    with _client(remote, token, tls_ca) as client, progress_bar("upserting", len(ids), unit="docs") as advance:
        for start in range(0, len(ids), batch_size):
            stop = start + batch_size
            batch = {"ids": ids[start:stop], "texts": texts[start:stop], "payloads": payloads[start:stop]}
            try:
                response = client.upsert(collection, **batch)
            except RemoteError as e:
                raise RemoteError(e.method, e.code, f"documents[{start}:{stop}]: {e.details} ({upserted} documents of "
                                  "earlier batches were written)") from None
            upserted, truncated = upserted + response.upserted, truncated + response.truncated_texts
            points = response.points
            advance(len(batch["ids"]))
        if not ids:
            points = client.get_collection(collection).points
    return (
        f"added {upserted} points ({truncated} truncated texts) to {collection!r} on {remote}; "
        f"{points} in collection"
    )
