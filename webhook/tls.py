"""Serving certificates the webhook makes for itself (a CA and a leaf for its hosts) and renews before expiry, served
afresh as soon as they change (`reloading`); and who may call /validate: the API server, known by the client
certificate it presents (ClientAuth)."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import logging
import os
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.core.errors import ApiError

log = logging.getLogger(__name__)

API_SERVER_CLIENT = "kube-apiserver-webhook-client"  # the CN of the client certificate the local cluster gives it
CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=90)
RENEW_BEFORE = datetime.timedelta(days=30)
# Where a request's client certificate travels from the server (webhook.server) to the app (webhook.asgi):
TLS = "tls"  # the ASGI TLS extension's key in scope["extensions"]
PEERCERT = "gitops.peercert"  # what ssl's getpeercert() gave for the connection, beside the extension's fields


@dataclass(frozen=True)
class CertFiles:
    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> CertFiles:
        return cls(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def needs_renewal(files: CertFiles, hosts: list[str], at: datetime.datetime | None = None) -> bool:
    """True when a file is missing, the leaf expires within RENEW_BEFORE, or it does not name every host."""
    if not (files.ca.exists() and files.cert.exists() and files.key.exists()):
        return True
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    if cert.not_valid_after_utc - (at or _now()) < RENEW_BEFORE:
        return True
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    present = {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }
    return not set(hosts) <= present


def ensure(directory: Path, hosts: list[str]) -> tuple[CertFiles, bool]:
    """Makes (or renews) the certificates in `directory`; keeps an existing CA so that caBundles stay valid.
    Returns the files and whether anything was written."""
    directory.mkdir(parents=True, exist_ok=True)
    files = CertFiles.in_dir(directory)
    if not needs_renewal(files, hosts):
        return files, False
    ca_key_path = directory / "ca.key"
    if files.ca.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(files.ca.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubectl-gitops webhook CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write(ca_key_path, _key_pem(ca_key), private=True)
        _write(files.ca, ca_cert.public_bytes(serialization.Encoding.PEM))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(hosts), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(files.key, _key_pem(key), private=True)
    _write(files.cert, leaf.public_bytes(serialization.Encoding.PEM))
    return files, True


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    if private:
        tmp.chmod(0o600)
    tmp.replace(path)


SECRET_KEYS = {"ca.crt": "ca", "tls.crt": "cert", "tls.key": "key", "ca.key": "ca_key"}


def sync_with_secret(cluster: Any, namespace: str, name: str, directory: Path, hosts: list[str]) -> CertFiles:
    """Replicas share one CA and certificate through a Secret: the first to find none (or one due for renewal)
    makes them and stores them; the others, and later restarts, use what the Secret holds."""
    info = cluster.resource_for("v1", "Secret")
    if info is None:
        raise OSError("the cluster does not serve Secrets")
    directory.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        secret = cluster.get(info, namespace, name)
        if secret is not None:
            for key in SECRET_KEYS:
                value = (secret.get("data") or {}).get(key)
                if value:
                    _write(directory / key, base64.b64decode(value), private=key.endswith(".key"))
        files, renewed = ensure(directory, hosts)
        if not renewed and secret is not None:
            return files
        data = {key: base64.b64encode((directory / key).read_bytes()).decode() for key in SECRET_KEYS}
        metadata: dict[str, str] = {"name": name, "namespace": namespace}
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": metadata, "data": data}
        try:
            if secret is None:
                cluster.create(info, body)
            else:
                metadata["resourceVersion"] = secret["metadata"]["resourceVersion"]
                cluster.replace(info, body)
            return files
        except ApiError as e:
            if e.status != 409:
                raise
            # another replica stored its certificate first: the next round takes that one
    raise OSError(f"could not agree on a serving certificate through Secret {namespace}/{name}")


@dataclass(frozen=True)
class ClientAuth:
    """Who may POST /validate: a client whose certificate verifies against `ca_file` and whose subject CN is one of
    `names` (no names: any certificate that CA signed). `ca_file` None: anyone who reaches the port (--no-client-auth).

    TLS asks for a certificate without requiring one (CERT_OPTIONAL), because the kubelet's probes of /healthz and
    /readyz present none; a certificate that is presented must verify, or the handshake fails. /validate itself
    refuses a connection without a verified certificate of an allowed name (`refusal`)."""

    ca_file: Path | None
    names: tuple[str, ...] = (API_SERVER_CLIENT,)

    @property
    def required(self) -> bool:
        return self.ca_file is not None

    def gunicorn_options(self) -> dict[str, Any]:
        if self.ca_file is None:
            return {"cert_reqs": ssl.CERT_NONE}
        return {"cert_reqs": ssl.CERT_OPTIONAL, "ca_certs": str(self.ca_file)}

    def refusal(self, peercert: Mapping[str, Any] | None) -> tuple[int, str] | None:
        """None when the connection may call /validate; else the HTTP status and the reason to answer with.
        `peercert` is what the TLS layer verified (ssl's getpeercert(): empty or None when nothing was presented)."""
        if not self.required:
            return None
        if not peercert:
            return 401, "a client certificate is required: only the API server may call /validate"
        name = common_name(peercert)
        if self.names and name not in self.names:
            return 403, f"client certificate {name!r} is not one of the allowed API server identities"
        return None


def common_name(peercert: Mapping[str, Any]) -> str:
    """The subject's CN as ssl.getpeercert() gives it: (("commonName", "x"),) among the subject's RDNs."""
    for rdn in peercert.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


class Reloading:
    """A server SSL context that serves the certificate files as they are now: every handshake looks at the files
    (a stat of each, a few microseconds; with keep-alive, handshakes are rare), and when they changed, the handshake
    and every later one use a context made afresh from them. Why not a restart of the workers, as gunicorn's reload
    would do: that drops every kept-alive connection of the API server at once, and needs a process to send the
    signal. A pair that cannot be loaded (the key renewed but not the certificate yet) keeps the last good one
    served, and is tried again at the next handshake."""

    def __init__(self, make: Callable[[], ssl.SSLContext], files: tuple[Path, ...]) -> None:
        self.make = make
        self.files = files
        self.lock = threading.Lock()
        self.seen = self._stamp()
        self.context = make()  # the listener's: its callback picks the context of each handshake
        self.current = self.context
        self.context.sni_callback = self._handshake

    def _stamp(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self.files:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append((0, 0, 0))
            else:
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def _handshake(self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        stamp = self._stamp()
        if stamp != self.seen:
            with self.lock:
                if stamp != self.seen:
                    try:
                        self.current = self.make()
                    except (OSError, ssl.SSLError, ValueError) as e:
                        log.error(
                            "the serving certificate changed but cannot be loaded (still serving the last): %s", e
                        )
                    else:
                        self.seen = stamp
                        log.info("serving the renewed certificate")
        if self.current is not self.context:
            ssl_object.context = self.current


def reloading(config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's `ssl_context_factory`: its own context (certificate, key, client CA, verify mode), reloaded as the
    certificate files change (Reloading)."""
    files = tuple(Path(f) for f in (config.ssl_certfile, config.ssl_keyfile) if f)
    return Reloading(default, files).context
