"""webhook.asgi in process: what is answered on the event loop, what is handed to a pool thread, who may call
/validate, the body limit, and the Flask app behind it. tests/unit/test_webhook_server.py serves it for real, under
gunicorn and uvicorn (webhook.server)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from engine.core.objects import REVISION_ANNOTATION
from webhook.asgi import INLINE_BYTES, WebhookApp
from webhook.tls import API_SERVER_CLIENT, PEERCERT, TLS, ClientAuth

from ..fakes import FakeAudit, FakeSource
from .test_webhook_app import assert_well_formed, deployment, make_app, review, with_image

NEW_REVISION = "f" * 40


def front(client_auth: ClientAuth | None = None, **config: Any) -> tuple[WebhookApp, FakeSource, FakeAudit]:
    app, source, audit = make_app(**config)
    return WebhookApp(app, client_auth or ClientAuth(None, ()), threads=2), source, audit


def settle(result: Any) -> tuple[bool, int, Any]:
    """(answered at once, status, body): a function is what the app runs in a pool thread; run it here."""
    if callable(result):
        return (False, *result())
    return (True, *result)


def validate(f: WebhookApp, body: Any) -> tuple[bool, int, Any]:
    return settle(f.judge(body if isinstance(body, bytes) else json.dumps(body).encode()))


def test_an_allowed_request_is_answered_at_once() -> None:
    f, _, audit = front()
    labelled = deployment()
    labelled["metadata"]["labels"]["team"] = "web"
    at_once, status, body = validate(f, review(obj=labelled))
    assert at_once
    assert status == 200
    assert assert_well_formed(body)["allowed"] is True
    assert audit.records == []


def test_a_drift_attempt_is_judged_at_once_and_recorded_later() -> None:
    f, source, audit = front()
    result = f.judge(json.dumps(review(obj=with_image("evil:1"))).encode())
    assert callable(result)
    assert source.lookups  # judged already
    assert audit.records == []  # not recorded yet: that waits for the API server, in the pool
    status, body = result()
    assert status == 200
    answer = assert_well_formed(body)
    assert answer["allowed"] is False
    assert "image" in answer["status"]["message"]
    assert len(audit.records) == 1


def test_a_dry_run_drift_attempt_is_answered_at_once() -> None:
    f, _, audit = front()
    at_once, _, body = validate(f, review(obj=with_image("evil:1"), dryRun=True))
    assert at_once
    assert assert_well_formed(body)["allowed"] is False
    assert audit.records == []


def test_without_the_audit_log_a_drift_attempt_is_denied() -> None:
    app, _, _ = make_app(audit=FakeAudit(fail="the API server is down"))
    at_once, _, body = validate(WebhookApp(app, ClientAuth(None, ())), review(obj=with_image("evil:1")))
    assert not at_once
    answer = assert_well_formed(body)
    assert answer["allowed"] is False
    assert "audit log is unavailable" in answer["status"]["message"]


def test_a_request_naming_a_revision_not_loaded_is_judged_later() -> None:
    f, source, audit = front()
    source.slow[NEW_REVISION] = threading.Event()
    source.slow[NEW_REVISION].set()
    waiting = with_image("evil:1")
    waiting["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = NEW_REVISION
    result = f.judge(json.dumps(review(obj=waiting)).encode())
    assert callable(result)
    assert source.lookups == []  # nothing judged on the loop
    _, body = result()
    assert assert_well_formed(body)["allowed"] is False
    assert len(audit.records) == 1  # judged and recorded in the same pool thread


def test_the_loaded_revision_is_judged_at_once() -> None:
    f, _, _ = front()
    loaded = deployment()
    loaded["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = "0123456789abcdef0123456789abcdef01234567"
    assert validate(f, review(obj=loaded))[0]


def test_a_bug_while_looking_at_the_target_is_still_answered() -> None:
    f, source, _ = front()
    source.fail = True
    _, status, body = validate(f, review())
    assert status == 200
    answer = assert_well_formed(body)
    assert answer["allowed"] is False
    assert "internal error" in answer["status"]["message"]


def test_a_large_body_is_parsed_later() -> None:
    f, source, _ = front()
    big = deployment()
    big["metadata"]["annotations"] = {"blob": "x" * (INLINE_BYTES + 1)}
    result = f.judge(json.dumps(review(obj=big)).encode())
    assert callable(result)
    assert source.lookups == []
    _, body = result()
    assert assert_well_formed(body)["allowed"] is True


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1beta1"}).encode(), "apiVersion must be"),
    ],
)
def test_a_malformed_review_is_a_400_at_once(body: bytes, reason: str) -> None:
    at_once, status, answer = validate(front()[0], body)
    assert at_once
    assert status == 400
    assert reason in answer["reason"]


# --- over ASGI: an in-process client ----------------------------------------------------------------------------

Served = tuple[int, dict[str, str], bytes]
API_SERVER = {"subject": ((("commonName", API_SERVER_CLIENT),),)}


def call(
    app: WebhookApp,
    method: str,
    path: str,
    chunks: Iterable[bytes] = (b"",),
    headers: Iterable[tuple[bytes, bytes]] = (),
    peercert: dict[str, Any] | None = API_SERVER,
) -> Served:
    """One request through the ASGI interface as uvicorn makes it (webhook.server puts the TLS extension in)."""
    body = list(chunks)
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": list(headers),
        "http_version": "1.1",
        "scheme": "https",
        "server": ("127.0.0.1", 8443),
        "client": ("127.0.0.1", 5000),
        "root_path": "",
        "extensions": {TLS: {"client_cert_chain": [], PEERCERT: peercert}},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if body:
            return {"type": "http.request", "body": body.pop(0), "more_body": bool(body)}
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    named = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], named, content


def test_a_review_over_asgi_is_answered() -> None:
    status, headers, body = call(front()[0], "POST", "/validate", [json.dumps(review()).encode()])
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert assert_well_formed(json.loads(body))["allowed"] is True


def test_a_drift_attempt_over_asgi_is_recorded_in_the_pool() -> None:
    f, _, audit = front()
    status, _, body = call(f, "POST", "/validate", [json.dumps(review(obj=with_image("evil:1"))).encode()])
    assert status == 200
    assert assert_well_formed(json.loads(body))["allowed"] is False
    assert audit.threads
    assert all(name.startswith("webhook") for name in audit.threads)


@pytest.mark.parametrize(("path", "status"), [("/healthz", 200), ("/readyz", 200), ("/nowhere", 404)])
def test_other_paths_are_the_flask_apps(path: str, status: int) -> None:
    assert call(front()[0], "GET", path)[0] == status


def test_readyz_says_not_ready() -> None:
    f, source, _ = front()
    source.ready = False
    status, _, body = call(f, "GET", "/readyz")
    assert status == 503
    assert json.loads(body)["ready"] is False


def test_metrics_count_what_the_loop_decided() -> None:
    f, _, _ = front()
    validate(f, review(obj=with_image("evil:1")))
    status, headers, body = call(f, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert b'gitops_webhook_decisions_total{mode="enforce",verdict="denied"} 1.0' in body


def test_only_post_is_served_on_validate() -> None:
    status, headers, _ = call(front()[0], "GET", "/validate")
    assert status == 405
    assert headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/validate", "/metrics"])
def test_a_declared_length_over_the_limit_is_a_413_unread(path: str) -> None:
    f, source, _ = front(MAX_REQUEST_BYTES=1000)
    status, headers, body = call(f, "POST", path, [b"never read"], [(b"content-length", b"1001")])
    assert status == 413
    assert headers["connection"] == "close"
    assert "larger than 1000 bytes" in json.loads(body)["reason"]
    assert source.lookups == []


def test_a_chunked_body_over_the_limit_is_a_413_as_soon_as_it_passes_it() -> None:
    f, _, _ = front(MAX_REQUEST_BYTES=1000)
    status, headers, _ = call(f, "POST", "/validate", [b"x" * 600, b"x" * 600, b"never read"])
    assert status == 413
    assert headers["connection"] == "close"


def test_a_chunked_body_within_the_limit_is_read_whole() -> None:
    raw = json.dumps(review(uid="chunked")).encode()
    f, _, _ = front()
    status, _, body = call(f, "POST", "/validate", [raw[i : i + 100] for i in range(0, len(raw), 100)])
    assert status == 200
    assert assert_well_formed(json.loads(body), "chunked")["allowed"] is True


@pytest.mark.parametrize(
    ("peercert", "status", "reason"),
    [
        (None, 401, "a client certificate is required"),
        ({"subject": ((("commonName", "alice"),),)}, 403, "'alice' is not one of the allowed"),
    ],
)
def test_validate_without_the_api_servers_certificate_is_refused_unjudged(
    peercert: dict[str, Any] | None, status: int, reason: str
) -> None:
    f, source, audit = front(ClientAuth(Path("ca.crt")))
    got, headers, body = call(
        f, "POST", "/validate", [json.dumps(review(obj=with_image("evil:1"))).encode()], peercert=peercert
    )
    assert got == status
    assert headers["connection"] == "close"
    assert reason in json.loads(body)["reason"]
    assert "response" not in json.loads(body)
    assert source.lookups == []
    assert audit.records == []
    assert call(f, "GET", "/healthz", peercert=peercert)[0] == 200  # probes need no certificate


def test_the_api_servers_certificate_is_judged() -> None:
    f, _, _ = front(ClientAuth(Path("ca.crt")))
    status, _, body = call(f, "POST", "/validate", [json.dumps(review()).encode()])
    assert status == 200
    assert assert_well_formed(json.loads(body))["allowed"] is True


def test_lifespan_shutdown_stops_the_refresh_loop() -> None:
    f, _, _ = front()
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(f({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert f.hook._stop.is_set()
