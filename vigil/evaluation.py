"""Model quality, each figure named after its protocol.

``handbook_*`` figures follow the Fraud Detection Handbook's protocol exactly (Le Borgne et al.,
"Reproducible Machine Learning for Credit Card Fraud Detection", ch. 3-5), so they can be set
beside its published table:

- *Test rows*: for each test day D, the transactions of cards already known to be compromised
  are dropped: a card is known once one of its frauds (from the start of the training period on)
  was *reported* before D. An investigator does not need a model to flag a card already blocked.
- *CP@k* (card precision at k): per test day, among the cards not detected on earlier test days,
  rank cards by their highest transaction score, take the top k, and count the cards with a fraud
  that day; the compromised cards found become *detected* and leave the ranking of later days.
  Precision over k, averaged over the days.
- AUC and average precision on the same rows.

``week_*`` figures are the same measures on every transaction of the test week, without either
exclusion (what Vigil reported before it followed the Handbook; they overstate CP@100 by about
0.25 because the same compromised cards are counted again each day).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

K = 100


def _day(frame: pd.DataFrame) -> pd.Series:
    return frame["tx_datetime"].dt.floor("D")


def exclude_known_compromised(frame: pd.DataFrame, known: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``frame`` (``customer_id``, ``tx_datetime``) whose card was not yet known to be
    compromised on the row's day. ``known``: ``customer_id``, ``known_at`` (when a fraud of that
    card was reported); a card is known on day D if ``known_at`` < D 00:00."""
    if known is None or known.empty:
        return frame
    first = known.groupby("customer_id")["known_at"].min()
    known_at = frame["customer_id"].map(first)
    keep = known_at.isna() | (known_at >= _day(frame))
    return frame.loc[keep.to_numpy()]


def card_precision_at_k(frame: pd.DataFrame, score: str = "score", label: str = "label", k: int = K,
                        remove_detected: bool = True) -> float:
    """Mean over days of the share of compromised cards among the day's top ``k`` cards (card score
    = its highest transaction score). With ``remove_detected`` (the Handbook's definition), a card
    found compromised in an earlier day's top k is left out of later days."""
    if frame.empty:
        return float("nan")
    per_card = (frame.assign(day=_day(frame)).groupby(["day", "customer_id"], sort=True)
                .agg(score=(score, "max"), fraud=(label, "max")).reset_index())
    detected: set = set()
    precisions = []
    for _, g in per_card.groupby("day", sort=True):
        if remove_detected and detected:
            g = g[~g["customer_id"].isin(detected)]
        top = g.sort_values("score", ascending=False, kind="stable").head(k)
        found = top.loc[top["fraud"] == 1, "customer_id"]
        precisions.append(len(found) / k)
        if remove_detected:
            detected.update(found.tolist())
    return float(np.mean(precisions))


def _ranking(frame: pd.DataFrame, score: str, label: str) -> tuple[float, float]:
    y, s = frame[label].to_numpy(), frame[score].to_numpy()
    if len(np.unique(y)) < 2:
        return float("nan"), float("nan")
    return float(roc_auc_score(y, s)), float(average_precision_score(y, s))


def measures(frame: pd.DataFrame, prefix: str, remove_detected: bool, score: str = "score", label: str = "label",
             k: int = K) -> dict[str, float]:
    """AUC, AP, CP@k, rows and fraud rate of ``frame``, each named ``<prefix>_<measure>``."""
    auc, ap = _ranking(frame, score, label)
    return {f"{prefix}_auc": auc, f"{prefix}_average_precision": ap,
            f"{prefix}_card_precision_at_{k}": card_precision_at_k(frame, score, label, k, remove_detected),
            f"{prefix}_rows": int(len(frame)),
            f"{prefix}_fraud_rate": float(frame[label].mean()) if len(frame) else float("nan")}


def handbook_metrics(frame: pd.DataFrame, known: pd.DataFrame | None, score: str = "score", label: str = "label",
                     k: int = K) -> dict[str, float]:
    """AUC, AP and CP@k under the Handbook's protocol (see the module docstring)."""
    return measures(exclude_known_compromised(frame, known), "handbook", True, score, label, k)


def week_metrics(frame: pd.DataFrame, score: str = "score", label: str = "label", k: int = K) -> dict[str, float]:
    """The same measures on every row, cards counted again each day (not the Handbook's)."""
    return measures(frame, "week", False, score, label, k)


def metrics(frame: pd.DataFrame, known: pd.DataFrame | None = None, score: str = "score", label: str = "label",
            k: int = K) -> dict[str, float]:
    """Both protocols, each figure named after its own."""
    return {**handbook_metrics(frame, known, score, label, k), **week_metrics(frame, score, label, k)}


def pr_curve(frame: pd.DataFrame, score: str = "score", label: str = "label", points: int = 50) -> pd.DataFrame:
    p, r, _ = precision_recall_curve(frame[label], frame[score])
    idx = np.linspace(0, len(p) - 1, min(points, len(p))).astype(int)
    return pd.DataFrame({"recall": r[idx], "precision": p[idx]})


def calibration(frame: pd.DataFrame, score: str = "score", label: str = "label", bins: int = 10) -> pd.DataFrame:
    q = pd.qcut(frame[score].rank(method="first"), bins, labels=False)
    g = frame.assign(bin=q).groupby("bin").agg(mean_score=(score, "mean"), fraud_rate=(label, "mean"), rows=(label, "size"))
    return g.reset_index(drop=True)


def calibration_error(frame: pd.DataFrame, score: str = "score", label: str = "label", bins: int = 10) -> float:
    """Expected calibration error over the :func:`calibration` bins: the rows-weighted mean gap
    between the mean score and the fraud rate of each bin (0 = scores are frequencies)."""
    c = calibration(frame, score, label, bins)
    return float((c["rows"] * (c["mean_score"] - c["fraud_rate"]).abs()).sum() / c["rows"].sum())
