"""`gitops-controller`: run the reconciler, in a cluster (its ServiceAccount) or beside one (--kubeconfig).

Every flag can also be set by an environment variable: GITOPS_CONTROLLER_ and the flag's name in capitals
(GITOPS_CONTROLLER_WORKERS=8).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from types import FrameType

import click

from engine.adapters.clock import SYSTEM
from engine.adapters.kube import KubeClient, KubeTarget
from engine.core.errors import GitOpsError
from engine.core.objects import ObjectKey

from .leader import Leadership, LeaseSettings
from .metrics import ControllerMetrics
from .reconciler import Reconciler
from .repos import Repositories
from .server import probes_app, serve

log = logging.getLogger("gitops-controller")
STOP_GRACE_SECONDS = 10.0


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        return host or "0.0.0.0", int(port)
    except ValueError as e:
        raise click.BadParameter(f"{text!r} is not HOST:PORT") from e


@click.command(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "GITOPS_CONTROLLER"})
@click.option("--kubeconfig", help="Run beside a cluster with this kubeconfig (default: in-cluster, else kubectl's).")
@click.option("--context", "kube_context", help="The kubeconfig context to use.")
@click.option("-n", "--namespace", default="gitops-system", show_default=True, help="Where the Applications live.")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="Applications at once.")
@click.option("--probe-address", default="0.0.0.0:8081", show_default=True, help="/healthz, /readyz, /metrics.")
@click.option("--git-cache", type=click.Path(file_okay=False, path_type=Path), help="Where Git mirrors are kept.")
@click.option("--leader-elect/--no-leader-elect", default=True, show_default=True, help="One active replica.")
@click.option("--lease-name", default="gitops-controller", show_default=True)
@click.option("--lease-namespace", help="Namespace of the Lease (default: --namespace).")
@click.option("--lease-duration", type=int, default=15, show_default=True, help="Seconds.")
@click.option("--renew-deadline", type=int, default=10, show_default=True, help="Seconds.")
@click.option("--retry-period", type=int, default=2, show_default=True, help="Seconds.")
@click.option("--identity", help="This replica's name in the Lease (default: the pod's or host's name, pid).")
@click.option("--full-compare", is_flag=True, help="Dry-run every object at every compare (no fingerprints' shortcut).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
def main(
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
    workers: int,
    probe_address: str,
    git_cache: Path | None,
    leader_elect: bool,
    lease_name: str,
    lease_namespace: str | None,
    lease_duration: int,
    renew_deadline: int,
    retry_period: int,
    identity: str | None,
    full_compare: bool,
    log_level: str,
) -> None:
    """Keep every Application in NAMESPACE equal to Git: fetch, sync automatically, heal or report drift."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    in_cluster = not kubeconfig and "KUBERNETES_SERVICE_HOST" in os.environ and not os.environ.get("KUBECONFIG")
    target = KubeTarget(kubeconfig=kubeconfig, context=kube_context, in_cluster=in_cluster)
    name = identity or f"{os.environ.get('POD_NAME') or socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    lease = LeaseSettings(lease_name, lease_namespace or namespace, lease_duration, renew_deadline, retry_period)
    try:
        lease.check()
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    host, port = _address(probe_address)
    stop = threading.Event()
    try:
        cluster = KubeClient(target)
        watch_client = KubeClient(target, pool_size=128, timeout=330.0)
    except GitOpsError as e:
        raise click.ClickException(str(e)) from e
    metrics = ControllerMetrics()
    repos = Repositories(git_cache)
    metrics.git_fetches.set_function(lambda: float(repos.fetches()))
    metrics.api_requests.set_function(lambda: float(cluster.requests_sent() + watch_client.requests_sent()))
    leadership: Leadership | None = None

    def leading() -> bool:
        return leadership is None or leadership.leading.is_set()

    reconciler = Reconciler(
        cluster,
        watch_client,
        namespace=namespace,
        repos=repos,
        metrics=metrics,
        clock=SYSTEM,
        stop=stop,
        identity=name,
        workers=workers,
        leading=leading,
        shortcut=not full_compare,
    )

    def lost() -> None:
        # Work stops at once: no write of this process may follow another replica's taking the lease.
        stop.set()
        metrics.leader.set(0)
        log.error("exiting: the lease was lost")
        logging.shutdown()
        os._exit(1)

    def lead() -> None:
        metrics.leader.set(1)
        try:
            reconciler.start()
        except GitOpsError as e:
            log.error("cannot start reconciling: %s", e)
            raise

    def healthy() -> tuple[bool, str]:
        if leadership is not None and not leadership.leading.is_set():
            return (True, "following") if election.is_alive() else (False, "leader election stopped")
        return reconciler.healthy()

    def ready() -> tuple[bool, str]:
        if leadership is not None and not leadership.leading.is_set():
            return True, f"following: {lease.namespace}/{lease.name} is held by another replica"
        if reconciler.ready():
            return True, "leading"
        return False, reconciler.waiting_for or "listing Applications"

    try:
        _, bound = serve(host, port, probes_app(metrics.registry, healthy, ready))
    except OSError as e:
        raise click.ClickException(f"cannot serve probes on {probe_address}: {e}") from e
    log.info("%s: probes and metrics on %s:%d", name, host, bound)

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.info("stopping (signal %d)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if leader_elect:
        leadership = Leadership(target, lease, name, lead=lead, on_lost=lost, stop=stop)
        election = leadership.thread()
    else:
        election = threading.current_thread()
        lead()
    while not stop.wait(1.0):
        pass
    reconciler.close()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for thread in reconciler._threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    if leadership is not None and leadership.leading.is_set():
        release(cluster, lease, name)


def release(cluster: KubeClient, lease: LeaseSettings, identity: str) -> None:
    """Gives the lease up on a clean stop, so that another replica takes over at once, not after the lease ends."""
    info = cluster.resource_for("coordination.k8s.io/v1", "Lease")
    if info is None:
        return
    key = ObjectKey("coordination.k8s.io", "Lease", lease.namespace, lease.name)
    current = cluster.get(info, lease.namespace, lease.name)
    if current is None or (current.get("spec") or {}).get("holderIdentity") != identity:
        return
    try:
        cluster.merge_patch(info, key, {"spec": {"holderIdentity": None, "acquireTime": None, "renewTime": None}})
        log.info("released the lease %s/%s", lease.namespace, lease.name)
    except GitOpsError as e:
        log.warning("releasing the lease failed (another replica takes it when it ends): %s", e)
