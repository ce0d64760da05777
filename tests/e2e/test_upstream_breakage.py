"""The simulator's upstream-breakage scenario, end to end through real Dagster runs of the daily
pipeline, on a copy of the trained pipeline home (so a production model's reference profile exists):

1. the feed renames ``tx_amount`` → the day's run fails naming the file and the column; nothing of
   the day is written anywhere;
2. the column name is fixed but the nulls and ×100 amounts remain → nulls and ceiling breaches are
   quarantined with their reasons, the ×100 amounts under the ceiling fail the blocking
   ``amount_outliers`` check, the day is held and no features are computed;
3. the source sends the clean file → the day is admitted exactly once and its features computed.
"""

import dataclasses
import shutil

import dagster as dg
import pandas as pd
import pytest

from vigil import config, lake
from vigil.simulator import Drift, write_landing

pytestmark = pytest.mark.e2e


def run_day(defs, day, instance):
    job = defs.resolve_job_def("daily_pipeline")
    return job.execute_in_process(partition_key=str(day), instance=instance, raise_on_error=False)


def checks(result) -> dict:
    return {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def test_upstream_breakage_is_caught_then_fixed(pipeline_home, tmp_path, monkeypatch):
    src = pipeline_home["paths"]
    root = tmp_path / "vigil"
    shutil.copytree(src.root, root, ignore=shutil.ignore_patterns("dagster", "serving-test.log"))
    monkeypatch.setenv("VIGIL_HOME", str(root))
    monkeypatch.setenv("BENTOML_HOME", str(root / "bentoml"))
    paths = config.paths(root)
    defs = pipeline_home["defs"]
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([defs.get_assets_def("feast_registry")], instance=instance, resources=defs.resources).success

    day, index = pipeline_home["replay_day"], (pipeline_home["replay_day"] - config.start_date()).days
    sim = pipeline_home["sim"]
    broken = dataclasses.replace(sim, drift=[Drift("upstream_breakage", index, 0.06)])
    landing_file = paths.landing / "transactions" / f"{day}.parquet"

    # 1. renamed column: the run fails naming the file and the column, nothing is written
    write_landing(broken, paths.landing, days=range(index, index + 1), labels=False)
    r = run_day(defs, day, instance)
    assert not r.success
    failure = next(e for e in r.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"{landing_file}: required column(s) ['tx_amount'] missing" in failure.step_failure_data.error.cause.message
    for folder in (paths.validated, paths.quarantine, paths.held, paths.features / "customer"):
        assert lake.read_day(folder, day) is None

    # 2. the column is renamed back; nulls and ×100 amounts remain
    frame = pd.read_parquet(landing_file).rename(columns={"amount": "tx_amount"})
    frame.to_parquet(landing_file, index=False)
    r = run_day(defs, day, instance)
    c = checks(r)
    assert not c["amount_outliers"].passed and c["amount_outliers"].severity == dg.AssetCheckSeverity.ERROR
    assert c["amount_outliers"].metadata["day"].value == str(day)
    q = lake.read_day(paths.quarantine, day)
    nulls = frame["tx_amount"].isna()
    assert set(q.loc[q["reasons"] == "tx_amount:not_nullable", "transaction_id"].astype(int)) == set(frame.loc[nulls, "transaction_id"])
    above = frame["tx_amount"] > 10_000
    assert set(q.loc[q["reasons"].str.contains("less_than_or_equal_to"), "transaction_id"].astype(int)) == set(frame.loc[above, "transaction_id"])
    assert lake.read_day(paths.validated, day) is None and lake.read_day(paths.held, day) is not None
    assert lake.read_day(paths.features / "customer", day) is None  # downstream blocked
    materialized = {e.event_specific_data.materialization.asset_key for e in r.get_asset_materialization_events()}
    assert dg.AssetKey("validated_transactions") in materialized and dg.AssetKey("feature_snapshots") not in materialized
    # ... and a person is told: the check sensor raises day_held (critical) with the rule's figures
    import json

    from pipelines.alerting import CHECK_ALERT_SENSOR

    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as ctx:
        defs.get_sensor_def(CHECK_ALERT_SENSOR)(ctx)
    alerts = [json.loads(x) for x in (root / "alerts" / "alerts.jsonl").read_text().splitlines()]
    held = [a for a in alerts if a["name"] == "day_held" and a["details"]["check"] == "amount_outliers"]
    assert len(held) == 1 and held[0]["severity"] == "critical" and held[0]["runbook"] == "docs/runbooks/day_held.md"

    # 3. the source re-sends the clean day: admitted exactly once, hold lifted, features computed
    write_landing(sim, paths.landing, days=range(index, index + 1), labels=False)
    r = run_day(defs, day, instance)
    assert r.success
    assert all(e.passed for e in checks(r).values()), {k: v.metadata for k, v in checks(r).items() if not v.passed}
    clean = sim.transactions[sim.transactions["tx_datetime"].dt.date == day]
    admitted = lake.read_day(paths.validated, day)
    q = lake.read_day(paths.quarantine, day)  # the simulator can draw a 0.00 amount: real bad input
    assert len(admitted) + len(q) == len(clean) and admitted["transaction_id"].is_unique
    assert set(q["reasons"]) <= {"tx_amount:greater_than(0)"} and lake.read_day(paths.held, day) is None
    assert lake.read_day(paths.features / "customer", day) is not None
