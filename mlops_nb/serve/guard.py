"""What stands in front of the app: who may call it, how big a body may be, and the timing.

An ASGI middleware (no per-request thread or task of its own):
- the Host header must name an allowed host (by default the loopback names: localhost,
  127.0.0.1, [::1]; `--allowed-host` adds more, `*` allows any), so a web page whose name was
  rebound to 127.0.0.1 (DNS rebinding) reads nothing: 400;
- a POST, PUT or PATCH must say `Content-Type: application/json`, so a web page cannot send
  one from the user's browser without a CORS preflight (which this service never grants):
  415 otherwise;
- with a token, every path but /health needs `Authorization: Bearer <token>`, compared in
  constant time (hmac.compare_digest); otherwise 401;
- a request body is read here, up to `max_body` bytes, before the app sees it: a declared
  Content-Length over the limit is refused at once, and a chunked body (no Content-Length) is
  refused as soon as what arrived passes the limit, so no body is ever held past the limit
  (413, and the connection is closed);
- every request's status and latency go to the metrics.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mlops_nb.serve.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/health",)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def host_of(header: bytes) -> str:
    """The host name of a Host header, without its port; IPv6 without brackets."""
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


async def respond(send: Send, status: int, body: dict[str, Any],
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


class Guard:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body: int,
                 token: str | None = None, allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
                 ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self._token = token.encode() if token else None
        self.allowed_hosts = {h.strip("[]").lower() for h in allowed_hosts}

    def _host_allowed(self, scope: Scope) -> bool:
        if "*" in self.allowed_hosts:
            return True
        hosts = [v for k, v in scope.get("headers", ()) if k == b"host"]
        return len(hosts) == 1 and host_of(hosts[0]) in self.allowed_hosts

    @staticmethod
    def _json_body(scope: Scope) -> bool:
        types = [v for k, v in scope.get("headers", ()) if k == b"content-type"]
        if len(types) != 1:
            return False
        media = types[0].split(b";", 1)[0].strip().lower()
        return media == b"application/json"

    def _authorized(self, scope: Scope) -> bool:
        assert self._token is not None
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    given.strip(), self._token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status, observed = [500], [False]

        def observe() -> None:
            if not observed[0]:
                observed[0] = True
                self.metrics.observe(scope["path"], status[0], time.perf_counter() - start)

        async def sent(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                observe()  # counted before the client has the whole answer: a /metrics read
                #            after a response always includes it
            await send(message)

        try:
            await self._handle(scope, receive, sent)
        finally:
            observe()

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._host_allowed(scope):
            await respond(send, 400, {"detail": "Host header not allowed: this service answers"
                                                " only the names given with --allowed-host"
                                                " (default: localhost, 127.0.0.1, [::1])"})
            return
        if self._token is not None and scope["path"] not in OPEN_PATHS \
                and not self._authorized(scope):
            await respond(send, 401, {"detail": "missing or wrong bearer token"},
                          [(b"www-authenticate", b'Bearer realm="mlops-nb"')])
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        if not self._json_body(scope):
            await respond(send, 415, {"detail": "send the body as JSON, with Content-Type:"
                                                " application/json"},
                          [(b"connection", b"close")])
            return
        too_big = {"detail": f"request body over the limit of {self.max_body} bytes"}
        close = [(b"connection", b"close")]
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await respond(send, 400, {"detail": "invalid Content-Length"}, close)
                    return
                if declared > self.max_body:
                    await respond(send, 413, too_big, close)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await respond(send, 413, too_big, close)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
