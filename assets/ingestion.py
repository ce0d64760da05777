"""Ingestion: landing files of the source system → raw lake partitions, as read."""


import dagster as dg
import pandas as pd

from assets.common import DAILY, SINGLE_RUN, days_of, md_table, progress
from resources import SourceResource, VigilStorage
from vigil import ingestion

RAW_CONTRACT = "raw_contract"


@dg.asset(
    group_name="ingestion",
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    kinds={"pandas", "parquet"},
    check_specs=[dg.AssetCheckSpec(RAW_CONTRACT, asset="raw_transactions", description="required columns present in every landing file")],
)
def raw_transactions(context: dg.AssetExecutionContext, storage: VigilStorage, source: SourceResource):
    """The day's rows copied into the lake as read (text stays text), each with its file and row."""
    from vigil.contracts import TX_REQUIRED

    rows, missing = [], []
    days = days_of(context)
    src = source.transactions(storage.paths)
    context.log.info(f"source: {src.describe()}")
    for i, day in enumerate(days):
        landed = ingestion.land_transactions(storage.paths, day, src)
        rows.append({"day": str(day), "rows": landed.rows, "hash": landed.content_hash, "source": landed.source_file})
        missing += [f"{day}:{c}" for c in TX_REQUIRED if c not in landed.columns]
        progress(context, i, len(days), "landed")
    table = pd.DataFrame(rows)
    extra = {}
    if hasattr(src, "unattributed"):  # a table: rows whose timestamp is NULL belong to no day
        extra["rows_without_day"] = src.unattributed()
        if extra["rows_without_day"]:
            context.log.warning(f"{extra['rows_without_day']} row(s) of {src.describe()} have no tx_datetime: no day reads them")
    yield dg.MaterializeResult(
        metadata={"rows": int(table["rows"].sum()), "days": len(days), "partitions": md_table(table),
                  "dagster/row_count": int(table["rows"].sum()), "source": src.describe(), **extra},
        check_results=[
            dg.AssetCheckResult(
                check_name=RAW_CONTRACT,
                passed=not missing,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"missing_columns": ", ".join(missing) or "none", "expected": ", ".join(TX_REQUIRED)},
            )
        ],
    )


@dg.asset(group_name="ingestion", partitions_def=DAILY, backfill_policy=SINGLE_RUN, kinds={"pandas", "parquet"})
def label_feed(context: dg.AssetExecutionContext, storage: VigilStorage, source: SourceResource) -> dg.MaterializeResult:
    """Fraud reports (chargebacks) as they arrive, partitioned by the day they were reported."""
    rows = []
    src = source.labels(storage.paths)
    for day in days_of(context):
        landed = ingestion.land_labels(storage.paths, day, src)
        rows.append({"day": str(day), "reports": landed.rows, "hash": landed.content_hash})
    table = pd.DataFrame(rows)
    return dg.MaterializeResult(metadata={"reports": int(table["reports"].sum()), "partitions": md_table(table)})
