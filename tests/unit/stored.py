"""Pieces of objects as the API server stores and describes them, shared by the unit tests."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from engine.core.admission import GitObject
from engine.core.drift import DriftPolicy
from engine.core.objects import FIELD_MANAGER, TRACKING_LABEL, AppRef, DriftMode, KubeObject, key_of
from engine.core.probe import from_probe

SHOP = AppRef("gitops-system", "shop")


def k(**fields: Any) -> str:
    """A fieldsV1 list-element key, as the API server spells it: `k:{"name":"app"}`."""
    return "k:" + json.dumps(fields, separators=(",", ":"))


def container(name: str, image: str, **more: Any) -> dict[str, Any]:
    """A container as the API server stores it: Git's fields plus the server's defaults."""
    return {
        "name": name,
        "image": image,
        **more,
        "imagePullPolicy": "IfNotPresent",
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def probe_answer(stored: KubeObject, fields: Mapping[str, Any]) -> KubeObject:
    """What the API server answers to the webhook's probe (a dry-run apply of Git's object, without our tracking
    label): `stored`, Git's object as the server stores it, with `fields` (what our manager applied) as its
    managedFields."""
    metadata = {**stored["metadata"], "name": "gitops-probe-0a1b2c3d"}
    metadata["labels"] = {k: v for k, v in (metadata.get("labels") or {}).items() if k != TRACKING_LABEL}
    metadata["managedFields"] = [
        {
            "manager": FIELD_MANAGER,
            "operation": "Apply",
            "apiVersion": stored["apiVersion"],
            "fieldsType": "FieldsV1",
            "fieldsV1": copy.deepcopy(dict(fields)),
        }
    ]
    return {**copy.deepcopy(stored), "metadata": metadata}


def git_object(
    stored: KubeObject,
    fields: Mapping[str, Any],
    *,
    mode: DriftMode | str = DriftMode.ENFORCE,
    app: AppRef = SHOP,
    revision: str = "0123456789abcdef0123456789abcdef01234567",
    policy: DriftPolicy | None = None,
) -> GitObject:
    """Git's object as the webhook's index holds it, made the way engine.gitstate makes it from the probe's answer
    (its declared fields, our tracking marks among them)."""
    key = key_of(stored)
    obj, declared = from_probe(probe_answer(stored, fields), key, app.name)
    return GitObject(key, app, DriftMode(mode), revision, obj, declared, policy or DriftPolicy())
