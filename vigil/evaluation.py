"""Model quality measures used by the evaluation gate and shown in Dagster.

Card Precision@k follows the Fraud Detection Handbook: each day, rank cards (customers) by their
highest transaction score, take the top k, and count the share that really were compromised that
day; average over days. It is what an investigation team checking k cards a day would achieve.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def card_precision_at_k(frame: pd.DataFrame, score: str = "score", label: str = "label", k: int = 100) -> float:
    day = frame["tx_datetime"].dt.floor("D")
    per_card = frame.assign(day=day).groupby(["day", "customer_id"]).agg(score=(score, "max"), fraud=(label, "max"))
    precisions = []
    for _, g in per_card.groupby(level="day"):
        top = g.nlargest(k, "score")
        precisions.append(top["fraud"].sum() / k)
    return float(np.mean(precisions)) if precisions else float("nan")


def metrics(frame: pd.DataFrame, score: str = "score", label: str = "label", k: int = 100) -> dict[str, float]:
    y, s = frame[label].to_numpy(), frame[score].to_numpy()
    both = len(np.unique(y)) == 2
    return {
        "auc": float(roc_auc_score(y, s)) if both else float("nan"),
        "average_precision": float(average_precision_score(y, s)) if both else float("nan"),
        "card_precision_at_100": card_precision_at_k(frame, score, label, k),
        "fraud_rate": float(np.mean(y)) if len(y) else float("nan"),
        "rows": int(len(y)),
    }


def pr_curve(frame: pd.DataFrame, score: str = "score", label: str = "label", points: int = 50) -> pd.DataFrame:
    p, r, _ = precision_recall_curve(frame[label], frame[score])
    idx = np.linspace(0, len(p) - 1, min(points, len(p))).astype(int)
    return pd.DataFrame({"recall": r[idx], "precision": p[idx]})


def calibration(frame: pd.DataFrame, score: str = "score", label: str = "label", bins: int = 10) -> pd.DataFrame:
    q = pd.qcut(frame[score].rank(method="first"), bins, labels=False)
    g = frame.assign(bin=q).groupby("bin").agg(mean_score=(score, "mean"), fraud_rate=(label, "mean"), rows=(label, "size"))
    return g.reset_index(drop=True)
