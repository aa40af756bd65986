"""Pieces of objects as the API server stores and describes them, shared by the unit tests."""

from __future__ import annotations

import json
from typing import Any


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
