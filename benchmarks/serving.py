"""Serving benchmark: p50/p99 of POST /score over loopback at a fixed request rate, beside bare
``Booster.predict`` on the same rows and the in-process scorer (Feast read + model + policy + log),
all in the same run so the ratios survive a noisy shared machine. Also the real-time path: the
cost of the intraday step (read the card's list of today's transactions, add the request, write it
back) and its freshness (is a transaction visible to the very next request of the same card?).

    .venv/bin/python benchmarks/serving.py [--rate 200] [--requests 3000] [--home DIR]
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(a):
    a = np.asarray(a)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


MATERIALIZE_LOOP = """
import sys, datetime as dt
from vigil import config, feature_repo, lake
paths = config.paths(sys.argv[1])
store = feature_repo.open_store(paths)
reader = feature_repo.OnlineReader(store)
days = lake.available_days(paths.features / "customer")
for _ in range(500):  # the online_features asset re-running the newest day: a full rewrite each time
    feature_repo.write_online(store, paths, days[-1], reader)
"""


def paced(client, bodies, rate):
    lat, errors = [], 0
    start = time.perf_counter()
    for i, b in enumerate(bodies):
        due = start + i / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        s = time.perf_counter()
        r = client.post("/score", json=b)
        lat.append((time.perf_counter() - s) * 1000)
        errors += r.status_code != 200
    return lat, errors, len(bodies) / (time.perf_counter() - start)


def fresh_pairs(client, paths, bodies, day, n=200):
    """Two new transactions per card, one second apart, sent back to back on the next day: the
    second one's ``customer_nb_tx_today`` (from the prediction log) must count the first."""
    import pandas as pd

    from vigil import prediction_log

    cards = list(dict.fromkeys(b["customer_id"] for b in bodies))[:n]
    noon = pd.Timestamp(day) + pd.Timedelta(days=1, hours=12)
    base = 10**12
    gaps = []
    for k, card in enumerate(cards):
        first = {**bodies[0], "customer_id": card, "transaction_id": base + 2 * k,
                 "tx_datetime": (noon + pd.Timedelta(seconds=k)).isoformat()}
        second = {**first, "transaction_id": base + 2 * k + 1, "tx_datetime": (noon + pd.Timedelta(seconds=k + 1)).isoformat()}
        client.post("/score", json=first)
        t1 = time.perf_counter()  # the second request leaves as soon as the first is answered
        client.post("/score", json=second)
        gaps.append((time.perf_counter() - t1) * 1000)
    logged = prediction_log.read_day(paths.predictions, noon.date())
    logged = logged[logged["transaction_id"] >= base].set_index("transaction_id")
    seconds = [logged.loc[base + 2 * k + 1, "seconds_since_prev_tx_today"] for k in range(len(cards))]
    seen = [logged.loc[base + 2 * k + 1, "customer_nb_tx_today"] >= 1 for k in range(len(cards))]
    return {"pairs": len(cards), "second_sees_first": int(sum(seen)), "seconds_since_prev_is_1": int(sum(s == 1 for s in seconds)),
            "second_request_latency": pct(gaps)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--home", default="")
    ap.add_argument("--customers", type=int, default=2000)
    a = ap.parse_args()
    home = Path(a.home or tempfile.mkdtemp(prefix="vigil-bench-")) / "vigil"
    from _world import START, build

    t0 = time.perf_counter()
    paths, _ = build(home, 80, a.customers, a.customers * 2)
    print(f"world ready in {time.perf_counter() - t0:.0f}s at {home}", file=sys.stderr)

    import httpx
    import pandas as pd

    from vigil.sources import FileSource
    from vigil.replay import to_requests
    from vigil.scoring import Scorer

    day = START + pd.Timedelta(days=80).to_pytimedelta()
    frame = FileSource(paths.landing / "transactions").read(day)
    bodies = to_requests(frame)
    bodies = (bodies * (a.requests // len(bodies) + 1))[: a.requests]

    # bare model on the same rows (features from the in-process scorer)
    scorer = Scorer(paths, log_predictions=False)
    reqs = [{**b, "tx_datetime": pd.Timestamp(b["tx_datetime"]).to_pydatetime()} for b in bodies[:1000]]
    x = np.vstack([scorer.assemble([r])[0] for r in reqs])
    model = scorer.deployed.model
    booster_lat, scorer_lat = [], []
    for i in range(len(x)):
        s = time.perf_counter()
        model.booster.predict(x[i : i + 1], num_threads=1)
        booster_lat.append((time.perf_counter() - s) * 1000)
    for r in reqs:
        s = time.perf_counter()
        scorer.score([r])
        scorer_lat.append((time.perf_counter() - s) * 1000)
    intraday_lat, retry_lat = [], []  # the real-time step alone: a new transaction (read, add, write), a retry (read)
    for lat, base in ((intraday_lat, 10**13), (retry_lat, 10**13)):
        for k, r in enumerate(reqs):
            r = {**r, "transaction_id": base + k, "tx_datetime": r["tx_datetime"] + pd.Timedelta(days=1).to_pytimedelta()}
            e = np.array([int(pd.Timestamp(r["tx_datetime"]).timestamp())])
            s = time.perf_counter()
            scorer.intraday_step([r], e, np.array([r["tx_amount"]]))
            lat.append((time.perf_counter() - s) * 1000)
    scorer.close()

    from vigil.processes import endpoint_env, serve_endpoint

    env = endpoint_env(paths.root)
    with serve_endpoint(paths.root, paths.root / "bench-serving.log", env=env) as (url, _):
        with httpx.Client(base_url=url, timeout=5) as c:
            for b in bodies[:200]:  # warm-up
                c.post("/score", json=b)
            http_lat, errors, achieved = paced(c, bodies, a.rate)
            # the same load while the newest day is re-written into the online store again and again,
            # in another process (the known trap: SQLite writes stalling online reads)
            writer = subprocess.Popen([sys.executable, "-c", MATERIALIZE_LOOP, str(paths.root)], cwd=ROOT, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(3)  # let its imports finish, so the load overlaps the writes
            mat_lat, mat_errors, _ = paced(c, bodies, a.rate)
            still_writing = writer.poll() is None
            writer.kill()
            writer.wait()
            freshness = fresh_pairs(c, paths, bodies, day)

    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cores {platform.processor() or platform.machine()}",
        "command": "python benchmarks/serving.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "rate_target": a.rate, "rate_achieved": round(achieved, 1), "requests": len(bodies), "errors": errors,
        "http_score": pct(http_lat),
        "http_score_during_materialization": {**pct(mat_lat), "max_ms": round(max(mat_lat), 2), "errors": mat_errors,
                                              "writer_still_running_at_end": still_writing},
        "in_process_scorer": pct(scorer_lat), "bare_booster": pct(booster_lat),
        "intraday_step_new_transaction": pct(intraday_lat), "intraday_step_retry": pct(retry_lat),
        "intraday_freshness": freshness,
    }
    result["intraday_share_of_http_p50"] = round(result["intraday_step_new_transaction"]["p50_ms"] / result["http_score"]["p50_ms"], 3)
    result["ratio_http_p50_to_booster_p50"] = round(result["http_score"]["p50_ms"] / result["bare_booster"]["p50_ms"], 1)
    from _world import write_result

    write_result("serving", result)


if __name__ == "__main__":
    main()
