"""Monitoring: the daily prediction log and an Evidently drift report against the training reference."""


import json
from datetime import timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from assets.common import BACKFILL_POLICY, DAILY, days_of, io_retries, md_table
from resources import AlertSinks, VigilStorage
from vigil import lake, plots, prediction_log, registry
from vigil.alerts import Alert
from vigil.features import MODEL_FEATURES
from vigil.monitoring import DEFAULT_DRIFT_SHARE, PSI_ALERT, drift_report as evidently_drift, output_monitoring


class DriftConfig(dg.Config):
    drift_share: float = DEFAULT_DRIFT_SHARE
    min_rows: int = 200


class PredictionLogConfig(dg.Config):
    max_stale_share: float = 0.05  # above this share of a day's requests scored with stale features: an alert
    min_rows: int = 100  # fewer requests: no alert (a handful of stale rows is not a rate)
    keep_raw_days: int = 35  # the endpoint's raw log of a day already in the lake is deleted after this


@dg.asset(group_name="monitoring", partitions_def=DAILY, backfill_policy=BACKFILL_POLICY, kinds={"parquet"})
@io_retries
def prediction_log_daily(context: dg.AssetExecutionContext, config: PredictionLogConfig, storage: VigilStorage,
                         alerts: AlertSinks) -> dg.MaterializeResult:
    """Every prediction served for the day (from the endpoint's append-only log), as one table: a
    transaction logged twice (a client's retry) once, a line that cannot be used set aside with its
    reason in ``predictions_quarantine`` (never a failed run)."""
    paths, rows = storage.paths, []
    for day in days_of(context):
        frame, bad, repeated = prediction_log.read_day_checked(paths.predictions, day)
        lake.write_day(paths.lake / "predictions", day, frame)
        lake.write_day(paths.lake / "predictions_quarantine", day, pd.DataFrame(bad, columns=["file", "line", "reason"]))
        if bad:
            context.log.warning(f"{day}: {len(bad)} prediction log line(s) quarantined, first: {bad[0]}")
        if frame.empty:
            rows.append({"day": str(day), "predictions": 0, "quarantined": len(bad), "retries_dropped": repeated})
            continue
        rows.append({"day": str(day), "predictions": len(frame), "quarantined": len(bad), "retries_dropped": repeated,
                     "decline": int((frame["decision"] == "decline").sum()), "review": int((frame["decision"] == "review").sum()),
                     "stale_rows": int(frame["stale_features"].map(len).gt(0).sum()),
                     "latency_p50_ms": float(np.percentile(frame["latency_ms"], 50)),
                     "latency_p99_ms": float(np.percentile(frame["latency_ms"], 99)),
                     "models": ", ".join(sorted(frame["model_version"].unique()))})
        share = rows[-1]["stale_rows"] / len(frame)
        if len(frame) >= config.min_rows and share > config.max_stale_share:
            alerts.alerter(paths).raise_alert(Alert(
                "stale_features", str(day), f"{share:.1%} of {len(frame)} requests on {day} were scored with stale features",
                {"day": str(day), "stale_share": share, "threshold": config.max_stale_share, "requests": len(frame)}))
    table = pd.DataFrame(rows)
    pruned = prediction_log.prune(paths.predictions, max(days_of(context)) - timedelta(days=config.keep_raw_days),
                                  kept=lambda d: lake.day_file(paths.lake / "predictions", d).exists())
    if pruned:
        context.log.info(f"raw prediction logs of {len(pruned)} day(s) older than {config.keep_raw_days} days deleted "
                         f"(their lake copies stay): {pruned[0]}..{pruned[-1]}")
    return dg.MaterializeResult(metadata={"predictions": int(table["predictions"].sum()), "partitions": md_table(table),
                                          "raw_days_pruned": len(pruned),
                                          "dagster/row_count": int(table["predictions"].sum())})


@dg.asset(group_name="monitoring", partitions_def=DAILY, backfill_policy=BACKFILL_POLICY, deps=["prediction_log_daily"],
          kinds={"evidently"})
@io_retries
def drift_report(context: dg.AssetExecutionContext, config: DriftConfig, storage: VigilStorage) -> dg.MaterializeResult:
    """Evidently data drift of the features actually served against the serving model's training reference.

    Metadata ``dataset_drift`` is what the drift sensor reads.
    """
    paths, results = storage.paths, []
    for day in days_of(context):
        served = lake.read_day(paths.lake / "predictions", day)
        if served is None or len(served) < config.min_rows:
            results.append({"day": str(day), "rows": 0 if served is None else len(served), "dataset_drift": False,
                            "drift_share": 0.0, "note": f"fewer than {config.min_rows} predictions: not assessed"})
            continue
        tag = served["model_version"].mode().iloc[0]
        model_path = Path(registry.model_info(paths, tag)["path"])
        reference = pd.read_parquet(model_path / "reference.parquet")
        scores_file = model_path / "validation_scores.parquet"  # models from before it was kept: no PSI
        outputs = output_monitoring(served[served["model_version"] == tag],
                                    pd.read_parquet(scores_file)["score"].to_numpy() if scores_file.exists() else None)
        html = paths.monitoring / "drift" / f"{day}.html"
        s = evidently_drift(reference, served, MODEL_FEATURES, html, drift_share=config.drift_share)
        s.per_column.to_csv(html.with_suffix(".csv"), index=False)
        html.with_suffix(".json").write_text(json.dumps({**s.as_metadata(), "html": s.html, "url": storage.report_link(html),
                                                         "model": tag, "rows": len(served)}))
        results.append({"day": str(day), "rows": len(served), "model": tag, **s.as_metadata(),
                        **{k: round(v, 4) for k, v in outputs.items()}, "html": s.html, "per_column": s.per_column})
    last = results[-1]
    meta = {
        "dataset_drift": bool(any(r["dataset_drift"] for r in results)),
        "drift_share": float(max(r["drift_share"] for r in results)),
        # output monitoring: score PSI against the model's validation window (> PSI_ALERT: a major shift)
        "score_psi": float(max((r.get("score_psi", float("nan")) for r in results), default=float("nan"))),
        "score_psi_alert_threshold": PSI_ALERT,
        "days": md_table(pd.DataFrame([{k: v for k, v in r.items() if k not in ("per_column", "html")} for r in results])),
    }
    if "per_column" in last:
        png = plots.drift_png(last["per_column"], f"drift on {last['day']} (share {last['drift_share']:.2f})")
        meta["drift_by_column"] = dg.MetadataValue.md(plots.markdown_image(png, "drift by feature") + "\n\n"
                                                      + md_table(last["per_column"]).value)
        meta["report"] = dg.MetadataValue.url(storage.report_link(Path(last["html"])))  # served by `vigil reports`
        meta["report_file"] = dg.MetadataValue.path(last["html"])
    return dg.MaterializeResult(metadata=meta)
