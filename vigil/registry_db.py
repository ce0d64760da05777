"""The registry's records: every model version with its stage, metrics and lineage, and every
stage transition with who, when and why. SQLite under ``$VIGIL_HOME/registry`` in the embedded
profile; PostgreSQL (``VIGIL_REGISTRY_DSN``, a schema of its own) in production.

The model files stay in the BentoML model store (:mod:`vigil.registry`); the endpoint follows the
``production.json`` pointer that a promotion writes. These records answer "which model serves,
since when, how good, and why" without code.
"""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

POINTER = "production.json"  # the file a promotion to production writes atomically; the endpoint follows it
ROLLOUT_STATE = "rollout.json"  # vigil.rollout's state, which the endpoint follows the same way



def shared_file(paths, name: str):
    """A file every endpoint follows (the promotion pointer, the rollout's state): in the shared
    model store when there is one (every host sees it), else under ``registry/``."""
    return (paths.shared_models if paths.shared_models is not None else paths.registry) / name


def pointer_path(paths, stage: str = "production"):
    """The file naming the version a stage serves."""
    return shared_file(paths, POINTER if stage == "production" else f"{stage}.json")


def read_pointer(paths, stage: str = "production") -> str | None:
    try:
        return pointer_path(paths, stage).read_text()
    except FileNotFoundError:
        return None


STAGES = ("candidate", "shadow", "canary", "production", "archived", "rejected")
# which stage may follow which: a rejected candidate stays rejected; anything else can be retired
ALLOWED = {
    None: {"candidate", "rejected"},
    "candidate": {"shadow", "canary", "production", "archived", "rejected"},
    "shadow": {"canary", "production", "archived", "rejected"},
    "canary": {"canary", "production", "archived", "rejected"},  # canary -> canary: the share grows
    "production": {"archived"},
    "archived": {"production", "candidate"},
    "rejected": set(),
}
MAX_TEXT = 2000  # a reason or note longer than this is cut: the records stay bounded
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_DDL = [
    """CREATE TABLE IF NOT EXISTS versions (
        tag TEXT PRIMARY KEY, created_at TEXT NOT NULL, stage TEXT NOT NULL, metrics TEXT NOT NULL,
        lineage TEXT NOT NULL, params TEXT NOT NULL, code_version TEXT NOT NULL, run_id TEXT NOT NULL,
        note TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS transitions (
        id {serial}, tag TEXT NOT NULL, from_stage TEXT, to_stage TEXT NOT NULL, actor TEXT NOT NULL,
        reason TEXT NOT NULL, at TEXT NOT NULL)""",
]


class StageError(ValueError):
    """A transition the stage rules do not allow, or an unknown version; the message says which."""


@dataclass
class RegistryDB:
    """One connection per call (SQLite file or PostgreSQL schema); safe across processes."""

    sqlite_path: Path | None = None
    dsn: str | None = None
    schema: str = "vigil_registry"

    @classmethod
    def open(cls, registry_folder: Path, dsn: str | None = None, schema: str = "vigil_registry") -> "RegistryDB":
        if dsn:
            if not SCHEMA_NAME.match(schema):
                raise ValueError(f"registry schema {schema!r}: use lower-case letters, digits and _")
            db = cls(dsn=dsn, schema=schema)
        else:
            Path(registry_folder).mkdir(parents=True, exist_ok=True)
            db = cls(sqlite_path=Path(registry_folder) / "registry.db")
        db._create()
        return db

    # -- plumbing: one dialect difference (placeholders, serial ids, the schema) -------------------
    @contextmanager
    def _conn(self):
        if self.dsn:
            import psycopg

            with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                conn.execute(f'SET search_path TO "{self.schema}"')
                yield conn
        else:
            conn = sqlite3.connect(self.sqlite_path, timeout=10)
            try:
                with conn:
                    yield conn
            finally:
                conn.close()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dsn else sql

    def _create(self) -> None:
        serial = "BIGSERIAL PRIMARY KEY" if self.dsn else "INTEGER PRIMARY KEY AUTOINCREMENT"
        if self.dsn:
            import psycopg

            with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        with self._conn() as conn:
            for ddl in _DDL:
                conn.execute(ddl.format(serial=serial))

    def _rows(self, sql: str, args: tuple = ()) -> list[dict]:
        with self._conn() as conn:
            cur = conn.execute(self._sql(sql), args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    # -- records -----------------------------------------------------------------------------------
    def add_version(self, tag: str, stage: str, metrics: dict, lineage: dict, params: dict, code_version: str,
                    run_id: str, reason: str, actor: str, note: str = "") -> dict:
        """A new version entering ``stage`` (``candidate`` after the gate, ``rejected`` by it)."""
        if stage not in ALLOWED[None]:
            raise StageError(f"a new version enters as candidate or rejected, not {stage!r}")
        at = _now()
        with self._conn() as conn:
            conn.execute(self._sql("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                         (tag, at, stage, json.dumps(metrics), json.dumps(lineage), json.dumps(params, default=str),
                          code_version, run_id, note[:MAX_TEXT]))
            conn.execute(self._sql("INSERT INTO transitions (tag, from_stage, to_stage, actor, reason, at) "
                                   "VALUES (?, ?, ?, ?, ?, ?)"), (tag, None, stage, actor, reason[:MAX_TEXT], at))
        return self.version(tag)

    def version(self, tag: str) -> dict:
        rows = self._rows("SELECT * FROM versions WHERE tag = ?", (tag,))
        if not rows:
            raise StageError(f"unknown model version {tag!r} (vigil models lists them)")
        return _decode(rows[0])

    def versions(self) -> list[dict]:
        return [_decode(r) for r in self._rows("SELECT * FROM versions ORDER BY created_at, tag")]

    def in_stage(self, stage: str) -> list[dict]:
        return [_decode(r) for r in self._rows("SELECT * FROM versions WHERE stage = ? ORDER BY created_at", (stage,))]

    def transitions(self, tag: str | None = None, limit: int = 1000) -> list[dict]:
        if tag:
            return self._rows("SELECT * FROM transitions WHERE tag = ? ORDER BY id", (tag,))
        rows = self._rows("SELECT * FROM transitions ORDER BY id DESC LIMIT ?", (int(limit),))
        return rows[::-1]

    def move(self, tag: str, to_stage: str, reason: str, actor: str) -> dict:
        """Move ``tag`` to ``to_stage`` if the rules allow it; a version entering production sends
        the one there to ``archived`` (one production model at a time), in one transaction."""
        if to_stage not in STAGES:
            raise StageError(f"unknown stage {to_stage!r}; stages: {', '.join(STAGES)}")
        if not reason.strip():
            raise StageError("a stage transition needs a reason")
        current = self.version(tag)["stage"]
        if to_stage not in ALLOWED[current]:
            allowed = ", ".join(sorted(ALLOWED[current])) or "none"
            raise StageError(f"{tag} is {current}: it can move to {allowed}, not {to_stage}")
        at = _now()
        insert = self._sql("INSERT INTO transitions (tag, from_stage, to_stage, actor, reason, at) VALUES (?, ?, ?, ?, ?, ?)")
        with self._conn() as conn:
            if to_stage == "production":
                for (old,) in conn.execute(self._sql("SELECT tag FROM versions WHERE stage = ?"), ("production",)).fetchall():
                    conn.execute(self._sql("UPDATE versions SET stage = ? WHERE tag = ?"), ("archived", old))
                    conn.execute(insert, (old, "production", "archived", actor, f"replaced by {tag}: {reason}"[:MAX_TEXT], at))
            conn.execute(self._sql("UPDATE versions SET stage = ? WHERE tag = ?"), (to_stage, tag))
            conn.execute(insert, (tag, current, to_stage, actor, reason[:MAX_TEXT], at))
        return self.version(tag)


def open_records(registry_folder: Path) -> RegistryDB:
    """The records of this deployment: PostgreSQL when ``VIGIL_REGISTRY_DSN`` is set (a secret,
    from the environment; schema ``VIGIL_REGISTRY_SCHEMA``, default ``vigil_registry``), else
    SQLite in ``registry_folder``."""
    import os

    return RegistryDB.open(registry_folder, os.environ.get("VIGIL_REGISTRY_DSN") or None,
                           os.environ.get("VIGIL_REGISTRY_SCHEMA") or "vigil_registry")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _decode(row: dict) -> dict:
    return {**row, **{k: json.loads(row[k]) for k in ("metrics", "lineage", "params")}}
