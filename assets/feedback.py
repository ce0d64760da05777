"""Feedback: served predictions joined with the fraud reports that have arrived since."""


import json
from datetime import timedelta

import dagster as dg
import pandas as pd

from assets.common import BACKFILL_POLICY, DAILY, days_of, io_retries, md_table, refuse_unordered_backfill, window_dep
from resources import VigilStorage
from vigil import lake, plots
from vigil.config import LABEL_MATURITY_DAYS
from vigil.monitoring import label_maturity, live_performance


@dg.asset(group_name="feedback", partitions_def=DAILY, backfill_policy=BACKFILL_POLICY,
          # a day's reports arrive within the maturity window: it reads the labels of the 7 days after it
          deps=["prediction_log_daily", window_dep("validated_labels", 0, LABEL_MATURITY_DAYS)], kinds={"pandas"})
@io_retries
def live_performance_daily(context: dg.AssetExecutionContext, storage: VigilStorage) -> dg.MaterializeResult:
    """How the served model did on each day, with the labels known now and how mature they are
    (``label_maturity``); the label-maturity sensor re-runs a day once its label window closes."""
    refuse_unordered_backfill(context)
    paths = storage.paths
    rows = []
    label_days = lake.available_days(paths.labels)
    through = label_days[-1] if label_days else None
    for day in days_of(context):
        # reports for a day's transactions arrive within the maturity window: read only those days
        labels = lake.read_days(paths.labels, [day + timedelta(days=i) for i in range(LABEL_MATURITY_DAYS + 1)])
        served = lake.read_day(paths.lake / "predictions", day)
        perf = live_performance(served if served is not None else pd.DataFrame(), labels,
                                label_maturity(day, through, LABEL_MATURITY_DAYS))
        rows.append({"day": str(day), **perf})
    table = pd.DataFrame(rows)
    history = paths.monitoring / "live"
    history.mkdir(parents=True, exist_ok=True)
    for r in rows:  # one small file per day: the plot below draws the last 90 served days from them
        (history / f"{r['day']}.json").write_text(json.dumps(r, default=float))
    recent = pd.DataFrame([json.loads(f.read_text()) for f in sorted(history.glob("*.json"))[-90:]])
    meta = {"partitions": md_table(table.drop(columns=["cohorts"], errors="ignore"))}
    if rows[-1].get("cohorts"):
        meta["cohorts"] = md_table(pd.DataFrame(rows[-1]["cohorts"]))  # the last day's, by the gate's slices
    if len(recent) and "live_average_precision" in recent:
        png = plots.timeseries_png(recent, ["live_auc", "live_average_precision", "live_card_precision_at_100"],
                                   "served days, labels known now")
        meta["live_performance"] = dg.MetadataValue.md(plots.markdown_image(png, "live performance over time"))
    last = rows[-1]
    for k in ("live_average_precision", "live_card_precision_at_100", "reported_frauds", "label_maturity",
              "live_precision_flagged", "fraud_amount_caught", "fraud_amount_missed"):
        if k in last:
            meta[k] = last[k]
    return dg.MaterializeResult(metadata=meta)
