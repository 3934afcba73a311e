"""The limits a server enforces so that it keeps serving whatever a client sends.

Over a size limit a request fails with RESOURCE_EXHAUSTED (``LimitExceeded``) before any work; a message over
``max_message_bytes`` is refused by gRPC itself with the same code; more than ``max_concurrent_rpcs`` telescope
calls at once are refused with RESOURCE_EXHAUSTED (``bridge.CallGate``; health checks are not counted). ``max_k`` is a bound on a field's value, so a larger ``k`` is
INVALID_ARGUMENT; so is ``max_keep``, the longest shortlist a plan may ask for (the index allocates scores and
rows for every kept candidate of every query: a plan keeping 3e9 made the server run out of memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from telescope.server.errors import LimitExceeded

if TYPE_CHECKING:
    from telescope.index import Plan

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 64 * MIB
    max_concurrent_rpcs: int = 256
    max_k: int = 1_000
    max_keep: int = 100_000
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

    def check_plan(self, field: str, plan: Plan, k: int | None = None) -> None:
        """A plan's shortlists at most ``max_keep`` long and, when no ``k`` replaces it, its last keep (the number
        of hits) at most ``max_k``."""
        *shortlists, last = plan.stages
        for i, stage in enumerate(shortlists):
            if stage.keep > self.max_keep:
                raise ValueError(f"{field}[{i}].keep: expected at most {self.max_keep:,}, got {stage.keep:,}")
        if k is None and last.keep > self.max_k:
            raise ValueError(
                f"{field}[{len(shortlists)}].keep: expected at most {self.max_k} in the last stage (the k when the "
                f"request gives none), got {last.keep:,}"
            )
