"""What the webhook's event loop answers itself and what it hands to a thread (webhook.worker serves this).

POST /validate is answered on the loop when it can be: parsing and judging a request against Git's state in memory
takes a fraction of a millisecond, less than a hand-off to a thread costs. What may wait is handed to the pool, so
it never holds up the loop: judging a request that names a revision not loaded yet (Git may be asked, the commit
loaded), writing an audit record (a request to the API server), a body too large to parse in passing, and every
other path (/healthz, /readyz, /metrics: the Flask app, through a small WSGI bridge).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from .admission import answer, bad_request, finish, judge_safely, must_record, read_review, record, waits_for_git
from .app import Webhook, webhook_of

INLINE_BYTES = 256 * 1024  # a larger body is parsed in the pool: parsing it would hold up the loop

Answer = tuple[int, dict[str, Any]]
Headers = list[tuple[str, str]]
Raw = tuple[int, Headers, bytes]  # status, headers, body: a response as the Flask app made it
Later = Callable[[], Answer | Raw]  # to run in a pool thread


class Front:
    """The webhook app as its worker sees it: `validate` and `other` give an answer now, or a function that gives it
    in a pool thread."""

    def __init__(self, app: Flask) -> None:
        self.flask = app
        self.hook: Webhook = webhook_of(app)
        self.limit = int(self.hook.config["MAX_REQUEST_BYTES"])

    def validate(self, raw: bytes) -> Answer | Later:
        """The answer to a POSTed AdmissionReview (webhook.admission.answer), or the function that computes it."""
        hook = self.hook
        if len(raw) > INLINE_BYTES:
            return lambda: answer(hook, raw)
        started = self.hook.clock.monotonic()
        req = read_review(raw)
        if isinstance(req, tuple):
            return req
        try:
            slow, target = waits_for_git(hook, req)
        except Exception:  # judge_safely meets the same bug, and answers it
            slow, target = True, None
        if slow:

            def judged_later() -> Answer:
                decision, git, key = judge_safely(hook, req, target)
                if key is not None and must_record(req, decision):
                    decision = record(hook, req, decision, git, key, received=started)
                return finish(hook, req, decision, git, started)

            return judged_later
        decision, git, key = judge_safely(hook, req, target)
        if key is not None and must_record(req, decision):

            def recorded_later() -> Answer:
                assert key is not None
                return finish(hook, req, record(hook, req, decision, git, key, received=started), git, started)

            return recorded_later
        return finish(hook, req, decision, git, started)

    def other(self, environ: dict[str, Any]) -> Later:
        """Any other path: the Flask app's answer, in the pool."""
        return lambda: call_wsgi(self.flask.wsgi_app, environ)

    def too_large(self) -> Answer:
        return bad_request(f"the body is larger than {self.limit} bytes")

    def stop(self) -> None:
        self.hook.stop()


def environ_of(
    method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes, server: Any, client: Any
) -> dict[str, Any]:
    """The WSGI environ of an HTTP request whose body has been read."""
    path, _, query = target.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": str(server[0]) if server else "localhost",
        "SERVER_PORT": str(server[1]) if server else "0",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": str(client[0]) if client else "",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ[key] = value
        elif key != "CONTENT_LENGTH":
            key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def call_wsgi(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> Raw:
    """Runs a WSGI app to the end: its status, headers and whole body."""
    started: list[Any] = []
    chunks: list[bytes] = []

    def start_response(status: str, headers: Headers, exc_info: Any = None) -> Callable[[bytes], None]:
        started[:] = [status, headers]
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started
    return int(status.split(" ", 1)[0]), list(headers), b"".join(chunks)
