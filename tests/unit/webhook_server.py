"""gunicorn serving the webhook as `gitops-webhook` does (webhook.cli: the same options, uvicorn's worker with the
webhook's protocol, webhook.asgi), on fakes of Git's state and the audit log, for tests/unit/test_webhook_server.py.

Run as `python -m tests.unit.webhook_server PORT CERT_DIR KEEPALIVE_SECONDS [REQUEST_SECONDS]`. A request naming
SLOW_REVISION waits for "Git", and a drift attempt whose uid starts with SLOW_AUDIT waits for "the audit log": each
says so on stdout (WAITING_FOR_GIT, WAITING_FOR_AUDIT) and waits until a line on stdin releases it. A body containing
BUG_NOW makes the app fail on the event loop, one containing BUG_LATER makes it fail in the pool, one containing
BUG_ANSWER makes the pool give an answer that cannot be sent. TEST_CLIENT_CA is the CA whose client certificates (CN
kube-apiserver-webhook-client) may call /validate; TEST_WORKER_CONNECTIONS sets gunicorn's worker_connections and
TEST_HANDSHAKE_SECONDS the TLS handshake's deadline.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.core.admission import Found
from engine.core.objects import Claim, ObjectKey
from webhook import server, tls
from webhook.app import create_app
from webhook.asgi import Answer, WebhookApp
from webhook.cli import Server, gunicorn_options

from .test_webhook_app import FakeAudit, FakeSource, git_objects

SLOW_REVISION = "e" * 40
SLOW_AUDIT = "slow-audit"
WAITING_FOR_GIT = "waiting-for-git"
WAITING_FOR_AUDIT = "waiting-for-audit"
BUG_NOW = b"bug-on-the-loop"
BUG_LATER = b"bug-in-the-pool"
BUG_ANSWER = b"bug-in-the-answer"


class Releases:
    """What the test sends on stdin: each line lets one waiting request go on."""

    def __init__(self) -> None:
        self.lines = threading.Semaphore(0)
        self.started = False
        self.lock = threading.Lock()

    def wait(self, event: str) -> None:
        with self.lock:  # read stdin in the worker process, once it needs it
            if not self.started:
                self.started = True
                threading.Thread(target=self._read, name="releases", daemon=True).start()
        print(event, flush=True)
        if not self.lines.acquire(timeout=60):
            raise RuntimeError(f"{event}: never released")

    def _read(self) -> None:
        for _ in sys.stdin:
            self.lines.release()


RELEASES = Releases()


class SlowGit(FakeSource):
    def lookup(self, key: ObjectKey, revision: str = "", claims: tuple[Claim, ...] = ()) -> Found:
        if revision == SLOW_REVISION:
            RELEASES.wait(WAITING_FOR_GIT)
        return super().lookup(key, revision, claims)

    def answers_at_once(self, key: ObjectKey, revision: str = "", claims: tuple[Claim, ...] = ()) -> bool:
        return revision != SLOW_REVISION


class SlowAudit(FakeAudit):
    def append(self, body: dict[str, Any], received: float | None = None) -> dict[str, Any]:
        if str(body.get("requestUID", "")).startswith(SLOW_AUDIT):
            RELEASES.wait(WAITING_FOR_AUDIT)
        return super().append(body, received)


class BuggyApp(WebhookApp):
    def judge(self, raw: bytes) -> Answer | Callable[[], Answer]:
        if BUG_NOW in raw:
            raise RuntimeError("a bug on the loop")
        if BUG_LATER in raw:

            def fail() -> Answer:
                raise RuntimeError("a bug in the pool")

            return fail
        if BUG_ANSWER in raw:
            return lambda: (200, {"not JSON": {1, 2}})
        return super().judge(raw)


def main(port: int, cert_dir: Path, keepalive: int, request_seconds: float | None) -> None:
    if request_seconds is not None:
        server.REQUEST_SECONDS = request_seconds
    if "TEST_HANDSHAKE_SECONDS" in os.environ:
        server.HANDSHAKE_SECONDS = float(os.environ["TEST_HANDSHAKE_SECONDS"])
    files, _ = tls.ensure(cert_dir, ["127.0.0.1"])
    options = gunicorn_options(f"127.0.0.1:{port}", 1, 4, files)
    options["keepalive"] = keepalive
    options["worker_connections"] = int(os.environ.get("TEST_WORKER_CONNECTIONS", "1000"))
    client_auth = tls.ClientAuth(Path(os.environ["TEST_CLIENT_CA"]))

    def load() -> BuggyApp:
        app = create_app(
            {"MAX_REQUEST_BYTES": 1_000_000},
            source=SlowGit(git_objects()),
            audit=SlowAudit(),
        )
        return BuggyApp(app, client_auth, threads=4)

    Server(options, load, client_auth).run()


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else None)
