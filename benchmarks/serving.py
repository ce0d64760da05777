"""Serving benchmark (issue 14 §1): Vigil's ``POST /score`` beside a bare BentoML service doing one
``Booster.predict`` on a fixed row of the same model (``bare_service.py``), both served by
``bentoml serve`` on 127.0.0.1 with the same workers and threads, in one run on the same machine,
under an open-loop load generator (``loadgen.py``: fixed schedule, no coordinated omission) at
200 (three times), 500 and 1,000 req/s and at the highest rate each sustains with p99 <= 25 ms;
the recommended setting and the service's default side by side. Also: the in-handler time
(features, model, policy, log) apart, in process; a py-spy profile of the servers under load;
``/score_batch`` rows/s; a closed-loop cross-check with Debian's ``wrk``; the endpoint during
online-store writes; the intraday freshness check. ``--tune`` measures seven workers / threads /
sync-or-async settings of Vigil at 200-400 req/s, in rounds. Vigil's "async" is its own default
(``/score`` on the event loop, ``VIGIL_SERVING_ON_LOOP=auto``), its "sync" ``/score`` on a thread
(``VIGIL_SERVING_ON_LOOP=never``); the bare service has a sync and an async class.

    .venv/bin/python benchmarks/serving.py          # ~8 min
    .venv/bin/python benchmarks/serving.py --tune   # ~9 min
    .venv/bin/python benchmarks/serving.py --batch  # /score_batch alone, ~4 min
    options: --workers 2 --threads 4 --handler async --duration 10 --step 5 --repeats 3 --rounds 3
             --no-default --home DIR --py-spy PATH

Results: ``benchmarks/results/serving.json`` (``serving_tuning.json`` with ``--tune``); table and
reading in ``benchmarks/README.md``.
"""

import argparse
import gc
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

RATES = (200, 500, 1000)
P99_LIMIT_MS = 25.0
PICK = "round-robin"  # loadgen --pick: requests spread over the open connections, as a load balancer does (main)
LADDER = (100, 150, 200, 250, 300, 360, 430, 500, 600, 700, 850, 1000, 1200, 1450, 1750, 2100, 2500, 3000, 3600)
TARGETS = {"vigil": {"sync": "serving.service:FraudScorer", "async": "serving.service:FraudScorer"},
           "bare": {"sync": "benchmarks.bare_service:Bare", "async": "benchmarks.bare_service:BareAsync"}}
# every request is a new transaction: ids never reused, in a run or across runs on the same world
# (an id already in the card's list of the day would be a retry, a cheaper path)
_IDS = [int(time.time()) * 10**8]


def next_ids(n: int) -> int:
    base = _IDS[0]
    _IDS[0] += n + 1000
    return base


def pct(a, digits=3):
    a = np.asarray(a, dtype=float)
    if not len(a):
        return {"p50_ms": None, "p99_ms": None}
    return {"p50_ms": round(float(np.percentile(a, 50)), digits), "p99_ms": round(float(np.percentile(a, 99)), digits)}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


MATERIALIZE_LOOP = """
import sys, datetime as dt
from vigil import config, feature_repo, lake
paths = config.paths(sys.argv[1])
store = feature_repo.open_store(paths)
reader = feature_repo.OnlineReader(store)
days = lake.available_days(paths.features / "customer")
out = open(sys.argv[2], "a") if len(sys.argv) > 2 else None
for _ in range(500):  # the online_features asset re-running the newest day: a full rewrite each time
    feature_repo.write_online(store, paths, days[-1], reader)
    if out:  # the writer's progress: one line per rewrite
        out.write("x"); out.flush()
"""


# -- servers ---------------------------------------------------------------------------------
class Server:
    def __init__(self, kind: str, handler: str, url: str, proc, label: str):
        self.kind, self.handler, self.url, self.proc, self.label = kind, handler, url, proc, label


@contextlib.contextmanager
def serve(specs: list[tuple[str, str, dict, str]], log_dir: Path):
    """``bentoml serve`` of each (kind, handler, env, label) on 127.0.0.1, started together, like
    :func:`vigil.processes.serve_endpoint` (same command, same stop of the whole process family)."""
    from vigil.processes import endpoint_command, free_port, start, stop, wait_http

    servers = []
    try:
        for kind, handler, env, label in specs:
            port = free_port(0)
            cmd = endpoint_command(port)
            cmd[cmd.index("serving.service:FraudScorer")] = TARGETS[kind][handler]
            if kind == "vigil":  # /score on the event loop (the default) or on a thread
                env = {**env, "VIGIL_SERVING_ON_LOOP": "auto" if handler == "async" else "never"}
            servers.append(Server(kind, handler, f"http://127.0.0.1:{port}", start(cmd, env, log_dir / f"bench-{label}.log"), label))
        for s in servers:
            wait_http(f"{s.url}/readyz", 300, s.proc, s.label, log_dir / f"bench-{s.label}.log")
        yield servers
    finally:
        for s in servers:
            stop(s.proc)


def family_cpu(proc) -> float:
    import psutil

    try:
        ps = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in ps:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def settle(server: Server, limit_s: float = 30.0) -> None:
    """Wait until the server is idle (a backlog from an overloaded run is drained)."""
    end = time.time() + limit_s
    while time.time() < end:
        c0 = family_cpu(server.proc)
        time.sleep(0.5)
        if family_cpu(server.proc) - c0 < 0.05:  # under 10 % of a core
            return


# -- load --------------------------------------------------------------------------------------
class Intraday:
    """Empties the cards' lists of the replayed day before each run against Vigil: every request
    is a new transaction, and without this the lists would grow over the benchmark to hundreds a
    card (a real card has 2.6 that day); within one run they stay near the real size."""

    def __init__(self, paths, bodies: list[dict]):
        from datetime import datetime

        from vigil.feature_repo import IntradayStore, OnlineReader, open_store

        store = open_store(paths)
        self.store = IntradayStore(store, OnlineReader(store))
        day = int(datetime.fromisoformat(bodies[0]["tx_datetime"]).timestamp()) // 86_400
        self.cards = sorted({int(b["customer_id"]) for b in bodies})
        self.empty = {"intraday_day": day, "intraday_tx_ids": [], "intraday_epochs": [], "intraday_amounts": []}

    def reset(self) -> None:
        self.store.write({c: self.empty for c in self.cards})

    def fill(self) -> None:
        """Every card's list at INTRADAY_MAX_TX transactions earlier that day."""
        from vigil.features import INTRADAY_MAX_TX

        start = self.empty["intraday_day"] * 86_400
        full = {**self.empty, "intraday_tx_ids": list(range(1, INTRADAY_MAX_TX + 1)),
                "intraday_epochs": [start + i for i in range(INTRADAY_MAX_TX)], "intraday_amounts": [10.0] * INTRADAY_MAX_TX}
        self.store.write({c: full for c in self.cards})

    def lengths(self) -> dict:
        n = [len(s["intraday_tx_ids"]) for s in self.store.read(self.cards) if s]
        return {"cards": len(n), "mean": round(float(np.mean(n)), 2) if n else 0, "max": max(n, default=0)}


INTRADAY: list = []  # the benchmark's Intraday, once set up


def load(server: Server, bodies_file: Path, key: str, rate: float, duration: float, timeout: float = 10.0) -> dict:
    """One open-loop run of ``benchmarks/loadgen.py`` in its own process; the server's CPU seconds too."""
    if server.kind == "vigil" and INTRADAY:
        INTRADAY[0].reset()
    n = int(rate * duration)
    cmd = [sys.executable, str(HERE / "loadgen.py"), "--url", f"{server.url}/score", "--bodies", str(bodies_file),
           "--rate", str(rate), "--duration", str(duration), "--id-base", str(next_ids(n)),
           "--header", f"Authorization: Bearer {key}", "--timeout", str(timeout), "--pick", PICK]
    c0 = family_cpu(server.proc)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["server_cpu_s"] = round(family_cpu(server.proc) - c0, 2)
    r["sustained"] = sustained(r)
    if server.kind == "vigil" and INTRADAY:
        r["intraday_list_length_at_end"] = INTRADAY[0].lengths()["mean"]
    settle(server)
    return r


def sustained(r: dict) -> bool:
    """p99 within the limit, no error, no degraded answer (features missing), the rate achieved."""
    return (r["errors"] == 0 and r["degraded"] == 0 and r["p99_ms"] is not None and r["p99_ms"] <= P99_LIMIT_MS
            and r["rate_achieved"] >= 0.97 * r["rate_target"])


def short(r: dict) -> str:
    return (f"{r['rate_target']:>6.0f} req/s -> {r['rate_achieved']:>7.1f}  p50 {r['p50_ms']} p99 {r['p99_ms']} ms  "
            f"errors {r['errors']} degraded {r['degraded']}  handler p99 {r.get('handler_latency_ms_p99')}  gen cpu {r['generator_cpu_s']}s "
            f"server cpu {r['server_cpu_s']}s")


def highest_sustained(servers: list[Server], bodies_file: Path, key: str, step_s: float, start_at: dict) -> dict:
    """Climb ``LADDER`` from each server's ``start_at`` rate, the servers taking turns at each rate
    (so a noisy spell hits them alike); a failed step is run once more (the machine is noisy)
    before that server's climb stops. A server failing its first rate goes down the ladder."""
    steps = {s.label: [] for s in servers}
    best = {s.label: None for s in servers}
    climbing = list(servers)
    for rate in [r for r in LADDER if r >= min(start_at.values())]:
        for s in [s for s in climbing if rate >= start_at[s.label]]:
            r = load(s, bodies_file, key, rate, step_s)
            steps[s.label].append(r)
            log(f"  {s.label:12} climb {short(r)}")
            if not r["sustained"]:
                r = load(s, bodies_file, key, rate, step_s)
                steps[s.label].append({**r, "retry": True})
                log(f"  {s.label:12} retry {short(r)}")
            if r["sustained"]:
                best[s.label] = rate
            else:
                climbing.remove(s)
        if not climbing:
            break
    for s in servers:
        if best[s.label] is None:  # not even its first rate: go down
            for rate in [x for x in LADDER if x < start_at[s.label]][::-1]:
                r = load(s, bodies_file, key, rate, step_s)
                steps[s.label].append(r)
                log(f"  {s.label:12} down {short(r)}")
                if r["sustained"]:
                    best[s.label] = rate
                    break
    crit = (f"p99 <= {P99_LIMIT_MS} ms, 0 errors, 0 degraded answers, achieved >= 97 % of the target, "
            f"{step_s:g} s per step, a failed step retried once")
    return {s.label: {"rate": best[s.label], "criterion": crit, "steps": steps[s.label]} for s in servers}


# -- in process ---------------------------------------------------------------------------------
def in_process(paths, reqs: list[dict], n: int = 2000, feature_cache: int = 200_000) -> dict:
    """Scorer.score per request with each part timed apart, on the handler's own code: the online
    reads (two views), the intraday step (read, add, write), the rest of ``assemble`` (request
    features, freshness), ``model.predict``, the prediction-log append, and what is left (policy,
    reasons, response)."""
    from vigil.scoring import Scorer

    scorer = Scorer(paths, feature_cache=feature_cache)  # with the prediction log, as the endpoint
    t: dict[str, list[float]] = {k: [] for k in ("online_read", "intraday_step", "assemble", "model", "log", "score")}
    cur: dict[str, float] = {}

    def timed(name, fn, accumulate=False):
        def wrapper(*args, **kw):
            s = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                d = (time.perf_counter() - s) * 1000
                cur[name] = cur.get(name, 0.0) + d if accumulate else d
        return wrapper

    scorer.reader.read_matrix = timed("online_read", scorer.reader.read_matrix, accumulate=True)  # the two snapshot views
    scorer.intraday_step = timed("intraday_step", scorer.intraday_step)
    scorer.assemble = timed("assemble", scorer.assemble)
    deployed_predict = scorer.deployed.predict
    object.__setattr__(scorer.deployed, "predict", timed("model", deployed_predict))  # Deployed is frozen
    import vigil.scoring

    render = vigil.scoring.log_lines
    vigil.scoring.log_lines = timed("log", render, accumulate=True)  # the log: rendering its lines, then writing them
    scorer.log.append_lines = timed("log", scorer.log.append_lines, accumulate=True)
    base = next_ids(len(reqs))  # one untimed pass over the day's transactions: a worker that has served
    for i, r in enumerate(reqs):  # for a while (its snapshot cache holds these entities; off, the same pass)
        scorer.score([{**r, "transaction_id": base + i}])
    if INTRADAY:
        INTRADAY[0].reset()
    base = next_ids(n)
    for i in range(n):
        r = {**reqs[i % len(reqs)], "transaction_id": base + i}
        cur.clear()
        s = time.perf_counter()
        scorer.score([r])
        cur["score"] = (time.perf_counter() - s) * 1000
        for k in t:
            t[k].append(cur.get(k, 0.0))
    scorer.close()
    vigil.scoring.log_lines = render
    out = {k: pct(v) for k, v in t.items()}
    a = {k: np.asarray(v) for k, v in t.items()}
    out["request_features_and_freshness"] = pct(a["assemble"] - a["online_read"] - a["intraday_step"])
    out["policy_reasons_response"] = pct(a["score"] - a["assemble"] - a["model"] - a["log"])
    out["requests"] = n
    out["note"] = ("per request, sequential, one thread, prediction log on; every request a new transaction; "
                   "after one untimed pass over the day's transactions (the snapshot cache warm). "
                   "features = assemble = online_read + intraday_step + request_features_and_freshness")
    return out


def bare_and_intraday(paths, reqs: list[dict]) -> tuple[dict, dict, dict, np.ndarray]:
    """The bare booster on the same feature rows; the intraday step alone (new transaction, retry)."""
    import pandas as pd

    from vigil.scoring import Scorer

    scorer = Scorer(paths, log_predictions=False)
    x = np.vstack([scorer.assemble([r])[0] for r in reqs[:1000]])
    booster = scorer.deployed.model.booster
    booster_lat = []
    for i in range(len(x)):
        s = time.perf_counter()
        booster.predict(x[i : i + 1], num_threads=1)
        booster_lat.append((time.perf_counter() - s) * 1000)
    new_lat, retry_lat = [], []
    base = next_ids(1000)
    for lat in (new_lat, retry_lat):  # the second pass repeats the ids: retries (read only)
        for k, r in enumerate(reqs[:1000]):
            r = {**r, "transaction_id": base + k}
            e = np.array([int(pd.Timestamp(r["tx_datetime"]).timestamp())])
            s = time.perf_counter()
            scorer.intraday_step([r], e, np.array([r["tx_amount"]]))
            lat.append((time.perf_counter() - s) * 1000)
    row = scorer.deployed.model.impute(x[:1])[0]
    scorer.close()
    return pct(booster_lat), pct(new_lat), pct(retry_lat), row


# -- profile ------------------------------------------------------------------------------------
# Each profile sample goes to one part: the first of PARTS whose frame is anywhere in its stack
# (Vigil's and the guard's own code, most specific first), else the first library of LIBS met
# walking from the sampled frame towards the thread's root.
PARTS = [
    ("features: intraday write (SQL on Feast's SQLite table)", "IntradayStore.write (vigil/feature_repo.py"),
    ("features: intraday read (SQL on Feast's SQLite table)", "IntradayStore.read (vigil/feature_repo.py"),
    ("features: snapshot reads, 2 views (SQL on Feast's SQLite table)", "OnlineReader.read_matrix (vigil/feature_repo.py"),
    ("features: online reads through Feast (other stores)", "OnlineReader.read (vigil/feature_repo.py"),
    ("features: intraday values and add (intraday_batch)", "intraday_batch (vigil/features.py"),
    ("features: rest of assemble (lock, request features, freshness)", "Scorer.assemble (vigil/scoring.py"),
    ("model: FraudModel.predict (impute + Booster.predict)", "FraudModel.predict (vigil/model.py"),
    ("log: rendering the lines (log_lines)", "log_lines (vigil/prediction_log.py"),
    ("log: writing the lines (PredictionLog.append_lines)", "PredictionLog.append_lines (vigil/prediction_log.py"),
    ("log: writing the lines (PredictionLog.append_many)", "PredictionLog.append_many (vigil/prediction_log.py"),
    ("log: fsync thread", "PredictionLog._sync_loop (vigil/prediction_log.py"),
    ("handler: policy, reasons, response dicts (rest of Scorer.score)", "Scorer.score (vigil/scoring.py"),
    ("service: Prometheus metrics, JSON response (rest of FraudScorer.score)", "(serving/service.py"),
    ("service: Prometheus metrics, JSON response (rest of FraudScorer.score)", "FraudScorerAsync.score ("),
    ("bare handler: Booster.predict", "_Bare._predict ("),
    ("guard: request schema validation (pydantic)", "Guard.validate (serving/guard.py"),
    ("guard: API key check and rate limit", "Guard.authorise (serving/guard.py"),
    ("guard: reading the body", "Guard.read_body (serving/guard.py"),
    ("guard: route metrics", "RouteMetrics.observe (serving/guard.py"),
]
LIBS = [
    ("guard: rest (ASGI wrapping)", "(serving/guard.py"),
    ("pydantic (BentoML's argument parsing and response serialisation)", "pydantic"),
    ("BentoML request path (app.py, io_models)", "_bentoml"),
    ("BentoML request path (app.py, io_models)", "bentoml/"),
    ("starlette routing and responses", "starlette/"),
    ("uvicorn / httptools HTTP protocol", "uvicorn/"),
    ("anyio thread-pool hop", "anyio/"),
    ("prometheus client", "prometheus_client"),
    ("OpenTelemetry", "opentelemetry"),
    ("json", "json/"),
    ("asyncio event loop", "asyncio/"),
    ("threading", "threading.py"),
]


def classify(frames: list[str]) -> str:
    proc = [f for f in frames if f.startswith("process ")]  # py-spy --subprocesses: parent, then child
    if proc and "-m bentoml serve" in proc[-1]:
        return "bentoml serve supervisor process"
    joined = ";".join(frames)
    for label, needle in PARTS:
        if needle in joined:
            return label
    for f in reversed(frames):
        for label, needle in LIBS:
            if needle in f:
                return label
    return "other"


def profile(server: Server, bodies_file: Path, key: str, rate: float, seconds: float, py_spy: str | None, out: Path,
            gil: bool = False) -> dict:
    """py-spy (sampling, non-blocking) on the server's process family while the load generator
    sends ``rate`` req/s; each sample in one part (:func:`classify`), and the top frames by own time."""
    if not py_spy or not Path(py_spy).exists():
        return {"skipped": f"py-spy not found{' at ' + py_spy if py_spy else ''} (pip install --target /tmp/pyspy py-spy; --py-spy /tmp/pyspy/bin/py-spy)"}
    n = int(rate * (seconds + 4))
    gen = subprocess.Popen([sys.executable, str(HERE / "loadgen.py"), "--url", f"{server.url}/score", "--bodies",
                            str(bodies_file), "--rate", str(rate), "--duration", str(seconds + 4), "--id-base",
                            str(next_ids(n)), "--header", f"Authorization: Bearer {key}"],
                           stdout=subprocess.PIPE, text=True, cwd=ROOT)
    time.sleep(2)
    raw = out.with_suffix(".txt")
    if server.kind == "vigil" and INTRADAY:
        INTRADAY[0].reset()
    p = subprocess.run([py_spy, "record", "--pid", str(server.proc.pid), "--subprocesses", "--nonblocking", "--rate", "100",
                        "--duration", str(int(seconds)), "--format", "raw", "--output", str(raw)] + (["--gil"] if gil else []),
                       capture_output=True, text=True)
    g = json.loads(gen.communicate()[0].strip().splitlines()[-1])
    settle(server)
    if p.returncode != 0 or not raw.exists():
        return {"skipped": f"py-spy failed: {p.stderr.strip()[-300:]}"}
    own, parts, total = Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames, c = stack.split(";"), int(count)
        total += c
        own[frames[-1]] += c
        parts[classify(frames)] += c
    return {"rate": rate, "seconds": seconds, "samples": total,
            "load_during_profile": {k: g[k] for k in ("p50_ms", "p99_ms", "errors", "rate_achieved")},
            "note": ("py-spy record --gil: only the thread holding the GIL is sampled (Python work; native calls that "
                     "release the GIL, SQLite's and LightGBM's, are undercounted)" if gil else
                     "py-spy record: every thread py-spy does not see as idle is sampled (a thread waiting for the GIL "
                     "or on a condition may count)") + "; --nonblocking --subprocesses at 100 Hz; each sample in exactly "
                    "one part (benchmarks/serving.py: classify)",
            "parts": {k: round(v / total, 3) for k, v in parts.most_common()},
            "top_own_time": [{"frame": f, "share": round(c / total, 3)} for f, c in own.most_common(15)],
            "raw": str(raw)}


# -- batch and wrk -------------------------------------------------------------------------------
def warm_engines(server: Server, key: str, bodies: list[dict], workers: int, limit_s: float = 180.0) -> dict:
    """Batches on new connections until every worker says its batch engine is ready (the compiled
    booster is built from a worker's first batch on, ``VIGIL_SERVING_COMPILED``): the timed calls
    measure the service as it runs, not while it compiles. The states seen, by worker pid."""
    import httpx

    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    seen: dict[int, str] = {}
    end = time.time() + limit_s
    while time.time() < end:
        with httpx.Client(base_url=server.url, timeout=60, headers=headers) as c:  # a new connection: any worker
            base = next_ids(256)
            c.post("/score_batch", content=json.dumps({"transactions": [{**bodies[i % len(bodies)], "transaction_id": base + i}
                                                                        for i in range(256)]}).encode())
            info = c.post("/model_info", content=b"{}").json()
        seen[info["pid"]] = info.get("batch_engine", "lightgbm")
        if len(seen) >= workers and all(not v.startswith("compiling") for v in seen.values()):
            break
        time.sleep(0.5)
    log(f"batch engines: {seen}")
    return seen


def batch_rows_per_s(server: Server, key: str, bodies: list[dict], full_lists: bool = False) -> dict:
    """``/score_batch`` with 1,000 and 10,000 new transactions a call (the body encoded before the
    clock starts): rows per second of the whole call as a client sees it. The cards' intraday
    lists are emptied before each call (a 10,000-row batch of the day's transactions then leaves
    ~7 a card), or, with ``full_lists``, filled to INTRADAY_MAX_TX (256) first: the worst case, a
    card hammered all day."""
    import httpx

    out = {}
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    with httpx.Client(base_url=server.url, timeout=120, headers=headers) as c:
        for size, reps in ((1000, 5), (10_000, 7)):
            times, handler = [], []
            for rep in range(reps + 1):  # the first call of each size is not timed: it fills the worker's
                # snapshot cache (its one connection keeps to one worker); the feature-cache-off server shows the cold cost
                if INTRADAY:
                    INTRADAY[0].fill() if full_lists else INTRADAY[0].reset()
                base = next_ids(size)
                body = json.dumps({"transactions": [{**bodies[i % len(bodies)], "transaction_id": base + i}
                                                    for i in range(size)]}).encode()
                s = time.perf_counter()
                r = c.post("/score_batch", content=body)
                took = time.perf_counter() - s
                assert r.status_code == 200, (r.status_code, r.text[:200])
                answer = r.json()
                assert len(answer) == size
                if rep:
                    times.append(took)
                    handler.append(answer[0]["latency_ms"] / 1000)
            out[str(size)] = {"rows_per_s_median": round(size / float(np.median(times))), "rows_per_s_best": round(size / min(times)),
                              "seconds": [round(t, 3) for t in times],
                              "in_handler_rows_per_s_median": round(size / float(np.median(handler))),
                              "body_bytes": len(body)}
    return out



def batch_concurrent(server: Server, key: str, bodies: list[dict], clients: int = 2, calls: int = 6, size: int = 10_000) -> dict:
    """``clients`` threads each posting ``calls`` batches of ``size`` new transactions back to back
    (bodies encoded beforehand): rows per second of the service as a whole, the wall clock from
    the first call's start to the last call's end. The cards' lists are emptied once, before."""
    import threading

    import httpx

    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    payloads = []
    for _ in range(clients * calls):
        base = next_ids(size)
        payloads.append(json.dumps({"transactions": [{**bodies[i % len(bodies)], "transaction_id": base + i}
                                                     for i in range(size)]}).encode())
    if INTRADAY:
        INTRADAY[0].reset()
    errors, lock = [], threading.Lock()

    def client(mine):
        with httpx.Client(base_url=server.url, timeout=120, headers=headers) as c:
            for body in mine:
                r = c.post("/score_batch", content=body)
                if r.status_code != 200:
                    with lock:
                        errors.append(r.status_code)

    threads = [threading.Thread(target=client, args=(payloads[i::clients],)) for i in range(clients)]
    s = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - s
    return {"clients": clients, "calls": clients * calls, "rows": clients * calls * size, "seconds": round(wall, 3),
            "rows_per_s": round(clients * calls * size / wall), "errors": errors}


WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
local pre, post = {%(pre)s}, {%(post)s}
local i = 0
request = function()
  i = i + 1
  local k = (i %% #pre) + 1
  return wrk.format(nil, "/score", nil, pre[k] .. string.format("%%.0f", %(base)d + i) .. post[k])
end
done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests": %%d, "seconds": %%.3f, "non_2xx": %%d, "socket_errors": %%d, "p50_ms": %%.3f, "p99_ms": %%.3f}\\n',
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def during_online_writes(server: Server, bodies_file: Path, key: str, paths, env: dict, seconds: float) -> dict:
    """``/score`` at 200 req/s while another process rewrites the newest day's snapshots and lists
    into the online store again and again (``MATERIALIZE_LOOP``), and how many rewrites that
    writer finished meanwhile: a fast endpoint beside a starved writer is no result (SQLite has one
    writer at a time; who waits is the question)."""
    progress = Path(tempfile.mkstemp(prefix="vigil-writer-")[1])
    writer = subprocess.Popen([sys.executable, "-c", MATERIALIZE_LOOP, str(paths.root), str(progress)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while progress.stat().st_size < 1 and writer.poll() is None:  # imports done, one rewrite alone
            time.sleep(0.1)
        t0, n0 = time.perf_counter(), progress.stat().st_size
        while progress.stat().st_size < n0 + 2 and writer.poll() is None:  # its pace without load
            time.sleep(0.05)
        alone_s = (time.perf_counter() - t0) / max(progress.stat().st_size - n0, 1)
        n1, t1 = progress.stat().st_size, time.perf_counter()
        r = load(server, bodies_file, key, 200, seconds)  # then settles: the server idle again
        during, span = progress.stat().st_size - n1, time.perf_counter() - t1
        still = writer.poll() is None
    finally:
        writer.kill()
        writer.wait()
        progress.unlink()
    return {**r, "writer_still_running_at_end": still, "writer_rewrite_s_alone": round(alone_s, 3),
            "writer_rewrites_during_load": during,
            "writer_rewrite_s_during_load": round(span / during, 3) if during else None}


def during_batches(server: Server, bodies_file: Path, key: str, bodies: list[dict], seconds: float) -> dict:
    """``/score`` at 200 req/s while one client posts 10,000-row batches back to back and another
    polls ``/livez`` every 20 ms: ``/score`` runs on the event loop, batches on threads, and a
    ``/score`` that finds the intraday lists held by a batch runs again on a thread, so neither
    the loop nor the probes wait for a batch."""
    import threading

    import httpx

    stop, livez, batches, errors = threading.Event(), [], [0], []

    def probe():
        with httpx.Client() as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                c.get(f"{server.url}/livez", timeout=10)
                livez.append(time.perf_counter() - t0)
                time.sleep(0.02)

    def post_batches():
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            while not stop.is_set():
                base = next_ids(10_000)
                r = c.post(f"{server.url}/score_batch", json={"transactions": [
                    {**bodies[i % len(bodies)], "transaction_id": base + i} for i in range(10_000)]})
                batches[0] += 1
                if r.status_code != 200:
                    errors.append(r.status_code)

    threads = [threading.Thread(target=probe), threading.Thread(target=post_batches)]
    for t in threads:
        t.start()
    time.sleep(1)
    r = load(server, bodies_file, key, 200, seconds)
    stop.set()
    for t in threads:
        t.join()
    ms = np.array(livez) * 1000
    return {"score_200": {k: r[k] for k in ("p50_ms", "p99_ms", "errors", "degraded", "rate_achieved")},
            "batches_10k_posted": batches[0], "batch_errors": errors,
            "livez_ms": {"p50": round(float(np.median(ms)), 2), "p99": round(float(np.percentile(ms, 99)), 2),
                         "max": round(float(ms.max()), 2), "probes": len(ms)}}


def wrk_closed_loop(server: Server, bodies: list[dict], key: str, connections: int, seconds: int, tmp: Path) -> dict:
    """Debian's wrk (closed loop: each connection sends when the last answer came), as a cross-check
    of the capacity the open-loop climb finds, and of the Python generator's own cost."""
    wrk = shutil.which("wrk")
    if not wrk:
        return {"skipped": "wrk not installed (apt-get install wrk)"}
    from loadgen import split_id

    pairs = [split_id(b) for b in bodies]
    lua = lambda bs: ",".join("[==[" + b.decode() + "]==]" for b in bs)
    script = tmp / f"wrk_{server.kind}.lua"
    script.write_text(WRK_LUA % {"key": key, "pre": lua(p for p, _ in pairs), "post": lua(q for _, q in pairs),
                                 "base": next_ids(10**6)})
    c0 = family_cpu(server.proc)
    p = subprocess.run([wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), server.url],
                       capture_output=True, text=True)
    line = next((x for x in p.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    settle(server)
    if line is None:
        return {"skipped": f"wrk failed: {p.stdout[-300:]} {p.stderr[-300:]}"}
    r = json.loads(line[8:])
    r["rate_achieved"] = round(r["requests"] / r["seconds"], 1)
    r["connections"] = connections
    r["server_cpu_s"] = round(family_cpu(server.proc) - c0, 2)
    return r


def fresh_pairs(url, key, paths, bodies, day, n=200):
    """Two new transactions per card, one second apart, sent back to back on the next day: the
    second one's ``customer_nb_tx_today`` (from the prediction log) must count the first."""
    import httpx
    import pandas as pd

    from vigil import prediction_log

    cards = list(dict.fromkeys(b["customer_id"] for b in bodies))[:n]
    base = next_ids(2 * n)
    # the next day, at a second of it no earlier run on this world used (lists of that day persist)
    noon = pd.Timestamp(day) + pd.Timedelta(days=1, seconds=3600 + (base // 10**8) % 60_000)
    gaps = []
    with httpx.Client(base_url=url, timeout=10, headers={"authorization": f"Bearer {key}"}) as client:
        for k, card in enumerate(cards):
            first = {**bodies[0], "customer_id": card, "transaction_id": base + 2 * k,
                     "tx_datetime": (noon + pd.Timedelta(seconds=k)).isoformat()}
            second = {**first, "transaction_id": base + 2 * k + 1, "tx_datetime": (noon + pd.Timedelta(seconds=k + 1)).isoformat()}
            client.post("/score", json=first)
            t1 = time.perf_counter()  # the second request leaves as soon as the first is answered
            client.post("/score", json=second)
            gaps.append((time.perf_counter() - t1) * 1000)
    time.sleep(0.5)  # the log writer's lines are written before the answer; give the reader a moment anyway
    logged = prediction_log.read_day(paths.predictions, noon.date())
    logged = logged[logged["transaction_id"] >= base].drop_duplicates("transaction_id").set_index("transaction_id")
    seconds = [logged.loc[base + 2 * k + 1, "seconds_since_prev_tx_today"] for k in range(len(cards))]
    seen = [logged.loc[base + 2 * k + 1, "customer_nb_tx_today"] >= 1 for k in range(len(cards))]
    return {"pairs": len(cards), "second_sees_first": int(sum(seen)), "seconds_since_prev_is_1": int(sum(s == 1 for s in seconds)),
            "second_request_latency": pct(gaps)}


# -- main ---------------------------------------------------------------------------------------
def setup(a):
    home = Path(a.home or tempfile.mkdtemp(prefix="vigil-bench-")) / "vigil"
    from _world import START, build

    t0 = time.perf_counter()
    paths, _ = build(home, 80, a.customers, a.customers * 2)
    log(f"world ready in {time.perf_counter() - t0:.0f}s at {home}")
    import pandas as pd

    from vigil import api_keys
    from vigil.processes import endpoint_env
    from vigil.replay import to_requests
    from vigil.settings import Settings
    from vigil.sources import FileSource

    day = START + pd.Timedelta(days=80).to_pytimedelta()
    bodies = to_requests(FileSource(paths.landing / "transactions").read(day))
    bodies_file = home / "bench-bodies.jsonl"
    bodies_file.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    reqs = [{**b, "tx_datetime": pd.Timestamp(b["tx_datetime"]).to_pydatetime()} for b in bodies]
    INTRADAY[:] = [Intraday(paths, bodies)]
    INTRADAY[0].reset()
    env = endpoint_env(paths.root)
    keys = Settings.from_env(env).keys_file()
    api_keys.revoke(keys, "bench")
    key = api_keys.create(keys, "bench")
    return home, paths, day, bodies, bodies_file, reqs, env, key


def config_env(env: dict, workers: int, threads: int, extra: dict | None = None) -> dict:
    return {**env, "VIGIL_SERVING_RATE_LIMIT": "1000000", "VIGIL_SERVING_WORKERS": str(workers),
            "VIGIL_SERVING_THREADS": str(threads), **(extra or {})}


def code_version() -> str:
    """The commit measured, and whether serving/ or vigil/ differed from it."""
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = git("status", "--porcelain", "--", "serving", "vigil")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes in serving/ or vigil/" if dirty else "")


def machine() -> dict:
    return {"code": code_version(), "nproc": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def summary(runs: list[dict]) -> dict:
    """Several runs of one rate: the median p50 and p99 (and every run's), errors summed."""
    med = lambda k: (round(float(np.median([r[k] for r in runs if r[k] is not None])), 3)
                     if any(r[k] is not None for r in runs) else None)
    return {"p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"), "rate_achieved": med("rate_achieved"),
            "errors": sum(r["errors"] for r in runs), "degraded": sum(r["degraded"] for r in runs),
            "handler_latency_ms_p50": med("handler_latency_ms_p50"), "handler_latency_ms_p99": med("handler_latency_ms_p99"),
            "sustained_in": f"{sum(r['sustained'] for r in runs)}/{len(runs)}",
            "p50_ms_each": [r["p50_ms"] for r in runs], "p99_ms_each": [r["p99_ms"] for r in runs],
            "server_cpu_ms_per_request": round(1000 * float(np.median([r["server_cpu_s"] / max(r["ok"], 1) for r in runs])), 3)}


def budgets(res: dict, setting: str) -> dict:
    sv = f"vigil{setting}"
    v200 = res["fixed_rates"][sv]["200"]["summary"]
    ratios = {r: x["p99"] for r, x in res["ratios_vigil_over_bare"][setting[1:] or "recommended"].items()}
    ih = res["in_handler"]["score"]["p99_ms"]
    top = res["highest_sustained"][sv]["rate"]
    batch = res["score_batch"]["10000"]["rows_per_s_median"]
    return {
        "200 req/s: p50 <= 3 ms (median of the repeats)": {"value": v200["p50_ms"], "met": v200["p50_ms"] is not None and v200["p50_ms"] <= 3},
        "200 req/s: p99 <= 10 ms (median of the repeats)": {"value": v200["p99_ms"], "met": v200["p99_ms"] is not None and v200["p99_ms"] <= 10},
        "200 req/s: 0 errors": {"value": v200["errors"], "met": v200["errors"] == 0},
        "Vigil p99 <= 1.1 x bare p99 at every rate": {"value": ratios, "met": all(x is not None and x <= 1.1 for x in ratios.values())},
        "moonshot: sustained >= 1000 req/s at p99 <= 25 ms": {"value": top, "met": (top or 0) >= 1000},
        "moonshot: in-handler p99 <= 1 ms (in process, log included)": {"value": ih, "met": ih <= 1.0},
        "/score_batch >= 50k rows/s (10,000-row batches, median)": {"value": batch, "met": batch >= 50_000},
    }


def run_main(a, py_spy):
    home, paths, day, bodies, bodies_file, reqs, env, key = setup(a)
    settings = {"": (a.workers, a.threads, a.handler)}
    if (a.workers, a.threads, a.handler) != DEFAULT and not a.no_default:
        settings["_default"] = DEFAULT
    res = {"machine": machine(), "command": "python benchmarks/serving.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M"),
           "settings": {("recommended" if k == "" else "default"): dict(zip(("workers", "threads", "handler"), v))
                        for k, v in settings.items()},
           "load_generator": "benchmarks/loadgen.py: open loop (fixed schedule; latency from the moment the generator "
                             "submits a request, waits for a free connection included), keep-alive connections opened "
                             "on demand (up to 256), its own process; each request a new transaction (unique id) "
                             f"cycling the {len(bodies)} transactions of the replayed day; the same bodies to both services",
           "labels": "vigil / bare: the recommended setting; vigil_default / bare_default: the service's default"}
    log("in process: bare booster, intraday step, handler breakdown")
    booster, new_tx, retry, row = bare_and_intraday(paths, reqs)
    res["in_process_bare_booster"], res["intraday_step_new_transaction"], res["intraday_step_retry"] = booster, new_tx, retry
    INTRADAY[0].reset()
    res["in_handler"] = in_process(paths, reqs)
    res["in_handler"]["intraday_list_length_at_end"] = INTRADAY[0].lengths()
    log(f"in handler: {res['in_handler']['score']}")
    INTRADAY[0].reset()  # the same without the snapshot cache (VIGIL_SERVING_FEATURE_CACHE=0): every read from SQLite
    res["in_handler_feature_cache_off"] = in_process(paths, reqs, feature_cache=0)
    log(f"in handler, feature cache off: {res['in_handler_feature_cache_off']['score']}")
    from vigil import registry
    from vigil.model import BOOSTER_FILE

    tag = registry.current(paths)["tag"]
    booster_file = Path(registry.model_info(paths, tag)["path"]) / BOOSTER_FILE
    bare_env = {"BARE_BOOSTER": str(booster_file), "BARE_ROW": json.dumps(row.tolist())}
    res["bare_service"] = {"target": {h: TARGETS["bare"][h] for h in ("sync", "async")}, "model": tag,
                           "row": "the imputed feature row of the day's first transaction"}
    specs = []
    for suffix, (w, t, h) in settings.items():
        cfg = config_env(env, w, t, bare_env)
        specs += [("vigil", h, cfg, f"vigil{suffix}"), ("bare", h, cfg, f"bare{suffix}")]
    with serve(specs, home) as servers:
        by = {s.label: s for s in servers}
        log(f"{len(servers)} servers ready; warm-up")
        for s in servers:
            load(s, bodies_file, key, 200, 3)
        runs = {s.label: {str(r): [] for r in RATES} for s in servers}
        # every rate a.repeats times, in rounds of every rate (a p99 of one 10 s run swung by 2x between
        # runs of the same code); in each, the servers take turns: all see the same machine
        for rate in [r for _ in range(a.repeats) for r in RATES]:
            for s in servers:
                r = load(s, bodies_file, key, rate, a.duration)
                runs[s.label][str(rate)].append(r)
                log(f"{s.label:13} {short(r)}")
        res["fixed_rates"] = {label: {rate: {"summary": summary(rs), "runs": rs} for rate, rs in x.items()}
                              for label, x in runs.items()}
        res["ratios_vigil_over_bare"] = {}
        for suffix in settings:
            fr = res["fixed_rates"]
            res["ratios_vigil_over_bare"][suffix[1:] or "recommended"] = {
                str(rate): {m: (round(fr[f"vigil{suffix}"][str(rate)]["summary"][f"{m}_ms"]
                                      / fr[f"bare{suffix}"][str(rate)]["summary"][f"{m}_ms"], 2)
                                if fr[f"bare{suffix}"][str(rate)]["summary"][f"{m}_ms"]
                                and fr[f"vigil{suffix}"][str(rate)]["summary"][f"{m}_ms"] else None)
                            for m in ("p50", "p99")}
                for rate in RATES}
        start = {s.label: max([r for r in RATES if any(x["sustained"] for x in runs[s.label][str(r)])], default=200)
                 for s in servers}
        climb = highest_sustained(servers, bodies_file, key, a.step, start)
        log("highest sustained: " + ", ".join(f"{k} {v['rate']}" for k, v in climb.items()))
        res["highest_sustained"] = climb
        res["capacity_req_s"] = {s.label: max(x["rate_achieved"] for rs in runs[s.label].values() for x in rs) for s in servers}
        vigil, bare = by["vigil"], by["bare"]
        log("closed-loop cross-check with wrk")
        res["wrk_closed_loop"] = {s.label: wrk_closed_loop(s, bodies, key, 8, 5, home) for s in servers}
        log(f"wrk {res['wrk_closed_loop']}")
        log("profile")
        res["profile"] = {"vigil": profile(vigil, bodies_file, key, 200, 10, py_spy, home / "profile-vigil"),
                          "vigil_gil": profile(vigil, bodies_file, key, 200, 10, py_spy, home / "profile-vigil-gil", gil=True),
                          "bare": profile(bare, bodies_file, key, 200, 10, py_spy, home / "profile-bare")}
        log("score_batch")
        res["batch_engines"] = warm_engines(vigil, key, bodies, RECOMMENDED[0])  # built (or loaded) before timing
        res["score_batch"] = batch_rows_per_s(vigil, key, bodies)
        log(f"score_batch {res['score_batch']}")
        log("during online-store writes; freshness")
        res["vigil_200_during_online_writes"] = during_online_writes(vigil, bodies_file, key, paths, env, a.duration)
        log("during 10,000-row batches: /score at 200 req/s and /livez")
        res["vigil_200_during_batches"] = during_batches(vigil, bodies_file, key, bodies, a.duration)
        log(f"during batches {res['vigil_200_during_batches']}")
        res["intraday_freshness"] = fresh_pairs(vigil.url, key, paths, bodies, day)
    res["intraday_list_length"] = {"in_the_real_day": round(len(bodies) / len({b["customer_id"] for b in bodies}), 2),
                                   "note": "emptied before each run against Vigil (Intraday.reset); mean at the end of each "
                                           "run in its intraday_list_length_at_end"}
    res["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    (home / "bench-serving-partial.json").write_text(json.dumps(res))  # kept if what follows fails
    res["budgets"] = {("recommended" if k == "" else "default"): budgets(res, k) for k in settings}
    from _world import write_result

    write_result("serving", res)


def batch_in_process(paths, reqs: list[dict], size: int = 10_000, reps: int = 3, feature_cache: int = 200_000,
                     compiled: bool = True) -> dict:
    """``Scorer.score`` on ``size``-row batches with its parts timed apart (as ``in_process``),
    beside ``model.predict`` alone on the same rows: the floor no handler gets under. ``compiled``:
    as the endpoint's default, the compiled booster (built, or loaded from the cache, before timing)."""
    from vigil.scoring import Scorer

    scorer = Scorer(paths, feature_cache=feature_cache, compiled=compiled)  # the cache holds the rows from the first call on
    if scorer.deployed.engine is not None:
        scorer.deployed.engine.start().join()
    gc.freeze()  # as the service does once its scorer is loaded (serving/service.py)
    parts: dict[str, list[float]] = {}
    cur: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*args, **kw):
            s = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                cur[name] = cur.get(name, 0.0) + time.perf_counter() - s
        return wrapper

    scorer.reader.read_matrix = timed("snapshot_reads", scorer.reader.read_matrix)
    scorer.intraday_step = timed("intraday_step", scorer.intraday_step)
    scorer.assemble = timed("assemble", scorer.assemble)
    model = scorer.deployed.model
    deployed_predict = scorer.deployed.predict
    object.__setattr__(scorer.deployed, "predict", timed("model", deployed_predict))  # Deployed is frozen
    import vigil.scoring

    render = vigil.scoring.log_lines
    vigil.scoring.log_lines = timed("log", render)  # the log: rendering its lines, then writing them (timed() adds up)
    scorer.log.append_lines = timed("log", scorer.log.append_lines)
    out = {}
    for lists in ("emptied", "full"):
        parts = {}
        for _ in range(reps):
            INTRADAY[0].reset() if lists == "emptied" else INTRADAY[0].fill()
            base = next_ids(size)
            batch = [{**reqs[i % len(reqs)], "transaction_id": base + i} for i in range(size)]
            cur.clear()
            s = time.perf_counter()
            scorer.score(batch)
            cur["score"] = time.perf_counter() - s
            for k, v in cur.items():
                parts.setdefault(k, []).append(v)
        med = {k: float(np.median(v)) for k, v in parts.items()}
        med["request_features_and_freshness"] = med["assemble"] - med["snapshot_reads"] - med["intraday_step"]
        med["response_and_rest"] = med["score"] - med["assemble"] - med["model"] - med["log"]
        out[f"intraday_lists_{lists}"] = {"rows_per_s": round(size / med["score"]),
                                          "seconds_median": {k: round(v, 4) for k, v in med.items()}}
    vigil.scoring.log_lines = render
    x = scorer.assemble([{**r, "transaction_id": 1} for r in (reqs * (size // len(reqs) + 1))[:size]])[0]
    t = []
    for _ in range(reps):
        s = time.perf_counter()
        model.predict(x)
        t.append(time.perf_counter() - s)
    out["model_predict_alone_rows_per_s"] = round(size / float(np.median(t)))
    if scorer.deployed.engine is not None:
        t = []
        for _ in range(reps):
            s = time.perf_counter()
            deployed_predict(x)
            t.append(time.perf_counter() - s)
        out["compiled_predict_alone_rows_per_s"] = round(size / float(np.median(t)))
        out["batch_engine"] = scorer.deployed.engine.state
    scorer.close()
    gc.unfreeze()
    return out


def run_batch(a):
    """``--batch``: ``/score_batch`` alone (issue 14 §1's 50k rows/s budget), in process with its
    parts, then through the real server with the service's default setting."""
    home, paths, day, bodies, bodies_file, reqs, env, key = setup(a)
    res = {"machine": machine(), "command": "python benchmarks/serving.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M"), "setting": dict(zip(("workers", "threads", "handler"), DEFAULT))}
    log("in process")
    res["in_process_10k"] = batch_in_process(paths, reqs)
    log(f"in process {res['in_process_10k']}")
    w, t, h = DEFAULT
    res["in_process_10k_feature_cache_off"] = batch_in_process(paths, reqs, feature_cache=0)
    log(f"in process, feature cache off {res['in_process_10k_feature_cache_off']}")
    res["in_process_10k_lightgbm"] = batch_in_process(paths, reqs, compiled=False)
    log(f"in process, LightGBM (VIGIL_SERVING_COMPILED=off) {res['in_process_10k_lightgbm']}")
    with serve([("vigil", h, config_env(env, w, t), "vigil"),
                ("vigil", h, config_env(env, w, t, {"VIGIL_SERVING_FEATURE_CACHE": "0"}), "vigil-cache-off")], home) as servers:
        res["batch_engines"] = warm_engines(servers[0], key, bodies, w)
        warm_engines(servers[1], key, bodies, w)
        res["http_lists_emptied"] = batch_rows_per_s(servers[0], key, bodies)
        res["http_lists_full"] = batch_rows_per_s(servers[0], key, bodies, full_lists=True)
        res["http_lists_emptied_feature_cache_off"] = batch_rows_per_s(servers[1], key, bodies)
    log(f"http {res['http_lists_emptied']['10000']} / full lists {res['http_lists_full']['10000']} / "
        f"cache off {res['http_lists_emptied_feature_cache_off']['10000']}")
    w, t, h = RECOMMENDED
    with serve([("vigil", h, config_env(env, w, t), "vigil-recommended"),
                ("vigil", h, config_env(env, w, t, {"VIGIL_SERVING_COMPILED": "off"}), "vigil-lightgbm")], home) as servers:
        warm_engines(servers[0], key, bodies, w)
        res["http_one_client_lightgbm"] = batch_rows_per_s(servers[1], key, bodies)
        res["http_two_clients_lightgbm"] = batch_concurrent(servers[1], key, bodies)
        res["http_two_clients_recommended"] = {"setting": dict(zip(("workers", "threads", "handler"), RECOMMENDED)),
                                               **batch_concurrent(servers[0], key, bodies)}
    log(f"two clients, recommended setting: {res['http_two_clients_recommended']}")
    res["budget"] = {"/score_batch >= 50k rows/s (10,000-row batches, median, lists emptied)": {
        "value": res["http_lists_emptied"]["10000"]["rows_per_s_median"],
        "met": res["http_lists_emptied"]["10000"]["rows_per_s_median"] >= 50_000}}
    res["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    from _world import write_result

    write_result("serving_batch", res)


# the service's own default (VIGIL_SERVING_WORKERS, VIGIL_SERVING_THREADS, /score on the event loop)
DEFAULT = (2, 4, "async")
RECOMMENDED = DEFAULT  # benchmarks/README.md, Recommendation
TUNE = [  # (workers, threads, handler)
    (1, 4, "sync"), (1, 1, "sync"), (1, 4, "async"), (2, 4, "sync"), (2, 1, "sync"), (2, 4, "async"), (2, 1, "async"),
]
TUNE_RATES = (200, 300, 400)


def run_tune(a):
    """Every setting of TUNE served at once (idle while another is measured), then ``rounds``
    rounds of every rate of TUNE_RATES for each, the settings taking turns at each rate in a new
    order every round: a noisy spell of the shared machine hits all settings alike."""
    import random

    home, paths, day, bodies, bodies_file, reqs, env, key = setup(a)
    res = {"machine": machine(), "command": "python benchmarks/serving.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M"), "step_s": a.step, "rounds": a.rounds, "rates": TUNE_RATES,
           "design": "all settings served at once; per round and rate, each setting once in a shuffled order "
                     "(a setting aborted as overloaded skips the higher rates of that round); "
                     "'sustained' = p99 <= 25 ms, 0 errors, 0 degraded, >= 97 % of the rate achieved", "settings": {}}
    specs = [("vigil", h, config_env(env, w, t), f"w{w}-t{t}-{h}") for w, t, h in TUNE]
    rng = random.Random(14)
    runs: dict[str, dict[str, list]] = {label: {str(r): [] for r in TUNE_RATES} for *_, label in specs}
    with serve(specs, home) as servers:
        log(f"{len(servers)} settings served; warm-up")
        for s in servers:
            load(s, bodies_file, key, 200, 3)
        for rnd in range(a.rounds):
            overloaded = set()  # aborted at a lower rate this round: higher rates say nothing new
            for rate in TUNE_RATES:
                order = [s for s in servers if s.label not in overloaded]
                rng.shuffle(order)
                for s in order:
                    r = load(s, bodies_file, key, rate, a.step)
                    runs[s.label][str(rate)].append(r)
                    log(f"round {rnd + 1} {s.label:14} {short(r)}")
                    if r["aborted_after_s"] is not None:
                        overloaded.add(s.label)
    keep = ("rate_achieved", "p50_ms", "p99_ms", "errors", "degraded", "handler_latency_ms_p50", "handler_latency_ms_p99",
            "server_cpu_s", "generator_cpu_s", "aborted_after_s", "sustained")
    for w, t, h in TUNE:
        label = f"w{w}-t{t}-{h}"
        per_rate = {}
        for rate, rs in runs[label].items():
            if not rs:
                continue
            per_rate[rate] = {"runs": [{k: r[k] for k in keep} for r in rs],
                              "p50_ms_median": float(np.median([r["p50_ms"] for r in rs if r["p50_ms"] is not None] or [np.nan])),
                              "p99_ms_median": float(np.median([r["p99_ms"] for r in rs if r["p99_ms"] is not None] or [np.nan])),
                              "handler_p99_ms_median": float(np.median([r["handler_latency_ms_p99"] or np.nan for r in rs])),
                              "sustained_in": f"{sum(r['sustained'] for r in rs)}/{len(rs)}",
                              "server_cpu_ms_per_request": round(1000 * float(np.median([r["server_cpu_s"] / max(r["ok"], 1) for r in rs])), 3)}
        every = max([int(r) for r, v in per_rate.items() if all(x["sustained"] for x in v["runs"])], default=None)
        once = max([int(r) for r, v in per_rate.items() if any(x["sustained"] for x in v["runs"])], default=None)
        allruns = [x for v in per_rate.values() for x in v["runs"]]
        res["settings"][label] = {
            "workers": w, "threads": t, "handler": h,
            "highest_rate_sustained_in_every_round": every, "highest_rate_sustained_in_some_round": once,
            "capacity_req_s": max(x["rate_achieved"] for x in allruns),  # the most answered per second in any run
            "degraded_answers": sum(x["degraded"] for x in allruns),
            "per_rate": per_rate}
        log(f"{label}: sustained every round {every}, some round {once}, capacity {res['settings'][label]['capacity_req_s']}")
    res["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    from _world import write_result

    write_result("serving_tuning", res)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default="")
    ap.add_argument("--customers", type=int, default=2000)
    # the recommended setting (benchmarks/README.md); the service's default (1, 4, sync) is served beside it
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--handler", choices=("sync", "async"), default="async")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per fixed-rate run")
    ap.add_argument("--step", type=float, default=5.0, help="seconds per step of the climb")
    ap.add_argument("--tune", action="store_true", help="every workers/threads/handler choice at fixed rates (Vigil only)")
    ap.add_argument("--batch", action="store_true", help="/score_batch only: in process with its parts, then over HTTP")
    ap.add_argument("--rounds", type=int, default=3, help="--tune: rounds of every rate and setting")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each fixed rate (the ratios and budgets take their median)")
    ap.add_argument("--no-default", action="store_true", help="do not serve the default setting beside the chosen one")
    ap.add_argument("--py-spy", default=shutil.which("py-spy") or ("/tmp/pyspy/bin/py-spy" if Path("/tmp/pyspy/bin/py-spy").exists() else ""))
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped benchmark still stops its servers
    t0 = time.time()
    run_tune(a) if a.tune else run_batch(a) if a.batch else run_main(a, a.py_spy or None)
    log(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
