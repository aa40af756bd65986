"""The ValidatingWebhookConfiguration that registers the drift webhook. Pure: options in, object out."""

from __future__ import annotations

import base64

from .objects import TRACKING_LABEL, KubeObject

NAME = "gitops-drift.kubectl-gitops.io"
SERVICE_NAME = "gitops-webhook"
OPERATIONS = ["CREATE", "UPDATE", "DELETE"]
# kube-controller-manager (and its per-controller ServiceAccounts) and nodes never reach the webhook; the webhook
# exempts them again from the authenticated userInfo, so this is only a shortcut.
MACHINERY = (
    "!(request.userInfo.username == 'system:kube-controller-manager'"
    " || request.userInfo.username.startsWith('system:serviceaccount:kube-system:')"
    " || request.userInfo.username.startsWith('system:node:'))"
)


def webhook_configuration(
    *, ca_bundle: bytes, url: str = "", namespace: str = "gitops-system", timeout_seconds: int = 10
) -> KubeObject:
    """Two entries. Managed objects: selected by the tracking label, failurePolicy Fail, so that stopping the
    webhook cannot open the door to drift (unmanaged objects never reach it). Scale subresources: a Scale carries
    none of its parent's labels, so no objectSelector can match it; every scale request reaches the webhook, which
    looks the parent up in its own index, and failurePolicy Ignore keeps a webhook outage from stopping every
    autoscaler in the cluster."""
    if url:
        client: dict[str, object] = {"url": url}
    else:
        client = {"service": {"name": SERVICE_NAME, "namespace": namespace, "path": "/validate", "port": 443}}
    client["caBundle"] = base64.b64encode(ca_bundle).decode()
    namespaces = {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", namespace]}
        ]
    }
    common = {
        "clientConfig": client,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "NoneOnDryRun",
        "timeoutSeconds": timeout_seconds,
        "namespaceSelector": namespaces,
        "matchPolicy": "Equivalent",
        "matchConditions": [{"name": "not-cluster-machinery", "expression": MACHINERY}],
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [
            {
                "name": f"objects.{NAME}",
                **common,
                "failurePolicy": "Fail",
                "objectSelector": {"matchExpressions": [{"key": TRACKING_LABEL, "operator": "Exists"}]},
                "rules": [
                    {
                        "apiGroups": ["*"],
                        "apiVersions": ["*"],
                        "resources": ["*"],
                        "operations": OPERATIONS,
                        "scope": "*",
                    }
                ],
            },
            {
                "name": f"scale.{NAME}",
                **common,
                "failurePolicy": "Ignore",
                "rules": [
                    {
                        "apiGroups": ["*"],
                        "apiVersions": ["*"],
                        "resources": ["*/scale"],
                        "operations": ["UPDATE"],
                        "scope": "Namespaced",
                    }
                ],
            },
        ],
    }
