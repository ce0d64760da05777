"""The default 183 days, backfilled from the CLI as ONE run, exactly as the README says.

    .venv/bin/python benchmarks/backfill.py [--days 183]

Steps (each a subprocess, as a user types them): ``vigil simulate`` (5,000 customers, 10,000
terminals), ``dagster asset materialize --select feast_registry``, then the daily assets over the
whole range with ``--partition-range``. Reports the wall time, checks there was exactly one run,
and, from the run's own progress lines (one per tenth of the days, per asset), the seconds per day
in the first and the second half of the days after the 37-day warm-up (from then on every day reads
the same history): if the per-day cost grew with history, the second half would be slower.
"""

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HISTORY_DAYS = 37
DAILY = ("raw_transactions,label_feed,validated_transactions,validated_labels,feature_snapshots,"
         "online_features,prediction_log_daily,drift_report,live_performance_daily")
PROGRESS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) .*? - (\w+) - (\w+): (\d+)/(\d+) days")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=183)
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="vigil-bench-backfill-"))
    home, dagster_home = base / "vigil", base / "dagster"
    dagster_home.mkdir(parents=True)
    env = dict(os.environ, VIGIL_HOME=str(home), DAGSTER_HOME=str(dagster_home), PYTHONPATH=str(ROOT),
               VIGIL_START_DATE="2025-04-01")
    py = sys.executable
    start = date(2025, 4, 1)
    end = start + timedelta(days=a.days - 1)

    def run(args, what):
        t0 = time.perf_counter()
        r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"{what} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        secs = time.perf_counter() - t0
        print(f"{what}: {secs:.1f} s", file=sys.stderr, flush=True)
        return r, secs

    _, sim_s = run([py, "-m", "vigil.cli", "simulate", "--days", str(a.days), "--out", str(home / "landing")], "simulate")
    _, apply_s = run([py, "-m", "dagster", "asset", "materialize", "-m", "pipelines.definitions", "--select", "feast_registry"],
                     "feast apply")
    r, backfill_s = run([py, "-m", "dagster", "asset", "materialize", "-m", "pipelines.definitions", "--select", DAILY,
                         "--partition-range", f"{start}...{end}"], f"backfill {start}...{end}")
    log = r.stdout + r.stderr
    (base / "backfill.log").write_text(log)
    runs = log.count("RUN_SUCCESS")

    marks: dict[str, list[tuple[datetime, int]]] = {}
    for line in log.splitlines():
        m = PROGRESS.match(line)
        if m:
            marks.setdefault(m.group(2), []).append((datetime.fromisoformat(m.group(1)), int(m.group(4))))
    halves = {}
    for step, pts in marks.items():
        # after the 37-day warm-up every day reads the same amount of history: compare halves of that
        first = min(pts, key=lambda p: abs(p[1] - HISTORY_DAYS))
        mid = min(pts, key=lambda p: abs(p[1] - (HISTORY_DAYS + a.days) / 2))
        last = pts[-1]
        if mid[1] > first[1] and last[1] > mid[1]:
            halves[step] = {"first_half_s_per_day": round((mid[0] - first[0]).total_seconds() / (mid[1] - first[1]), 3),
                            "second_half_s_per_day": round((last[0] - mid[0]).total_seconds() / (last[1] - mid[1]), 3)}
    steps = {}
    for m in re.finditer(r'Finished execution of step "(\w+)" in (?:(\d+)m)?\s?([\d.]+)(ms|s)', log):
        steps[m.group(1)] = round(int(m.group(2) or 0) * 60 + float(m.group(3)) / (1000 if m.group(4) == "ms" else 1), 2)
    rows = sum(1 for _ in (home / "lake" / "validated_transactions").glob("*.parquet"))
    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cores {platform.machine()}",
        "command": "python benchmarks/backfill.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "days": a.days, "runs": runs, "validated_partitions": rows,
        "simulate_s": round(sim_s, 1), "feast_apply_s": round(apply_s, 1),
        "backfill_wall_s": round(backfill_s, 1), "backfill_s_per_day": round(backfill_s / a.days, 3),
        "step_seconds": steps, "per_day_by_half": halves,
    }
    from _world import write_result

    write_result("backfill", result)


if __name__ == "__main__":
    main()
