"""The simulator's covariate scenarios end to end through real Dagster runs: a world with the drift
from day 78 goes through the daily pipeline and the retraining job; day 80 is served by the
endpoint's scorer (in process), its file lands, the day's run writes the Evidently report, and the
drift sensor must request retraining (and raise ``drift_detected``) — the stated response to
``amount_inflation`` and ``new_segment`` (README: what each scenario should make Vigil do). The
``concept`` scenario runs through the whole demo in ``test_closed_loop.py``; ``upstream_breakage``
in ``test_upstream_breakage.py``."""

import json
from datetime import date, timedelta

import dagster as dg
import pytest

pytestmark = pytest.mark.e2e

START = date(2025, 4, 1)


@pytest.mark.parametrize("scenario,intensity", [("amount_inflation", 0.5), ("new_segment", 0.3)])
def test_covariate_drift_requests_retraining(tmp_path, monkeypatch, scenario, intensity):
    home = tmp_path / "vigil"
    for k, v in {"VIGIL_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
                 "VIGIL_START_DATE": START.isoformat()}.items():
        monkeypatch.setenv(k, v)
    from pipelines.definitions import defs
    from pipelines.sensors import DRIFT_SENSOR
    from vigil import config, registry
    from vigil.scoring import Scorer
    from vigil.simulator import TX_COLUMNS, Drift, simulate, write_landing

    paths = config.paths(home)
    sim = simulate(400, 800, 81, START, seed=11, drift=[Drift(scenario, 78, intensity)])
    write_landing(sim, paths.landing, days=range(80))
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([defs.get_assets_def("feast_registry")], instance=instance, resources=defs.resources).success
    last, served = START + timedelta(days=79), START + timedelta(days=80)
    assert defs.resolve_job_def("daily_pipeline").execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": START.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat()}).success
    assert defs.resolve_job_def("retraining").execute_in_process(instance=instance).success
    model = registry.current(paths)["tag"]

    # day 80 is served (the endpoint's own scoring path), then its file lands and its run monitors it
    tx = sim.transactions
    scorer = Scorer(paths)
    try:
        day = tx.loc[tx["tx_datetime"].dt.date == served, TX_COLUMNS]
        out = scorer.score(day.to_dict(orient="records"))  # what the endpoint hands the scorer: parsed values
    finally:
        scorer.close()
    assert out and {r["model_version"] for r in out} == {model}
    write_landing(sim, paths.landing, days=range(80, 81), labels=False)
    assert defs.resolve_job_def("daily_pipeline").execute_in_process(partition_key=served.isoformat(), instance=instance).success
    report = json.loads((paths.monitoring / "drift" / f"{served}.json").read_text())
    assert report["dataset_drift"] is True, report

    sensor = defs.get_sensor_def(DRIFT_SENSOR)
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as ctx:
        result = sensor(ctx)
    assert len(result.run_requests) == 1 and result.run_requests[0].tags["vigil/trigger"] == "drift"
    assert result.run_requests[0].run_config["ops"]["production_model"]["config"]["strategy"] == "rollout"
    alerts = [json.loads(x) for x in (home / "alerts" / "alerts.jsonl").read_text().splitlines()]
    assert [a["name"] for a in alerts].count("drift_detected") == 1
