"""Bearer-token authentication: a gRPC (asyncio) server interceptor.

Clients send metadata ``authorization: Bearer <token>``. A call without it, or with another token, ends with
UNAUTHENTICATED before its servicer runs. The health service stays open (load balancers and orchestrators
probe it without credentials); reflection needs the token like the API. Tokens are compared in constant time.
gRPC has no server-side token check of its own (``access_token_call_credentials`` is the client half).
"""

from __future__ import annotations

import hmac
from pathlib import Path

import grpc

OPEN_METHODS = ("/grpc.health.v1.Health/",)


def read_token(token: str | None = None, token_file: str | Path | None = None) -> str | None:
    """The token from ``--token`` or ``--token-file`` (first line, stripped); None when neither is given."""
    if token is not None and token_file is not None:
        raise ValueError("--token / --token-file: expected at most one of them, got both")
    if token_file is not None:
        path = Path(token_file)
        if not path.is_file():
            raise FileNotFoundError(f"--token-file: no such file {str(path)!r}")
        lines = path.read_text(encoding="utf-8").splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise ValueError(f"--token-file: expected a token on the first line of {str(path)!r}, got an empty line")
        return token
    if token is not None and not token.strip():
        raise ValueError("--token: expected a non-empty token, got ''")
    return token


class TokenAuth(grpc.aio.ServerInterceptor):
    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_METHODS):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        got = metadata.get("authorization")
        if got is None:
            return _refusal(handler, "authorization: expected metadata 'authorization: Bearer <token>', got none")
        if isinstance(got, str):
            got = got.encode()
        if not hmac.compare_digest(got, self._expected):
            shown = "a value without the 'Bearer ' prefix" if not got.startswith(b"Bearer ") else "another token"
            return _refusal(handler, f"authorization: expected the server's bearer token, got {shown}")
        return handler


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that ends the call with UNAUTHENTICATED."""

    async def refuse(request_or_iterator, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(refuse, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
