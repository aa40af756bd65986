"""The webhook's Flask app factory: adapters passed in, configuration from defaults, environment and overrides."""

from __future__ import annotations

import datetime
import gc
import json
import logging
import random
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from flask import Flask

from engine.adapters.clock import SYSTEM
from engine.core.admission import Exemptions, Found
from engine.core.auditchain import RetentionPolicy
from engine.core.clock import Clock
from engine.core.normalize import SecretMasker
from engine.core.objects import Claim, ObjectKey

from . import config as settings
from .lookups import ApiLookups, ClusterLookups, NoLookups
from .metrics import Metrics

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
        config: Mapping[str, Any],
        source: DesiredSource,
        audit: AuditSink,
        lookups: ClusterLookups | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.audit = audit
        self.lookups: ClusterLookups = lookups or NoLookups()
        self.exemptions = Exemptions(
            users=settings.csv(config["EXEMPT_USERS"]),
            groups=settings.csv(config["EXEMPT_GROUPS"]),
            break_glass_group=config["BREAK_GLASS_GROUP"],
        )
        self.masker = SecretMasker(secrets.token_bytes(32))
        self.clock: Clock = clock or SYSTEM
        self.metrics = Metrics.create()
        self._stop = threading.Event()

    def emit(self, record: Mapping[str, Any]) -> None:
        """One JSON line per audit record on stdout, for log pipelines."""
        sys.stdout.write(json.dumps({"auditRecord": record}, sort_keys=True) + "\n")
        sys.stdout.flush()

    def refresh_loop(self) -> None:
        """Keeps Git's state fresh: at start, then every REFRESH_SECONDS (Applications polled more often); after each
        refresh, the webhook's registration covers every resource the state holds (webhook.registration)."""
        from .registration import RegistrationKeeper

        registration = RegistrationKeeper.of(self.source)
        last_full = 0.0
        last_loaded: dict[str, Any] = {}
        while not self._stop.is_set():
            try:
                due = time.monotonic() - last_full >= float(self.config["REFRESH_SECONDS"])
                if due:
                    self.source.refresh()
                    last_full = time.monotonic()
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
            self._stop.wait(float(self.config["POLL_SECONDS"]))

    def retention_loop(self, retire: Callable[[RetentionPolicy], int], policy: RetentionPolicy) -> None:
        """Retires audit records as the policy says, every RETENTION_SECONDS (with some jitter, so that replicas
        rarely run it at the same moment)."""
        while not self._stop.wait(float(self.config["RETENTION_SECONDS"]) * (0.75 + random.random() / 2)):
            try:
                retired = retire(policy)
                if retired:
                    log.info("audit retention retired %d records", retired)
            except Exception:  # the loop must survive a failed run; the next one tries again
                log.exception("audit retention failed")

    def stop(self) -> None:
        self._stop.set()


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    source: DesiredSource | None = None,
    kube: Any = None,
    audit: AuditSink | None = None,
    lookups: ClusterLookups | None = None,
) -> Flask:
    """The WSGI app. `source`, `audit` and `lookups` default to the real ones built on `kube` (an
    engine.adapters.kube.KubeClient); without a cluster, `lookups` grants nothing that needs the cluster's word."""
    conf = settings.load(config)
    if source is None or audit is None:
        if kube is None:
            raise ValueError("create_app needs `kube` (a cluster client) unless both `source` and `audit` are given")
        from engine.adapters.audit import AuditStore
        from engine.apps import list_applications
        from engine.gitstate import DesiredState

        def applications() -> list[Any]:
            return list_applications(kube, "")  # every namespace, one list call

        source = source or DesiredState(
            kube,
            applications,
            load_timeout=float(conf["LOAD_TIMEOUT_SECONDS"]),
            probe_namespace=str(conf["NAMESPACE"]),
        )
        if audit is None:
            from engine.adapters.audit import ClusterWitness, Witness, Witnesses
            from engine.adapters.auditwitness import GitWitness

            # The cluster-scoped mark always; a Git repository outside the cluster when configured.
            witnesses: list[Witness] = [ClusterWitness(kube, conf["NAMESPACE"])]
            if conf["WITNESS"]:
                witnesses.append(GitWitness(str(conf["WITNESS"])))
            audit = AuditStore(
                kube,
                conf["NAMESPACE"],
                answer_timeout=float(conf["ANSWER_TIMEOUT_SECONDS"]),
                witness=Witnesses(*witnesses),
            )
    app = Flask("gitops-webhook")
    app.config.update(conf)
    if lookups is None and kube is not None:
        lookups = ApiLookups(kube)
    hook = Webhook(conf, source, audit, lookups)
    app.extensions["gitops"] = hook

    from .admission import ValidateFastPath
    from .health import health

    app.register_blueprint(health)
    app.wsgi_app = ValidateFastPath(app.wsgi_app, hook)  # type: ignore[method-assign]
    if conf["BACKGROUND"]:
        threading.Thread(target=hook.refresh_loop, name="desired-state", daemon=True).start()
        policy = retention_policy(conf)
        retire = getattr(audit, "retire", None)
        if policy is not None and retire is not None:
            threading.Thread(
                target=hook.retention_loop, args=(retire, policy), name="audit-retention", daemon=True
            ).start()
    return app


def retention_policy(conf: Mapping[str, Any]) -> RetentionPolicy | None:
    """The audit log's retention from the settings; None when no bound is set."""
    days = float(conf["RETAIN_DAYS"])
    policy = RetentionPolicy(
        records=int(conf["RETAIN_RECORDS"]),
        max_age=datetime.timedelta(days=days) if days > 0 else None,
        max_bytes=int(conf["RETAIN_BYTES"]),
    )
    return policy if (policy.records or policy.max_age or policy.max_bytes) else None


def webhook_of(app: Flask) -> Webhook:
    hook: Webhook = app.extensions["gitops"]
    return hook
