"""The endpoint's in-memory copy of the snapshot rows (vigil.feature_repo.SnapshotCache): what it
holds, when it lets go, and that a reader racing a writer cannot put old values back."""

import numpy as np

from vigil.feature_repo import SnapshotCache

KEY = ("customer_spending", ("a", "b"))


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def changed(marker):
    tmp = marker.with_name("tmp")
    tmp.write_text("x")
    tmp.replace(marker)  # a new inode, as feature_repo.snapshots_changed


def read(cache, ids, store):
    """What OnlineReader.read_matrix does with a cache: fill, read the rest from ``store``, keep them."""
    stamp = cache.stamp()
    out = np.full((len(ids), 2), np.nan)
    missing = cache.fill(KEY, ids, out)
    for k in missing:
        out[k] = store.get(ids[k], (np.nan, np.nan))
    cache.put(KEY, [ids[k] for k in missing], out[missing], stamp)
    return out, missing


def test_rows_are_kept_and_dropped_when_the_marker_changes(tmp_path):
    marker = tmp_path / "online.db.snapshots"
    changed(marker)
    store = {1: (1.0, 2.0), 2: (3.0, 4.0)}
    cache = SnapshotCache(marker, clock=Clock())
    out, missing = read(cache, [1, 2, 3], store)
    assert missing == [0, 1, 2] and out[0].tolist() == [1.0, 2.0] and np.isnan(out[2]).all()
    store[1] = (9.0, 9.0)  # the store changed, the marker did not: the cached row is served
    out, missing = read(cache, [2, 1, 3], store)
    assert missing == [] and out[1].tolist() == [1.0, 2.0] and np.isnan(out[2]).all()  # an unknown entity is kept too
    assert read(cache, [1], store)[0][0].tolist() == [1.0, 2.0]  # the one-row path
    changed(marker)  # a writer committed, then replaced the marker
    out, missing = read(cache, [1], store)
    assert missing == [0] and out[0].tolist() == [9.0, 9.0]
    assert (cache.hits, cache.misses) == (4, 4)


def test_a_read_from_before_a_change_is_not_stored_after_it(tmp_path):
    marker = tmp_path / "m"
    changed(marker)
    cache = SnapshotCache(marker, clock=Clock())
    old_stamp = cache.stamp()  # reader A observes the marker, then reads the old value...
    changed(marker)
    cache.stamp()  # ...reader B sees the change (the cache is dropped)...
    cache.put(KEY, [1], np.array([[1.0, 1.0]]), old_stamp)  # ...and A's old value arrives late
    out = np.full((1, 2), np.nan)
    assert cache.fill(KEY, [1], out) == [0]  # not kept


def test_age_and_size_bound_the_cache(tmp_path):
    clock, marker = Clock(), tmp_path / "absent"  # no marker yet (no write so far): cached all the same
    cache = SnapshotCache(marker, max_entries=100, max_age_s=60, clock=clock)
    read(cache, list(range(80)), {})
    assert read(cache, list(range(80)), {})[1] == []
    read(cache, list(range(80, 130)), {})  # 130 > 100: dropped, then these 50 kept
    assert cache._size == 50 and read(cache, [0], {})[1] == [0]
    clock.t = 61  # a write by a tool that does not replace the marker is seen within max_age_s
    assert read(cache, [100], {})[1] == [0]
    assert cache.dropped == 2  # the size, then the age


def test_many_rows_grow_the_table_and_come_back_in_order(tmp_path):
    cache = SnapshotCache(tmp_path / "m", clock=Clock())
    store = {i: (float(i), -float(i)) for i in range(5000)}
    ids = list(range(0, 5000, 2))
    read(cache, ids, store)
    out, missing = read(cache, list(range(5000)), store)  # half cached, half read now
    assert len(missing) == 2500
    assert out[:, 0].tolist() == [float(i) for i in range(5000)] and out[:, 1].tolist() == [-float(i) for i in range(5000)]



def test_a_reader_never_indexes_an_array_replaced_while_it_looked_up(tmp_path):
    """put() grows a table by replacing its array, then publishes the new slots. A reader whose
    slot lookup meets that (here: the writer runs inside the lookup, as a thread switch would)
    reads the id's own row: it takes the array after the slots, never an older, smaller one."""
    cache = SnapshotCache(tmp_path / "m", clock=Clock())
    stamp = cache.stamp()
    first = list(range(1, 1001))
    cache.put(KEY, first, np.array([[float(i), -float(i)] for i in first]), stamp)  # array of 1,024 rows, 1,000 used
    table = cache._tables[KEY]
    late = []  # ids the "other thread" publishes during the next lookup: the array is replaced to hold them

    class Switching(dict):
        def get(self, *a):
            if late:
                ids = late[:]
                late.clear()
                cache.put(KEY, ids, np.array([[float(i), -float(i)] for i in ids]), stamp)
            return super().get(*a)

    for ids, more in (([1010], range(1001, 3001)), ([5, 1020, 4999], range(3001, 7001))):  # /score, then a batch
        late[:] = more
        table[0] = Switching(table[0])
        out = np.full((len(ids), 2), np.nan)
        assert cache.fill(KEY, ids, out) == []
        assert out[:, 0].tolist() == [float(i) for i in ids] and out[:, 1].tolist() == [-float(i) for i in ids]


def test_a_stale_look_at_the_marker_neither_clears_nor_rolls_it_back(tmp_path):
    """A thread that looked at the marker before a writer replaced it, and takes the lock after
    another thread recorded the new one, must not put the older identity back (puts read under
    it would be accepted again); and a row read before the age limit's clear is not put after it."""
    clock = Clock()
    cache = SnapshotCache(tmp_path / "m", max_age_s=60, clock=clock)
    changed(tmp_path / "m")
    new = cache.stamp()  # the other thread recorded the new marker
    looks = iter([("old",), new[0]])  # this thread's look outside the lock, then under it
    cache._seen = lambda: next(looks)
    dropped = cache.dropped
    assert cache.stamp() == new and cache._stamp == new[0] and cache.dropped == dropped
    del cache._seen
    before = cache.stamp()
    clock.t = 61
    cache.stamp()  # the age limit: dropped
    cache.put(KEY, [1], np.array([[1.0, 1.0]]), before)  # read before that clear, put after it
    assert cache.fill(KEY, [1], np.full((1, 2), np.nan)) == [0]


def test_checkpoints_leave_the_writers_connections_for_the_checkpointer(tmp_path):
    """A connection that leaves checkpoints (the endpoint's) lets the WAL grow past SQLite's
    1,000-page autocheckpoint without copying it back in a commit (8-11 ms on the event loop);
    the Checkpointer's PASSIVE checkpoint, on its own thread, copies every frame back."""
    import sqlite3
    import time

    from vigil.feature_repo import Checkpointer

    db = tmp_path / "online.db"
    setup = sqlite3.connect(db)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    setup.commit()
    setup.close()
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA wal_autocheckpoint=0")  # what OnlineReader.checkpoint_in_background sets
    for i in range(1_500):  # one 4 KB page and more a commit: past 1,000 pages of WAL
        with writer:
            writer.execute("INSERT INTO t VALUES (?, ?)", (i, b"x" * 4_000))
    wal = db.with_name("online.db-wal")
    assert wal.stat().st_size > 1_000 * 4_096  # no commit checkpointed it
    ck = Checkpointer(db, every_s=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while ck.frames == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        ck.stop()
    assert ck.runs >= 1 and ck.frames >= 1_500 and ck.failed == ""
    probe = sqlite3.connect(db)
    busy, frames, done = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and frames == done  # nothing left to copy
    assert probe.execute("SELECT count(*) FROM t").fetchone()[0] == 1_500
