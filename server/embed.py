"""The telescope.v1.Embed servicer: texts to unit vectors at a (layer, dim) grid point, unary and streaming.

Texts are encoded in chunks with a deadline check between them, so a request whose client gave up stops
within one chunk's time; chunks of concurrent calls at the same (model, layer, dim) share forward passes
(``TextBatcher``).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np

from telescope.proto.telescope.v1 import embed_pb2 as pb
from telescope.proto.telescope.v1 import embed_pb2_grpc
from telescope.server.convert import vector_message
from telescope.server.errors import check_alive, prefixed, rpc
from telescope.server.state import ServerState

CHUNK = 32  # texts encoded between two deadline checks


class EmbedServicer(embed_pb2_grpc.EmbedServicer):
    def __init__(self, state: ServerState):
        self.state = state
        self.stats = state.stats

    @rpc
    def Embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> pb.EmbedResponse:
        self.state.ready()
        return self._embed(request, context)

    @rpc
    def EmbedStream(self, requests: Iterator[pb.EmbedRequest], context: grpc.ServicerContext) -> Iterator[pb.EmbedResponse]:
        self.state.ready()
        for i, request in enumerate(requests):
            try:
                response = self._embed(request, context)
            except Exception as e:
                raise prefixed(e, f"message {i}: ") from e
            yield response

    def _embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> pb.EmbedResponse:
        limits = self.state.limits
        texts = list(request.texts)
        limits.check_count("texts", len(texts), limits.max_texts_per_request)
        if not texts:
            raise ValueError("texts: expected at least one text, got none")
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"texts[{i}]: expected a non-empty text, got {text!r}")
            limits.check_text(f"texts[{i}]", text)
        embedder = self.state.registry.held_model(request.model)
        layer, dim = embedder.check_point(
            request.layer if request.HasField("layer") else None, request.dim if request.HasField("dim") else None
        )
        parts = []
        for start in range(0, len(texts), CHUNK):
            check_alive(context, f"embedding texts[{start}:]")
            parts.append(self.state.batcher.encode(
                embedder, texts[start : start + CHUNK], lambda: check_alive(context, "embedding"), layer=layer, dim=dim
            ))
        vectors = np.concatenate(parts)
        return pb.EmbedResponse(
            vectors=[vector_message(v) for v in vectors],
            model_version=embedder.manifest.tag,
            layer=layer,
            dim=dim,
            truncated_texts=embedder.count_truncated(texts),
        )
