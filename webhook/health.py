"""/healthz, /readyz (ready once every Application's desired state is loaded), /servingz (a first load has been tried:
what a Service should route by) and /metrics."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .hook import webhook_of

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@health.get("/readyz")
def readyz() -> Any:
    hook = webhook_of(current_app)
    status = hook.source.status()
    return jsonify(status), 200 if status["ready"] else 503


@health.get("/servingz")
def servingz() -> Any:
    """Whether this replica should take requests: once it has tried to load Git's state. Not /readyz: a replica
    that cannot judge an Application still answers for it (failing closed, break-glass honoured), which is better
    than no replica to answer at all (the API server then refuses every write to a managed object, break-glass
    included)."""
    hook = webhook_of(current_app)
    status = hook.source.status()
    serving = bool(status.get("serving", status["ready"]))
    return jsonify({"serving": serving, "ready": status["ready"]}), 200 if serving else 503


@health.get("/metrics")
def metrics() -> Any:
    hook = webhook_of(current_app)
    age = hook.source.cache_age()
    hook.metrics.cache_age.set(age if age != float("inf") else -1)
    return generate_latest(hook.metrics.registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}
