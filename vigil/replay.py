"""Replay a day of source transactions as live HTTP traffic against the scoring endpoint."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class ReplayStats:
    sent: int = 0
    ok: int = 0
    client_errors: int = 0
    server_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    decisions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        return {"sent": self.sent, "ok": self.ok, "client_errors": self.client_errors, "server_errors": self.server_errors,
                "p50_ms": float(np.nanpercentile(lat, 50)), "p99_ms": float(np.nanpercentile(lat, 99)),
                "seconds": round(self.seconds, 2), "rate_per_s": round(self.sent / self.seconds, 1) if self.seconds else 0.0,
                "decisions": self.decisions}


def to_requests(frame: pd.DataFrame) -> list[dict]:
    """Rows of a landing file as JSON request bodies (values passed through as they are)."""
    from vigil.sources import META

    out = []
    for rec in frame.drop(columns=[c for c in META if c in frame.columns]).to_dict(orient="records"):
        body = {}
        for k, v in rec.items():
            if isinstance(v, pd.Timestamp):
                v = v.isoformat()
            elif isinstance(v, float) and np.isnan(v):
                v = None
            elif isinstance(v, np.generic):
                v = v.item()
            body[k] = v
        out.append(body)
    return out


def replay(url: str, bodies: list[dict], concurrency: int = 4, rate: float | None = None, progress=None,
           stop: threading.Event | None = None, api_key: str = "") -> ReplayStats:
    """POST each body to ``{url}/score`` with the API key; ``rate`` (requests/s) paces the sends,
    None = as fast as possible; once ``stop`` is set the remaining bodies are not sent."""
    import httpx

    stats = ReplayStats()
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {api_key}"} if api_key else {})}
    lock = threading.Lock()
    local = threading.local()
    t_start = time.perf_counter()

    def send(i_body):
        i, body = i_body
        if stop is not None and stop.is_set():
            return
        if rate:
            delay = t_start + i / rate - time.perf_counter()
            if delay > 0 and (stop.wait(delay) if stop is not None else time.sleep(delay)):
                return
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url, timeout=10)
        t0 = time.perf_counter()
        try:
            r = client.post("/score", content=json.dumps(body), headers=headers)
            code = r.status_code
        except httpx.HTTPError:
            code = 599
        ms = (time.perf_counter() - t0) * 1000
        with lock:
            stats.sent += 1
            if code < 300:
                stats.ok += 1
                stats.latencies_ms.append(ms)
                d = r.json()["decision"]
                stats.decisions[d] = stats.decisions.get(d, 0) + 1
            elif code < 500:
                stats.client_errors += 1
            else:
                stats.server_errors += 1
            if progress and stats.sent % 1000 == 0:
                progress(stats.sent, len(bodies))

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, enumerate(bodies)))
    stats.seconds = time.perf_counter() - t_start
    return stats
