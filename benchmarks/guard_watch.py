"""What the endpoint's disconnect watcher costs a request (``serving.guard.Guard.call_watched``):
one ASGI call of a trivial app, directly and inside the watcher's task group, on the same event
loop, in the same run (a ratio, not an absolute: the machines are shared).

    .venv/bin/python benchmarks/guard_watch.py [--n 20000] [--rounds 5]

Writes benchmarks/results/guard_watch.json."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's `serving` package, not benchmarks/serving.py
sys.modules.pop("serving", None)
from serving.guard import Guard  # noqa: E402


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def never_disconnects():
    await anyio.sleep_forever()


async def replay():
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(msg):
    pass


async def measure(n: int, rounds: int) -> dict:
    guard = object.__new__(Guard)  # only call_watched is used: no settings, keys or metrics
    guard.app = app
    direct, watched = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            await app({}, replay, send)
        direct.append((time.perf_counter() - t) / n)
        t = time.perf_counter()
        for _ in range(n):
            await guard.call_watched({}, replay, never_disconnects, send)
        watched.append((time.perf_counter() - t) / n)
    d, w = statistics.median(direct), statistics.median(watched)
    return {"direct_us": round(d * 1e6, 2), "watched_us": round(w * 1e6, 2), "watcher_cost_us": round((w - d) * 1e6, 1),
            "rounds_watched_us": [round(x * 1e6, 1) for x in watched]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    out = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": f"{platform.node()} {platform.machine()}",
           "command": "benchmarks/guard_watch.py", "n": a.n, "rounds": a.rounds, **anyio.run(measure, a.n, a.rounds)}
    print(json.dumps(out, indent=1))
    path = Path(__file__).parent / "results" / "guard_watch.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
