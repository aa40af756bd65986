"""The webhook served for real, as `gitops-webhook` serves it: gunicorn with the options of webhook.cli, uvicorn's
worker with the webhook's protocol (webhook.server) and ASGI app (webhook.asgi), TLS with the webhook's own
certificates; on fakes of Git and the audit log (tests/unit/webhook_server.py), so that no cluster is needed. Clients
are raw TLS sockets."""

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from localcluster import pki

from engine.core.objects import REVISION_ANNOTATION
from webhook import tls

from .test_webhook_app import assert_well_formed, deployment, review, with_image
from .webhook_server import (
    BUG_ANSWER,
    BUG_LATER,
    BUG_NOW,
    SLOW_AUDIT,
    SLOW_REVISION,
    WAITING_FOR_AUDIT,
    WAITING_FOR_GIT,
)

ROOT = Path(__file__).resolve().parents[2]
Response = tuple[int, dict[str, str], bytes]
WAIT_SECONDS = 30.0  # for an event of the server: a bound, never a pace


def wait_until(condition: Callable[[], bool], what: str, seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


@dataclass
class Lines:
    """What a stream of the server says, line by line, read as it comes."""

    lines: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def follow(self, stream: IO[bytes]) -> None:
        for raw in stream:
            with self.changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.changed.notify_all()

    def wait_for(self, line: str, count: int = 1) -> None:
        """Until the server has said `line` `count` times in all."""
        with self.changed:
            if not self.changed.wait_for(lambda: self.lines.count(line) >= count, WAIT_SECONDS):
                raise AssertionError(f"the server never said {line!r} ({count} times): {self.lines[-20:]}")


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    context: ssl.SSLContext
    out: Lines
    err: Lines

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

    def release(self) -> None:
        """Lets one request waiting for "Git" or "the audit log" go on."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def accepting(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
        except ConnectionRefusedError:
            return False
        return True


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
    tmp: Path,
    keepalive: int = 30,
    request_seconds: float | None = None,
    connections: int = 1000,
    handshake_seconds: float | None = None,
) -> Iterator[Running]:
    files, _ = tls.ensure(tmp / "certs", ["127.0.0.1"])
    client = api_server_client(tmp / "client-pki")  # the webhook answers /validate only to "the API server"
    port = free_port()
    argv = [sys.executable, "-m", "tests.unit.webhook_server", str(port), str(tmp / "certs"), str(keepalive)]
    argv += [str(request_seconds)] if request_seconds is not None else []
    env = {**os.environ, "TEST_WORKER_CONNECTIONS": str(connections), "TEST_CLIENT_CA": str(client.ca)}
    if handshake_seconds is not None:
        env["TEST_HANDSHAKE_SECONDS"] = str(handshake_seconds)
    pipe = subprocess.PIPE
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=pipe, stdout=pipe, stderr=pipe, env=env, start_new_session=True)
    out, err = Lines(), Lines()
    readers = [
        threading.Thread(target=o.follow, args=(s,), daemon=True) for o, s in ((out, proc.stdout), (err, proc.stderr))
    ]
    for reader in readers:
        reader.start()
    running = Running(proc, port, ssl.create_default_context(cafile=str(files.ca)), out, err)
    running.context.load_cert_chain(str(client.cert), str(client.key))
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the webhook did not start: {err.lines[-30:]}")
            try:
                with running.connect() as s:
                    return request(s, "GET", "/healthz")[0] == 200
            except OSError:
                return False

        wait_until(up, "the webhook answers /healthz")
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the arbiter and its worker
        proc.wait()
        for reader in readers:
            reader.join(timeout=30)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            assert stream is not None
            with contextlib.suppress(OSError):
                stream.close()


def send(sock: socket.socket, method: str, path: str, body: bytes = b"") -> None:
    head = f"{method} {path} HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
    sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)


class Responses:
    """Reads responses with a Content-Length off one socket, keeping what arrives beyond the one asked for."""

    def __init__(self, sock: socket.socket, head: bool = False) -> None:
        self.sock = sock
        self.data = b""
        self.head = head  # answers to HEAD: no body, whatever the Content-Length

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
        length = 0 if self.head else int(headers.get("content-length", "0"))
        while len(rest) < length:
            if not self._fill():
                raise ConnectionError("closed inside a body")
            head, _, rest = self.data.partition(b"\r\n\r\n")
        self.data = rest[length:]
        return int(status_line.split()[1]), headers, rest[:length]

    def rest(self) -> list[Response]:
        """Every response until the server closes the connection (cleanly: a reset is an error)."""
        got = []
        while (response := self.next()) is not None:
            got.append(response)
        return got


def receive(sock: socket.socket) -> Response:
    """One HTTP/1.1 response with a Content-Length, read off the socket."""
    response = Responses(sock).next()
    if response is None:
        raise ConnectionError("closed before an answer")
    return response


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


def closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (a clean end, or a reset): nothing more to read."""
    sock.settimeout(20)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


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


# --- keep-alive, pipelining, waiting requests -------------------------------------------------------------------------


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
        responses = Responses(s)
        for uid in ("first", "second"):
            response = responses.next()
            assert response is not None
            assert assert_well_formed(json.loads(response[2]), uid)["allowed"] is True


@pytest.mark.parametrize(
    ("slow", "waiting"),
    [
        (slow_review(), WAITING_FOR_GIT),
        (review(uid=f"{SLOW_AUDIT}-1", obj=with_image("evil:1")), WAITING_FOR_AUDIT),
    ],
    ids=["git-load", "audit-write"],
)
def test_a_waiting_request_holds_up_no_other_connection(shared: Running, slow: dict[str, Any], waiting: str) -> None:
    before = shared.out.lines.count(waiting)
    with shared.connect() as blocked, shared.connect() as fast:
        send(blocked, "POST", "/validate", json.dumps(slow).encode())
        shared.out.wait_for(waiting, before + 1)  # it waits, in the pool
        for i in range(5):
            status, _, body = validate(fast, review(uid=f"fast-{i}"))
            assert status == 200
            assert assert_well_formed(json.loads(body), f"fast-{i}")["allowed"] is True
        shared.release()
        status, _, body = receive(blocked)
        assert status == 200
        assert json.loads(body)["response"]["uid"] == slow["request"]["uid"]


def test_pipelined_answers_keep_their_order_behind_one_that_waits(shared: Running) -> None:
    before = shared.out.lines.count(WAITING_FOR_GIT)
    with shared.connect() as s:
        for body in (slow_review("slow"), review(uid="after")):
            send(s, "POST", "/validate", json.dumps(body).encode())
        shared.out.wait_for(WAITING_FOR_GIT, before + 1)
        shared.release()
        responses = Responses(s)
        uids = [json.loads(r[2])["response"]["uid"] for r in (responses.next(), responses.next()) if r is not None]
        assert uids == ["slow", "after"]


def test_thousands_of_pipelined_requests_in_one_send_are_all_answered(shared: Running) -> None:
    count = 3000  # about 110 KB in one send
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


# --- what is served, and how bad requests are answered -------------------------------------------------------------


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


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/validate", 405), ("GET", "/nowhere", 404)])
def test_wrong_methods_and_paths(shared: Running, method: str, path: str, status: int) -> None:
    with shared.connect() as s:
        got, headers, _ = request(s, method, path)
        assert got == status
        if status == 405:
            assert headers["allow"] == "POST"
        assert request(s, "GET", "/healthz")[0] == 200  # the connection goes on


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"POST /validate HTTP/1.1\r\nHost: w\r\nContent-Length: 9\r\n\r\n{not json",
    ],
)
def test_bad_requests_get_a_400_and_the_webhook_goes_on(shared: Running, raw: bytes) -> None:
    with shared.connect() as s:
        s.sendall(raw)
        assert receive(s)[0] == 400
    with shared.connect() as s:
        assert validate(s, review())[0] == 200


@pytest.mark.parametrize("marker", [BUG_NOW, BUG_LATER, BUG_ANSWER])
def test_a_bug_while_answering_is_a_500_and_the_connection_goes_on(shared: Running, marker: bytes) -> None:
    with shared.connect() as s:
        status, _, body = request(s, "POST", "/validate", b'{"x": "' + marker + b'"}')
        assert status == 500
        assert json.loads(body) == {"error": "internal error"}
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


# --- bodies: chunked, Expect, the limit ---------------------------------------------------------------------------


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


def test_expect_100_continue_is_honoured(shared: Running) -> None:
    body = json.dumps(review(uid="expecting")).encode()
    with shared.connect() as s:
        s.sendall(
            b"POST /validate HTTP/1.1\r\nHost: w\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        assert assert_well_formed(json.loads(receive(s)[2]), "expecting")["allowed"] is True


@pytest.mark.parametrize("path", ["/validate", "/healthz"])
def test_a_declared_length_over_the_limit_is_refused_with_413_unread(shared: Running, path: str) -> None:
    with shared.connect() as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: w\r\nContent-Length: 2000000\r\n\r\n".encode())
        status, headers, body = receive(s)  # without sending a byte of the body
        assert status == 413
        assert "larger than 1000000 bytes" in json.loads(body)["reason"]
        assert headers["connection"] == "close"
        assert closed(s)


def test_a_chunked_body_over_the_limit_is_refused_with_413_and_the_connection_closed(shared: Running) -> None:
    chunk = b"x" * 60_000
    with shared.connect() as s:
        s.sendall(b"POST /validate HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\n")
        with contextlib.suppress(OSError):
            for _ in range(17):  # 1.02 MB, over the server's 1 MB
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, headers, body = receive(s)
        assert status == 413
        assert "larger than 1000000 bytes" in json.loads(body)["reason"]
        assert headers["connection"] == "close"


# --- request smuggling: a body's framing is never ambiguous -------------------------------------------------------

SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: w\r\n\r\n"
AFTER = b"0\r\n\r\n" + SMUGGLED  # a chunked body's end, then a second request


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(AFTER),
        b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(AFTER),
        b"Content-Length: %d\r\nContent-Length: 5\r\n" % len(AFTER),
        b"Content-Length: %d\r\nTransfer-Encoding: gzip, chunked\r\n" % len(AFTER),
        b"Content-Length: %d\r\nTransfer-Encoding: xchunked\r\n" % len(AFTER),
    ],
    ids=["cl-then-te", "te-then-cl", "two-lengths", "te-list", "te-unknown"],
)
def test_conflicting_framing_lets_no_second_request_through(shared: Running, head: bytes) -> None:
    with shared.connect() as s:
        s.sendall(b"POST /validate HTTP/1.1\r\nHost: w\r\n" + head + b"\r\n" + AFTER)
        answers = Responses(s)
        first = answers.next()
        assert first is not None
        assert first[0] == 400
        assert first[1]["connection"] == "close"
        with contextlib.suppress(ConnectionResetError, ssl.SSLError):
            assert answers.next() is None  # nothing answered the smuggled request: the connection closed
    with shared.connect() as s:
        assert validate(s, review())[0] == 200


# --- HTTP/1.0 and HEAD ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("connection", [b"", b"Connection: keep-alive\r\n"])
def test_http_1_0_is_answered_and_closed(shared: Running, connection: bytes) -> None:
    with shared.connect() as s:
        s.sendall(b"GET /healthz HTTP/1.0\r\n" + connection + b"\r\n")
        status, headers, body = receive(s)
        assert status == 200
        assert json.loads(body) == {"status": "ok"}
        assert headers["connection"] == "close"
        assert closed(s)


def test_head_gets_the_headers_a_get_would_have_and_no_body(shared: Running) -> None:
    with shared.connect() as s:
        got = request(s, "GET", "/readyz")
        s.sendall(b"HEAD /readyz HTTP/1.1\r\nHost: w\r\n\r\nGET /healthz HTTP/1.1\r\nHost: w\r\n\r\n")
        responses = Responses(s, head=True)
        head = responses.next()
        assert head is not None
        assert head[0] == 200
        assert head[1]["content-length"] == str(len(got[2]))
        responses.head = False
        after = responses.next()  # right after the head: no body came between
        assert after is not None
        assert (after[0], json.loads(after[2])) == (200, {"status": "ok"})


# --- timeouts --------------------------------------------------------------------------------------------------------


def test_an_idle_connection_is_closed_after_the_keepalive(tmp_path: Path) -> None:
    with server(tmp_path, keepalive=1) as running, running.connect() as s:
        assert validate(s, review())[0] == 200
        assert closed(s)
        with running.connect() as silent:  # a connection that never sends a byte
            assert closed(silent)


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
        assert closed(s)
        with running.connect() as other:
            assert validate(other, review())[0] == 200


def test_a_slowloris_that_keeps_sending_is_cut_off_all_the_same(tmp_path: Path) -> None:
    with server(tmp_path, request_seconds=1) as running, running.connect() as s:
        s.sendall(b"POST /validate HTTP/1.1\r\nHost: w\r\n")
        ended = False
        for i in range(200):  # a header line every 50 ms: 10 s at most, far past the 1 s deadline
            try:
                s.sendall(b"X-%d: y\r\n" % i)
            except OSError:
                ended = True
                break
            with contextlib.suppress(TimeoutError):
                s.settimeout(0.05)
                if s.recv(1) == b"":
                    ended = True
                    break
        assert ended


@pytest.mark.parametrize("hello", [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"], ids=["silent", "half-hello"])
def test_a_connection_that_never_finishes_its_handshake_holds_up_nobody_and_is_closed(
    tmp_path: Path, hello: bytes
) -> None:
    with (
        server(tmp_path, handshake_seconds=1) as running,
        socket.create_connection(("127.0.0.1", running.port), timeout=20) as stalled,
    ):
        stalled.sendall(hello)
        with running.connect() as other:
            assert validate(other, review())[0] == 200
        assert closed(stalled)


def test_connections_beyond_the_limit_get_503_until_some_close(tmp_path: Path) -> None:
    with server(tmp_path, connections=2) as running, running.connect() as first:
        with running.connect() as second:
            assert validate(first, review())[0] == 200
            assert validate(second, review())[0] == 200
            with running.connect() as third:
                status, headers, _ = validate(third, review())
                assert status == 503
                assert headers["connection"] == "close"

        def served_again() -> bool:
            with running.connect() as again:
                return validate(again, review())[0] == 200

        wait_until(served_again, "the closed connections' places are free again")


# --- certificates --------------------------------------------------------------------------------------------------


def test_a_renewed_certificate_is_served_to_new_connections(tmp_path: Path) -> None:
    with server(tmp_path) as running, running.connect() as kept:
        before = kept.getpeercert(binary_form=True)
        certs = tmp_path / "certs"
        (certs / "tls.crt").unlink()
        files, renewed = tls.ensure(certs, ["127.0.0.1"])  # a new key and leaf, the same CA
        assert renewed
        new = ssl.PEM_cert_to_DER_cert(files.cert.read_text())
        with running.connect() as fresh:
            assert fresh.getpeercert(binary_form=True) == new != before
            assert validate(fresh, review())[0] == 200
        assert validate(kept, review())[0] == 200  # a kept-alive connection goes on with what it has


def test_a_renewal_half_written_keeps_the_last_good_certificate(tmp_path: Path) -> None:
    with server(tmp_path) as running:
        with running.connect() as s:
            before = s.getpeercert(binary_form=True)
        (tmp_path / "certs" / "tls.crt").write_text("not a certificate")
        with running.connect() as s:
            assert s.getpeercert(binary_form=True) == before
            assert validate(s, review())[0] == 200
        assert any("cannot be loaded" in line for line in running.err.lines)


# --- stopping ------------------------------------------------------------------------------------------------------


def test_sigterm_answers_the_request_in_flight_then_exits(tmp_path: Path) -> None:
    with server(tmp_path) as running, running.connect() as s:
        send(s, "POST", "/validate", json.dumps(slow_review()).encode())
        running.out.wait_for(WAITING_FOR_GIT)  # the request is in the pool, waiting for "Git"
        running.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: not running.accepting(), "the webhook stops accepting")
        running.release()
        status, headers, body = receive(s)
        assert status == 200
        assert assert_well_formed(json.loads(body), "slow")["allowed"] is True
        assert headers["connection"] == "close"
        assert closed(s)  # closed by the webhook
        s.close()
        assert running.proc.wait(timeout=30) == 0


def test_sigterm_closes_idle_connections_at_once(tmp_path: Path) -> None:
    with server(tmp_path) as running, running.connect() as idle:
        assert validate(idle, review())[0] == 200
        running.proc.send_signal(signal.SIGTERM)
        assert closed(idle)
        idle.close()  # the TLS close, answered
        assert running.proc.wait(timeout=10) == 0


def test_sigterm_sends_the_answers_a_slow_reader_has_not_read_yet(tmp_path: Path) -> None:
    one = b"GET /validate HTTP/1.1\r\nHost: w\r\n\r\n"
    with server(tmp_path) as running, running.connect(buffers=65536) as s:
        flood(s, one * 2000, 64 * 1024 * 1024)
        running.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: not running.accepting(), "the webhook stops accepting")
        answers = Responses(s).rest()  # to the end: every answer whole
        assert answers
        assert {status for status, _, _ in answers} == {405}
        s.close()
        assert running.proc.wait(timeout=30) == 0
