"""POST /validate: one AdmissionReview in, one out (or HTTP 400 for a malformed one)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from werkzeug.wrappers import Response

from engine.admission import AdmissionRequest, Decision, GitObject, Verdict, decide, object_of
from engine.audit import build_record
from engine.errors import GitOpsError
from engine.objects import REVISION_ANNOTATION, TRACKING_LABEL, ObjectKey

from .app import Webhook, webhook_of
from .review import ReviewError, parse_review, response

log = logging.getLogger(__name__)
admission = Blueprint("admission", __name__)


def _bad_request(reason: str) -> tuple[Response, int]:
    return jsonify({"error": "bad AdmissionReview", "reason": reason}), 400


def target_of(hook: Webhook, req: AdmissionRequest) -> tuple[ObjectKey, str, str]:
    """The object the request is about (the parent, for a scale), the revision it names, and the Application its
    tracking label claims ("" when none)."""
    resource = req.get("resource") or {}
    group = str(resource.get("group", ""))
    namespace, name = str(req.get("namespace") or ""), str(req.get("name") or "")
    obj = object_of(req) or {}
    metadata = obj.get("metadata") or {}
    if req.get("subResource") == "scale":
        kind = hook.source.kind_of(group, str(resource.get("resource", "")))
    else:
        kind = str((req.get("kind") or {}).get("kind", ""))
        name = name or str(metadata.get("name") or "")
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    key = ObjectKey(group, kind, namespace, name)
    return key, str(annotations.get(REVISION_ANNOTATION, "")), str(labels.get(TRACKING_LABEL, ""))


def judge(hook: Webhook, req: AdmissionRequest) -> tuple[Decision, GitObject | None, ObjectKey]:
    key, revision, claimed = target_of(hook, req)
    if req.get("operation") == "DELETE":
        revision = ""  # a deletion is judged against Git as it is now, not as the object last saw it
    git = hook.source.lookup(key, revision, claimed) if key.kind else None
    claims = bool(claimed) and claimed in hook.source.app_names()
    decision = decide(req, git, exemptions=hook.exemptions, masker=hook.masker, tracked_elsewhere=claims)
    return decision, git, key


@admission.post("/validate")
def validate() -> Any:
    hook = webhook_of(current_app)
    started = time.perf_counter()
    if (request.content_length or 0) > int(hook.config["MAX_REQUEST_BYTES"]):
        return _bad_request(f"the body is larger than {hook.config['MAX_REQUEST_BYTES']} bytes")
    raw = request.get_data(cache=False)
    try:
        review = json.loads(raw)
    except (ValueError, RecursionError) as e:
        return _bad_request(f"the body is not valid JSON: {e}")
    try:
        req = parse_review(review)
    except ReviewError as e:
        return _bad_request(str(e))
    try:
        decision, git, key = judge(hook, req)
    except Exception:  # a bug must still get an answer: refuse (the API server would, on an error) and say why
        log.exception("judging request %s failed", req["uid"])
        failure = Decision(False, Verdict.DENIED, message="kubectl-gitops: internal error judging this request")
        return jsonify(response(req["uid"], failure))
    if decision.record and not req.get("dryRun", False):
        try:
            record = hook.audit.append(build_record(req, decision, git, key))
        except GitOpsError as e:
            # Every drift attempt is recorded before it is answered; without the log, refuse rather than lose it.
            log.error("audit log unavailable: %s", e)
            decision = Decision(
                False,
                Verdict.DENIED,
                message=f"kubectl-gitops: the audit log is unavailable ({e}); try again later",
                items=decision.items,
            )
        else:
            hook.emit(record)
    hook.metrics.decisions.labels(decision.verdict.value, git.mode if git else "").inc()
    hook.metrics.latency.observe(time.perf_counter() - started)
    return jsonify(response(req["uid"], decision))
