"""Sensors: drift → retraining, one launch per drift episode."""


import json

import dagster as dg

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
