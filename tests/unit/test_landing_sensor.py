"""The landing sensor's decision: which days have files newer than what the lake holds."""

import os
import time

import pandas as pd

from pipelines.sensors import landing_requests
from vigil import config


def touch(path, mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"a": [1]}).to_parquet(path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def test_new_late_and_processed_days(tmp_path):
    paths = config.paths(tmp_path)
    now = time.time()
    # 04-01: processed after its files arrived -> nothing to do
    touch(paths.landing / "transactions" / "2025-04-01.parquet", now - 100)
    touch(paths.validated / "2025-04-01.parquet", now - 50)
    # 04-02: new file, never processed -> run
    touch(paths.landing / "transactions" / "2025-04-02.csv", now - 10)
    # 04-03: processed, then a late fraud-report file arrived -> run again
    touch(paths.landing / "transactions" / "2025-04-03.parquet", now - 100)
    touch(paths.validated / "2025-04-03.parquet", now - 50)
    touch(paths.labels / "2025-04-03.parquet", now - 50)
    touch(paths.landing / "labels" / "2025-04-03.parquet", now - 5)
    # 04-04: only fraud reports (its transactions have not arrived) -> wait
    touch(paths.landing / "labels" / "2025-04-04.parquet", now - 5)
    reqs = landing_requests(paths)
    assert [r.partition_key for r in reqs] == ["2025-04-02", "2025-04-03"]
    assert reqs[1].tags["vigil/files"] == "2025-04-03.parquet"
    # the same files give the same run keys (Dagster launches a run key once)
    assert [r.run_key for r in landing_requests(paths)] == [r.run_key for r in reqs]


def test_a_part_added_to_a_days_folder_reruns_the_day(tmp_path):
    import dagster as dg

    from pipelines.sensors import make_landing_sensor
    from resources import AlertSinks, LandingFilesSource, VigilStorage

    paths = config.paths(tmp_path)
    now = time.time()
    folder = paths.landing / "transactions" / "2025-04-05"
    touch(folder / "part-0.csv", now - 100)
    touch(paths.validated / "2025-04-05.parquet", now - 50)
    sensor = make_landing_sensor(dg.define_asset_job("j"))
    resources = {"storage": VigilStorage(home=str(tmp_path)), "source": LandingFilesSource(), "alerts": AlertSinks()}
    with dg.build_sensor_context(resources=resources) as ctx:
        assert isinstance(sensor(ctx), dg.SkipReason)  # processed after its only part arrived
    touch(folder / "part-1.csv", now - 5)  # a second part arrives late
    with dg.build_sensor_context(resources=resources) as ctx:
        reqs = sensor(ctx)
    assert [r.partition_key for r in reqs] == ["2025-04-05"]
    assert reqs[0].tags["vigil/files"] == "part-0.csv, part-1.csv"
