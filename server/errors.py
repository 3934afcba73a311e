"""Canonical gRPC status codes for telescope's errors, applied to every RPC by one decorator.

The library raises plain Python errors whose message names the field, the expected and the received value;
this module maps them to status codes (ValueError -> INVALID_ARGUMENT, LookupError -> NOT_FOUND,
FileExistsError -> ALREADY_EXISTS, RuntimeError -> FAILED_PRECONDITION, ...) and adds the few errors only a
server has: a request over a limit, a deadline that passed, a server still loading. Anything else is a bug:
INTERNAL, logged with its traceback.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections import Counter
from collections.abc import Callable

import grpc

log = logging.getLogger("telescope.server")


class LimitExceeded(Exception):
    """A request over one of the server's limits (batch size, text length): RESOURCE_EXHAUSTED."""


class Abandoned(Exception):
    """The client's deadline passed or it cancelled: the server stops the work (DEADLINE_EXCEEDED)."""


class Unavailable(Exception):
    """The server cannot answer yet (collections still loading) or any more (shutting down): UNAVAILABLE."""


# Most specific first: FileNotFoundError is an OSError (a model folder the request named does not exist),
# NotImplementedError a RuntimeError.
CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Abandoned, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (NotImplementedError, grpc.StatusCode.UNIMPLEMENTED),
    (FileExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (FileNotFoundError, grpc.StatusCode.INVALID_ARGUMENT),
    (LookupError, grpc.StatusCode.NOT_FOUND),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
    (TypeError, grpc.StatusCode.INVALID_ARGUMENT),
    (RuntimeError, grpc.StatusCode.FAILED_PRECONDITION),
]


def status_of(error: BaseException) -> grpc.StatusCode | None:
    """The status code for a telescope error; None for an unexpected one (a bug)."""
    for kind, code in CODES:
        if isinstance(error, kind):
            return code
    return None


def message_of(error: BaseException) -> str:
    """The error's message without the quotes KeyError adds."""
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


class Stats:
    """Counters a server keeps about its calls (thread-safe): errors by status code, abandoned work."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def __getitem__(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def prefixed(error: Exception, prefix: str, suffix: str = "") -> Exception:
    """The same kind of error with its message framed (which stream message, what was already written)."""
    try:
        return type(error)(f"{prefix}{message_of(error)}{suffix}")
    except TypeError:  # an exception type with another constructor: keep it
        return error


def check_alive(context: grpc.ServicerContext, before: str) -> None:
    """Raise ``Abandoned`` when the client is gone or its deadline has passed: called between units of work.
    (A call without a deadline has ``time_remaining() is None`` on the asyncio server.)"""
    remaining = context.time_remaining()
    if not context.is_active() or (remaining is not None and remaining <= 0):
        raise Abandoned(f"deadline: the client's deadline passed or it cancelled before {before}; the work was abandoned")


def rpc(method: Callable) -> Callable:
    """Decorate a servicer method: telescope errors become their status code, counted in ``self.stats``."""

    def fail(self, context: grpc.ServicerContext, error: Exception) -> None:
        code = status_of(error)
        self.stats.add(f"status.{(code or grpc.StatusCode.INTERNAL).name}")
        if isinstance(error, Abandoned):
            self.stats.add("abandoned")
        if code is None:
            log.exception("%s failed", method.__qualname__, exc_info=error)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}): {error}")
        context.abort(code, message_of(error))

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def streaming(self, request, context):
            try:
                yield from method(self, request, context)
            except Exception as error:  # noqa: BLE001 - every error gets a status
                fail(self, context, error)

        return streaming

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as error:  # noqa: BLE001 - every error gets a status
            fail(self, context, error)

    return unary
