"""The `gitops-webhook` command as an operator runs it, seen only through its command line and HTTPS: it renews its
serving certificate before it expires and reloads its workers to serve the new one; replicas sharing the certificate
Secret take over the one another replica renewed; `gitops_webhook_source_errors` on /metrics rises while Git is
unreachable. A control plane of its own, so that the webhook loads only this module's Application."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import shutil
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..conftest import REPO_ROOT, Gitops, GitRepo, Kubectl
from .test_webhook import WebhookProcess, _free_port
from .test_webhook_gate import private_control_plane, wait_for

pytestmark = pytest.mark.cluster

CHECK = ("--cert-check-seconds", "0.5")  # how often the renewal looks (an hour by default)
HOSTS = ["127.0.0.1", "localhost"]  # what gitops-webhook --listen 127.0.0.1:PORT puts in its certificate


@dataclass
class Plane:
    kubectl: Kubectl
    gitops: Gitops
    work: Path

    def webhook(self, name: str, **options: Any) -> WebhookProcess:
        """A gitops-webhook process of this control plane (not started), in a directory of its own."""
        kubeconfig = self.kubectl.cluster.kubeconfig("gitops")
        ca = self.kubectl.cluster.webhook_client_ca
        return WebhookProcess(
            self.work / name / "certs", _free_port(), kubeconfig, self.work / f"{name}.log", ca, **options
        )


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    work = tmp_path_factory.mktemp("webhook-process")
    with private_control_plane(work) as (kubectl, gitops, _):
        gitops.run("install")  # the CRDs and gitops-system, where the certificate Secrets live
        yield Plane(kubectl, gitops, work)


@pytest.fixture
def started(plane: Plane) -> Iterator[list[WebhookProcess]]:
    """Webhook processes a test starts: stopped when it ends."""
    hooks: list[WebhookProcess] = []
    yield hooks
    for hook in hooks:
        hook.stop()


def served(hook: WebhookProcess) -> x509.Certificate | None:
    """The certificate the webhook presents to a new connection, verified against its CA (None while it does not
    answer, as during a reload)."""
    try:
        context = ssl.create_default_context(cafile=str(hook.cert_dir / "ca.crt"))
        with (
            socket.create_connection(("127.0.0.1", hook.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
        ):
            der = conn.getpeercert(binary_form=True)
    except OSError:
        return None
    return x509.load_der_x509_certificate(der) if der else None


def expiring_leaf(ca_cert: bytes, ca_key: bytes, days: int = 10) -> tuple[bytes, bytes]:
    """A serving certificate for HOSTS from the webhook's own CA that expires in `days` (renewal is due 30 days
    before expiry): what the webhook's certificate is some 80 days after it was made. PEM certificate and key."""
    issuer = x509.load_pem_x509_certificate(ca_cert)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=80))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOSTS[0])), x509.DNSName(HOSTS[1])]),
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return leaf.public_bytes(serialization.Encoding.PEM), key_pem


def replace_file(path: Path, data: bytes) -> None:
    """As the webhook writes its files: whole, by a rename, so that a reader never sees half of one."""
    tmp = path.with_name(path.name + ".planted")
    tmp.write_bytes(data)
    tmp.replace(path)


def days_left(cert: x509.Certificate) -> float:
    return (cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)) / datetime.timedelta(days=1)


def secret_data(kubectl: Kubectl, name: str) -> dict[str, bytes]:
    secret = json.loads(kubectl.run("-n", "gitops-system", "get", "secret", name, "-o", "json").stdout)
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


def pem_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_certificate_due_for_renewal_is_renewed_and_served_after_a_reload(
    plane: Plane, started: list[WebhookProcess]
) -> None:
    """Without --cert-secret: the webhook's own files. Its leaf comes due (here: replaced by one that expires in 10
    days, as it would be 80 days on); the next check renews it from the same CA and the workers, reloaded, serve
    it to every new connection, without a restart."""
    hook = plane.webhook("own", cert_secret="", args=CHECK)
    started.append(hook)
    hook.start()
    first = served(hook)
    assert first is not None
    assert days_left(first) > 80
    ca_before = (hook.cert_dir / "ca.crt").read_bytes()
    cert_pem, key_pem = expiring_leaf(ca_before, (hook.cert_dir / "ca.key").read_bytes())
    replace_file(hook.cert_dir / "tls.key", key_pem)
    replace_file(hook.cert_dir / "tls.crt", cert_pem)

    def renewed() -> bool:
        now = served(hook)
        return now is not None and pem_of(now) not in (pem_of(first), cert_pem)

    wait_for(renewed, "the webhook to serve a renewed certificate")
    now = served(hook)
    assert now is not None
    assert days_left(now) > 80
    assert pem_of(now) == (hook.cert_dir / "tls.crt").read_bytes()
    assert (hook.cert_dir / "ca.crt").read_bytes() == ca_before  # the registered caBundle stays valid
    assert now.issuer == first.issuer
    assert "serving certificate renewed: new connections get it" in hook.log.read_text()
    assert hook.proc is not None
    assert hook.proc.poll() is None
    assert hook.get("/healthz") == {"status": "ok"}


def test_replicas_take_over_the_certificate_one_of_them_renewed_in_the_shared_secret(
    plane: Plane, started: list[WebhookProcess]
) -> None:
    """Two replicas share --cert-secret. When the stored leaf comes due, one renews it and stores it; the other finds
    it in the Secret (or loses the race to store its own, and takes the winner's): both end up serving the one leaf
    the Secret holds, from the CA it always held."""
    secret = "gitops-webhook-tls-renewal"
    first, second = (plane.webhook(name, cert_secret=secret, args=CHECK) for name in ("replica-a", "replica-b"))
    for hook in (first, second):
        started.append(hook)
        hook.start()
    stored = secret_data(plane.kubectl, secret)
    for hook in (first, second):
        cert = served(hook)
        assert cert is not None
        assert pem_of(cert) == stored["tls.crt"]
    cert_pem, key_pem = expiring_leaf(stored["ca.crt"], stored["ca.key"])
    patch = {"data": {"tls.crt": base64.b64encode(cert_pem).decode(), "tls.key": base64.b64encode(key_pem).decode()}}
    plane.kubectl.run("-n", "gitops-system", "patch", "secret", secret, "-p", json.dumps(patch))

    def converged() -> bool:
        now = secret_data(plane.kubectl, secret)["tls.crt"]
        if now in (stored["tls.crt"], cert_pem):
            return False
        return all((cert := served(hook)) is not None and pem_of(cert) == now for hook in (first, second))

    wait_for(converged, "both replicas to serve the renewed certificate the Secret holds")
    after = secret_data(plane.kubectl, secret)
    assert after["ca.crt"] == stored["ca.crt"]
    assert after["ca.key"] == stored["ca.key"]
    assert days_left(x509.load_pem_x509_certificate(after["tls.crt"])) > 80
    for hook in (first, second):
        assert (hook.cert_dir / "tls.crt").read_bytes() == after["tls.crt"]
        assert "serving certificate renewed: new connections get it" in hook.log.read_text()


def source_errors(hook: WebhookProcess) -> float | None:
    text = hook.get("/metrics")
    if not isinstance(text, str):
        return None
    for line in text.splitlines():
        if line.startswith("gitops_webhook_source_errors "):
            return float(line.split()[1])
    return None


def test_the_source_errors_metric_rises_while_git_is_unreachable(
    plane: Plane, started: list[WebhookProcess], tmp_path: Path
) -> None:
    repo_path = tmp_path / "guestbook"
    shutil.copytree(REPO_ROOT / "examples" / "guestbook", repo_path)
    repo = GitRepo(repo_path)
    repo.git("init", "-q", "-b", "main")
    repo.commit("the guestbook")
    plane.gitops.run("create", "metrics", "--repo", str(repo_path), "--dest-namespace", "ns-metrics")
    plane.gitops.run("sync", "metrics")
    # Every Application re-rendered twice a second, so that Git's absence shows at once.
    settings = {"GITOPS_WEBHOOK_REFRESH_SECONDS": "0.5", "GITOPS_WEBHOOK_POLL_SECONDS": "0.2"}
    hook = plane.webhook("metrics", env=settings)
    started.append(hook)
    hook.start()
    hook.wait_loaded("metrics")
    wait_for(lambda: source_errors(hook) == 0, "the metric to say no source fails")

    away = repo_path.with_name("guestbook-away")
    repo_path.rename(away)
    wait_for(lambda: source_errors(hook) == 1, "the metric to count the unreachable repository")
    entry = hook.get("/readyz")["applications"]["gitops-system/metrics"]
    assert entry["error"]
    assert entry["loaded"]

    away.rename(repo_path)
    wait_for(lambda: source_errors(hook) == 0, "the metric to fall back once Git is back")
