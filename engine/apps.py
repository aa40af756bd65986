"""Reading and writing Application resources through the cluster adapter."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import yaml

from .adapters.clock import SYSTEM
from .adapters.kube import KubeClient
from .compare import Comparison
from .core.application import API_VERSION, KIND, ApplicationSpec, application_manifest, parse_application
from .core.clock import rfc3339
from .core.drift import ObjectState
from .core.errors import ApplicationNotFound, GitOpsError
from .core.history import SyncRecord
from .core.objects import API_GROUP, AppRef, KubeObject, ObjectKey
from .core.resources import ResourceInfo
from .sync import Action, SyncResult


def install_manifests() -> list[KubeObject]:
    """The objects `kubectl gitops install` applies: the gitops-system namespace and the Application CRD."""
    folder = resources.files("kubectl_gitops_manifests")
    out: list[KubeObject] = []
    for name in (
        "namespace.yaml",
        "crd-application.yaml",
        "crd-auditrecord.yaml",
        "crd-auditcheckpoint.yaml",
        "crd-syncrecord.yaml",
    ):
        out.extend(doc for doc in yaml.safe_load_all(folder.joinpath(name).read_text()) if doc)
    return out


def controller_manifests(image: str = "") -> list[KubeObject]:
    """The objects of manifests/controller/ (what `kubectl apply -k manifests/controller/` applies), in
    gitops-system; `image` replaces the Deployment's image when given."""
    folder = resources.files("kubectl_gitops_manifests").joinpath("controller")
    out: list[KubeObject] = []
    for name in ("rbac.yaml", "deployment.yaml", "pdb.yaml"):
        for doc in yaml.safe_load_all(folder.joinpath(name).read_text()):
            if not doc:
                continue
            if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
                doc["metadata"]["namespace"] = "gitops-system"
            if image and doc["kind"] == "Deployment":
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    container["image"] = image
            out.append(doc)
    return out


def application_resource(cluster: KubeClient) -> ResourceInfo:
    info = cluster.resource_for(API_VERSION, KIND)
    if info is None:
        raise GitOpsError(f"the cluster does not serve {KIND}s ({API_GROUP}); run `kubectl gitops install` first")
    return info


def get_application(cluster: KubeClient, ref: AppRef) -> tuple[KubeObject, ApplicationSpec]:
    obj = cluster.get(application_resource(cluster), ref.namespace, ref.name)
    if obj is None:
        raise ApplicationNotFound(
            f"Application {ref.name!r} not found in namespace {ref.namespace!r}; "
            "`kubectl gitops list` shows the Applications there"
        )
    return obj, parse_application(obj)


def list_applications(cluster: KubeClient, namespace: str) -> list[KubeObject]:
    return list(cluster.list_objects(application_resource(cluster), namespace=namespace))


def now() -> str:
    return rfc3339(SYSTEM.wall())


def sync_status(app_obj: KubeObject, record: SyncRecord, results: Sequence[SyncResult]) -> dict[str, Any]:
    """The status a sync leaves behind: its summary (the whole record is the SyncRecord `record.name`), the
    inventory, and no more the bounded list of syncs earlier versions kept in the status."""
    status = dict(app_obj.get("status") or {})
    failed = [r for r in results if r.action is Action.FAILED]
    entry: dict[str, Any] = {
        "id": record.id,
        "record": record.name,
        **record.commit_dict(),
        "time": rfc3339(record.finished),
        "trigger": record.trigger.value,
        "user": record.user,
        "result": record.result.value,
        "counts": dict(record.counts),
    }
    if record.errors:
        entry["message"] = "; ".join(record.errors[:5])
    inventory = {r.key for r in results if r.action not in (Action.PRUNED, Action.FAILED)}
    if failed:
        # Keep what the last good sync managed, so that a later prune still finds it.
        inventory |= {ObjectKey(**r) for r in status.get("resources") or []}
    return {
        "sync": {"status": "Synced" if not failed else "OutOfSync", "revision": record.commit.sha},
        "lastSync": entry,
        "history": None,  # a merge patch's null: the list of syncs earlier versions kept here goes
        "resources": [key.as_dict() for key in sorted(inventory)],
    }


def comparison_status(comparison: Comparison) -> dict[str, Any]:
    drifted = [d for d in comparison.diffs if d.drifted]
    return {
        "sync": {
            "status": "OutOfSync" if drifted else "Synced",
            "revision": comparison.desired.commit.sha,
        },
        "drift": {
            "checkedAt": now(),
            "objects": len(drifted),
            "missing": sum(1 for d in drifted if d.state is ObjectState.MISSING),
            "extra": sum(1 for d in drifted if d.state is ObjectState.EXTRA),
            "fields": sum(len(d.items) for d in drifted),
        },
    }


def patch_status(cluster: KubeClient, ref: AppRef, status: dict[str, Any]) -> None:
    info = application_resource(cluster)
    cluster.merge_patch(
        info, ObjectKey(API_GROUP, KIND, ref.namespace, ref.name), {"status": status}, subresource="status"
    )


def create_application(cluster: KubeClient, spec: ApplicationSpec) -> KubeObject:
    return cluster.create(application_resource(cluster), application_manifest(spec))
