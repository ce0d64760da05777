"""Monitoring maths: Evidently data-drift reports of served features against the training reference,
and live performance once labels arrive.

Evidently runs in memory on pandas, so each side is sampled to at most ``MAX_ROWS`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vigil import evaluation

MAX_ROWS = 100_000
# Per-day constants (the weekend flag) drift by construction against a multi-week reference.
DRIFT_COLUMNS_EXCLUDED = ("is_weekend",)
DEFAULT_DRIFT_SHARE = 0.3


@dataclass
class DriftSummary:
    dataset_drift: bool
    drift_share: float
    drifted_columns: int
    columns: int
    threshold_share: float
    per_column: pd.DataFrame  # column, method, score, threshold, drifted
    html: str

    def as_metadata(self) -> dict:
        return {"dataset_drift": self.dataset_drift, "drift_share": self.drift_share,
                "drifted_columns": self.drifted_columns, "columns": self.columns,
                "threshold_share": self.threshold_share}


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], html_path: Path,
                 drift_share: float = DEFAULT_DRIFT_SHARE, seed: int = 0) -> DriftSummary:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [c for c in columns if c not in DRIFT_COLUMNS_EXCLUDED and c in reference and c in current]
    ref = reference[columns].sample(min(len(reference), MAX_ROWS), random_state=seed)
    cur = current[columns].sample(min(len(current), MAX_ROWS), random_state=seed)
    ref, cur = ref.astype("float64"), cur.astype("float64")
    definition = DataDefinition(numerical_columns=columns)
    snapshot = Report([DataDriftPreset(drift_share=drift_share)], include_tests=True).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html_path))
    # A column's drift verdict is its test status: the score alone is a p-value for some methods
    # and a distance for others.
    result = snapshot.dict()
    verdict = {}
    for t in result.get("tests", []):
        params = t.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith("ValueDrift"):
            verdict[params["column"]] = t["status"] == "FAIL"
    rows, count = [], None
    for m in result["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("DriftedColumnsCount"):
            count = m["value"]
        elif cfg["type"].endswith("ValueDrift"):
            rows.append({"column": cfg["column"], "method": cfg["method"], "score": float(m["value"]),
                         "threshold": float(cfg["threshold"]), "drifted": verdict.get(cfg["column"])})
    per_column = pd.DataFrame(rows)
    share = float(count["share"]) if count else float(per_column["drifted"].mean())
    return DriftSummary(
        dataset_drift=share >= drift_share,
        drift_share=share,
        drifted_columns=int(count["count"]) if count else int(per_column["drifted"].sum()),
        columns=len(columns),
        threshold_share=drift_share,
        per_column=per_column,
        html=str(html_path),
    )


def live_performance(predictions: pd.DataFrame, labels: pd.DataFrame) -> dict:
    """Metrics of served scores against the fraud reports known so far (immature labels count as 0)."""
    if predictions.empty:
        return {"rows": 0}
    fraud = set(labels.loc[labels["tx_fraud"] == 1, "transaction_id"]) if len(labels) else set()
    frame = predictions.assign(label=predictions["transaction_id"].isin(fraud).astype(int),
                               score=predictions["fraud_score"], tx_datetime=pd.to_datetime(predictions["tx_datetime"]))
    # served traffic of one day: cards counted once, no Handbook exclusions (named live_*)
    out = evaluation.measures(frame, "live", remove_detected=False)
    out["reported_frauds"] = int(frame["label"].sum())
    out["decline_rate"] = float(np.mean(predictions["decision"] == "decline"))
    return out
