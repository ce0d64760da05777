"""Feast object definitions: the one place where Vigil's features are declared for Feast.

Training reads them with point-in-time retrieval from the offline store; the endpoint reads the
same views from the online store. The feature service is versioned: a model records the service
name it was trained with, and serving asks for exactly that service.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from vigil import config
from vigil.features import FEATURE_TTL, FEATURE_VIEWS

FEATURE_SERVICE = "fraud_features_v2"  # v2: reported-fraud terminal risk, customer amount spread
CUSTOMER_VIEW, TERMINAL_VIEW = (v.name for v in FEATURE_VIEWS)
INFRA = Path(__file__).resolve().parents[1] / "infra" / "feast"


def definitions(paths: config.Paths) -> list:
    """Entities, offline sources and feature views from :data:`vigil.features.FEATURE_VIEWS`, and
    the versioned feature service over all of them."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.data_format import ParquetFormat
    from feast.types import Float64, Int64

    objs, views = [], []
    for spec in FEATURE_VIEWS:
        entity = Entity(name=spec.entity, join_keys=[spec.key], value_type=ValueType.INT64)
        source = FileSource(name=f"{spec.folder}_snapshots", path=str(paths.features / spec.folder),
                            file_format=ParquetFormat(), timestamp_field="event_timestamp")
        view = FeatureView(
            name=spec.name,
            entities=[entity],
            ttl=FEATURE_TTL,
            schema=[Field(name=f, dtype=Float64) for f in spec.features] + [Field(name=spec.asof, dtype=Int64)],
            source=source,
            online=True,
        )
        objs += [entity, source, view]
        views.append(view)
    service = FeatureService(name=FEATURE_SERVICE, features=views, tags={"model_features": "v2"})
    return objs + [service]


def open_store(paths: config.Paths | None = None, profile: str | None = None):
    """A FeatureStore for the profile's ``infra/feast/<profile>/feature_store.yaml``."""
    from feast import FeatureStore

    paths = paths or config.paths()
    profile = profile or config.profile()
    os.environ["VIGIL_HOME"] = str(paths.root)
    os.environ.setdefault("VIGIL_FEAST_PROJECT", "vigil")
    paths.feast_repo.mkdir(parents=True, exist_ok=True)
    yaml = Path(os.environ.get("VIGIL_FEAST_CONFIG", INFRA / profile / "feature_store.yaml"))
    return FeatureStore(repo_path=str(paths.feast_repo), fs_yaml_file=yaml)


def apply(store, paths: config.Paths) -> list[str]:
    objs = definitions(paths)
    store.apply(objs)
    enable_wal(store)
    return [getattr(o, "name", str(o)) for o in objs]


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

    def __init__(self, store):
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self._key, self._value = EntityKey, Value
        self.config = store.config
        self.online_store = store._get_provider().online_store
        self.views = {v.name: store.get_feature_view(v.name) for v in FEATURE_VIEWS}
        self.join_keys = {v.name: v.key for v in FEATURE_VIEWS}

    def read(self, view: str, ids: list[int]) -> list[dict | None]:
        """One dict of feature values per id (None when the entity has no online row)."""
        k = self.join_keys[view]
        keys = [self._key(join_keys=[k], entity_values=[self._value(int64_val=int(i))]) for i in ids]
        out = []
        for _ts, vals in self.online_store.online_read(self.config, self.views[view], keys):
            if not vals:
                out.append(None)
                continue
            row = {}
            for name, pv in vals.items():
                which = pv.WhichOneof("val")
                row[name] = getattr(pv, which) if which else None
            out.append(row)
        return out


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
            store.write_to_online_store(view, snap[keep], allow_registry_cache=True)
        out["written"] += int(keep.sum())
        out["skipped_older"] += int((~keep).sum())
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
    store.materialize(start_date=start.astimezone(timezone.utc), end_date=end.astimezone(timezone.utc),
                      feature_views=[v.name for v in FEATURE_VIEWS])
