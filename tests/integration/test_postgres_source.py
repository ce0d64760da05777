"""The production source: a PostgreSQL table read day by day, chosen by configuration only
(``VIGIL_SOURCE=postgres``, DSN from ``VIGIL_SOURCE_DSN``), through real Dagster materializations.
Each run uses its own schema, dropped afterwards."""

import os
import uuid
from datetime import date

import dagster as dg
import pandas as pd
import pytest

from vigil import lake
from vigil.simulator import TX_COLUMNS, simulate

pytestmark = pytest.mark.integration

from tests.conftest import PG_ADMIN_DSN as DSN


@pytest.fixture()
def schema():
    psycopg = pytest.importorskip("psycopg")
    try:
        conn = psycopg.connect(DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        if os.environ.get("VIGIL_REQUIRE_PRODUCTION_TESTS"):
            raise
        pytest.skip(f"no PostgreSQL at {DSN}: {exc}")
    name = f"vigil_test_{uuid.uuid4().hex[:10]}"
    conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield conn, name
    finally:
        conn.execute(f"DROP SCHEMA {name} CASCADE")
        conn.close()


def test_transactions_and_reports_from_postgres_tables(home, schema, monkeypatch):
    conn, name = schema
    conn.execute(f"""CREATE TABLE {name}.card_tx (transaction_id bigint, tx_datetime timestamptz, customer_id bigint,
                     terminal_id bigint, tx_amount numeric(12, 2), channel text)""")
    conn.execute(f"CREATE TABLE {name}.chargebacks (transaction_id bigint, tx_fraud int, reported_at timestamptz)")
    sim = simulate(n_customers=60, n_terminals=120, n_days=2, start_date=date(2025, 4, 1), seed=2)
    tx = sim.transactions[TX_COLUMNS].assign(channel="pos")
    rows = [tuple(r) for r in tx.itertuples(index=False)]
    rows[5] = rows[5][:4] + (-3.5, "pos")  # a negative amount: quarantined with its reason
    rows.append((999_999, None, 1, 1, 10.0, "pos"))  # no timestamp: belongs to no day
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {name}.card_tx VALUES (%s, %s, %s, %s, %s, %s)",
                        [(int(a), b if b is None else b.tz_localize("UTC").to_pydatetime(), int(c), int(d), float(e), f)
                         for a, b, c, d, e, f in rows])
        first = int(tx["transaction_id"].iloc[0])
        cur.executemany(f"INSERT INTO {name}.chargebacks VALUES (%s, %s, %s)",
                        [(first, 1, "2025-04-02T08:00:00+00"), (123_456_789, 1, "2025-04-02T09:00:00+00")])

    monkeypatch.setenv("VIGIL_SOURCE", "postgres")
    monkeypatch.setenv("VIGIL_SOURCE_DSN", DSN)
    monkeypatch.setenv("VIGIL_SOURCE_TX_TABLE", f"{name}.card_tx")
    monkeypatch.setenv("VIGIL_SOURCE_LABELS_TABLE", f"{name}.chargebacks")
    from pipelines.definitions import defs
    from resources import PostgresTableSource, resources_for_profile

    resources = resources_for_profile("local")
    assert isinstance(resources["source"], PostgresTableSource)
    keys = ["raw_transactions", "label_feed", "validated_transactions", "validated_labels"]
    assets = [defs.get_assets_def(k) for k in keys]
    assert dg.materialize(assets, partition_key="2025-04-01", resources=resources).success
    # day 2 carries a report for an unknown transaction: quarantined, and the blocking label check says so
    res = dg.materialize(assets, partition_key="2025-04-02", resources=resources, raise_on_error=False)
    failed = [e.asset_check_evaluation_data.check_name for e in res.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed]
    assert failed == ["label_contract"]

    d1, d2 = date(2025, 4, 1), date(2025, 4, 2)
    admitted = pd.concat([lake.read_day(home.validated, d) for d in (d1, d2)])
    q = lake.read_day(home.quarantine, d1)
    assert len(admitted) == len(tx) - 1 and admitted["transaction_id"].is_unique
    assert str(admitted["tx_amount"].dtype) == "float64" and set(admitted["channel"]) == {"pos"}
    assert q["reasons"].tolist() == ["tx_amount:greater_than(0)"]
    assert f"{name}.card_tx (tx_datetime on 2025-04-01)" in q["source_file"].iloc[0]
    assert "password" not in q["source_file"].iloc[0]
    labels = lake.read_day(home.labels, d2)
    assert labels["transaction_id"].tolist() == [first]
    lq = lake.read_day(home.quarantine / "labels", d2)
    assert lq["reasons"].tolist() == ["transaction_id:unknown_transaction"]
    meta = res.asset_materializations_for_node("raw_transactions")[0].metadata
    assert meta["rows_without_day"].value == 1  # the NULL-timestamp row is counted, not silently skipped


def test_sensor_launches_closed_days_whose_rows_changed(home, schema, monkeypatch):
    import dagster as dg

    from pipelines.sensors import make_landing_sensor
    from resources import AlertSinks, PostgresTableSource, VigilStorage

    conn, name = schema
    conn.execute(f"CREATE TABLE {name}.tx (transaction_id bigint, tx_datetime timestamptz, customer_id bigint, "
                 "terminal_id bigint, tx_amount numeric(12, 2))")
    conn.execute(f"CREATE TABLE {name}.reports (transaction_id bigint, tx_fraud int, reported_at timestamptz)")
    sim = simulate(n_customers=30, n_terminals=60, n_days=2, start_date=date(2025, 4, 1), seed=4)
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {name}.tx VALUES (%s, %s, %s, %s, %s)",
                        [(int(a), b.tz_localize("UTC").to_pydatetime(), int(c), int(d), float(e))
                         for a, b, c, d, e in sim.transactions[TX_COLUMNS].itertuples(index=False)])
    monkeypatch.setenv("VIGIL_SOURCE_LOOKBACK_DAYS", "3000")  # the simulated days are in 2025
    sensor = make_landing_sensor(dg.define_asset_job("j"))
    resources = {"storage": VigilStorage(home=str(home.root)), "alerts": AlertSinks(),
                 "source": PostgresTableSource(dsn=DSN, transactions_table=f"{name}.tx", labels_table=f"{name}.reports")}

    def evaluate(cursor):
        with dg.build_sensor_context(resources=resources, cursor=cursor) as ctx:
            return sensor(ctx)

    first = evaluate(None)
    assert [r.partition_key for r in first.run_requests] == ["2025-04-01", "2025-04-02"]
    again = evaluate(first.cursor)
    assert not again.run_requests and again.skip_reason  # nothing changed: nothing launched
    conn.execute(f"INSERT INTO {name}.tx VALUES (424242, '2025-04-01T23:00:00+00', 1, 1, 12.5)")  # a late row
    late = evaluate(again.cursor)
    assert [r.partition_key for r in late.run_requests] == ["2025-04-01"]
    assert late.run_requests[0].run_key != first.run_requests[0].run_key
