"""/healthz, /readyz and /metrics of the reconciler, on one small threaded WSGI server (the one prometheus_client
serves its own exporter with): probes and scrapes are a few requests a minute."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

Check = Callable[[], tuple[bool, str]]
StartResponse = Callable[..., Any]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds are no news
        pass


def probes_app(registry: CollectorRegistry, healthy: Check, ready: Check) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        check = {"/healthz": healthy, "/livez": healthy, "/readyz": ready}.get(path)
        if check is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: /healthz, /readyz and /metrics are served here\n"]
        ok, message = check()
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
        return [message.encode() + b"\n"]

    return app


def serve(address: str, port: int, app: Callable[..., Iterable[bytes]]) -> tuple[ThreadingWSGIServer, int]:
    """Serves `app` in a thread; returns the server and the port it listens on (0 picks a free one)."""
    server = make_server(address, port, app, ThreadingWSGIServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server, server.server_port
