"""The webhook's settings: defaults, then GITOPS_WEBHOOK_* environment variables, then explicit overrides, read once
into a frozen WebhookSettings (an unknown override or a value that does not parse is an error, never ignored)."""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.core.auditchain import RetentionPolicy
from engine.core.errors import GitOpsError

PREFIX = "GITOPS_WEBHOOK_"


class SettingsError(GitOpsError):
    """A setting that cannot be used; the message names its environment variable."""


def csv(value: str) -> frozenset[str]:
    return frozenset(v.strip() for v in value.split(",") if v.strip())


@dataclass(frozen=True)
class WebhookSettings:
    namespace: str = "gitops-system"  # its own namespace: audit records, signing key; never intercepted
    exempt_users: frozenset[str] = frozenset()  # user names always allowed (GITOPS_WEBHOOK_EXEMPT_USERS, a,b)
    exempt_groups: frozenset[str] = frozenset()  # groups always allowed
    break_glass_group: str = "gitops:break-glass"
    refresh_seconds: float = 60.0  # re-render every Application at least this often
    poll_seconds: float = 3.0  # how often to look for changed Applications
    load_timeout_seconds: float = 6.0  # bound on loading a revision a request names (the API server waits 10 s)
    max_request_bytes: int = 8 * 1024 * 1024
    answer_timeout_seconds: float = 10.0  # the registration's timeoutSeconds: a record written later says it was late
    witness: str = ""  # a Git repository (URL or path) the audit log's signed checkpoints are committed to
    retain_records: int = 0  # audit retention: keep at most this many records (0: no bound)
    retain_days: float = 0.0  # ... none older than this (0: no bound)
    retain_bytes: int = 0  # ... at most this many bytes of them (0: no bound)
    retention_seconds: float = 3600.0  # how often retention runs (when any bound is set)

    @property
    def retention(self) -> RetentionPolicy | None:
        """The audit log's retention; None when no bound is set."""
        policy = RetentionPolicy(
            records=self.retain_records,
            max_age=datetime.timedelta(days=self.retain_days) if self.retain_days > 0 else None,
            max_bytes=self.retain_bytes,
        )
        return policy if (policy.records or policy.max_age or policy.max_bytes) else None


FIELDS = {f.name.upper(): f for f in dataclasses.fields(WebhookSettings)}


def _parse(name: str, kind: Any, raw: Any) -> Any:
    if not isinstance(raw, str):
        return frozenset(raw) if kind == "frozenset[str]" else raw
    try:
        if kind == "frozenset[str]":
            return csv(raw)
        if kind == "int":
            value: Any = int(raw)
        elif kind == "float":
            value = float(raw)
        else:
            return raw
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={raw!r} is not a number") from None
    if value < 0:
        raise SettingsError(f"{PREFIX}{name}={raw!r} must not be negative")
    return value


def load(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> WebhookSettings:
    """The settings: defaults, then the environment (GITOPS_WEBHOOK_NAMESPACE, ...), then `overrides` (keys as the
    variables name them without the prefix: {"NAMESPACE": ...})."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, f in FIELDS.items():
        if PREFIX + name in env:
            values[f.name] = _parse(name, f.type, env[PREFIX + name])
    for name, value in (overrides or {}).items():
        if name not in FIELDS:
            raise SettingsError(f"no webhook setting {name!r}; the settings are {', '.join(sorted(FIELDS))}")
        values[FIELDS[name].name] = _parse(name, FIELDS[name].type, value)
    return WebhookSettings(**values)
