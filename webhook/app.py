"""The webhook's Flask app factory: adapters passed in (or built on a cluster client), settings from defaults,
environment and overrides. It starts nothing: the process that serves calls Webhook.start."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from . import config
from .admission import ValidateFastPath
from .config import WebhookSettings
from .health import health
from .hook import AuditSink, DesiredSource, Webhook, webhook_of
from .lookups import ApiLookups, ClusterLookups
from .registration import RegistrationKeeper

__all__ = ["AuditSink", "DesiredSource", "Webhook", "create_app", "webhook_of"]


def create_app(
    settings: WebhookSettings | Mapping[str, Any] | None = None,
    *,
    source: DesiredSource | None = None,
    kube: Any = None,
    audit: AuditSink | None = None,
    lookups: ClusterLookups | None = None,
    registration: RegistrationKeeper | None = None,
) -> Flask:
    """The WSGI app. `source`, `audit`, `lookups` and `registration` default to the real ones built on `kube` (an
    engine.adapters.kube.KubeClient); without a cluster, `lookups` grants nothing that needs the cluster's word and
    no registration is kept. `settings`: WebhookSettings, or overrides of the defaults and the environment."""
    conf = settings if isinstance(settings, WebhookSettings) else config.load(settings)
    if source is None or audit is None:
        if kube is None:
            raise ValueError("create_app needs `kube` (a cluster client) unless both `source` and `audit` are given")
        from engine.adapters.audit import AuditStore, ClusterWitness, Witness, Witnesses
        from engine.adapters.auditwitness import GitWitness
        from engine.apps import list_applications
        from engine.gitstate import DesiredState

        def applications() -> list[Any]:
            return list_applications(kube, "")  # every namespace, one list call

        if source is None:
            state = DesiredState(
                kube, applications, load_timeout=conf.load_timeout_seconds, probe_namespace=conf.namespace
            )
            registration = registration or RegistrationKeeper(kube, state.managed_resources)
            source = state
        if audit is None:
            # The cluster-scoped mark always; a Git repository outside the cluster when configured.
            witnesses: list[Witness] = [ClusterWitness(kube, conf.namespace)]
            if conf.witness:
                witnesses.append(GitWitness(conf.witness))
            audit = AuditStore(
                kube, conf.namespace, answer_timeout=conf.answer_timeout_seconds, witness=Witnesses(*witnesses)
            )
    if lookups is None and kube is not None:
        lookups = ApiLookups(kube)
    app = Flask("gitops-webhook")
    hook = Webhook(conf, source, audit, lookups, registration=registration)
    app.extensions["gitops"] = hook
    app.register_blueprint(health)
    app.wsgi_app = ValidateFastPath(app.wsgi_app, hook)  # type: ignore[method-assign]
    return app
