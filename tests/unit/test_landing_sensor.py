"""The landing sensor's decision: which days' landing files are not the ones their raw lake
partition was read from (the signature in the partition's manifest)."""

import json
import os
import time

import pandas as pd

from pipelines.sensors import landing_requests
from vigil import config, ingestion, lake
from vigil.sources import FileSource


def touch(path, mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"a": [1]}).to_parquet(path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def ingested(paths, kind: str, day: str) -> None:
    """The manifest a raw partition gets when the day's files are read as they are now."""
    from datetime import date

    folder = paths.raw if kind == "transactions" else paths.raw_labels
    d = date.fromisoformat(day)
    f = lake.day_file(folder, d, ingestion.MANIFEST)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"files": [], "signature": FileSource(paths.landing / kind).signature(d)}))


def test_new_late_and_processed_days(tmp_path):
    paths = config.paths(tmp_path)
    now = time.time()
    # 04-01: read as it is -> nothing to do
    touch(paths.landing / "transactions" / "2025-04-01.parquet", now - 100)
    ingested(paths, "transactions", "2025-04-01")
    # 04-02: new file, never read -> run
    touch(paths.landing / "transactions" / "2025-04-02.csv", now - 10)
    # 04-03: read, then a late fraud-report file arrived -> run again
    touch(paths.landing / "transactions" / "2025-04-03.parquet", now - 100)
    ingested(paths, "transactions", "2025-04-03")
    ingested(paths, "labels", "2025-04-03")
    touch(paths.landing / "labels" / "2025-04-03.parquet", now - 5)
    # 04-04: only fraud reports (its transactions have not arrived) -> wait
    touch(paths.landing / "labels" / "2025-04-04.parquet", now - 5)
    # 04-06: read, then its file replaced by one with an *older* modification time (a copy that
    # kept its source's time, or another host's clock) -> run again: not "newer", different
    touch(paths.landing / "transactions" / "2025-04-06.parquet", now - 100)
    ingested(paths, "transactions", "2025-04-06")
    touch(paths.landing / "transactions" / "2025-04-06.parquet", now - 1000)
    reqs = landing_requests(paths)
    assert [r.partition_key for r in reqs] == ["2025-04-02", "2025-04-03", "2025-04-06"]
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
    ingested(paths, "transactions", "2025-04-05")
    sensor = make_landing_sensor(dg.define_asset_job("j"))
    resources = {"storage": VigilStorage(home=str(tmp_path)), "source": LandingFilesSource(), "alerts": AlertSinks()}
    with dg.build_sensor_context(resources=resources) as ctx:
        assert isinstance(sensor(ctx), dg.SkipReason)  # read as it is
    touch(folder / "part-1.csv", now - 5)  # a second part arrives late
    with dg.build_sensor_context(resources=resources) as ctx:
        reqs = sensor(ctx)
    assert [r.partition_key for r in reqs] == ["2025-04-05"]
    assert reqs[0].tags["vigil/files"] == "part-0.csv, part-1.csv"


def test_landing_records_the_signature_the_sensor_compares(tmp_path):
    from datetime import date

    from vigil.simulator import simulate, write_landing

    paths = config.paths(tmp_path)
    day = date(2025, 4, 1)
    write_landing(simulate(n_customers=20, n_terminals=40, n_days=1, start_date=day, seed=3), paths.landing)
    assert [r.partition_key for r in landing_requests(paths)] == ["2025-04-01"]
    ingestion.land_transactions(paths, day)
    ingestion.land_labels(paths, day)
    assert landing_requests(paths) == []  # what was read is what lands
    f = next((paths.landing / "transactions").iterdir())
    os.utime(f, ns=(f.stat().st_mtime_ns + 1, f.stat().st_mtime_ns + 1))  # rewritten in place
    assert [r.partition_key for r in landing_requests(paths)] == ["2025-04-01"]
