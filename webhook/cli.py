"""`gitops-webhook`: serves the admission webhook over HTTPS with gunicorn."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from gunicorn.app.base import BaseApplication

from engine.errors import GitOpsError
from engine.kube import KubeClient, KubeTarget

from . import tls
from .app import create_app
from .front import Front

log = logging.getLogger("gitops-webhook")
RENEW_CHECK_SECONDS = 3600.0


class Server(BaseApplication):  # type: ignore[misc]
    """gunicorn, configured in code, serving what `load` makes in each worker."""

    def __init__(self, options: dict[str, Any], load: Callable[[], Any]) -> None:
        self.options = options
        self._load = load
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._load()


def gunicorn_options(bind: str, workers: int, threads: int, files: tls.CertFiles) -> dict[str, Any]:
    """How gunicorn serves the webhook: with its own worker (webhook.worker says why), HTTPS, keep-alive."""
    return {
        "bind": bind,
        "workers": workers,
        "threads": threads,
        "worker_class": "webhook.worker.WebhookWorker",
        "certfile": str(files.cert),
        "keyfile": str(files.key),
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 30,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
    }


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen")
    return host.strip("[]"), int(port)


def _renewer(cert_dir: Path, hosts: list[str], shared: Callable[[], tls.CertFiles] | None) -> Any:
    """A gunicorn `when_ready` hook: renews the certificate in time (or takes the one another replica renewed) and
    reloads the workers (SIGHUP) to serve it."""

    def when_ready(server: Any) -> None:
        def loop() -> None:
            while True:
                threading.Event().wait(RENEW_CHECK_SECONDS)
                try:
                    before = (cert_dir / "tls.crt").read_bytes()
                    if shared is not None:
                        shared()
                        renewed = (cert_dir / "tls.crt").read_bytes() != before
                    else:
                        _, renewed = tls.ensure(cert_dir, hosts)
                except (OSError, ValueError, GitOpsError) as e:
                    log.error("renewing the serving certificate failed: %s", e)
                    continue
                if renewed:
                    log.info("serving certificate renewed; reloading workers")
                    os.kill(server.pid, signal.SIGHUP)

        threading.Thread(target=loop, name="cert-renewal", daemon=True).start()

    return when_ready


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--kubeconfig", help="kubeconfig to reach the API server (default: in-cluster, then $KUBECONFIG).")
@click.option("--context", "kube_context", help="kubeconfig context.")
@click.option("--listen", default="0.0.0.0:8443", show_default=True, help="HOST:PORT to serve HTTPS on.")
@click.option(
    "--cert-dir",
    type=click.Path(path_type=Path),
    required=True,
    help="ca.crt, tls.crt, tls.key; made here (and renewed) when missing.",
)
@click.option("--host", "hosts", multiple=True, help="Extra DNS name or IP for the serving certificate.")
@click.option(
    "--cert-secret",
    default="",
    help="Share the certificate between replicas through this Secret "
    "(in --namespace): the first replica makes it, the others use it.",
)
@click.option("--namespace", default="gitops-system", show_default=True, help="The webhook's own namespace.")
@click.option("--workers", default=1, show_default=True, help="gunicorn worker processes.")
@click.option(
    "--threads",
    default=16,
    show_default=True,
    help="Threads per worker for what may wait (a revision to load, an audit record to write) and health checks.",
)
def main(
    kubeconfig: str | None,
    kube_context: str | None,
    listen: str,
    cert_dir: Path,
    hosts: tuple[str, ...],
    workers: int,
    threads: int,
    cert_secret: str,
    namespace: str,
) -> None:
    """Serve the drift admission webhook (POST /validate, /healthz, /readyz, /metrics)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    host, port = _split_listen(listen)
    names = [h for h in (host, *hosts) if h not in ("0.0.0.0", "::")] or ["localhost"]
    names += [n for n in ("localhost", "127.0.0.1") if n not in names]
    in_cluster = not kubeconfig and "KUBERNETES_SERVICE_HOST" in os.environ
    target = KubeTarget(kubeconfig=kubeconfig, context=kube_context, in_cluster=in_cluster)
    shared: Callable[[], tls.CertFiles] | None = None
    try:
        kube = KubeClient(target)  # fail here, with a clear message, rather than in every worker
        if cert_secret:

            def shared() -> tls.CertFiles:
                return tls.sync_with_secret(kube, namespace, cert_secret, cert_dir, names)

            files = shared()
        else:
            files, _ = tls.ensure(cert_dir, names)
    except GitOpsError as e:
        raise click.ClickException(str(e)) from e
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options = gunicorn_options(bind, workers, threads, files)
    options["when_ready"] = _renewer(cert_dir, names, shared)
    options["raw_env"] = [f"GITOPS_WEBHOOK_NAMESPACE={namespace}"]

    def load() -> Front:
        return Front(create_app(kube=KubeClient(target)))

    Server(options, load).run()
