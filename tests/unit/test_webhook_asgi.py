"""The ASGI front (webhook.asgi) in process: what is answered on the event loop, what goes to the pool, and the
WSGI bridge to the Flask app. tests/unit/test_webhook_server.py runs it under gunicorn over TLS."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from typing import Any

import pytest

from engine.objects import REVISION_ANNOTATION
from webhook.asgi import INLINE_BYTES, AdmissionASGI, environ_of

from .test_webhook_app import (
    REVISION,
    FakeAudit,
    FakeSource,
    assert_well_formed,
    deployment,
    make_app,
    review,
    with_image,
)

NEW_REVISION = "f" * 40


class Exchange:
    """One ASGI HTTP request and what the app sent back."""

    def __init__(self, method: str, path: str, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None):
        self.scope = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": b"",
            "headers": headers if headers is not None else [(b"content-length", str(len(body)).encode())],
            "http_version": "1.1",
            "scheme": "https",
            "server": ("127.0.0.1", 8443),
            "client": ("127.0.0.1", 50000),
        }
        self.chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
        self.sent: list[dict[str, Any]] = []
        self.received = 0

    async def receive(self) -> dict[str, Any]:
        if self.received >= len(self.chunks):
            return {"type": "http.disconnect"}
        self.received += 1
        return {
            "type": "http.request",
            "body": self.chunks[self.received - 1],
            "more_body": self.received < len(self.chunks),
        }

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def run(self, front: AdmissionASGI) -> Exchange:
        await front(self.scope, self.receive, self.send)
        return self

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])

    def json(self) -> Any:
        return json.loads(self.body)


def front(**config: Any) -> tuple[AdmissionASGI, FakeSource, FakeAudit]:
    app, source, audit = make_app(**config)
    return AdmissionASGI(app, threads=4), source, audit


def run(coro: Coroutine[Any, Any, Exchange]) -> Exchange:
    return asyncio.run(coro)


def validate(asgi: AdmissionASGI, body: Any) -> Exchange:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return run(Exchange("POST", "/validate", raw).run(asgi))


def test_an_allowed_request_is_judged_on_the_loop_and_answered() -> None:
    asgi, source, audit = front()
    labelled = deployment()
    labelled["metadata"]["labels"]["team"] = "web"
    exchange = validate(asgi, review(obj=labelled))
    assert exchange.status == 200
    assert exchange.headers[b"content-type"] == b"application/json"
    assert int(exchange.headers[b"content-length"]) == len(exchange.body)
    assert assert_well_formed(exchange.json())["allowed"] is True
    assert source.lookup_threads == ["MainThread"]
    assert audit.records == []


def test_a_drift_attempt_is_judged_on_the_loop_and_recorded_in_the_pool() -> None:
    asgi, source, audit = front()
    exchange = validate(asgi, review(obj=with_image("evil:1")))
    answer = assert_well_formed(exchange.json())
    assert answer["allowed"] is False
    assert "image" in answer["status"]["message"]
    assert source.lookup_threads == ["MainThread"]
    assert len(audit.records) == 1
    assert audit.threads[0].startswith("webhook")


def test_without_the_audit_log_a_drift_attempt_is_denied_on_this_front_too() -> None:
    app, _, _ = make_app(audit=FakeAudit(fail="the API server is down"))
    exchange = validate(AdmissionASGI(app, threads=2), review(obj=with_image("evil:1")))
    answer = assert_well_formed(exchange.json())
    assert answer["allowed"] is False
    assert "audit log is unavailable" in answer["status"]["message"]


def test_a_request_waiting_for_git_holds_up_no_other_request() -> None:
    asgi, source, _ = front()
    released = source.slow[NEW_REVISION] = threading.Event()
    waiting = deployment()
    waiting["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = NEW_REVISION

    async def scenario() -> tuple[Exchange, Exchange, bool]:
        slow = asyncio.create_task(Exchange("POST", "/validate", json.dumps(review(obj=waiting)).encode()).run(asgi))
        await asyncio.sleep(0.05)  # the slow one is in the pool, waiting for Git
        fast = await Exchange("POST", "/validate", json.dumps(review(uid="fast")).encode()).run(asgi)
        pending = not slow.done()
        released.set()
        return await slow, fast, pending

    slow, fast, pending_while_fast_answered = asyncio.run(scenario())
    assert pending_while_fast_answered
    assert assert_well_formed(fast.json(), "fast")["allowed"] is True
    assert assert_well_formed(slow.json())["allowed"] is True
    assert source.lookup_threads[0].startswith("webhook")  # the slow one
    assert source.lookup_threads[1] == "MainThread"


def test_a_bug_while_looking_at_the_target_is_still_answered() -> None:
    asgi, source, _ = front()
    source.fail = True
    answer = assert_well_formed(validate(asgi, review()).json())
    assert answer["allowed"] is False
    assert "internal error" in answer["status"]["message"]


def test_a_large_body_is_parsed_in_the_pool() -> None:
    asgi, source, _ = front()
    big = deployment()
    big["metadata"]["annotations"] = {"blob": "x" * (INLINE_BYTES + 1)}
    answer = assert_well_formed(validate(asgi, review(obj=big)).json())
    assert answer["allowed"] is True
    assert source.lookup_threads[0].startswith("webhook")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1beta1"}).encode(), "apiVersion must be"),
    ],
)
def test_a_malformed_review_is_a_400_with_a_reason(body: bytes, reason: str) -> None:
    exchange = validate(front()[0], body)
    assert exchange.status == 400
    assert reason in exchange.json()["reason"]


def test_a_body_over_the_limit_is_refused_by_its_length_unread() -> None:
    asgi, _, _ = front(MAX_REQUEST_BYTES=1000)
    exchange = Exchange("POST", "/validate", b"x" * 5000)
    run(exchange.run(asgi))
    assert exchange.status == 400
    assert "larger than 1000 bytes" in exchange.json()["reason"]
    assert exchange.received == 0


def test_a_streamed_body_over_the_limit_is_read_no_further() -> None:
    asgi, _, _ = front(MAX_REQUEST_BYTES=100_000)
    exchange = Exchange("POST", "/validate", b"x" * 300_000, headers=[])  # chunked: no length announced
    run(exchange.run(asgi))
    assert exchange.status == 400
    assert exchange.received == 2  # 128 KiB read of 300 KB


def test_a_client_that_leaves_mid_body_gets_nothing_and_breaks_nothing() -> None:
    asgi, source, _ = front()
    exchange = Exchange("POST", "/validate", b"{", headers=[])
    exchange.chunks = [b"{", b"}"]
    messages = iter([{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    run_front = asgi(exchange.scope, receive, exchange.send)
    asyncio.run(run_front)
    assert exchange.sent == []
    assert source.lookups == []


def test_only_post_is_served_on_validate() -> None:
    exchange = run(Exchange("GET", "/validate").run(front()[0]))
    assert exchange.status == 405
    assert exchange.headers[b"allow"] == b"POST"


@pytest.mark.parametrize(("path", "status"), [("/healthz", 200), ("/readyz", 200), ("/nowhere", 404)])
def test_other_paths_are_the_flask_apps(path: str, status: int) -> None:
    exchange = run(Exchange("GET", path).run(front()[0]))
    assert exchange.status == status
    if status == 200:
        assert exchange.json()


def test_readyz_through_the_bridge_says_not_ready() -> None:
    asgi, source, _ = front()
    source.ready = False
    exchange = run(Exchange("GET", "/readyz").run(asgi))
    assert exchange.status == 503
    assert exchange.json()["ready"] is False


def test_metrics_through_the_bridge_count_what_the_loop_decided() -> None:
    asgi, _, _ = front()
    validate(asgi, review(obj=with_image("evil:1")))
    exchange = run(Exchange("GET", "/metrics").run(asgi))
    assert exchange.status == 200
    assert exchange.headers[b"content-type"].startswith(b"text/plain")
    assert b'gitops_webhook_decisions_total{mode="enforce",verdict="denied"} 1.0' in exchange.body


def test_the_wsgi_environ_carries_the_request() -> None:
    scope = Exchange(
        "POST", "/metrics", b"abc", headers=[(b"content-type", b"text/plain"), (b"x-a", b"1"), (b"x-a", b"2")]
    ).scope
    scope["query_string"] = b"q=1"
    environ = environ_of(scope, b"abc")
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["PATH_INFO"] == "/metrics"
    assert environ["QUERY_STRING"] == "q=1"
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["CONTENT_LENGTH"] == "3"
    assert environ["HTTP_X_A"] == "1,2"
    assert environ["wsgi.input"].read() == b"abc"
    assert environ["wsgi.url_scheme"] == "https"


def test_lifespan_shutdown_stops_the_refresh_loop() -> None:
    asgi, _, _ = front()
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(asgi({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert asgi.hook._stop.is_set()


def test_the_revision_a_request_names_decides_where_it_is_judged() -> None:
    asgi, source, _ = front()
    source.slow[NEW_REVISION] = threading.Event()
    source.slow[NEW_REVISION].set()
    loaded = deployment()
    loaded["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = REVISION
    validate(asgi, review(obj=loaded))
    loaded["metadata"]["annotations"][REVISION_ANNOTATION] = NEW_REVISION
    validate(asgi, review(obj=loaded))
    assert source.lookup_threads[0] == "MainThread"
    assert source.lookup_threads[1].startswith("webhook")
