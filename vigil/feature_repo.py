"""Feast object definitions: the one place where Vigil's features are declared for Feast.

Training reads them with point-in-time retrieval from the offline store; the endpoint reads the
same views from the online store. The feature service is versioned: a model records the service
name it was trained with, and serving asks for exactly that service.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import struct
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from vigil import config
from vigil.contracts import MAX_ID
from vigil.settings import SECRETS, Settings
from vigil.features import (FEATURE_TTL, FEATURE_VIEWS, INTRADAY_LIST, INTRADAY_STATE, INTRADAY_VIEW, ONLINE_VIEWS,
                            pack_intraday, unpack_intraday)

log = logging.getLogger("vigil.feature_repo")

FEATURE_SERVICE = "fraud_features_v3"  # v3: the card's transactions earlier the same day (customer_intraday)
CUSTOMER_VIEW, TERMINAL_VIEW = (v.name for v in FEATURE_VIEWS)
INTRADAY_PUSH = "customer_intraday_push"
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
INFRA = Path(__file__).resolve().parents[1] / "infra" / "feast"
_DOUBLE = struct.Struct("<d")  # a Feast Value holding a double: its tag byte, then these 8 bytes
_INT64 = struct.Struct("<q")  # an int64 entity value in a serialized entity key


def definitions(paths: config.Paths) -> list:
    """Entities, offline sources and feature views from :data:`vigil.features.ONLINE_VIEWS`, and
    the versioned feature service over all of them.

    The snapshot views are float features over daily Parquet snapshots. ``customer_intraday`` holds
    each card's list of today's transactions as one packed value (:func:`vigil.features.pack_intraday`);
    its source is a push source (what the endpoint adds per scored transaction, see
    :class:`IntradayStore`) over the end-of-day lists in the lake."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.data_format import ParquetFormat
    from feast.types import Bytes, Float64, Int64

    entities, objs, views = {}, [], []
    for spec in ONLINE_VIEWS:
        if spec.entity not in entities:
            entities[spec.entity] = Entity(name=spec.entity, join_keys=[spec.key], value_type=ValueType.INT64)
            objs.append(entities[spec.entity])
        # a local folder or an s3:// prefix: the shared registry names the same files for every host
        source = FileSource(name=f"{spec.folder}_snapshots", path=str(paths.features / spec.folder),
                            file_format=ParquetFormat(), timestamp_field="event_timestamp",
                            s3_endpoint_override=paths.s3_endpoint if paths.lake_is_remote else None)
        objs.append(source)
        if spec is INTRADAY_VIEW:
            source = PushSource(name=INTRADAY_PUSH, batch_source=source)
            objs.append(source)
        view = FeatureView(
            name=spec.name,
            entities=[entities[spec.entity]],
            ttl=FEATURE_TTL if spec is not INTRADAY_VIEW else FEATURE_TTL * 2,
            schema=([Field(name=INTRADAY_LIST, dtype=Bytes)] if spec is INTRADAY_VIEW else
                    [Field(name=f, dtype=Float64) for f in spec.features] + [Field(name=spec.asof, dtype=Int64)]),
            source=source,
            online=True,
        )
        objs.append(view)
        views.append(view)
    service = FeatureService(name=FEATURE_SERVICE, features=views, tags={"model_features": "v3"})
    return objs + [service]


def open_store(paths: config.Paths | None = None, profile: str | None = None, *,
               settings: Settings | None = None, secrets: Mapping[str, str] | None = None):
    """A FeatureStore for the profile's ``infra/feast/<profile>/feature_store.yaml`` (or the
    settings' ``feast_config``). The file's ``${VAR}`` placeholders are filled here, from the
    settings and ``secrets`` (``VIGIL_REDIS_URL``, ``VIGIL_FEAST_REGISTRY``; default: the process
    environment of the entry point), and the config is handed to Feast as an object: no value is
    written to ``os.environ``."""
    from feast import FeatureStore

    settings = settings or Settings.from_env()
    paths = paths or config.paths(settings=settings)
    profile = profile or settings.profile
    if secrets is None:
        secrets = {k: os.environ[k] for k in SECRETS if os.environ.get(k)}
    paths.feast_repo.mkdir(parents=True, exist_ok=True)
    yaml_file = settings.feast_config or INFRA / profile / "feature_store.yaml"
    values = {"VIGIL_HOME": str(paths.root), "VIGIL_FEAST_PROJECT": settings.feast_project, **secrets}
    return FeatureStore(repo_path=str(paths.feast_repo), config=repo_config(Path(yaml_file), values, paths.feast_repo))


def repo_config(yaml_file: Path, values: Mapping[str, str], repo_path: Path):
    """Feast's ``RepoConfig`` from a ``feature_store.yaml`` whose ``${VAR}`` are filled from
    ``values`` only; a placeholder without a value is an error naming it."""
    import yaml
    from feast.repo_config import RepoConfig

    text = Path(yaml_file).read_text()
    missing = sorted({m for m in _PLACEHOLDER.findall(text) if not values.get(m)})
    if missing:
        raise ValueError(f"{yaml_file} needs {', '.join(missing)}: set them in the environment "
                         f"(connection strings are never written in the file)")
    cfg = RepoConfig(**yaml.safe_load(_PLACEHOLDER.sub(lambda m: values[m.group(1)], text)))
    cfg.repo_path = Path(repo_path)
    return cfg


def apply(store, paths: config.Paths) -> list[str]:
    objs = definitions(paths)
    store.apply(objs)
    enable_wal(store)
    migrate_intraday(store)
    snapshots_changed(store)
    return [getattr(o, "name", str(o)) for o in objs]


def snapshot_marker(store) -> Path | None:
    """The file whose replacement tells the endpoint's workers that the local online store's
    snapshot views changed (:class:`SnapshotCache`); None for a networked store."""
    online = store.config.online_store
    if getattr(online, "type", "") != "sqlite":
        return None
    path = Path(online.path)
    return (path if path.is_absolute() else Path(store.repo_path) / path).with_name(path.name + ".snapshots")


def snapshots_changed(store) -> None:
    """After a write of the snapshot views: replace the marker (a new inode, atomically), so every
    worker's :class:`SnapshotCache` drops what it holds before its next read."""
    marker = snapshot_marker(store)
    if marker is None:
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(uuid.uuid4().hex)
    os.replace(tmp, marker)


class SnapshotCache:
    """The snapshot views' rows a worker has read from the local online store, kept in memory:
    they change once a day, when a materialization or an ingestion writes them, and were the
    largest part of a request's reads (two SQL queries a request; 0.1 s of a 10,000-row batch).

    Every writer in Vigil (:func:`write_online`, :func:`materialize`, :func:`apply`) replaces the
    marker file after it commits; a reader stats it (~2 us) before each read and drops everything
    when it changed, so a worker never serves a value older than the last write it could see.
    A write by a tool outside Vigil (``feast materialize``) is seen within ``max_age_s``, when the
    whole cache is dropped anyway. Bounded: at most ``max_entries`` rows in all (then dropped).
    A row read before a change but stored after it is not stored (the stamp it was read under is
    compared under the lock), so a reader racing a writer cannot put old values back."""

    def __init__(self, marker: Path, max_entries: int = 200_000, max_age_s: float = 60.0, clock=time.monotonic):
        self.marker, self.max_entries, self.max_age_s, self.clock = str(marker), max_entries, max_age_s, clock
        self._tables: dict[tuple, list] = {}  # (view, names) -> [{id: slot}, rows array, rows used]
        self._size, self._stamp, self._since, self._generation = 0, None, clock(), 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.dropped = 0

    def _seen(self):
        try:
            st = os.stat(self.marker)
            return st.st_ino, st.st_mtime_ns, st.st_size
        except FileNotFoundError:
            return None

    def stamp(self):
        """The marker's identity and the cache's generation now, observed before a read of the
        store (what :meth:`put` is given back); drops the cache when the marker changed or the
        cache is older than ``max_age_s``."""
        seen, now = self._seen(), self.clock()
        if seen != self._stamp or now - self._since > self.max_age_s:
            with self._lock:
                seen = self._seen()  # again, under the lock: a thread that looked before a writer
                # replaced the marker must not put the older identity back after another recorded the new
                if seen != self._stamp or now - self._since > self.max_age_s:
                    self._clear()
                    self._stamp, self._since = seen, now
        return seen, self._generation

    def _clear(self) -> None:  # under self._lock
        self._tables.clear()
        self._size = 0
        self.dropped += 1
        self._generation += 1  # a row read before this clear (by age or by marker) is not put after it

    def fill(self, key: tuple, ids: list[int], out: np.ndarray) -> list[int]:
        """Copy the cached rows of ``ids`` into ``out``; the positions of those it does not hold."""
        table = self._tables.get(key)
        if table is None:
            self.misses += len(ids)
            return list(range(len(ids)))
        # the slots first, then the rows array: put() grows the array (a new one, with a copy) before
        # it publishes the new slots, so every slot seen here is in the array read after it (read
        # before, an array replaced meanwhile would not hold a slot published since)
        slot_of = table[0]
        if len(ids) == 1:  # /score: no list, no numpy index
            slot = slot_of.get(ids[0])
            if slot is None:
                self.misses += 1
                return [0]
            out[0] = table[1][slot]
            self.hits += 1
            return []
        at = np.array([slot_of.get(i, -1) for i in ids], dtype=np.int64)
        hit = at >= 0
        out[hit] = table[1][at[hit]]
        missing = np.flatnonzero(~hit).tolist()
        self.hits += len(ids) - len(missing)
        self.misses += len(missing)
        return missing

    def put(self, key: tuple, ids: list[int], values: np.ndarray, stamp) -> None:
        """Keep ``values`` (one row per id) read under ``stamp``; nothing if the marker moved since."""
        with self._lock:
            if stamp != (self._stamp, self._generation) or not len(ids):
                return
            if self._size + len(ids) > self.max_entries:
                self._clear()
                if len(ids) > self.max_entries:
                    return
            table = self._tables.get(key)
            if table is None:
                table = self._tables[key] = [{}, np.empty((max(len(ids), 1024), values.shape[1])), 0]
            slot_of, rows, used = table
            new = [(i, k) for k, i in enumerate(ids) if i not in slot_of]
            if not new:
                return
            if used + len(new) > len(rows):
                grown = np.empty((max(2 * len(rows), used + len(new)), rows.shape[1]))
                grown[:used] = rows[:used]
                table[1] = rows = grown
            take = [k for _, k in new]
            rows[used:used + len(new)] = values[take]
            for j, (i, _) in enumerate(new):
                slot_of[i] = used + j
            table[2] = used + len(new)
            self._size += len(new)


def enable_wal(store) -> None:
    """Put Feast's SQLite online store in WAL mode (Feast has no option for it).

    In the default rollback-journal mode a materialization blocks the endpoint's reads for its
    whole write transaction; with WAL readers never wait for the writer. The mode is stored in
    the database file, so doing it once after apply is enough.
    """
    import sqlite3

    online = store.config.online_store
    if getattr(online, "type", "") != "sqlite":
        return
    path = Path(online.path)
    if not path.is_absolute():
        path = Path(store.repo_path) / path
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


class OnlineReader:
    """Online reads through the online store's own ``online_read`` (what Feast's SDK calls under
    ``get_online_features``), without the SDK's per-call registry and response assembly: about
    4x faster for one row. Returns values and the rows' event timestamps for freshness checks.
    """

    def __init__(self, store, cache: SnapshotCache | None = None):
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self._key, self._value = EntityKey, Value
        # a Value holding a double serializes as this tag byte (field double_val, 64-bit) and 8 bytes
        self._double_tag = (Value.DESCRIPTOR.fields_by_name["double_val"].number << 3) | 1
        self.config = store.config
        self.online_store = store._get_provider().online_store
        self.views = {v.name: store.get_feature_view(v.name) for v in ONLINE_VIEWS}
        self.join_keys = {v.name: v.key for v in ONLINE_VIEWS}
        self._memo: dict[bytes, float] = {}
        self._prefix: dict[str, bytes | None] = {}
        self._tables: dict[str, str] = {}
        self._local = threading.local()
        self.cache = cache  # the snapshot views' rows (read_matrix), local SQLite store only
        self.autocheckpoint = True  # False: this reader's connections leave the WAL to a Checkpointer

    def sqlite_conn(self):
        """This thread's own connection to Feast's SQLite file, for Vigil's own SQL. Threads must
        not share one: a worker's threads on Feast's single connection, while another worker held
        the write lock, gave 'database is locked', 'another row available' and 'no more rows
        available' (1,108 degraded answers in a 2 workers x 4 threads tuning run)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            import sqlite3

            conn = self._local.conn = sqlite3.connect(self.db_path(), timeout=5.0)
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL is set in the file (enable_wal)
            if not self.autocheckpoint:
                conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    def db_path(self) -> str:
        """The local online store's SQLite file."""
        return self.online_store._get_db_path(self.config)

    def checkpoint_in_background(self, every_s: float = 1.0) -> "Checkpointer":
        """From now on this reader's connections never checkpoint the WAL: a :class:`Checkpointer`
        thread, started here, does it (stop it with its ``stop()``)."""
        self.autocheckpoint = False
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.execute("PRAGMA wal_autocheckpoint=0")
        return Checkpointer(self.db_path(), every_s).start()

    def entity_keys(self, view: str, ids: list[int]) -> list[bytes]:
        """Feast's serialized entity keys of ``ids`` (the online tables' primary key). An int64
        key is a fixed prefix (the join key's name) and the value's 8 little-endian bytes: built
        so, at ~0.3 us a key instead of ~13 us through protobuf, once the prefix has been checked
        against Feast's own ``serialize_entity_key`` on a few ids (else Feast's, unchanged)."""
        k = self.join_keys[view]
        if k not in self._prefix:
            self._prefix[k] = self._checked_prefix(k)
        prefix = self._prefix[k]
        if prefix is None:
            return [self._serialize(k, int(i)) for i in ids]
        pack = _INT64.pack
        return [prefix + pack(i) for i in ids]

    def _serialize(self, join_key: str, i: int) -> bytes:
        from feast.infra.key_encoding_utils import serialize_entity_key

        return serialize_entity_key(self._key(join_keys=[join_key], entity_values=[self._value(int64_val=i)]),
                                    entity_key_serialization_version=self.config.entity_key_serialization_version)

    def _checked_prefix(self, join_key: str) -> bytes | None:
        prefix = self._serialize(join_key, 0)[:-8]
        probes = (0, 1, 255, 2**31, 2**53 + 1, MAX_ID)
        return prefix if all(self._serialize(join_key, i) == prefix + _INT64.pack(i) for i in probes) else None

    def sqlite_table(self, view: str) -> str:
        """The quoted name of Feast's SQLite table of ``view`` (named once: a request asks twice)."""
        table = self._tables.get(view)
        if table is None:
            from feast.infra.online_stores.sqlite import _quote_id, _table_id

            table = self._tables[view] = _quote_id(_table_id(self.config.project, self.views[view],
                                                             self.config.registry.enable_online_feature_view_versioning))
        return table

    def _sqlite_rows(self, view: str, keys: list[bytes]) -> list[tuple]:
        """``(entity_key, feature_name, value)`` of ``keys`` from Feast's SQLite table of ``view``,
        5,000 keys a query (every feature: filtering by name in SQL made it 1.7x slower)."""
        table, conn = self.sqlite_table(view), self.sqlite_conn()
        rows = []
        for start in range(0, len(keys), 5000):
            chunk = keys[start:start + 5000]
            rows += conn.execute(f"SELECT entity_key, feature_name, value FROM {table} "
                                 f"WHERE entity_key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        return rows

    def read_matrix(self, view: str, ids, names: tuple[str, ...]) -> np.ndarray:
        """``names`` of each id as a float matrix (NaN where the entity or the value is missing),
        for the scorer's numeric snapshot views. Each distinct id is read once. Embedded profile:
        one SQL query per 5,000 ids on Feast's SQLite table, float64 values decoded in bulk (a
        Feast ``Value`` holding a double is one tag byte and 8 little-endian bytes); anything else
        goes through ``Value.ParseFromString``, memoised. Other stores: Feast's ``online_read``."""
        ids = [int(i) for i in ids]
        unique = list(dict.fromkeys(ids))
        out = np.full((len(unique), len(names)), np.nan)
        cache = self.cache
        if cache is None:
            self._matrix(view, unique, names, out)
        else:  # the cached rows, the others read and kept (missing entities too: NaN rows)
            stamp, key = cache.stamp(), (view, names)
            missing = cache.fill(key, unique, out)
            if missing:
                sub, got = [unique[k] for k in missing], np.full((len(missing), len(names)), np.nan)
                self._matrix(view, sub, names, got)
                out[missing] = got
                cache.put(key, sub, got, stamp)
        if len(unique) == len(ids):
            return out
        at = {i: k for k, i in enumerate(unique)}
        return out[[at[i] for i in ids]]

    def _matrix(self, view: str, unique: list[int], names: tuple[str, ...], out: np.ndarray) -> None:
        if getattr(self.config.online_store, "type", "") == "sqlite":
            self._sqlite_matrix(view, unique, names, out)
            return
        col = {n: j for j, n in enumerate(names)}
        for i, row in enumerate(self.read(view, unique)):
            for name, v in (row or {}).items():
                if name in col and v is not None:
                    out[i, col[name]] = v

    def _sqlite_matrix(self, view: str, unique: list[int], names: tuple[str, ...], out: np.ndarray) -> None:
        keys = self.entity_keys(view, unique)
        rows = self._sqlite_rows(view, keys)
        if not rows:
            return
        if len(rows) < 256:  # one request: plain Python beats numpy's per-call overhead
            row_of, col, tag = dict(zip(keys, range(len(keys)))), {n: j for j, n in enumerate(names)}, self._double_tag
            for key, feature, b in rows:
                j = col.get(feature)
                if j is not None:
                    out[row_of[key], j] = _DOUBLE.unpack_from(b, 1)[0] if len(b) == 9 and b[0] == tag else self._decode(b)
            return
        import pandas as pd

        ks, fs, blobs = zip(*rows)
        ri, ci = pd.Index(keys).get_indexer(ks), pd.Index(names).get_indexer(fs)
        if (ci < 0).any():  # features the caller did not ask for
            keep = ci >= 0
            ri, ci, blobs = ri[keep], ci[keep], [b for b, k in zip(blobs, keep.tolist()) if k]
        lens = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
        buf = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        starts = np.cumsum(lens) - lens
        double = lens == 9
        double[double] = buf[starts[double]] == self._double_tag
        if double.any():
            at = starts[double][:, None] + np.arange(1, 9)
            out[ri[double], ci[double]] = np.ascontiguousarray(buf[at]).view("<f8")[:, 0]
        other = np.flatnonzero(~double)  # int64 snapshot times, nulls: a few distinct blobs, memoised
        if len(other):
            out[ri[other], ci[other]] = [self._decode(blobs[i]) for i in other.tolist()]

    def _decode(self, blob: bytes) -> float:
        """A serialized Feast ``Value`` as a float (NaN unless it holds a number). Memoised: the
        non-double values are counts and snapshot times, a few hundred distinct blobs a day."""
        v = self._memo.get(blob)
        if v is None:
            if len(self._memo) > 100_000:
                self._memo.clear()
            v = self._memo[blob] = self._parse(blob)
        return v

    def _parse(self, blob: bytes) -> float:
        pv = self._value()
        pv.ParseFromString(blob)
        which = pv.WhichOneof("val")
        v = getattr(pv, which) if which else None
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan

    def read(self, view: str, ids: list[int]) -> list[dict | None]:
        """One dict of feature values per id (None when the entity has no online row)."""
        k = self.join_keys[view]
        keys = [self._key(join_keys=[k], entity_values=[self._value(int64_val=int(i))]) for i in ids]
        out = []
        for _ts, vals in self.online_store.online_read(self.config, self.views[view], keys):
            if not vals:
                out.append(None)
                continue
            out.append({name: _python_value(pv) for name, pv in vals.items()})
        return out


def _python_value(pv):
    """A Feast ``Value`` as plain Python: None when unset, a list for a list value."""
    which = pv.WhichOneof("val")
    if which is None:
        return None
    v = getattr(pv, which)
    return list(v.val) if which.endswith("_list_val") else v


# a card's list is locked by one worker's read-add-write at a time (Redis: a key per card)
INTRADAY_LOCK_TTL_MS = 2_000  # a lock whose holder died expires after this
INTRADAY_LOCK_WAIT_S = 1.0  # past this the request is scored degraded, not held up
INTRADAY_SQLITE_WAIT_S = 5.0  # SQLite: another process's write transaction (a materialization's chunk, a batch)
# wait=False (a /score on the event loop): the other worker's transaction (a /score's takes ~0.1 ms)
# is given this long, in naps of INTRADAY_BRIEF_NAP_S, before IntradayBusy sends the request to a
# thread: with two workers at 1,000 req/s, 22 % of requests found the lists held, and the hop to a
# thread (the request's work done again there) cost more CPU than the wait (benchmarks/README.md)
INTRADAY_BRIEF_WAIT_S, INTRADAY_BRIEF_NAP_S = 0.0004, 0.00005
INTRADAY_NAP_MAX_S = 0.001  # a blocking wait's naps grow from 0.5 ms to this (a batch's gap for it: WaitBoard)
INTRADAY_YIELD_MAX_S = 0.005  # a batch leaves the lists to waiters this long at most between two chunks
ONLINE_WRITE_CHUNK = 100  # entities per online-store write call (write_online)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class IntradayLocked(TimeoutError):
    """The cards' lists stayed locked by another writer past ``INTRADAY_SQLITE_WAIT_S`` (SQLite:
    the whole store's write lock)."""


class CardsLocked(IntradayLocked):
    """Redis: these cards' lock keys stayed held by another worker past ``INTRADAY_LOCK_WAIT_S``
    (contention on a few cards, or a holder that died before its keys expire): the store itself
    is answering, other cards are not affected."""


class IntradayBusy(RuntimeError):
    """``exclusive(wait=False)``: another thread or worker holds the lists now. Raised before
    anything is read or written, so the caller can run the same step again where waiting is
    harmless (the endpoint's event loop must not wait; one of its threads may)."""


class WaitBoard:
    """Who waits for the local online store's write lock, seen by every process that writes it:
    a slot per waiting thread in a small shared file (``<db>-waiting``), holding the monotonic time
    of its last try. SQLite hands its lock to nobody in particular: a batch took it again
    microseconds after each chunk, and a ``/score`` napping between tries kept missing those gaps
    (p99 309-386 ms during back-to-back batches, benchmarks/README.md). A batch now leaves the lock
    between two chunks while someone waits (:meth:`IntradayStore.yield_to_waiters`). A slot not
    refreshed for ``STALE_S`` no longer counts (its waiter got the lock, gave up, or died); two
    waiters hashed to one slot share it (the one still waiting writes it again at its next try)."""

    SLOTS, STALE_S = 64, 0.01

    def __init__(self, path: str | Path):
        import mmap

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < self.SLOTS * 8:
                os.ftruncate(fd, self.SLOTS * 8)
            self._mm = mmap.mmap(fd, self.SLOTS * 8)
        finally:
            os.close(fd)
        self._times = np.frombuffer(self._mm, dtype=np.float64)  # CLOCK_MONOTONIC: one clock for every process

    def slot(self) -> int:
        return hash((os.getpid(), threading.get_ident())) % self.SLOTS

    def mark(self, slot: int) -> None:
        self._times[slot] = time.monotonic()

    def clear(self, slot: int) -> None:
        self._times[slot] = 0.0

    def someone_waiting(self) -> bool:
        return bool((self._times > time.monotonic() - self.STALE_S).any())

    def give_way(self, max_s: float = INTRADAY_YIELD_MAX_S) -> None:
        """Called holding no lock: return once nobody waits, or after ``max_s``."""
        if not self.someone_waiting():
            return
        end = time.monotonic() + max_s
        while time.monotonic() < end:
            time.sleep(0.0002)
            if not self.someone_waiting():
                return


def _begin_immediate(conn, wait_s: float, brief: bool = False, board: WaitBoard | None = None) -> None:
    """``BEGIN IMMEDIATE``, retried every 0.5-1 ms (INTRADAY_NAP_MAX_S) for up to ``wait_s`` while
    another connection writes (past it :class:`IntradayLocked`). Not SQLite's own busy handler: its
    sleeps grow to 100 ms, so under a steady writer (a materialization's chunks) a waiter kept
    missing the gaps (p99 0.75 s at 200 req/s during online writes, benchmarks/README.md).
    ``brief``: retried every INTRADAY_BRIEF_NAP_S (the event loop's wait, INTRADAY_BRIEF_WAIT_S),
    then :class:`IntradayBusy`. ``board``: each try stamps this thread's slot, so a batch between
    two chunks leaves the lock to it (:class:`WaitBoard`)."""
    import sqlite3

    deadline, pause = time.monotonic() + wait_s, INTRADAY_BRIEF_NAP_S if brief else 0.0005
    slot = None
    conn.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    if brief:
                        raise IntradayBusy(str(exc)) from exc
                    raise IntradayLocked(f"intraday lists locked by another writer for over {wait_s} s") from exc
            if board is not None:  # a batch between two chunks leaves the lock while this is fresh
                slot = board.slot() if slot is None else slot
                board.mark(slot)
            if brief:
                time.sleep(pause)
            else:
                time.sleep(pause * (1 + random.random()))
                pause = min(pause * 2, INTRADAY_NAP_MAX_S)
    finally:
        if slot is not None:
            board.clear(slot)
        conn.execute("PRAGMA busy_timeout=5000")


class Checkpointer:
    """The local online store's WAL checkpoints, off the request path.

    SQLite checkpoints the WAL in the commit that takes it past 1,000 pages: every ~1,000th
    ``/score`` then copied ~4 MB into the database file and synced both, 8-11 ms on the endpoint's
    event loop, holding up every request queued behind it (in process, 4,000 requests: p99.9 2.7 ms
    and max 10.8; with this thread, 1.2 and 3.3; benchmarks/README.md). The endpoint's
    connections leave them to this thread (``OnlineReader.checkpoint_in_background``), which runs a PASSIVE
    checkpoint every ``every_s``: it never waits for a reader or a writer, nor holds one up, and
    SQLite releases the GIL while it copies and syncs. Two workers' checkpointers take turns
    (SQLite runs one checkpoint at a time; the other is told busy and tries at its next turn)."""

    def __init__(self, db_path: str | Path, every_s: float = 1.0):
        self.db_path, self.every_s = str(db_path), every_s
        self.runs, self.frames, self.failed = 0, 0, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vigil-wal-checkpoint", daemon=True)

    def start(self) -> "Checkpointer":
        self._thread.start()
        return self

    def once(self, conn) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, frames in the WAL, frames checkpointed), as SQLite says."""
        busy, log_frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.runs, self.frames = self.runs + 1, self.frames + max(done, 0)
        return busy, log_frames, done

    def _loop(self) -> None:
        import sqlite3

        conn = None
        while not self._stop.wait(self.every_s):
            try:
                if conn is None:
                    conn = sqlite3.connect(self.db_path, timeout=1.0)
                    conn.execute("PRAGMA synchronous=NORMAL")
                self.once(conn)
                self.failed = ""
            except Exception as exc:  # a locked or vanished file: said once, tried again next turn
                if str(exc) != self.failed:
                    self.failed = str(exc)
                    log.warning("online store WAL checkpoint failed (%s); trying again every %g s", exc, self.every_s)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class IntradayStore:
    """Each card's list of today's transactions in the online store (view ``customer_intraday``):
    read and written through the online store's own batch calls, as :class:`OnlineReader` reads.
    A read-add-write runs inside :meth:`exclusive`, so workers (processes, replicas) and their
    threads never lose each other's additions."""

    def __init__(self, store, reader: OnlineReader | None = None):
        self.reader = reader or OnlineReader(store)
        self.config = self.reader.config
        self.view = self.reader.views[INTRADAY_VIEW.name]
        if getattr(self.config.online_store, "type", "") == "sqlite":
            # WAL with synchronous=NORMAL: a commit no longer waits for fsync (1.17 -> 0.37 ms p50
            # per scored transaction, benchmarks/README.md); safe against a crash of the process,
            # a power loss may drop the last additions, which the next ingestion merges back
            self.reader.online_store._get_conn(self.config).execute("PRAGMA synchronous=NORMAL")  # Feast's own writes
        self.board = WaitBoard(self.reader.db_path() + "-waiting") if self._sqlite() else None

    def yield_to_waiters(self) -> None:
        """Between two chunks of a batch, the lists held by nobody: while another thread or worker
        waits for them (:class:`WaitBoard`), up to INTRADAY_YIELD_MAX_S. Microseconds otherwise."""
        if self.board is not None:
            self.board.give_way()

    @contextlib.contextmanager
    def exclusive(self, ids: list[int], wait: bool = True):
        """The cards' lists are read, added to and written by this block alone, across processes:
        SQLite, one write transaction (``BEGIN IMMEDIATE``; the write inside commits it); Redis, a
        lock key per card (``SET NX PX``, all or none, released only by its holder). Past
        ``INTRADAY_SQLITE_WAIT_S``: :class:`IntradayLocked`; past ``INTRADAY_LOCK_WAIT_S``: :class:`CardsLocked`.
        ``wait=False``: :class:`IntradayBusy` if another thread or worker holds them (SQLite: after
        INTRADAY_BRIEF_WAIT_S; Redis: at once)."""
        kind = getattr(self.config.online_store, "type", "")
        if kind == "sqlite":  # the connection write() uses
            conn = self.reader.sqlite_conn() if self._sqlite() else self.reader.online_store._get_conn(self.config)
            _begin_immediate(conn, INTRADAY_SQLITE_WAIT_S if wait else INTRADAY_BRIEF_WAIT_S, brief=not wait,
                             board=self.board)
            try:
                yield
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
            if conn.in_transaction:  # nothing written: end the transaction
                conn.commit()
        elif kind == "redis":
            with self._redis_locks(ids, wait):
                yield
        else:
            yield

    @contextlib.contextmanager
    def _redis_locks(self, ids: list[int], wait: bool = True):
        client = self.reader.online_store._get_client(self.config.online_store)
        keys = [f"{self.config.project}:vigil_intraday_lock:{int(i)}" for i in sorted(set(ids))]
        token, deadline, pause = uuid.uuid4().hex, time.monotonic() + INTRADAY_LOCK_WAIT_S, 0.0005

        def release(held):
            if held:
                pipe = client.pipeline(transaction=False)
                for k in held:
                    pipe.eval(_RELEASE, 1, k, token)
                pipe.execute()

        while True:  # all or none: holding some while waiting for others could deadlock two workers
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.set(k, token, nx=True, px=INTRADAY_LOCK_TTL_MS)
            got = pipe.execute()
            held = [k for k, ok in zip(keys, got) if ok]
            if len(held) == len(keys):
                break
            release(held)
            if not wait:
                raise IntradayBusy(f"intraday lists of {len(keys) - len(held)} card(s) locked by another worker")
            if time.monotonic() > deadline:
                raise CardsLocked(f"intraday lists of {len(keys) - len(held)} card(s) locked by another worker "
                                     f"for over {INTRADAY_LOCK_WAIT_S} s")
            time.sleep(pause * (1 + random.random()))
            pause = min(pause * 2, 0.02)
        try:
            yield
        finally:
            release(keys)

    def read(self, ids: list[int]) -> list[dict | None]:
        """Each card's list, or None when it has none (Redis answers a row of Nones for a key that
        holds other views' features only). SQLite: one query on Feast's table (Feast's own
        ``online_read`` was 0.27 s of a 10,000-row batch's 1.5 s)."""
        if self._sqlite():
            return self._sqlite_read(ids)
        return [_list_state(row) for row in self.reader.read(INTRADAY_VIEW.name, ids)]

    @property
    def shares_connection(self) -> bool:
        """SQLite through Feast's own single connection (the vector or OpenAI-store options): the
        threads of a process must then take turns, as :meth:`exclusive` cannot tell them apart."""
        return getattr(self.config.online_store, "type", "") == "sqlite" and not self._sqlite()

    def _sqlite(self) -> bool:
        online = self.config.online_store
        return (getattr(online, "type", "") == "sqlite" and not getattr(online, "vector_enabled", False)
                and not getattr(online, "enable_openai_compatible_store", False))

    def _sqlite_read(self, ids: list[int]) -> list[dict | None]:
        keys = self.reader.entity_keys(INTRADAY_VIEW.name, ids)
        got: dict[bytes, dict] = {}
        value = self.reader._value()
        for key, feature, blob in self.reader._sqlite_rows(INTRADAY_VIEW.name, keys):
            if feature == INTRADAY_LIST:
                value.ParseFromString(blob)
                got[key] = unpack_intraday(value.bytes_val)
        return [got.get(key) for key in keys]

    def write(self, states: dict[int, dict]) -> None:
        """Store ``{customer_id: list state}``, one packed value a card. The event time is the wall
        clock, so Redis (which drops a write not newer than the stored one) takes every write in
        order. SQLite: the row Feast's ``online_write_batch`` writes (same columns, value and
        timestamps), in one ``executemany`` instead of one statement per card."""
        if not states:
            return
        V, now = self.reader._value, datetime.now(timezone.utc)
        if self._sqlite():
            naive = now.replace(tzinfo=None)
            keys = self.reader.entity_keys(INTRADAY_VIEW.name, list(states))
            rows = [(key, INTRADAY_LIST, V(bytes_val=pack_intraday(st)).SerializeToString(), None, naive, None)
                    for key, st in zip(keys, states.values())]
            table, conn = self.reader.sqlite_table(INTRADAY_VIEW.name), self.reader.sqlite_conn()
            with conn:
                conn.executemany(f"INSERT INTO {table} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
                                 "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
                                 "value = excluded.value, value_text = excluded.value_text, "
                                 "event_ts = excluded.event_ts, created_ts = excluded.created_ts", rows)
            return
        rows = []
        for cid, st in states.items():
            key = self.reader._key(join_keys=[INTRADAY_VIEW.key], entity_values=[V(int64_val=int(cid))])
            rows.append((key, {INTRADAY_LIST: V(bytes_val=pack_intraday(st))}, now, None))
        self.reader.online_store.online_write_batch(self.config, self.view, rows, None)


def _list_state(row: dict | None) -> dict | None:
    """A card's stored intraday row as a list state, None when it has none."""
    blob = None if row is None else row.get(INTRADAY_LIST)
    return None if not blob else unpack_intraday(blob)


# the view's features before the lists were packed into one value (Vigil before 2026-11-30)
_OLD_INTRADAY = ("intraday_day", "intraday_tx_ids", "intraday_epochs", "intraday_amounts", "intraday_last_epoch")


def _old_state(values: dict) -> dict | None:
    """A card's list from its five values of the earlier layout ({feature: Feast Value bytes})."""
    from feast.protos.feast.types.Value_pb2 import Value

    got = {}
    for name, blob in values.items():
        v = Value()
        v.ParseFromString(blob)
        got[name] = _python_value(v)
    if got.get("intraday_day") is None:
        return None
    return {"intraday_day": int(got["intraday_day"]), **{k: got.get(k) or [] for k in INTRADAY_STATE[1:]}}


def migrate_intraday(store) -> int:
    """Move every card's list from the earlier layout (five values a card) to the packed one, in
    place, and delete the earlier values: the lists of the day an upgrade happens are kept. Safe
    to re-run (nothing left to move: 0). Returns the cards moved. An endpoint of the earlier
    version still running writes the earlier layout until it is restarted; a run within a day of
    the first moves those too. Redis: after that day, no scan (a key records when it started)."""
    reader = OnlineReader(store)
    moved: dict[bytes, dict] = {}
    kind = getattr(store.config.online_store, "type", "")
    if kind == "sqlite":
        table, conn = reader.sqlite_table(INTRADAY_VIEW.name), reader.sqlite_conn()
        _begin_immediate(conn, INTRADAY_SQLITE_WAIT_S)
        try:
            old: dict[bytes, dict] = {}
            marks = ",".join("?" * len(_OLD_INTRADAY))
            for key, feature, blob in conn.execute(f"SELECT entity_key, feature_name, value FROM {table} "
                                                  f"WHERE feature_name IN ({marks})", _OLD_INTRADAY):
                old.setdefault(key, {})[feature] = blob
            if old:
                present = {k for (k,) in conn.execute(f"SELECT entity_key FROM {table} WHERE feature_name = ?", (INTRADAY_LIST,))}
                naive = datetime.now(timezone.utc).replace(tzinfo=None)
                rows = []
                for key, values in old.items():
                    st = _old_state(values)
                    if st is not None and key not in present:  # a packed list already written wins
                        rows.append((key, INTRADAY_LIST, reader._value(bytes_val=pack_intraday(st)).SerializeToString(),
                                     None, naive, None))
                        moved[key] = st
                conn.executemany(f"INSERT INTO {table} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", rows)
                conn.execute(f"DELETE FROM {table} WHERE feature_name IN ({marks})", _OLD_INTRADAY)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    elif kind == "redis":
        from feast.infra.online_stores.helpers import _mmh3, _redis_key_prefix, compute_versioned_name

        client = reader.online_store._get_client(store.config.online_store)
        # lists matter on their own day only: scanning the keyspace at every apply for longer than
        # a day after the first move would cost a full SCAN a run for nothing
        since = f"{store.config.project}:vigil_intraday_packed_since"
        client.set(since, int(time.time()), nx=True)  # not SET NX GET: Redis 6 has no NX with GET
        if time.time() - int(client.get(since) or time.time()) > 86_400:
            return 0
        name = compute_versioned_name(reader.views[INTRADAY_VIEW.name], store.config.registry.enable_online_feature_view_versioning)
        fields = [_mmh3(f"{name}:{f}") for f in _OLD_INTRADAY]
        new_field = _mmh3(f"{name}:{INTRADAY_LIST}")
        keys = list(client.scan_iter(b"".join([_redis_key_prefix([INTRADAY_VIEW.key]), b"*",
                                               store.config.project.encode("utf8")])))
        for lo in range(0, len(keys), 500):
            chunk = keys[lo:lo + 500]
            with client.pipeline(transaction=False) as pipe:
                for k in chunk:
                    pipe.hmget(k, fields + [new_field])
                got = pipe.execute()
            with client.pipeline(transaction=False) as pipe:
                for k, vals in zip(chunk, got):
                    if all(v is None for v in vals[:-1]):
                        continue
                    st = _old_state({f: v for f, v in zip(_OLD_INTRADAY, vals) if v is not None})
                    if st is not None and vals[-1] is None:  # HSETNX: a packed list an endpoint wrote meanwhile wins
                        pipe.hsetnx(k, new_field, reader._value(bytes_val=pack_intraday(st)).SerializeToString())
                        moved[k] = st
                    pipe.hdel(k, *fields)
                pipe.execute()
    if moved:
        log.info("intraday lists of %d cards moved to the packed layout", len(moved))
    return len(moved)


def merge_intraday(stored: dict | None, day_list: dict) -> dict | None:
    """The online list after loading a day's end-of-day list from the lake: each of its
    transactions added through :func:`vigil.features.intraday_add`, the endpoint's own rule (a
    newer day online is kept, the same day becomes the union, an older one is replaced). None
    when that changes nothing."""
    from vigil.features import intraday_add

    state = stored
    for i, e, a in zip(*(day_list[k] for k in INTRADAY_STATE[1:])):
        state = intraday_add(state, int(i), int(e), float(a))
    return None if state is stored else state


SNAPSHOT_FOLDERS = {v.name: (v.folder, v.key, v.asof) for v in FEATURE_VIEWS}


def write_online(store, paths: config.Paths, days, reader: "OnlineReader | None" = None) -> dict[str, int]:
    """Load the snapshots of one day or a range of days (partitions of the offline source) into
    the online store; for a range, only each entity's newest snapshot in it is written (the online
    store serves nothing older), so a 6-month backfill is one write, not 183.

    Safe to re-run in both profiles, which neither store is by itself: SQLite overwrites whatever
    is there (re-running an old day would regress the online store to older values), Redis ignores
    a write whose timestamp is not newer than the stored one (re-running a fixed day would leave the
    old values online). The rule here, per entity: the newest snapshot wins, and a snapshot with the
    same time as the stored one replaces it. Returns rows written and rows skipped (older than
    what is online).

    Written ONLINE_WRITE_CHUNK entities a call: SQLite has one writer at a time, and the endpoint's
    intraday step needs it for every ``/score``. One call for the day's 4,000 terminals held it for
    most of 0.62 s; Feast's conversion of the next chunk now leaves a gap between two. ``/score`` at
    200 req/s beside a loop of rewrites (benchmarks/README.md): p90 / p99 250-271 / 353-358 ms in one
    call, 21-22 / 31-33 in chunks of 250, 8.3 / 26 in chunks of 100; the rewrite as fast (1.4 s).
    A reader meanwhile may see some entities' new rows beside others' old ones, each row whole.
    """
    from vigil import lake

    days = list(days) if isinstance(days, (list, tuple)) else [days]
    reader = reader or OnlineReader(store)
    out = {"written": 0, "skipped_older": 0}
    for view, (folder, key, asof_col) in SNAPSHOT_FOLDERS.items():
        snap = lake.read_days(paths.features / folder, days)
        if snap.empty:
            continue
        snap = snap.sort_values(asof_col, kind="stable").drop_duplicates(key, keep="last").reset_index(drop=True)
        ids = snap[key].tolist()
        stored = [(r or {}).get(asof_col) for r in reader.read(view, ids)]
        stored = np.array([-1 if v is None else int(v) for v in stored], dtype=np.int64)
        new = snap[asof_col].to_numpy(dtype=np.int64)
        keep = new >= stored
        if getattr(store.config.online_store, "type", "") == "redis" and (new == stored).any():
            _forget_redis_timestamps(store, reader, view, key, [i for i, same in zip(ids, new == stored) if same])
        if keep.any():
            rows = snap[keep]
            for lo in range(0, len(rows), ONLINE_WRITE_CHUNK):  # SQLite's write lock between chunks
                store.write_to_online_store(view, rows.iloc[lo:lo + ONLINE_WRITE_CHUNK], allow_registry_cache=True)
            snapshots_changed(store)
        out["written"] += int(keep.sum())
        out["skipped_older"] += int((~keep).sum())
    lists = lake.read_days(paths.features / INTRADAY_VIEW.folder, days)
    if not lists.empty:  # the newest day's lists, merged with what the endpoint added online
        lists = lists.sort_values("intraday_day", kind="stable").drop_duplicates("customer_id", keep="last")
        ids, records = lists["customer_id"].tolist(), lists[list(INTRADAY_STATE)].to_dict("records")
        intraday = IntradayStore(store, reader)
        step = ONLINE_WRITE_CHUNK
        for lo in range(0, len(ids), step):  # the endpoint adds to these lists meanwhile: lock a chunk at a time
            chunk, merged = ids[lo:lo + step], {}
            with intraday.exclusive(chunk):
                for cid, stored, new in zip(chunk, intraday.read(chunk), records[lo:lo + step]):
                    m = merge_intraday(stored, new)
                    if m is not None:
                        merged[cid] = m
                intraday.write(merged)
            out["written"] += len(merged)
            out["skipped_older"] += len(chunk) - len(merged)
    return out


def _forget_redis_timestamps(store, reader: "OnlineReader", view: str, key: str, ids: list[int]) -> None:
    """Redis keeps a per-view timestamp per entity and drops writes not newer than it; removing
    that field for the entities being re-written lets a re-run replace their values."""
    from feast.infra.online_stores.helpers import _redis_key, compute_versioned_name

    cfg = store.config
    client = reader.online_store._get_client(cfg.online_store)
    ts_field = f"_ts:{compute_versioned_name(reader.views[view], cfg.registry.enable_online_feature_view_versioning)}"
    with client.pipeline(transaction=False) as pipe:
        for i in ids:
            ek = reader._key(join_keys=[key], entity_values=[reader._value(int64_val=int(i))])
            pipe.hdel(_redis_key(cfg.project, ek, entity_key_serialization_version=cfg.entity_key_serialization_version), ts_field)
        pipe.execute()


def materialize(store, start: datetime, end: datetime) -> None:
    """Load snapshots with ``start <= event_timestamp < end`` into the online store."""
    try:
        store.materialize(start_date=start.astimezone(timezone.utc), end_date=end.astimezone(timezone.utc),
                          feature_views=[v.name for v in FEATURE_VIEWS])
    finally:  # a materialization that failed part-way may have written some views
        snapshots_changed(store)
