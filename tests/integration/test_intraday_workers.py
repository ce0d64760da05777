"""Two worker processes, two threads each, adding to the same card's intraday list at once lose
none of each other's additions (``IntradayStore.exclusive``: SQLite's write transaction on each
thread's own connection, Redis lock keys), in both profiles. Without it, each read-add-write can
overwrite the other's."""

import multiprocessing as mp
import os

import pytest

from tests.conftest import env_set

pytestmark = pytest.mark.integration

CARD = 9_100_000_001  # a card no simulated data has
EPOCH = 1_893_456_000  # 2030-01-01: a day of its own
N = 120  # additions per worker; both together stay under the list's 256 cap


def add_many(root: str, env: dict, first_id: int, start, done) -> None:
    """N additions from two threads of one process, sharing one IntradayStore as a worker's
    threads share the scorer's: each thread gets its own SQLite connection (on one shared
    connection, threads inside each other's write transaction failed)."""
    import threading

    os.environ.update(env)
    from vigil import config
    from vigil.feature_repo import IntradayBusy, IntradayStore, open_store
    from vigil.features import intraday_add

    intraday = IntradayStore(open_store(config.paths(root)))
    intraday.read([CARD])  # connected and warm
    errors = []

    def add_once(tx, wait):
        with intraday.exclusive([CARD], wait):
            state = intraday.read([CARD])[0]
            intraday.write({CARD: intraday_add(state, tx, EPOCH + tx % 10_000, 1.0)})

    def add(ids, wait):
        try:
            for tx in ids:
                try:
                    add_once(tx, wait)
                except IntradayBusy:  # as the endpoint's event loop does: again, waiting, on a thread
                    add_once(tx, True)
        except Exception as exc:  # reported to the test through the exit code
            errors.append(exc)

    start.wait(120)  # both processes at once
    # one thread waits for the lists, the other does not (the endpoint's loop) and falls back
    threads = [threading.Thread(target=add, args=(range(first_id + k, first_id + N, 2), k == 0)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    done.put(first_id)


def run_two_workers(root, env) -> list[int]:
    from vigil import config
    from vigil.feature_repo import IntradayStore, open_store

    ctx = mp.get_context("spawn")
    start, done = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=add_many, args=(str(root), env, first, start, done)) for first in (1_000, 2_000)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert sorted(done.get(timeout=5) for _ in procs) == [1_000, 2_000]
    with env_set(env):
        state = IntradayStore(open_store(config.paths(root))).read([CARD])[0]
    return sorted(state["intraday_tx_ids"])


def test_two_workers_sqlite(pipeline_home):
    root = pipeline_home["paths"].root
    env = {"VIGIL_HOME": str(root), "VIGIL_PROFILE": "local"}
    assert run_two_workers(root, env) == list(range(1_000, 1_000 + N)) + list(range(2_000, 2_000 + N))


def test_two_workers_redis(production_home):
    root = production_home["paths"].root
    assert run_two_workers(root, production_home["env"]) == list(range(1_000, 1_000 + N)) + list(range(2_000, 2_000 + N))


def held_elsewhere_is_busy_at_once(root, env, hold) -> None:
    """While another worker holds the lists, ``exclusive(wait=False)`` raises IntradayBusy at once,
    having read and written nothing; once released, it goes through."""
    import time

    from vigil import config
    from vigil.feature_repo import IntradayBusy, IntradayStore, open_store

    with env_set(env):
        intraday = IntradayStore(open_store(config.paths(root)))
        before = intraday.read([CARD + 1])[0]
        with hold(intraday):
            t0 = time.monotonic()
            with pytest.raises(IntradayBusy):
                with intraday.exclusive([CARD + 1], wait=False):
                    raise AssertionError("entered while another worker holds the lists")
            assert time.monotonic() - t0 < 0.5
        with intraday.exclusive([CARD + 1], wait=False):
            assert intraday.read([CARD + 1])[0] == before


def test_busy_at_once_sqlite(pipeline_home):
    import contextlib
    import sqlite3

    root = pipeline_home["paths"].root

    @contextlib.contextmanager
    def hold(intraday):  # another process's write transaction on the same file
        conn = sqlite3.connect(intraday.reader.online_store._get_db_path(intraday.config))
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.rollback()
            conn.close()

    held_elsewhere_is_busy_at_once(root, {"VIGIL_HOME": str(root), "VIGIL_PROFILE": "local"}, hold)


def test_busy_at_once_redis(production_home):
    import contextlib

    @contextlib.contextmanager
    def hold(intraday):  # another worker's lock key on the card
        client = intraday.reader.online_store._get_client(intraday.config.online_store)
        key = f"{intraday.config.project}:vigil_intraday_lock:{CARD + 1}"
        assert client.set(key, "someone-else", nx=True, px=10_000)
        try:
            yield
        finally:
            client.delete(key)

    held_elsewhere_is_busy_at_once(production_home["paths"].root, production_home["env"], hold)


def write_old_layout(intraday, card: int, state: dict) -> None:
    """A card's list as Vigil wrote it before the lists were packed: five Feast values a card."""
    from datetime import datetime, timezone

    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List, Value

    values = {"intraday_day": Value(int64_val=state["intraday_day"]),
              "intraday_tx_ids": Value(int64_list_val=Int64List(val=state["intraday_tx_ids"])),
              "intraday_epochs": Value(int64_list_val=Int64List(val=state["intraday_epochs"])),
              "intraday_amounts": Value(double_list_val=DoubleList(val=state["intraday_amounts"])),
              "intraday_last_epoch": Value(int64_val=max(state["intraday_epochs"]))}
    cfg, reader = intraday.config, intraday.reader
    if intraday._sqlite():
        key = reader.entity_keys("customer_intraday", [card])[0]
        naive = datetime.now(timezone.utc).replace(tzinfo=None)
        with reader.sqlite_conn() as conn:
            conn.executemany(f"INSERT OR REPLACE INTO {reader.sqlite_table('customer_intraday')} "
                             "(entity_key, feature_name, value, value_text, event_ts, created_ts) VALUES (?, ?, ?, ?, ?, ?)",
                             [(key, f, v.SerializeToString(), None, naive, None) for f, v in values.items()])
    else:
        client = reader.online_store._get_client(cfg.online_store)
        ek = reader._key(join_keys=["customer_id"], entity_values=[reader._value(int64_val=card)])
        client.hset(_redis_key(cfg.project, ek, entity_key_serialization_version=cfg.entity_key_serialization_version),
                    mapping={_mmh3(f"customer_intraday:{f}"): v.SerializeToString() for f, v in values.items()})


def upgraded_lists_are_kept(root, env) -> None:
    """An online store written before the lists were packed (five values a card): the migration
    (run by ``apply``) moves each card's list to the packed value and deletes the old values, a
    card that already has a packed list keeps it, and a second run moves nothing."""
    from vigil import config
    from vigil.feature_repo import IntradayStore, migrate_intraday, open_store

    old = {"intraday_day": EPOCH // 86_400, "intraday_tx_ids": [7, 9], "intraday_epochs": [EPOCH + 5, EPOCH + 60],
           "intraday_amounts": [12.34, 0.1]}
    newer = {**old, "intraday_tx_ids": [11], "intraday_epochs": [EPOCH + 90], "intraday_amounts": [5.0]}
    with env_set(env):
        store = open_store(config.paths(root))
        intraday = IntradayStore(store)
        write_old_layout(intraday, CARD + 2, old)
        write_old_layout(intraday, CARD + 3, old)
        intraday.write({CARD + 3: newer})  # packed already (an endpoint of this version wrote it)
        assert intraday.read([CARD + 2]) == [None]  # not readable in the old layout
        assert migrate_intraday(store) >= 1
        assert intraday.read([CARD + 2, CARD + 3]) == [old, newer]
        assert migrate_intraday(store) == 0
        if not intraday._sqlite():  # Redis: a day after the first move, no scan at all
            client = intraday.reader.online_store._get_client(intraday.config.online_store)
            since = f"{intraday.config.project}:vigil_intraday_packed_since"
            first = client.get(since)
            client.set(since, int(first) - 86_401)
            write_old_layout(intraday, CARD + 4, old)
            try:
                assert migrate_intraday(store) == 0 and intraday.read([CARD + 4]) == [None]
            finally:
                client.set(since, first)
            assert migrate_intraday(store) == 1  # within the day: moved


def test_upgraded_lists_are_kept_sqlite(pipeline_home):
    root = pipeline_home["paths"].root
    upgraded_lists_are_kept(root, {"VIGIL_HOME": str(root), "VIGIL_PROFILE": "local"})


def test_upgraded_lists_are_kept_redis(production_home):
    upgraded_lists_are_kept(production_home["paths"].root, production_home["env"])
