"""The HTTP connection pools the upstream calls go through, and which one takes a call.

Several pools per process (`UPSTREAM_POOLS`), each its own httpx2 client's, sharing one TLS
context (`upstream_http_clients`); a call goes to the pool with the fewest calls in flight
(`PoolBalancer`). Each connection is a `WatchedStream`: the router's read deadlines (the stall detector)
and, under gevent, idle connections probed with the operating system's poll.
"""

from __future__ import annotations

import logging
import select
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpcore2
import httpx2
import openai

log = logging.getLogger(__name__)


class WatchedStream(httpcore2.NetworkStream):
    """A pooled connection's stream with a read deadline the router sets, and, under
    gevent, a readability probe that never yields to gevent's hub.

    `read_deadline` (time.monotonic(), None: none) bounds every read while a stream is
    relayed: httpcore2 gives each read of a body the one read timeout the request started
    with, but a stream needs two (until its first token, then between chunks: the stall
    detector), so the router moves this deadline as chunks arrive (see sse_reader). A read
    past it raises httpcore2's ReadTimeout, as the request's own timeout would.

    Each time a request starts or ends, httpcore2's pool walks its connections and asks
    every idle one whether its socket is readable (a server that closed it), with a
    zero-timeout `select.poll`. Under gevent that poll is gevent's cooperative one: it arms
    hub watchers for the socket and switches greenlets, inside the pool's lock, once per
    idle connection per request (at 32 clients, 7% of the worker's CPU). With `os_poll`,
    the operating system's poll with a zero timeout answers the same question without
    blocking. Everything else is the wrapped stream's.
    """

    def __init__(self, stream: httpcore2.NetworkStream, os_poll: Callable[[], Any] | None) -> None:
        self._stream = stream
        self._os_poll = os_poll
        self.read_deadline: float | None = None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self.read_deadline is not None:
            left = self.read_deadline - time.monotonic()
            if left <= 0:
                raise httpcore2.ReadTimeout("the read deadline passed")
            timeout = left  # the router's deadline replaces the request's one read timeout
        return self._stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # Every request starts with a write: a deadline an earlier stream left on this
        # pooled connection (it went back to the pool before its closer ran) ends here.
        self.read_deadline = None
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        return WatchedStream(self._stream.start_tls(ssl_context, server_hostname, timeout), self._os_poll)

    def get_extra_info(self, info: str) -> Any:
        """The wrapped stream's answer, but `is_readable` from the operating system's poll."""
        if info != "is_readable" or self._os_poll is None:
            return self._stream.get_extra_info(info)
        sock = self._stream.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        if fd < 0:
            return True  # as httpcore2's own probe: no socket reads as closed by the server
        poll = self._os_poll()
        poll.register(fd, select.POLLIN)
        return bool(poll.poll(0))


class _WatchedBackend(httpcore2.SyncBackend):
    """httpcore2's own network backend, its streams wrapped in `WatchedStream`."""

    def __init__(self, os_poll: Callable[[], Any] | None) -> None:
        self._os_poll = os_poll

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore2.NetworkStream:
        return WatchedStream(super().connect_tcp(*args, **kwargs), self._os_poll)

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore2.NetworkStream:
        return WatchedStream(super().connect_unix_socket(*args, **kwargs), self._os_poll)


def watched_stream(response: Any) -> WatchedStream | None:
    """The connection stream an httpx2 response is read from, when it is a WatchedStream."""
    stream = getattr(response, "extensions", {}).get("network_stream")
    while stream is not None and not isinstance(stream, WatchedStream):
        stream = getattr(stream, "_stream", None)  # httpcore2's upgrade wrapper, if any
    return stream


# Upstream connection pools per process (see upstream_http_clients). Each is the SDK's default: at
# most 1,000 connections and 100 kept idle (each closed after 5 s idle).
UPSTREAM_POOLS = 32


def _gevent_os_poll() -> Callable[[], Any] | None:
    """The operating system's `select.poll` when gevent has patched `select` (its gunicorn
    worker), else None."""
    monkey = sys.modules.get("gevent.monkey")  # never import gevent where it is not in use
    if monkey is None or not monkey.is_module_patched("select"):
        return None
    return monkey.get_original("select", "poll")


def _http_client(os_poll: Callable[[], Any] | None, ssl_context: ssl.SSLContext) -> httpx2.Client:
    """The SDK's default HTTP client (its limits, redirects, proxies from the environment),
    verifying the upstream's certificate with `ssl_context`.

    Its connections are `WatchedStream`s (read deadlines; with `os_poll`, under gevent,
    idle connections probed with the operating system's poll). httpx2 builds the pool
    itself and takes no network backend, so it is set on the pool it built; if a later
    httpx2 names those attributes differently, the pool keeps its own backend
    (upstream_http_clients says so).
    """
    client = openai.DefaultHttpxClient(verify=ssl_context)
    pool = _pool_of(client)
    if type(getattr(pool, "_network_backend", None)) is httpcore2.SyncBackend:
        pool._network_backend = _WatchedBackend(os_poll)
    return client


def _pool_of(client: httpx2.Client) -> Any:
    """The httpcore2 connection pool httpx2 built for `client` (None if it is named otherwise)."""
    return getattr(getattr(client, "_transport", None), "_pool", None)


def _watched(client: httpx2.Client) -> bool:
    return isinstance(getattr(_pool_of(client), "_network_backend", None), _WatchedBackend)


def upstream_http_clients() -> list[httpx2.Client]:
    """`UPSTREAM_POOLS` HTTP clients for the SDK's clients, each with its own connection
    pool, all verifying the upstream's certificate with one TLS context."""
    # Several HTTP connection pools, each its own client's: httpcore2's pool walks all its
    # connections whenever a request starts or ends, so with N streams open one pool costs
    # O(N) per stream and O(N^2) in all (18% of the worker with 1,000 streams); N / 32 each.
    # They share one TLS context, the one httpx2 would make for each (the system's CAs, or
    # SSL_CERT_FILE / SSL_CERT_DIR): a context of its own costs each client 0.8 MiB and 20 ms.
    os_poll, ssl_context = _gevent_os_poll(), httpx2.create_ssl_context()
    http_clients = [_http_client(os_poll, ssl_context) for _ in range(UPSTREAM_POOLS)]
    if not _watched(http_clients[0]):
        log.warning(
            "httpx2 %s builds its connection pool differently: a stalled stream is detected by the "
            "upstream's read timeout alone, and under gevent idle connections are probed through gevent",
            httpx2.__version__,
        )
    return http_clients


class PoolBalancer:
    """Which of a client's pools takes the next call: the one with the fewest calls in
    flight, the first on a tie, so light traffic keeps reusing one pool's connections and a
    burst spreads over all of them."""

    def __init__(self, pools: int) -> None:
        self._in_flight = [0] * pools
        self._in_flight_lock = threading.Lock()

    def take(self) -> int:
        """The pool with the fewest calls in flight (the first on a tie), counted as busier."""
        with self._in_flight_lock:
            pool = min(range(len(self._in_flight)), key=self._in_flight.__getitem__)
            self._in_flight[pool] += 1
        return pool

    def give_back(self, pool: int) -> None:
        """The call `take` counted on `pool` is over."""
        with self._in_flight_lock:
            self._in_flight[pool] -= 1

    def closer(self, pool: int, response: httpx2.Response) -> Callable[[], None]:
        """The end of a streamed call on `pool`, however it ends and however often it is
        called: `response` closed, the pool given back once."""
        released = []

        def close() -> None:
            stream = watched_stream(response)
            if stream is not None:
                stream.read_deadline = None  # the connection goes back to the pool without it
            response.close()
            if not released:
                released.append(True)
                self.give_back(pool)

        return close
