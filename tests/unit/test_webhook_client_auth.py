"""Only the API server may call /validate: it presents a client certificate, the webhook verifies it (webhook.tls
ClientAuth, webhook.asgi). Served for real over TLS (tests/unit/webhook_server.py), probes without a certificate."""

from __future__ import annotations

import json
import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from localcluster import pki

from webhook import tls
from webhook.cli import Server, main

from .test_webhook_app import review, with_image
from .test_webhook_server import Running, api_server_client, request, server


@dataclass(frozen=True)
class Served:
    running: Running
    directory: Path  # certs/ (the serving CA), client-pki/ (the CA of the API server's client certificate)

    def context(self, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
        """A context that trusts the webhook's serving CA, presenting the given client certificate or none."""
        context = ssl.create_default_context(cafile=str(self.directory / "certs" / "ca.crt"))
        if cert is not None and key is not None:
            context.load_cert_chain(str(cert), str(key))
        return context

    def connect(self, context: ssl.SSLContext) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.running.port), timeout=20)
        return context.wrap_socket(raw, server_hostname="127.0.0.1")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("client-auth")
    with server(directory) as running:
        yield Served(running, directory)


DRIFT = json.dumps(review(obj=with_image("registry.example/evil:1"))).encode()


def test_without_a_client_certificate_validate_is_refused_and_probes_are_answered(served: Served) -> None:
    with served.connect(served.context()) as s:
        status, headers, body = request(s, "POST", "/validate", DRIFT)
        assert status == 401
        answer = json.loads(body)
        assert "response" not in answer
        assert "apiVersion" not in answer
        assert "only the API server may call /validate" in answer["reason"]
        assert headers.get("connection") == "close"
    for path, expected in (("/healthz", {200}), ("/readyz", {200, 503}), ("/metrics", {200})):
        with served.connect(served.context()) as s:
            assert request(s, "GET", path)[0] in expected, path


def test_the_api_servers_certificate_gets_an_answer(served: Served) -> None:
    with served.running.connect() as s:  # the context of webhook_server's tests presents the API server's certificate
        status, _, body = request(s, "POST", "/validate", DRIFT)
    assert status == 200
    answer = json.loads(body)
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["allowed"] is False


def test_a_certificate_of_the_same_ca_with_another_name_is_refused(served: Served, tmp_path: Path) -> None:
    # The local cluster's CA also signs people's certificates (alice): hers must not pass for the API server's.
    ca = pki.CertificateAuthority.load(served.directory / "client-pki")
    alice = ca.issue_client(tmp_path, pki.Identity("alice", "alice", ("developers",)))
    with served.connect(served.context(alice.cert, alice.key)) as s:
        status, _, body = request(s, "POST", "/validate", DRIFT)
    assert status == 403
    assert "'alice' is not one of the allowed API server identities" in json.loads(body)["reason"]


def test_a_certificate_from_another_ca_fails_the_handshake(served: Served, tmp_path: Path) -> None:
    other = api_server_client(tmp_path / "other-ca")  # the right name, the wrong CA
    context = served.context(other.cert, other.key)
    with pytest.raises((ssl.SSLError, ConnectionError)), served.connect(context) as s:
        # TLS 1.3: the client finishes its handshake first; the server's alert arrives on the first read.
        request(s, "POST", "/validate", DRIFT)


@pytest.mark.parametrize(
    ("peercert", "names", "expected"),
    [
        (None, ("apiserver",), 401),
        ({}, ("apiserver",), 401),
        ({"subject": ((("commonName", "alice"),),)}, ("apiserver",), 403),
        ({"subject": ((("organizationName", "x"),), (("commonName", "apiserver"),))}, ("apiserver",), None),
        ({"subject": ((("commonName", "b"),),)}, ("a", "b"), None),
        ({"subject": ((("commonName", "anyone"),),)}, (), None),
    ],
)
def test_refusal(peercert: dict[str, object] | None, names: tuple[str, ...], expected: int | None) -> None:
    refusal = tls.ClientAuth(Path("ca.crt"), names).refusal(peercert)
    assert (refusal[0] if refusal else None) == expected


def test_without_a_ca_anyone_may_call() -> None:
    off = tls.ClientAuth(None, ())
    assert off.refusal(None) is None
    assert off.gunicorn_options() == {"cert_reqs": ssl.CERT_NONE}
    on = tls.ClientAuth(Path("/ca.crt"))
    assert on.gunicorn_options() == {"cert_reqs": ssl.CERT_OPTIONAL, "ca_certs": "/ca.crt"}
    assert Server({"bind": "x"}, lambda: None, on).options["cert_reqs"] == ssl.CERT_OPTIONAL


def test_the_command_refuses_to_start_without_client_authentication(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--cert-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "--client-ca-file is required" in result.output
    (tmp_path / "ca.crt").write_text("x")
    both = CliRunner().invoke(
        main, ["--cert-dir", str(tmp_path), "--client-ca-file", str(tmp_path / "ca.crt"), "--no-client-auth"]
    )
    assert both.exit_code == 2
    assert "contradict" in both.output


def test_no_client_auth_is_said_loudly(caplog: pytest.LogCaptureFixture) -> None:
    from webhook.cli import _client_auth

    with caplog.at_level(logging.WARNING, logger="gitops-webhook"):
        auth = _client_auth(None, (tls.API_SERVER_CLIENT,), True)
    assert not auth.required
    assert "CLIENT AUTHENTICATION IS OFF" in caplog.text
    ca = Path(__file__)  # any file
    assert _client_auth(ca, ("a,b", "c"), False).names == ("a", "b", "c")
