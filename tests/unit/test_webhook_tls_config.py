"""The webhook's own certificates, its settings, and the in-cluster manifests (its registration: test_webhookconfig)."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.core.webhookconfig import OBJECTS_ENTRY, SERVICE_NAME, webhook_configuration
from webhook import config, tls

HOSTS = ["gitops-webhook.gitops-system.svc", "gitops-webhook.gitops-system.svc.cluster.local", "127.0.0.1"]


# --- certificates ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[tls.CertFiles, bool]:
    """One set of certificates for the tests that only read them (key generation is the slow part)."""
    return tls.ensure(tmp_path_factory.mktemp("certs") / "tls", HOSTS)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def san_of(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))}


def test_ensure_makes_a_ca_a_leaf_and_its_key(made: tuple[tls.CertFiles, bool]) -> None:
    files, written = made
    assert written
    assert (files.ca.name, files.cert.name, files.key.name) == ("ca.crt", "tls.crt", "tls.key")
    assert all(p.exists() for p in (files.ca, files.cert, files.key))
    assert not list(files.ca.parent.glob("*.tmp"))


def test_the_leaf_names_every_host_in_its_san(made: tuple[tls.CertFiles, bool]) -> None:
    files, _ = made
    leaf = load(files.cert)
    assert san_of(leaf) == set(HOSTS)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "127.0.0.1" not in san.get_values_for_type(x509.DNSName)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == HOSTS[0]


def test_the_leaf_is_a_server_certificate_signed_by_the_ca(made: tuple[tls.CertFiles, bool]) -> None:
    files, _ = made
    ca, leaf = load(files.ca), load(files.cert)
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert tls.LEAF_VALIDITY <= lifetime <= tls.LEAF_VALIDITY + datetime.timedelta(minutes=10)


def test_the_private_keys_match_and_are_private(made: tuple[tls.CertFiles, bool]) -> None:
    files, _ = made
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert key.public_key() == load(files.cert).public_key()
    for path in (files.key, files.ca.parent / "ca.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_nothing_is_written_while_the_certificates_are_good(tmp_path: Path) -> None:
    files, first = tls.ensure(tmp_path, HOSTS)
    before = {p: p.read_bytes() for p in (files.ca, files.cert, files.key)}
    again, written = tls.ensure(tmp_path, HOSTS)
    assert first
    assert not written
    assert again == files
    assert {p: p.read_bytes() for p in (files.ca, files.cert, files.key)} == before


def test_a_subset_of_the_hosts_needs_no_new_certificate(made: tuple[tls.CertFiles, bool]) -> None:
    files, _ = made
    assert not tls.needs_renewal(files, HOSTS[:1])


@pytest.mark.parametrize(
    ("days_from_now", "renew"),
    [
        (0, False),
        (30, False),
        (59, False),
        (61, True),
        (89, True),
        (91, True),
        (400, True),
    ],
)
def test_renewal_is_due_within_renew_before_of_expiry(
    made: tuple[tls.CertFiles, bool], days_from_now: int, renew: bool
) -> None:
    files, _ = made
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days_from_now)
    assert tls.needs_renewal(files, HOSTS, at=at) is renew


def test_renewal_is_due_exactly_at_renew_before(made: tuple[tls.CertFiles, bool]) -> None:
    files, _ = made
    expiry = load(files.cert).not_valid_after_utc
    just_before = expiry - tls.RENEW_BEFORE - datetime.timedelta(seconds=1)
    assert not tls.needs_renewal(files, HOSTS, at=just_before)
    assert tls.needs_renewal(files, HOSTS, at=expiry - tls.RENEW_BEFORE + datetime.timedelta(seconds=1))


@pytest.mark.parametrize("missing", ["ca.crt", "tls.crt", "tls.key"])
def test_renewal_is_due_when_a_file_is_missing(tmp_path: Path, missing: str) -> None:
    files, _ = tls.ensure(tmp_path, HOSTS)
    (tmp_path / missing).unlink()
    assert tls.needs_renewal(files, HOSTS)
    _, written = tls.ensure(tmp_path, HOSTS)
    assert written
    assert san_of(load(files.cert)) == set(HOSTS)


def test_a_new_host_renews_the_leaf_and_keeps_the_ca(tmp_path: Path) -> None:
    files, _ = tls.ensure(tmp_path, HOSTS[:1])
    ca_before, leaf_before, key_before = files.ca.read_bytes(), files.cert.read_bytes(), files.key.read_bytes()
    ca_key_before = (tmp_path / "ca.key").read_bytes()
    assert tls.needs_renewal(files, HOSTS)
    _, written = tls.ensure(tmp_path, HOSTS)
    assert written
    assert files.ca.read_bytes() == ca_before
    assert (tmp_path / "ca.key").read_bytes() == ca_key_before
    assert files.cert.read_bytes() != leaf_before
    assert files.key.read_bytes() != key_before
    assert san_of(load(files.cert)) == set(HOSTS)
    load(files.cert).verify_directly_issued_by(load(files.ca))
    assert not tls.needs_renewal(files, HOSTS)


def test_without_the_ca_key_a_new_ca_is_made(tmp_path: Path) -> None:
    files, _ = tls.ensure(tmp_path, HOSTS[:1])
    ca_before = files.ca.read_bytes()
    (tmp_path / "ca.key").unlink()
    files.cert.unlink()
    tls.ensure(tmp_path, HOSTS)
    assert files.ca.read_bytes() != ca_before
    load(files.cert).verify_directly_issued_by(load(files.ca))


def test_a_leaf_without_a_san_needs_renewal(tmp_path: Path) -> None:
    files, _ = tls.ensure(tmp_path, HOSTS)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])])
    now = datetime.datetime.now(datetime.UTC)
    bare = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=90))
        .sign(key, hashes.SHA256())
    )
    files.cert.write_bytes(bare.public_bytes(serialization.Encoding.PEM))
    assert tls.needs_renewal(files, HOSTS)


# --- settings --------------------------------------------------------------------------------------------------------
def test_the_defaults() -> None:
    loaded = config.load(environ={})
    assert loaded == config.WebhookSettings()
    assert loaded.max_request_bytes == 8 * 1024 * 1024
    assert loaded.namespace == "gitops-system"
    assert loaded.retention is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.namespace = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "raw", "field", "value"),
    [
        ("NAMESPACE", "ops", "namespace", "ops"),
        ("EXEMPT_USERS", "a, b,,", "exempt_users", frozenset({"a", "b"})),
        ("MAX_REQUEST_BYTES", "1024", "max_request_bytes", 1024),
        ("REFRESH_SECONDS", "5", "refresh_seconds", 5.0),
        ("POLL_SECONDS", "0.25", "poll_seconds", 0.25),
        ("LOAD_TIMEOUT_SECONDS", "30", "load_timeout_seconds", 30.0),
        ("RETAIN_DAYS", "30", "retain_days", 30.0),
    ],
)
def test_environment_variables_are_read_as_their_settings_type(name: str, raw: str, field: str, value: Any) -> None:
    loaded = config.load(environ={f"GITOPS_WEBHOOK_{name}": raw})
    assert getattr(loaded, field) == value
    assert type(getattr(loaded, field)) is type(value)


@pytest.mark.parametrize(("name", "raw"), [("MAX_REQUEST_BYTES", "8MB"), ("POLL_SECONDS", "-1"), ("RETAIN_DAYS", "x")])
def test_a_value_that_does_not_parse_is_an_error_naming_its_variable(name: str, raw: str) -> None:
    with pytest.raises(config.SettingsError, match=f"GITOPS_WEBHOOK_{name}="):
        config.load(environ={f"GITOPS_WEBHOOK_{name}": raw})


def test_precedence_is_defaults_then_environment_then_overrides() -> None:
    environ = {"GITOPS_WEBHOOK_NAMESPACE": "from-env", "GITOPS_WEBHOOK_POLL_SECONDS": "9"}
    loaded = config.load({"NAMESPACE": "from-override"}, environ=environ)
    assert loaded.namespace == "from-override"
    assert loaded.poll_seconds == 9.0
    assert loaded.refresh_seconds == config.WebhookSettings().refresh_seconds


def test_only_prefixed_known_settings_are_read() -> None:
    environ = {"NAMESPACE": "unprefixed", "GITOPS_WEBHOOK_UNKNOWN": "x", "gitops_webhook_namespace": "lowercase"}
    assert config.load(environ=environ) == config.WebhookSettings()


def test_an_explicit_environ_replaces_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITOPS_WEBHOOK_NAMESPACE", "from-process")
    assert config.load(environ={}).namespace == "gitops-system"
    assert config.load().namespace == "from-process"


def test_an_unknown_override_is_an_error_not_ignored() -> None:
    with pytest.raises(config.SettingsError, match="no webhook setting 'BACKGROUND'"):
        config.load({"BACKGROUND": False}, environ={})


def test_audit_retention_comes_from_the_settings() -> None:
    assert config.load({}, environ={}).retention is None  # no bound set: retention never runs
    environ = {"GITOPS_WEBHOOK_RETAIN_RECORDS": "5000", "GITOPS_WEBHOOK_RETAIN_DAYS": "30"}
    policy = config.load(environ=environ).retention
    assert policy is not None
    assert (policy.records, policy.max_age, policy.max_bytes) == (5000, datetime.timedelta(days=30), 0)


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ("", set()),
        ("alice", {"alice"}),
        (" alice , bob ,,", {"alice", "bob"}),
        ("system:serviceaccount:ci:deployer,alice", {"system:serviceaccount:ci:deployer", "alice"}),
    ],
)
def test_csv(raw: str, names: set[str]) -> None:
    assert config.csv(raw) == frozenset(names)


# --- the in-cluster manifests agree with the program they run --------------------------------------------------------
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "webhook"


def _manifest(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((MANIFESTS / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_deployment_runs_gitops_webhook_with_options_it_has() -> None:
    from webhook.cli import main

    container = _manifest("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    context = main.make_context("gitops-webhook", list(container["args"]))  # raises on an unknown or bad option
    params = context.params
    assert params["kubeconfig"] is None  # in a pod: its ServiceAccount
    assert params["cert_secret"], "replicas must share one certificate"
    namespace = params["namespace"]
    for host in (f"{SERVICE_NAME}.{namespace}.svc", f"{SERVICE_NAME}.{namespace}.svc.cluster.local"):
        assert host in params["hosts"], "the serving certificate must name the Service the API server calls"
    port = int(params["listen"].rpartition(":")[2])
    assert {"name": "https", "containerPort": port} in container["ports"]
    # Traffic once a first load was tried (a replica that cannot judge still fails closed): /servingz, not /readyz.
    assert container["readinessProbe"]["httpGet"] == {"path": "/servingz", "port": "https", "scheme": "HTTPS"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}


def test_the_deployment_answers_only_the_api_server() -> None:
    from webhook.cli import main

    spec = _manifest("deployment.yaml")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    params = main.make_context("gitops-webhook", list(container["args"])).params
    assert not params["no_client_auth"]
    ca = params["client_ca_file"]
    mount = next(m for m in container["volumeMounts"] if str(ca).startswith(m["mountPath"] + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "gitops-webhook-client-ca"
    assert not volume["configMap"].get("optional"), "without the CA the pod must not start"
    assert params["client_names"] == ("kube-apiserver-webhook-client",)


def test_the_network_policy_admits_only_the_api_servers_block_to_the_webhook_port() -> None:
    policy = _manifest("networkpolicy.yaml")
    deployment = _manifest("deployment.yaml")
    assert "networkpolicy.yaml" in _manifest("kustomization.yaml")["resources"]
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": "https"}]
    assert [list(source) for source in rule["from"]] == [["ipBlock"]]  # no pod or namespace selector: no pods
    assert "0.0.0.0/0" not in str(rule)


def test_the_service_is_what_the_registration_calls() -> None:
    service = _manifest("service.yaml")
    deployment = _manifest("deployment.yaml")
    assert service["metadata"]["name"] == SERVICE_NAME
    assert {"name": "https", "port": 443, "targetPort": "https"} in service["spec"]["ports"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    registration = webhook_configuration(ca_bundle=b"ca", resources=[])
    [client] = [hook["clientConfig"] for hook in registration["webhooks"] if hook["name"] == OBJECTS_ENTRY]
    assert client["service"]["port"] == 443
    assert client["service"]["name"] == service["metadata"]["name"]
