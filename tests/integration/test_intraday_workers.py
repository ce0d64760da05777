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
