"""The webhook's settings: defaults, then GITOPS_WEBHOOK_* environment variables, then explicit overrides."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

PREFIX = "GITOPS_WEBHOOK_"

DEFAULTS: Mapping[str, Any] = {
    "NAMESPACE": "gitops-system",  # its own namespace: audit records, signing key; never intercepted
    "EXEMPT_USERS": "",  # comma-separated user names always allowed
    "EXEMPT_GROUPS": "",  # comma-separated groups always allowed
    "BREAK_GLASS_GROUP": "gitops:break-glass",
    "REFRESH_SECONDS": 60.0,  # re-render every Application at least this often
    "POLL_SECONDS": 3.0,  # how often to look for changed Applications
    "LOAD_TIMEOUT_SECONDS": 6.0,  # bound on loading a revision a request names (the API server waits 10 s)
    "MAX_REQUEST_BYTES": 8 * 1024 * 1024,
    "ANSWER_TIMEOUT_SECONDS": 10.0,  # the registration's timeoutSeconds: a record written later says it was late
    "WITNESS": "",  # a Git repository (URL or path) the audit log's signed checkpoints are committed to
    "RETAIN_RECORDS": 0,  # audit retention: keep at most this many records (0: no bound)
    "RETAIN_DAYS": 0.0,  # ... none older than this (0: no bound)
    "RETAIN_BYTES": 0,  # ... at most this many bytes of them (0: no bound)
    "RETENTION_SECONDS": 3600.0,  # how often retention runs (when any bound is set)
    "BACKGROUND": True,  # run the refresh loop (tests turn it off and refresh by hand)
}


def _coerce(default: Any, raw: str) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def load(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    config = dict(DEFAULTS)
    for key, default in DEFAULTS.items():
        if PREFIX + key in env:
            config[key] = _coerce(default, env[PREFIX + key])
    config.update(overrides or {})
    return config


def csv(value: str) -> frozenset[str]:
    return frozenset(v.strip() for v in value.split(",") if v.strip())
