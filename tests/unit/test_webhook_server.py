"""The webhook served for real, as `gitops-webhook` serves it: gunicorn with the options of webhook.cli, the webhook's
own worker (webhook.worker) and front, TLS with the webhook's own certificates; on fakes of Git and the audit log
(tests/unit/webhook_server.py), so that no cluster is needed. Clients are raw TLS sockets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from localcluster import pki

from engine.core.objects import REVISION_ANNOTATION
from webhook import tls

from .test_webhook_app import assert_well_formed, deployment, review, with_image
from .webhook_server import BUG_ANSWER, BUG_LATER, BUG_NOW, SLOW_REVISION

ROOT = Path(__file__).resolve().parents[2]
Response = tuple[int, dict[str, str], bytes]


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    context: ssl.SSLContext

    def connect(self, buffers: int = 0) -> ssl.SSLSocket:
        """A TLS connection; with `buffers`, the kernel's send and receive buffers of that size (no autotuning)."""
        raw = socket.socket()
        if buffers:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffers)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffers)
        raw.settimeout(20)
        try:
            raw.connect(("127.0.0.1", self.port))
            return self.context.wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise


@dataclass(frozen=True)
class ClientPki:
    ca: Path
    cert: Path
    key: Path


def api_server_client(directory: Path, name: str = tls.API_SERVER_CLIENT) -> ClientPki:
    """A CA and a client certificate it signed for `name`, as the local cluster makes the API server's."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = pki.CertificateAuthority(directory).issue_client(directory, pki.Identity(name, name, ()))
    return ClientPki(directory / "ca.crt", pair.cert, pair.key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(
    tmp: Path, keepalive: int = 30, request_seconds: float | None = None, connections: int = 1000
) -> Iterator[Running]:
    files, _ = tls.ensure(tmp / "certs", ["127.0.0.1"])
    client = api_server_client(tmp / "client-pki")  # the webhook answers /validate only to "the API server"
    port = free_port()
    argv = [sys.executable, "-m", "tests.unit.webhook_server", str(port), str(tmp / "certs"), str(keepalive)]
    argv += [str(request_seconds)] if request_seconds is not None else []
    env = {**os.environ, "TEST_WORKER_CONNECTIONS": str(connections), "TEST_CLIENT_CA": str(client.ca)}
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, env=env)
    running = Running(proc, port, ssl.create_default_context(cafile=str(files.ca)))
    running.context.load_cert_chain(str(client.cert), str(client.key))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with running.connect() as s:
                    if request(s, "GET", "/healthz")[0] == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    assert proc.stderr is not None
                    raise AssertionError(f"the webhook did not start: {proc.stderr.read()!r}") from None
                time.sleep(0.1)
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def send(sock: socket.socket, method: str, path: str, body: bytes = b"") -> None:
    head = f"{method} {path} HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
    sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)


def receive(sock: socket.socket) -> Response:
    """One HTTP/1.1 response with a Content-Length, read off the socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        rest += chunk
    return int(status_line.split()[1]), headers, rest


class Responses:
    """Reads pipelined responses off one socket, keeping what arrives beyond the one asked for."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.data += chunk
        return bool(chunk)

    def next(self) -> Response | None:
        """The next response; None at a clean end of the stream (an end inside a response is an error)."""
        while b"\r\n\r\n" not in self.data:
            if not self._fill():
                if self.data:
                    raise ConnectionError(f"closed inside a response head: {self.data[:200]!r}")
                return None
        head, _, rest = self.data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            if not self._fill():
                raise ConnectionError("closed inside a body")
            head, _, rest = self.data.partition(b"\r\n\r\n")
        self.data = rest[length:]
        return int(status_line.split()[1]), headers, rest[:length]


def flood(sock: socket.socket, chunk: bytes, most: int) -> int:
    """Sends `chunk` again and again without reading, until the server stops reading (a send makes no progress for
    2 s) or `most` bytes are out; returns how many bytes went out."""
    sock.settimeout(2)
    sent = 0
    with contextlib.suppress(TimeoutError):
        while sent < most:
            sock.sendall(chunk)
            sent += len(chunk)
    sock.settimeout(20)
    return sent


def request(sock: socket.socket, method: str, path: str, body: bytes = b"") -> Response:
    send(sock, method, path, body)
    return receive(sock)


def validate(sock: socket.socket, body: Any) -> Response:
    return request(sock, "POST", "/validate", json.dumps(body).encode())


def slow_review(uid: str = "slow") -> dict[str, Any]:
    obj = deployment()
    obj["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = SLOW_REVISION
    return review(obj=obj, uid=uid)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with server(tmp_path_factory.mktemp("webhook-server")) as running:
        yield running


def test_reviews_are_answered_over_one_kept_alive_connection(shared: Running) -> None:
    with shared.connect() as s:
        for uid in ("one", "two", "three"):
            status, headers, body = validate(s, review(uid=uid, obj=with_image("evil:1")))
            assert status == 200
            assert headers.get("connection", "keep-alive") != "close"
            answer = assert_well_formed(json.loads(body), uid)
            assert answer["allowed"] is False


def test_pipelined_reviews_are_all_answered_in_order(shared: Running) -> None:
    with shared.connect() as s:
        for uid in ("first", "second"):
            send(s, "POST", "/validate", json.dumps(review(uid=uid)).encode())
        assert assert_well_formed(json.loads(receive(s)[2]), "first")["allowed"] is True
        assert assert_well_formed(json.loads(receive(s)[2]), "second")["allowed"] is True


def test_a_request_waiting_for_git_holds_up_no_other_connection(shared: Running) -> None:
    answered: list[str] = []
    with shared.connect() as slow, shared.connect() as fast:
        send(slow, "POST", "/validate", json.dumps(slow_review()).encode())
        thread = threading.Thread(target=lambda: answered.append(json.loads(receive(slow)[2])["response"]["uid"]))
        thread.start()
        for i in range(5):
            validate(fast, review(uid=f"fast-{i}"))
            answered.append(f"fast-{i}")
        thread.join()
    assert answered == [*(f"fast-{i}" for i in range(5)), "slow"]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"POST /validate HTTP/1.1\r\nHost: w\r\nContent-Length: 9\r\n\r\n{not json", 400),
        (b"POST /validate HTTP/1.1\r\nHost: w\r\nContent-Length: 2000000\r\n\r\n", 400),
    ],
)
def test_bad_requests_get_a_400_and_the_webhook_goes_on(shared: Running, raw: bytes, status: int) -> None:
    with shared.connect() as s:
        s.sendall(raw)
        assert receive(s)[0] == status
    with shared.connect() as s:
        assert validate(s, review())[0] == 200


def test_a_client_that_leaves_mid_request_costs_nothing(shared: Running) -> None:
    with shared.connect() as s:
        s.sendall(b"POST /validate HTTP/1.1\r\nHost: w\r\nContent-Length: 100\r\n\r\n{")
    with socket.create_connection(("127.0.0.1", shared.port), timeout=10) as raw:
        raw.sendall(b"POST /validate HTTP/1.1\r\nHost: w\r\n\r\n")  # plain HTTP on the TLS port
        with contextlib.suppress(OSError):
            while raw.recv(65536):
                pass
    with shared.connect() as s:
        assert validate(s, review())[0] == 200


def test_health_and_metrics_are_served(shared: Running) -> None:
    with shared.connect() as s:
        assert request(s, "GET", "/healthz")[0] == 200
        status, _, body = request(s, "GET", "/readyz")
        assert status == 200
        assert json.loads(body)["ready"] is True
        status, headers, body = request(s, "GET", "/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain")
        assert b"gitops_webhook_decisions_total" in body


def test_sigterm_answers_the_request_in_flight_then_exits(tmp_path: Path) -> None:
    with server(tmp_path) as running, running.connect() as s:
        send(s, "POST", "/validate", json.dumps(slow_review()).encode())
        time.sleep(0.5)  # the request is in the pool, waiting for "Git"
        running.proc.send_signal(signal.SIGTERM)
        status, headers, body = receive(s)
        assert status == 200
        assert assert_well_formed(json.loads(body), "slow")["allowed"] is True
        assert headers["connection"] == "close"
        assert s.recv(1) == b""  # closed by the webhook
        s.close()
        assert running.proc.wait(timeout=30) == 0


def test_pipelined_answers_keep_their_order_behind_one_that_waits(shared: Running) -> None:
    with shared.connect() as s:
        for body in (slow_review("slow"), review(uid="after")):
            send(s, "POST", "/validate", json.dumps(body).encode())
        assert json.loads(receive(s)[2])["response"]["uid"] == "slow"
        assert json.loads(receive(s)[2])["response"]["uid"] == "after"


def test_a_chunked_review_is_read_whole(shared: Running) -> None:
    body = json.dumps(review(uid="chunked")).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 1000]), body[i : i + 1000]) for i in range(0, len(body), 1000)
    )
    with shared.connect() as s:
        s.sendall(b"POST /validate HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
        status, _, answer = receive(s)
        assert status == 200
        assert assert_well_formed(json.loads(answer), "chunked")["allowed"] is True


def test_a_chunked_body_over_the_limit_is_refused_and_the_connection_closed(shared: Running) -> None:
    chunk = b"x" * 60_000
    with shared.connect() as s:
        s.sendall(b"POST /validate HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\n")
        with contextlib.suppress(OSError):
            for _ in range(20):  # 1.2 MB, over the server's 1 MB
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, headers, body = receive(s)
        assert status == 400
        assert "larger than 1000000 bytes" in json.loads(body)["reason"]
        assert headers["connection"] == "close"


def test_expect_100_continue_is_honoured(shared: Running) -> None:
    body = json.dumps(review(uid="expecting")).encode()
    with shared.connect() as s:
        s.sendall(
            b"POST /validate HTTP/1.1\r\nHost: w\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        assert assert_well_formed(json.loads(receive(s)[2]), "expecting")["allowed"] is True


def test_http_1_0_is_answered_and_closed(shared: Running) -> None:
    with shared.connect() as s:
        s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        status, headers, _ = receive(s)
        assert status == 200
        assert headers["connection"] == "close"
        assert s.recv(1) == b""


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/validate", 405), ("GET", "/nowhere", 404)])
def test_wrong_methods_and_paths(shared: Running, method: str, path: str, status: int) -> None:
    with shared.connect() as s:
        got, headers, _ = request(s, method, path)
        assert got == status
        if status == 405:
            assert headers["allow"] == "POST"
        assert request(s, "GET", "/healthz")[0] == 200  # the connection goes on


def test_head_gets_headers_only(shared: Running) -> None:
    with shared.connect() as s:
        s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: w\r\n\r\n")
        head = s.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert head.endswith(b"\r\n\r\n")  # and no body
        assert request(s, "GET", "/healthz")[0] == 200


def test_an_idle_connection_is_closed_after_the_keepalive(tmp_path: Path) -> None:
    with server(tmp_path, keepalive=1) as running, running.connect() as s:
        assert validate(s, review())[0] == 200
        s.settimeout(10)
        assert s.recv(1) == b""


def test_sigterm_closes_idle_connections_at_once(tmp_path: Path) -> None:
    with server(tmp_path) as running, running.connect() as idle:
        assert validate(idle, review())[0] == 200
        running.proc.send_signal(signal.SIGTERM)
        idle.settimeout(5)
        assert idle.recv(1) == b""
        assert running.proc.wait(timeout=10) == 0


@pytest.mark.parametrize("marker", [BUG_NOW, BUG_LATER, BUG_ANSWER])
def test_a_bug_while_answering_is_a_500_and_the_connection_goes_on(shared: Running, marker: bytes) -> None:
    with shared.connect() as s:
        status, _, body = request(s, "POST", "/validate", b'{"x": "' + marker + b'"}')
        assert status == 500
        assert json.loads(body) == {"error": "internal error"}
        assert validate(s, review())[0] == 200


@pytest.mark.parametrize(
    "partial",
    [
        b"POST /validate HTTP/1.1\r\nHost: w\r\n",  # headers that never end
        b"POST /validate HTTP/1.1\r\nHost: w\r\nContent-Length: 100\r\n\r\n{",  # a body that never ends
    ],
)
def test_a_request_that_never_arrives_whole_is_cut_off(tmp_path: Path, partial: bytes) -> None:
    with server(tmp_path, request_seconds=1) as running, running.connect() as s:
        s.sendall(partial)
        s.settimeout(10)
        assert s.recv(1) == b""
        with running.connect() as other:
            assert validate(other, review())[0] == 200


def test_connections_beyond_the_limit_are_closed_and_the_others_served(tmp_path: Path) -> None:
    with server(tmp_path, connections=2) as running, running.connect() as first, running.connect() as second:
        assert validate(first, review())[0] == 200
        assert validate(second, review())[0] == 200
        with pytest.raises((OSError, ConnectionError)), running.connect() as third:
            validate(third, review())
        assert validate(first, review())[0] == 200
    with server(tmp_path / "again", connections=2) as running:
        for _ in range(5):  # closed ones free their place
            with running.connect() as s:
                assert validate(s, review())[0] == 200


def test_thousands_of_pipelined_requests_in_one_send_are_all_answered(shared: Running) -> None:
    count = 3000  # about 110 KB: more than the parser keeps after a request by default
    with shared.connect() as s:
        s.sendall(b"GET /validate HTTP/1.1\r\nHost: w\r\n\r\n" * count + b"GET /healthz HTTP/1.1\r\nHost: w\r\n\r\n")
        responses = Responses(s)
        statuses = [responses.next() for _ in range(count + 1)]
        assert [r[0] if r else None for r in statuses] == [405] * count + [200]


def test_a_client_that_does_not_read_its_answers_is_not_read_from(shared: Running) -> None:
    most = 64 * 1024 * 1024
    one = b"GET /validate HTTP/1.1\r\nHost: w\r\n\r\n"  # answered on the loop, 4 times as long as it
    with shared.connect(buffers=65536) as s:
        sent = flood(s, one * 2000, most)
        # The server stopped reading once its answers filled the buffers: a few MB of kernel buffers at most, where
        # without that it would read (and buffer answers in memory) for ever.
        assert sent < most // 4
    with shared.connect() as s:
        assert validate(s, review())[0] == 200


def test_sigterm_sends_the_answers_a_slow_reader_has_not_read_yet(tmp_path: Path) -> None:
    one = b"GET /validate HTTP/1.1\r\nHost: w\r\n\r\n"
    with server(tmp_path) as running, running.connect(buffers=65536) as s:
        flood(s, one * 2000, 64 * 1024 * 1024)
        running.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        responses = Responses(s)
        answered = 0
        while (response := responses.next()) is not None:  # to a clean end: no answer cut off, no reset
            assert response[0] == 405
            answered += 1
        assert answered > 2000
        assert running.proc.wait(timeout=30) == 0


def test_head_says_the_length_a_get_would_have(shared: Running) -> None:
    with shared.connect() as s:
        got = request(s, "GET", "/readyz")
        s.sendall(b"HEAD /readyz HTTP/1.1\r\nHost: w\r\n\r\n")
        head = s.recv(65536)
        assert f"Content-Length: {len(got[2])}\r\n".encode() in head
        assert head.endswith(b"\r\n\r\n")
        assert request(s, "GET", "/healthz")[0] == 200


def test_http_1_0_keep_alive_is_honoured(shared: Running) -> None:
    with shared.connect() as s:
        for _ in range(2):
            s.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, _ = receive(s)
            assert status == 200
            assert headers["connection"] == "keep-alive"


def test_keepalive_zero_serves_one_request_per_connection(tmp_path: Path) -> None:
    with server(tmp_path, keepalive=0) as running, running.connect() as s:
        status, headers, _ = validate(s, review())
        assert status == 200
        assert headers["connection"] == "close"
        assert s.recv(1) == b""
