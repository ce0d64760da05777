"""The fresh-training plan and the rule for transactions too young to be known genuine."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from vigil.features import HISTORY_DAYS
from vigil.training import MIN_DELAY_SAMPLES, Plan, label_weights, plan_frames, report_delay_cdf

T = pd.Timestamp("2025-07-01")


def test_plan_trains_on_the_freshest_days_before_the_recent_window():
    last = date(2025, 6, 30)
    p = Plan.at(last, train_days=21, test_days=7, gap_days=7, recent_days=2, first_day=date(2025, 4, 1))
    assert p.recent_days == [date(2025, 6, 29), date(2025, 6, 30)]
    assert p.fit_days[-1] == date(2025, 6, 28) and len(p.fit_days) == 21
    # the backtest is the Handbook arrangement: its test week is mature at T, training before a gap
    assert p.backtest.test_days[-1] == last - timedelta(days=7)
    assert (p.backtest.test_days[0] - p.backtest.train_days[-1]).days == 8
    assert p.as_of == pd.Timestamp(last) + pd.Timedelta(days=1)
    assert not set(p.fit_days) & set(p.recent_days)
    assert p.days == sorted(set(p.days)) and p.days[-1] == last
    with pytest.raises(ValueError, match="recent_days"):
        Plan.at(last, recent_days=0)


def test_the_fit_window_skips_the_warm_up_days():
    p = Plan.at(date(2025, 7, 15), train_days=90, recent_days=2, first_day=date(2025, 4, 1))
    assert p.fit_days[0] == date(2025, 4, 1) + timedelta(days=HISTORY_DAYS)  # the feature windows fill up first


def test_report_delay_cdf_is_empirical_with_enough_samples_and_a_ramp_without():
    delays = np.linspace(0.25, 7.0, MIN_DELAY_SAMPLES * 4)
    f = report_delay_cdf(delays)
    assert f(0.1) == 0.0 and f(7.0) == 1.0 and 0.45 < f(3.6) < 0.55
    ramp = report_delay_cdf(delays[:5])
    assert ramp(3.5) == pytest.approx(0.5) and ramp(10) == 1.0


def _frame(ages_days, labels, delays=None):
    tx = T - pd.to_timedelta(np.asarray(ages_days, dtype=float), unit="D")
    rep = [t + pd.Timedelta(days=d) if lab else pd.NaT
           for t, lab, d in zip(tx, labels, delays if delays is not None else [1.0] * len(labels))]
    return pd.DataFrame({"tx_datetime": tx, "label": np.asarray(labels, dtype="int8"),
                         "reported_at": pd.to_datetime(pd.Series(rep, dtype="datetime64[ns]"))})


def test_label_weights_drop_and_weight_rules():
    # 200 mature frauds reported uniformly 0-7 days after, plus young rows
    rng = np.random.default_rng(0)
    mature = _frame(rng.uniform(8, 20, 200), [1] * 200, rng.uniform(0.0, 7.0, 200))
    young = _frame([0.5, 3.5, 6.9, 2.0], [0, 0, 0, 1])
    frame = pd.concat([mature, young], ignore_index=True)
    drop = label_weights(frame, T, "drop")
    assert (drop[:200] == 1).all() and list(drop[200:]) == [0, 0, 0, 1]
    w = label_weights(frame, T, "weight")
    assert (w[:200] == 1).all() and w[203] == 1  # mature rows and reported frauds count fully
    assert 0 < w[200] < w[201] < w[202] < 1  # the younger, the less a "genuine" is known
    assert w[201] == pytest.approx(0.5, abs=0.1)
    with pytest.raises(ValueError, match="label_rule"):
        label_weights(frame, T, "guess")


def test_weighting_keeps_the_known_fraud_rate_of_young_days_at_its_mature_level():
    """At age a only F(a) of frauds are known; genuine rows weighted F(a) restore the ratio."""
    rng = np.random.default_rng(1)
    n, p = 200_000, 0.02
    age = rng.uniform(0, 14, n)
    fraud = rng.random(n) < p
    delay = rng.uniform(0.25, 7.0, n)
    reported = fraud & (delay < age)
    frame = _frame(age, reported.astype(int), delay)
    for rule, expect_ok in (("weight", True), ("drop", False)):
        w = label_weights(frame, T, rule)
        young = age < 3
        rate = np.sum(w[young] * reported[young]) / np.sum(w[young])
        assert bool(abs(rate - p) < 0.004) is expect_ok, (rule, rate)


def test_plan_frames_split_one_dataset_into_the_four_frames():
    p = Plan.at(date(2025, 6, 30), train_days=21, recent_days=2, first_day=date(2025, 4, 1))
    days = p.days
    rows = []
    for i, d in enumerate(days):
        for h in (3, 15):
            rows.append({"tx_datetime": pd.Timestamp(d) + pd.Timedelta(hours=h), "label": int(i % 5 == 0 and h == 3)})
    frame = pd.DataFrame(rows)
    frame["reported_at"] = np.where(frame["label"] == 1, frame["tx_datetime"] + pd.Timedelta(hours=12), pd.NaT)
    frame["reported_at"] = pd.to_datetime(frame["reported_at"])
    out = plan_frames(frame, p, "drop")
    assert set(out["recent"]["tx_datetime"].dt.date) == set(p.recent_days) and len(out["recent"]) == 4
    assert set(out["test"]["tx_datetime"].dt.date) == set(p.backtest.test_days)
    assert set(out["backtest_train"]["tx_datetime"].dt.date) <= set(p.backtest.train_days)
    young = out["train"]["tx_datetime"] > p.as_of - pd.Timedelta(days=7)
    assert (out["train"].loc[young, "label"] == 1).all()  # drop: young unreported rows left out
    weighted = plan_frames(frame, p, "weight")["train"]
    assert len(weighted) > len(out["train"]) and "weight" in weighted
