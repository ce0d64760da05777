"""An open-loop HTTP/1.1 load generator: requests are submitted on a fixed schedule (``rate`` a
second) whatever the server answers, and each latency counts from that moment, so a stall delays
every request queued behind it in the figures too (no coordinated omission). The loop's own
lateness (its timers have ~1 ms resolution) is reported apart (``generator_lateness_*``), and so is
the latency from the exact scheduled time (``from_schedule_*``). A run stops early
(``aborted_after_s``) once a request has waited ``--abort-after`` seconds: the rate is then far
beyond what the server sustains. Debian's ``wrk`` (4.1, not wrk2) and ``hey`` are closed-loop: a
slow answer holds the next request back, which hides exactly the tail measured here.

Keep-alive connections are opened up front and more on demand (up to ``--max-connections``) when
every open one is busy; past that a request waits for a free connection, and the wait is part of
its latency. ``--pick round-robin`` sends each request on the free connection idle the longest,
as a load balancer spreads requests over its pool of upstream connections; ``--pick recent`` (the
default) on the one used last, which keeps few connections busy (with it, one of a two-worker
Vigil's workers took 9,531 of 10,000 requests at 1,000 req/s). The kernel decides which worker
accepts a connection, so even round robin does not split requests evenly between the workers
(5,000 of 5,000 on one worker at 500 req/s, 5,895 / 4,105 at 1,000, in runs on 2026-12-01). Bodies are cycled from a JSON-lines file, each request with the transaction id
``--id-base`` + its index (every request a new transaction). Standard library plus uvloop
(BentoML's own dependency); it runs in its own process, never sharing a GIL with what it measures.
Each answer's ``latency_ms`` (Vigil's in-handler time) and ``degraded`` flag are collected too.

    python benchmarks/loadgen.py --url http://127.0.0.1:3000/score --bodies b.jsonl --rate 500 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import resource
import sys
import time
from urllib.parse import urlsplit

LATENCY_MS = re.compile(rb'"latency_ms":\s*([0-9.eE+-]+)')


class Conn(asyncio.Protocol):
    def __init__(self, gen: "Generator"):
        self.gen, self.transport, self.buf, self.sent = gen, None, bytearray(), 0
        self.busy = None  # the request in flight: [index, scheduled, submitted, sent]

    def connection_made(self, transport):
        self.transport = transport
        self.gen.idle(self)

    def send(self, item, payload: bytes) -> None:
        self.busy = item
        self.sent += 1
        self.transport.write(payload)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.busy is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            m = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
            if m is None:  # the servers measured here always send a length; anything else is an error
                self.gen.done(self, self.busy, -1, b"")
                self.transport.close()
                return
            total = end + 4 + int(m.group(1))
            if len(self.buf) < total:
                return
            status = int(head[9:12])
            body = bytes(self.buf[end + 4 : total])
            del self.buf[:total]
            item, self.busy = self.busy, None
            self.gen.done(self, item, status, body)

    def connection_lost(self, exc):
        self.gen.lost(self)


class Generator:
    def __init__(self, host, port, path, bodies, headers, max_connections, timeout, id_base, pick="recent"):
        self.host, self.port, self.timeout = host, port, timeout
        self.round_robin = pick == "round-robin"
        head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.head = head.encode()
        self.bodies = bodies  # (before, after) the transaction id
        self.id_base = id_base
        self.max_connections = max_connections
        self.conns: set[Conn] = set()
        self.ever: set[Conn] = set()  # every connection opened, for how evenly requests went over them
        self.free: collections.deque[Conn] = collections.deque()
        self.pending: collections.deque = collections.deque()
        self.opening = 0
        self.results: dict[int, tuple] = {}
        self.outstanding = 0
        self.all_done = None
        self.peak = 0
        self.finished = False

    def payload(self, index: int) -> bytes:
        """Body ``index`` of the cycle, with transaction id ``id_base + index``: every request is
        a new transaction (a repeated id would be a retry, a cheaper path through the scorer)."""
        before, after = self.bodies[index % len(self.bodies)]
        body = before + str(self.id_base + index).encode() + after
        return self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    async def open(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(n):
            await loop.create_connection(lambda: Conn(self), self.host, self.port)

    def _open_one(self) -> None:
        self.opening += 1

        async def go():
            try:
                await asyncio.get_running_loop().create_connection(lambda: Conn(self), self.host, self.port)
            except OSError:
                if self.pending:  # count the waiting request as failed
                    item = self.pending.popleft()
                    self.record(item, -2, b"")
            finally:
                self.opening -= 1

        asyncio.ensure_future(go())

    def idle(self, conn: Conn) -> None:
        self.ever.add(conn)
        self.conns.add(conn)
        self.peak = max(self.peak, len(self.conns))
        if self.pending:
            item = self.pending.popleft()
            item[3] = time.perf_counter()
            conn.send(item, self.payload(item[0]))
        else:
            self.free.append(conn)

    def submit(self, index: int, scheduled: float) -> None:
        now = time.perf_counter()
        item = [index, scheduled, now, 0.0]  # index, scheduled, submitted (the loop's wake-up), sent
        self.outstanding += 1
        if self.free:
            # idle the longest (round robin over the pool), or most recently used (keeps few connections busy)
            conn = self.free.popleft() if self.round_robin else self.free.pop()
            item[3] = now
            conn.send(item, self.payload(index))
        else:
            self.pending.append(item)
            if len(self.conns) + self.opening < self.max_connections:
                self._open_one()

    def record(self, item, status, body) -> None:
        now = time.perf_counter()
        m = LATENCY_MS.search(body) if status == 200 else None
        degraded = status == 200 and b'"degraded":true' in body
        self.results[item[0]] = (item[1], item[2], item[3], now, status, float(m.group(1)) if m else None, degraded)
        self.outstanding -= 1
        if self.outstanding == 0 and self.finished and self.all_done is not None:
            self.all_done.set()

    def done(self, conn: Conn, item, status: int, body: bytes) -> None:
        self.record(item, status, body)
        if not conn.transport.is_closing():
            self.idle(conn)

    def lost(self, conn: Conn) -> None:
        self.conns.discard(conn)
        try:
            self.free.remove(conn)
        except ValueError:
            pass
        if conn.busy is not None:
            item, conn.busy = conn.busy, None
            self.record(item, -3, b"")

    def oldest_age(self, now: float) -> float:
        """Seconds since the oldest request still waiting (unsent or unanswered) was submitted."""
        ages = [now - self.pending[0][2]] if self.pending else []
        ages += [now - c.busy[2] for c in self.conns if c.busy is not None]
        return max(ages, default=0.0)

    async def run(self, rate: float, n: int, preopen: int, abort_s: float) -> dict:
        await self.open(min(preopen, self.max_connections))
        self.all_done = asyncio.Event()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter() + 0.05
        i, aborted, checked = 0, None, start
        while i < n:
            now = time.perf_counter()
            while i < n and start + i / rate <= now:  # everything due: submit it now
                self.submit(i, start + i / rate)
                i += 1
            if now - checked > 0.05:
                checked = now
                if self.oldest_age(now) > abort_s:  # overloaded: stop, do not pile up a backlog for minutes
                    aborted = round(now - start, 2)
                    break
            if i < n:
                wait = start + i / rate - time.perf_counter()
                await asyncio.sleep(max(0.0, wait - 0.0001))  # the loop's timers have ~1 ms resolution
        self.finished = True
        if self.outstanding and aborted is None:
            try:
                await asyncio.wait_for(self.all_done.wait(), self.timeout)
            except asyncio.TimeoutError:
                pass
        end = time.perf_counter()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        for c in list(self.conns):
            c.transport.close()
        rows = sorted(self.results.values())
        ok = [r for r in rows if r[4] == 200]
        last = max((r[3] for r in ok), default=end)
        # (scheduled, submitted, sent, answered, status, latency_ms, degraded); latency counts from the
        # moment the generator submitted the request (its own timer lateness, reported apart, excluded;
        # any wait for a free connection included)
        lat = sorted((r[3] - r[1]) * 1000 for r in ok)
        from_schedule = sorted((r[3] - r[0]) * 1000 for r in ok)
        wire = sorted((r[3] - r[2]) * 1000 for r in ok)
        lateness = sorted((r[1] - r[0]) * 1000 for r in rows)
        handler = sorted(r[5] for r in ok if r[5] is not None)
        statuses = collections.Counter(r[4] for r in rows)

        def q(a, p):
            return round(a[min(len(a) - 1, int(p / 100 * len(a)))], 3) if a else None

        return {
            "rate_target": rate, "requests": n, "submitted": i, "ok": len(ok),
            "errors": n - len(ok), "statuses": {str(k): v for k, v in statuses.items()},
            "unanswered_or_unsent": n - len(rows), "aborted_after_s": aborted,
            "degraded": sum(r[6] for r in ok),
            "rate_achieved": round(len(ok) / (last - start), 1) if ok else 0.0,  # answered OK per second
            "p50_ms": q(lat, 50), "p90_ms": q(lat, 90), "p99_ms": q(lat, 99), "max_ms": round(lat[-1], 3) if lat else None,
            "from_schedule_p50_ms": q(from_schedule, 50), "from_schedule_p99_ms": q(from_schedule, 99),
            "on_the_wire_p50_ms": q(wire, 50), "on_the_wire_p99_ms": q(wire, 99),
            "generator_lateness_p50_ms": q(lateness, 50), "generator_lateness_p99_ms": q(lateness, 99),
            "handler_latency_ms_p50": q(handler, 50), "handler_latency_ms_p99": q(handler, 99),
            "connections_peak": self.peak, "pick": "round-robin" if self.round_robin else "recent",
            "busiest_connection_share": round(max((c.sent for c in self.ever), default=0) / max(1, i), 3),
            "generator_cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2),
            "wall_s": round(end - start, 2),
        }


def split_id(body: dict) -> tuple[bytes, bytes]:
    """The compact JSON of ``body`` cut around its transaction id (written first)."""
    text = json.dumps({"transaction_id": 0, **{k: v for k, v in body.items() if k != "transaction_id"}},
                      separators=(",", ":")).encode()
    before, after = text.split(b"0", 1)
    return before, after


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--bodies", required=True, help="JSON lines, one request body each")
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--offset", type=int, default=0, help="start the cycle at this body")
    ap.add_argument("--id-base", type=int, default=0, help="transaction ids are id_base + request index")
    ap.add_argument("--header", action="append", default=[], help="'Name: value'")
    ap.add_argument("--max-connections", type=int, default=256)
    ap.add_argument("--preopen", type=int, default=16)
    ap.add_argument("--pick", choices=("recent", "round-robin"), default="recent",
                    help="the free connection a request goes on: the one used last, or the one idle the longest")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for answers after the last send")
    ap.add_argument("--abort-after", type=float, default=2.0,
                    help="stop the run when a request has waited this many seconds (overloaded)")
    a = ap.parse_args(argv)
    u = urlsplit(a.url)
    with open(a.bodies, "rb") as f:
        bodies = [split_id(json.loads(line)) for line in f if line.strip()]
    n = int(a.rate * a.duration)
    bodies = bodies[a.offset:] + bodies[: a.offset]
    headers = dict(h.split(": ", 1) for h in a.header)
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    gen = Generator(u.hostname, u.port, u.path or "/", bodies, headers, a.max_connections, a.timeout, a.id_base, a.pick)
    with asyncio.Runner(loop_factory=factory) as runner:
        out = runner.run(gen.run(a.rate, n, a.preopen, a.abort_after))
    json.dump(out, sys.stdout)
    print()
    return out


if __name__ == "__main__":
    main()
