"""What every servicer shares: the registry, the limits, the counters, and whether the server is ready."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from telescope.index import Collection
from telescope.server.batcher import SearchBatcher, TextBatcher
from telescope.server.errors import Stats, Unavailable
from telescope.server.hits import PayloadCache
from telescope.server.limits import Limits

if TYPE_CHECKING:
    from telescope.server.registry import Registry
    from telescope.server.replica import SearchReplicas


@dataclass
class ServerState:
    registry: Registry
    limits: Limits = field(default_factory=Limits)
    stats: Stats = field(default_factory=Stats)
    loaded: threading.Event = field(default_factory=threading.Event)
    batcher: TextBatcher = field(default_factory=TextBatcher)  # query texts of concurrent calls share passes
    searches: SearchBatcher = field(default_factory=SearchBatcher)  # query vectors of concurrent calls share searches
    payloads: PayloadCache = field(default_factory=PayloadCache)  # hits' payloads as Struct bytes
    replicas: SearchReplicas | None = None  # processes answering plain vector searches (server/replica.py)

    def collection(self, name: str, field: str = "collection") -> Collection:
        """A loaded collection by name (UNAVAILABLE while the server is still loading)."""
        self.ready()
        return self.registry.collection(name, field)

    def ready(self) -> None:
        if not self.loaded.is_set():
            raise Unavailable("server: expected SERVING, got NOT_SERVING (collections are still loading); retry")
