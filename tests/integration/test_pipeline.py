"""The daily pipeline and the retraining job, materialized for real on a small simulated world."""

from datetime import timedelta

import dagster as dg
import pandas as pd
import pytest

from vigil import lake, registry

pytestmark = pytest.mark.integration


def test_every_day_validated_and_snapshotted(pipeline_home):
    paths, sim = pipeline_home["paths"], pipeline_home["sim"]
    days = lake.available_days(paths.validated)
    assert len(days) == 80 and days[-1] == pipeline_home["last_day"]
    admitted = lake.read_days(paths.validated, days)
    expected = sim.transactions[sim.transactions["tx_datetime"] < pd.Timestamp(pipeline_home["last_day"] + timedelta(days=1))]
    assert len(admitted) == len(expected) and admitted["transaction_id"].is_unique
    assert lake.read_days(paths.quarantine, days).empty
    # every fraud report refers to a known, earlier transaction: none quarantined, none lost
    assert lake.read_days(paths.quarantine / "labels", days).empty
    reported = lake.read_days(paths.labels, days)
    assert len(reported) == int((sim.labels["reported_at"] < pd.Timestamp(pipeline_home["last_day"] + timedelta(days=1))).sum())
    assert len(lake.available_days(paths.features / "customer")) == 80


def test_asset_metadata_and_checks_recorded(pipeline_home):
    instance = pipeline_home["instance"]
    ev = instance.get_latest_materialization_event(dg.AssetKey("validated_transactions"))
    meta = ev.asset_materialization.metadata
    assert meta["quarantined"].value == 0 and meta["admitted"].value > 0
    model_ev = instance.get_latest_materialization_event(dg.AssetKey("fraud_model"))
    meta = model_ev.asset_materialization.metadata
    assert 0.5 < meta["handbook_auc"].value <= 1.0 and 0.5 < meta["week_auc"].value <= 1.0
    assert meta["handbook_rows"].value < meta["week_rows"].value  # known-compromised cards' rows left out
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("fraud_model"), "evaluation_gate")])
    assert list(check.values())[0].status.value == "SUCCEEDED"


def test_promoted_model_carries_lineage(pipeline_home):
    paths = pipeline_home["paths"]
    prod = registry.current(paths)
    info = registry.model_info(paths, prod["tag"])
    lineage = info["metadata"]["lineage"]
    assert lineage["feature_service"] == "fraud_features_v3"
    assert lineage["trigger"] == {"trigger": "manual"}  # no vigil/* run tags: launched by hand
    assert lineage["label_rule"] == "drop" and lineage["recent_days"][1] == str(pipeline_home["last_day"])
    # the served model trained on the days right before its recent window, after the warm-up
    assert pd.Timestamp(lineage["train_days"][1]) == pd.Timestamp(lineage["recent_days"][0]) - pd.Timedelta(days=1)
    from pipelines.sensors import trigger_decision

    d = trigger_decision(paths)  # trained on the latest day: nothing new to learn from
    assert not d.fire and "cooling down" in d.reason
    for day, digest in lineage["partition_hashes"].items():
        assert lake.content_hash(lake.read_day(paths.validated, pd.Timestamp(day).date())) == digest
    assert set(info["metadata"]["metrics"]) >= {"handbook_auc", "handbook_average_precision", "handbook_card_precision_at_100",
                                                "week_auc", "week_average_precision", "week_card_precision_at_100"}
    assert info["metadata"]["code_version"] and info["metadata"]["trained_at"]
    from pathlib import Path

    card = (Path(info["path"]) / "model_card.md").read_text()  # the model card travels with the model
    assert "Handbook" in card and "Evaluation gate" in card and "![reliability](reliability.png)" in card
    for png in ("pr_curve.png", "reliability.png", "feature_importance.png"):
        assert (Path(info["path"]) / png).read_bytes()[:4] == b"\x89PNG"
    assert registry.promotion_log(paths)[-1]["tag"] == prod["tag"]
    # training started after the feature warm-up (30-day windows + 7-day label delay)
    assert pd.Timestamp(lineage["train_days"][0]) >= pd.Timestamp("2025-04-01") + pd.Timedelta(days=37)


def test_rerunning_a_partition_replaces_it(pipeline_home):
    paths, defs, instance = pipeline_home["paths"], pipeline_home["defs"], pipeline_home["instance"]
    day = "2025-04-10"
    before = lake.read_day(paths.validated, pd.Timestamp(day).date())
    res = dg.materialize([defs.get_assets_def("raw_transactions"), defs.get_assets_def("validated_transactions")],
                         partition_key=day, instance=instance, resources=defs.resources)
    assert res.success
    after = lake.read_day(paths.validated, pd.Timestamp(day).date())
    pd.testing.assert_frame_equal(before, after)


def test_broken_upstream_day_blocks_with_a_named_error(home):
    from vigil.simulator import Drift, simulate, write_landing
    from pipelines.definitions import defs

    sim = simulate(n_customers=100, n_terminals=200, n_days=3, start_date="2025-04-01", seed=1,
                   drift=[Drift("upstream_breakage", 1, 0.1)])
    write_landing(sim, home.landing)
    assets = [defs.get_assets_def(k) for k in ("raw_transactions", "validated_transactions")]
    ok = dg.materialize(assets, partition_key="2025-04-01", resources=defs.resources)
    assert ok.success
    with pytest.raises(Exception, match=r"2025-04-02\.parquet: required column\(s\) \['tx_amount'\] missing"):
        dg.materialize(assets, partition_key="2025-04-02", resources=defs.resources)
    assert lake.read_day(home.validated, pd.Timestamp("2025-04-02").date()) is None  # nothing partial written


def test_a_rejected_candidate_is_not_registered_and_the_champion_keeps_serving(pipeline_home, server):
    """The gate says no (an AUC floor no model reaches): the check fails naming the rule,
    registered_model and production_model are not materialized, the registry and the endpoint keep
    the champion."""
    import httpx

    from tests.conftest import AUTH, replay_bodies

    paths, defs = pipeline_home["paths"], pipeline_home["defs"]
    champion = registry.current(paths)["tag"]
    versions = len(registry.list_versions(paths))
    instance = dg.DagsterInstance.ephemeral()
    cfg = {"ops": {"fraud_model": {"config": {"min_auc": 0.999}}}}
    result = defs.resolve_job_def("retraining").execute_in_process(run_config=cfg, instance=instance, raise_on_error=False)
    assert not result.success
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("fraud_model"), "evaluation_gate")])
    evaluation = list(check.values())[0]
    assert evaluation.status.value == "FAILED"
    failures = evaluation.event.dagster_event.event_specific_data.metadata["failures"].value
    assert "handbook_auc" in failures and "floor 0.999" in failures
    for key in ("registered_model", "production_model"):
        assert instance.get_latest_materialization_event(dg.AssetKey(key)) is None
    assert registry.current(paths)["tag"] == champion and len(registry.list_versions(paths)) == versions
    rejected = [v for v in registry.records(paths).versions() if v["stage"] == "rejected"]
    assert rejected and "handbook_auc" in rejected[-1]["note"]
    from vigil.status import render_status, status

    assert f"rejected     {rejected[-1]['tag']}" in render_status(status(paths))  # what `vigil status` prints
    r = httpx.post(f"{server}/score", json=replay_bodies(pipeline_home, 1)[0], headers=AUTH)
    assert r.status_code == 200 and r.json()["model_version"] == champion

    # A person is told: the check sensor reads the failed evaluation and raises gate_failed once;
    # the run-failure sensor stays quiet for a run a blocking check stopped.
    import json

    from pipelines.alerting import CHECK_ALERT_SENSOR

    sensor = defs.get_sensor_def(CHECK_ALERT_SENSOR)
    with dg.build_sensor_context(instance=instance, cursor=None, definitions=defs, resources=defs.resources) as ctx:
        first = sensor(ctx)
    with dg.build_sensor_context(instance=instance, cursor=None, definitions=defs, resources=defs.resources) as ctx:
        sensor(ctx)  # evaluated again from scratch: the same episode is not delivered twice
    sent = [json.loads(x) for x in (paths.root / "alerts" / "alerts.jsonl").read_text().splitlines()]
    gate = [a for a in sent if a["name"] == "gate_failed" and a["episode"] == result.run_id]
    assert len(gate) == 1 and gate[0]["severity"] == "warning" and gate[0]["runbook"] == "docs/runbooks/gate_failed.md"
    assert "handbook_auc" in gate[0]["summary"] and first.cursor
