"""The webhook's gunicorn worker: HTTP/1.1 over TLS on a uvloop event loop, serving webhook.front.

Why its own worker: the API server keeps several connections open to the webhook and sends one request at a time on
each, so the webhook's CPU per request is mostly the server around the decision. Measured through the real API
server (bench/webhook.py), the webhook's CPU per admitted write was 0.87 ms with gunicorn's threaded worker (a
thread hand-off per request, and threads contending for the GIL), 0.43 ms with gunicorn's asyncio (ASGI) worker on
uvloop, and 0.27 to 0.44 ms with this one (a Go webhook that does nothing: 0.26 to 0.28 ms): uvloop's TLS,
gunicorn's C HTTP parser (gunicorn-h1c), and no more than the webhook needs around them.

What it serves: HTTP/1.1 (and 1.0) with keep-alive and pipelining, bodies with a Content-Length or chunked, up to
the webhook's MAX_REQUEST_BYTES (a larger one is refused with 400 without being read). A request is answered on the
loop when webhook.front can, else in a pool of `threads` threads; a connection's next request waits for its answer,
so answers keep their order. A client that sends faster than it reads its answers is not read from until it has
caught up (the transport's write buffer is the bound). Beyond `worker_connections` open connections, a new one is
closed at once. An idle connection closes after `keepalive` seconds (0: one request per connection); a request must
arrive whole within REQUEST_SECONDS of its first byte.
Who may call /validate is webhook.tls.ClientAuth's to say: a connection without a verified client certificate of an
allowed name gets 401 or 403 for it, and is closed; its request is never judged nor recorded. Other paths need no
certificate (the kubelet's probes present none).
On SIGTERM the worker stops accepting, closes idle connections, answers requests in flight with `Connection: close`,
and gives them, and the sending of their answers, at most `graceful_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import uvloop
from gunicorn import sock as gsock
from gunicorn.workers import base
from gunicorn_h1c import H1CProtocol, LimitRequestHeaders, LimitRequestLine

from .admission import PATH
from .front import Answer, Front, Raw, environ_of
from .tls import ClientAuth

REQUEST_SECONDS = 30.0  # from a request's first byte to its last
TICK_SECONDS = 1.0  # the worker tells the arbiter it lives this often
REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class WebhookWorker(base.Worker):  # type: ignore[misc]
    """A gunicorn worker class (`worker_class="webhook.worker.WebhookWorker"`); the app `load` makes is a Front."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        client_auth = getattr(self.app, "client_auth", None)
        if not isinstance(client_auth, ClientAuth):  # fail closed: never serve /validate without knowing who may call
            raise RuntimeError("WebhookWorker serves a webhook.cli.Server, which says who may call /validate")
        self.client_auth: ClientAuth = client_auth
        self.connections: set[Connection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.stopping: asyncio.Event | None = None
        self.quick = False

    def init_process(self) -> None:
        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.stopping = asyncio.Event()
        super().init_process()

    def init_signals(self) -> None:
        assert self.loop is not None
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        self.loop.add_signal_handler(signal.SIGTERM, self._stop, False)
        self.loop.add_signal_handler(signal.SIGQUIT, self._stop, True)
        self.loop.add_signal_handler(signal.SIGINT, self._stop, True)
        self.loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        self.loop.add_signal_handler(signal.SIGWINCH, lambda: None)
        self.loop.add_signal_handler(signal.SIGABRT, self._abort)

    def _stop(self, quick: bool) -> None:
        self.alive = False
        self.quick = self.quick or quick
        assert self.stopping is not None
        self.stopping.set()

    def _abort(self) -> None:
        self.alive = False
        self.cfg.worker_abort(self)
        sys.exit(1)

    def run(self) -> None:
        assert self.loop is not None
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=False, cancel_futures=True)
            self.loop.close()

    async def _serve(self) -> None:
        assert self.loop is not None
        assert self.stopping is not None
        front: Front = self.wsgi
        self.pool = ThreadPoolExecutor(max_workers=max(1, int(self.cfg.threads)), thread_name_prefix="webhook")
        context = gsock.ssl_context(self.cfg) if self.cfg.is_ssl else None
        servers = [
            await self.loop.create_server(
                lambda: Connection(self, front), sock=listener.sock, ssl=context, backlog=self.cfg.backlog
            )
            for listener in self.sockets
        ]
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), TICK_SECONDS)
        self.alive = False
        for server in servers:
            server.close()
        for conn in list(self.connections):
            conn.stop()
        deadline = self.loop.time() + float(self.cfg.graceful_timeout)
        # Requests in flight and answers not sent yet get until the deadline; connections whose answers are out and
        # that only wait for the TLS peer to answer our close are not waited for.
        while any(c.serving() for c in self.connections) and not self.quick and self.loop.time() < deadline:
            self.notify()
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        front.stop()


class Head(NamedTuple):
    """A request's head, as parsed."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    keep_alive: bool
    http10: bool


class Connection(asyncio.Protocol):
    """One client connection: parses requests, answers them in order."""

    def __init__(self, worker: WebhookWorker, front: Front) -> None:
        self.worker = worker
        self.front = front
        self.loop = worker.loop
        self.transport: asyncio.Transport | None = None
        cfg = worker.cfg
        self.parser = H1CProtocol(
            on_headers_complete=self._on_headers,
            on_body=self._on_body,
            on_message_complete=self._on_complete,
            limit_request_line=cfg.limit_request_line or 1024 * 1024,
            limit_request_fields=cfg.limit_request_fields,
            limit_request_field_size=cfg.limit_request_field_size,
            permit_unconventional_http_method=False,
            permit_unconventional_http_version=False,
            # Keep all that follows a request (pipelined requests): by default the parser keeps 64 KiB of it and
            # drops the rest. A finished parser is never fed, so what it keeps is bounded by one read.
            limit_remaining=0,
        )
        self.head: Head | None = None
        self.body: list[bytes] = []
        self.size = 0
        self.complete = False
        self.refused = False  # answered before its body arrived (too large): read nothing more
        self.started = False  # bytes of a request have arrived
        self.busy = False  # an answer is being computed in the pool
        self.blocked = False  # the client does not read its answers: the transport's buffer is full
        self.pending = b""  # bytes that arrived while busy or blocked, to be parsed once neither
        self.timer: asyncio.TimerHandle | None = None
        self.unauthorized: tuple[int, str] | None = None  # why this client may not call /validate (webhook.tls)

    # -- asyncio.Protocol ----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.worker.connections) >= self.worker.cfg.worker_connections:
            self.worker.log.warning("%d connections open: refusing one more", len(self.worker.connections))
            transport.abort()  # type: ignore[attr-defined]
            self.transport = None
            return
        self.worker.connections.add(self)
        self.unauthorized = self.worker.client_auth.refusal(transport.get_extra_info("peercert"))
        self._arm(float(self.worker.cfg.keepalive) or REQUEST_SECONDS)

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.connections.discard(self)
        self._disarm()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.busy or self.blocked:
            self.pending += data
            return
        if not self.started:
            self.started = True
            self._arm(REQUEST_SECONDS)
        self._feed(data)

    def pause_writing(self) -> None:
        """The client reads its answers slower than it sends requests: read no more until it has caught up."""
        self.blocked = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.blocked = False
        if not self.busy:
            self._go_on()

    # -- parsing -------------------------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        while data and self._open() and not self.refused:
            try:
                self.parser.feed(data)
            except LimitRequestLine as e:
                self._refuse(414, str(e))
                return
            except LimitRequestHeaders as e:
                self._refuse(431, str(e))
                return
            except Exception as e:  # every other parse error of gunicorn_h1c: the request is not HTTP/1.1
                self._refuse(400, str(e) or type(e).__name__)
                return
            if not self.complete:
                return
            data = bytes(self.parser.remaining())
            self.parser.reset()
            self.complete = False
            try:
                self._dispatch()
            except Exception:  # a bug must still get an answer, and the connection go on
                self.worker.log.exception("answering %s failed", self.head.target if self.head else "a request")
                self.busy = False
                self._respond((500, {"error": "internal error"}))
                if self._open() and not self.blocked:
                    assert self.transport is not None
                    self.transport.resume_reading()
            if self.busy or self.blocked:
                self.pending = data + self.pending
                return
            if data and self._open():
                self.started = True
                self._arm(REQUEST_SECONDS)

    def _on_headers(self) -> None:
        p = self.parser
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in p.headers]
        self.head = Head(
            p.method.decode("latin-1"),
            p.path.decode("latin-1"),
            headers,
            bool(p.should_keep_alive),
            tuple(p.http_version) < (1, 1),
        )
        self.body = []
        self.size = 0
        length = p.content_length
        if length is not None and length > self.front.limit:
            self._refuse(400, "", self.front.too_large())
        elif any(k.lower() == "expect" and v.lower() == "100-continue" for k, v in headers):
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _on_body(self, chunk: Any) -> None:
        if self.refused:
            return
        self.size += len(chunk)
        if self.size > self.front.limit:
            self._refuse(400, "", self.front.too_large())
            return
        self.body.append(bytes(chunk))

    def _on_complete(self) -> None:
        if not self.refused:
            self.complete = True

    # -- answering -----------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        assert self.head is not None
        method, target, headers = self.head.method, self.head.target, self.head.headers
        body = b"".join(self.body)
        self.body = []
        path = target.partition("?")[0]
        result: Answer | Raw | Callable[[], Answer | Raw]
        if path == PATH:
            if self.unauthorized is not None:  # not the API server: never judged, never recorded
                self._refuse(*self.unauthorized)
                return
            if method != "POST":
                result = (405, {"error": "method not allowed", "allowed": "POST"})
            else:
                result = self.front.validate(body)
        else:
            assert self.transport is not None
            info = self.transport.get_extra_info
            result = self.front.other(environ_of(method, target, headers, body, info("sockname"), info("peername")))
        if not callable(result):
            self._respond(result)
            return
        self.busy = True
        self._disarm()
        assert self.transport is not None
        assert self.worker.pool is not None
        assert self.loop is not None
        self.transport.pause_reading()
        future = self.worker.pool.submit(result)
        future.add_done_callback(lambda f: self.loop.call_soon_threadsafe(self._answered, f))  # type: ignore[union-attr]

    def _answered(self, future: Future[Answer | Raw]) -> None:
        self.busy = False
        if self.transport is None:
            return
        try:
            self._respond(future.result())
        except Exception:  # a bug in the pool, or an answer that cannot be sent: a 500, and the connection goes on
            self.worker.log.exception("answering %s failed", self.head.target if self.head else "a request")
            self._respond((500, {"error": "internal error"}))
        if not self.blocked:
            self._go_on()

    def _go_on(self) -> None:
        """Reads and parses again, after an answer from the pool or once the client has read its answers."""
        if not self._open():
            return
        assert self.transport is not None
        self.transport.resume_reading()
        pending, self.pending = self.pending, b""
        if pending:
            self.started = True
            self._arm(REQUEST_SECONDS)
            self._feed(pending)

    def _respond(self, result: Answer | Raw) -> None:
        assert self.head is not None
        head = self.head
        if len(result) == 2:
            status, document = result
            payload = json.dumps(document, separators=(",", ":")).encode()
            headers = [("Content-Type", "application/json")]
            if status == 405:
                headers.append(("Allow", "POST"))
            length = len(payload)
        else:
            status, given, payload = result
            headers = [(k, v) for k, v in given if k.lower() not in ("content-length", "connection")]
            declared = [v for k, v in given if k.lower() == "content-length"]
            # HEAD: the length a GET would have, as the app says it (the body it gives is empty).
            length = int(declared[0]) if head.method == "HEAD" and declared and declared[0].isdigit() else len(payload)
        close = not (head.keep_alive and self.worker.alive and self.worker.cfg.keepalive > 0)
        if not close and head.http10:
            headers.append(("Connection", "keep-alive"))  # HTTP/1.0 closes unless told otherwise
        self._write(_head(status, headers, length, close) + (b"" if head.method == "HEAD" else payload))
        if close:
            self._close()
            return
        self.started = False
        self._arm(float(self.worker.cfg.keepalive) or REQUEST_SECONDS)

    def _refuse(self, status: int, reason: str, result: Answer | None = None) -> None:
        """Answers a request that cannot be read any further, and closes the connection."""
        self.refused = True
        answer = result or (status, {"error": REASONS.get(status, "error"), "reason": reason})
        payload = json.dumps(answer[1], separators=(",", ":")).encode()
        self._write(_head(answer[0], [("Content-Type", "application/json")], len(payload), True) + payload)
        self._close()

    def _open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def _write(self, data: bytes) -> None:
        if self._open():
            assert self.transport is not None
            self.transport.write(data)

    # -- lifetime ------------------------------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        assert self.loop is not None
        self.timer = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        """Idle too long, or a request too slow to arrive: close; abort if the client does not even read."""
        if self.blocked:
            self.abort()
        else:
            self._close()

    def _close(self) -> None:
        self._disarm()
        if self.transport is not None:
            self.transport.close()  # after what was written is sent

    def stop(self) -> None:
        """The worker is stopping: an idle connection closes now; a request in flight is answered, then closes."""
        if not self.busy and not self.started:
            self._close()

    def serving(self) -> bool:
        """Whether a request is in flight or an answer not sent yet."""
        if self._open():
            return True
        return self.transport is not None and self.transport.get_write_buffer_size() > 0

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _head(status: int, headers: list[tuple[str, str]], length: int, close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {length}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
