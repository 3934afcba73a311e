"""The limits a server enforces so that it keeps serving whatever a client sends.

Over a size limit a request fails with RESOURCE_EXHAUSTED (``LimitExceeded``) before any work; a message over
``max_message_bytes`` is refused by gRPC itself with the same code; more than ``max_concurrent_rpcs`` calls at
once are refused by gRPC with RESOURCE_EXHAUSTED. ``max_k`` is a bound on a field's value, so a larger ``k`` is
INVALID_ARGUMENT.
"""

from __future__ import annotations

from dataclasses import dataclass

from telescope.server.errors import LimitExceeded

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 64 * MIB
    max_concurrent_rpcs: int = 256
    max_k: int = 1_000
    max_points_per_request: int = 10_000
    max_ids_per_request: int = 100_000
    max_searches_per_batch: int = 1_000
    max_texts_per_request: int = 1_024
    max_text_chars: int = 100_000

    def check_count(self, field: str, count: int, limit: int, hint: str = "") -> None:
        if count > limit:
            raise LimitExceeded(f"{field}: expected at most {limit:,} per request, got {count:,}{hint}")

    def check_text(self, field: str, text: str) -> None:
        if len(text) > self.max_text_chars:
            raise LimitExceeded(f"{field}: expected at most {self.max_text_chars:,} characters, got {len(text):,}")
