"""Build (or reuse) a small world for benchmarks: landing data, daily pipeline, a promoted model."""

import json
import os
from datetime import date, timedelta
from pathlib import Path

START = date(2025, 4, 1)


def build(home: Path, days: int, customers: int, terminals: int, seed: int = 42, train: bool = True):
    os.environ["VIGIL_HOME"] = str(home)
    os.environ["BENTOML_HOME"] = str(home / "bentoml")
    os.environ["VIGIL_START_DATE"] = START.isoformat()
    import dagster as dg

    from vigil import config, registry
    from vigil.simulator import simulate, write_landing

    paths = config.paths(home)
    if train and registry.current(paths):  # reuse a world built by an earlier run
        return paths, None
    sim = simulate(customers, terminals, days + 1, START, seed)
    write_landing(sim, paths.landing)
    from pipelines.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([defs.get_assets_def("feast_registry")], instance=instance, resources=defs.resources)
    if train:
        last = START + timedelta(days=days - 1)
        r = defs.resolve_job_def("daily_pipeline").execute_in_process(instance=instance, tags={
            "dagster/asset_partition_range_start": START.isoformat(), "dagster/asset_partition_range_end": last.isoformat()})
        assert r.success
        assert defs.resolve_job_def("retraining").execute_in_process(instance=instance).success
    return paths, (defs, instance, sim)


def feature_world(home: Path, days: int, customers: int, seed: int = 42, drift=None,
                  simulated_days: int | None = None) -> bool:
    """Lake and Feast snapshots of ``days`` days (ingest → validate → snapshots, one Dagster run)
    on a simulated world (``simulated_days``, default ``days``, with ``drift``); an existing one in
    ``home`` is reused. True when it was built now."""
    import sys
    import time

    import dagster as dg

    from vigil import config, lake
    from vigil.simulator import simulate, write_landing

    os.environ.update({"VIGIL_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"), "VIGIL_START_DATE": START.isoformat()})
    paths = config.paths(home)
    last = START + timedelta(days=days - 1)
    if lake.day_file(paths.features / "terminal", last).exists():
        print(f"reusing the world in {home}", file=sys.stderr)
        return False
    sim = simulate(customers, customers * 2, simulated_days or days, START, seed, drift=drift)
    write_landing(sim, paths.landing)
    from pipelines.definitions import defs

    t0 = time.perf_counter()
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([defs.get_assets_def("feast_registry")], instance=instance, resources=defs.resources)
    keys = ["raw_transactions", "label_feed", "validated_transactions", "validated_labels", "feature_snapshots"]
    r = defs.resolve_job_def("daily_pipeline").execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(k) for k in keys],
        tags={"dagster/asset_partition_range_start": START.isoformat(), "dagster/asset_partition_range_end": last.isoformat()})
    assert r.success
    print(f"world seed {seed}: daily pipeline over {days} days in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return True


def write_result(name: str, result: dict) -> None:
    """``benchmarks/results/<name>.json`` (rewritten by each run), and the same on stdout."""
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
