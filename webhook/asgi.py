"""The webhook as gunicorn serves it: an ASGI front on an event loop (uvloop), around the Flask app.

Why an event loop: the API server keeps several connections open to the webhook and sends one request at a time on
each, so a threaded server wakes a thread (and hands the request between threads) for every request, and its
threads fight over the GIL. Measured through the real API server (bench/webhook.py), the webhook's CPU per
admitted write was 0.87 ms with gunicorn's threaded worker and 0.45 ms on this front.

POST /validate is answered on the loop: parsing and judging a request against Git's state in memory is a fraction
of a millisecond, less than a hand-off to a thread costs. What may wait goes to a thread pool, so that it never
holds up the loop: judging a request that names a revision not loaded yet (Git may be asked, and the commit
loaded), writing an audit record (a request to the API server), and a body too large to parse in passing. Every
other path (/healthz, /readyz, /metrics) is the Flask app's, called in the pool through a small WSGI bridge.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from flask import Flask

from .admission import PATH, answer, bad_request, finish, judge_safely, must_record, read_review, record, waits_for_git
from .app import webhook_of

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
T = TypeVar("T")

INLINE_BYTES = 256 * 1024  # a larger body is parsed in the pool: parsing it would hold up the loop


class AdmissionASGI:
    """The ASGI app: /validate on the loop, the rest in `threads` pool threads through the Flask app."""

    def __init__(self, app: Flask, *, threads: int = 16) -> None:
        self.flask = app
        self.hook = webhook_of(app)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhook")
        self.limit = int(self.hook.config["MAX_REQUEST_BYTES"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1003})
        elif scope["type"] == "http":
            if scope["path"] == PATH:
                await self._validate(scope, receive, send)
            else:
                await self._wsgi(scope, receive, send)

    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.hook.stop()
                self.pool.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The request body, or None when it is larger than the limit (read no further than that)."""
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length" and value.isdigit() and int(value) > self.limit:
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionError("the client left before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _validate(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _send_json(send, 405, {"error": "method not allowed", "allowed": "POST"}, ((b"allow", b"POST"),))
            return
        try:
            raw = await self._body(scope, receive)
        except ConnectionError:
            return  # nobody to answer
        if raw is None:
            await _send_json(send, *bad_request(f"the body is larger than {self.limit} bytes"))
            return
        status, body = await (self._answer(raw) if len(raw) <= INLINE_BYTES else self._in_pool(answer, self.hook, raw))
        await _send_json(send, status, body)

    async def _answer(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        """webhook.admission.answer, with the steps that may wait in the pool."""
        hook = self.hook
        started = time.perf_counter()
        req = read_review(raw)
        if isinstance(req, tuple):
            return req
        try:
            slow, target = waits_for_git(hook, req)
        except Exception:  # judge_safely meets the same bug, and answers it
            slow, target = True, None
        if slow:
            decision, git, key = await self._in_pool(judge_safely, hook, req, target)
        else:
            decision, git, key = judge_safely(hook, req, target)
        if key is not None and must_record(req, decision):
            decision = await self._in_pool(record, hook, req, decision, git, key)
        return finish(hook, req, decision, git, started)

    async def _wsgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            raw = await self._body(scope, receive)
        except ConnectionError:
            return
        if raw is None:
            await _send_json(send, 413, {"error": f"the body is larger than {self.limit} bytes"})
            return
        status, headers, body = await self._in_pool(call_wsgi, self.flask.wsgi_app, environ_of(scope, raw))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _send_json(
    send: Send, status: int, body: dict[str, Any], extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def environ_of(scope: Scope, body: bytes) -> dict[str, Any]:
    """The WSGI environ of an ASGI HTTP request whose body has been read."""
    server = scope.get("server") or ("localhost", 0)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", ""),
        "PATH_INFO": scope["path"],
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "https"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if key == "CONTENT_TYPE":
                environ[key] = text
            continue
        key = "HTTP_" + key
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ


def call_wsgi(
    app: Callable[..., Iterable[bytes]], environ: dict[str, Any]
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Runs a WSGI app to the end: its status, headers and whole body."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        started[:] = [status, headers]
        return chunks.append

    chunks: list[bytes] = []
    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started
    encoded = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return int(status.split(" ", 1)[0]), encoded, b"".join(chunks)
