"""gunicorn serving the webhook as `gitops-webhook` does (webhook.cli: the same options, the webhook's own worker and
front), on fakes of Git's state and the audit log, for tests/unit/test_webhook_server.py.

Run as `python -m tests.unit.webhook_server PORT CERT_DIR KEEPALIVE_SECONDS [REQUEST_SECONDS]`. A request naming
SLOW_REVISION waits SLOW_SECONDS for "Git", in the pool. A body containing BUG_NOW makes the front fail on the event
loop, one containing BUG_LATER makes it fail in the pool, one containing BUG_ANSWER makes the pool give an answer
that cannot be sent. TEST_WORKER_CONNECTIONS in the environment sets gunicorn's
worker_connections; TEST_CLIENT_CA is the CA whose client certificates (CN kube-apiserver-webhook-client) may
call /validate.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from engine.core.admission import Found
from engine.core.objects import Claim, ObjectKey
from webhook import tls, worker
from webhook.app import create_app
from webhook.cli import Server, gunicorn_options
from webhook.front import Answer, Front, Later

from .test_webhook_app import FakeAudit, FakeSource, git_objects

SLOW_REVISION = "e" * 40
SLOW_SECONDS = 1.0
BUG_NOW = b"bug-on-the-loop"
BUG_LATER = b"bug-in-the-pool"
BUG_ANSWER = b"bug-in-the-answer"


class SlowGit(FakeSource):
    def lookup(self, key: ObjectKey, revision: str = "", claims: tuple[Claim, ...] = ()) -> Found:
        if revision == SLOW_REVISION:
            time.sleep(SLOW_SECONDS)
        return super().lookup(key, revision, claims)

    def answers_at_once(self, key: ObjectKey, revision: str = "", claims: tuple[Claim, ...] = ()) -> bool:
        return revision != SLOW_REVISION


class BuggyFront(Front):
    def validate(self, raw: bytes) -> Answer | Later:
        if BUG_NOW in raw:
            raise RuntimeError("a bug on the loop")
        if BUG_LATER in raw:

            def fail() -> Answer:
                raise RuntimeError("a bug in the pool")

            return fail
        if BUG_ANSWER in raw:
            return lambda: (200, {"not JSON": {1, 2}})
        return super().validate(raw)


def main(port: int, cert_dir: Path, keepalive: int, request_seconds: float | None) -> None:
    if request_seconds is not None:
        worker.REQUEST_SECONDS = request_seconds
    files, _ = tls.ensure(cert_dir, ["127.0.0.1"])
    options = gunicorn_options(f"127.0.0.1:{port}", 1, 4, files)
    options["keepalive"] = keepalive
    options["worker_connections"] = int(os.environ.get("TEST_WORKER_CONNECTIONS", "1000"))

    def load() -> BuggyFront:
        app = create_app(
            config={"BACKGROUND": False, "MAX_REQUEST_BYTES": 1_000_000},
            source=SlowGit(git_objects()),
            audit=FakeAudit(),
        )
        return BuggyFront(app)

    Server(options, load, tls.ClientAuth(Path(os.environ["TEST_CLIENT_CA"]))).run()


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else None)
