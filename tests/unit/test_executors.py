"""VIGIL_K8S_STEP_JOBS: which jobs run each step as a Kubernetes Job (dagster-k8s), checked by name."""

import pytest

from pipelines.executors import step_executor
from vigil.settings import Settings, SettingsError

JOBS = ("daily_pipeline", "retraining", "live_performance")


def settings(value: str) -> Settings:
    return Settings.from_env({"VIGIL_K8S_STEP_JOBS": value})


def test_default_is_in_process_for_every_job():
    assert {step_executor(j, JOBS, settings("")).name for j in JOBS} == {"in_process"}


def test_named_jobs_get_kubernetes_jobs_for_steps():
    s = settings(" retraining , ")
    assert s.k8s_step_jobs == "retraining"
    assert step_executor("retraining", JOBS, s).name == "k8s"
    assert step_executor("daily_pipeline", JOBS, s).name == "in_process"


@pytest.mark.parametrize("value, match", [("retrain", "names no job retrain"), ("daily pipeline", "separated by commas"),
                                          ("x;rm", "separated by commas")])
def test_unknown_or_malformed_names_are_refused(value, match):
    with pytest.raises(SettingsError, match="VIGIL_K8S_STEP_JOBS"):
        step_executor("retraining", JOBS, settings(value))
    with pytest.raises(SettingsError, match=match):
        step_executor("retraining", JOBS, settings(value))


def test_the_definitions_use_the_setting(monkeypatch):
    import subprocess
    import sys

    code = ("from pipelines.definitions import defs; "
            "print(defs.resolve_job_def('retraining').executor_def.name, defs.resolve_job_def('daily_pipeline').executor_def.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "VIGIL_K8S_STEP_JOBS": "retraining"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["k8s", "in_process"]
