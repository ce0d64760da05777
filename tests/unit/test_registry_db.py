"""Registry records: stages, the rules between them, every transition with who and why; the same
code on SQLite and on PostgreSQL (its own schema)."""

import os
import uuid

import pytest

from vigil.registry_db import RegistryDB, StageError

PG = os.environ.get("VIGIL_TEST_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3")


def _pg():
    try:
        import psycopg

        with psycopg.connect(PG) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        if os.environ.get("VIGIL_REQUIRE_PRODUCTION_TESTS"):
            raise
        pytest.skip(f"PostgreSQL not reachable: {exc}")


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    if request.param == "sqlite":
        yield RegistryDB.open(tmp_path)
        return
    _pg()
    import psycopg

    schema = f"reg_{uuid.uuid4().hex[:10]}"
    yield RegistryDB.open(tmp_path, PG, schema)
    with psycopg.connect(PG) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def add(db, tag, stage="candidate"):
    return db.add_version(tag, stage, {"handbook_auc": 0.9}, {"test_days": ["2025-08-01", "2025-08-07"]},
                          {"num_leaves": 63}, "0.1.0+abc", "run1", "gate passed", "dagster")


def test_life_of_two_versions(db):
    add(db, "m:1")
    assert db.version("m:1")["stage"] == "candidate" and db.version("m:1")["metrics"]["handbook_auc"] == 0.9
    db.move("m:1", "production", "first model", "alice")
    add(db, "m:2")
    db.move("m:2", "canary", "10 % of traffic", "bob")
    db.move("m:2", "production", "canary healthy", "bob")
    assert db.version("m:1")["stage"] == "archived"  # one production model at a time
    assert [v["tag"] for v in db.in_stage("production")] == ["m:2"]
    trail = [(t["from_stage"], t["to_stage"], t["actor"]) for t in db.transitions("m:1")]
    assert trail == [(None, "candidate", "dagster"), ("candidate", "production", "alice"), ("production", "archived", "bob")]
    assert "replaced by m:2" in db.transitions("m:1")[-1]["reason"]
    db.move("m:1", "production", "rollback", "carol")  # an archived version can come back
    assert db.version("m:2")["stage"] == "archived"


def test_rules_name_what_is_allowed(db):
    add(db, "m:1")
    add(db, "r:1", stage="rejected")
    with pytest.raises(StageError, match="r:1 is rejected: it can move to none, not production"):
        db.move("r:1", "production", "please", "eve")
    with pytest.raises(StageError, match="unknown stage 'live'"):
        db.move("m:1", "live", "x", "eve")
    with pytest.raises(StageError, match="needs a reason"):
        db.move("m:1", "production", "  ", "eve")
    with pytest.raises(StageError, match="unknown model version 'nope'"):
        db.move("nope", "production", "x", "eve")
    with pytest.raises(StageError, match="candidate or rejected"):
        add(db, "m:9", stage="production")
    db.move("m:1", "production", "ok", "eve")
    with pytest.raises(StageError, match="can move to archived, not canary"):
        db.move("m:1", "canary", "x", "eve")


def test_long_reasons_are_bounded(db):
    add(db, "m:1")
    db.move("m:1", "archived", "x" * 10_000, "eve")
    assert len(db.transitions("m:1")[-1]["reason"]) == 2000
