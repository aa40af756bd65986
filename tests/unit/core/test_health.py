"""Health of live objects, kstatus-style: rolled out, complete, bound, addressed, Ready; unknown is not healthy."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.health import Health, application_health, assess, overall
from engine.core.objects import ObjectKey


def deployment(replicas: int = 2, generation: int = 3, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": replicas},
        "status": status,
    }


ROLLED_OUT: dict[str, Any] = {
    "observedGeneration": 3,
    "replicas": 2,
    "updatedReplicas": 2,
    "availableReplicas": 2,
    "readyReplicas": 2,
}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (None, Health.MISSING),
        (deployment(**ROLLED_OUT), Health.HEALTHY),
        (deployment(), Health.PROGRESSING),  # no status yet: not known to be healthy
        (deployment(**{**ROLLED_OUT, "observedGeneration": 2}), Health.PROGRESSING),
        (deployment(**{**ROLLED_OUT, "updatedReplicas": 1}), Health.PROGRESSING),
        (deployment(**{**ROLLED_OUT, "availableReplicas": 1}), Health.PROGRESSING),
        (deployment(**{**ROLLED_OUT, "replicas": 3}), Health.PROGRESSING),  # an old pod still terminating
        (
            deployment(
                **{
                    **ROLLED_OUT,
                    "updatedReplicas": 1,
                    "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
                }
            ),
            Health.DEGRADED,
        ),
        (deployment(replicas=0, observedGeneration=3), Health.HEALTHY),
        (
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "db", "generation": 1},
                "spec": {"replicas": 1},
                "status": {
                    "observedGeneration": 1,
                    "replicas": 1,
                    "updatedReplicas": 1,
                    "readyReplicas": 1,
                    "currentRevision": "a",
                    "updateRevision": "b",
                },
            },
            Health.PROGRESSING,
        ),
        (
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "agent", "generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "desiredNumberScheduled": 2,
                    "updatedNumberScheduled": 2,
                    "numberAvailable": 2,
                },
            },
            Health.HEALTHY,
        ),
        (
            {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "status": {"active": 1}},
            Health.PROGRESSING,
        ),
        (
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "j"},
                "status": {"conditions": [{"type": "Complete", "status": "True"}]},
            },
            Health.HEALTHY,
        ),
        (
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "j"},
                "status": {"conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]},
            },
            Health.DEGRADED,
        ),
        ({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {"phase": "Pending"}}, Health.PROGRESSING),
        ({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {"phase": "Bound"}}, Health.HEALTHY),
        ({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {"phase": "Lost"}}, Health.DEGRADED),
        ({"apiVersion": "v1", "kind": "Service", "spec": {"type": "LoadBalancer"}, "status": {}}, Health.PROGRESSING),
        (
            {
                "apiVersion": "v1",
                "kind": "Service",
                "spec": {"type": "LoadBalancer"},
                "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}},
            },
            Health.HEALTHY,
        ),
        ({"apiVersion": "v1", "kind": "Service", "spec": {"type": "ClusterIP"}}, Health.HEALTHY),
        ({"apiVersion": "v1", "kind": "ConfigMap", "data": {}}, Health.HEALTHY),
        (
            {"apiVersion": "x.io/v1", "kind": "Db", "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
            Health.PROGRESSING,
        ),
        (
            {"apiVersion": "x.io/v1", "kind": "Db", "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            Health.HEALTHY,
        ),
        (
            {"apiVersion": "x.io/v1", "kind": "Db", "status": {"conditions": [{"type": "Stalled", "status": "True"}]}},
            Health.DEGRADED,
        ),
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}},
            Health.PROGRESSING,
        ),
        (
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "status": {
                    "phase": "Running",
                    "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
                },
            },
            Health.DEGRADED,
        ),
    ],
)
def test_assess(obj: dict[str, Any] | None, expected: Health) -> None:
    assert assess(obj).status is expected


def test_garbage_status_is_not_healthy_for_workloads() -> None:
    weird = deployment()
    weird["status"] = "not a mapping"
    assert assess(weird).status is Health.PROGRESSING


def test_an_application_is_as_healthy_as_its_worst_object() -> None:
    assert overall([Health.HEALTHY, Health.PROGRESSING, Health.DEGRADED]) is Health.DEGRADED
    assert overall([]) is Health.HEALTHY
    key = ObjectKey("apps", "Deployment", "ns", "web")
    cm = ObjectKey("", "ConfigMap", "ns", "settings")
    health = application_health({key: deployment(), cm: {"apiVersion": "v1", "kind": "ConfigMap"}})
    assert health.status is Health.PROGRESSING
    assert "1 of 2 objects are not healthy" in health.message
    assert [k for k, _ in health.unhealthy] == [key]
