"""The evaluation gate's rules, each failing path on its own (vigil.evaluation.judge)."""

import numpy as np
import pandas as pd

from vigil.evaluation import GateThresholds, ap_delta_interval, judge


def week(n=4000, seed=0, quality=3.0):
    """A scored test week: label, a score separating it with ``quality``, and the slice columns."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.05).astype(int)
    score = 1 / (1 + np.exp(-(quality * label + rng.normal(size=n) - 3)))
    return pd.DataFrame({"tx_datetime": pd.Timestamp("2025-08-01") + pd.to_timedelta(rng.integers(0, 7 * 86400, n), "s"),
                         "customer_id": rng.integers(0, 3000, n), "label": label, "score": score,
                         "tx_amount": rng.gamma(2, 30, n), "is_night": (rng.random(n) < 0.2).astype(float),
                         "is_weekend": (rng.random(n) < 0.3).astype(float),
                         "customer_nb_tx_30d": rng.integers(0, 5, n).astype(float),
                         "terminal_nb_tx_30d": rng.integers(0, 5, n).astype(float)})


def failed(result):
    return {r["rule"] for r in result.rules if r["passed"] is False}


def test_a_good_candidate_passes_every_rule():
    r = judge(week(), None, GateThresholds(), 0.05, 1.0)
    assert r.passed and not failed(r)
    assert next(x for x in r.rules if x["rule"] == "no_regression")["passed"] is None  # no champion


def test_floors_latency_and_size_fail_by_name():
    r = judge(week(quality=0.3), None, GateThresholds(), 3.0, 80.0)
    assert {"handbook_auc", "handbook_average_precision", "latency_ms", "size_mb"} <= failed(r)
    assert any("latency" in f and "3.000 ms" in f for f in r.failures)


def test_regression_against_the_champion_beyond_noise_fails():
    w = week()
    worse = week(quality=1.5)["score"].to_numpy()  # same labels (same seed), weaker separation
    r = judge(w.assign(score=worse), None, GateThresholds(), 0.05, 1.0, champion_score=w["score"].to_numpy())
    assert "no_regression" in failed(r)
    # the champion being the weaker one: no regression
    ok = judge(w, None, GateThresholds(), 0.05, 1.0, champion_score=worse)
    assert "no_regression" not in failed(ok)


def test_a_small_difference_within_noise_is_not_a_regression():
    w = week(n=600)
    noisy = w["score"].to_numpy() * np.random.default_rng(1).uniform(0.9, 1.1, len(w))
    r = judge(w.assign(score=noisy), None, GateThresholds(max_regression=0.0), 0.05, 1.0, champion_score=w["score"].to_numpy())
    rule = next(x for x in r.rules if x["rule"] == "no_regression")
    assert rule["passed"] is True and "interval" in rule["note"]


def test_a_slice_below_its_floor_fails_and_small_slices_are_not_judged():
    w = week(n=8000)
    night = w["is_night"] == 1
    w.loc[night, "score"] = np.random.default_rng(2).random(int(night.sum()))  # the model is blind at night
    r = judge(w, None, GateThresholds(min_average_precision=0), 0.05, 1.0)
    assert failed(r) == {"slice night"}
    tiny = judge(week(n=150), None, GateThresholds(min_auc=0, min_average_precision=0), 0.05, 1.0)
    assert all(x["passed"] is None for x in tiny.rules if x["rule"].startswith("slice"))


def test_known_compromised_cards_leave_the_judged_rows():
    w = week()
    known = pd.DataFrame({"customer_id": w["customer_id"].unique(), "known_at": pd.Timestamp("2025-07-01")})
    r = judge(w, known, GateThresholds(), 0.05, 1.0)  # every card known: nothing left to judge
    assert not r.passed and {"handbook_auc", "handbook_average_precision"} <= failed(r)


def test_bootstrap_interval_contains_the_point_and_is_paired():
    w = week()
    s = w["score"].to_numpy()
    point, lo, hi = ap_delta_interval(w["label"].to_numpy(), s, s)
    assert point == lo == hi == 0.0
    point, lo, hi = ap_delta_interval(w["label"].to_numpy(), s, s * 0.5 + 0.25 * np.random.default_rng(3).random(len(s)))
    assert lo <= point <= hi
