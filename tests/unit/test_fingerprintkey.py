"""engine.adapters.fingerprintkey: an identity that may not read or write the key or the fingerprints gets no
fingerprints (so the full compare), never an error that stops its sync; the fingerprints round trip."""

from __future__ import annotations

from engine.adapters.fingerprintkey import ensure_key, read_kept, read_key, write_kept
from engine.core.errors import ApiError
from engine.core.objects import AppRef, KubeObject
from engine.core.resources import Applied, ResourceInfo

SECRETS = ResourceInfo(group="", version="v1", kind="Secret", plural="secrets", namespaced=True)
APP = AppRef("gitops-system", "shop")


class Secrets:
    """Secrets in memory, or, with `denied`, an identity RBAC refuses them to."""

    def __init__(self, denied: bool = False) -> None:
        self.denied = denied
        self.stored: dict[tuple[str, str], KubeObject] = {}

    def _check(self) -> None:
        if self.denied:
            raise ApiError("secrets is forbidden", 403, "Forbidden")

    def resource_for(self, api_version: str, kind: str) -> ResourceInfo | None:
        return SECRETS

    def get(self, info: ResourceInfo, namespace: str, name: str) -> KubeObject | None:
        self._check()
        return self.stored.get((namespace, name))

    def create(self, info: ResourceInfo, obj: KubeObject) -> KubeObject:
        self._check()
        self.stored[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return obj

    def apply(self, info: ResourceInfo, obj: KubeObject, *, dry_run: bool = False, force: bool = True) -> Applied:
        return Applied(self.create(info, obj))


def test_a_denied_identity_gets_no_key_no_fingerprints_and_no_error() -> None:
    denied = Secrets(denied=True)
    assert read_key(denied, "gitops-system") is None
    assert ensure_key(denied, "gitops-system") is None
    assert read_kept(denied, APP) == frozenset()
    assert write_kept(denied, APP, ["0" * 32]) is False


def test_the_key_is_made_once_and_the_fingerprints_round_trip() -> None:
    store = Secrets()
    key = ensure_key(store, "gitops-system")
    assert key is not None
    assert len(key) == 32
    assert ensure_key(store, "gitops-system") == key
    kept = ["ab" * 16, "cd" * 16]
    assert write_kept(store, APP, kept) is True
    assert read_kept(store, APP) == frozenset(kept)
