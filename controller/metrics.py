"""The reconciler's Prometheus metrics: per-Application sync state, drift and health, and how long reconciles and
syncs take. One registry per controller (tests run several in one process)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine.compare import Comparison
from engine.core.automation import Facts
from engine.core.objects import AppRef


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["namespace", "application"]
        self.synced_state = Gauge(
            "gitops_application_synced", "1 when the cluster is at Git's target commit", labels, registry=self.registry
        )
        self.drifted = Gauge(
            "gitops_application_drifted_objects", "Objects that differ from Git", labels, registry=self.registry
        )
        self.healthy = Gauge(
            "gitops_application_healthy",
            "1 when every object of the Application is healthy",
            labels,
            registry=self.registry,
        )
        self.suspended = Gauge(
            "gitops_application_suspended", "1 while automation is suspended", labels, registry=self.registry
        )
        self.reconciles = Histogram(
            "gitops_reconcile_duration_seconds",
            "Time of one reconcile of one Application",
            ["result"],
            registry=self.registry,
        )
        self.syncs = Counter(
            "gitops_syncs", "Syncs the reconciler ran", [*labels, "trigger", "result"], registry=self.registry
        )
        self.sync_seconds = Histogram(
            "gitops_sync_duration_seconds", "Time of one sync", ["trigger"], registry=self.registry
        )
        self.leader = Gauge("gitops_controller_leader", "1 while this process holds the lease", registry=self.registry)
        self.api_requests = Gauge(
            "gitops_api_requests_total", "Requests sent to the API server since the start", registry=self.registry
        )
        self.git_fetches = Gauge("gitops_git_fetches_total", "Git fetches since the start", registry=self.registry)

    def observed(self, ref: AppRef, facts: Facts, comparison: Comparison, health: str, suspended: bool) -> None:
        labels = (ref.namespace, ref.name)
        self.synced_state.labels(*labels).set(1 if facts.synced == facts.target else 0)
        self.drifted.labels(*labels).set(sum(1 for d in comparison.diffs if d.drifted))
        self.healthy.labels(*labels).set(1 if health == "Healthy" else 0)
        self.suspended.labels(*labels).set(1 if suspended else 0)

    def reconciled(self, ref: AppRef, result: str, seconds: float) -> None:
        self.reconciles.labels(result).observe(seconds)

    def synced(self, ref: AppRef, trigger: str, result: str, seconds: float) -> None:
        self.syncs.labels(ref.namespace, ref.name, trigger, result).inc()
        self.sync_seconds.labels(trigger).observe(seconds)

    def forget(self, ref: AppRef) -> None:
        for gauge in (self.synced_state, self.drifted, self.healthy, self.suspended):
            with contextlib.suppress(KeyError):
                gauge.remove(ref.namespace, ref.name)
