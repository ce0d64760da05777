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


PSI_BINS = 10
PSI_WARN, PSI_ALERT = 0.1, 0.25  # the usual reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major


def psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS, eps: float = 1e-4) -> float:
    """Population stability index of ``current`` against ``reference`` over the reference's
    quantile bins (ties merged): sum((c - r) * ln(c / r)) of the bin shares. Each bin's count
    gets half an observation (Laplace smoothing), so a bin left empty by a small sample is not
    read as a shift (with 45 rows and 10 bins, a floor of 1e-4 alone gave PSI 2.4 for two
    near-identical models); shares are then floored at ``eps``."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    if len(ref) == 0 or len(cur) == 0:
        return float("nan")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    k = len(edges) + 1
    r = (np.bincount(np.searchsorted(edges, ref, side="right"), minlength=k) + 0.5) / (len(ref) + 0.5 * k)
    c = (np.bincount(np.searchsorted(edges, cur, side="right"), minlength=k) + 0.5) / (len(cur) + 0.5 * k)
    r, c = np.maximum(r, eps), np.maximum(c, eps)
    return float(np.sum((c - r) * np.log(c / r)))


def output_monitoring(served: pd.DataFrame, validation_scores: np.ndarray | None) -> dict:
    """What the model *did* on a day, beside what it was fed: score PSI against the scores of the
    window it was validated on, the decision rates, and the served amount by decision."""
    out = {"score_psi": psi(validation_scores, served["fraud_score"].to_numpy()) if validation_scores is not None
           else float("nan"),
           "score_mean": float(served["fraud_score"].mean()),
           "score_p99": float(np.quantile(served["fraud_score"], 0.99))}
    for decision in ("approve", "review", "decline"):
        hit = served["decision"] == decision
        out[f"{decision}_rate"] = float(hit.mean())
        if "tx_amount" in served:
            out[f"{decision}_amount"] = float(served.loc[hit, "tx_amount"].sum())
    return out


def live_performance(predictions: pd.DataFrame, labels: pd.DataFrame, label_maturity: float | None = None) -> dict:
    """Metrics of served scores against the fraud reports known so far (unreported count as 0),
    with ``label_maturity`` (the share of the day's label window that has passed: at 1.0 the
    figures are final), precision of the flagged (review or decline) requests, and the reported
    fraud amount caught (flagged) and missed (approved)."""
    if predictions.empty:
        return {"rows": 0}
    fraud = set(labels.loc[labels["tx_fraud"] == 1, "transaction_id"]) if len(labels) else set()
    frame = predictions.assign(label=predictions["transaction_id"].isin(fraud).astype(int),
                               score=predictions["fraud_score"], tx_datetime=pd.to_datetime(predictions["tx_datetime"]))
    # served traffic of one day: cards counted once, no Handbook exclusions (named live_*)
    out = evaluation.measures(frame, "live", remove_detected=False)
    out["reported_frauds"] = int(frame["label"].sum())
    out["decline_rate"] = float(np.mean(predictions["decision"] == "decline"))
    flagged = (predictions["decision"] != "approve").to_numpy()
    out["live_precision_flagged"] = float(frame["label"].to_numpy()[flagged].mean()) if flagged.any() else float("nan")
    out["live_recall_flagged"] = (float(frame["label"].to_numpy()[flagged].sum() / out["reported_frauds"])
                                  if out["reported_frauds"] else float("nan"))
    if "tx_amount" in frame:
        amount, is_fraud = frame["tx_amount"].to_numpy(dtype=float), frame["label"].to_numpy() == 1
        out["fraud_amount_caught"] = float(amount[is_fraud & flagged].sum())
        out["fraud_amount_missed"] = float(amount[is_fraud & ~flagged].sum())
    if label_maturity is not None:
        out["label_maturity"] = round(float(label_maturity), 3)
    out["cohorts"] = cohorts(frame)
    return out


def cohorts(frame: pd.DataFrame, min_frauds: int = 5) -> list[dict]:
    """The gate's slices (amount bands, night, weekend, new customers, new terminals) of a served
    day: rows, reported frauds and AP where there are enough frauds to rank."""
    from sklearn.metrics import average_precision_score

    out = []
    for name, select in evaluation.SLICES.items():
        try:
            part = frame[select(frame).to_numpy()]
        except KeyError:  # a log without the feature columns
            continue
        frauds = int(part["label"].sum())
        ap = float(average_precision_score(part["label"], part["score"])) if min_frauds <= frauds < len(part) else None
        out.append({"cohort": name, "rows": int(len(part)), "reported_frauds": frauds,
                    "live_average_precision": None if ap is None else round(ap, 4)})
    return out


def label_maturity(day, labels_through, maturity_days: int) -> float:
    """The share of ``day``'s label window (``maturity_days`` after its end) covered by the reports
    that have arrived (the label feed holds days up to ``labels_through`` inclusive)."""
    if labels_through is None:
        return 0.0
    elapsed = (labels_through - day).days  # days of reports after the day itself
    return float(min(1.0, max(0.0, elapsed / maturity_days)))
