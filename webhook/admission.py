"""POST /validate: one AdmissionReview in, one out (or HTTP 400 for a malformed one).

This is the webhook's hot path: the API server waits for it on every write to a managed object. `answer` is the
whole of it, in steps that webhook.asgi runs on the event loop or in a thread (gitops-webhook serves it so, with
uvicorn: webhook.server). The Flask app answers /validate too, for any WSGI server, through a small WSGI layer in
front of Flask (`ValidateFastPath`) that skips Flask's per-request machinery; /healthz, /readyz and /metrics are
Flask's."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from engine.adapters.audit import build_record
from engine.core.admission import AdmissionRequest, Decision, Found, GitObject, Unjudged, Verdict, decide, object_of
from engine.core.auditchain import rfc3339
from engine.core.errors import GitOpsError
from engine.core.objects import REVISION_ANNOTATION, Claim, DriftMode, ObjectKey, claims_of

from .hook import Webhook
from .review import ReviewError, parse_review, response

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
PATH = "/validate"


def bad_request(reason: str) -> tuple[int, dict[str, Any]]:
    return 400, {"error": "bad AdmissionReview", "reason": reason}


@dataclass(frozen=True)
class Target:
    """The object a request is about (the parent, for a scale or an eviction), the revision it names, and the
    Applications its tracking marks claim (in its object and its old object)."""

    key: ObjectKey
    revision: str
    claims: tuple[Claim, ...]


def target_of(hook: Webhook, req: AdmissionRequest) -> Target:
    resource = req.get("resource") or {}
    group = str(resource.get("group", ""))
    namespace, name = str(req.get("namespace") or ""), str(req.get("name") or "")
    subresource = req.get("subResource") or ""
    obj = object_of(req) or {}
    metadata = obj.get("metadata") or {}
    if subresource == "scale":
        kind = hook.source.kind_of(group, str(resource.get("resource", "")))
    elif subresource == "eviction":
        kind = "Pod" if (group, resource.get("resource")) == ("", "pods") else ""
    else:
        kind = str((req.get("kind") or {}).get("kind", ""))
        name = name or str(metadata.get("name") or "")
    annotations = metadata.get("annotations") or {}
    key = ObjectKey(group, kind, namespace, name)
    revision = "" if _deletes(req) else str(annotations.get(REVISION_ANNOTATION, ""))
    if subresource in ("scale", "eviction"):
        claims: tuple[Claim, ...] = ()  # a Scale or an Eviction carries none of the parent's marks
    else:
        claims = claims_of(req.get("object"), req.get("oldObject"))
    return Target(key, revision, claims)


def _deletes(req: AdmissionRequest) -> bool:
    return req.get("operation") == "DELETE" or req.get("subResource") == "eviction"


def _lookup(hook: Webhook, req: AdmissionRequest, target: Target) -> tuple[Found, ObjectKey]:
    key = target.key
    found = hook.source.lookup(key, target.revision, target.claims) if key.kind else Found()
    if (
        found.git is None
        and found.unjudged is None
        and req.get("subResource") in ("scale", "eviction")
        and not hook.source.all_loaded()
    ):
        # No labels in the request, and a state not loaded may hold the parent: the parent's own marks tell.
        try:
            parent = hook.lookups.parent(req)
        except GitOpsError as e:
            return Found(
                unjudged=Unjudged(None, DriftMode.ENFORCE, f"cannot read the object to judge this request: {e}")
            ), key
        if parent is None:
            return found, key
        key = ObjectKey(key.group, str(parent.get("kind") or key.kind), key.namespace, key.name)
        found = hook.source.lookup(key, "", claims_of(parent))
    return found, key


def judge(
    hook: Webhook, req: AdmissionRequest, target: Target | None = None
) -> tuple[Decision, GitObject | None, ObjectKey]:
    target = target or target_of(hook, req)
    found, key = _lookup(hook, req, target)
    # A claim counts when the request makes it: a new object, or one its old version did not make.
    new_claims = set(claims_of(req.get("object"))) - (
        set(claims_of(req.get("oldObject"))) if req.get("operation") == "UPDATE" else set()
    )
    newly = any(c.matches(app) for app in found.claimed for c in new_claims)
    judgeable = found.git is not None or found.unjudged is not None
    facts = hook.lookups.facts(req) if judgeable and hook.lookups.needed(req) else None
    decision = decide(
        req,
        found.git,
        exemptions=hook.exemptions,
        masker=hook.masker,
        tracked_elsewhere=newly,
        unjudged=found.unjudged,
        facts=facts,
    )
    return decision, found.git, key


# answer() in steps, so that webhook.asgi can hand the ones that may wait to a thread.
def read_review(raw: bytes) -> AdmissionRequest | tuple[int, dict[str, Any]]:
    """The request of a POSTed AdmissionReview, or the 400 answer to a malformed one."""
    try:
        review = json.loads(raw)
    except (ValueError, RecursionError) as e:
        return bad_request(f"the body is not valid JSON: {e}")
    try:
        return parse_review(review)
    except ReviewError as e:
        return bad_request(str(e))


def waits_for_git(hook: Webhook, req: AdmissionRequest) -> tuple[bool, Target]:
    """Whether judging `req` may wait for Git or the cluster (a revision not loaded yet, an Application to load, a
    fact to look up), and its target."""
    target = target_of(hook, req)
    if not target.key.kind and req.get("subResource") not in ("scale", "eviction"):
        return False, target
    if hook.lookups.needed(req):
        return True, target
    if req.get("subResource") in ("scale", "eviction") and not hook.source.all_loaded():
        return True, target
    if not target.key.kind:
        return False, target
    return not hook.source.answers_at_once(target.key, target.revision, target.claims), target


def judge_safely(
    hook: Webhook, req: AdmissionRequest, target: Target | None = None
) -> tuple[Decision, GitObject | None, ObjectKey | None]:
    try:
        return judge(hook, req, target)
    except Exception:  # a bug must still get an answer: refuse (the API server would, on an error) and say why
        log.exception("judging request %s failed", req["uid"])
        failure = Decision(False, Verdict.DENIED, message="kubectl-gitops: internal error judging this request")
        return failure, None, None


def must_record(req: AdmissionRequest, decision: Decision) -> bool:
    return decision.record and not req.get("dryRun", False)


def record(
    hook: Webhook,
    req: AdmissionRequest,
    decision: Decision,
    git: GitObject | None,
    key: ObjectKey,
    received: float | None = None,
) -> Decision:
    """Writes the audit record of a drift attempt (this waits for the API server); the decision to send. `received`
    (on the webhook's monotonic clock, when the request came) lets a record durable only after the API server's
    deadline say so."""
    try:
        record = build_record(req, decision, git, key, time=rfc3339(hook.clock.wall()))
        sealed = hook.audit.append(record, received=received)
    except GitOpsError as e:
        # Every drift attempt is recorded before it is answered; without the log, refuse rather than lose it.
        log.error("audit log unavailable: %s", e)
        return Decision(
            False,
            Verdict.DENIED,
            message=f"kubectl-gitops: the audit log is unavailable ({e}); try again later",
            items=decision.items,
        )
    hook.emit(sealed)
    return decision


def finish(
    hook: Webhook, req: AdmissionRequest, decision: Decision, git: GitObject | None, started: float
) -> tuple[int, dict[str, Any]]:
    hook.metrics.decisions.labels(decision.verdict.value, git.mode if git else "").inc()
    hook.metrics.latency.observe(hook.clock.monotonic() - started)
    return 200, response(req["uid"], decision)


def answer(hook: Webhook, raw: bytes) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body for one POSTed AdmissionReview."""
    started = hook.clock.monotonic()
    req = read_review(raw)
    if isinstance(req, tuple):
        return req
    decision, git, key = judge_safely(hook, req)
    return conclude(hook, req, decision, git, key, started)


def conclude(
    hook: Webhook,
    req: AdmissionRequest,
    decision: Decision,
    git: GitObject | None,
    key: ObjectKey | None,
    started: float,
) -> tuple[int, dict[str, Any]]:
    """The last steps of every answer, in one place: the audit record when the decision needs one (this may wait
    for the API server; refused if the log cannot take it), then the metrics and the AdmissionReview."""
    if key is not None and must_record(req, decision):
        decision = record(hook, req, decision, git, key, received=started)
    return finish(hook, req, decision, git, started)


def _read_body(environ: dict[str, Any], limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit` (read no further than that)."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if length.isdigit():
        if int(length) > limit:
            return None
        return bytes(stream.read(int(length)))
    raw = bytes(stream.read(limit + 1))  # chunked: the server ends the stream
    return None if len(raw) > limit else raw


class ValidateFastPath:
    """WSGI middleware: answers POST /validate itself and hands every other request to the wrapped app."""

    def __init__(self, app: WSGIApp, hook: Webhook) -> None:
        self.app = app
        self.hook = hook

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            return self._send(
                start_response, 405, {"error": "method not allowed", "allowed": "POST"}, [("Allow", "POST")]
            )
        limit = self.hook.settings.max_request_bytes
        raw = _read_body(environ, limit)
        if raw is None:
            status, body = bad_request(f"the body is larger than {limit} bytes")
        else:
            status, body = answer(self.hook, raw)
        return self._send(start_response, status, body)

    @staticmethod
    def _send(
        start_response: StartResponse, status: int, body: dict[str, Any], extra: list[tuple[str, str]] | None = None
    ) -> list[bytes]:
        payload = json.dumps(body, separators=(",", ":")).encode()
        reason = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed"}[status]
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), *(extra or [])]
        start_response(f"{status} {reason}", headers)
        return [payload]
