"""telescope's servicers (plain functions of a request and a context) on gRPC's asyncio server.

The servicers are written against the sync ``grpc.ServicerContext`` API (``is_active``, ``time_remaining``,
``abort``). ``add_servicer`` turns the handlers a generated ``add_*Servicer_to_server`` registers into
coroutines for ``grpc.aio``: each call runs in a thread pool with a ``ThreadContext`` (client-streamed
requests arrive through a blocking iterator fed by the event loop, streamed responses leave through it; such a
call waits on its client, so it runs in an executor of its own), or on the event loop itself when the servicer
can answer at once (``inline``: a vector search known to be short). Requests are parsed here, so that bytes that
are no message get INVALID_ARGUMENT, and a response over the message limit gets RESOURCE_EXHAUSTED saying why.

Why asyncio: on a 2-core machine the sync server's thread hand-offs (a polling thread, then a pool thread per
call, all taking turns at the GIL) cost about as much as a short search itself; an inline call costs one
coroutine step, and calls queue in arrival order instead of in a scramble for the GIL. On the 100k-vector
benchmark collection at 16 clients (``telescope bench serve``'s load generator), the sync server of 91f95a3
and this one alternated twice in one run: p99 39.8 and 35.1 ms against 29.0 and 27.9, server CPU per call 1.85
and 1.60 ms against 1.57 and 1.50. Handing the searches to one search thread instead (batched, the loop going
on meanwhile) cost more than it saved: 1.9-2.4 ms of server CPU per call, p99 28-41 ms. gRPC's own bridge for
sync handlers on an asyncio server (``migration_thread_pool``) failed about half the calls of a trial run
(4,955 errors against some 4,800 answers), hence this module. An ``inline`` answer may also be an awaitable of a
response's bytes (a search handed to a replica process, server/replica.py), passed to gRPC as they are.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures

import grpc
from google.protobuf.message import DecodeError

_END = object()
# Unary responses shorter than this leave uncompressed even when the server compresses (gzip): a 10-hit search
# answer (~600 bytes) barely shrinks, and gzip cost the server 0.05-0.1 ms and the client 0.03-0.07 ms a call
# (canned 10-hit answer at 16 clients, with and without gzip, three rounds).
GZIP_MIN_BYTES = 4096


class CallGate:
    """At most ``limit`` telescope calls at once; a call over it ends RESOURCE_EXHAUSTED before any work. It counts
    only the services added through ``add_servicer``: gRPC's own ``maximum_concurrent_rpcs`` would count health
    checks too, and a server busy with long streams would then look dead to the orchestrator probing it. Used
    on the event loop only (no lock)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0

    async def enter(self, context: grpc.aio.ServicerContext) -> None:
        if self.active >= self.limit:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"server: expected at most {self.limit} telescope calls at once (--max-concurrent-rpcs), got "
                f"{self.active + 1}; retry later"))
        self.active += 1

    def leave(self) -> None:
        self.active -= 1


class Abort(Exception):
    """``ThreadContext.abort``: unwinds the servicer; the coroutine then ends the call with this status."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code, self.details = code, details


class ThreadContext:
    """The sync ``ServicerContext`` calls telescope's servicers make, for a call of the asyncio server."""

    def __init__(self, context: grpc.aio.ServicerContext):
        self._context = context
        self._done = threading.Event()
        context.add_done_callback(lambda _: self._done.set())

    def is_active(self) -> bool:
        return not self._done.is_set()

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def invocation_metadata(self):
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return self._context.peer()

    def abort(self, code: grpc.StatusCode, details: str):
        raise Abort(code, details)


class LoopContext(ThreadContext):
    """``ThreadContext`` for work run on the event loop itself, where the call's own state can be read directly."""

    def __init__(self, context: grpc.aio.ServicerContext):
        self._context = context

    def is_active(self) -> bool:
        return not self._context.done()


class _Requests(Iterator):
    """A client stream read from a pool thread: each ``next`` waits for the event loop to read a message."""

    def __init__(self, requests: AsyncIterator, loop: asyncio.AbstractEventLoop, parse: Callable):
        self._requests, self._loop, self._parse = requests, loop, parse
        self._count = 0

    async def _next(self):
        try:
            return await self._requests.__anext__()
        except StopAsyncIteration:
            return _END

    def __next__(self):
        item = asyncio.run_coroutine_threadsafe(self._next(), self._loop).result()
        if item is _END:
            raise StopIteration
        self._count += 1
        try:
            return self._parse(item)
        except ValueError as e:
            raise ValueError(f"message {self._count - 1}: {e}") from None


def _parser(deserializer: Callable | None) -> Callable:
    """``deserializer`` of a request's bytes, raising ValueError (INVALID_ARGUMENT) for bytes that do not parse: gRPC
    itself answers UNKNOWN 'Unexpected DecodeError' when its deserializer raises."""
    if deserializer is None:
        return lambda data: data
    name = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = name.full_name if name is not None else "request message"

    def parse(data: bytes):
        try:
            return deserializer(data)
        except DecodeError as e:
            raise ValueError(f"request: expected a valid {name} (strings in UTF-8), got {len(data):,} bytes that do "
                             f"not parse ({e})") from None

    return parse


async def _parsed(parse: Callable, data: bytes, context: grpc.aio.ServicerContext):
    try:
        return parse(data)
    except ValueError as e:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))


def _unary(behavior: Callable, pool: futures.Executor, inline: Callable | None, parse: Callable, max_bytes: int) -> Callable:
    async def handler(data, context: grpc.aio.ServicerContext):
        request = await _parsed(parse, data, context)
        try:
            response = inline(request, LoopContext(context)) if inline is not None else None
            if inspect.isawaitable(response):  # forwarded to a search replica (server/replica.py): its bytes
                response = await response
            if response is None:
                response = await asyncio.get_running_loop().run_in_executor(
                    pool, behavior, request, ThreadContext(context)
                )
        except Abort as a:
            await context.abort(a.code, a.details)
        size = len(response) if isinstance(response, bytes) else response.ByteSize()
        if size > max_bytes:  # gRPC would fail the send with 'Sent message larger than max' and log an error
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"response: expected at most {max_bytes:,} bytes (the message limit), got {size:,}; ask for fewer "
                "ids, hits or texts, or leave out vectors and payloads"))
        if size < GZIP_MIN_BYTES:
            context.disable_next_message_compression()
        return response

    return handler


def _passing_bytes(serializer: Callable) -> Callable:
    return lambda response: response if isinstance(response, bytes) else serializer(response)


def _stream_in(behavior: Callable, streams: futures.Executor, parse: Callable) -> Callable:
    async def handler(requests: AsyncIterator, context: grpc.aio.ServicerContext):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(streams, behavior, _Requests(requests, loop, parse), ThreadContext(context))
        except Abort as a:
            await context.abort(a.code, a.details)

    return handler


def _stream_out(behavior: Callable, pool: futures.Executor, streams: futures.Executor | None, parse: Callable) -> Callable:
    """``streams``: the executor of a call whose requests are streamed too (None: one request)."""

    async def handler(request_or_requests, context: grpc.aio.ServicerContext):
        loop = asyncio.get_running_loop()
        if streams is None:
            arg, executor = await _parsed(parse, request_or_requests, context), pool
        else:
            arg, executor = _Requests(request_or_requests, loop, parse), streams
        try:
            responses = await loop.run_in_executor(executor, behavior, arg, ThreadContext(context))
            while (item := await loop.run_in_executor(executor, next, responses, _END)) is not _END:
                yield item
        except Abort as a:
            await context.abort(a.code, a.details)

    return handler


def _gated(handler: Callable, gate: CallGate | None, generator: bool) -> Callable:
    """``handler`` admitted through ``gate`` (None: always), counted until it ends."""
    if gate is None:
        return handler
    if generator:
        async def gated_stream(request, context: grpc.aio.ServicerContext):
            await gate.enter(context)
            try:
                async for item in handler(request, context):
                    yield item
            finally:
                gate.leave()

        return gated_stream

    async def gated(request, context: grpc.aio.ServicerContext):
        await gate.enter(context)
        try:
            return await handler(request, context)
        finally:
            gate.leave()

    return gated


def asyncio_handler(
    handler: grpc.RpcMethodHandler, pool: futures.Executor, inline: Callable | None = None,
    streams: futures.Executor | None = None, max_response_bytes: int = 64 * 1024 * 1024,
    gate: CallGate | None = None,
) -> grpc.RpcMethodHandler:
    """The same RPC (kind, serializers) with its behavior as a coroutine for ``grpc.aio``, run in ``pool``; a unary
    call for which ``inline(request, context)`` returns a response (computed on the event loop) ends with it. A call
    whose requests are streamed runs in ``streams`` (default ``pool``): it holds its thread while it waits for the
    client's next message, so stalled clients must not take the threads of every other call."""
    streaming = (handler.request_streaming, handler.response_streaming)
    parse = _parser(handler.request_deserializer)
    options = dict(request_deserializer=None, response_serializer=handler.response_serializer)
    streams = streams or pool
    if streaming == (False, False):
        if inline is not None:  # an inline answer may be a message's bytes already
            options["response_serializer"] = _passing_bytes(handler.response_serializer)
        behavior = _gated(_unary(handler.unary_unary, pool, inline, parse, max_response_bytes), gate, False)
        return grpc.unary_unary_rpc_method_handler(behavior, **options)
    if streaming == (True, False):
        behavior = _gated(_stream_in(handler.stream_unary, streams, parse), gate, False)
        return grpc.stream_unary_rpc_method_handler(behavior, **options)
    if streaming == (False, True):
        behavior = _gated(_stream_out(handler.unary_stream, pool, None, parse), gate, True)
        return grpc.unary_stream_rpc_method_handler(behavior, **options)
    behavior = _gated(_stream_out(handler.stream_stream, pool, streams, parse), gate, True)
    return grpc.stream_stream_rpc_method_handler(behavior, **options)


class _Collect:
    """Stands in for a server in a generated ``add_*Servicer_to_server``: keeps the method handlers it registers."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass  # the same handlers come again through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.services[service] = handlers


def add_servicer(
    add: Callable, servicer: object, server: grpc.aio.Server, pool: futures.Executor,
    inline: dict[str, Callable] | None = None, streams: futures.Executor | None = None,
    max_response_bytes: int = 64 * 1024 * 1024, gate: CallGate | None = None,
) -> None:
    """``add(servicer, server)`` (a generated ``add_*Servicer_to_server``) for an asyncio server, every method run
    by ``asyncio_handler`` (and admitted through ``gate``); ``inline`` maps method names to their
    ``inline(request, context)``."""
    collected = _Collect()
    add(servicer, collected)
    for service, handlers in collected.services.items():
        wrapped = {name: asyncio_handler(h, pool, (inline or {}).get(name), streams, max_response_bytes, gate)
                   for name, h in handlers.items()}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, wrapped)])
        server.add_registered_method_handlers(service, wrapped)
