"""``vigil demo``: the whole loop on the embedded defaults, as a user would run it by hand.

The demo drives Dagster through its own command line (``dagster asset materialize``,
``dagster job execute``, ``dagster dev``) and BentoML through ``bentoml serve``, so the core
package never imports either orchestration or serving code, and what the demo runs is exactly
what the README tells a user to type.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from vigil import config
from vigil.settings import Settings
from vigil.processes import endpoint_command, free_port, start, stop, wait_http

ROOT = Path(__file__).resolve().parents[1]
DAILY_ASSETS = [
    "raw_transactions", "label_feed", "validated_transactions", "validated_labels", "feature_snapshots",
    "online_features", "prediction_log_daily", "drift_report", "live_performance_daily",
]
DEMO_MARKER = ".vigil-demo"


def say(msg: str) -> None:
    """Progress goes to stderr, so ``--json`` keeps stdout machine-readable."""
    print(f"[vigil {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def environment(home: Path, start: date, end: date) -> dict:
    env = dict(os.environ)
    env.update({
        "VIGIL_HOME": str(home),
        "VIGIL_START_DATE": start.isoformat(),
        "VIGIL_END_DATE": end.isoformat(),  # the daily partitions end at the replayed day, not today
        "DAGSTER_HOME": str(home / "dagster"),
        "BENTOML_HOME": str(home / "bentoml"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        # the demo backfills with `dagster asset materialize --partition-range`, which takes one run
        # for the range only (a user's multi-run setting would refuse it)
        "VIGIL_BACKFILL_PARTITIONS_PER_RUN": "0",
    })
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    env.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    return env


PG_VARS = ("VIGIL_PG_HOST", "VIGIL_PG_PORT", "VIGIL_PG_DB", "VIGIL_PG_USER")  # infra/dagster/dagster.yaml's


def prepare_dagster_home(home: Path, profile: str, env: dict, wipe: bool = False) -> None:
    """``$DAGSTER_HOME`` with the profile's instance config: SQLite under it (local), or runs,
    events, schedules and sensor ticks in PostgreSQL (production, ``infra/dagster/dagster.yaml``;
    compute logs stay under it). A demo replays fixed dates, so its sensors' run keys would match
    an earlier demo's runs: the PostgreSQL storage must hold no runs, or ``wipe`` empties it."""
    dh = home / "dagster"
    dh.mkdir(parents=True, exist_ok=True)
    if profile != "production":
        shutil.copyfile(ROOT / "dagster.yaml", dh / "dagster.yaml")
        return
    missing = [v for v in PG_VARS if not env.get(v)]
    if missing:
        raise SystemExit(f"VIGIL_PROFILE=production keeps Dagster's storage in PostgreSQL: set {', '.join(missing)} "
                         "(and VIGIL_PG_PASSWORD if the server asks for one); see infra/dagster/dagster.yaml")
    shutil.copyfile(ROOT / "infra" / "dagster" / "dagster.yaml", dh / "dagster.yaml")
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dh)) as instance:
        runs = instance.get_runs_count()
        if runs and not wipe:
            raise SystemExit(f"Dagster's storage in PostgreSQL (database {env['VIGIL_PG_DB']}) already holds {runs} runs; "
                             "the demo needs a database of its own (its sensors' run keys would match earlier runs): "
                             "point VIGIL_PG_DB at an empty one, or pass --wipe-dagster-storage to empty it")
        if runs:
            say(f"wiping {runs} runs, their events and the sensor ticks from Dagster's storage ({env['VIGIL_PG_DB']})")
            instance.wipe()
            instance.wipe_all_schedules()


def run_dagster(args: list[str], env: dict, log_file: Path) -> None:
    """Run a ``dagster`` CLI command to completion, echoing progress lines; raise on failure."""
    cmd = [sys.executable, "-m", "dagster", *args, "-m", "pipelines.definitions", "-d", str(ROOT)]
    with open(log_file, "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail: list[str] = []
        for line in p.stdout:
            log.write(line)
            tail = (tail + [line.rstrip()])[-30:]
            m = re.search(r"(landed|validated|snapshots): \d+/\d+ days", line)
            if m:
                say(f"  {m.group(0)}")
        rc = p.wait()
    if rc != 0:
        raise SystemExit(f"dagster {' '.join(args[:2])} failed (exit {rc}); last lines:\n" + "\n".join(tail) + f"\nfull log: {log_file}")


def gate_failures(paths) -> list[str]:
    """The failed gate rules of the newest evaluated candidate (its ``evaluation.json``), if any."""
    import json

    records = sorted(paths.models.glob("training_sets/*/evaluation.json"), key=lambda f: f.stat().st_mtime)
    return json.loads(records[-1].read_text()).get("gate_failures", []) if records else []


def parse_drift(spec: str | None):
    from vigil.simulator import Drift

    if not spec:
        return []
    out = []
    for part in spec.split(","):
        bits = part.split(":")
        out.append(Drift(bits[0], int(bits[1]), float(bits[2]) if len(bits) > 2 else 0.05))
    return out


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def demo(a: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    signal.signal(signal.SIGTERM, _interrupt)  # a terminated demo still stops what it started
    home = Path(a.home).resolve() if a.home else Settings.from_env().home
    if home.exists() and any(home.iterdir()):
        if not (home / DEMO_MARKER).exists():
            raise SystemExit(f"{home} holds data that is not a previous demo's; pass --home to use another folder")
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / DEMO_MARKER).write_text("created by vigil demo; removed by the next vigil demo\n")
    os.environ["VIGIL_HOME"] = str(home)
    start_day = date.fromisoformat(a.start_date)
    env = environment(home, start_day, start_day + timedelta(days=a.days))  # the replayed day is the last
    os.environ.update({k: env[k] for k in ("VIGIL_START_DATE", "VIGIL_END_DATE", "DAGSTER_HOME", "BENTOML_HOME")})
    settings = Settings.from_env(env)
    prepare_dagster_home(home, settings.profile, env, wipe=getattr(a, "wipe_dagster_storage", False))
    logs = home / "logs"
    logs.mkdir()
    paths = config.paths(home)
    timings: dict[str, float] = {}

    def step(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)

    # 1. the source system
    from vigil.simulator import TX_COLUMNS, simulate, write_landing

    t0 = time.perf_counter()
    say(f"simulating {a.days + 2} days: {a.customers} customers, {a.terminals} terminals (seed {a.seed}); "
        f"the last two are live traffic")
    sim = simulate(a.customers, a.terminals, a.days + 2, start_day, a.seed, parse_drift(a.drift))  # + a rollout day
    write_landing(sim, paths.landing, days=range(a.days))  # the replayed day's file arrives after its traffic
    last, replay_day = sim.day(a.days - 1), sim.day(a.days)
    # rollout steps sized to the replayed traffic: the 5 % canary is judged within a quarter of it
    daily = int((sim.transactions["tx_datetime"].dt.date == replay_day).sum())
    env["VIGIL_ROLLOUT_MIN_REQUESTS"] = str(max(10, min(200, int(daily * 0.05 / 4))))
    env["VIGIL_ROLLOUT_MIN_SECONDS"] = "5"
    say(f"  {len(sim.transactions):,} transactions, fraud rate {sim.transactions['tx_fraud'].mean():.2%}, landing files in {paths.landing}")
    step("simulate", t0)

    # 2. the daily pipeline as one single-run backfill, then training
    dlog = logs / "dagster-cli.log"
    t0 = time.perf_counter()
    say("feast apply (asset feast_registry)")
    run_dagster(["asset", "materialize", "--select", "feast_registry"], env, dlog)
    say(f"daily pipeline backfill {start_day}...{last} as a single run")
    run_dagster(["asset", "materialize", "--select", ",".join(DAILY_ASSETS), "--partition-range", f"{start_day}...{last}"], env, dlog)
    step("backfill", t0)
    t0 = time.perf_counter()
    say("retraining job: training set from Feast, model, evaluation gate, registration, promotion")
    try:
        run_dagster(["job", "execute", "-j", "retraining"], env, dlog)
    except SystemExit:
        failures = gate_failures(paths)
        if failures:  # the gate said no: say which rules, not a traceback
            raise SystemExit(f"vigil demo: the evaluation gate rejected the model: {'; '.join(failures)} "
                             f"(thresholds: GateConfig in the README; full log: {dlog})") from None
        raise
    step("train_register_promote", t0)

    from vigil import registry

    prod = registry.current(paths)
    if prod is None:
        raise SystemExit(f"no model was promoted (evaluation gate failed?); see {dlog}")
    info = registry.model_info(paths, prod["tag"])
    pm = info["metadata"]["metrics"]
    say(f"  promoted {prod['tag']}: Handbook protocol AUC {pm['handbook_auc']:.3f}, AP {pm['handbook_average_precision']:.3f}, "
        f"CP@100 {pm['handbook_card_precision_at_100']:.3f}")

    # 3. Dagster (webserver + daemon) and the endpoint, which answers only with an API key
    from vigil import api_keys

    t0 = time.perf_counter()
    keys_file = Settings.from_env(env).keys_file()
    api_keys.revoke(keys_file, "demo")
    a.api_key = api_keys.create(keys_file, "demo")
    dport, sport = free_port(a.dagster_port), free_port(a.serving_port)
    from vigil.reports import serve_in_thread

    reports_server, reports_url = serve_in_thread(paths.monitoring, free_port(3002))  # the UI's report links
    env["VIGIL_REPORTS_URL"] = reports_url
    dagster = start([sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(dport)],
                    env, logs / "dagster-dev.log")
    server = start(endpoint_command(sport), env, logs / "serving.log")
    procs = [server, dagster]
    try:
        serving_url, dagster_url = f"http://127.0.0.1:{sport}", f"http://127.0.0.1:{dport}"
        say(f"starting endpoint at {serving_url} and Dagster at {dagster_url}")
        wait_http(f"{serving_url}/readyz", 180, server, "BentoML endpoint", logs / "serving.log")
        wait_http(f"{dagster_url}/server_info", 240, dagster, "Dagster webserver", logs / "dagster-dev.log")
        step("start_services", t0)

        # 4. live traffic: replay the next day through HTTP
        from vigil.replay import replay, to_requests

        t0 = time.perf_counter()
        tx = sim.transactions  # the day's traffic, before the day's batch file exists
        frame = tx.loc[tx["tx_datetime"].dt.date == replay_day, TX_COLUMNS]
        bodies = to_requests(frame)
        say(f"replaying {replay_day} as HTTP traffic: {len(bodies):,} requests")
        stats = replay(serving_url, bodies, concurrency=a.concurrency, api_key=a.api_key,
                       progress=lambda n, total: say(f"  {n:,}/{total:,} requests"))
        rs = stats.summary()
        say(f"  {rs['ok']:,} ok, {rs['client_errors']} 4xx, {rs['server_errors']} 5xx; p50 {rs['p50_ms']:.2f} ms, p99 {rs['p99_ms']:.2f} ms "
            f"at {rs['rate_per_s']}/s")
        step("replay", t0)

        # 5. the day's batch file arrives; Dagster's landing sensor launches the daily pipeline for it
        #    (ingestion, features, prediction log, Evidently drift report), unattended
        t0 = time.perf_counter()
        write_landing(sim, paths.landing, days=range(a.days, a.days + 1), labels=False)
        t_file = time.perf_counter()
        say(f"{replay_day}'s transaction file delivered to the landing zone; waiting for the landing sensor's run")
        daily = wait_for_run(dagster_url, {"vigil/trigger": "landing", "dagster/partition": str(replay_day)}, a.wait_run)
        if daily["status"] != "SUCCESS":
            raise SystemExit(f"daily pipeline run for {replay_day}: {daily}; see the Dagster UI at {dagster_url}")
        step("monitor", t0)
        drift_file = paths.monitoring / "drift" / f"{replay_day}.json"
        drift = json.loads(drift_file.read_text()) if drift_file.exists() else {"dataset_drift": None}
        retraining = None
        if drift.get("dataset_drift") and a.wait_retrain > 0:
            t0 = time.perf_counter()
            say(f"drift detected (share {drift['drift_share']:.2f}): waiting for the drift sensor's retraining run "
                f"(Dagster daemon, up to {a.wait_retrain}s)")
            retraining = wait_for_run(dagster_url, {"vigil/trigger": "drift"}, a.wait_retrain)
            say(f"  retraining run: {retraining}")
            step("sensor_retraining", t0)
            if retraining and retraining["status"] == "SUCCESS":
                t0 = time.perf_counter()
                loop = roll_out(paths, serving_url, sim, a, t_file)
                retraining["model_version"] = loop.get("candidate") or registry.current(paths)["tag"]
                retraining["rollout"] = loop
                step("rollout", t0)

        summary = {
            "model_version": prod["tag"],
            "metrics": {k: info["metadata"]["metrics"][k] for k in SUMMARY_METRICS},
            "training_window": info["metadata"]["lineage"],
            "served_requests": rs["ok"],
            "rejected_requests": rs["client_errors"],
            "failed_requests": rs["server_errors"],
            "serving_p50_ms": round(rs["p50_ms"], 3),
            "serving_p99_ms": round(rs["p99_ms"], 3),
            "drift_detected": drift.get("dataset_drift"),
            "drift_share": drift.get("drift_share"),
            "drift_report": drift.get("url") or drift.get("html"),
            "retraining": retraining,
            "loop": loop_summary(a, sim, replay_day, drift, retraining),
            "api_key": a.api_key,  # created for this demo (hashed in its home); curl -H "Authorization: Bearer <key>"
            "urls": {"dagster": dagster_url, "serving": serving_url, "score": f"{serving_url}/score", "metrics": f"{serving_url}/metrics",
                     "reports": reports_url},
            "vigil_home": str(home),
            "timings_s": timings,
            "wall_seconds": round(time.perf_counter() - t_start, 1),
        }
        if a.json:
            print(json.dumps(summary, indent=1, default=str))
        else:
            print_summary(summary)
        if not a.once:
            say("running; Ctrl-C stops Dagster and the endpoint")
            try:
                while all(p.poll() is None for p in procs):
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return summary
    finally:
        for p in procs:
            stop(p)


def roll_out(paths, serving_url: str, sim, a, t_file: float) -> dict:
    """The retrained model's rollout, watched while the next day's traffic arrives: the rollout
    sensor (Dagster daemon) moves it through shadow and the canary steps; the summary keeps every
    step's verdict, the old and new model's AP on the shadow's requests (the simulator's ground
    truth, which only a replay knows), and the wall time from the drifted day's file to the new
    model answering every request."""
    import threading

    from vigil import registry, rollout
    from vigil.replay import replay, to_requests
    from vigil.simulator import TX_COLUMNS

    state = rollout.read_state(paths)
    if state is None:
        prod = registry.current(paths)["tag"]
        return {"candidate": None, "result": "direct", "note": f"no rollout in progress; {prod} serves"}
    cand = state["candidate"]
    day = sim.day(a.days + 1)
    tx = sim.transactions
    bodies = to_requests(tx.loc[tx["tx_datetime"].dt.date == day, TX_COLUMNS])
    rate = max(5.0, len(bodies) / a.rollout_seconds)
    say(f"rolling {cand} out beside {state['champion']}: {day}'s {len(bodies):,} requests at {rate:.0f}/s while the "
        f"rollout sensor judges each step")
    done, stats = threading.Event(), {}
    sender = threading.Thread(target=lambda: stats.update(r=replay(serving_url, bodies, a.concurrency, rate, stop=done, api_key=a.api_key)),
                              daemon=True)
    sender.start()
    result, promoted_s, seen = "in progress", None, None
    while sender.is_alive():
        time.sleep(2)
        st = rollout.read_state(paths)
        if st is not None and (st["stage"], st["percent"]) != seen:
            seen = (st["stage"], st["percent"])
            say(f"  rollout step: {st['stage']}{'' if st['stage'] == 'shadow' else ' ' + str(st['percent']) + ' %'}")
        if st is None:
            stage = registry.records(paths).version(cand)["stage"]
            result = "promoted" if stage == "production" else "rolled back" if stage == "rejected" else stage
            promoted_s = round(time.perf_counter() - t_file, 1) if result == "promoted" else None
            time.sleep(3)  # the endpoint follows the pointer within 2 s: the last requests show it
            done.set()
    sender.join()
    say(f"  rollout {result}" + (f": {cand} answers every request, {promoted_s} s after the drifted day's file"
                                 if promoted_s else ""))
    moves = [{"to": t["to_stage"], "at": t["at"], "reason": t["reason"][:300]} for t in registry.records(paths).transitions(cand)]
    out = {"candidate": cand, "champion": state["champion"], "result": result, "steps": moves,
           "file_to_full_traffic_s": promoted_s, "requests": stats["r"].summary() if "r" in stats else None}
    paired = rollout.paired(rollout.read_rows(paths, cand, "")).drop_duplicates("transaction_id")
    truth = paired["transaction_id"].isin(set(tx.loc[tx["tx_fraud"] == 1, "transaction_id"])) if len(paired) else None
    if truth is not None and 0 < truth.sum() < len(truth):
        from sklearn.metrics import average_precision_score

        out["post_drift_ap_truth"] = {
            "protocol": "requests of the rollout day scored by both models (shadow, and the canary's candidate "
                        "requests), every row, the simulator's ground truth",
            "rows": int(len(paired)), "frauds": int(truth.sum()),
            "old_model": round(float(average_precision_score(truth, paired["old"])), 4),
            "new_model": round(float(average_precision_score(truth, paired["new"])), 4)}
    return out


def loop_summary(a, sim, replay_day, drift: dict, retraining: dict | None) -> dict | None:
    """The closed loop in figures: drift onset and detection, the retraining run, the rollout and
    its verdicts, old vs new model on post-drift traffic, wall time from the drifted day's file
    to the new model answering every request."""
    if not a.drift:
        return None
    onset = min((sim.day(d.day) for d in parse_drift(a.drift)), default=None)
    ro = (retraining or {}).get("rollout") or {}
    return {"drift_onset_day": str(onset) if onset else None,
            "detection_day": str(replay_day) if drift.get("dataset_drift") else None,
            "retraining_run": (retraining or {}).get("run_id"), "retraining_status": (retraining or {}).get("status"),
            "rollout_result": ro.get("result"), "rollout_steps": ro.get("steps"),
            "post_drift_ap_truth": ro.get("post_drift_ap_truth"),
            "file_to_full_traffic_s": ro.get("file_to_full_traffic_s")}


RUNS_QUERY = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
  ... on Runs { results { runId status jobName tags { key value } } } } }"""


def wait_for_run(dagster_url: str, tags: dict, timeout: float) -> dict:
    """Poll Dagster's GraphQL API for the newest run carrying ``tags`` until it finishes."""
    import httpx

    deadline, last = time.time() + timeout, None
    variables = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
    while time.time() < deadline:
        try:
            r = httpx.post(f"{dagster_url}/graphql", json={"query": RUNS_QUERY, "variables": variables}, timeout=10)
            runs = r.json()["data"]["runsOrError"].get("results", [])
        except (httpx.HTTPError, KeyError, ValueError):
            runs = []
        if runs:
            run = runs[0]
            if run["status"] != last:
                say(f"  run {run['runId'][:8]} ({run['jobName']}): {run['status']}")
                last = run["status"]
            if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                tags = {t["key"]: t["value"] for t in run["tags"]}
                return {"run_id": run["runId"], "status": run["status"], "run_key": tags.get("dagster/run_key")}
        time.sleep(3)
    return {"status": "TIMEOUT", "waited_s": timeout}


SUMMARY_METRICS = ("handbook_auc", "handbook_average_precision", "handbook_card_precision_at_100",
                   "week_auc", "week_average_precision", "week_card_precision_at_100")


def _retraining_line(s: dict) -> str:
    r = s["retraining"]
    if r is None:
        return "not needed: no drift" if not s["drift_detected"] else "not waited for (--wait-retrain 0)"
    if not isinstance(r, dict) or "status" not in r:
        return "no run within the wait"
    ro = r.get("rollout") or {}
    if ro.get("result") == "promoted":
        new = f"; {r['model_version']} rolled out (shadow, canary 5/25/50 %) and serves all traffic " \
              f"{ro['file_to_full_traffic_s']} s after the drifted day's file"
    elif ro.get("result") in ("rolled back", "in progress"):
        new = f"; rollout of {r['model_version']} {ro['result']}"
    else:
        new = f", now serving {r['model_version']}" if r.get("model_version") else ""
    ap = ro.get("post_drift_ap_truth")
    if ap:
        new += f"; post-drift AP (ground truth, {ap['rows']} requests) old {ap['old_model']:.3f} -> new {ap['new_model']:.3f}"
    return f"run {str(r.get('run_id', '?'))[:8]} {r['status'].lower()}{new}"


def render_summary(s: dict) -> str:
    """The demo's closing report: what serves, how good (each figure with its protocol), what the
    endpoint did, what monitoring saw and what it did about it, where to look next."""
    m = s["metrics"]
    w = s.get("training_window") or {}
    drift = ("no drift" if s["drift_detected"] is False else "DRIFT" if s["drift_detected"] else "no report")
    share = f" (share of drifted features {s['drift_share']:.2f})" if isinstance(s.get("drift_share"), (int, float)) else ""
    timings = ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in s["timings_s"].items())
    rows = [
        ("model", f"{s['model_version']}  (trained on {' .. '.join(w.get('train_days', []))}"
                  + (f", compared with the champion on {' .. '.join(w['recent_days'])}" if w.get("recent_days") else "")
                  + ")"),
        ("quality, Handbook protocol", f"AUC {m['handbook_auc']:.3f}   AP {m['handbook_average_precision']:.3f}   "
                                       f"CP@100 {m['handbook_card_precision_at_100']:.3f}   (backtest of the recipe, test week "
                                       f"{' .. '.join(w.get('test_days', []))}, known-compromised cards left out)"),
        ("quality, whole week", f"AUC {m['week_auc']:.3f}   AP {m['week_average_precision']:.3f}   "
                                f"CP@100 {m['week_card_precision_at_100']:.3f}   (every row; flatters, for comparison only)"),
        ("serving", f"{s['served_requests']:,} requests scored over HTTP, p50 {s['serving_p50_ms']:.2f} ms, "
                    f"p99 {s['serving_p99_ms']:.2f} ms; {s['rejected_requests']} rejected (4xx), {s['failed_requests']} failed (5xx)"),
        ("drift on the served day", drift + share),
        ("retraining on drift", _retraining_line(s)),
        ("drift report", str(s.get("drift_report") or "-")),
        ("Dagster UI", s["urls"]["dagster"]),
        ("scoring endpoint", f"{s['urls']['score']}   (metrics {s['urls']['metrics']})"),
        ("state", f"{s['vigil_home']}   (vigil status --home {s['vigil_home']})"),
        ("wall time", f"{s['wall_seconds']:.0f} s: {timings}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["", "Vigil demo: the loop ran", ""] + [f"  {k.ljust(width)}   {v}" for k, v in rows] + [""])


def print_summary(s: dict) -> None:
    print(render_summary(s), flush=True)
