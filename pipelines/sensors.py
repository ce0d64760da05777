"""Sensors: new landing files → the day's pipeline run; drift → retraining, once per episode."""

import hashlib
import json
from datetime import date, datetime, timedelta, timezone

import dagster as dg

from resources import AlertSinks, SourceResource, VigilStorage
from vigil import config, lake
from vigil.alerts import Alert
from vigil.settings import Settings

LANDING_SENSOR = "landing_file_sensor"

DRIFT_SENSOR = "drift_retraining_sensor"
DRIFT_ASSET = dg.AssetKey("drift_report")


def make_drift_sensor(retraining_job) -> dg.SensorDefinition:
    @dg.sensor(name=DRIFT_SENSOR, job=retraining_job, minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Reads each new drift_report materialization; the first drifted report of an "
                           "episode launches retraining (run_key = episode), a clean report ends the episode.")
    def drift_retraining_sensor(context: dg.SensorEvaluationContext, storage: VigilStorage, alerts: AlertSinks):
        state = json.loads(context.cursor) if context.cursor else {"after": None, "episode": None}
        result = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=DRIFT_ASSET, after_storage_id=state["after"]), limit=100, ascending=True
        )
        requests = []
        for record in result.records:
            mat = record.asset_materialization
            meta = mat.metadata if mat else {}
            drift = bool(meta["dataset_drift"].value) if "dataset_drift" in meta else False
            share = float(meta["drift_share"].value) if "drift_share" in meta else 0.0
            if drift and state["episode"] is None and _cooling_down(storage.paths):
                context.log.info(f"drift on {mat.partition} while cooling down: no new data since the last training")
            elif drift and state["episode"] is None:
                state["episode"] = f"{mat.partition or 'all'}-{record.storage_id}"
                requests.append(dg.RunRequest(run_key=f"drift-episode-{state['episode']}",
                                              run_config=Settings.from_env().deploy_config(),
                                              tags={"vigil/trigger": "drift", "vigil/drift_share": f"{share:.3f}",
                                                    "vigil/drift_partition": str(mat.partition)}))
                alerts.alerter(storage.paths).raise_alert(Alert(
                    "drift_detected", state["episode"], f"drift on {mat.partition} (share {share:.2f}): retraining requested",
                    {"partition": mat.partition, "drift_share": share, "run_key": f"drift-episode-{state['episode']}",
                     "report": meta["report"].value if "report" in meta else None}))
            elif not drift and state["episode"] is not None:
                context.log.info(f"drift episode {state['episode']} ended at partition {mat.partition}")
                state["episode"] = None
            state["after"] = record.storage_id
        if not requests:
            return dg.SkipReason(f"no new drift episode (episode={state['episode']})") if not result.records else \
                dg.SensorResult(skip_reason=f"{len(result.records)} report(s) read, no new episode", cursor=json.dumps(state))
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(state))

    return drift_retraining_sensor


def landing_requests(paths: config.Paths, tx_source=None, label_source=None,
                     settings: Settings | None = None) -> list[dg.RunRequest]:
    """One run request per day whose landing files are not the ones its raw lake partition was
    read from.

    Stateless and idempotent: each raw partition's manifest records the source's signature of the
    day (every file's name and modification time) as it was read; a file that arrives late, is
    replaced, or a part added to a day's folder changes the signature and makes its day run again
    (the run replaces the partition). Nothing compares the landing host's clock with the lake's (an
    object store's): the signatures are both taken on the landing side. The run key carries the
    signature, so the same files never launch twice.
    """
    from vigil.ingestion import manifest
    from vigil.sources import FileSource

    tx_source = tx_source or FileSource(paths.landing / "transactions")
    label_source = label_source or FileSource(paths.landing / "labels")
    start = (settings or Settings.from_env()).start_date
    out = []
    for day in tx_source.days():
        if day < start:
            continue
        changed = []
        for src, raw in ((tx_source, paths.raw), (label_source, paths.raw_labels)):
            sig = src.signature(day)
            if sig and sig != manifest(raw, day).get("signature"):
                changed += [p.name for p in src.files(day)]
        if changed:
            sig = hashlib.sha256(f"{tx_source.signature(day)}|{label_source.signature(day)}".encode()).hexdigest()[:16]
            out.append(dg.RunRequest(partition_key=day.isoformat(), run_key=f"landing-{day}-{sig}",
                                     tags={"vigil/trigger": "landing", "vigil/files": ", ".join(changed)[:200]}))
    return out


def table_requests(tx_source, label_source, cursor: dict, today: date,
                   settings: Settings | None = None) -> tuple[list[dg.RunRequest], dict]:
    """One run request per closed day (before ``today``, UTC) whose rows in the source tables
    changed since the cursor's fingerprint: a new day, late rows, corrected or deleted rows (within
    ``VIGIL_SOURCE_LOOKBACK_DAYS``, default 40)."""
    settings = settings or Settings.from_env()
    since = max(settings.start_date, today - timedelta(days=settings.source_lookback_days))
    tx, labels = tx_source.fingerprints(since, today), label_source.fingerprints(since, today)
    out, cursor = [], dict(cursor)
    for day in sorted(tx):
        sig = f"{tx[day]}|{labels.get(day, '')}"
        if cursor.get(day.isoformat()) != sig:
            cursor[day.isoformat()] = sig
            out.append(dg.RunRequest(partition_key=day.isoformat(),
                                     run_key=f"table-{day}-{hashlib.sha256(sig.encode()).hexdigest()[:16]}",
                                     tags={"vigil/trigger": "table", "vigil/fingerprint": sig}))
    return out, cursor


ROLLOUT_SENSOR = "rollout_sensor"


@dg.sensor(name=ROLLOUT_SENSOR, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Analyses the current rollout step (vigil.rollout) and advances, promotes or rolls back.")
def rollout_sensor(context: dg.SensorEvaluationContext, storage: VigilStorage):
    from vigil import rollout

    paths = storage.paths
    labels = None
    if rollout.read_state(paths):  # the fraud reports of the last two weeks: shadow's AP once enough matured
        days = lake.available_days(paths.labels)[-14:]
        frame = lake.read_days(paths.labels, days, ["transaction_id", "tx_fraud"]) if days else None
        labels = set(frame.loc[frame["tx_fraud"] == 1, "transaction_id"]) if frame is not None and len(frame) else None
    result = rollout.advance(paths, labels=labels)
    if result["action"] not in ("none", "wait"):
        context.log.info(json.dumps(result, default=str)[:2000])
    return dg.SkipReason(f"{result['action']}: {result.get('step', '')} {result.get('note', '')}".strip())


TRIGGER_SENSOR = "retraining_trigger_sensor"


def _last_training_day(paths: config.Paths):
    from vigil.registry_db import open_records
    from vigil.triggers import last_training_day

    return last_training_day([v["lineage"] for v in open_records(paths.registry).versions()])


def _cooling_down(paths: config.Paths, last=None) -> bool:
    from vigil.triggers import cooling_down

    days = lake.available_days(paths.validated)
    return cooling_down(last if last is not None else _last_training_day(paths), days[-1] if days else None)


def trigger_decision(paths: config.Paths, ap_floor: float | None = None, label_threshold: int | None = None):
    """The retraining decision from the records, the live-performance history and the label lake."""
    import pandas as pd

    from vigil import triggers

    last = _last_training_day(paths)
    if last is None:
        return triggers.Decision("", "", reason="no model trained yet: the first training is the retraining job's")
    if _cooling_down(paths, last):
        return triggers.Decision("", "", reason=f"cooling down: no validated day after {last}, the last training's")
    history = [json.loads(f.read_text()) for f in sorted((paths.monitoring / "live").glob("*.json"))[-120:]]
    decision = triggers.performance_drop(history, last, ap_floor if ap_floor is not None else triggers.DEFAULT_AP_FLOOR)
    if decision.fire:
        return decision
    label_days = [d for d in lake.available_days(paths.labels) if d > last]
    reported = lake.read_days(paths.labels, label_days, ["reported_at"])["reported_at"] if label_days else pd.Series([], dtype="datetime64[ns]")
    return triggers.label_volume(reported, pd.Timestamp(last) + pd.Timedelta(days=1),
                                 label_threshold if label_threshold is not None else triggers.DEFAULT_LABEL_VOLUME)


def make_trigger_sensor(retraining_job) -> dg.SensorDefinition:
    @dg.sensor(name=TRIGGER_SENSOR, job=retraining_job, minimum_interval_seconds=300,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Retrains when live AP with final labels falls under a floor, or when enough new "
                           "fraud reports arrived since the last training; one run per episode, a cool-down of "
                           "one new validated day.")
    def retraining_trigger_sensor(context: dg.SensorEvaluationContext, storage: VigilStorage):
        d = trigger_decision(storage.paths)
        if not d.fire:
            return dg.SkipReason(d.reason)
        context.log.info(d.reason)
        return [dg.RunRequest(run_key=f"{d.trigger}-{d.episode}", run_config=Settings.from_env().deploy_config(),
                              tags={"vigil/trigger": d.trigger, "vigil/evidence": json.dumps(d.evidence)[:250]})]

    return retraining_trigger_sensor


LABEL_MATURITY_SENSOR = "label_maturity_sensor"
MAX_MATURITY_REQUESTS = 31  # per tick: a long backlog is worked off a month at a time


def maturity_requests(paths: config.Paths) -> list[dg.RunRequest]:
    """One run of ``live_performance_daily`` per served day whose label window has closed since its
    figures were last computed (its history file says ``label_maturity`` < 1): the final figures.
    The run key names the day, so each day is recomputed once."""
    from vigil.config import LABEL_MATURITY_DAYS
    from vigil.monitoring import label_maturity

    label_days = lake.available_days(paths.labels)
    if not label_days:
        return []
    out = []
    for day in lake.available_days(paths.lake / "predictions"):
        if label_maturity(day, label_days[-1], LABEL_MATURITY_DAYS) < 1:
            continue
        history = paths.monitoring / "live" / f"{day}.json"
        if history.exists():
            done = json.loads(history.read_text())
            if done.get("label_maturity", 0) >= 1 or done.get("rows", 1) == 0:
                continue
        if lake.read_metadata(lake.day_file(paths.lake / "predictions", day)).num_rows == 0:
            continue  # a day nobody was served: no figures to finish
        out.append(dg.RunRequest(partition_key=day.isoformat(), run_key=f"labels-mature-{day}",
                                 tags={"vigil/trigger": "label_maturity"}))
        if len(out) >= MAX_MATURITY_REQUESTS:
            break
    return out


def make_maturity_sensor(live_job) -> dg.SensorDefinition:
    @dg.sensor(name=LABEL_MATURITY_SENSOR, job=live_job, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Re-runs live_performance_daily for each served day once its fraud reports are "
                           "complete (label window closed), so live figures become final.")
    def label_maturity_sensor(context: dg.SensorEvaluationContext, storage: VigilStorage):
        requests = maturity_requests(storage.paths)
        return requests or dg.SkipReason("no served day's label window closed since its last figures")

    return label_maturity_sensor


LANDING_DEADLINE_HOURS = 6  # a day's file is due this many hours after the day ends (UTC)


def missing_landing_day(days: list[date], now: datetime, settings: Settings,
                        deadline_hours: int = LANDING_DEADLINE_HOURS) -> date | None:
    """The day whose file is overdue at ``now``, if any: only for live data (no ``VIGIL_END_DATE``:
    a replay has no deadline) and once some day has landed (a new install is not late)."""
    if settings.end_date is not None or not days:
        return None
    due = (now - timedelta(hours=deadline_hours)).date() - timedelta(days=1)  # the last day past its deadline
    return due if due >= settings.start_date and due not in set(days) else None


def make_landing_sensor(daily_job, settings: Settings | None = None) -> dg.SensorDefinition:
    @dg.sensor(name=LANDING_SENSOR, job=daily_job, minimum_interval_seconds=15,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Launches the daily pipeline for each day whose landing files (transactions or "
                           "fraud reports) are not the ones the lake's raw partition of that day was read from; with a "
                           "PostgreSQL source, for each closed day whose rows are new or changed.")
    def landing_file_sensor(context: dg.SensorEvaluationContext, storage: VigilStorage, source: SourceResource,
                            alerts: AlertSinks):
        from vigil.sources import FileSource

        paths = storage.paths
        tx, labels = source.transactions(paths), source.labels(paths)
        if not isinstance(tx, FileSource):  # a table: fingerprints of each closed day
            cursor = json.loads(context.cursor) if context.cursor else {}
            requests, cursor = table_requests(tx, labels, cursor, datetime.now(timezone.utc).date(), settings)
            if not requests:
                return dg.SensorResult(skip_reason=f"no new or changed rows in {tx.describe()}", cursor=json.dumps(cursor))
            return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))
        late = missing_landing_day(tx.days(), datetime.now(timezone.utc), settings or Settings.from_env())
        if late is not None:
            alerts.alerter(paths).raise_alert(Alert(
                "landing_missing", str(late), f"no transactions file for {late} in {tx.describe()} "
                                              f"{LANDING_DEADLINE_HOURS} h after the day ended",
                {"day": str(late), "folder": str(tx.folder)}))
        requests = landing_requests(paths, tx, labels, settings)
        if not requests:
            return dg.SkipReason("no new or changed landing files")
        return requests

    return landing_file_sensor
