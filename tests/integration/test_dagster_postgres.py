"""Dagster's own storage on PostgreSQL (the production profile's ``infra/dagster/dagster.yaml``,
as shipped): a materialization, a sensor evaluation and the job it asks for, each recorded in a
database of this run's own. The shipped file once failed at the first event (psycopg 3 and
dagster-postgres' ``NOTIFY run_events, $1``); nothing else in the suite used Dagster on PostgreSQL."""

from tests.conftest import copy_home, drop_redis_project, env_set, profile_env


def test_materialization_sensor_and_job_on_dagster_postgres_storage(dagster_pg, pipeline_home, production_services, tmp_path):
    import dagster as dg
    import psycopg
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    from pipelines.definitions import ALL_ASSETS, daily_pipeline
    from pipelines.sensors import LANDING_SENSOR, make_landing_sensor
    from resources import resources_for_profile

    root = copy_home(pipeline_home["paths"].root, tmp_path / "vigil")  # its own lake, models and Feast project
    env = {**profile_env("production", production_services, root), **dagster_pg["env"]}
    try:
        with env_set(env), dg.DagsterInstance.from_config(str(dagster_pg["home"])) as instance:
            assert isinstance(instance.run_storage, PostgresRunStorage)
            assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
            assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
            resources = resources_for_profile("production")
            defs = dg.Definitions(assets=ALL_ASSETS, jobs=[daily_pipeline], sensors=[make_landing_sensor(daily_pipeline)],
                                  resources=resources, executor=dg.in_process_executor)  # definitions.py, production profile
            assert dg.materialize([defs.get_assets_def("feast_registry")], instance=instance, resources=resources).success

            # the landing sensor sees the replayed day's file (not yet in the lake) and asks for its run
            sensor = defs.get_sensor_def(LANDING_SENSOR)
            ctx = dg.build_sensor_context(instance=instance, cursor=None, definitions=defs, resources=resources)
            requests = list(sensor(ctx))
            day = pipeline_home["replay_day"].isoformat()
            assert [r.partition_key for r in requests] == [day]
            job = defs.resolve_job_def("daily_pipeline")
            result = job.execute_in_process(instance=instance, partition_key=day, tags=requests[0].tags)
            assert result.success
            assert instance.get_runs_count() == 2
            ok = {r.job_name for r in instance.get_runs() if r.status == dg.DagsterRunStatus.SUCCESS}
            assert "daily_pipeline" in ok
            done = instance.get_latest_materialization_event(dg.AssetKey("online_features"))
            assert done is not None and done.dagster_event.partition == day

        # ... and it is in PostgreSQL, where another process (the daemon, the webserver) reads it
        with psycopg.connect(dagster_pg["dsn"]) as conn:
            statuses = dict(conn.execute("SELECT pipeline_name, status FROM runs").fetchall())
            assert statuses.get("daily_pipeline") == "SUCCESS"
            n = conn.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                             "AND asset_key LIKE '%online_features%'").fetchone()[0]
            assert n >= 1
    finally:
        drop_redis_project(production_services, env["VIGIL_FEAST_PROJECT"])
