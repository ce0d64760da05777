"""Post-processing: from a fraud score to a business decision with reason codes.

The thresholds are fitted on the held-out week when the model is trained and travel with the
model (in its registry metadata), so a new model version brings its own calibrated policy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

APPROVE, REVIEW, DECLINE = "approve", "review", "decline"


@dataclass(frozen=True)
class DecisionPolicy:
    review_threshold: float
    decline_threshold: float
    high_amount_ratio: float = 3.0
    risky_terminal_rate: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DecisionPolicy":
        return cls(**{k: float(v) for k, v in d.items() if k in cls.__dataclass_fields__})

    def decide(self, score: float) -> str:
        if score >= self.decline_threshold:
            return DECLINE
        if score >= self.review_threshold:
            return REVIEW
        return APPROVE

    def decide_many(self, scores: np.ndarray) -> np.ndarray:
        """:meth:`decide` for an array (batch scoring), same thresholds, same ties."""
        scores = np.asarray(scores, dtype=np.float64)
        return np.where(scores >= self.decline_threshold, DECLINE, np.where(scores >= self.review_threshold, REVIEW, APPROVE))

    def reasons(self, score: float, features: dict[str, float], stale: list[str]) -> list[str]:
        """Human-readable reason codes for why the score is what it is (or cannot be trusted)."""
        out = []
        if score >= self.review_threshold:
            out.append("HIGH_MODEL_SCORE")
        avg = features.get("customer_avg_amount_30d") or 0.0
        if avg > 0 and features.get("tx_amount", 0.0) > self.high_amount_ratio * avg:
            out.append("AMOUNT_ABOVE_CUSTOMER_HABIT")
        if (features.get("terminal_risk_7d") or 0.0) >= self.risky_terminal_rate:
            out.append("RISKY_TERMINAL")
        if features.get("customer_nb_tx_30d", 0.0) == 0:
            out.append("NO_CUSTOMER_HISTORY")
        out.extend(f"STALE_FEATURES:{s}" for s in stale)
        return out


    def reasons_many(self, scores: np.ndarray, features: dict[str, np.ndarray], stale: list[list[str]]) -> list[list[str]]:
        """:meth:`reasons` for a batch: the same codes in the same order, from feature columns
        (NaN where :meth:`reasons` sees None) with numpy instead of a dict per row."""
        scores = np.asarray(scores, dtype=np.float64)
        n = len(scores)

        def col(name: str, default: float) -> np.ndarray:
            return np.asarray(features[name], dtype=np.float64) if name in features else np.full(n, default)

        avg = np.nan_to_num(col("customer_avg_amount_30d", 0.0), nan=0.0)  # None or 0 -> 0.0
        flags = (scores >= self.review_threshold,
                 (avg > 0) & (col("tx_amount", 0.0) > self.high_amount_ratio * avg),
                 np.nan_to_num(col("terminal_risk_7d", 0.0), nan=0.0) >= self.risky_terminal_rate,
                 col("customer_nb_tx_30d", 0.0) == 0)  # None (NaN) is not 0
        code = sum(f.astype(np.int64) << j for j, f in enumerate(flags))
        table = [[c for j, c in enumerate(_CODES) if k >> j & 1] for k in range(1 << len(_CODES))]
        return [table[k] + [f"STALE_FEATURES:{v}" for v in st] if st else list(table[k])
                for k, st in zip(np.broadcast_to(code, (n,)).tolist(), stale)]


_CODES = ("HIGH_MODEL_SCORE", "AMOUNT_ABOVE_CUSTOMER_HABIT", "RISKY_TERMINAL", "NO_CUSTOMER_HISTORY")  # reasons() order


def fit_policy(scores: np.ndarray, review_rate: float = 0.02, decline_rate: float = 0.005) -> DecisionPolicy:
    """Thresholds that send ``review_rate`` of traffic to review or decline, ``decline_rate`` to decline."""
    scores = np.asarray(scores, dtype=np.float64)
    return DecisionPolicy(
        review_threshold=float(np.quantile(scores, 1 - review_rate)),
        decline_threshold=float(np.quantile(scores, 1 - decline_rate)),
    )
