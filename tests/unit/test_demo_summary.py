"""The demo's closing report reads as a report: every figure with its protocol, no raw dicts."""

from vigil.demo import render_summary


def summary(**over):
    s = {"model_version": "vigil-fraud:abc", "training_window": {"train_days": ["2025-05-08", "2025-05-28"],
                                                                 "test_days": ["2025-06-05", "2025-06-11"]},
         "metrics": {"handbook_auc": 0.91, "handbook_average_precision": 0.76, "handbook_card_precision_at_100": 0.33,
                     "week_auc": 0.94, "week_average_precision": 0.82, "week_card_precision_at_100": 0.65},
         "served_requests": 9000, "rejected_requests": 0, "failed_requests": 0, "serving_p50_ms": 4.2, "serving_p99_ms": 9.1,
         "drift_detected": False, "drift_share": 0.05, "drift_report": "/h/monitoring/drift/2025-06-19.html",
         "retraining": None, "urls": {"dagster": "http://127.0.0.1:3000", "score": "http://127.0.0.1:3001/score",
                                      "metrics": "http://127.0.0.1:3001/metrics"},
         "vigil_home": "/h", "timings_s": {"backfill": 100.4, "replay": 20.0}, "wall_seconds": 300.2}
    return {**s, **over}


def test_report_names_protocols_and_has_no_raw_values():
    out = render_summary(summary())
    assert "quality, Handbook protocol   AUC 0.910" in out and "whole week" in out
    assert "retraining on drift          not needed: no drift" in out
    assert "None" not in out and "{" not in out
    assert "backfill 100 s, replay 20 s" in out


def test_retraining_outcomes():
    ran = render_summary(summary(drift_detected=True, retraining={"run_id": "1234567890", "status": "SUCCESS",
                                                                   "model_version": "vigil-fraud:new"}))
    assert "run 12345678 success, now serving vigil-fraud:new" in ran and "DRIFT" in ran
    assert "no run within the wait" in render_summary(summary(drift_detected=True, retraining={"status_missing": 1}))
    assert "not waited for" in render_summary(summary(drift_detected=True, retraining=None))
