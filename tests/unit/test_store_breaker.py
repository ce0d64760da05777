"""The online store's breaker and time budget (issue 14 §4): a store that fails or is slow costs
one request its timeout or its budget, then requests skip it, answered degraded at once, until a
single probe finds it well again."""

from datetime import datetime

import numpy as np
import pytest

from vigil.features import FEATURE_VIEWS, INTRADAY_FEATURES, MODEL_FEATURES
from vigil.feature_repo import CardsLocked, IntradayBusy, IntradayLocked
from vigil.scoring import Scorer, StoreBreaker


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_breaker_opens_on_failure_probes_once_after_the_cooldown_and_closes_on_success():
    clock = Clock()
    b = StoreBreaker(2.0, clock)
    assert b.allow() and b.allow()  # closed: everyone
    b.failure()
    assert b.opened == 1 and not b.allow()
    clock.t += 1.9
    assert not b.allow()
    clock.t += 0.2
    assert b.allow()  # the probe
    assert not b.allow()  # the others keep skipping while it runs
    b.failure()  # the probe failed: open again, for a whole cooldown
    assert not b.allow() and b.opened == 1
    clock.t += 2.1
    assert b.allow()
    b.abandon()  # the probe ended without a verdict (run again elsewhere): another may probe
    assert b.allow()
    b.success()
    assert b.allow() and b.allow() and b.open_until is None
    b.failure()
    assert b.opened == 2


class Reader:
    """An online store that answers (no snapshot: NaN), fails, or takes ``delay_s`` of the clock."""

    def __init__(self, clock):
        self.clock, self.calls, self.fail, self.delay_s = clock, 0, False, 0.0

    def read_matrix(self, view, ids, names):
        self.calls += 1
        self.clock.t += self.delay_s
        if self.fail:
            raise TimeoutError("Timeout reading from socket")
        return np.full((len(ids), len(names)), np.nan)


class Stub(Scorer):
    def __init__(self, budget_s=0.25, cooldown_s=2.0):
        self.clock = Clock()
        self.reader, self.store_budget_s = Reader(self.clock), budget_s
        self.breaker = StoreBreaker(cooldown_s, self.clock)
        self.counters = {**{f"stale_{v.name}": 0 for v in FEATURE_VIEWS}, "degraded": 0, "store_skipped": 0}
        self._last_error, self.alerts, self.intraday_calls, self.busy, self.locked = "", [], 0, False, None

    def intraday_step(self, requests, epoch, amount, wait=True, check=None):
        self.intraday_calls += 1
        self.reader.clock.t += self.reader.delay_s
        if self.busy and not wait:
            raise IntradayBusy("held")
        if self.locked is not None:
            raise self.locked
        return np.zeros((len(requests), len(INTRADAY_FEATURES)))

    def _alert(self, *a):
        self.alerts.append(a)


REQ = {"transaction_id": 1, "tx_datetime": datetime(2025, 6, 1, 12), "customer_id": 1, "terminal_id": 2, "tx_amount": 10.0}


def test_a_failing_store_is_skipped_until_a_probe_finds_it_well():
    s = Stub()
    s.reader.fail = True
    _, _, degraded = s.assemble([REQ])
    assert degraded and s.reader.calls == 1 and s.intraday_calls == 0  # no other call after the first failure
    for _ in range(5):  # skipped: no call, answered degraded at once
        x, stale, degraded = s.assemble([REQ, REQ])
        assert degraded and stale == [[v.name for v in FEATURE_VIEWS]] * 2
        assert np.isnan(x[:, len(MODEL_FEATURES) - len(INTRADAY_FEATURES) - 1:]).any()
    assert s.reader.calls == 1 and s.counters == {**s.counters, "degraded": 11, "store_skipped": 10}
    s.reader.fail = False
    s.clock.t += 2.5
    _, _, degraded = s.assemble([REQ])  # the probe
    assert not degraded and s.reader.calls == 1 + len(FEATURE_VIEWS) and s.intraday_calls == 1
    assert not s.assemble([REQ])[2] and s.breaker.opened == 1


def test_a_slow_store_costs_a_request_its_budget_then_is_skipped():
    s = Stub(budget_s=0.25)
    s.reader.delay_s = 0.2  # each call under a timeout, all together over the budget
    _, _, degraded = s.assemble([REQ])
    assert degraded and "over the request's 250.1 ms budget" in s._last_error
    assert s.reader.calls == 2 and s.intraday_calls == 0  # the second read ended past the budget: no intraday step
    assert s.breaker.opened == 1 and s.assemble([REQ])[2] and s.reader.calls == 2
    s.reader.delay_s = 0.01
    s.clock.t += 3
    assert not s.assemble([REQ])[2]  # a store fast again closes it


def test_a_batch_gets_a_budget_for_its_rows():
    s = Stub(budget_s=0.25)
    s.reader.delay_s = 0.2
    assert not s.assemble([REQ] * 10_000)[2]  # 0.25 s + 0.1 ms a row
    assert s.intraday_calls == 1 and s.breaker.opened == 0


def test_busy_lists_leave_no_trace_and_no_verdict():
    """The event loop's attempt finds the lists held: IntradayBusy, nothing counted, and a probe
    that ended so does not keep the breaker from probing again."""
    s = Stub()
    s.busy = True
    before = dict(s.counters)
    with pytest.raises(IntradayBusy):
        s.assemble([REQ], wait=False)
    assert s.counters == before
    s.breaker.failure()
    s.clock.t += 3
    with pytest.raises(IntradayBusy):
        s.assemble([REQ], wait=False)  # it was the probe
    assert not s.assemble([REQ], wait=True)[2] and s.breaker.open_until is None


def test_cards_held_by_another_worker_degrade_that_request_only():
    """Redis: a few cards' lock keys held past the wait is contention, not a sick store: that
    request is degraded, the breaker stays closed (and a probe that meets it closes it). SQLite's
    whole write lock held past its wait is the store not writing: the breaker opens."""
    s = Stub()
    s.locked = CardsLocked("intraday lists of 1 card(s) locked by another worker for over 1.0 s")
    assert s.assemble([REQ])[2] and s.breaker.opened == 0 and s.breaker.allow()
    s.breaker.failure()
    s.clock.t += 3
    assert s.assemble([REQ])[2] and s.breaker.open_until is None  # the probe: the store answered
    s.locked = IntradayLocked("intraday lists locked by another writer for over 5.0 s")
    assert s.assemble([REQ])[2] and s.breaker.opened == 2 and not s.breaker.allow()


class _LockedConn:
    """A SQLite connection whose BEGIN IMMEDIATE finds another writer ``busy_for`` times."""

    def __init__(self, busy_for: int):
        self.busy_for, self.begins = busy_for, 0

    def execute(self, sql: str):
        if sql == "BEGIN IMMEDIATE":
            self.begins += 1
            if self.begins <= self.busy_for:
                import sqlite3

                raise sqlite3.OperationalError("database is locked")


def test_a_brief_wait_gets_the_lists_a_short_transaction_held_and_gives_up_soon_after():
    """wait=False (the event loop's /score): another worker's transaction of ~0.1 ms is waited out
    in naps of INTRADAY_BRIEF_NAP_S, not sent to a thread; one held longer than
    INTRADAY_BRIEF_WAIT_S is IntradayBusy (then a thread waits for it), well before a blocking wait."""
    import time

    from vigil.feature_repo import INTRADAY_BRIEF_WAIT_S, _begin_immediate

    short = _LockedConn(busy_for=2)
    _begin_immediate(short, INTRADAY_BRIEF_WAIT_S, brief=True)
    assert short.begins == 3
    held = _LockedConn(busy_for=10**9)
    t0 = time.monotonic()
    with pytest.raises(IntradayBusy):
        _begin_immediate(held, INTRADAY_BRIEF_WAIT_S, brief=True)
    assert INTRADAY_BRIEF_WAIT_S <= time.monotonic() - t0 < 0.1 and held.begins >= 2
    blocking = _LockedConn(busy_for=3)  # wait=True: retried until it gets them
    _begin_immediate(blocking, 5.0)
    assert blocking.begins == 4


def test_the_wait_board_is_shared_through_its_file_and_forgets_a_stale_waiter(tmp_path):
    """Two boards on one file (two workers): a mark on one is seen by the other until it is
    cleared or STALE_S old; the file is 0600."""
    import os
    import time

    from vigil.feature_repo import WaitBoard

    path = tmp_path / "online.db-waiting"
    waiter, batch = WaitBoard(path), WaitBoard(path)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert not batch.someone_waiting()
    slot = waiter.slot()
    waiter.mark(slot)
    assert batch.someone_waiting()
    waiter.clear(slot)
    assert not batch.someone_waiting()
    waiter.mark(slot)
    time.sleep(WaitBoard.STALE_S * 2)  # a waiter that died holding a slot
    assert not batch.someone_waiting()


def test_a_batch_leaves_the_lists_to_a_waiter_between_its_chunks(tmp_path):
    """A batch writing chunk after chunk (here 3 ms each, 60 chunks) and a blocking waiter on
    another connection: SQLite hands the lock to nobody in particular, and the batch takes it
    again microseconds after each commit, so the waiter napping 0.5-1 ms waited for most of the
    batch. With the board, the batch leaves a gap while someone waits: the waiter gets the lists
    within a few chunks."""
    import sqlite3
    import threading
    import time

    from vigil.feature_repo import INTRADAY_SQLITE_WAIT_S, WaitBoard, _begin_immediate

    db = tmp_path / "online.db"
    setup = sqlite3.connect(db)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)")
    setup.commit()
    setup.close()

    def run(board):
        started, done, waited = threading.Event(), threading.Event(), []

        def batch():
            conn = sqlite3.connect(db, isolation_level=None)
            for k in range(60):
                if k and board is not None:
                    board.give_way()  # what IntradayStore.yield_to_waiters does
                _begin_immediate(conn, INTRADAY_SQLITE_WAIT_S, board=board)
                started.set()
                time.sleep(0.003)  # the chunk's read, add and write
                conn.execute("INSERT OR REPLACE INTO t VALUES (1, ?)", (k,))
                conn.execute("COMMIT")
            done.set()

        t = threading.Thread(target=batch)
        t.start()
        started.wait(5)
        time.sleep(0.01)
        conn = sqlite3.connect(db, isolation_level=None)
        t0 = time.monotonic()
        _begin_immediate(conn, INTRADAY_SQLITE_WAIT_S, board=board)
        waited.append(time.monotonic() - t0)
        batch_done_first = done.is_set()
        conn.execute("COMMIT")
        t.join()
        return waited[0], batch_done_first

    with_board, first = run(WaitBoard(tmp_path / "online.db-waiting"))
    assert not first and with_board < 0.05, with_board  # a few chunks, not the ~170 ms left of the batch
