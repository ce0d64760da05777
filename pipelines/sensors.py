"""Sensors: new landing files → the day's pipeline run; drift → retraining, once per episode."""

import json
from datetime import date

import dagster as dg

from vigil import config, lake

LANDING_SENSOR = "landing_file_sensor"

DRIFT_SENSOR = "drift_retraining_sensor"
DRIFT_ASSET = dg.AssetKey("drift_report")


def make_drift_sensor(retraining_job) -> dg.SensorDefinition:
    @dg.sensor(name=DRIFT_SENSOR, job=retraining_job, minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Reads each new drift_report materialization; the first drifted report of an "
                           "episode launches retraining (run_key = episode), a clean report ends the episode.")
    def drift_retraining_sensor(context: dg.SensorEvaluationContext):
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
            if drift and state["episode"] is None:
                state["episode"] = f"{mat.partition or 'all'}-{record.storage_id}"
                requests.append(dg.RunRequest(run_key=f"drift-episode-{state['episode']}",
                                              tags={"vigil/trigger": "drift", "vigil/drift_share": f"{share:.3f}",
                                                    "vigil/drift_partition": str(mat.partition)}))
            elif not drift and state["episode"] is not None:
                context.log.info(f"drift episode {state['episode']} ended at partition {mat.partition}")
                state["episode"] = None
            state["after"] = record.storage_id
        if not requests:
            return dg.SkipReason(f"no new drift episode (episode={state['episode']})") if not result.records else \
                dg.SensorResult(skip_reason=f"{len(result.records)} report(s) read, no new episode", cursor=json.dumps(state))
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(state))

    return drift_retraining_sensor


def landing_requests(paths: config.Paths) -> list[dg.RunRequest]:
    """One run request per day whose landing files are newer than its lake partitions.

    Stateless and idempotent: a day that was processed after its files arrived is skipped; a file
    that arrives late or is replaced makes its day run again (the run replaces the partition). The
    run key carries the files' modification times, so the same files never launch twice.
    """
    out = []
    tx_dir, lab_dir = paths.landing / "transactions", paths.landing / "labels"
    days = {p.stem for p in tx_dir.glob("*.*")} if tx_dir.exists() else set()
    for stem in sorted(days):
        try:
            day = date.fromisoformat(stem)
        except ValueError:
            continue
        if day < config.start_date():
            continue
        tx_src, lab_src = lake.find_source(tx_dir, day), lake.find_source(lab_dir, day)
        if tx_src is None:
            continue
        changed = []
        for src, done in ((tx_src, lake.day_file(paths.validated, day)), (lab_src, lake.day_file(paths.labels, day))):
            if src is not None and (not done.exists() or src.stat().st_mtime_ns > done.stat().st_mtime_ns):
                changed.append(src)
        if changed:
            sig = "-".join(str(p.stat().st_mtime_ns) for p in (tx_src, lab_src) if p is not None)
            out.append(dg.RunRequest(partition_key=stem, run_key=f"landing-{stem}-{sig}",
                                     tags={"vigil/trigger": "landing", "vigil/files": ", ".join(p.name for p in changed)}))
    return out


def make_landing_sensor(daily_job) -> dg.SensorDefinition:
    @dg.sensor(name=LANDING_SENSOR, job=daily_job, minimum_interval_seconds=15,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Launches the daily pipeline for each day whose landing files (transactions or "
                           "fraud reports) are new or newer than what the lake holds for that day.")
    def landing_file_sensor(context: dg.SensorEvaluationContext):
        requests = landing_requests(config.paths())
        if not requests:
            return dg.SkipReason("no new or changed landing files")
        return requests

    return landing_file_sensor
