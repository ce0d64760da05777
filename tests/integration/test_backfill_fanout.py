"""A backfill split into runs (``VIGIL_BACKFILL_PARTITIONS_PER_RUN``) by Dagster's own asset-backfill
machinery writes the lake a single run writes.

The reference is the README's command (``dagster asset materialize --partition-range``: one run).
The fan-out is an asset backfill of the same nine daily assets, driven as the daemon drives it: the
backfill daemon's own iteration (``execute_backfill_iteration``) decides which runs to submit on each
tick, a ``QueuedRunCoordinator`` queues them, and this file launches the queued runs itself, newest
first (the worst order two concurrent workers could give: a later chunk before an earlier one), with
Dagster's synchronous in-memory run launcher. Checked by hand on this world, with the assets as they
were (same-day dependencies only): the backfill ran as 3 runs, one per chunk, the later chunks' fraud
reports were refused as referring to transactions not validated yet (blocking ``label_contract``, after
the labels lake of those days had been rewritten without them) and the backfill failed; with every
dependency declared except feature_snapshots' 37-day window, it *succeeded*, and the terminal
snapshots of the 20 days of the second and third chunks differed from the single run's (their risk
windows computed before the earlier chunks' reports were in the lake: ``vigil.features._no_gaps``
accepts missing days at the start of a history).

The fan-out runs in a child process (``python tests/integration/test_backfill_fanout.py``): the
backfill policy is read from the environment when ``assets`` is imported, and this test process
keeps the default.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAILY = ("raw_transactions,label_feed,validated_transactions,validated_labels,feature_snapshots,"
         "online_features,prediction_log_daily,drift_report,live_performance_daily")
START = date(2025, 4, 1)
DAYS = 30  # three runs of 10 days a step: each later chunk's snapshots read the earlier chunks' days
PER_RUN = 10
HISTORY = 37

pytestmark = pytest.mark.integration


def _env(home: Path, dagster_home: Path, per_run: int) -> dict:
    return dict(os.environ, VIGIL_HOME=str(home), BENTOML_HOME=str(home / "bentoml"), DAGSTER_HOME=str(dagster_home),
                PYTHONPATH=str(ROOT), VIGIL_START_DATE=START.isoformat(),
                VIGIL_END_DATE=(START + timedelta(days=DAYS - 1)).isoformat(),
                VIGIL_BACKFILL_PARTITIONS_PER_RUN=str(per_run))


def _lake_hashes(home: Path) -> dict[str, str]:
    """``lake.content_hash`` of every daily file of the validated lake, the labels and the snapshots
    (the intraday state's per-card lists as their bytes)."""
    import numpy as np

    from vigil import config, lake

    paths = config.paths(home)
    out = {}
    for folder in [paths.validated, paths.labels, *sorted(p for p in paths.features.iterdir() if p.is_dir())]:
        for day in lake.available_days(folder):
            frame = lake.read_day(folder, day)
            for c in frame.columns[frame.dtypes == object]:
                frame[c] = frame[c].map(lambda v: v.tobytes() if isinstance(v, np.ndarray) else v)
            out[f"{folder.relative_to(paths.lake)}/{day}"] = lake.content_hash(frame)
    return out


def test_multi_run_asset_backfill_writes_the_lake_of_one_run(tmp_path):
    from vigil.simulator import simulate, write_landing

    sim = simulate(n_customers=150, n_terminals=300, n_days=DAYS, start_date=START, seed=11)
    end = START + timedelta(days=DAYS - 1)
    homes = {}
    for name in ("single", "multi"):
        homes[name] = tmp_path / name / "vigil"
        write_landing(sim, homes[name] / "landing")
        (tmp_path / name / "dagster").mkdir()

    # the fan-out, in a child process started first (the two worlds are built side by side): the same
    # days as an asset backfill in runs of PER_RUN days, newest run first
    out = tmp_path / "multi" / "result.json"
    child = subprocess.Popen([sys.executable, __file__, "--days", str(DAYS), "--out", str(out)], cwd=ROOT,
                             env=_env(homes["multi"], tmp_path / "multi" / "dagster", PER_RUN),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    try:
        # the reference: the README's commands, one run for the whole range (the default policy)
        env = _env(homes["single"], tmp_path / "single" / "dagster", 0)
        dagster = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines.definitions"]
        subprocess.run([*dagster, "--select", "feast_registry"], cwd=ROOT, env=env, check=True, capture_output=True)
        r = subprocess.run([*dagster, "--select", DAILY, "--partition-range", f"{START}...{end}"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert (r.stdout + r.stderr).count("RUN_SUCCESS") == 1
        log, _ = child.communicate(timeout=600)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, log[-6000:]
    res = json.loads(out.read_text())
    runs = res["runs"]
    assert res["status"] == "COMPLETED_SUCCESS", res
    assert all(run["status"] == "SUCCESS" for run in runs), runs
    assert all(len(run["days"]) <= PER_RUN for run in runs)
    assert len({run["days"][0] for run in runs if "feature_snapshots" in run["assets"]}) >= DAYS // PER_RUN

    # every run that computed snapshots was launched after the runs that validated the days they read
    launched = {}  # (asset, day) -> launch index of the run that materialized it
    for i, run in enumerate(runs):
        for a in run["assets"]:
            for d in run["days"]:
                launched[(a, d)] = i
    assert len(launched) == 9 * DAYS  # every daily asset, every day, exactly once in the backfill
    for i, run in enumerate(runs):
        if "feature_snapshots" not in run["assets"]:
            continue
        for d in run["days"]:
            for back in range(HISTORY):
                h = (date.fromisoformat(d) - timedelta(days=back)).isoformat()
                for a in ("validated_transactions", "validated_labels"):
                    if (a, h) in launched:
                        assert launched[(a, h)] < i or (launched[(a, h)] == i and back == 0 and a in run["assets"]), \
                            (d, a, h, run)

    single = _lake_hashes(homes["single"])
    assert len([k for k in single if k.startswith("features/")]) >= 3 * DAYS
    assert res["hashes"] == single  # the lake right after the asset backfill

    # a job backfill (a job's page) of the first 20 days in runs of PER_RUN days is refused, not run unordered
    assert res["job_backfill"]["runs"] == 2
    assert res["job_backfill"]["refused"] == res["job_backfill"]["runs"], res["job_backfill"]
    assert _lake_hashes(homes["multi"]) == single


# --- the child process: an asset backfill driven through the backfill daemon's iteration ---------------------


def _drive(ctx, instance, backfill_id: str, max_ticks: int = 300) -> tuple[str, list]:
    """Tick the backfill daemon until ``backfill_id`` is done; after each tick launch its queued runs,
    newest first. Returns the final status and the runs in launch order."""
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
    from dagster._daemon.backfill import execute_backfill_iteration

    log = logging.getLogger("backfill")
    launched = []
    for _ in range(max_ticks):
        list(execute_backfill_iteration(ctx, log))
        queued = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.QUEUED], tags={"dagster/backfill": backfill_id}))
        for run in queued:  # newest first
            instance.launch_run(run.run_id, ctx.create_request_context())
            launched.append(run.run_id)
        status = instance.get_backfill(backfill_id).status
        if status not in (BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING, BulkActionStatus.FAILING):
            return status.value, launched
    return "TIMED_OUT", launched


def _run_row(instance, run_id: str) -> dict:
    run = instance.get_run_by_id(run_id)
    tags = run.tags
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if start is None:
        start = end = tags.get("dagster/partition")
    days = [(date.fromisoformat(start) + timedelta(days=i)).isoformat()
            for i in range((date.fromisoformat(end) - date.fromisoformat(start)).days + 1)]
    return {"run_id": run_id, "status": run.status.value, "days": days,
            "assets": sorted(k.to_user_string() for k in (run.asset_selection or ()))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import dagster as dg
    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    keys = [(START + timedelta(days=i)).isoformat() for i in range(a.days)]
    overrides = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}}
    with dg.instance_for_test(overrides=overrides, synchronous_run_launcher=True,
                              temp_dir=os.environ["DAGSTER_HOME"]) as instance:
        from pipelines.definitions import defs

        dg.materialize([defs.get_assets_def("feast_registry")], instance=instance, resources=defs.resources)
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(module_name="pipelines.definitions", working_directory=str(ROOT)), location_name="vigil")
        with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as ctx:
            request = ctx.create_request_context()
            backfill = PartitionBackfill.from_asset_partitions(
                backfill_id="fanout", asset_graph=request.asset_graph, partition_names=keys,
                asset_selection=[dg.AssetKey(k) for k in DAILY.split(",")], backfill_timestamp=time.time(), tags={},
                dynamic_partitions_store=instance, all_partitions=False, title=None, description=None, run_config=None)
            instance.add_backfill(backfill)
            t0 = time.perf_counter()
            status, launched = _drive(ctx, instance, "fanout")
            result = {"status": status, "seconds": round(time.perf_counter() - t0, 1),
                      "runs": [_run_row(instance, r) for r in launched],
                      "hashes": _lake_hashes(Path(os.environ["VIGIL_HOME"]))}

            # the same range as a job backfill of daily_pipeline (what a job's page launches)
            repo = request.get_code_location("vigil").get_repository("__repository__")
            partition_set = repo.get_partition_set("daily_pipeline_partition_set")
            instance.add_backfill(PartitionBackfill(
                backfill_id="jobfill", partition_set_origin=partition_set.get_remote_origin(),
                status=BulkActionStatus.REQUESTED, partition_names=keys[:2 * PER_RUN], from_failure=False, reexecution_steps=None,
                tags={}, backfill_timestamp=time.time()))
            _, job_runs = _drive(ctx, instance, "jobfill")  # its first 20 days: two runs
            refused = 0
            for run_id in job_runs:
                text = " ".join(str(e.dagster_event.event_specific_data) for e in instance.all_logs(run_id)
                                if e.dagster_event is not None and e.dagster_event.is_step_failure)
                refused += "is a job backfill" in text and instance.get_run_by_id(run_id).status.value == "FAILURE"
            result["job_backfill"] = {"runs": len(job_runs), "refused": refused}
    Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
