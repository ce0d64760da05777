"""Batch statistics against the reference profile: each check fails on the break it is for, passes
on a clean day, and a blocking failure holds the day back from the feature history."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from vigil import config, data_profile, ingestion, lake
from vigil.features import build_snapshots
from vigil.simulator import TX_COLUMNS, simulate
from vigil.sources import FileSource

START = date(2025, 4, 1)
NOW = pd.Timestamp("2025-06-01").to_pydatetime()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    paths = config.paths(tmp_path_factory.mktemp("profile"))
    sim = simulate(n_customers=300, n_terminals=600, n_days=30, start_date=START, seed=5)
    folder = paths.landing / "transactions"
    folder.mkdir(parents=True)
    tx = sim.transactions
    for i in range(30):
        d = START + timedelta(days=i)
        tx[tx["tx_datetime"].dt.date == d][TX_COLUMNS].to_parquet(folder / f"{d}.parquet", index=False)
        ingestion.land_transactions(paths, d, FileSource(folder))
        ingestion.validate_transactions_day(paths, d, now=NOW)
    profile, ids = data_profile.build(paths, [START + timedelta(days=i) for i in range(21)])
    data_profile.save(profile, ids, paths.models / "ref")
    return paths, data_profile.load(paths.models / "ref"), tx


def day_frame(tx, i):
    return tx[tx["tx_datetime"].dt.date == START + timedelta(days=i)][TX_COLUMNS].reset_index(drop=True)


def outcome(reference, frame):
    checks = data_profile.check_day(*reference, frame, frame.dropna())
    return {c.name: c for c in checks}


def test_profile_numbers(world):
    _, (profile, ids), tx = world
    assert profile["days"] == ["2025-04-01", "2025-04-21"]
    assert 0.9 * len(day_frame(tx, 3)) < profile["daily_rows_mean"] < 1.1 * len(day_frame(tx, 3))
    assert profile["null_rates"]["tx_amount"] == 0.0 and len(profile["amount_edges"]) == 11
    assert len(ids["customer_id"]) <= 300


def test_a_clean_later_day_passes_every_check(world):
    _, reference, tx = world
    res = outcome(reference, day_frame(tx, 25))
    assert all(c.passed for c in res.values()), {n: (c.actual, c.expected) for n, c in res.items()}


def test_x100_amounts_under_the_ceiling_are_blocking_outliers(world):
    _, reference, tx = world
    frame = day_frame(tx, 25)
    rows = frame.sample(frac=0.05, random_state=0).index
    frame.loc[rows, "tx_amount"] = np.minimum(frame.loc[rows, "tx_amount"] * 100, 9_999)
    c = outcome(reference, frame)[data_profile.AMOUNT_OUTLIERS]
    assert not c.passed and c.severity == "ERROR" and c.actual > 0.03


def test_inflation_is_a_warned_shift_not_an_outlier(world):
    _, reference, tx = world
    frame = day_frame(tx, 25).assign(tx_amount=lambda f: f["tx_amount"] * 1.6)
    res = outcome(reference, frame)
    assert not res[data_profile.AMOUNT_SHIFT].passed and res[data_profile.AMOUNT_SHIFT].severity == "WARN"
    assert res[data_profile.AMOUNT_OUTLIERS].passed


def test_half_a_day_is_a_blocking_volume_drop(world):
    _, reference, tx = world
    c = outcome(reference, day_frame(tx, 25).iloc[::3])[data_profile.DAILY_VOLUME]
    assert not c.passed and c.severity == "ERROR" and c.actual < 0.5


def test_nulls_and_unseen_customers_warn(world):
    _, reference, tx = world
    frame = day_frame(tx, 25).astype({"terminal_id": "Float64"})
    frame.loc[frame.sample(frac=0.1, random_state=1).index, "terminal_id"] = None
    res = data_profile.check_day(*reference, frame, frame.dropna())
    nulls = {c.name: c for c in res}[data_profile.NULL_RATES]
    assert not nulls.passed and nulls.severity == "WARN" and "terminal_id" in nulls.detail
    new = day_frame(tx, 25)
    new.loc[new.sample(frac=0.2, random_state=2).index, "customer_id"] += 1_000_000
    unseen = outcome(reference, new)[data_profile.UNSEEN_ENTITIES]
    assert not unseen.passed and unseen.actual > 0.19


def test_a_blocked_day_is_held_and_later_features_refuse_the_gap(world, tmp_path):
    paths, reference, tx = world
    day = START + timedelta(days=26)
    frame = day_frame(tx, 26)
    frame.loc[frame.sample(frac=0.05, random_state=0).index, "tx_amount"] *= 100
    folder = paths.landing / "transactions"
    frame.to_parquet(folder / f"{day}.parquet", index=False)
    ingestion.land_transactions(paths, day, FileSource(folder))
    v = ingestion.validate_transactions_day(paths, day, now=NOW, reference=reference)
    assert v.held and v.held[0].startswith("amount_outliers")
    assert lake.read_day(paths.validated, day) is None and lake.read_day(paths.held, day) is not None
    with pytest.raises(ValueError, match=rf"{day} held by validation \(amount_outliers"):
        build_snapshots(paths, day + timedelta(days=1))
    # the source is fixed: the day is admitted, the hold lifted, features compute again
    day_frame(tx, 26).to_parquet(folder / f"{day}.parquet", index=False)
    ingestion.land_transactions(paths, day, FileSource(folder))
    v = ingestion.validate_transactions_day(paths, day, now=NOW, reference=reference)
    assert not v.held and lake.read_day(paths.held, day) is None
    assert len(lake.read_day(paths.validated, day)) == len(day_frame(tx, 26))
    build_snapshots(paths, day + timedelta(days=1))
