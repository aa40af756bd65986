"""The webhook's HTTP server: uvicorn (httptools, uvloop) in gunicorn's arbiter through uvicorn-worker, serving
webhook.asgi; with what uvicorn lacks, added through the hooks it offers for them.

uvicorn parses HTTP/1.1 (keep-alive, pipelining answered in order, chunked bodies, `Expect: 100-continue`, HTTP/1.0,
HEAD; a request with both Content-Length and Transfer-Encoding is refused with 400 and the connection closed),
applies backpressure (a client that does not read its answers is not read from), closes idle connections after
`keepalive` seconds and, on SIGTERM, stops accepting, closes idle connections and answers requests in flight with
`Connection: close`. What it lacks:

- the client certificate in the request's scope, which /validate needs to know the API server (webhook.tls
  ClientAuth): `Protocol`, its httptools protocol with the ASGI TLS extension (uvicorn's `http` setting takes a
  protocol class);
- backpressure on pipelined requests (`Protocol.on_response_complete` says why);
- a deadline for a request to arrive: uvicorn stops its idle timer at a request's first byte and arms it only after
  an answer, so a client that sends a request's head a byte at a time (or nothing at all after the handshake) would
  hold its connection for ever. `Protocol` gives a connection `keepalive` seconds for its first byte and a request
  REQUEST_SECONDS from its first byte to its last;
- a shorter deadline for the TLS handshake than the event loop's 60 s, which uvicorn does not let one set: its `loop`
  setting takes a loop factory, and `new_event_loop` makes a uvloop loop whose servers give a handshake
  HANDSHAKE_SECONDS (a connection that never finishes it holds up nobody meanwhile: the loop goes on serving).

The body limit is the ASGI app's (webhook.asgi), the certificate reload the SSL context's (webhook.tls.reloading).
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from typing import Any

import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from . import tls
from .tls import PEERCERT, TLS

REQUEST_SECONDS = 30.0  # from a request's first byte to its last
HANDSHAKE_SECONDS = 10.0  # from a connection's accept to the end of its TLS handshake


class Loop(uvloop.Loop):
    """uvloop's loop, whose servers give a TLS handshake HANDSHAKE_SECONDS unless told otherwise."""

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("ssl") is not None and kwargs.get("ssl_handshake_timeout") is None:
            kwargs["ssl_handshake_timeout"] = HANDSHAKE_SECONDS
        return await super().create_server(*args, **kwargs)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's `loop` setting: the factory of the loop it runs on."""
    return Loop()


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the TLS extension in every request's scope and a deadline for a request to
    arrive whole."""

    tls: dict[str, Any] | None = None
    deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls = tls_extension(ssl_object)
        self._arm(float(self.timeout_keep_alive) or REQUEST_SECONDS)  # until the first byte of the first request

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.tls is not None:
            self.scope["extensions"] = {TLS: self.tls}  # type: ignore[dict-item]
        self._arm(REQUEST_SECONDS)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """uvicorn reads again after every answer, also while requests it has already read wait in its pipeline: a
        client that pipelines without reading its answers would have it parse a whole read more after each answer,
        and queue them all in memory (measured: 2 GB). Here, a connection is read again only once every request it
        has sent so far is answered, so what it holds is one read's worth of requests."""
        if self.pipeline and not self.transport.is_closing():
            self.server_state.total_requests += 1
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        super().on_response_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self) -> None:
        """A request too slow to arrive (or a connection silent from its start): close it; abort when the client
        does not even read what is written to it."""
        self.deadline = None
        if self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()


def tls_extension(ssl_object: ssl.SSLObject) -> dict[str, Any]:
    """The ASGI TLS extension of a connection (its client certificate, as the handshake verified it), and ssl's own
    reading of that certificate for webhook.tls.ClientAuth."""
    der = ssl_object.getpeercert(binary_form=True)
    version = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}.get(ssl_object.version() or "")
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": version,
        "cipher_suite": None,
        PEERCERT: ssl_object.getpeercert() or None,
    }


class Worker(UvicornWorker):  # type: ignore[misc]
    """uvicorn-worker's gunicorn worker, with the protocol above, uvloop, the reloading SSL context and gunicorn's
    `graceful_timeout` as uvicorn's."""

    CONFIG_KWARGS: dict[str, Any] = {  # noqa: RUF012 (uvicorn-worker's own way to configure uvicorn)
        "loop": "webhook.server:new_event_loop",
        "http": Protocol,
        "lifespan": "on",
        "ssl_context_factory": tls.reloading,
        "server_header": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = int(self.cfg.graceful_timeout)
        # uvicorn answers 503 while its connections (or requests) reach the limit: up to worker_connections are served
        self.config.limit_concurrency = int(self.cfg.worker_connections) + 1

    async def callback_notify(self) -> None:
        """uvicorn's heartbeat (every `timeout` seconds): tells the arbiter this worker lives, and stops the worker
        gracefully once the arbiter is gone (killed with SIGKILL, say), rather than serving on as an orphan."""
        self.notify()
        if self.ppid != os.getppid():
            self.log.info("the arbiter is gone: stopping")
            os.kill(os.getpid(), signal.SIGTERM)
