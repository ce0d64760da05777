"""Validation: Pandera contracts split each day into admitted rows and a quarantine with reasons."""


from pathlib import Path

import dagster as dg
import pandas as pd

from assets.common import (BACKFILL_POLICY, DAILY, bounded_table, days_of, io_retries, md_table, progress,
                           refuse_unordered_backfill,
                           window_dep)
from resources import VigilStorage
from vigil import data_profile, ingestion, registry
from vigil.config import LABEL_MATURITY_DAYS
from vigil.contracts import DEFAULT_AMOUNT_CEILING, TRANSACTION_QUARANTINED
from vigil.data_profile import Thresholds
from vigil.features import HISTORY_DAYS

QUARANTINE_RATE = "quarantine_rate"
LABEL_CONTRACT = "label_contract"
MAX_QUARANTINE_RATE = 0.05

_DESCRIPTIONS = {
    QUARANTINE_RATE: "share of rejected rows per day stays under the limit",
    data_profile.NULL_RATES: "null rate of each column as read is at most the reference's plus a margin",
    data_profile.UNSEEN_ENTITIES: "share of rows from customers/terminals absent from the training data",
    data_profile.AMOUNT_SHIFT: "PSI of tx_amount over the reference deciles (distribution shift)",
    data_profile.AMOUNT_OUTLIERS: "share of amounts far above the reference 99.9th percentile (unit/scale errors)",
    data_profile.DAILY_VOLUME: "rows read vs the reference's mean daily volume",
}


class ValidationConfig(dg.Config):
    """Row rules and batch thresholds. Batch statistics compare to the reference profile of the
    production model's training data; before a model is promoted there is none to compare to."""

    max_quarantine_rate: float = MAX_QUARANTINE_RATE
    amount_ceiling: float = DEFAULT_AMOUNT_CEILING
    null_rate_increase: float = Thresholds.null_rate_increase
    unseen_margin: float = Thresholds.unseen_margin
    amount_psi: float = Thresholds.amount_psi
    outlier_factor: float = Thresholds.outlier_factor
    outlier_share: float = Thresholds.outlier_share
    volume_low: float = Thresholds.volume_low
    volume_high: float = Thresholds.volume_high

    def thresholds(self) -> Thresholds:
        return Thresholds(**{k: getattr(self, k) for k in Thresholds.__dataclass_fields__})


_REFERENCE: dict[str, tuple] = {}


def production_reference(paths) -> tuple[str, tuple | None]:
    """(model tag, (profile, ids)) of the production model; ("none", None) before the first one."""
    cur = registry.current(paths)
    if not cur:
        return "none", None
    tag = cur["tag"]
    if tag not in _REFERENCE:
        _REFERENCE[tag] = data_profile.load(Path(registry.model_info(paths, tag)["path"]))
    return tag, _REFERENCE[tag]


@dg.asset(
    group_name="validation",
    partitions_def=DAILY,
    backfill_policy=BACKFILL_POLICY,
    # the cross-day key check reads the ids admitted on the 37 days before each day
    deps=["raw_transactions", window_dep("validated_transactions", -HISTORY_DAYS, -1)],
    kinds={"pandera", "parquet"},
    check_specs=[
        dg.AssetCheckSpec(name, asset="validated_transactions", description=desc,
                          blocking=name == QUARANTINE_RATE or name in data_profile.BLOCKING)
        for name, desc in _DESCRIPTIONS.items()
    ],
)
@io_retries
def validated_transactions(context: dg.AssetExecutionContext, config: ValidationConfig, storage: VigilStorage):
    """Rows that pass the raw-transaction contract; rejected rows go to the quarantine with reasons.
    A day failing a blocking check is held back (``lake/held``) and blocks downstream."""
    refuse_unordered_backfill(context)
    paths = storage.paths
    tag, reference = production_reference(paths)
    context.log.info(f"reference profile: {'model ' + tag if reference else 'none (no production model yet)'}")
    per_day, reasons, stats, files = [], {}, {}, []
    days = days_of(context)
    for i, day in enumerate(days):
        v = ingestion.validate_transactions_day(paths, day, amount_ceiling=config.amount_ceiling,
                                                max_quarantine_rate=config.max_quarantine_rate,
                                                reference=reference, thresholds=config.thresholds())
        r = v.result
        per_day.append({"day": str(day), "read": r.n_read, "admitted": len(r.admitted), "quarantined": len(r.quarantined),
                        "rate": r.quarantine_rate, "hash": v.content_hash, "held": "; ".join(v.held)})
        files += [{"day": str(day), **f} for f in v.files]
        for k, n in r.reasons.items():
            reasons[k] = reasons.get(k, 0) + n
        for c in v.stats:
            stats.setdefault(c.name, []).append((str(day), c))
        if v.held:
            context.log.error(f"{day} held: {'; '.join(v.held)}")
        progress(context, i, len(days), "validated")
    table = pd.DataFrame(per_day)
    worst = table.loc[table["rate"].idxmax()]
    limit = config.max_quarantine_rate
    reason_table = pd.DataFrame(sorted(reasons.items(), key=lambda kv: -kv[1]), columns=["reason", "rows"])
    checks = [dg.AssetCheckResult(
        check_name=QUARANTINE_RATE, passed=bool(worst["rate"] <= limit), severity=dg.AssetCheckSeverity.ERROR,
        metadata={"actual": float(worst["rate"]), "worst_day": worst["day"], "threshold": limit,
                  "expected": f"<= {limit:.1%} of rows quarantined per day",
                  "failed_days": ", ".join(table.loc[table["rate"] > limit, "day"]) or "none"})]
    for name in _DESCRIPTIONS:
        if name == QUARANTINE_RATE:
            continue
        results = stats.get(name)
        if not results:
            checks.append(dg.AssetCheckResult(check_name=name, passed=True, metadata={
                "reference": "none: no production model yet; its training data becomes the reference"}))
            continue
        failed = [(d, c) for d, c in results if not c.passed]
        day, c = failed[0] if failed else max(results, key=lambda dc: dc[1].actual)
        checks.append(dg.AssetCheckResult(
            check_name=name, passed=not failed,
            severity=dg.AssetCheckSeverity.ERROR if c.severity == "ERROR" else dg.AssetCheckSeverity.WARN,
            metadata={"actual": c.actual, "expected": c.expected, "threshold": c.threshold, "day": day,
                      "detail": c.detail, "failed_days": ", ".join(d for d, _ in failed) or "none",
                      "reference": f"model {tag}"}))
    yield dg.MaterializeResult(
        metadata={
            "read": int(table["read"].sum()),
            "admitted": int(table["admitted"].sum()),
            "quarantined": int(table["quarantined"].sum()),
            "held_days": int((table["held"] != "").sum()),
            "dagster/row_count": int(table["admitted"].sum()),
            "partitions": md_table(table),
            "quarantine_reasons": md_table(reason_table) if len(reason_table) else "none",
            "files": bounded_table(pd.DataFrame(files)) if files else "none",
            "reference_model": tag,
        },
        check_results=checks,
    )


@dg.asset(
    group_name="validation",
    partitions_def=DAILY,
    backfill_policy=BACKFILL_POLICY,
    # reports refer to transactions of the day and the 8 before it (validated or quarantined)
    deps=["label_feed", window_dep("validated_transactions", -(LABEL_MATURITY_DAYS + 1))],
    kinds={"pandera", "parquet"},
    check_specs=[dg.AssetCheckSpec(LABEL_CONTRACT, asset="validated_labels", blocking=True,
                                   description="no fraud report is rejected: well formed, refers to a known "
                                               "transaction, not made before it")],
)
@io_retries
def validated_labels(context: dg.AssetExecutionContext, storage: VigilStorage):
    """Fraud reports that pass the label contract."""
    refuse_unordered_backfill(context)
    per_day = []
    for day in days_of(context):
        v = ingestion.validate_labels_day(storage.paths, day)
        q = v.result.quarantined
        aside = int((q["reasons"] == TRANSACTION_QUARANTINED).sum()) if len(q) else 0
        per_day.append({"day": str(day), "admitted": len(v.result.admitted), "quarantined": len(q) - aside,
                        "of_quarantined_transactions": aside,
                        "reasons": ";".join(f"{k}={n}" for k, n in v.result.reasons.items())})
    table = pd.DataFrame(per_day)
    bad = int(table["quarantined"].sum())  # a report of a transaction the contract refused is not the report's fault
    yield dg.MaterializeResult(
        metadata={"admitted": int(table["admitted"].sum()), "quarantined": bad,
                  "of_quarantined_transactions": int(table["of_quarantined_transactions"].sum()),
                  "partitions": md_table(table)},
        check_results=[dg.AssetCheckResult(check_name=LABEL_CONTRACT, passed=bad == 0,
                                           metadata={"actual": bad, "expected": 0, "threshold": 0,
                                                     "reports_of_quarantined_transactions":
                                                         int(table["of_quarantined_transactions"].sum())})],
    )
