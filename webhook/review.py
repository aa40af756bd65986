"""AdmissionReview in and out: validation of what the API server sent, and the response it expects. Pure."""

from __future__ import annotations

from typing import Any, cast

from engine.core.admission import AdmissionRequest, Decision

API_VERSION = "admission.k8s.io/v1"
MAX_DEPTH = 100  # Kubernetes objects nest a few dozen levels at most; deeper is an attack on the stack
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


class ReviewError(ValueError):
    """The body is not an AdmissionReview this webhook can answer: HTTP 400 with this reason."""


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise ReviewError(reason)


def _depth_within(value: Any, limit: int) -> bool:
    """Whether `value` (as json.loads makes it) nests at most `limit` levels. Level by level, without recursion (the
    check itself must not recurse) and in comprehensions: it reads every container of every request."""
    level = [value] if type(value) in _CONTAINERS else []
    for _ in range(limit):
        if not level:
            return True
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) in _CONTAINERS
        ]
    return not level


_CONTAINERS = (dict, list)


def parse_review(review: Any) -> AdmissionRequest:
    """The request of an admission.k8s.io/v1 AdmissionReview, after checking every field the decision reads."""
    _require(isinstance(review, dict), "the body must be a JSON object (an AdmissionReview)")
    _require(review.get("apiVersion") == API_VERSION, f"apiVersion must be {API_VERSION}")
    _require(review.get("kind") == "AdmissionReview", "kind must be AdmissionReview")
    request = review.get("request")
    _require(isinstance(request, dict), "request is missing or not an object")
    _require(isinstance(request.get("uid"), str) and bool(request["uid"]), "request.uid must be a non-empty string")
    _require(request.get("operation") in OPERATIONS, f"request.operation must be one of {', '.join(OPERATIONS)}")
    for field in ("kind", "resource", "userInfo"):
        _require(isinstance(request.get(field), dict), f"request.{field} must be an object")
    for field in ("name", "namespace", "subResource"):
        _require(isinstance(request.get(field, ""), str), f"request.{field} must be a string")
    for field in ("group", "version", "kind"):
        _require(isinstance(request["kind"].get(field, ""), str), f"request.kind.{field} must be a string")
    for field in ("group", "version", "resource"):
        _require(isinstance(request["resource"].get(field, ""), str), f"request.resource.{field} must be a string")
    user = request["userInfo"]
    _require(isinstance(user.get("username", ""), str), "request.userInfo.username must be a string")
    groups = user.get("groups", [])
    _require(
        isinstance(groups, list) and all(isinstance(g, str) for g in groups),
        "request.userInfo.groups must be a list of strings",
    )
    for field in ("object", "oldObject"):
        value = request.get(field)
        _require(value is None or isinstance(value, dict), f"request.{field} must be an object or null")
        if isinstance(value, dict):
            metadata = value.get("metadata", {})
            _require(isinstance(metadata, dict), f"request.{field}.metadata must be an object")
            for sub in ("labels", "annotations"):
                _require(isinstance(metadata.get(sub) or {}, dict), f"request.{field}.metadata.{sub} must be an object")
    _require(isinstance(request.get("dryRun", False), bool), "request.dryRun must be a boolean")
    _require(_depth_within(request, MAX_DEPTH), f"the request nests deeper than {MAX_DEPTH} levels")
    return cast(AdmissionRequest, request)


def response(uid: str, decision: Decision) -> dict[str, Any]:
    """The AdmissionReview answer: same apiVersion, same uid."""
    body: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if not decision.allowed:
        body["status"] = {"code": 403, "reason": "Forbidden", "message": decision.message}
    if decision.warnings:
        body["warnings"] = list(decision.warnings)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": body}
