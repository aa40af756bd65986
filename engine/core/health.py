"""Whether what was synced is working, in the spirit of kstatus: rolled out, complete, bound, addressed or Ready.

A live object is judged from its own status only, the way `kubectl rollout status` and kstatus judge it: no event,
no log, no guess. A status that a controller has not yet written for the object's current generation is
"Progressing", never "Healthy": health that cannot be told is not good health.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .objects import KubeObject, ObjectKey


class Health(StrEnum):
    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"  # not there yet: a rollout, a pending claim, an address not given yet
    DEGRADED = "Degraded"  # failed: a Job that failed, a rollout past its deadline, a claim lost, Stalled
    MISSING = "Missing"  # Git declares it and the cluster does not have it


# Worst first: an Application is as healthy as its least healthy object.
_ORDER = (Health.DEGRADED, Health.MISSING, Health.PROGRESSING, Health.HEALTHY)


@dataclass(frozen=True)
class ObjectHealth:
    status: Health
    message: str = ""


@dataclass(frozen=True)
class ApplicationHealth:
    status: Health
    objects: tuple[tuple[ObjectKey, ObjectHealth], ...]

    @property
    def unhealthy(self) -> list[tuple[ObjectKey, ObjectHealth]]:
        return [(k, h) for k, h in self.objects if h.status is not Health.HEALTHY]

    @property
    def message(self) -> str:
        bad = self.unhealthy
        if not bad:
            return f"all {len(self.objects)} objects are healthy"
        shown = "; ".join(f"{k}: {h.status.value}{f' ({h.message})' if h.message else ''}" for k, h in bad[:3])
        more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
        return f"{len(bad)} of {len(self.objects)} objects are not healthy: {shown}{more}"


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and isinstance(c.get("type"), str):
            out[c["type"]] = c
    return out


def _is(conditions: Mapping[str, Mapping[str, Any]], kind: str, value: str = "True") -> bool:
    return str((conditions.get(kind) or {}).get("status", "")) == value


def _why(condition: Mapping[str, Any] | None) -> str:
    if not condition:
        return ""
    return str(condition.get("message") or condition.get("reason") or "")


def _replicas(obj: KubeObject, status: Mapping[str, Any], kind: str) -> ObjectHealth:
    spec = obj.get("spec") or {}
    want = _int(spec.get("replicas"), 1)
    conditions = _conditions(status)
    if kind == "Deployment":
        progressing = conditions.get("Progressing")
        if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
            return ObjectHealth(Health.DEGRADED, _why(progressing) or "the rollout is past its progress deadline")
        if spec.get("paused"):
            return ObjectHealth(Health.PROGRESSING, "the rollout is paused")
    updated = _int(status.get("updatedReplicas"))
    total = _int(status.get("replicas"))
    ready_field = "availableReplicas" if kind in ("Deployment", "ReplicaSet") else "readyReplicas"
    ready = _int(status.get(ready_field))
    if kind == "StatefulSet":
        strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
        partition = _int(((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition"))
        if strategy == "RollingUpdate" and updated < want - partition:
            return ObjectHealth(Health.PROGRESSING, f"{updated} of {want} replicas updated")
        if (
            strategy == "RollingUpdate"
            and not partition
            and status.get("updateRevision") != status.get("currentRevision")
        ):
            return ObjectHealth(Health.PROGRESSING, "the rollout to the new revision is not finished")
    elif kind != "ReplicaSet" and updated < want:
        return ObjectHealth(Health.PROGRESSING, f"{updated} of {want} replicas updated")
    if total > want:
        return ObjectHealth(Health.PROGRESSING, f"{total - want} old replicas are pending termination")
    if ready < want:
        return ObjectHealth(Health.PROGRESSING, f"{ready} of {want} replicas {ready_field.removesuffix('Replicas')}")
    return ObjectHealth(Health.HEALTHY)


def _daemonset(status: Mapping[str, Any]) -> ObjectHealth:
    want = _int(status.get("desiredNumberScheduled"))
    updated = _int(status.get("updatedNumberScheduled"))
    available = _int(status.get("numberAvailable"))
    if updated < want:
        return ObjectHealth(Health.PROGRESSING, f"{updated} of {want} pods updated")
    if available < want:
        return ObjectHealth(Health.PROGRESSING, f"{available} of {want} pods available")
    return ObjectHealth(Health.HEALTHY)


def _job(obj: KubeObject, status: Mapping[str, Any]) -> ObjectHealth:
    conditions = _conditions(status)
    if _is(conditions, "Failed"):
        return ObjectHealth(Health.DEGRADED, _why(conditions.get("Failed")) or "the Job failed")
    if _is(conditions, "Complete"):
        return ObjectHealth(Health.HEALTHY)
    if (obj.get("spec") or {}).get("suspend"):
        return ObjectHealth(Health.PROGRESSING, "the Job is suspended")
    return ObjectHealth(Health.PROGRESSING, f"{_int(status.get('succeeded'))} completions so far")


def _pod(status: Mapping[str, Any]) -> ObjectHealth:
    phase = status.get("phase")
    if phase == "Succeeded":
        return ObjectHealth(Health.HEALTHY)
    if phase == "Failed":
        return ObjectHealth(Health.DEGRADED, str(status.get("message") or status.get("reason") or "the pod failed"))
    for c in status.get("containerStatuses") or []:
        waiting = ((c or {}).get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerError"):
            return ObjectHealth(Health.DEGRADED, f"container {c.get('name')}: {waiting['reason']}")
    if phase == "Running" and _is(_conditions(status), "Ready"):
        return ObjectHealth(Health.HEALTHY)
    return ObjectHealth(Health.PROGRESSING, f"the pod is {phase or 'Pending'}")


def assess(obj: KubeObject | None) -> ObjectHealth:
    """The health of one live object (None: missing)."""
    if obj is None:
        return ObjectHealth(Health.MISSING, "not in the cluster")
    metadata = obj.get("metadata") or {}
    status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    assert isinstance(status, Mapping)
    if metadata.get("deletionTimestamp"):
        return ObjectHealth(Health.PROGRESSING, "being deleted")
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    kind = str(obj.get("kind", ""))
    generation = _int(metadata.get("generation"))
    observed = status.get("observedGeneration")
    workload = (group, kind) in (("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "DaemonSet"))
    workload = workload or (group, kind) == ("apps", "ReplicaSet")
    if isinstance(observed, int) and generation and observed < generation:
        return ObjectHealth(Health.PROGRESSING, f"generation {generation} is not observed yet (at {observed})")
    if workload and not isinstance(observed, int):
        return ObjectHealth(Health.PROGRESSING, "its controller has not reported a status yet")
    if group == "apps" and kind in ("Deployment", "StatefulSet", "ReplicaSet"):
        return _replicas(obj, status, kind)
    if (group, kind) == ("apps", "DaemonSet"):
        return _daemonset(status)
    if (group, kind) == ("batch", "Job"):
        return _job(obj, status)
    if (group, kind) == ("", "PersistentVolumeClaim"):
        phase = status.get("phase")
        if phase == "Bound":
            return ObjectHealth(Health.HEALTHY)
        if phase == "Lost":
            return ObjectHealth(Health.DEGRADED, "the claim lost its volume")
        return ObjectHealth(Health.PROGRESSING, f"the claim is {phase or 'Pending'}")
    if (group, kind) == ("", "Pod"):
        return _pod(status)
    if (group, kind) == ("", "Service") and (obj.get("spec") or {}).get("type") == "LoadBalancer":
        if (status.get("loadBalancer") or {}).get("ingress"):
            return ObjectHealth(Health.HEALTHY)
        return ObjectHealth(Health.PROGRESSING, "waiting for the load balancer's address")
    conditions = _conditions(status)
    if _is(conditions, "Stalled"):
        return ObjectHealth(Health.DEGRADED, _why(conditions.get("Stalled")) or "Stalled")
    if _is(conditions, "Reconciling"):
        return ObjectHealth(Health.PROGRESSING, _why(conditions.get("Reconciling")) or "Reconciling")
    if "Ready" in conditions and not _is(conditions, "Ready"):
        return ObjectHealth(Health.PROGRESSING, _why(conditions.get("Ready")) or "not Ready")
    return ObjectHealth(Health.HEALTHY)


def overall(healths: Iterable[Health]) -> Health:
    seen = set(healths)
    return next((h for h in _ORDER if h in seen), Health.HEALTHY)


def application_health(objects: Mapping[ObjectKey, KubeObject | None]) -> ApplicationHealth:
    """Each of Git's objects judged as it is live (None: missing), and the Application as its worst."""
    judged = tuple((key, assess(obj)) for key, obj in sorted(objects.items()))
    return ApplicationHealth(overall(h.status for _, h in judged), judged)
