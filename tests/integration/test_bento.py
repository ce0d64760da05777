"""The packaged endpoint: ``bentoml build`` from ``bentofile.yaml`` without the network, then
``bentoml serve <tag>`` of the built Bento (its own copy of the code) scores a transaction."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import httpx
import psutil
import pytest

from tests.conftest import AUTH, ROOT, allow_test_key, replay_bodies
from vigil import registry
from vigil.processes import endpoint_env, free_port, stop, wait_http

pytestmark = pytest.mark.integration

# nothing may reach the network: no usage tracking, and no package index for uv or pip
OFFLINE = {"BENTOML_DO_NOT_TRACK": "True", "UV_OFFLINE": "1", "PIP_NO_INDEX": "1"}


def offline_build_env(bentoml_home, tmp_path) -> dict:
    """BentoML's build env: its own store, and ``uv`` on PATH (bentoml build calls it even with
    lock_packages: false, and pip-installs it from PyPI when it is missing); the one ``make``
    installs in .tools/, alone in a folder of its own so nothing else on PATH changes."""
    uv = shutil.which("uv") or ROOT / ".tools" / "bin" / "uv"
    assert os.path.exists(uv), "bentoml build needs uv on PATH (make .venv/.synced installs .tools/bin/uv)"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").symlink_to(uv)
    return {**os.environ, **OFFLINE, "BENTOML_HOME": str(bentoml_home),
            "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}


def test_built_bento_serves_a_transaction(pipeline_home, tmp_path):
    store = tmp_path / "bentoml"  # the build's store: only the Bento; the models stay in the home's store
    build = subprocess.run([sys.executable, "-m", "bentoml", "build", "--output", "tag", str(ROOT)], cwd=ROOT,
                           env=offline_build_env(store, tmp_path), capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    tag = build.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = store / "bentos" / name / version
    assert (bento / "src" / "serving" / "service.py").exists() and (bento / "src" / "vigil" / "scoring.py").exists()
    assert (bento / "src" / "infra" / "feast" / "local" / "feature_store.yaml").exists()
    assert not (bento / "src" / "tests").exists() and not (bento / "src" / "benchmarks").exists()
    reqs = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "lightgbm==" in reqs and "feast==" in reqs and "bentoml==" in reqs

    # the endpoint's own environment on the trained home (VIGIL_HOME; the registry reads the models
    # from $VIGIL_HOME/bentoml/models whatever BENTOML_HOME says), with BENTOML_HOME at the build's
    # store so the tag resolves there, and without the project on PYTHONPATH: the Bento's src/ is the code
    root = pipeline_home["paths"].root
    env = endpoint_env(root, extra={**OFFLINE, "BENTOML_HOME": str(store)})
    env["PYTHONPATH"] = os.pathsep.join(p for p in env["PYTHONPATH"].split(os.pathsep) if p and p != str(ROOT))
    allow_test_key(root)
    port = free_port(0)
    log_file = tmp_path / "bento-serve.log"
    with open(log_file, "w") as log:  # out of the project folder, so the working directory holds no code either
        proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", tag, "--host", "127.0.0.1", "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/readyz", 60, proc, "the built Bento", log_file)
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if "_bentoml_impl.worker.service" in c.cmdline()]
        assert workers and {w.cwd() for w in workers} == {str((bento / "src").resolve())}  # the service came from the Bento
        body = replay_bodies(pipeline_home, 1)[0]
        r = httpx.post(f"{url}/score", json=body, headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["transaction_id"] == body["transaction_id"]
        assert 0.0 <= out["fraud_score"] <= 1.0
        assert out["model_version"] == registry.current(pipeline_home["paths"])["tag"]
    finally:
        stop(proc)


def test_serving_requirements_are_the_lock_files_export():
    """serving/requirements.txt (the Bento's and the serving image's pins) is what `make bento`
    exports from uv.lock today: it had gone stale once (no s3fs, a dateutil the lock never held)."""
    uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    out = subprocess.run([uv, "export", "--frozen", "--no-hashes", "--no-annotate", "--no-dev", "--extra", "production",
                          "--extra", "batch", "--no-emit-project"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, **OFFLINE})
    assert out.returncode == 0, out.stderr
    pins = lambda text: [ln for ln in text.splitlines() if ln and not ln.startswith("#")]  # noqa: E731
    assert pins(out.stdout) == pins((ROOT / "serving" / "requirements.txt").read_text()), "run make bento"
    assert any(p.startswith("lleaves==") for p in pins(out.stdout))  # the compiled booster for /score_batch
