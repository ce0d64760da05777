"""A header read timeout for BentoML's HTTP server, which has none.

Uvicorn closes idle keep-alive connections, but a client that opens a connection and sends its
request headers a byte at a time (slowloris) holds a connection, a descriptor and a parser for as
long as it likes: every byte cancels the keep-alive timer, and nothing else is armed until the
headers are complete. This arms a timer when a connection opens and after each answer, and cancels
it when a request's headers are complete: a connection whose headers take longer than
``VIGIL_SERVING_HEADER_TIMEOUT`` seconds is closed. The body's own timeout is the guard's (408).

It wraps four methods of uvicorn's httptools protocol (the one BentoML's worker runs when
httptools is installed, as it is here), in the worker process, at import of the service. Without
httptools it installs nothing and says so; behind a reverse proxy its header timeout does the job.
"""

from __future__ import annotations

import logging

log = logging.getLogger("vigil.serving")
closed = [0]  # connections closed for slow headers, in this process
_installed: list[float] = []


def install(timeout_s: float) -> bool:
    if _installed:
        _installed[0] = timeout_s
        return True
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # uvicorn falls back to h11
        log.warning("httptools is not installed: no header read timeout (put a proxy with one in front)")
        return False
    _installed.append(timeout_s)
    made, lost, headers, done = (HttpToolsProtocol.connection_made, HttpToolsProtocol.connection_lost,
                                 HttpToolsProtocol.on_headers_complete, HttpToolsProtocol.on_response_complete)

    def arm(self) -> None:
        disarm(self)
        self._vigil_header_timer = self.loop.call_later(_installed[0], expire, self)

    def disarm(self) -> None:
        timer = getattr(self, "_vigil_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._vigil_header_timer = None

    def expire(self) -> None:
        self._vigil_header_timer = None
        if not self.transport.is_closing():
            closed[0] += 1
            self.transport.close()

    def connection_made(self, transport) -> None:
        made(self, transport)
        arm(self)

    def connection_lost(self, exc) -> None:
        disarm(self)
        lost(self, exc)

    def on_headers_complete(self) -> None:
        disarm(self)
        headers(self)

    def on_response_complete(self) -> None:
        done(self)
        if self.timeout_keep_alive_task is not None:  # idle, waiting for the next request (none pipelined)
            arm(self)

    HttpToolsProtocol.connection_made = connection_made
    HttpToolsProtocol.connection_lost = connection_lost
    HttpToolsProtocol.on_headers_complete = on_headers_complete
    HttpToolsProtocol.on_response_complete = on_response_complete
    return True
