"""The webhook as an ASGI application: POST /validate answered on the event loop when it can be, what may wait in a
thread, every other path the Flask app's (through a2wsgi). The HTTP server around it (webhook.server) is uvicorn.

Parsing and judging a request against Git's state in memory takes a few hundredths of a millisecond, less than a
hand-off to a thread costs, so that is done on the loop. What may wait is handed to a pool, so that it never holds up
the loop: judging a request that names a revision not loaded yet (Git may be asked, the commit loaded), writing an
audit record (a request to the API server), a body too large to parse in passing, and every other path (/healthz,
/readyz, /metrics).

Who may call /validate is webhook.tls.ClientAuth's to say, from the client certificate the TLS layer verified (the
server puts it in the scope as the ASGI TLS extension, webhook.server): a request without a verified certificate of
an allowed name gets 401 or 403 and `Connection: close`, and is never judged nor recorded. The body limit
(MAX_REQUEST_BYTES) is enforced here, since uvicorn has none: a declared length over it is refused with 413 unread, a
chunked body is refused with 413 as soon as it passes it; both close the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from a2wsgi import WSGIMiddleware
from flask import Flask

from .admission import PATH, answer, conclude, finish, judge_safely, must_record, read_review, waits_for_git
from .hook import Webhook, webhook_of
from .tls import PEERCERT, TLS, ClientAuth

log = logging.getLogger(__name__)

INLINE_BYTES = 256 * 1024  # a larger body is parsed in the pool: parsing it would hold up the loop

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Answer = tuple[int, dict[str, Any]]


class TooLarge(Exception):
    """The body passed the limit while it was being read."""


class WebhookApp:
    """The ASGI application `gitops-webhook` serves: the Flask app (`create_app`) with /validate in front of it."""

    def __init__(self, app: Flask, client_auth: ClientAuth, threads: int = 16) -> None:
        self.flask = app
        self.hook: Webhook = webhook_of(app)
        self.client_auth = client_auth
        self.limit = self.hook.settings.max_request_bytes
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="webhook")
        self.other = WSGIMiddleware(app.wsgi_app, workers=max(1, threads))  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if scope["path"] == PATH:
                await self.validate(scope, receive, send)
            elif (declared := _declared_length(scope)) is not None and declared > self.limit:
                await _send_json(send, 413, self.too_large(), close=True)
            else:
                await self.other(scope, receive, send)  # type: ignore[arg-type]
        elif kind == "lifespan":
            await self.lifespan(receive, send)
        # websockets: never accepted (returning without an answer closes the connection)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def validate(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self.client_auth.refusal(peercert_of(scope))
        if refusal is not None:  # not the API server: never judged, never recorded
            status, reason = refusal
            error = "Unauthorized" if status == 401 else "Forbidden"
            await _send_json(send, status, {"error": error, "reason": reason}, close=True)
            return
        if scope["method"] != "POST":
            await _send_json(send, 405, {"error": "method not allowed", "allowed": "POST"}, [(b"allow", b"POST")])
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.limit:
            await _send_json(send, 413, self.too_large(), close=True)
            return
        try:
            raw = await _read_body(receive, self.limit)
        except TooLarge:
            await _send_json(send, 413, self.too_large(), close=True)
            return
        if raw is None:  # the client went away
            return
        try:
            result = self.judge(raw)
            if callable(result):
                result = await asyncio.get_running_loop().run_in_executor(self.pool, result)
            status, document = result
            payload = json.dumps(document, separators=(",", ":")).encode()
        except Exception:  # a bug must still get an answer, and the connection go on
            log.exception("answering %s failed", PATH)
            status, payload = 500, b'{"error":"internal error"}'
        await _send(send, status, payload)

    def judge(self, raw: bytes) -> Answer | Callable[[], Answer]:
        """The answer to a POSTed AdmissionReview (webhook.admission.answer), or the function that computes it in a
        pool thread: the steps that may wait go there."""
        hook = self.hook
        if len(raw) > INLINE_BYTES:
            return lambda: answer(hook, raw)
        started = hook.clock.monotonic()
        req = read_review(raw)
        if isinstance(req, tuple):
            return req
        try:
            slow, target = waits_for_git(hook, req)
        except Exception:  # judge_safely meets the same bug, and answers it
            slow, target = True, None
        if slow:

            def judged_later() -> Answer:
                return conclude(hook, req, *judge_safely(hook, req, target), started)

            return judged_later
        decision, git, key = judge_safely(hook, req, target)
        if key is not None and must_record(req, decision):
            return lambda: conclude(hook, req, decision, git, key, started)  # the record waits for the API server
        return finish(hook, req, decision, git, started)

    def too_large(self) -> dict[str, Any]:
        return {"error": "Request Entity Too Large", "reason": f"the body is larger than {self.limit} bytes"}

    def stop(self) -> None:
        self.hook.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)


def peercert_of(scope: Scope) -> dict[str, Any] | None:
    """The verified client certificate of the request's connection (ssl's getpeercert()), or None."""
    tls = (scope.get("extensions") or {}).get(TLS)
    if not tls:
        return None
    peercert = tls.get(PEERCERT)
    return peercert if isinstance(peercert, dict) else None


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None when the client disconnected; TooLarge past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(
    send: Send,
    status: int,
    payload: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    close: bool = False,
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *(extra or [])]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _send_json(
    send: Send,
    status: int,
    document: dict[str, Any],
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    close: bool = False,
) -> None:
    await _send(send, status, json.dumps(document, separators=(",", ":")).encode(), extra, close=close)
