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

from dataclasses import dataclass, field

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


RELIABILITY_EDGES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)  # fine where fraud scores live


def reliability(frame: pd.DataFrame, score: str = "score", label: str = "label",
                edges: tuple[float, ...] = RELIABILITY_EDGES) -> pd.DataFrame:
    """The reliability diagram in numbers: per score bin (fixed edges, finer at the low end where
    most rows are), the rows, their mean score and their fraud rate. Calibrated scores have
    ``fraud_rate`` close to ``mean_score`` in every bin."""
    b = pd.cut(frame[score].clip(0, 1), list(edges), include_lowest=True)
    g = frame.assign(bin=b).groupby("bin", observed=True).agg(mean_score=(score, "mean"), fraud_rate=(label, "mean"),
                                                             rows=(label, "size"), frauds=(label, "sum"))
    g.index = g.index.astype(str)
    return g.rename_axis("score_bin").reset_index()


def calibration_error(frame: pd.DataFrame, score: str = "score", label: str = "label") -> float:
    """Expected calibration error over the :func:`reliability` bins: the rows-weighted mean gap
    between each bin's mean score and its fraud rate (0 = the scores are frequencies)."""
    r = reliability(frame, score, label)
    return float((r["rows"] * (r["mean_score"] - r["fraud_rate"]).abs()).sum() / r["rows"].sum())


# -- the evaluation gate: pure rules over scored frames, the asset only calls judge() ----------------

SLICES = {  # name -> rows of a test frame (its model-feature columns) the slice holds
    "amount < 20": lambda f: f["tx_amount"] < 20,
    "amount 20-100": lambda f: (f["tx_amount"] >= 20) & (f["tx_amount"] < 100),
    "amount >= 100": lambda f: f["tx_amount"] >= 100,
    "night": lambda f: f["is_night"] == 1,
    "weekend": lambda f: f["is_weekend"] == 1,
    "new customers": lambda f: f["customer_nb_tx_30d"].fillna(0) == 0,
    "new terminals": lambda f: f["terminal_nb_tx_30d"].fillna(0) == 0,
}


@dataclass(frozen=True)
class GateThresholds:
    """What a candidate must show to be promoted; every figure is on the Handbook-protocol rows."""

    min_auc: float = 0.70
    min_average_precision: float = 0.2
    max_regression: float = 0.02  # AP below the champion's by more than this, beyond noise, rejects
    bootstrap_samples: int = 200
    confidence: float = 0.95
    slice_min_auc: float = 0.60
    slice_min_rows: int = 200  # smaller slices are shown, not judged
    slice_min_frauds: int = 10
    max_latency_ms: float = 1.0  # median one-row predict
    max_size_mb: float = 50.0


@dataclass
class GateResult:
    rules: list[dict]  # rule, actual, threshold, passed (None: not judged), note
    # the champion comparison's figures (ap_delta, ci_low, ci_high, champion, window, rows, frauds):
    # a rollout reads them (a candidate better beyond noise is expected to disagree with its champion)
    evidence: dict = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        return [f"{r['rule']}: {r['note']}" for r in self.rules if r["passed"] is False]

    @property
    def passed(self) -> bool:
        return not self.failures

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rules)


def ap_delta_interval(y: np.ndarray, candidate: np.ndarray, champion: np.ndarray, samples: int = 200,
                      confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """AP(candidate) − AP(champion) on the same rows and a paired bootstrap interval for it
    (rows resampled with replacement, both models on each resample)."""
    y = np.asarray(y)
    point = float(average_precision_score(y, candidate) - average_precision_score(y, champion))
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(samples):
        i = rng.integers(0, len(y), len(y))
        if y[i].min() == y[i].max():
            continue
        deltas.append(average_precision_score(y[i], candidate[i]) - average_precision_score(y[i], champion[i]))
    if not deltas:
        return point, float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(deltas, [tail, 100 - tail])
    return point, float(lo), float(hi)


def judge(test: pd.DataFrame, known: pd.DataFrame | None, thresholds: GateThresholds, latency_ms: float,
          size_mb: float, champion_score: np.ndarray | None = None, champion: str = "champion",
          recent: pd.DataFrame | None = None) -> GateResult:
    """The gate's verdict on a candidate: ``test`` holds the test week's rows with the model's
    features, ``label`` and the candidate's ``score`` (and the champion's scores of the same rows
    in ``champion_score``). Rules: floors on Handbook AUC and AP; no regression against the
    champion (rejected when AP trails it by more than ``max_regression`` *and* the bootstrap
    interval of the difference lies below 0: worse, and not by chance); a floor on the AUC of
    each slice big enough to judge; latency; size. Every rule reports actual and threshold.

    With ``recent`` (the recent window's rows: ``label`` as known at T, the candidate's ``score``
    and the champion's ``champion_score``), the champion is compared there instead (``recent_known``
    protocol: every row, unreported counted genuine, which both models face alike); it is not
    judged when the window holds fewer than ``slice_min_frauds`` reported frauds."""
    t = thresholds
    evidence: dict = {}
    if champion_score is not None:
        test = test.assign(champion_score=np.asarray(champion_score, dtype=float))
    rows = exclude_known_compromised(test, known)
    m = measures(rows, "handbook", True)
    rules = []

    def rule(name, actual, threshold, passed, note):
        rules.append({"rule": name, "actual": actual, "threshold": threshold, "passed": passed, "note": note})

    auc, ap = m["handbook_auc"], m["handbook_average_precision"]
    rule("handbook_auc", auc, t.min_auc, bool(auc >= t.min_auc), f"{auc:.3f} (floor {t.min_auc})")
    rule("handbook_average_precision", ap, t.min_average_precision, bool(ap >= t.min_average_precision),
         f"{ap:.3f} (floor {t.min_average_precision})")
    compare, where = (recent, "recent window, labels known at T") if recent is not None else (rows, "test week")
    frauds = int(compare["label"].sum()) if compare is not None and len(compare) else 0
    if compare is None or "champion_score" not in compare or (recent is None and champion_score is None):
        rule("no_regression", None, -t.max_regression, None, "no champion: nothing to compare")
    elif frauds < t.slice_min_frauds or frauds == len(compare):
        rule("no_regression", None, -t.max_regression, None,
             f"{where}: {len(compare)} rows, {frauds} reported frauds: too few to compare (need {t.slice_min_frauds})")
    else:
        y = compare["label"].to_numpy()
        delta, lo, hi = ap_delta_interval(y, compare["score"].to_numpy(dtype=float),
                                          compare["champion_score"].to_numpy(dtype=float),
                                          t.bootstrap_samples, t.confidence)
        worse = delta < -t.max_regression and hi < 0
        evidence = {"ap_delta": delta, "ci_low": lo, "ci_high": hi, "champion": champion, "window": where,
                    "rows": int(len(compare)), "frauds": frauds}
        rule("no_regression", delta, -t.max_regression, not worse,
             f"{where}: AP − {champion}'s AP = {delta:+.3f}, {t.confidence:.0%} interval [{lo:+.3f}, {hi:+.3f}] "
             f"on {len(compare)} rows, {frauds} frauds (rejected below {-t.max_regression:+.3f} with the interval below 0)")
    for name, select in SLICES.items():
        part = rows[select(rows).to_numpy()]
        frauds = int(part["label"].sum())
        if len(part) < t.slice_min_rows or frauds < t.slice_min_frauds or frauds == len(part):
            rule(f"slice {name}", None, t.slice_min_auc, None,
                 f"{len(part)} rows, {frauds} frauds: too few to judge (need {t.slice_min_rows} rows, "
                 f"{t.slice_min_frauds} frauds and some genuine)")
            continue
        s_auc = float(roc_auc_score(part["label"], part["score"]))
        rule(f"slice {name}", s_auc, t.slice_min_auc, s_auc >= t.slice_min_auc,
             f"AUC {s_auc:.3f} on {len(part)} rows, {frauds} frauds (floor {t.slice_min_auc})")
    rule("latency_ms", latency_ms, t.max_latency_ms, latency_ms <= t.max_latency_ms,
         f"median one-row predict {latency_ms:.3f} ms (max {t.max_latency_ms})")
    rule("size_mb", size_mb, t.max_size_mb, size_mb <= t.max_size_mb, f"{size_mb:.1f} MB (max {t.max_size_mb})")
    return GateResult(rules, evidence)
