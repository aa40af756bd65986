"""Certificates and keys for a local control plane, made with `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Identity:
    """A client-certificate user: the API server takes CN as the user name and each O as a group."""

    name: str
    user: str
    groups: tuple[str, ...]


IDENTITIES = (
    Identity("admin", "admin", ("system:masters",)),
    Identity("alice", "alice", ("developers",)),
    Identity("gitops", "gitops-sync", ("gitops:sync",)),
    Identity("breakglass", "oncall", ("developers", "gitops:break-glass")),
    Identity("controller-manager", "system:kube-controller-manager", ()),
)
# A node's components (`up --node`): the kubelet as the Node authorizer knows it, the scheduler and kube-proxy with
# their built-in roles, and the API server when it calls the kubelet.
NODE_IDENTITIES = (
    Identity("kubelet", "system:node:127.0.0.1", ("system:nodes",)),
    Identity("kube-scheduler", "system:kube-scheduler", ()),
    Identity("kube-proxy", "system:kube-proxy", ()),
)
APISERVER_KUBELET_CLIENT = Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ())
# What the API server presents to admission webhooks (its admission config's kubeconfig): no user of the cluster.
WEBHOOK_CLIENT = Identity("apiserver-webhook-client", "kube-apiserver-webhook-client", ())


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


class CertificateAuthority:
    """A self-signed CA that signs serving and client certificates."""

    def __init__(self, directory: Path, common_name: str = "kubectl-gitops local cluster CA") -> None:
        self.key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self.name = name
        self.cert = (
            _builder(name, name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.pair = KeyPair(directory / "ca.crt", directory / "ca.key")
        _write_cert(self.cert, self.pair.cert)
        _write_key(self.key, self.pair.key)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """The CA an earlier run wrote to `directory` (ca.crt, ca.key), to sign more with it."""
        ca = cls.__new__(cls)
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        ca.key = key
        ca.cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        ca.name = ca.cert.subject
        ca.pair = KeyPair(directory / "ca.crt", directory / "ca.key")
        return ca

    def _issue(
        self,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        directory: Path,
        stem: str,
        san: x509.SubjectAlternativeName | None = None,
    ) -> KeyPair:
        key = _new_key()
        builder = (
            _builder(subject, self.name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        pair = KeyPair(directory / f"{stem}.crt", directory / f"{stem}.key")
        _write_cert(cert, pair.cert)
        _write_key(key, pair.key)
        return pair

    def issue_server(self, directory: Path, stem: str, dns_names: list[str], ips: list[str]) -> KeyPair:
        san = x509.SubjectAlternativeName(
            [x509.DNSName(d) for d in dns_names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        )
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])])
        return self._issue(subject, ExtendedKeyUsageOID.SERVER_AUTH, directory, stem, san)

    def issue_client(self, directory: Path, identity: Identity) -> KeyPair:
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in identity.groups]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, identity.user))
        return self._issue(x509.Name(attributes), ExtendedKeyUsageOID.CLIENT_AUTH, directory, identity.name)


def write_signing_key(private: Path, public: Path) -> None:
    """The service-account token signing key and its public half (what the API server verifies tokens with)."""
    key = _new_key()
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
