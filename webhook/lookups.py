"""What the webhook asks the cluster itself, beyond Git's state: facts that decide whether a controller's request
is the cluster working, and the parent of a scale or an eviction when the index cannot vouch for it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from engine.core.admission import CONTROLLER_PREFIX, AdmissionRequest, ClusterFacts
from engine.core.errors import GitOpsError
from engine.core.objects import KubeObject
from engine.core.resources import ResourceInfo

log = logging.getLogger(__name__)

# The controllers whose deletions are the cluster working only when the cluster says so.
GARBAGE_COLLECTOR = f"{CONTROLLER_PREFIX}generic-garbage-collector"
NAMESPACE_CONTROLLER = f"{CONTROLLER_PREFIX}namespace-controller"


class Reader(Protocol):
    """What the lookups need of the API server (engine.adapters.kube.KubeClient has it)."""

    def resource_for(self, api_version: str, kind: str) -> ResourceInfo | None: ...
    def get(self, info: ResourceInfo, namespace: str, name: str) -> KubeObject | None: ...


class ClusterLookups(Protocol):
    def needed(self, request: AdmissionRequest) -> bool: ...
    def facts(self, request: AdmissionRequest) -> ClusterFacts: ...
    def parent(self, request: AdmissionRequest) -> KubeObject | None: ...


def _deletes(request: Mapping[str, Any]) -> bool:
    return request.get("operation") == "DELETE" and not request.get("subResource")


class NoLookups:
    """Without a cluster (tests of other parts): nothing is known, so nothing is granted."""

    def needed(self, request: AdmissionRequest) -> bool:
        return False

    def facts(self, request: AdmissionRequest) -> ClusterFacts:
        return ClusterFacts()

    def parent(self, request: AdmissionRequest) -> KubeObject | None:
        raise GitOpsError("the webhook has no cluster to read the object from")


class ApiLookups:
    """The lookups, through the API server. Each costs a GET or two, and only the garbage collector's and the
    namespace controller's deletions of managed objects (and scales or evictions while a state is not loaded) need
    them."""

    def __init__(self, cluster: Reader) -> None:
        self.cluster = cluster

    def needed(self, request: AdmissionRequest) -> bool:
        user = str((request.get("userInfo") or {}).get("username") or "")
        return _deletes(request) and user in (GARBAGE_COLLECTOR, NAMESPACE_CONTROLLER)

    def facts(self, request: AdmissionRequest) -> ClusterFacts:
        if not self.needed(request):
            return ClusterFacts()
        user = str((request.get("userInfo") or {}).get("username") or "")
        obj = request.get("oldObject") or {}
        namespace = str(request.get("namespace") or "")
        try:
            if user == GARBAGE_COLLECTOR:
                return ClusterFacts(owners_gone=self._owners_gone(obj, namespace))
            return ClusterFacts(namespace_terminating=self._terminating(namespace))
        except GitOpsError as e:
            log.warning("cannot check the cluster for request %s: %s", request.get("uid"), e)
            return ClusterFacts()  # unknown: nothing granted

    def _owners_gone(self, obj: Mapping[str, Any], namespace: str) -> bool:
        """Whether every owner the object names is gone (no such object, or another one by that name) or being
        deleted. An object without owners is never the garbage collector's."""
        owners = (obj.get("metadata") or {}).get("ownerReferences") or []
        if not owners:
            return False
        for owner in owners:
            info = self.cluster.resource_for(str(owner.get("apiVersion", "")), str(owner.get("kind", "")))
            if info is None:
                continue  # a kind the cluster no longer serves: its objects are gone
            found = self.cluster.get(info, namespace if info.namespaced else "", str(owner.get("name", "")))
            if found is None:
                continue
            metadata = found.get("metadata") or {}
            if metadata.get("uid") == owner.get("uid") and not metadata.get("deletionTimestamp"):
                return False
        return True

    def _terminating(self, namespace: str) -> bool:
        info = self.cluster.resource_for("v1", "Namespace")
        if info is None or not namespace:
            return False
        found = self.cluster.get(info, "", namespace)
        return found is None or bool((found.get("metadata") or {}).get("deletionTimestamp"))

    def parent(self, request: AdmissionRequest) -> KubeObject | None:
        """The object a scale or an eviction is about, as stored now (None when there is none)."""
        resource = request.get("resource") or {}
        namespace = str(request.get("namespace") or "")
        info = ResourceInfo(
            str(resource.get("group", "")),
            str(resource.get("version", "")),
            "",
            str(resource.get("resource", "")),
            bool(namespace),
        )
        return self.cluster.get(info, namespace, str(request.get("name") or ""))
