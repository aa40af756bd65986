"""webhook.front in process: what is answered on the event loop, what is handed to a pool thread, and the WSGI bridge
to the Flask app. tests/unit/test_webhook_server.py serves it for real, under gunicorn with webhook.worker."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from engine.core.objects import REVISION_ANNOTATION
from webhook.front import INLINE_BYTES, Front, environ_of

from .test_webhook_app import FakeAudit, FakeSource, assert_well_formed, deployment, make_app, review, with_image

NEW_REVISION = "f" * 40


def front(**config: Any) -> tuple[Front, FakeSource, FakeAudit]:
    app, source, audit = make_app(**config)
    return Front(app), source, audit


def settle(result: Any) -> tuple[bool, int, Any]:
    """(answered at once, status, body): a function is what the worker runs in a pool thread; run it here."""
    if callable(result):
        return (False, *result())
    return (True, *result)


def validate(f: Front, body: Any) -> tuple[bool, int, Any]:
    return settle(f.validate(body if isinstance(body, bytes) else json.dumps(body).encode()))


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
    result = f.validate(json.dumps(review(obj=with_image("evil:1"))).encode())
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
    at_once, _, body = validate(Front(app), review(obj=with_image("evil:1")))
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
    result = f.validate(json.dumps(review(obj=waiting)).encode())
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
    result = f.validate(json.dumps(review(obj=big)).encode())
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


def test_the_limit_comes_from_the_config() -> None:
    f, _, _ = front(MAX_REQUEST_BYTES=1000)
    assert f.limit == 1000
    status, body = f.too_large()
    assert status == 400
    assert "larger than 1000 bytes" in body["reason"]


def get(f: Front, path: str) -> tuple[int, dict[str, str], bytes]:
    later = f.other(environ_of("GET", path, [("Accept", "*/*")], b"", ("127.0.0.1", 8443), ("127.0.0.1", 5000)))
    status, headers, body = later()
    return status, dict(headers), body


@pytest.mark.parametrize(("path", "status"), [("/healthz", 200), ("/readyz", 200), ("/nowhere", 404)])
def test_other_paths_are_the_flask_apps(path: str, status: int) -> None:
    assert get(front()[0], path)[0] == status


def test_readyz_through_the_bridge_says_not_ready() -> None:
    f, source, _ = front()
    source.ready = False
    status, _, body = get(f, "/readyz")
    assert status == 503
    assert json.loads(body)["ready"] is False


def test_metrics_through_the_bridge_count_what_the_loop_decided() -> None:
    f, _, _ = front()
    validate(f, review(obj=with_image("evil:1")))
    status, headers, body = get(f, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert b'gitops_webhook_decisions_total{mode="enforce",verdict="denied"} 1.0' in body


def test_the_wsgi_environ_carries_the_request() -> None:
    headers = [("Content-Type", "text/plain"), ("Content-Length", "3"), ("X-A", "1"), ("X-A", "2")]
    environ = environ_of("POST", "/metrics?q=1", headers, b"abc", ("10.0.0.1", 8443), ("10.0.0.2", 5000))
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["PATH_INFO"] == "/metrics"
    assert environ["QUERY_STRING"] == "q=1"
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["CONTENT_LENGTH"] == "3"
    assert environ["HTTP_X_A"] == "1,2"
    assert environ["SERVER_NAME"] == "10.0.0.1"
    assert environ["REMOTE_ADDR"] == "10.0.0.2"
    assert environ["wsgi.input"].read() == b"abc"


def test_stop_stops_the_refresh_loop() -> None:
    f, _, _ = front()
    f.stop()
    assert f.hook._stop.is_set()
