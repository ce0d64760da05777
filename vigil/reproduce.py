"""`vigil reproduce VERSION`: rebuild a registered model from its lineage and show that it gives
the same predictions on the rows it was compared on, or name the input that changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from vigil import lake, registry
from vigil.config import Paths
from vigil.feature_repo import FEATURE_SERVICE
from vigil.features import MODEL_FEATURES

TOLERANCE = 1e-9


@dataclass
class Reproduction:
    version: str
    reproduced: bool
    changed: list[str] = field(default_factory=list)  # inputs that differ from the lineage
    rows: int = 0
    max_abs_diff: float | None = None
    metrics: dict = field(default_factory=dict)  # original vs rebuilt on the rows it was compared on

    def render(self) -> str:
        if self.changed:
            return (f"{self.version}: cannot be reproduced, its inputs changed:\n"
                    + "\n".join(f"  - {c}" for c in self.changed))
        verdict = "reproduced" if self.reproduced else "NOT reproduced"
        lines = [f"{self.version}: {verdict}: {self.rows:,} rows, max |score difference| {self.max_abs_diff:.3g} "
                 f"(tolerance {TOLERANCE})"]
        for k, (a, b) in self.metrics.items():
            lines.append(f"  {k:36s} registered {a:.4f}   rebuilt {b:.4f}")
        return "\n".join(lines)


def _days(span: list[str]) -> list[date]:
    first, last = (date.fromisoformat(d) for d in span)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def changed_inputs(paths: Paths, lineage: dict) -> list[str]:
    """Inputs of the lineage that are not what the model was trained on."""
    out = []
    if lineage.get("feature_service") != FEATURE_SERVICE:
        out.append(f"feature service: trained on {lineage.get('feature_service')}, this Vigil has {FEATURE_SERVICE}")
    for key in ("model_params", "seed"):
        if key not in lineage:
            out.append(f"lineage has no {key} (a model registered before reproducible lineage)")
    for day, digest in sorted(lineage.get("partition_hashes", {}).items()):
        frame = lake.read_day(paths.validated, date.fromisoformat(day))
        if frame is None:
            out.append(f"validated partition {day}: missing")
        elif lake.content_hash(frame) != digest:
            out.append(f"validated partition {day}: content changed (hash {lake.content_hash(frame)[:12]}, "
                       f"lineage {digest[:12]})")
    return out


def reproduce(paths: Paths, store, version: str) -> Reproduction:
    """Train the served model again from its lineage (its training days, labels known at its T, its
    label rule, parameters and seed) and score the rows it was compared on (the recent window; a
    model from before fresh training: its test week)."""
    from vigil import evaluation
    from vigil.training import build_dataset, fit, label_weights

    model, _, info = registry.load(paths, version)
    lineage = info["metadata"]["lineage"]
    changed = changed_inputs(paths, lineage)
    if changed:
        return Reproduction(version, False, changed)
    as_of = pd.Timestamp(lineage["as_of"])
    rule = lineage.get("label_rule", "drop")
    train_days = _days(lineage["train_days"])
    eval_days = _days(lineage.get("recent_days") or lineage["test_days"])
    data, _ = build_dataset(store, paths, sorted(set(train_days) | set(eval_days)), as_of, keep_immature=True)
    day = data["tx_datetime"].dt.date
    train = data[day.isin(set(train_days))]
    train = train.assign(weight=label_weights(train, as_of, rule))
    rebuilt = fit(train[train["weight"] > 0].reset_index(drop=True), lineage["model_params"], lineage["seed"])
    rows = data[day.isin(set(eval_days))].reset_index(drop=True)
    x = rows[MODEL_FEATURES].to_numpy()
    original, again = model.predict(x), rebuilt.predict(x)
    diff = float(np.max(np.abs(original - again), initial=0.0))
    before = evaluation.measures(rows.assign(score=original), "recent_known", False)
    after = evaluation.measures(rows.assign(score=again), "recent_known", False)
    keys = ("recent_known_auc", "recent_known_average_precision", "recent_known_card_precision_at_100")
    return Reproduction(version, diff <= TOLERANCE, [], len(rows), diff, {k: (before[k], after[k]) for k in keys})
