"""Features: daily customer/terminal snapshots, registered with Feast and loaded online."""


import time

import dagster as dg
import pandas as pd

from assets.common import BACKFILL_POLICY, DAILY, days_of, io_retries, md_table, progress, refuse_unordered_backfill, window_dep
from resources import FeatureStoreResource, VigilStorage
from vigil import feature_repo
from vigil.features import HISTORY_DAYS, build_snapshots, snapshot_as_of


@dg.asset(group_name="features", kinds={"feast"})
@io_retries
def feast_registry(storage: VigilStorage, feature_store: FeatureStoreResource) -> dg.MaterializeResult:
    """`feast apply` of Vigil's one module of feature definitions (entities, views, service)."""
    names = feature_repo.apply(feature_store.store(), storage.paths)
    return dg.MaterializeResult(metadata={"objects": ", ".join(names), "feature_service": feature_repo.FEATURE_SERVICE})


@dg.asset(group_name="features", partitions_def=DAILY, backfill_policy=BACKFILL_POLICY,
          # a day's snapshot reads the validated transactions and reports of its 37 days (history_days)
          deps=[window_dep("validated_transactions", -(HISTORY_DAYS - 1)), window_dep("validated_labels", -(HISTORY_DAYS - 1))],
          kinds={"pandas", "parquet"})
@io_retries
def feature_snapshots(context: dg.AssetExecutionContext, storage: VigilStorage) -> dg.MaterializeResult:
    """Customer spending and terminal risk windows as of each day's end (Feast's offline source)."""
    refuse_unordered_backfill(context)
    rows = []
    days = days_of(context)
    for i, day in enumerate(days):
        cust, term = build_snapshots(storage.paths, day)
        rows.append({"day": str(day), "customers": len(cust), "terminals": len(term),
                     "mean_customer_nb_tx_7d": float(cust["customer_nb_tx_7d"].mean()) if len(cust) else 0.0,
                     "mean_terminal_risk_7d": float(term["terminal_risk_7d"].mean()) if len(term) else 0.0})
        progress(context, i, len(days), "snapshots")
    return dg.MaterializeResult(metadata={"partitions": md_table(pd.DataFrame(rows))})


@dg.asset(group_name="features", partitions_def=DAILY, backfill_policy=BACKFILL_POLICY,
          deps=["feature_snapshots", "feast_registry"], kinds={"feast"})
@io_retries
def online_features(context: dg.AssetExecutionContext, storage: VigilStorage,
                    feature_store: FeatureStoreResource) -> dg.MaterializeResult:
    """The partitions' snapshots loaded into Feast's online store: per entity the newest snapshot
    of the range wins over anything older online, and re-running a day replaces it (in SQLite
    and in Redis alike)."""
    store = feature_store.store()
    days = days_of(context)
    t0 = time.perf_counter()
    counts = feature_repo.write_online(store, storage.paths, days)
    return dg.MaterializeResult(metadata={
        "online_store": getattr(store.config.online_store, "type", "?"),
        "days": len(days), "written": counts["written"], "skipped_older": counts["skipped_older"],
        "seconds": round(time.perf_counter() - t0, 2), "newest_snapshot_as_of": str(snapshot_as_of(days[-1])),
        "feature_views": "customer_spending, terminal_risk",
    })
