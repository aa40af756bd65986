"""Prometheus metrics of one webhook app (a registry of its own, so that tests and apps never share counters)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry
    decisions: Counter
    latency: Histogram
    cache_age: Gauge
    objects: Gauge
    source_errors: Gauge

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            decisions=Counter(
                "gitops_webhook_decisions",
                "Admission decisions by verdict and drift mode",
                ["verdict", "mode"],
                registry=registry,
            ),
            latency=Histogram(
                "gitops_webhook_decision_seconds",
                "Time to answer /validate (including the audit write)",
                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                registry=registry,
            ),
            cache_age=Gauge("gitops_webhook_desired_state_age_seconds", "Age of the desired state", registry=registry),
            objects=Gauge("gitops_webhook_desired_objects", "Objects Git declares, loaded", registry=registry),
            source_errors=Gauge(
                "gitops_webhook_source_errors",
                "Applications whose Git source failed at the last refresh",
                registry=registry,
            ),
        )
