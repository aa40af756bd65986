"""`gitops-webhook`: serves the admission webhook over HTTPS: gunicorn's arbiter, uvicorn's worker (webhook.server),
the ASGI app in front of the Flask app (webhook.asgi)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from gunicorn.app.base import BaseApplication

from engine.adapters.kube import KubeClient, KubeTarget
from engine.core.errors import GitOpsError
from engine.core.redact import SEEN

from . import tls

log = logging.getLogger("gitops-webhook")
RENEW_CHECK_SECONDS = 3600.0


class Server(BaseApplication):  # type: ignore[misc]
    """gunicorn, configured in code, serving what `load` makes in each worker (a WebhookApp, which asks
    `client_auth` who may call /validate; TLS asks for a client certificate as `client_auth` says)."""

    def __init__(self, options: dict[str, Any], load: Callable[[], Any], client_auth: tls.ClientAuth) -> None:
        self.options = {**options, **client_auth.gunicorn_options()}
        self._load = load
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._load()


def gunicorn_options(bind: str, workers: int, threads: int, files: tls.CertFiles) -> dict[str, Any]:
    """How gunicorn serves the webhook: uvicorn's worker (webhook.server), HTTPS, keep-alive. `threads` is the size
    of the pool for what may wait (webhook.asgi); uvicorn itself uses none."""
    return {
        "bind": bind,
        "workers": workers,
        "threads": threads,
        "worker_class": "webhook.server.Worker",
        "certfile": str(files.cert),
        "keyfile": str(files.key),
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 30,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "control_socket_disable": True,  # gunicorn's management socket: nothing here uses it, nobody else may
    }


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen")
    return host.strip("[]"), int(port)


class ScrubSecrets(logging.Filter):
    """No Secret value this process has sent reaches a log line, in the message or a traceback (engine.core.redact)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = SEEN.scrub(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = SEEN.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _client_auth(ca_file: Path | None, names: tuple[str, ...], no_client_auth: bool) -> tls.ClientAuth:
    if ca_file is not None and no_client_auth:
        raise click.UsageError("--client-ca-file and --no-client-auth contradict each other: choose one")
    if ca_file is None and not no_client_auth:
        raise click.UsageError(
            "--client-ca-file is required: the CA that signed the API server's client certificate, so that only the "
            "API server may call /validate (see the README, 'Deploying in a cluster'); pass --no-client-auth "
            "to serve anyone who reaches the port (then a NetworkPolicy is the only guard)"
        )
    if ca_file is None:
        log.warning(
            "CLIENT AUTHENTICATION IS OFF (--no-client-auth): anyone who reaches this port can call /validate, write "
            "audit records in any user's name and probe Git's Secret values with dry-runs; a NetworkPolicy that "
            "admits only the API server is the only guard"
        )
        return tls.ClientAuth(None, ())
    if not ca_file.is_file():
        raise click.BadParameter(f"{ca_file} is not a file", param_hint="--client-ca-file")
    names = tuple(n.strip() for name in names for n in name.split(",") if n.strip())
    return tls.ClientAuth(ca_file, names)


def _renewer(
    cert_dir: Path, hosts: list[str], shared: Callable[[], tls.CertFiles] | None, every: float = RENEW_CHECK_SECONDS
) -> Any:
    """A gunicorn `when_ready` hook: every `every` seconds, renews the certificate files in time (or takes the ones
    another replica renewed); the workers' TLS serves new files to the next handshake (webhook.tls.Reloading), without
    a restart."""

    def when_ready(server: Any) -> None:
        def loop() -> None:
            while True:
                threading.Event().wait(every)
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
                    log.info("serving certificate renewed: new connections get it")

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
    "--client-ca-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CA of the client certificate the API server presents (its admission config's kubeconfig): "
    "/validate answers only clients it signed. Required unless --no-client-auth.",
)
@click.option(
    "--client-cn",
    "client_names",
    multiple=True,
    default=[tls.API_SERVER_CLIENT],
    show_default=True,
    help="Subject CN that /validate accepts from that CA (repeat, or comma-separate, for several).",
)
@click.option(
    "--no-client-auth",
    is_flag=True,
    help="Answer /validate without a client certificate: only a NetworkPolicy then keeps others out.",
)
@click.option(
    "--cert-check-seconds",
    type=click.FloatRange(min=0.1),
    default=RENEW_CHECK_SECONDS,
    show_default=True,
    help="How often to check whether the serving certificate is due for renewal, or was renewed by another "
    "replica (in --cert-secret).",
)
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
    cert_check_seconds: float,
    namespace: str,
    client_ca_file: Path | None,
    client_names: tuple[str, ...],
    no_client_auth: bool,
) -> None:
    """Serve the drift admission webhook (POST /validate, /healthz, /readyz, /metrics)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubSecrets())
    for name in ("gunicorn.error", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(ScrubSecrets())
    client_auth = _client_auth(client_ca_file, client_names, no_client_auth)
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
    options["when_ready"] = _renewer(cert_dir, names, shared, cert_check_seconds)
    options["raw_env"] = [f"GITOPS_WEBHOOK_NAMESPACE={namespace}"]

    def load() -> Any:
        # Imported here, in the worker (gunicorn calls `load` after the fork): the arbiter serves nothing, and each
        # module it imports would be held twice, its own copy and the worker's (README, the webhook's memory).
        from .app import create_app, webhook_of
        from .asgi import WebhookApp

        app = create_app(kube=KubeClient(target))
        webhook_of(app).start()  # the refresh and retention loops, in this worker
        return WebhookApp(app, client_auth, threads)

    Server(options, load, client_auth).run()
