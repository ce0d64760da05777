"""The Handbook's evaluation protocol on hand-worked examples."""

import math

import numpy as np

import pandas as pd
import pytest

from vigil import evaluation


def tx(rows):
    """rows: (day, customer, score, label)"""
    return pd.DataFrame({"tx_datetime": [pd.Timestamp("2025-08-01") + pd.Timedelta(days=d, hours=12) for d, *_ in rows],
                         "customer_id": [c for _, c, _, _ in rows], "score": [s for *_, s, _ in rows],
                         "label": [y for *_, y in rows]})


def test_cp_at_k_drops_cards_detected_on_earlier_days():
    # day 0: cards 1 (fraud, 0.9), 2 (genuine, 0.8), 3 (fraud, 0.1); top 2 = {1, 2}: 1 detected -> 1/2
    # day 1: card 1 again on top (0.95, fraud) but already detected: left out; top 2 = {3 (0.7, fraud), 2 (0.6)} -> 1/2
    frame = tx([(0, 1, 0.9, 1), (0, 2, 0.8, 0), (0, 3, 0.1, 1),
                (1, 1, 0.95, 1), (1, 2, 0.6, 0), (1, 3, 0.7, 1)])
    assert evaluation.card_precision_at_k(frame, k=2) == pytest.approx((1 / 2 + 1 / 2) / 2)
    # counted again each day (the whole-week figure): day 1's top 2 = {1, 3}, both frauds -> (1/2 + 2/2) / 2
    assert evaluation.card_precision_at_k(frame, k=2, remove_detected=False) == pytest.approx(0.75)


def test_cp_at_k_card_score_is_its_highest_transaction_and_fraud_if_any():
    # card 1: two transactions (0.2 fraud, 0.9 genuine) -> score 0.9, compromised; card 2: 0.5 genuine
    frame = tx([(0, 1, 0.2, 1), (0, 1, 0.9, 0), (0, 2, 0.5, 0)])
    assert evaluation.card_precision_at_k(frame, k=1) == 1.0
    # k larger than the number of cards: precision still over k (the Handbook divides by k)
    assert evaluation.card_precision_at_k(frame, k=4) == 0.25


def test_a_genuine_card_in_the_top_k_is_not_detected():
    # day 0: card 2 genuine tops the list; it must stay in day 1's ranking
    frame = tx([(0, 2, 0.9, 0), (0, 1, 0.1, 1), (1, 2, 0.9, 1), (1, 1, 0.1, 0)])
    assert evaluation.card_precision_at_k(frame, k=1) == pytest.approx((0 + 1) / 2)


def test_known_compromised_cards_are_dropped_from_the_day_after_the_report():
    frame = tx([(0, 1, 0.9, 1), (1, 1, 0.8, 1), (2, 1, 0.7, 1), (0, 2, 0.1, 0), (2, 2, 0.2, 0)])
    # card 1's fraud reported on day 1 at 09:00: not known on days 0 and 1, known from day 2 on
    known = pd.DataFrame({"customer_id": [1], "known_at": [pd.Timestamp("2025-08-02 09:00")]})
    kept = evaluation.exclude_known_compromised(frame, known)
    assert sorted(zip(kept["tx_datetime"].dt.day, kept["customer_id"])) == [(1, 1), (1, 2), (2, 1), (3, 2)]
    # a report before the test week (e.g. a fraud of the training period) removes the card everywhere
    early = pd.DataFrame({"customer_id": [1, 1], "known_at": [pd.Timestamp("2025-07-20"), pd.Timestamp("2025-08-10")]})
    assert set(evaluation.exclude_known_compromised(frame, early)["customer_id"]) == {2}


def test_handbook_and_week_figures_are_named_and_differ():
    frame = tx([(0, 1, 0.9, 1), (0, 2, 0.8, 0), (0, 3, 0.1, 1), (1, 1, 0.95, 1), (1, 2, 0.6, 0), (1, 3, 0.7, 1),
                (2, 1, 0.99, 1), (2, 3, 0.2, 0), (2, 4, 0.3, 0)])
    known = pd.DataFrame({"customer_id": [1], "known_at": [pd.Timestamp("2025-08-02 10:00")]})
    m = evaluation.metrics(frame, known, k=2)
    assert m["handbook_rows"] == 8 and m["week_rows"] == 9  # card 1's day-2 row is dropped
    # handbook CP@2: day0 top {1,2} -> 1/2 (1 detected); day1 top {3,2} -> 1/2; day2 (card 1 gone) {4,3} -> 0
    assert m["handbook_card_precision_at_2"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    # week CP@2: day0 1/2; day1 {1,3} 2/2; day2 {1,4} 1/2
    assert m["week_card_precision_at_2"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert not math.isnan(m["handbook_auc"]) and m["week_auc"] != m["handbook_auc"]


def test_reliability_bins_and_calibration_error_by_hand():
    from vigil.evaluation import calibration_error, reliability

    f = pd.DataFrame({"score": [0.005, 0.005, 0.6, 0.6, 0.6, 0.6], "label": [0, 0, 1, 1, 0, 0]})
    r = reliability(f).set_index("score_bin")
    assert list(r["rows"]) == [2, 4] and list(r["frauds"]) == [0, 2]
    assert r["fraud_rate"].iloc[1] == 0.5
    # |0.005 - 0| * 2 + |0.6 - 0.5| * 4, over 6 rows
    assert calibration_error(f) == pytest.approx((0.005 * 2 + 0.1 * 4) / 6)


def test_plots_are_png_and_inline_markdown():
    from vigil import plots
    from vigil.evaluation import pr_curve, reliability

    f = pd.DataFrame({"score": np.linspace(0, 1, 200), "label": (np.arange(200) % 7 == 0).astype(int)})
    for png in (plots.pr_curve_png(pr_curve(f), "t"), plots.reliability_png(reliability(f), "t")):
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert plots.markdown_image(b"\x89PNG", "x").startswith("![x](data:image/png;base64,")


def test_drift_and_timeseries_plots_are_png():
    from vigil import plots

    per_column = pd.DataFrame({"column": ["a", "b", "c"], "score": [0.1, 0.5, 0.02], "drifted": [False, True, None]})
    live = pd.DataFrame({"day": ["2025-06-01", "2025-06-02"], "live_auc": [0.9, 0.92], "live_average_precision": [0.7, 0.6]})
    for png in (plots.drift_png(per_column, "d"), plots.importance_png(per_column.rename(columns={"column": "feature",
                                                                                                  "score": "gain"}), "i"),
                plots.timeseries_png(live, ["live_auc", "live_average_precision", "absent"], "t")):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
