"""/healthz, /readyz (ready once every Application's desired state is loaded) and /metrics."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .app import webhook_of

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@health.get("/readyz")
def readyz() -> Any:
    hook = webhook_of(current_app)
    status = hook.source.status()
    return jsonify(status), 200 if status["ready"] else 503


@health.get("/metrics")
def metrics() -> Any:
    hook = webhook_of(current_app)
    age = hook.source.cache_age()
    hook.metrics.cache_age.set(age if age != float("inf") else -1)
    return generate_latest(hook.metrics.registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}
