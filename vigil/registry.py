"""Model registry: the BentoML model store holds versions with their lineage; promotion is a
separate, logged act that moves the ``production`` pointer the endpoint watches.

This is the only module of the core that imports bentoml.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from datetime import datetime, timezone
from pathlib import Path

from vigil.config import Paths
from vigil.model import FraudModel
from vigil.policy import DecisionPolicy

MODEL_NAME = "vigil-fraud"
POINTER = "production.json"
LOG = "promotions.jsonl"


_STORES: dict[str, object] = {}


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


def register(paths: Paths, model: FraudModel, policy: DecisionPolicy, metadata: dict, labels: dict | None = None,
             extra_files: list[Path] | None = None) -> str:
    """Save a model version (plus ``extra_files``, e.g. the drift reference) into the store with
    its lineage metadata; returns the tag."""
    bentoml, store = _bentoml(paths)
    meta = {**metadata, "policy": policy.to_dict(), "features": model.features}
    with bentoml.models.create(MODEL_NAME, labels=labels or {}, metadata=meta, module="vigil.model", _model_store=store) as m:
        model.save(Path(m.path))
        for f in extra_files or []:
            shutil.copyfile(f, Path(m.path) / Path(f).name)
    return str(m.tag)


def list_versions(paths: Paths) -> list[dict]:
    bentoml, store = _bentoml(paths)
    try:
        models = bentoml.models.list(MODEL_NAME, _model_store=store)
    except bentoml.exceptions.NotFound:
        return []
    out = [{"tag": str(m.tag), "created": m.info.creation_time.isoformat(), "labels": dict(m.info.labels)} for m in models]
    return sorted(out, key=lambda r: r["created"])


def model_info(paths: Paths, tag: str) -> dict:
    bentoml, store = _bentoml(paths)
    m = bentoml.models.get(tag, _model_store=store)
    return {"tag": str(m.tag), "path": m.path, "metadata": dict(m.info.metadata), "labels": dict(m.info.labels)}


def load(paths: Paths, tag: str) -> tuple[FraudModel, DecisionPolicy, dict]:
    info = model_info(paths, tag)
    return FraudModel.load(Path(info["path"])), DecisionPolicy.from_dict(info["metadata"]["policy"]), info


def promote(paths: Paths, tag: str, reason: str, stage: str = "production", actor: str | None = None) -> dict:
    """Point ``stage`` at ``tag`` (atomically) and append the act to the promotion log."""
    model_info(paths, tag)  # fails loudly on an unknown tag
    paths.registry.mkdir(parents=True, exist_ok=True)
    previous = current(paths, stage)
    entry = {
        "stage": stage,
        "tag": tag,
        "previous": previous["tag"] if previous else None,
        "reason": reason,
        "actor": actor or os.environ.get("USER") or socket.gethostname(),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with open(paths.registry / LOG, "a") as log:
        log.write(json.dumps(entry) + "\n")
    pointer = paths.registry / (POINTER if stage == "production" else f"{stage}.json")
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, pointer)
    return entry


def current(paths: Paths, stage: str = "production") -> dict | None:
    pointer = paths.registry / (POINTER if stage == "production" else f"{stage}.json")
    return json.loads(pointer.read_text()) if pointer.exists() else None


def promotion_log(paths: Paths) -> list[dict]:
    f = paths.registry / LOG
    return [json.loads(l) for l in f.read_text().splitlines() if l.strip()] if f.exists() else []
