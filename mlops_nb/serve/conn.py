"""Connections the service accepts: idle ones cannot pile up (slowloris).

uvicorn times out a connection idle between requests (keep-alive), but not one that never
finishes its request head, and it accepts until the process runs out of file descriptors
(then the registry watcher cannot open version.json and nobody new gets in). This protocol,
uvicorn's httptools one with two additions, keeps the service answering during a flood:
- a request head (request line and headers) must arrive whole within `header_timeout`
  seconds of the connection opening or the previous response, or the connection is closed;
- at most `max_connections` connections are open (set below the descriptor limit): a new
  one past the limit closes the longest idle connection (one with no request in progress);
  when every connection is busy, the new one is closed instead.

The two settings travel on uvicorn's Config (attributes `mlops_header_timeout` and
`mlops_max_connections`), which uvicorn hands to every protocol, in every worker process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

DEFAULT_HEADER_TIMEOUT = 10.0


class GuardedProtocol(HttpToolsProtocol):
    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_timeout = float(getattr(config, "mlops_header_timeout",
                                             DEFAULT_HEADER_TIMEOUT))
        self._max_connections: int | None = getattr(config, "mlops_max_connections", None)
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # waiting for a request head (idle, evictable)
        self.idle_since = time.monotonic()

    def _idle(self) -> bool:
        return self._in_head and (self.cycle is None or self.cycle.response_complete)

    def _arm(self) -> None:
        self._disarm()
        self._in_head = True
        self.idle_since = time.monotonic()
        self._head_timer = self.loop.call_later(self._header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._idle() and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()
        limit = self._max_connections
        if limit is None or len(self.connections) <= limit:
            return
        idle = [c for c in self.connections
                if isinstance(c, GuardedProtocol) and c is not self and c._idle()
                and not c.transport.is_closing()]
        if idle:
            min(idle, key=lambda c: c.idle_since).transport.close()
        else:
            log.warning("connection limit (%d) reached and every connection is busy", limit)
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request head has header_timeout too
