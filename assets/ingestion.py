"""Ingestion: landing files of the source system → raw lake partitions, as read."""


import dagster as dg
import pandas as pd

from assets.common import BACKFILL_POLICY, DAILY, bounded_table, days_of, io_retries, md_table, progress
from resources import SourceResource, VigilStorage
from vigil import ingestion

RAW_CONTRACT = "raw_contract"


@dg.asset(
    group_name="ingestion",
    partitions_def=DAILY,
    backfill_policy=BACKFILL_POLICY,
    kinds={"pandas", "parquet"},
    check_specs=[dg.AssetCheckSpec(RAW_CONTRACT, asset="raw_transactions", description="required columns present in every landing file")],
)
@io_retries
def raw_transactions(context: dg.AssetExecutionContext, storage: VigilStorage, source: SourceResource):
    """The day's rows copied into the lake as read (text stays text), each with its file and row."""
    from vigil.contracts import TX_REQUIRED

    rows, missing, files, optional = [], [], [], {}
    days = days_of(context)
    src = source.transactions(storage.paths)
    context.log.info(f"source: {src.describe()}")
    for i, day in enumerate(days):
        landed = ingestion.land_transactions(storage.paths, day, src)
        read = [f for f in landed.files if f.status == "read"]
        rows.append({"day": str(day), "rows": landed.rows, "files": len(read),
                     "read_errors": sum(f.read_errors for f in read), "headers_skipped": sum(f.headers_skipped for f in read),
                     "bytes": sum(f.bytes for f in read), "hash": landed.content_hash})
        for f in landed.files:
            files.append({"day": str(day), **f.as_row()})
            if f.status != "read":
                context.log.warning(f"{day}: {f.file} {f.status}")
            if f.truncated_stream:
                context.log.warning(f"{day}: {f.file}: compressed stream cut short; rows before the cut were read")
        for c, n in landed.optional_columns.items():
            optional[c] = optional.get(c, 0) + n
        missing += [f"{day}:{c}" for c in TX_REQUIRED if c not in landed.columns]
        progress(context, i, len(days), "landed")
    table = pd.DataFrame(rows)
    extra = {"files": bounded_table(pd.DataFrame(files)), "files_read": sum(f["status"] == "read" for f in files),
             "files_ignored": sum(f["status"] != "read" for f in files),
             "optional_columns": ", ".join(f"{c} ({n} parts)" for c, n in optional.items()) or "none"}
    unaccounted = src.unaccounted()  # stray landing files / table rows without a timestamp: no day reads them
    extra.update(unaccounted)
    if unaccounted.get("stray_file_count") or unaccounted.get("rows_without_day"):
        context.log.warning(f"{src.describe()}: held by no day (never read): {unaccounted}")
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


@dg.asset(group_name="ingestion", partitions_def=DAILY, backfill_policy=BACKFILL_POLICY, kinds={"pandas", "parquet"})
@io_retries
def label_feed(context: dg.AssetExecutionContext, storage: VigilStorage, source: SourceResource) -> dg.MaterializeResult:
    """Fraud reports (chargebacks) as they arrive, partitioned by the day they were reported."""
    rows, files = [], []
    src = source.labels(storage.paths)
    for day in days_of(context):
        landed = ingestion.land_labels(storage.paths, day, src)
        rows.append({"day": str(day), "reports": landed.rows, "files": sum(f.status == "read" for f in landed.files),
                     "read_errors": sum(f.read_errors for f in landed.files), "hash": landed.content_hash})
        files += [{"day": str(day), **f.as_row()} for f in landed.files]
    table = pd.DataFrame(rows)
    return dg.MaterializeResult(metadata={"reports": int(table["reports"].sum()), "partitions": md_table(table),
                                          "files": bounded_table(pd.DataFrame(files)) if files else "none"})
