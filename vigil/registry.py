"""Model registry: the BentoML model store holds the versions' files; their stages and every
transition are records in :mod:`vigil.registry_db` (SQLite, or PostgreSQL in production);
promotion is a recorded act that also moves the ``production`` pointer the endpoint watches.

With a shared model store (``VIGIL_MODEL_STORE_URI``: an object-store prefix or a shared folder)
every registered version is also published there, and the pointer lives there: an endpoint on
another host follows promotions and fetches the version it is told to serve, hash-checked before
it is loaded.

This is the only module of the core that imports bentoml.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
from datetime import datetime, timezone
from pathlib import Path

from vigil import lake
from vigil.config import Paths
from vigil.model import FraudModel
from vigil.policy import DecisionPolicy
from vigil.registry_db import pointer_path, read_pointer  # noqa: F401  (re-exported)

log = logging.getLogger("vigil.registry")

MODEL_NAME = "vigil-fraud"


_STORES: dict[str, object] = {}


class ModelNotFound(LookupError):
    """A tag the model store does not hold (BentoML's own exception, translated so callers need
    not import bentoml to catch it)."""


def _bentoml(paths: Paths):
    """bentoml plus the model store under ``paths`` (BentoML's own store is fixed per process,
    at first use; Vigil passes its store explicitly so one process can serve several homes)."""
    os.environ.setdefault("BENTOML_HOME", str(paths.bentoml_home))
    import bentoml
    from bentoml._internal.models import ModelStore

    key = str(paths.bentoml_home)
    if key not in _STORES:
        (paths.bentoml_home / "models").mkdir(parents=True, exist_ok=True)
        _STORES[key] = ModelStore(str(paths.bentoml_home / "models"))
    return bentoml, _STORES[key]


def records(paths: Paths):
    """The registry's records (:func:`vigil.registry_db.open_records`)."""
    from vigil.registry_db import open_records

    return open_records(paths.registry)


def actor_name(actor: str | None = None) -> str:
    return actor or os.environ.get("USER") or socket.gethostname()


def register(paths: Paths, model: FraudModel, policy: DecisionPolicy, metadata: dict, labels: dict | None = None,
             extra_files: list[Path] | None = None, reason: str = "registered", actor: str | None = None) -> str:
    """Save a model version (plus ``extra_files``, e.g. the drift reference) into the store with
    its lineage metadata, recorded as a ``candidate``; returns the tag."""
    bentoml, store = _bentoml(paths)
    meta = {**metadata, "policy": policy.to_dict(), "features": model.features}
    with bentoml.models.create(MODEL_NAME, labels=labels or {}, metadata=meta, module="vigil.model", _model_store=store) as m:
        model.save(Path(m.path))
        for f in extra_files or []:
            shutil.copyfile(f, Path(m.path) / Path(f).name)
        write_manifest(Path(m.path))
    tag = str(m.tag)
    if paths.shared_models is not None:
        publish(paths, tag, Path(m.path))
    _record(paths, tag, meta, reason, actor)
    return tag


def _record(paths: Paths, tag: str, meta: dict, reason: str, actor: str | None):
    return records(paths).add_version(tag, "candidate", meta.get("metrics", {}), meta.get("lineage", {}),
                                      meta.get("params", {}), str(meta.get("code_version", "")),
                                      str(meta.get("dagster_run_id", "")), reason, actor_name(actor))


def record_rejected(paths: Paths, run_id: str, metrics: dict, lineage: dict, failures: list[str],
                    code_version: str = "") -> dict:
    """A candidate the gate rejected: not in the model store (nothing to serve), but on record."""
    return records(paths).add_version(f"rejected-{run_id[:12]}", "rejected", metrics, lineage, {}, code_version, run_id,
                                      "evaluation gate: " + "; ".join(failures), actor_name("dagster"),
                                      note="; ".join(failures))


def list_versions(paths: Paths) -> list[dict]:
    bentoml, store = _bentoml(paths)
    try:
        models = bentoml.models.list(MODEL_NAME, _model_store=store)
    except bentoml.exceptions.NotFound:
        return []
    out = [{"tag": str(m.tag), "created": m.info.creation_time.isoformat(), "labels": dict(m.info.labels)} for m in models]
    return sorted(out, key=lambda r: r["created"])


TAG = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?:[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?$")


def model_info(paths: Paths, tag: str) -> dict:
    if not TAG.match(tag or ""):
        raise ModelNotFound(f"{tag!r} is not a model tag (name:version, lowercase letters, digits, '.', '_', '-')")
    bentoml, store = _bentoml(paths)
    try:
        m = bentoml.models.get(tag, _model_store=store)
    except bentoml.exceptions.NotFound as exc:
        if paths.shared_models is None or not fetch(paths, tag):
            where = f"{paths.bentoml_home}" + (f" nor in {paths.shared_models}" if paths.shared_models is not None else "")
            raise ModelNotFound(f"model {tag!r} is not in {where}") from exc
        m = bentoml.models.get(tag, _model_store=store)
    return {"tag": str(m.tag), "path": m.path, "metadata": dict(m.info.metadata), "labels": dict(m.info.labels)}


MANIFEST = "SHA256SUMS"


class CorruptModel(RuntimeError):
    """A model's files do not match the hashes written when it was registered, or its feature list
    is not the one this code assembles: refused, never loaded."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path) -> None:
    """``sha256  name`` for every file of a model version, written once at registration."""
    lines = [f"{_sha256(f)}  {f.name}" for f in sorted(Path(folder).iterdir()) if f.is_file() and f.name != MANIFEST]
    (Path(folder) / MANIFEST).write_text("\n".join(lines) + "\n")


def _shared_version(paths: Paths, tag: str):
    if not TAG.match(tag) or ".." in tag:
        raise ModelNotFound(f"{tag!r} is not a model tag (name:version)")
    name, _, version = tag.partition(":")
    return paths.shared_models / name / version


def publish(paths: Paths, tag: str, folder: Path) -> None:
    """Copy a version's files to the shared model store, its manifest last: a host that sees the
    manifest finds every file it lists (and checks each against it before loading)."""
    dest = _shared_version(paths, tag)
    files = sorted(f for f in Path(folder).iterdir() if f.is_file())
    for f in sorted(files, key=lambda f: f.name == MANIFEST):
        lake.put(dest / f.name, f.read_bytes())
    log.info("published %s to %s (%d files)", tag, dest, len(files))


def fetch(paths: Paths, tag: str) -> bool:
    """Bring a published version from the shared model store into this host's BentoML store,
    after checking every file against its manifest (:class:`CorruptModel` otherwise, and nothing
    is kept). False when the shared store does not hold it."""
    src = _shared_version(paths, tag)
    if not (src / MANIFEST).exists():
        return False
    name, _, version = tag.partition(":")
    target = paths.bentoml_home / "models" / name / version
    tmp = target.with_name(f".{version}.fetch{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for f in src.iterdir():
            if not f.name.startswith("."):  # a publisher's temporary file in a shared folder
                (tmp / f.name).write_bytes(f.read_bytes())
        verify(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process fetched it first: theirs is as good
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("fetched %s from %s", tag, src)
    return True


def verify(folder: Path) -> bool:
    """Every file the manifest lists is there with its hash; False when there is no manifest (a
    version registered before manifests existed: loaded, and said so); CorruptModel otherwise."""
    manifest = Path(folder) / MANIFEST
    if not manifest.exists():
        return False
    for line in manifest.read_text().splitlines():
        digest, _, name = line.partition("  ")
        f = Path(folder) / name
        if not f.is_file():
            raise CorruptModel(f"{folder}: {name} is missing")
        if _sha256(f) != digest:
            raise CorruptModel(f"{folder}: {name} does not match its registered SHA-256 (corrupt or changed)")
    return True


def load(paths: Paths, tag: str) -> tuple[FraudModel, DecisionPolicy, dict]:
    """A model version, its policy and its record, after checking its files against their hashes
    and its feature list against the one this code assembles (:class:`CorruptModel` otherwise)."""
    from vigil.features import MODEL_FEATURES

    info = model_info(paths, tag)
    folder = Path(info["path"])
    if not verify(folder):
        log.warning("model %s has no %s (registered before hashes were kept): loaded unchecked", tag, MANIFEST)
    model = FraudModel.load(folder)
    if list(model.features) != list(MODEL_FEATURES):
        extra, missing = set(model.features) - set(MODEL_FEATURES), set(MODEL_FEATURES) - set(model.features)
        raise CorruptModel(f"model {tag} was trained on other features than this code assembles "
                           f"(only in the model: {sorted(extra) or '-'}; only here: {sorted(missing) or '-'}; "
                           "or another order): refused")
    return model, DecisionPolicy.from_dict(info["metadata"]["policy"]), info


def promote(paths: Paths, tag: str, reason: str, stage: str = "production", actor: str | None = None) -> dict:
    """Move ``tag`` to ``stage`` in the records (the rules of :mod:`vigil.registry_db`; the version
    in production before goes to ``archived``), then point ``stage`` at it (atomically)."""
    from vigil.registry_db import StageError

    info = model_info(paths, tag)  # fails loudly on a tag the model store does not hold
    db = records(paths)
    try:
        recorded = db.version(tag)
    except StageError:  # a version from before the records existed: recorded on first use
        recorded = _record(paths, tag, info["metadata"], "recorded on promotion (registered before stage records)", actor)
    paths.registry.mkdir(parents=True, exist_ok=True)
    previous = current(paths, stage)
    # a promotion whose record moved but whose pointer write failed (the store went away) is
    # finished by running it again: the record is not moved twice
    if not (stage == "production" and recorded["stage"] == "production" and (previous or {}).get("tag") != tag):
        db.move(tag, stage, reason, actor_name(actor))
    entry = {
        "stage": stage,
        "tag": tag,
        "previous": previous["tag"] if previous else None,
        "reason": reason,
        "actor": actor_name(actor),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    lake.put(pointer_path(paths, stage), json.dumps(entry).encode())
    return entry


def current(paths: Paths, stage: str = "production") -> dict | None:
    text = read_pointer(paths, stage)
    return json.loads(text) if text else None


def promotion_log(paths: Paths) -> list[dict]:
    """Every transition into production, oldest first (tag, from_stage, actor, reason, at)."""
    return [t for t in records(paths).transitions() if t["to_stage"] == "production"]


def rollback(paths: Paths, reason: str, actor: str | None = None) -> dict:
    """Production back to the version that served before the current one."""
    prod = current(paths)
    if prod is None:
        raise ValueError("no model in production: nothing to roll back")
    before = [t["tag"] for t in promotion_log(paths) if t["tag"] != prod["tag"]]
    if not before:
        raise ValueError(f"{prod['tag']} is the only version ever in production: nothing to roll back to")
    entry = promote(paths, before[-1], f"rollback from {prod['tag']}: {reason}", actor=actor)
    from vigil.alerts import Alert, alerter_for

    alerter_for(paths.root).raise_alert(Alert(
        "model_rolled_back", f"{prod['tag']}->{entry['tag']}@{entry['at']}",
        f"production rolled back from {prod['tag']} to {entry['tag']}: {reason}",
        {"from": prod["tag"], "to": entry["tag"], "reason": reason, "actor": entry["actor"]}))
    return entry
