"""Shared fixtures: tiny simulated worlds, built with the simulator (no downloads)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START = date(2025, 4, 1)
HISTORY = 80  # days: 37 warm-up + 2 weeks train + gap + test + maturity
SMALL = dict(n_customers=400, n_terminals=800, start_date=START, seed=7)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """An empty VIGIL_HOME for one test."""
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "vigil"))
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "vigil" / "bentoml"))
    from vigil import config

    return config.paths(tmp_path / "vigil")


@pytest.fixture(scope="session")
def pipeline_home(tmp_path_factory):
    """A VIGIL_HOME where the daily pipeline ran over 40 days and a model was trained and promoted,
    all through real Dagster runs (in process) against real Feast, LightGBM and BentoML's store."""
    import dagster as dg

    from vigil import config
    from vigil.simulator import simulate, write_landing

    root = tmp_path_factory.mktemp("pipeline") / "vigil"
    env = {"VIGIL_HOME": str(root), "BENTOML_HOME": str(root / "bentoml"), "VIGIL_START_DATE": START.isoformat()}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    paths = config.paths(root)
    sim = simulate(n_days=HISTORY + 1, **SMALL)
    write_landing(sim, paths.landing)

    from pipelines.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([defs.get_assets_def("feast_registry")], instance=instance, resources=defs.resources)
    last = START + timedelta(days=HISTORY - 1)
    result = defs.resolve_job_def("daily_pipeline").execute_in_process(
        instance=instance,
        tags={"dagster/asset_partition_range_start": START.isoformat(), "dagster/asset_partition_range_end": last.isoformat()},
    )
    assert result.success
    retrain = defs.resolve_job_def("retraining").execute_in_process(instance=instance)
    assert retrain.success
    yield {"paths": paths, "sim": sim, "instance": instance, "defs": defs, "last_day": last, "replay_day": START + timedelta(days=HISTORY)}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def server(pipeline_home):
    """The real BentoML server (``bentoml serve``) over loopback, on the pipeline's home."""

    port = free_port()
    env = dict(os.environ, VIGIL_HOME=str(pipeline_home["paths"].root), BENTOML_HOME=str(pipeline_home["paths"].bentoml_home),
               PYTHONPATH=str(ROOT))
    log = open(pipeline_home["paths"].root / "serving-test.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "serving.service:FraudScorer", "--host", "127.0.0.1",
                             "--port", str(port), "--working-dir", str(ROOT)], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    from vigil.cli import stop, wait_http

    try:
        wait_http(f"{url}/readyz", 120, proc, "BentoML endpoint", pipeline_home["paths"].root / "serving-test.log")
        yield url
    finally:
        stop(proc)
