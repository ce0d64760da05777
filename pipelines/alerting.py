"""Sensors that tell a person: failed checks (a held day, a refused model) and failed runs.

Dagster's run-failure sensors see a run fail, not which check failed or why, so failed check
evaluations are read from the event log with a cursor; a run that failed *because* a blocking
check failed is reported once, by the check sensor, not twice.
"""

import json
import warnings

import dagster as dg

from assets.training import EVALUATION_GATE
from resources import AlertSinks, VigilStorage
from vigil.alerts import Alert

CHECK_ALERT_SENSOR = "check_alert_sensor"
RUN_FAILURE_ALERT_SENSOR = "run_failure_alert_sensor"
BLOCKING_CHECK_FAILED = "blocking asset check failed"  # Dagster's message when a blocking check stops a run
MAX_EVENTS = 200


def check_alert(evaluation, run_id: str, partition: str | None) -> Alert | None:
    """The alert for one check evaluation (``AssetCheckEvaluation``), or None when it passed."""
    if evaluation.passed:
        return None
    asset = evaluation.asset_key.to_user_string()
    meta = {k: getattr(v, "value", v) for k, v in (evaluation.metadata or {}).items()}
    keep = {k: meta[k] for k in ("failures", "actual", "expected", "threshold", "reasons", "ap_delta_vs_champion")
            if k in meta}
    details = {"asset": asset, "check": evaluation.check_name, "run_id": run_id, "partition": partition, **keep}
    if evaluation.check_name == EVALUATION_GATE:
        return Alert("gate_failed", run_id, f"the gate refused the candidate of run {run_id[:8]}: "
                                            f"{str(meta.get('failures', ''))[:300]}", details)
    where = f"partition {partition}" if partition else f"run {run_id[:8]}"
    return Alert("day_held", f"{asset}:{evaluation.check_name}:{partition or run_id}",
                 f"{asset} check {evaluation.check_name} failed for {where}", details)


@dg.sensor(name=CHECK_ALERT_SENSOR, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Reads every new asset check evaluation; a failed one raises an alert (gate_failed, day_held).")
def check_alert_sensor(context: dg.SensorEvaluationContext, storage: VigilStorage, alerts: AlertSinks):
    after = int(context.cursor) if context.cursor else None
    with warnings.catch_warnings():  # get_event_records is the only cursor-able read of check evaluations
        warnings.simplefilter("ignore")
        records = context.instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after),
            limit=MAX_EVENTS, ascending=True)
    if not records:
        return dg.SkipReason("no new check evaluations")
    alerter, raised = alerts.alerter(storage.paths), []
    for record in records:
        entry = record.event_log_entry
        ev = entry.dagster_event.event_specific_data
        alert = check_alert(ev, entry.run_id, getattr(ev, "partition", None))
        if alert is not None:
            result = alerter.raise_alert(alert)
            raised.append(f"{alert.name}:{alert.episode} {json.dumps(result)}")
    cursor = str(records[-1].storage_id)
    if not raised:
        return dg.SensorResult(skip_reason=f"{len(records)} evaluation(s), none failed", cursor=cursor)
    context.log.info("; ".join(raised))
    return dg.SensorResult(skip_reason=f"{len(raised)} alert(s) raised", cursor=cursor)


@dg.run_failure_sensor(name=RUN_FAILURE_ALERT_SENSOR, default_status=dg.DefaultSensorStatus.RUNNING,
                       monitor_all_code_locations=False,
                       description="A failed run raises run_failed (unless a blocking check stopped it: "
                                   "the check sensor has said so).")
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, storage: VigilStorage, alerts: AlertSinks):
    message = context.failure_event.message or ""
    step_errors = " ".join(str(getattr(e, "error", "") or "") for e in context.get_step_failure_events())
    if BLOCKING_CHECK_FAILED in message or BLOCKING_CHECK_FAILED in step_errors:
        return
    run = context.dagster_run
    alerts.alerter(storage.paths).raise_alert(Alert(
        "run_failed", run.run_id, f"run {run.run_id[:8]} of {run.job_name} failed: {message[:300]}",
        {"job": run.job_name, "run_id": run.run_id, "tags": {k: v for k, v in run.tags.items() if k.startswith(("vigil/", "dagster/partition"))},
         "message": message}))
