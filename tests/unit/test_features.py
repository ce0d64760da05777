"""Feature windows on a hand-made example, and proofs that nothing leaks from the future."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from vigil.features import REQUEST_FEATURES, customer_snapshot, is_fresh, request_features, terminal_snapshot

D = date(2025, 4, 10)  # snapshot as of 2025-04-11 00:00


def tx(rows):
    return pd.DataFrame(rows, columns=["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount"]).assign(
        tx_datetime=lambda f: pd.to_datetime(f["tx_datetime"], format="ISO8601"))


def test_customer_windows_by_hand():
    frame = tx([
        (1, "2025-04-10 09:00", 1, 9, 10.0),   # inside 1, 7, 30 days
        (2, "2025-04-10 23:59:59", 1, 9, 30.0),  # last second before as_of: inside
        (3, "2025-04-05 12:00", 1, 9, 50.0),   # inside 7 and 30
        (4, "2025-03-20 12:00", 1, 9, 90.0),   # inside 30 only
        (5, "2025-03-01 12:00", 1, 9, 1000.0),  # older than 30 days: ignored
        (6, "2025-04-11 00:00", 1, 9, 5000.0),  # at as_of: belongs to the next snapshot
    ])
    snap = customer_snapshot(frame, D).set_index("customer_id").loc[1]
    assert snap["customer_nb_tx_1d"] == 2 and snap["customer_avg_amount_1d"] == 20.0
    assert snap["customer_nb_tx_7d"] == 3 and snap["customer_avg_amount_7d"] == 30.0
    assert snap["customer_nb_tx_30d"] == 4 and snap["customer_avg_amount_30d"] == 45.0
    assert snap["customer_as_of"] == pd.Timestamp("2025-04-11").timestamp()


def test_terminal_risk_is_shifted_by_the_delay_and_uses_only_known_labels():
    # window end = as_of - 7 days = 2025-04-04 00:00
    frame = tx([
        (1, "2025-04-03 10:00", 1, 5, 10.0),  # in the 1-day shifted window, fraud reported in time
        (2, "2025-04-03 11:00", 2, 5, 10.0),  # in the 1-day window, fraud reported AFTER as_of
        (3, "2025-04-03 12:00", 3, 5, 10.0),  # genuine
        (4, "2025-03-30 12:00", 4, 5, 10.0),  # in 7-day window, fraud reported in time
        (5, "2025-04-09 12:00", 5, 5, 10.0),  # inside the delay period: not in any window
    ])
    labels = pd.DataFrame({"transaction_id": [1, 2, 4, 5], "tx_fraud": [1, 1, 1, 1],
                           "reported_at": pd.to_datetime(["2025-04-05", "2025-04-12", "2025-04-01", "2025-04-10"])})
    snap = terminal_snapshot(frame, labels, D).set_index("terminal_id").loc[5]
    assert snap["terminal_nb_tx_1d"] == 3 and np.isclose(snap["terminal_risk_1d"], 1 / 3)
    assert snap["terminal_nb_tx_7d"] == 4 and np.isclose(snap["terminal_risk_7d"], 2 / 4)


def test_changing_data_after_the_cutoff_changes_no_snapshot_before_it():
    from vigil.simulator import simulate

    sim = simulate(n_customers=300, n_terminals=600, n_days=25, seed=11)
    t, lab = sim.transactions, sim.labels
    cut = pd.Timestamp("2025-04-16")
    t2 = t.copy()
    after = t2["tx_datetime"] >= cut
    t2.loc[after, "tx_amount"] *= 7
    lab2 = lab.copy()
    lab2.loc[lab2["reported_at"] >= cut, "tx_fraud"] = 0  # labels reported after the cut-off vanish
    lab2 = pd.concat([lab2, pd.DataFrame({"transaction_id": t.loc[after, "transaction_id"].head(50), "tx_fraud": 1,
                                          "reported_at": cut + pd.Timedelta(hours=1)})])
    for day in [date(2025, 4, 10), date(2025, 4, 15)]:  # snapshots as of 04-11 and 04-16 (= cut)
        pd.testing.assert_frame_equal(customer_snapshot(t, day), customer_snapshot(t2, day))
        pd.testing.assert_frame_equal(terminal_snapshot(t, lab, day), terminal_snapshot(t2, lab2, day))
    assert not customer_snapshot(t, date(2025, 4, 20)).equals(customer_snapshot(t2, date(2025, 4, 20)))


def test_request_features():
    ts = pd.to_datetime(["2025-04-05 03:00", "2025-04-07 13:00", "2025-04-06 05:59:59", "2025-04-08 06:00"], format="ISO8601")
    secs = ts.astype("int64") // 10**9
    out = request_features(secs, [1.0, 2.0, 3.0, 4.0], [2.0, np.nan, 0.0, 8.0])
    assert out[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert out[:, 1].tolist() == [1.0, 0.0, 1.0, 0.0]  # Saturday, Monday, Sunday, Tuesday
    assert out[:, 2].tolist() == [1.0, 0.0, 1.0, 0.0]  # night = before 06:00
    assert out[:, 3].tolist() == [3.0, 13.0, 5.0, 6.0]  # hour of day (UTC)
    ratio = out[:, 4]  # amount / customer's 30-day mean; missing or zero mean -> NaN (imputed by the model)
    assert ratio[0] == 0.5 and np.isnan(ratio[1]) and np.isnan(ratio[2]) and ratio[3] == 0.5


def test_freshness_rule_matches_feast_ttl():
    asof = pd.Timestamp("2025-04-11").timestamp()
    assert is_fresh(asof, asof + 86_400)
    assert not is_fresh(asof, asof + 86_401)
    assert not is_fresh(None, asof)
    assert is_fresh(asof, asof)
    assert not is_fresh(asof, asof - 1)  # a request from before the snapshot: features from its future


def test_reported_terminal_risk_by_hand():
    """Terminal 5 on 2025-04-20 (snapshot as of 04-21 00:00): four transactions, two frauds, one of
    them reported before the snapshot; ten days earlier a fraud reported the next day. Terminal 6:
    one genuine transaction, never reported."""
    from vigil.features import HISTORY_DAYS, terminal_snapshot

    t = pd.DataFrame({
        "transaction_id": [1, 2, 3, 4, 5, 6],
        "tx_datetime": pd.to_datetime(["2025-04-20 08:00", "2025-04-20 09:00", "2025-04-20 10:00", "2025-04-20 11:00",
                                       "2025-04-10 12:00", "2025-04-20 12:00"]),
        "customer_id": [1, 2, 3, 4, 5, 6], "terminal_id": [5, 5, 5, 5, 5, 6], "tx_amount": [10.0] * 6})
    lab = pd.DataFrame({"transaction_id": [1, 2, 5], "tx_fraud": [1, 1, 1],
                        "reported_at": pd.to_datetime(["2025-04-20 18:00", "2025-04-21 09:00", "2025-04-11 06:00"])})
    snap = terminal_snapshot(t, lab, date(2025, 4, 20)).set_index("terminal_id")
    five, six = snap.loc[5], snap.loc[6]
    assert five["terminal_reported_frauds_1d"] == 1 and five["terminal_reported_risk_1d"] == 0.25  # tx 2: reported later
    assert five["terminal_reported_frauds_3d"] == 1
    assert five["terminal_reported_frauds_14d"] == 2 and five["terminal_reported_risk_14d"] == 2 / 5
    assert five["terminal_days_since_report"] == pytest.approx(6 / 24)  # 04-20 18:00 -> 04-21 00:00
    assert six["terminal_reported_frauds_28d"] == 0 and six["terminal_days_since_report"] == HISTORY_DAYS
    # the delayed (Handbook) windows do not see the last 7 days at all
    assert five["terminal_nb_tx_1d"] == 0 and six["terminal_nb_tx_30d"] == 0


def test_amount_zscore_against_the_customer_snapshot():
    secs = np.array([0, 0, 0])
    out = request_features(secs, [30.0, 30.0, 30.0], [20.0, 20.0, np.nan], [5.0, 0.0, 5.0])
    z = out[:, REQUEST_FEATURES.index("amount_zscore_customer_30d")]
    assert z[0] == 2.0 and np.isnan(z[1]) and np.isnan(z[2])  # no spread or no mean: missing


def test_request_epochs_are_the_offline_epochs():
    """The endpoint's epochs of request datetimes (epoch_seconds_of) are the lake's (epoch_seconds):
    whole seconds, floored, before 1970 included (int(dt.timestamp()) rounded those toward zero)."""
    from datetime import datetime

    from vigil.features import epoch_seconds, epoch_seconds_of

    when = [datetime(2025, 6, 1, 10, 0, 0), datetime(2025, 6, 1, 23, 59, 59, 999_999), datetime(1969, 12, 31, 23, 59, 59, 500_000),
            datetime(2000, 1, 1), datetime(9999, 12, 31, 23, 59, 59)]
    got = epoch_seconds_of(when)
    assert got.dtype == np.int64 and got.tolist() == epoch_seconds(pd.Series(when[:4])).tolist() + [253402300799]
    assert got[2] == -1 and epoch_seconds_of([]).tolist() == []
