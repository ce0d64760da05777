"""The lake's one API over a local folder and an S3-compatible object store (moto's server)."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from vigil import config, lake
from vigil.settings import Settings, SettingsError

DAYS = [date(2025, 4, 1) + timedelta(days=i) for i in range(4)]


@pytest.fixture(params=["local", "s3"])
def folder(request, tmp_path):
    if request.param == "local":
        return tmp_path / "lake" / "validated_transactions"
    store = request.getfixturevalue("object_store")
    return lake.location(f"s3://{store['bucket']()}/lake", store["endpoint"]) / "validated_transactions"


def frame(day: date, n: int = 5, first_id: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"transaction_id": np.arange(first_id, first_id + n, dtype="int64"),
                         "tx_datetime": pd.Timestamp(day) + pd.to_timedelta(np.arange(n), "h"),
                         "tx_amount": np.linspace(1.0, 2.0, n)})


def test_partitions_round_trip(folder):
    assert lake.available_days(folder) == [] and lake.read_day(folder, DAYS[0]) is None
    for i, d in enumerate(DAYS[:3]):
        lake.write_day(folder, d, frame(d, first_id=10 * i))
    lake.day_file(folder, DAYS[0], ".files.json").write_text('{"files": []}')  # a manifest beside: not a day
    assert lake.available_days(folder) == DAYS[:3]
    pd.testing.assert_frame_equal(lake.read_day(folder, DAYS[1]), frame(DAYS[1], first_id=10))
    both = lake.read_days(folder, DAYS, ["transaction_id", "tx_amount"])  # the missing 4th day is skipped
    assert both["transaction_id"].tolist() == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24]
    assert sorted(lake.values_in_range(folder, DAYS, "transaction_id", 12, 21).tolist()) == [12, 13, 14, 20, 21]
    assert lake.read_metadata(lake.day_file(folder, DAYS[2])).num_rows == 5
    assert lake.day_file(folder, DAYS[0], ".files.json").read_text() == '{"files": []}'


def test_rewrite_replaces_and_unlink(folder):
    lake.write_day(folder, DAYS[0], frame(DAYS[0], n=5))
    first = lake.mtime_ns(lake.day_file(folder, DAYS[0]))
    lake.write_day(folder, DAYS[0], frame(DAYS[0], n=2))  # a re-run replaces the partition: no duplicates
    assert len(lake.read_day(folder, DAYS[0])) == 2
    assert lake.mtime_ns(lake.day_file(folder, DAYS[0])) >= first
    lake.day_file(folder, DAYS[0]).unlink(missing_ok=True)
    lake.day_file(folder, DAYS[0]).unlink(missing_ok=True)  # twice: fine
    assert not lake.day_file(folder, DAYS[0]).exists() and lake.available_days(folder) == []
    with pytest.raises(FileNotFoundError):
        lake.day_file(folder, DAYS[0]).unlink()


def test_lake_location_from_settings(tmp_path):
    env = {"VIGIL_HOME": str(tmp_path)}
    assert config.paths(settings=Settings.from_env(env)).lake == tmp_path.resolve() / "lake"
    s = Settings.from_env({**env, "VIGIL_LAKE_URI": "s3://bucket/a/b/", "VIGIL_S3_ENDPOINT_URL": "http://127.0.0.1:9000"})
    p = config.paths(settings=s)
    assert str(p.validated) == "s3://bucket/a/b/validated_transactions" and p.lake_is_remote
    assert p.validated.endpoint == "http://127.0.0.1:9000"
    assert str(config.paths(settings=Settings.from_env({**env, "VIGIL_LAKE_URI": "rel/lake"})).lake).endswith("rel/lake")
    for bad in ("gs://bucket/x", "s3://", "s3:///x", "ftp://h/x"):
        with pytest.raises(SettingsError, match="VIGIL_LAKE_URI"):
            Settings.from_env({**env, "VIGIL_LAKE_URI": bad})
    with pytest.raises(SettingsError, match="VIGIL_S3_ENDPOINT_URL"):
        Settings.from_env({**env, "VIGIL_S3_ENDPOINT_URL": "127.0.0.1:9000"})
