"""Batch scoring of past days (``vigil score``): rows per second for each step.

    .venv/bin/python benchmarks/batch_scoring.py --home DIR [--from 2025-04-01 --to 2025-09-30]

Uses a world built by ``benchmarks/model_quality.py`` (same ``--home``); trains a model there with
the retraining job if none is registered. Reports seconds and rows/s per step of
``vigil.batch_scoring.score_days`` (lake read, Feast point-in-time features, model, policy) with
each engine (LightGBM; the booster compiled to native code by lleaves, compile time apart, the
first run compiling and caching it) and, in the same run on the same matrix, the booster alone on
one thread and on every core (the baseline: what LightGBM costs for this model, whatever Vigil
does around it).
"""

import argparse
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", required=True, help="a world built by benchmarks/model_quality.py")
    ap.add_argument("--from", dest="first", default="2025-04-01")
    ap.add_argument("--to", dest="last", default="2025-09-30")
    a = ap.parse_args()
    home = Path(a.home).resolve()
    os.environ.update({"VIGIL_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"), "VIGIL_START_DATE": "2025-04-01"})
    import dagster as dg
    import numpy as np

    from vigil import batch_scoring, config, registry
    from vigil.feature_repo import open_store
    from vigil.features import MODEL_FEATURES
    from vigil.training import model_features

    paths = config.paths(home)
    if not registry.list_versions(paths):
        from pipelines.definitions import defs

        cfg = {"ops": {"training_set": {"config": {"last_day": "2025-08-21", "train_days": 7}}}}
        assert defs.resolve_job_def("retraining").execute_in_process(run_config=cfg, instance=dg.DagsterInstance.ephemeral()).success
    version = registry.current(paths)["tag"] if registry.current(paths) else registry.list_versions(paths)[-1]["tag"]
    runs = {}
    for engine in ("lightgbm", "compiled"):
        runs[engine] = batch_scoring.score_days(paths, open_store(paths), date.fromisoformat(a.first),
                                                date.fromisoformat(a.last), version, engine)
    scored = runs["lightgbm"]
    assert (runs["compiled"].frame["fraud_score"] - scored.frame["fraud_score"]).abs().max() < 1e-9
    n = len(scored.frame)
    model, _, _ = registry.load(paths, version)
    from vigil import lake

    tx = lake.read_days(paths.validated, scored.days, ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount"])
    x = np.where(np.isnan(x := model_features(open_store(paths), tx)[MODEL_FEATURES].to_numpy()), model.fill_values, x)
    base = {}
    for threads in (1, 0):
        t0 = time.perf_counter()
        model.booster.predict(x, num_threads=threads)
        base["booster_1_thread" if threads == 1 else "booster_all_cores"] = time.perf_counter() - t0
    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cores {platform.machine()}",
        "command": "python benchmarks/batch_scoring.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "rows": n, "days": len(scored.days), "model": version, "trees": model.booster.num_trees(),
        "seconds": {e: {k: round(v, 3) for k, v in r.seconds.items()} for e, r in runs.items()},
        "rows_per_second": {e: r.rows_per_second for e, r in runs.items()},
        "baseline_seconds": {k: round(v, 3) for k, v in base.items()},
        "baseline_rows_per_second": {k: round(n / v) for k, v in base.items()},
        "ratio_model_step_to_booster_all_cores": {e: round(r.seconds["model"] / base["booster_all_cores"], 3)
                                                  for e, r in runs.items()},
    }
    from _world import write_result

    write_result("batch_scoring", result)


if __name__ == "__main__":
    main()
