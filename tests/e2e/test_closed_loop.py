"""The closed loop, end to end: the main job at small scale with concept drift injected; the drift
sensor reads the Evidently report and launches the retraining run, which registers a new model."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_main_job_then_drift_sensor_retrains(tmp_path, monkeypatch):
    home = tmp_path / "vigil"
    cmd = [sys.executable, "-m", "vigil.cli", "demo", "--once", "--json", "--days", "80", "--customers", "400",
           "--terminals", "800", "--seed", "7", "--drift", "concept:78:0.1", "--home", str(home),
           "--dagster-port", "0", "--serving-port", "0"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-4000:]
    summary = json.loads(r.stdout)
    for key in ("model_version", "served_requests", "serving_p99_ms", "drift_detected"):
        assert key in summary
    assert set(summary["metrics"]) == {f"{p}_{m}" for p in ("handbook", "week")
                                       for m in ("auc", "average_precision", "card_precision_at_100")}
    assert summary["metrics"]["handbook_auc"] > 0.75
    assert summary["served_requests"] > 500 and summary["failed_requests"] == 0
    assert summary["drift_detected"] is True
    # the report link is an http URL on the demo's report server (a browser does not follow file://)
    assert summary["drift_report"].startswith(summary["urls"]["reports"] + "/drift/")
    assert (home / "monitoring" / summary["drift_report"].split(summary["urls"]["reports"] + "/")[1]).is_file()
    assert "validated: 80/80 days" in r.stderr  # progress shown for long steps
    # the real Dagster daemon ran the drift sensor, which launched retraining; it registered and
    # promoted a new model version
    retrain = summary["retraining"]
    assert retrain and retrain["status"] == "SUCCESS", retrain
    assert retrain["run_key"].startswith("drift-episode-")
    assert retrain["model_version"] != summary["model_version"]
    # ... which rolled out through every step while the next day's traffic arrived, and adapted:
    # on post-drift requests both models scored, the new one ranks frauds better (ground truth)
    loop = summary["loop"]
    assert loop["rollout_result"] == "promoted", loop
    assert [m["to"] for m in loop["rollout_steps"]] == ["candidate", "shadow", "canary", "canary", "canary", "production"]
    assert loop["file_to_full_traffic_s"] < 300  # the goal: drift to new model in 5 minutes
    ap = loop["post_drift_ap_truth"]
    assert ap["frauds"] >= 20 and ap["new_model"] > ap["old_model"], ap
    assert loop["drift_onset_day"] == "2025-06-18" and loop["detection_day"] == "2025-06-20"
    # the daemon's drift sensor told a person, once, with the runbook
    alerts = [json.loads(x) for x in (home / "alerts" / "alerts.jsonl").read_text().splitlines()]
    drift_alerts = [a for a in alerts if a["name"] == "drift_detected"]
    assert len(drift_alerts) == 1 and drift_alerts[0]["runbook"] == "docs/runbooks/drift_detected.md"

    # The demo left its Dagster instance behind: evaluate the real sensor against it.
    for k, v in {"VIGIL_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "BENTOML_HOME": str(home / "bentoml"),
                 "VIGIL_START_DATE": "2025-04-01"}.items():
        monkeypatch.setenv(k, v)
    from pipelines.definitions import defs
    from pipelines.sensors import DRIFT_SENSOR
    from vigil import config, registry

    paths = config.paths(home)
    assert len(registry.list_versions(paths)) == 2
    assert registry.current(paths)["tag"] == retrain["model_version"]
    # The sensor's episode logic, evaluated against the demo's instance. The new model trained on
    # the latest day: from an empty cursor the drifted report starts no episode (cool-down, nothing
    # new to learn). Once a later day is validated, it yields one run request, the same episode's;
    # with the cursor it returned, nothing more.
    from vigil import lake

    with dg.DagsterInstance.get() as instance:
        sensor = defs.get_sensor_def(DRIFT_SENSOR)
        cooling = sensor(dg.build_sensor_context(instance=instance, cursor=None, definitions=defs, resources=defs.resources))
        assert not getattr(cooling, "run_requests", None)
        last = lake.available_days(paths.validated)[-1]
        lake.write_day(paths.validated, last + timedelta(days=1), lake.read_day(paths.validated, last))
        result = sensor(dg.build_sensor_context(instance=instance, cursor=None, definitions=defs, resources=defs.resources))
        assert len(result.run_requests) == 1 and result.run_requests[0].run_key == retrain["run_key"]
        assert result.run_requests[0].tags["vigil/trigger"] == "drift"
        again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor, definitions=defs, resources=defs.resources))
        assert not getattr(again, "run_requests", None)
