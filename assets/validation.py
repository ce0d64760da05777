"""Validation: Pandera contracts split each day into admitted rows and a quarantine with reasons."""


import dagster as dg
import pandas as pd

from assets.common import DAILY, SINGLE_RUN, days_of, md_table, progress
from resources import VigilStorage
from vigil import ingestion

QUARANTINE_RATE = "quarantine_rate"
LABEL_CONTRACT = "label_contract"
MAX_QUARANTINE_RATE = 0.05


class ValidationConfig(dg.Config):
    max_quarantine_rate: float = MAX_QUARANTINE_RATE


@dg.asset(
    group_name="validation",
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    deps=["raw_transactions"],
    kinds={"pandera", "parquet"},
    check_specs=[
        dg.AssetCheckSpec(QUARANTINE_RATE, asset="validated_transactions", blocking=True,
                          description="share of rejected rows per day stays under the limit; blocks downstream")
    ],
)
def validated_transactions(context: dg.AssetExecutionContext, config: ValidationConfig, storage: VigilStorage):
    """Rows that pass the raw-transaction contract; rejected rows go to the quarantine with reasons."""
    per_day, reasons = [], {}
    days = days_of(context)
    for i, day in enumerate(days):
        v = ingestion.validate_transactions_day(storage.paths, day)
        r = v.result
        per_day.append({"day": str(day), "read": r.n_read, "admitted": len(r.admitted), "quarantined": len(r.quarantined),
                        "rate": r.quarantine_rate, "hash": v.content_hash})
        for k, n in r.reasons.items():
            reasons[k] = reasons.get(k, 0) + n
        progress(context, i, len(days), "validated")
    table = pd.DataFrame(per_day)
    worst = table.loc[table["rate"].idxmax()]
    limit = config.max_quarantine_rate
    reason_table = pd.DataFrame(sorted(reasons.items(), key=lambda kv: -kv[1]), columns=["reason", "rows"])
    yield dg.MaterializeResult(
        metadata={
            "read": int(table["read"].sum()),
            "admitted": int(table["admitted"].sum()),
            "quarantined": int(table["quarantined"].sum()),
            "dagster/row_count": int(table["admitted"].sum()),
            "partitions": md_table(table),
            "quarantine_reasons": md_table(reason_table) if len(reason_table) else "none",
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=QUARANTINE_RATE,
                passed=bool(worst["rate"] <= limit),
                metadata={"actual": float(worst["rate"]), "worst_day": worst["day"], "threshold": limit,
                          "expected": f"<= {limit:.1%} of rows quarantined per day"},
            )
        ],
    )


@dg.asset(
    group_name="validation",
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    deps=["label_feed", "validated_transactions"],
    kinds={"pandera", "parquet"},
    check_specs=[dg.AssetCheckSpec(LABEL_CONTRACT, asset="validated_labels", blocking=True,
                                   description="no fraud report is rejected: well formed, refers to a known "
                                               "transaction, not made before it")],
)
def validated_labels(context: dg.AssetExecutionContext, storage: VigilStorage):
    """Fraud reports that pass the label contract."""
    per_day = []
    for day in days_of(context):
        v = ingestion.validate_labels_day(storage.paths, day)
        per_day.append({"day": str(day), "admitted": len(v.result.admitted), "quarantined": len(v.result.quarantined),
                        "reasons": ";".join(f"{k}={n}" for k, n in v.result.reasons.items())})
    table = pd.DataFrame(per_day)
    bad = int(table["quarantined"].sum())
    yield dg.MaterializeResult(
        metadata={"admitted": int(table["admitted"].sum()), "quarantined": bad, "partitions": md_table(table)},
        check_results=[dg.AssetCheckResult(check_name=LABEL_CONTRACT, passed=bad == 0,
                                           metadata={"actual": bad, "expected": 0, "threshold": 0})],
    )
