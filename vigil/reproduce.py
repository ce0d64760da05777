"""`vigil reproduce VERSION`: rebuild a registered model from its lineage and show that it gives
the same predictions on its test week, or name the input that changed."""

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
    metrics: dict = field(default_factory=dict)  # original vs rebuilt, Handbook protocol

    def render(self) -> str:
        if self.changed:
            return (f"{self.version}: cannot be reproduced, its inputs changed:\n"
                    + "\n".join(f"  - {c}" for c in self.changed))
        verdict = "reproduced" if self.reproduced else "NOT reproduced"
        lines = [f"{self.version}: {verdict}: {self.rows:,} test rows, max |score difference| {self.max_abs_diff:.3g} "
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
    from vigil import evaluation
    from vigil.training import build_dataset, known_compromised, train_and_evaluate

    model, _, info = registry.load(paths, version)
    lineage = info["metadata"]["lineage"]
    changed = changed_inputs(paths, lineage)
    if changed:
        return Reproduction(version, False, changed)
    as_of = pd.Timestamp(lineage["as_of"])
    train_days, test_days = _days(lineage["train_days"]), _days(lineage["test_days"])
    train, _ = build_dataset(store, paths, train_days, as_of)
    test, _ = build_dataset(store, paths, test_days, as_of)
    known = known_compromised(paths, train_days[0], as_of)
    rebuilt = train_and_evaluate(train, test, params=lineage["model_params"], seed=lineage["seed"], known=known)
    x = test[MODEL_FEATURES].to_numpy()
    original, again = model.predict(x), rebuilt.model.predict(x)
    diff = float(np.max(np.abs(original - again), initial=0.0))
    before = evaluation.handbook_metrics(test.assign(score=original), known)
    keys = ("handbook_auc", "handbook_average_precision", "handbook_card_precision_at_100")
    return Reproduction(version, diff <= TOLERANCE, [], len(test), diff,
                        {k: (before[k], rebuilt.metrics[k]) for k in keys})
