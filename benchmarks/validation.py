"""Validation throughput: rows per second through Vigil's reader + contract + batch statistics, per
landing format, at the default scale (5,000 customers, 10,000 terminals, ~9,800 rows a day).

The baseline, measured in the same run on the same files, is reading the files with plain pandas
(``read_parquet`` / ``read_csv`` / ``read_json(lines=True)``, types guessed): the ratios say what
Vigil's reader (text kept as text, row-level faults, provenance) and the whole validation cost on
top of the I/O any pipeline pays.

    .venv/bin/python benchmarks/validation.py [--days 10]
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START = date(2025, 4, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--customers", type=int, default=5000)
    a = ap.parse_args()
    from vigil import config, data_profile, ingestion
    from vigil.simulator import TX_COLUMNS, simulate
    from vigil.sources import FileSource

    sim = simulate(a.customers, a.customers * 2, a.days + 21, START, 42)
    tx = sim.transactions
    base = Path(tempfile.mkdtemp(prefix="vigil-bench-validation-"))
    results = []
    reference = None
    for fmt in ("parquet", "csv", "jsonl"):
        paths = config.paths(base / fmt)
        folder = paths.landing / "transactions"
        folder.mkdir(parents=True)
        days = [START + timedelta(days=i) for i in range(a.days + 21)]
        for d in days:
            part = tx[tx["tx_datetime"].dt.date == d][TX_COLUMNS]
            f = folder / f"{d}.{fmt}"
            if fmt == "parquet":
                part.to_parquet(f, index=False)
            elif fmt == "csv":
                part.to_csv(f, index=False)
            else:
                part.to_json(f, orient="records", lines=True, date_format="iso")
        src = FileSource(folder)
        warm, timed = days[:21], days[21:]
        for d in warm:  # history for the cross-day key check; the first format also builds the reference
            ingestion.land_transactions(paths, d, src)
            ingestion.validate_transactions_day(paths, d, now=datetime_now())
        if reference is None:
            profile, ids = data_profile.build(paths, warm)
            data_profile.save(profile, ids, base / "reference")
            reference = data_profile.load(base / "reference")
        rows = sum(int((tx["tx_datetime"].dt.date == d).sum()) for d in timed)

        import pandas as pd

        plain = {"parquet": pd.read_parquet, "csv": pd.read_csv, "jsonl": lambda f: pd.read_json(f, lines=True)}[fmt]
        t0 = time.perf_counter()
        for d in timed:
            plain(folder / f"{d}.{fmt}")
        read_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        for d in timed:
            src.read(d)
        reader_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        for d in timed:
            ingestion.land_transactions(paths, d, src)
            ingestion.validate_transactions_day(paths, d, now=datetime_now(), reference=reference)
        full_s = time.perf_counter() - t0
        results.append({"format": fmt, "rows": rows, "days": len(timed),
                        "pandas_read_rows_per_s": round(rows / read_s), "vigil_reader_rows_per_s": round(rows / reader_s),
                        "validate_rows_per_s": round(rows / full_s),
                        "ratio_reader_to_pandas_read_time": round(reader_s / read_s, 2),
                        "ratio_validate_to_pandas_read_time": round(full_s / read_s, 2),
                        "validate_seconds_per_day": round(full_s / len(timed), 3)})
        print(json.dumps(results[-1]), flush=True)

    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cores {platform.machine()}",
        "command": "python benchmarks/validation.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "what": "read landing file → raw lake copy → contract (types, ids, keys within and across 37 days, time, "
                "domain) → quarantine → batch statistics vs reference profile → validated partition",
        "results": results,
    }
    from _world import write_result

    write_result("validation", result)


def datetime_now():
    from datetime import datetime

    return datetime(2030, 1, 1)


if __name__ == "__main__":
    main()
