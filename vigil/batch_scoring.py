"""Scoring past days: the transactions of a date range with the features they had at their time
(Feast's point-in-time retrieval, the training path), a model's scores and its decisions.

For back-testing a model version on days it never saw, re-scoring after an incident, or handing
an investigation team a ranked list. It reads the validated lake and the offline store only: the
endpoint and the online store are not touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from vigil import lake, registry
from vigil.config import Paths
from vigil.feature_repo import FEATURE_SERVICE
from vigil.features import MODEL_FEATURES

MAX_DAYS = 366  # one call scores at most a year: the point-in-time join holds the range in memory
OUTPUT_COLUMNS = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount", "fraud_score",
                  "decision", "model_version"]


@dataclass
class Scored:
    frame: pd.DataFrame
    model_version: str
    days: list[date]
    seconds: dict[str, float] = field(default_factory=dict)
    engine: str = "lightgbm"

    @property
    def rows_per_second(self) -> dict[str, float]:
        n = len(self.frame)
        return {k: round(n / v) if v > 0 else float("inf") for k, v in self.seconds.items() if k != "prepare"}


def day_range(first: date, last: date) -> list[date]:
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    n = (last - first).days + 1
    if n > MAX_DAYS:
        raise ValueError(f"{n} days requested; score at most {MAX_DAYS} days per call")
    return [first + timedelta(days=i) for i in range(n)]


def score_days(paths: Paths, store, first: date, last: date, version: str | None = None, engine: str = "auto") -> Scored:
    """Scores and decisions for every validated transaction from ``first`` to ``last`` (inclusive).
    ``engine``: ``lightgbm``, ``compiled`` (native code, :mod:`vigil.compiled`) or ``auto``."""
    from vigil import compiled

    from vigil.training import model_features

    days = day_range(first, last)
    available = set(lake.available_days(paths.validated))
    missing = [d for d in days if d not in available]
    if missing:
        raise ValueError(f"validated partitions missing for {len(missing)} day(s) ({missing[0]}..{missing[-1]}): "
                         f"run the daily pipeline for them first")
    if version is None:
        prod = registry.current(paths)
        if prod is None:
            raise ValueError("no model in production: pass --model VERSION (see the BentoML model store) or promote one")
        version = prod["tag"]
    try:
        model, policy, info = registry.load(paths, version)
    except registry.ModelNotFound as exc:
        raise ValueError(str(exc)) from exc
    service = info["metadata"].get("lineage", {}).get("feature_service")
    if service and service != FEATURE_SERVICE:
        raise ValueError(f"model {version} was trained on feature service {service}; this Vigil serves "
                         f"{FEATURE_SERVICE}: score it with the Vigil version that trained it")
    seconds = {}
    t0 = time.perf_counter()
    tx = lake.read_days(paths.validated, days, ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount"])
    seconds["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    frame = model_features(store, tx)
    seconds["features"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = model.impute(frame[MODEL_FEATURES].to_numpy())
    predict, engine = compiled.predictor(model, x, paths.models / "compiled", engine)
    seconds["prepare"] = time.perf_counter() - t0  # imputation, engine choice, compiling
    t0 = time.perf_counter()
    scores = predict(x)
    seconds["model"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = frame[OUTPUT_COLUMNS[:5]].assign(fraud_score=scores, decision=policy.decide_many(scores), model_version=str(version))
    seconds["policy"] = time.perf_counter() - t0
    return Scored(out.sort_values(["tx_datetime", "transaction_id"]).reset_index(drop=True), str(version), days, seconds,
                  engine)


def write(scored: Scored, out: Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise ValueError(f"{out}: the output is Parquet; name it *.parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".parquet.tmp")
    scored.frame.to_parquet(tmp, index=False)
    tmp.replace(out)
    return out
