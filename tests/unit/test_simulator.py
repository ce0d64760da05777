import pandas as pd
import pytest

from vigil.simulator import Drift, simulate, write_landing


def test_same_seed_same_data_other_seed_other_data():
    a = simulate(n_customers=200, n_terminals=400, n_days=10, seed=1)
    b = simulate(n_customers=200, n_terminals=400, n_days=10, seed=1)
    c = simulate(n_customers=200, n_terminals=400, n_days=10, seed=2)
    pd.testing.assert_frame_equal(a.transactions, b.transactions)
    pd.testing.assert_frame_equal(a.labels, b.labels)
    assert not a.transactions[["tx_amount"]].equals(c.transactions[["tx_amount"]])


def test_handbook_shape():
    sim = simulate(n_customers=1000, n_terminals=2000, n_days=30, seed=3)
    tx = sim.transactions
    assert tx["transaction_id"].is_unique and tx["tx_datetime"].is_monotonic_increasing
    assert (tx["tx_amount"] >= 0).all()
    assert tx["tx_datetime"].min() >= pd.Timestamp(sim.start_date)
    assert tx["tx_datetime"].max() < pd.Timestamp(sim.start_date) + pd.Timedelta(days=30)
    # about 2 transactions per customer per day (rate uniform in [0, 4])
    assert 1.5 < len(tx) / (1000 * 30) < 2.5
    # the three Handbook scenarios all occur; scenario 1 is exactly "amount > 220"
    assert set(tx["tx_fraud_scenario"].unique()) >= {0, 1, 2, 3}
    assert (tx.loc[tx["tx_amount"] > 220, "tx_fraud"] == 1).all()


def test_labels_arrive_after_the_transaction_within_maturity():
    sim = simulate(n_customers=300, n_terminals=600, n_days=20, seed=4)
    lab = sim.labels.merge(sim.transactions[["transaction_id", "tx_datetime", "tx_fraud"]], on="transaction_id")
    assert (lab["tx_fraud_y"] == 1).all()
    delay = lab["reported_at"] - lab["tx_datetime"]
    assert (delay > pd.Timedelta(0)).all() and (delay <= pd.Timedelta(days=7)).all()
    assert len(sim.labels) == int(sim.transactions["tx_fraud"].sum())


def test_concept_drift_only_from_its_day():
    base = simulate(n_customers=500, n_terminals=1000, n_days=20, seed=5)
    drift = simulate(n_customers=500, n_terminals=1000, n_days=20, seed=5, drift=[Drift("concept", 12, 0.05)])
    d = drift.transactions
    day = (d["tx_datetime"] - pd.Timestamp(drift.start_date)).dt.days
    new = d[d["tx_fraud_scenario"] == 4]
    assert len(new) > 0 and (day[new.index] >= 12).all()
    before = lambda t: t[(t["tx_datetime"] - pd.Timestamp(t["tx_datetime"].min().date())).dt.days < 12]
    assert len(before(d)) == len(before(base.transactions))


def test_unknown_scenario_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown drift scenario"):
        Drift("aliens", 3)


def test_landing_files_hold_source_columns_only(tmp_path):
    sim = simulate(n_customers=100, n_terminals=200, n_days=3, seed=6)
    write_landing(sim, tmp_path)
    files = sorted((tmp_path / "transactions").glob("*.parquet"))
    assert [f.stem for f in files] == ["2025-04-01", "2025-04-02", "2025-04-03"]
    day = pd.read_parquet(files[0])
    assert list(day.columns) == ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount"]
    total = sum(len(pd.read_parquet(f)) for f in files)
    assert total == len(sim.transactions)
    labels = pd.concat([pd.read_parquet(f) for f in (tmp_path / "labels").glob("*.parquet")])
    assert len(labels) == len(sim.labels)


def test_upstream_breakage_renames_and_corrupts(tmp_path):
    sim = simulate(n_customers=200, n_terminals=400, n_days=4, seed=8, drift=[Drift("upstream_breakage", 2, 0.2)])
    write_landing(sim, tmp_path)
    ok = pd.read_parquet(tmp_path / "transactions" / "2025-04-02.parquet")
    broken = pd.read_parquet(tmp_path / "transactions" / "2025-04-03.parquet")
    assert "tx_amount" in ok and "tx_amount" not in broken and "amount" in broken
    assert broken["amount"].isna().any()
