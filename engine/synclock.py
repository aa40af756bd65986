"""One sync of an Application at a time, whoever runs it: `kubectl gitops sync`, a rollback, or the reconciler.

The lock is a coordination.k8s.io Lease per Application (gitops-sync-NAME, beside the Application), taken by
creating it, renewed while the sync runs, and deleted after. A Lease whose holder stopped renewing (a killed CLI) is
taken over once it has expired, at its resourceVersion, so that two who find it expired cannot both take it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

from .adapters.kube import KubeClient
from .core.clock import Clock
from .core.errors import ApiError, GitOpsError
from .core.objects import AppRef, KubeObject, ObjectKey

LOCK_SECONDS = 60  # a holder that stops renewing loses the lock after this
RENEW_SECONDS = 15.0
WAIT_SECONDS = 120.0  # how long a sync waits for another one to finish


class SyncBusy(GitOpsError):
    """Another sync of the same Application is running."""


def _micro(at: datetime.datetime) -> str:
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def lock_name(ref: AppRef) -> str:
    return f"gitops-sync-{ref.name}"


@contextlib.contextmanager
def sync_lock(
    cluster: KubeClient, ref: AppRef, clock: Clock, *, wait: float = WAIT_SECONDS, holder: str = ""
) -> Iterator[None]:
    """Holds the Application's sync lock for the block; waits up to `wait` seconds for another holder to finish."""
    info = cluster.resource_for("coordination.k8s.io/v1", "Lease")
    if info is None:  # a cluster without Leases has no reconciler to race with either
        yield
        return
    holder = holder or f"{socket.gethostname()}/{os.getpid()}/{threading.get_ident()}"
    key = ObjectKey("coordination.k8s.io", "Lease", ref.namespace, lock_name(ref))
    deadline = clock.monotonic() + wait
    held: KubeObject | None = None
    last_holder = ""
    while held is None:
        now = clock.wall()
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": key.name, "namespace": key.namespace},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": LOCK_SECONDS,
                "acquireTime": _micro(now),
                "renewTime": _micro(now),
            },
        }
        try:
            held = cluster.create(info, body)
            break
        except ApiError as e:
            if e.status != 409:
                raise GitOpsError(f"{ref}: cannot take the sync lock (Lease {key.namespace}/{key.name}): {e}") from e
        current = cluster.get(info, key.namespace, key.name)
        if current is None:
            continue
        spec = current.get("spec") or {}
        last_holder = str(spec.get("holderIdentity") or "")
        renewed = _parse(str(spec.get("renewTime") or ""))
        duration = float(spec.get("leaseDurationSeconds") or LOCK_SECONDS)
        if renewed is None or (now - renewed).total_seconds() > duration:
            taken = {
                **body,
                "metadata": {**body["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
            }
            try:
                held = cluster.replace(info, taken)
                break
            except ApiError as e:
                if e.status not in (404, 409):
                    raise GitOpsError(f"{ref}: cannot take over the expired sync lock: {e}") from e
                continue
        if clock.monotonic() > deadline:
            raise SyncBusy(
                f"{ref}: another sync is running (held by {last_holder}, Lease {key.namespace}/{key.name}); "
                "try again when it has finished"
            )
        threading.Event().wait(0.25)
    stop = threading.Event()
    state = {"lease": held}

    def renew() -> None:
        while not stop.wait(RENEW_SECONDS):
            lease = state["lease"]
            lease = {**lease, "spec": {**lease["spec"], "renewTime": _micro(clock.wall())}}
            try:
                state["lease"] = cluster.replace(info, lease)
            except GitOpsError:
                return  # lost: the sync finishes; another may start after the lock expires

    renewer = threading.Thread(target=renew, name=f"sync-lock-{ref.name}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(GitOpsError):
            cluster.delete(info, key, uid=str(state["lease"]["metadata"].get("uid") or ""))
