"""A TCP proxy the test controls, between Vigil and a shared service (Redis, PostgreSQL): faults are
injected here, never by stopping the machine's services that other runs use."""

from __future__ import annotations

import asyncio
import socket
import threading


class Proxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, int(target_port))
        self.loop = asyncio.new_event_loop()
        self.server = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.delay_s = 0.0
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.restore()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_r, client_w):
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        self.writers.update((client_w, up_w))
        await asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w))
        self.writers.difference_update((client_w, up_w))

    async def _start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _stop(self):
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.writers):
            w.transport.abort()  # connections cut, not closed politely
        self.writers.clear()

    def cut(self) -> None:
        """Every open connection reset, new ones refused, until :meth:`restore`."""
        self._call(self._stop())

    def restore(self) -> None:
        if self.server is None:
            self._call(self._start())

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
