"""When to retrain, besides drift: live performance that dropped once its labels are final, and a
volume of new fraud reports since the last training. Plain data in, a decision with its evidence
out; the Dagster sensor (``pipelines.sensors``) turns a decision into one run per episode.

Cool-down is counted in *data days*, not wall time, so replays and live data behave alike: a
trigger fires only when at least ``cooldown_days`` validated days exist after the training time of
the latest model (registered or rejected); retraining twice on the same data learns nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pandas as pd

DEFAULT_COOLDOWN_DAYS = 1
DEFAULT_AP_FLOOR = 0.3  # live AP of a day whose reports are complete
DEFAULT_LABEL_VOLUME = 500  # new reported frauds since the last training (~6 days at the default scale)


@dataclass(frozen=True)
class Decision:
    trigger: str  # "performance" | "label_volume" | "" (no)
    episode: str  # the run key's tail: one run per episode
    evidence: dict = field(default_factory=dict)
    reason: str = ""

    @property
    def fire(self) -> bool:
        return bool(self.trigger)


def last_training_day(lineages: list[dict]) -> date | None:
    """The last day the latest model (of any stage) trained with: its training time T minus one day."""
    times = [pd.Timestamp(x["as_of"]) for x in lineages if x and x.get("as_of")]
    return (max(times) - pd.Timedelta(days=1)).date() if times else None


def cooling_down(last_trained: date | None, latest_day: date | None, cooldown_days: int = DEFAULT_COOLDOWN_DAYS) -> bool:
    if last_trained is None or latest_day is None:
        return False
    return (latest_day - last_trained).days < cooldown_days


def performance_drop(days: list[dict], after: date | None, floor: float = DEFAULT_AP_FLOOR,
                     min_frauds: int = 10) -> Decision:
    """The first served day after ``after`` whose labels are final (``label_maturity`` 1) with
    ``live_average_precision`` under ``floor`` (and enough reported frauds to mean something)."""
    for d in sorted(days, key=lambda r: r["day"]):
        if after is not None and date.fromisoformat(d["day"]) <= after:
            continue
        ap = d.get("live_average_precision")
        if d.get("label_maturity", 0) >= 1 and d.get("reported_frauds", 0) >= min_frauds and ap is not None \
                and ap == ap and ap < floor:
            return Decision("performance", f"{d['day']}", {"day": d["day"], "live_average_precision": round(ap, 4),
                                                           "floor": floor, "reported_frauds": d["reported_frauds"]},
                            f"live AP {ap:.3f} on {d['day']} (labels final) is under the floor {floor}")
    return Decision("", "", reason=f"no served day after {after} with final labels under AP {floor}")


def label_volume(reported_at: pd.Series, since: pd.Timestamp | None, threshold: int = DEFAULT_LABEL_VOLUME) -> Decision:
    """Fires when ``threshold`` fraud reports arrived after ``since`` (the last training time)."""
    new = int((reported_at >= since).sum()) if since is not None else int(len(reported_at))
    if new >= threshold:
        return Decision("label_volume", f"{since.date() if since is not None else 'start'}-{threshold}",
                        {"new_reports": new, "threshold": threshold, "since": str(since)},
                        f"{new} fraud reports since the last training (threshold {threshold})")
    return Decision("", "", {"new_reports": new}, f"{new} new fraud reports, threshold {threshold}")
