"""`vigil status`, `vigil models`, `vigil promote`, `vigil rollback` on a copy of the trained home."""

import subprocess
import sys
import time

import pytest

from tests.conftest import copy_home
from vigil import config, registry
from vigil.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture()
def trained(pipeline_home, tmp_path):
    root = copy_home(pipeline_home["paths"].root, tmp_path / "vigil")
    return config.paths(root)


def test_status_models_promote_rollback(trained, capsys):
    paths, home = trained, str(trained.root)
    first = registry.current(paths)["tag"]
    main(["status", "--home", home])
    out = capsys.readouterr().out
    assert f"production   {first}" in out and "Handbook protocol" in out and "by dagster" in out
    # a second version (the same model re-registered) through the CLI: promote, then roll back
    model, policy, info = registry.load(paths, first)
    second = registry.register(paths, model, policy, info["metadata"], reason="test")
    main(["models", "--home", home])
    listing = capsys.readouterr().out
    assert first in listing and second in listing and "candidate" in listing
    main(["promote", second, "--reason", "better on the last week", "--home", home])
    assert registry.current(paths)["tag"] == second
    assert registry.records(paths).version(first)["stage"] == "archived"
    main(["rollback", "--reason", "alerts after the switch", "--home", home])
    assert registry.current(paths)["tag"] == first
    t = registry.records(paths).transitions(first)[-1]
    assert t["to_stage"] == "production" and "rollback from" in t["reason"] and "alerts" in t["reason"]
    main(["status", "--home", home])
    assert "rollback from" in capsys.readouterr().out


def test_bad_commands_are_refused_by_name(trained):
    home = str(trained.root)
    with pytest.raises(SystemExit, match="not in"):
        main(["promote", "vigil-fraud:nope", "--reason", "x", "--home", home])
    with pytest.raises(SystemExit, match="only version ever in production"):
        main(["rollback", "--reason", "x", "--home", home])


def test_status_answers_under_a_second(trained):
    """The command as a user runs it: a fresh interpreter, no model stack imported."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "vigil.cli", "status", "--home", str(trained.root)],
                       capture_output=True, text=True, timeout=60)
    took = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert "production" in r.stdout
    imported = subprocess.run([sys.executable, "-X", "importtime", "-m", "vigil.cli", "status", "--home", str(trained.root)],
                              capture_output=True, text=True, timeout=60).stderr
    assert "lightgbm" not in imported and "bentoml" not in imported and "dagster" not in imported, "status imports the model stack"
    print(f"vigil status: {took:.2f} s wall")


def test_promote_and_rollback_as_dagster_jobs(trained):
    import dagster as dg

    from pipelines.definitions import defs
    from resources import VigilStorage

    paths = trained
    first = registry.current(paths)["tag"]
    model, policy, info = registry.load(paths, first)
    second = registry.register(paths, model, policy, info["metadata"], reason="test")
    res = {"storage": VigilStorage(home=str(paths.root))}
    cfg = {"ops": {"promote_version": {"config": {"version": second, "reason": "from the UI"}}}}
    assert defs.resolve_job_def("promote_model").execute_in_process(run_config=cfg, resources=res).success
    assert registry.current(paths)["tag"] == second
    cfg = {"ops": {"rollback_production": {"config": {"reason": "from the UI"}}}}
    assert defs.resolve_job_def("rollback_model").execute_in_process(run_config=cfg, resources=res).success
    assert registry.current(paths)["tag"] == first
    bad = {"ops": {"promote_version": {"config": {"version": "vigil-fraud:nope", "reason": "x"}}}}
    assert not defs.resolve_job_def("promote_model").execute_in_process(run_config=bad, resources=res,
                                                                         raise_on_error=False).success


def test_reproduce_gives_the_same_predictions_or_names_the_changed_input(trained, capsys):
    from vigil import lake
    from vigil.feature_repo import apply, open_store

    paths, home = trained, str(trained.root)
    apply(open_store(paths, "local"), paths)  # the copy has no Feast registry of its own
    tag = registry.current(paths)["tag"]
    main(["reproduce", tag, "--home", home])
    out = capsys.readouterr().out
    assert f"{tag}: reproduced" in out and "max |score difference| 0" in out
    day = sorted(registry.model_info(paths, tag)["metadata"]["lineage"]["partition_hashes"])[3]
    f = lake.read_day(paths.validated, __import__("datetime").date.fromisoformat(day))
    lake.write_day(paths.validated, __import__("datetime").date.fromisoformat(day), f.iloc[1:])  # one row lost
    with pytest.raises(SystemExit):
        main(["reproduce", tag, "--home", home])
    assert f"validated partition {day}: content changed" in capsys.readouterr().out
