"""The one place where Vigil's Dagster project is assembled: assets, checks, jobs, schedules, sensors,
resources for the active profile (``VIGIL_PROFILE``)."""


import dagster as dg

from assets import deployment, feedback, features, ingestion, monitoring, training, validation
from assets.deployment import promote_model, rollback_model, start_rollout
from pipelines.alerting import check_alert_sensor, run_failure_alert_sensor
from pipelines.executors import step_executor
from pipelines.sensors import make_drift_sensor, make_landing_sensor, make_maturity_sensor, make_trigger_sensor, rollout_sensor
from resources import resources_for_profile
from vigil.settings import Settings

SETTINGS = Settings.from_env()  # every VIGIL_* variable, read once here

ALL_ASSETS = dg.load_assets_from_modules([ingestion, validation, features, training, deployment, monitoring, feedback])

DAILY_GROUPS = ("ingestion", "validation", "features", "monitoring", "feedback")

# In-process executors (pipelines/executors.py): on two cores a subprocess per step would pay the
# feast/evidently imports again; VIGIL_K8S_STEP_JOBS makes a job's steps Kubernetes Jobs.
JOBS = ("daily_pipeline", "retraining", "live_performance")
daily_pipeline = dg.define_asset_job(
    "daily_pipeline",
    selection=dg.AssetSelection.groups(*DAILY_GROUPS) - dg.AssetSelection.assets("feast_registry"),
    partitions_def=features.DAILY,
    executor_def=step_executor("daily_pipeline", JOBS, SETTINGS),
    description="One day (or a range, as a single run): ingest, validate, features, online store, monitoring, feedback.",
)
retraining = dg.define_asset_job(
    "retraining",
    selection=dg.AssetSelection.assets("feast_registry") | dg.AssetSelection.groups("training", "deployment"),
    executor_def=step_executor("retraining", JOBS, SETTINGS),
    description="Point-in-time training set, model, evaluation gate, registration and promotion.",
)

live_performance = dg.define_asset_job(
    "live_performance",
    selection=dg.AssetSelection.assets("live_performance_daily"),
    partitions_def=features.DAILY,
    executor_def=step_executor("live_performance", JOBS, SETTINGS),
    description="Live performance of served days again, once their fraud reports are complete.",
)

weekly_retraining = dg.ScheduleDefinition(
    name="weekly_retraining", job=retraining, cron_schedule="0 3 * * 1", execution_timezone="UTC",
    tags={"vigil/trigger": "schedule"}, run_config=SETTINGS.deploy_config(), default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retraining every Monday 03:00 UTC, whatever the monitors say: labels keep maturing.",
)

daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_pipeline, hour_of_day=1, minute_of_hour=0, default_status=dg.DefaultScheduleStatus.RUNNING
)

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[daily_pipeline, retraining, live_performance, promote_model, rollback_model, start_rollout],
    schedules=[daily_schedule, weekly_retraining],
    sensors=[make_drift_sensor(retraining), make_trigger_sensor(retraining), make_landing_sensor(daily_pipeline, SETTINGS),
             make_maturity_sensor(live_performance), rollout_sensor, check_alert_sensor, run_failure_alert_sensor],
    resources=resources_for_profile(SETTINGS),
    executor=dg.in_process_executor,  # also for ad-hoc `dagster asset materialize` runs
)
