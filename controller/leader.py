"""One active reconciler among its replicas: leader election over a coordination.k8s.io Lease, by the kubernetes
package's own implementation (kubernetes.leaderelection).

A process that cannot renew its lease within the renew deadline stops at once: `on_lost` runs (the controller
exits, as controller-runtime's managers do, and its Deployment restarts it as a follower). The renew deadline is
shorter than the lease, so the old leader has stopped before any other can take the lease.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from engine.adapters.kube import KubeTarget
from engine.core.errors import KubeConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseSettings:
    name: str = "gitops-controller"
    namespace: str = "gitops-system"
    duration: int = 15  # seconds a lease lasts without renewal (client-go's default)
    renew_deadline: int = 10  # a leader that has not renewed within this stops
    retry_period: int = 2  # how often candidates try, and the leader renews

    def check(self) -> None:
        if self.retry_period < 1:
            raise ValueError("the lease retry period must be at least 1s")
        if self.renew_deadline <= 1.2 * self.retry_period:
            raise ValueError("the renew deadline must be more than 1.2 times the retry period")
        if self.duration <= self.renew_deadline:
            raise ValueError("the lease duration must be longer than the renew deadline")


def api_client(target: KubeTarget) -> client.ApiClient:
    """The kubernetes package's client for the same cluster and identity as the engine's."""
    configuration = client.Configuration()
    try:
        if target.in_cluster:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=target.kubeconfig, context=target.context, client_configuration=configuration
            )
    except (ConfigException, OSError, TypeError, ValueError) as e:
        raise KubeConfigError(f"cannot load the cluster's configuration for leader election: {e}") from e
    return client.ApiClient(configuration)


class Leadership:
    """Campaigns for the lease until `stop`; runs `lead` once elected and `on_lost` when the lease is lost."""

    def __init__(
        self,
        target: KubeTarget,
        settings: LeaseSettings,
        identity: str,
        *,
        lead: Callable[[], None],
        on_lost: Callable[[], None],
        stop: threading.Event,
    ) -> None:
        settings.check()
        self.settings = settings
        self.identity = identity
        self.leading = threading.Event()
        self._lead = lead
        self._on_lost = on_lost
        self._stop = stop
        lock = LeaseLock(settings.name, settings.namespace, identity)  # type: ignore[no-untyped-call]
        lock.api_instance = client.CoordinationV1Api(api_client(target))
        self._election = leaderelection.LeaderElection(  # type: ignore[no-untyped-call]
            electionconfig.Config(  # type: ignore[no-untyped-call]
                lock,
                lease_duration=settings.duration,
                renew_deadline=settings.renew_deadline,
                retry_period=settings.retry_period,
                onstarted_leading=self._started,
                onstopped_leading=self._stopped,
            )
        )

    def _started(self) -> None:
        self.leading.set()
        log.info("%s leads (lease %s/%s)", self.identity, self.settings.namespace, self.settings.name)
        self._lead()

    def _stopped(self) -> None:
        was = self.leading.is_set()
        self.leading.clear()
        if was:
            log.error("%s lost the lease %s/%s", self.identity, self.settings.namespace, self.settings.name)
            self._on_lost()

    def run(self) -> None:
        """Campaigns (and, once elected, renews) until stopped or the lease is lost. An error talking to the API
        server while following is retried; while leading, it is a lost lease."""
        while not self._stop.is_set():
            try:
                self._election.run()  # type: ignore[no-untyped-call]
            except Exception as e:  # the library lets its client's transport errors through
                if self.leading.is_set():
                    log.error("renewing the lease failed: %s", e)
                    self._stopped()
                    return
                log.warning("campaigning for the lease failed, trying again: %s", e)
                self._stop.wait(self.settings.retry_period)
                continue
            if not self.leading.is_set():
                return  # the election ended after leading: _stopped has run
            return

    def thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="leader-election", daemon=True)
        thread.start()
        return thread
