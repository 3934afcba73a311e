"""Bearer-token authentication: a gRPC (asyncio) server interceptor.

Clients send metadata ``authorization: Bearer <token>``. A call without it, or with another token, ends with
UNAUTHENTICATED before its servicer runs. The health service stays open (load balancers and orchestrators
probe it without credentials); reflection needs the token like the API. Tokens are compared in constant time;
the scheme ``Bearer`` in any case (RFC 7235), the token itself exactly.
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
        return check_token(token, "--token-file")
    if token is not None and not token.strip():
        raise ValueError("--token: expected a non-empty token, got ''")
    return token if token is None else check_token(token, "--token")


def check_token(token: str, field: str = "token") -> str:
    """``token`` when gRPC can carry it in metadata (printable ASCII); a client cannot send any other."""
    bad = next((c for c in token if not " " <= c <= "~"), None)
    if bad is not None:
        raise ValueError(f"{field}: expected printable ASCII characters (gRPC metadata), got {bad!r} at index "
                         f"{token.index(bad)}")
    return token


class TokenAuth(grpc.aio.ServerInterceptor):
    def __init__(self, token: str):
        self._token = check_token(token).encode()

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_METHODS):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        got = metadata.get("authorization")
        if got is None:
            return _refusal(handler, "authorization: expected metadata 'authorization: Bearer <token>', got none")
        scheme, _, credential = (got.encode() if isinstance(got, str) else got).partition(b" ")
        if scheme.lower() != b"bearer":  # an auth scheme is case-insensitive (RFC 7235)
            return _refusal(handler, "authorization: expected the server's bearer token, got a value without the "
                                     "'Bearer ' prefix")
        if not hmac.compare_digest(credential, self._token):
            return _refusal(handler, "authorization: expected the server's bearer token, got another token")
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
