"""What every request handler of the webhook shares (kept on the Flask app, app.extensions["gitops"]): the settings,
Git's state, the audit log, what it asks the cluster, and the background loops that keep them current."""

from __future__ import annotations

import gc
import json
import logging
import random
import secrets
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from flask import Flask

from engine.adapters.clock import SYSTEM
from engine.core.admission import Exemptions, Found
from engine.core.auditchain import RetentionPolicy
from engine.core.clock import Clock
from engine.core.normalize import SecretMasker
from engine.core.objects import Claim, ObjectKey

from .config import WebhookSettings
from .lookups import ClusterLookups, NoLookups
from .metrics import Metrics
from .registration import RegistrationKeeper

log = logging.getLogger(__name__)


class DesiredSource(Protocol):
    """What the webhook needs of Git's state (engine.gitstate.DesiredState implements it)."""

    ready: bool

    def lookup(self, key: ObjectKey, revision: str = "", claims: tuple[Claim, ...] = ()) -> Found: ...
    def answers_at_once(self, key: ObjectKey, revision: str = "", claims: tuple[Claim, ...] = ()) -> bool: ...
    def all_loaded(self) -> bool: ...
    def kind_of(self, group: str, resource: str) -> str: ...
    def refresh(self, *, full: bool = True) -> None: ...
    def status(self) -> dict[str, Any]: ...
    def cache_age(self) -> float: ...


class AuditSink(Protocol):
    def append(self, body: Mapping[str, Any], received: float | None = None) -> dict[str, Any]: ...


class Webhook:
    """Everything a request handler needs, kept on the app (app.extensions["gitops"])."""

    def __init__(
        self,
        settings: WebhookSettings,
        source: DesiredSource,
        audit: AuditSink,
        lookups: ClusterLookups | None = None,
        clock: Clock | None = None,
        registration: RegistrationKeeper | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.audit = audit
        self.lookups: ClusterLookups = lookups or NoLookups()
        self.exemptions = Exemptions(
            users=settings.exempt_users,
            groups=settings.exempt_groups,
            break_glass_group=settings.break_glass_group,
        )
        self.masker = SecretMasker(secrets.token_bytes(32))
        self.clock: Clock = clock or SYSTEM
        self.metrics = Metrics.create()
        self.registration = registration or RegistrationKeeper(None, set)  # none to keep: the webhook's own is
        self._stop = threading.Event()

    def emit(self, record: Mapping[str, Any]) -> None:
        """One JSON line per audit record on stdout, for log pipelines."""
        sys.stdout.write(json.dumps({"auditRecord": record}, sort_keys=True) + "\n")
        sys.stdout.flush()

    def refresh_loop(self) -> None:
        """Keeps Git's state fresh: at start, then every REFRESH_SECONDS (Applications polled more often); after each
        refresh, the webhook's registration covers every resource the state holds (webhook.registration)."""
        registration = self.registration
        last_full = 0.0
        last_loaded: dict[str, Any] = {}
        while not self._stop.is_set():
            try:
                due = self.clock.monotonic() - last_full >= self.settings.refresh_seconds
                if due:
                    self.source.refresh()
                    last_full = self.clock.monotonic()
                else:
                    # Cheap: one list call; renders only new or changed Applications, and those not loaded yet
                    # (every RETRY_SECONDS), so that one broken source does not make every poll render them all.
                    self.source.refresh(full=False)
                status = self.source.status()
                loaded = {name: (a["revision"], a["objects"]) for name, a in status["applications"].items()}
                if loaded != last_loaded:
                    # Git's objects live as long as the webhook: out of the cyclic collector's sight they cost no
                    # full collections (measured: 50 to 100 ms pauses of every request with 2,000 objects).
                    gc.freeze()
                    last_loaded = loaded
                self.metrics.source_errors.set(sum(1 for a in status["applications"].values() if a["error"]))
                self.metrics.objects.set(sum(a["objects"] for a in status["applications"].values()))
                registration.ensure()
            except Exception:  # the loop must survive anything a refresh throws; the error is logged
                log.exception("refreshing the desired state failed")
            self._stop.wait(self.settings.poll_seconds)

    def retention_loop(self, retire: Callable[[RetentionPolicy], int], policy: RetentionPolicy) -> None:
        """Retires audit records as the policy says, every RETENTION_SECONDS (with some jitter, so that replicas
        rarely run it at the same moment)."""
        while not self._stop.wait(self.settings.retention_seconds * (0.75 + random.random() / 2)):
            try:
                retired = retire(policy)
                if retired:
                    log.info("audit retention retired %d records", retired)
            except Exception:  # the loop must survive a failed run; the next one tries again
                log.exception("audit retention failed")

    def start(self) -> None:
        """Starts the background loops: Git's state kept fresh (and the registration current), and the audit log's
        retention when the settings bound it. The process serving requests calls it (gitops-webhook, in each
        worker); tests drive the refresh themselves."""
        threading.Thread(target=self.refresh_loop, name="desired-state", daemon=True).start()
        policy = self.settings.retention
        retire = getattr(self.audit, "retire", None)
        if policy is not None and retire is not None:
            threading.Thread(
                target=self.retention_loop, args=(retire, policy), name="audit-retention", daemon=True
            ).start()

    def stop(self) -> None:
        self._stop.set()


def webhook_of(app: Flask) -> Webhook:
    hook: Webhook = app.extensions["gitops"]
    return hook
