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


def fit_policy(scores: np.ndarray, review_rate: float = 0.02, decline_rate: float = 0.005) -> DecisionPolicy:
    """Thresholds that send ``review_rate`` of traffic to review or decline, ``decline_rate`` to decline."""
    scores = np.asarray(scores, dtype=np.float64)
    return DecisionPolicy(
        review_threshold=float(np.quantile(scores, 1 - review_rate)),
        decline_threshold=float(np.quantile(scores, 1 - decline_rate)),
    )
