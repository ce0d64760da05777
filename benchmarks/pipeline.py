"""Pipeline benchmark: seconds per daily partition at the default scale (5,000 customers,
10,000 terminals, ~10k transactions a day), for the single-run range backfill and for single
days late in history (to show the per-day cost stays flat as history grows).

    .venv/bin/python benchmarks/pipeline.py [--days 60] [--customers 5000]
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--customers", type=int, default=5000)
    a = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="vigil-bench-")) / "vigil"
    from _world import START, build

    paths, (defs, instance, sim) = build(home, a.days, a.customers, a.customers * 2, train=False)
    job = defs.resolve_job_def("daily_pipeline")
    per_day_rows = len(sim.transactions) / (a.days + 1)

    first = a.days - 10
    t0 = time.perf_counter()
    r = job.execute_in_process(instance=instance, tags={"dagster/asset_partition_range_start": START.isoformat(),
                                                        "dagster/asset_partition_range_end": (START + timedelta(days=first - 1)).isoformat()})
    assert r.success
    range_s = time.perf_counter() - t0

    singles = []
    for i in range(first, a.days):
        day = (START + timedelta(days=i)).isoformat()
        t0 = time.perf_counter()
        assert job.execute_in_process(instance=instance, partition_key=day).success
        singles.append({"day": day, "history_days": i, "seconds": round(time.perf_counter() - t0, 2)})

    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "command": "python benchmarks/pipeline.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "rows_per_day": round(per_day_rows),
        "range_backfill_days": first, "range_backfill_seconds": round(range_s, 1),
        "range_seconds_per_partition": round(range_s / first, 2),
        "single_partition_seconds": singles,
        "single_first_half_mean": round(sum(s["seconds"] for s in singles[:5]) / 5, 2),
        "single_second_half_mean": round(sum(s["seconds"] for s in singles[5:]) / 5, 2),
    }
    from _world import write_result

    write_result("pipeline", result)


if __name__ == "__main__":
    main()
