"""Runs survive faults (issue 15 §2), injected through a TCP proxy the test controls between Vigil
and the machine's Redis (never by stopping the shared service): the online store unreachable when a
materialization starts, and cut in the middle of one. The asset retries (assets.common.io_retries)
and the online store ends exactly as an undisturbed run leaves it: each entity's newest snapshot of
the range, no entity lost."""

import threading
import time

import numpy as np
import pandas as pd
import pytest

from tests.conftest import copy_home, drop_redis_project, env_set, profile_env
from tests.proxy import Proxy


def newest_in_range(paths, folder: str, key: str, days) -> pd.DataFrame:
    from vigil import lake

    frames = [f for d in days if (f := lake.read_day(paths.features / folder, d)) is not None]
    return pd.concat(frames).drop_duplicates(key, keep="last").set_index(key).sort_index()


def retried(instance) -> bool:
    import dagster as dg

    runs = instance.get_runs(limit=1)
    return bool(runs and instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY))


@pytest.mark.parametrize("fault", ["down_at_start", "cut_mid_run"])
def test_online_store_fault_during_materialization_is_retried_to_the_undisturbed_result(
        fault, pipeline_home, production_services, tmp_path, monkeypatch):
    import dagster as dg

    from assets import common
    from pipelines.definitions import ALL_ASSETS
    from resources import resources_for_profile
    from vigil import config
    from vigil.feature_repo import OnlineReader, open_store
    from vigil.features import FEATURE_VIEWS

    monkeypatch.setattr(common, "IO_RETRY_SECONDS", 1.0)  # waits 1, 2, 4 s instead of 5, 10, 20
    root = copy_home(pipeline_home["paths"].root, tmp_path / "vigil")
    env = profile_env("production", production_services, root)  # a Feast project (Redis prefix) of its own
    host, port = env["VIGIL_REDIS_URL"].split(":")
    proxy = Proxy(host, int(port))
    last = pipeline_home["last_day"]
    days = [last - pd.Timedelta(days=i).to_pytimedelta() for i in range(9, -1, -1)]
    tags = {"dagster/asset_partition_range_start": days[0].isoformat(), "dagster/asset_partition_range_end": last.isoformat()}
    instance = dg.DagsterInstance.ephemeral()
    try:
        with env_set({**env, "VIGIL_REDIS_URL": f"127.0.0.1:{proxy.port}"}):
            resources = resources_for_profile("production")
            defs = dg.Definitions(assets=ALL_ASSETS, resources=resources)
            assert dg.materialize([defs.get_assets_def("feast_registry")], instance=instance, resources=resources).success
            result = {}

            def run():
                result["r"] = dg.materialize([defs.get_assets_def("online_features")], instance=instance,
                                             resources=resources, tags=tags, raise_on_error=False)

            worker = threading.Thread(target=run)
            if fault == "down_at_start":  # refused until the run has asked for a retry, then back
                proxy.cut()
                worker.start()
                deadline = time.time() + 90
                while time.time() < deadline and not retried(instance):
                    time.sleep(0.2)
                time.sleep(1.5)  # and the next attempt meets it down too
                proxy.restore()
            else:  # slowed down, then every connection reset mid-write and refused for 1.5 s
                proxy.delay_s = 0.002
                worker.start()
                time.sleep(1.0)
                proxy.cut()
                time.sleep(1.5)
                proxy.restore()
                proxy.delay_s = 0.0
            worker.join(timeout=120)
            r = result["r"]
            assert r.success
            retries = [e for e in r.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
            if fault == "down_at_start":
                assert retries  # the fault hit the run, and it was retried, not failed
        with env_set(env):  # read back directly, not through the proxy
            reader = OnlineReader(open_store(config.paths(root)))
            for spec in FEATURE_VIEWS:
                want = newest_in_range(config.paths(root), spec.folder, spec.key, days)
                names = ("customer_avg_amount_30d",) if spec.key == "customer_id" else ("terminal_risk_7d",)
                got = reader.read_matrix(spec.name, want.index.tolist(), names + (spec.asof,))
                np.testing.assert_array_equal(got[:, 0], want[names[0]].to_numpy())
                assert (got[:, 1] == want[spec.asof].to_numpy()).all()  # the newest snapshot of each entity
    finally:
        proxy.close()
        drop_redis_project(production_services, env["VIGIL_FEAST_PROJECT"])
