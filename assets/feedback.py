"""Feedback: served predictions joined with the fraud reports that have arrived since."""


import dagster as dg
import pandas as pd

from assets.common import DAILY, SINGLE_RUN, days_of, md_table
from resources import VigilStorage
from vigil import lake
from vigil.monitoring import live_performance


@dg.asset(group_name="feedback", partitions_def=DAILY, backfill_policy=SINGLE_RUN,
          deps=["prediction_log_daily", "validated_labels"], kinds={"pandas"})
def live_performance_daily(context: dg.AssetExecutionContext, storage: VigilStorage) -> dg.MaterializeResult:
    """How the served model did on each day, with the labels known now (re-run as labels mature)."""
    paths = storage.paths
    labels = lake.read_days(paths.labels, lake.available_days(paths.labels))
    rows = []
    for day in days_of(context):
        served = lake.read_day(paths.lake / "predictions", day)
        perf = live_performance(served if served is not None else pd.DataFrame(), labels)
        rows.append({"day": str(day), **perf})
    table = pd.DataFrame(rows)
    meta = {"partitions": md_table(table)}
    last = rows[-1]
    for k in ("average_precision", "card_precision_at_100", "reported_frauds"):
        if k in last:
            meta[k] = last[k]
    return dg.MaterializeResult(metadata=meta)
