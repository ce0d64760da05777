"""The default 183 days backfilled as one run and fanned out over runs, both through Dagster's own
machinery, in the same invocation, on the same simulated world.

    .venv/bin/python benchmarks/backfill_fanout.py [--days 183] [--customers 5000] [--per-run 30] [--concurrency 2]
                                                   [--daemon-single]

- **one run** (today's default, ``VIGIL_BACKFILL_PARTITIONS_PER_RUN=0``): the README's command,
  ``dagster asset materialize --select <the nine daily assets> --partition-range a...b``, exactly
  as ``benchmarks/backfill.py`` runs it.
- **fan-out** (``VIGIL_BACKFILL_PARTITIONS_PER_RUN=<per-run>``): ``dagster dev`` (webserver + daemon,
  ``DefaultRunLauncher``: each run its own process), a ``QueuedRunCoordinator`` with
  ``max_concurrent_runs`` and a ``dagster/backfill`` tag limit of ``--concurrency`` (what the Helm
  values set, where each run is a Kubernetes Job), and an asset backfill of the same nine assets and
  days launched through the webserver's GraphQL API (``launchPartitionBackfill`` with an asset
  selection, as the asset graph's Materialize button does). The backfill daemon splits the range by
  the policy and orders the runs by the assets' partition dependencies.
- **one run through the daemon** (with ``--daemon-single``; run at 40 days only so far): the same
  asset backfill with the default single-run policy, so the daemon's own cost is seen apart from the
  fan-out's.

Each variant gets its own ``VIGIL_HOME`` (a copy of the same landing files) and ``DAGSTER_HOME``
(SQLite); the code location ``dagster dev`` loads is this file's ``defs``: Vigil's assets and
resources without its sensors and schedules (the landing sensor would otherwise launch daily runs of
the same files). Reported: wall seconds (from the launch to the backfill's completion as the
webserver reports it), runs, CPU seconds of every process involved (for ``dagster dev``: the
webserver, the daemon, the code servers and every run process, from ``psutil``, including the
children they reaped), the ratios, and whether the three lakes hold the same content
(``lake.content_hash`` of every validated, label and snapshot file). Results:
``benchmarks/results/backfill_fanout.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAILY = ("raw_transactions", "label_feed", "validated_transactions", "validated_labels", "feature_snapshots",
         "online_features", "prediction_log_daily", "drift_report", "live_performance_daily")
START = date(2025, 4, 1)
IDLE_S = 15


def __getattr__(name: str):
    """``defs``: the code location ``dagster dev`` loads from this file (Vigil's assets, resources and
    executor, no sensors or schedules)."""
    if name != "defs":
        raise AttributeError(name)
    import dagster as dg

    from pipelines import definitions

    return dg.Definitions(assets=definitions.ALL_ASSETS, resources=definitions.defs.resources,
                          executor=dg.in_process_executor)


def lake_hashes(home: Path) -> dict[str, str]:
    """``lake.content_hash`` of every daily file of the validated lake, the labels and the snapshots."""
    import numpy as np

    from vigil import config, lake

    paths = config.paths(home)
    out = {}
    for folder in [paths.validated, paths.labels, *sorted(p for p in paths.features.iterdir() if p.is_dir())]:
        for day in lake.available_days(folder):
            frame = lake.read_day(folder, day)
            for c in frame.columns[frame.dtypes == object]:  # the intraday state's per-card lists
                frame[c] = frame[c].map(lambda v: v.tobytes() if isinstance(v, np.ndarray) else v)
            out[f"{folder.relative_to(paths.lake)}/{day}"] = lake.content_hash(frame)
    return out


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def family_cpu(pid: int) -> float:
    """CPU seconds of a process and its living descendants, with the children each has reaped."""
    import psutil

    total = 0.0
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return total
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


class World:
    """One variant's VIGIL_HOME and DAGSTER_HOME, with its environment."""

    def __init__(self, base: Path, name: str, landing: Path, per_run: int, concurrency: int, last: date):
        self.name, self.home, self.dagster_home = name, base / name / "vigil", base / name / "dagster"
        shutil.copytree(landing, self.home / "landing")
        self.dagster_home.mkdir(parents=True)
        (self.dagster_home / "dagster.yaml").write_text(
            "telemetry:\n  enabled: false\n"
            "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: QueuedRunCoordinator\n"
            f"  config:\n    max_concurrent_runs: {concurrency}\n"
            f"    tag_concurrency_limits:\n      - key: dagster/backfill\n        limit: {concurrency}\n")
        self.env = dict(os.environ, VIGIL_HOME=str(self.home), BENTOML_HOME=str(self.home / "bentoml"),
                        DAGSTER_HOME=str(self.dagster_home), PYTHONPATH=str(ROOT), VIGIL_START_DATE=START.isoformat(),
                        VIGIL_END_DATE=last.isoformat(), VIGIL_BACKFILL_PARTITIONS_PER_RUN=str(per_run))

    def run(self, args: list[str], what: str) -> tuple[str, float, float]:
        cpu0, t0 = children_cpu(), time.perf_counter()
        r = subprocess.run(args, cwd=ROOT, env=self.env, capture_output=True, text=True)
        secs, cpu = time.perf_counter() - t0, children_cpu() - cpu0
        if r.returncode:
            sys.exit(f"{self.name}: {what} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        print(f"{self.name}: {what}: {secs:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr, flush=True)
        return r.stdout + r.stderr, secs, cpu


def materialize(world: World, select: str, extra: list[str] = ()) -> tuple[str, float, float]:
    return world.run([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines.definitions",
                      "--select", select, *extra], f"materialize {select[:40]}")


LAUNCH = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message stack } ... on Error { message } } }"""
STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status } ... on PythonError { message } } }"""
RUNS = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
  ... on Runs { results { runId status creationTime startTime endTime tags { key value } assetSelection { path } } } } }"""


def graphql(url: str, query: str, variables: dict) -> dict:
    import httpx

    r = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=60)
    r.raise_for_status()
    body = r.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return body["data"]


def daemon_backfill(world: World, keys: list[str], timeout: float) -> dict:
    """The asset backfill of ``keys`` through ``dagster dev``: launched by GraphQL, run by the daemon."""
    from vigil.processes import free_port, start, stop, wait_http

    port = free_port(0)
    workspace = world.dagster_home / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_file:\n      relative_path: {ROOT / 'benchmarks' / 'backfill_fanout.py'}\n"
                         f"      attribute: defs\n      working_directory: {ROOT}\n      location_name: vigil\n")
    log = world.dagster_home / "dagster-dev.log"
    t_start = time.perf_counter()
    proc = start([sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
                 world.env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/server_info", 300, proc, "dagster dev", log)
        graphql(url, "{ repositoriesOrError { __typename } }", {})  # the code location is loaded
        startup_s = time.perf_counter() - t_start
        idle0 = family_cpu(proc.pid)
        time.sleep(IDLE_S)  # what webserver, daemon and code server cost when nothing runs
        cpu0 = family_cpu(proc.pid)
        idle_cpu_per_s = (cpu0 - idle0) / IDLE_S
        t0, wall0 = time.perf_counter(), time.time()
        params = {"assetSelection": [{"path": [k]} for k in DAILY], "partitionNames": keys,
                  "title": f"{world.name}: {len(keys)} days"}
        launched = graphql(url, LAUNCH, {"p": params})["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            sys.exit(f"{world.name}: launchPartitionBackfill: {launched}")
        backfill_id, status = launched["backfillId"], None
        while time.perf_counter() - t0 < timeout:
            status = graphql(url, STATUS, {"id": backfill_id})["partitionBackfillOrError"].get("status")
            if status not in ("REQUESTED", "CANCELING", "FAILING"):
                break
            time.sleep(1)
        wall_s = time.perf_counter() - t0
        cpu_s = family_cpu(proc.pid) - cpu0
        runs = graphql(url, RUNS, {"tags": [{"key": "dagster/backfill", "value": backfill_id}]})["runsOrError"]["results"]
    finally:
        stop(proc)
    print(f"{world.name}: backfill {status} in {wall_s:.1f} s, {len(runs)} runs, {cpu_s:.1f} s CPU", file=sys.stderr, flush=True)
    rows = []
    for r in sorted(runs, key=lambda r: r["creationTime"]):
        tags = {t["key"]: t["value"] for t in r["tags"]}
        rows.append({"status": r["status"], "created_s": round(r["creationTime"] - wall0, 1),
                     "start_s": round((r["startTime"] or wall0) - wall0, 1), "end_s": round((r["endTime"] or wall0) - wall0, 1),
                     "first_day": tags.get("dagster/asset_partition_range_start"),
                     "last_day": tags.get("dagster/asset_partition_range_end"),
                     "assets": sorted("/".join(a["path"]) for a in r["assetSelection"] or [])})
    events = sorted([(r["start_s"], 1) for r in rows] + [(r["end_s"], -1) for r in rows], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, d in events:
        running += d
        peak = max(peak, running)
    waves = sorted({round(r["created_s"]) for r in rows})
    durations = sorted(r["end_s"] - r["start_s"] for r in rows)
    waits = sorted(r["start_s"] - r["created_s"] for r in rows)
    return {"status": status, "wall_s": round(wall_s, 1), "runs": len(rows),
            "runs_succeeded": sum(r["status"] == "SUCCESS" for r in rows),
            "last_run_end_s": max((r["end_s"] for r in rows), default=None), "cpu_s": round(cpu_s, 1),
            "peak_concurrent_runs": peak, "launch_waves_s": waves,
            "run_seconds_min_median_max": [round(durations[0], 1), round(durations[len(durations) // 2], 1),
                                           round(durations[-1], 1)] if durations else None,
            "created_to_started_s_median": round(waits[len(waits) // 2], 1) if waits else None,
            "idle_cpu_s_per_s": round(idle_cpu_per_s, 3), "dagster_dev_startup_s": round(startup_s, 1), "run_list": rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=183)
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--per-run", type=int, default=30)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--daemon-single", action="store_true", help="also the single-run policy through the daemon")
    ap.add_argument("--timeout", type=float, default=1500, help="seconds a daemon backfill may take")
    a = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="vigil-bench-fanout-"))
    last = START + timedelta(days=a.days - 1)
    keys = [(START + timedelta(days=i)).isoformat() for i in range(a.days)]
    t_all, load_start = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    cpu0, t0 = children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "vigil.cli", "simulate", "--days", str(a.days), "--customers", str(a.customers),
                    "--terminals", str(2 * a.customers), "--out", str(base / "landing")], cwd=ROOT, check=True,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True)
    print(f"simulate: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    single = World(base, "single_run_cli", base / "landing", 0, a.concurrency, last)
    fanout = World(base, f"multi_run_{a.per_run}", base / "landing", a.per_run, a.concurrency, last)
    worlds = [single, fanout]
    daemon_single = None if not a.daemon_single else World(base, "single_run_daemon", base / "landing", 0, a.concurrency, last)
    if daemon_single:
        worlds.append(daemon_single)
    for w in worlds:
        materialize(w, "feast_registry")

    log, single_s, single_cpu = materialize(single, ",".join(DAILY), ["--partition-range", f"{START}...{last}"])
    result_single = {"wall_s": round(single_s, 1), "runs": log.count("RUN_SUCCESS"), "cpu_s": round(single_cpu, 1),
                     "command": "dagster asset materialize -m pipelines.definitions --select <9 daily assets> "
                                f"--partition-range {START}...{last}"}
    result_fanout = daemon_backfill(fanout, keys, a.timeout)
    result_daemon_single = daemon_backfill(daemon_single, keys, a.timeout) if daemon_single else None

    hashes = {w.name: lake_hashes(w.home) for w in worlds}
    reference = hashes[single.name]
    same = {name: h == reference for name, h in hashes.items()}
    differing = {name: sorted(k for k in reference if h.get(k) != reference[k])[:10] for name, h in hashes.items()}
    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cores {platform.machine()}",
        "command": "python benchmarks/backfill_fanout.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average_at_start": load_start, "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "days": a.days, "customers": a.customers, "terminals": 2 * a.customers,
        "partitions_per_run": a.per_run, "concurrent_runs": a.concurrency,
        "single_run_cli": result_single,
        f"multi_run_{a.per_run}_daemon": result_fanout,
        "single_run_daemon": result_daemon_single,
        "ratio_wall_multi_over_single_cli": round(result_fanout["wall_s"] / result_single["wall_s"], 2),
        "ratio_cpu_multi_over_single_cli": round(result_fanout["cpu_s"] / result_single["cpu_s"], 2),
        "ratio_wall_multi_over_single_daemon": (round(result_fanout["wall_s"] / result_daemon_single["wall_s"], 2)
                                                if result_daemon_single else None),
        "lake_files_compared": len(reference),
        "same_content_as_single_run_cli": same,
        "differing_files_first_10": {k: v for k, v in differing.items() if v},
        "total_s": round(time.perf_counter() - t_all, 1),
    }
    from _world import write_result

    write_result("backfill_fanout", result)
    if not all(same.values()):
        sys.exit("the lakes differ")


if __name__ == "__main__":
    main()
