"""Retraining triggers besides drift: performance with final labels, new-label volume, cool-down."""

from datetime import date

import pandas as pd

from vigil.triggers import cooling_down, label_volume, last_training_day, performance_drop


def test_last_training_day_and_cool_down_in_data_days():
    lineages = [{"as_of": "2025-06-10T00:00:00"}, {"as_of": "2025-06-20T00:00:00"}, {}]
    assert last_training_day(lineages) == date(2025, 6, 19)
    assert last_training_day([]) is None
    assert cooling_down(date(2025, 6, 19), date(2025, 6, 19))  # no new day since
    assert not cooling_down(date(2025, 6, 19), date(2025, 6, 20))
    assert cooling_down(date(2025, 6, 19), date(2025, 6, 20), cooldown_days=2)
    assert not cooling_down(None, date(2025, 6, 20))


def test_performance_drop_waits_for_final_labels_and_enough_frauds():
    days = [
        {"day": "2025-06-18", "label_maturity": 1.0, "live_average_precision": 0.1, "reported_frauds": 50},  # before T
        {"day": "2025-06-21", "label_maturity": 0.4, "live_average_precision": 0.05, "reported_frauds": 20},  # not final
        {"day": "2025-06-22", "label_maturity": 1.0, "live_average_precision": 0.2, "reported_frauds": 3},  # too few
        {"day": "2025-06-23", "label_maturity": 1.0, "live_average_precision": 0.6, "reported_frauds": 40},
    ]
    assert not performance_drop(days, date(2025, 6, 19), floor=0.3).fire
    days.append({"day": "2025-06-24", "label_maturity": 1.0, "live_average_precision": 0.25, "reported_frauds": 40})
    d = performance_drop(days, date(2025, 6, 19), floor=0.3)
    assert d.fire and d.trigger == "performance" and d.episode == "2025-06-24"
    assert d.evidence["live_average_precision"] == 0.25 and "under the floor" in d.reason


def test_label_volume_counts_reports_after_the_last_training():
    since = pd.Timestamp("2025-06-20")
    reported = pd.Series(pd.to_datetime(["2025-06-19"] * 300 + ["2025-06-21"] * 499))
    assert not label_volume(reported, since, 500).fire
    d = label_volume(pd.concat([reported, pd.Series([pd.Timestamp("2025-06-22")])]), since, 500)
    assert d.fire and d.evidence["new_reports"] == 500 and d.episode == "2025-06-20-500"
