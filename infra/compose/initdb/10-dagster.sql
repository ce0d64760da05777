-- Dagster's runs, events and schedules get a database of their own (VIGIL_PG_DB=dagster);
-- POSTGRES_DB `vigil` holds the Feast registry and Vigil's model registry.
CREATE DATABASE dagster OWNER vigil;
