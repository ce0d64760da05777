"""The reference profile: statistics of the data a model was trained on, and the checks that hold
each new day against it (Breck et al., "Data Validation for Machine Learning": learn the
expectations from training data, then test every batch).

Row rules (the contract) judge one row; these judge a batch. They catch what no single row shows:
a column that turned mostly null, amounts scaled ×100 that stay under the ceiling, a day with a
fraction of its usual volume, a flood of cards the model has never seen.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from vigil import lake
from vigil.config import Paths
from vigil.sources import META

PROFILE_FILE = "data_profile.json"
IDS_FILE = "data_profile_ids.parquet"

NULL_RATES, UNSEEN_ENTITIES, AMOUNT_SHIFT, AMOUNT_OUTLIERS, DAILY_VOLUME = (
    "null_rates", "unseen_entities", "amount_shift", "amount_outliers", "daily_volume")
STAT_CHECKS = (NULL_RATES, UNSEEN_ENTITIES, AMOUNT_SHIFT, AMOUNT_OUTLIERS, DAILY_VOLUME)
BLOCKING = {AMOUNT_OUTLIERS, DAILY_VOLUME}  # the others warn: drift is monitoring's job, not a reason to stop


@dataclass(frozen=True)
class Thresholds:
    null_rate_increase: float = 0.01  # absolute, per column
    unseen_margin: float = 0.05  # share of rows above the reference's own rate of new entities
    amount_psi: float = 0.2  # population stability index over the reference deciles
    outlier_factor: float = 5.0  # "outlier" = above this × the reference 99.9th percentile
    outlier_share: float = 0.005
    volume_low: float = 0.5  # rows read / reference mean daily rows
    volume_high: float = 2.0


@dataclass
class StatCheck:
    name: str
    passed: bool
    severity: str  # "ERROR" blocks downstream, "WARN" does not
    actual: float
    expected: str
    threshold: float
    detail: str = ""


def build(paths: Paths, days: list[date]) -> tuple[dict, pd.DataFrame]:
    """Profile of the raw and admitted rows of ``days`` (the training window)."""
    raw_counts, null_counts, n_raw = [], {}, 0
    for d in days:
        raw = lake.read_day(paths.raw, d)
        if raw is None:
            continue
        raw_counts.append(len(raw))
        n_raw += len(raw)
        for c in raw.columns.difference(META):
            null_counts[c] = null_counts.get(c, 0) + int(raw[c].isna().sum())
    tx = lake.read_days(paths.validated, days, ["tx_datetime", "customer_id", "terminal_id", "tx_amount"])
    if tx.empty or not raw_counts:
        raise ValueError(f"no validated transactions in {days[0]}..{days[-1]} to profile")
    amounts = tx["tx_amount"].to_numpy()
    edges = np.unique(np.quantile(amounts, np.linspace(0, 1, 11)))
    # how many rows of a typical day come from entities unseen in the days before it
    last_week = tx["tx_datetime"] >= pd.Timestamp(days[-1]) - pd.Timedelta(days=6)
    earlier = tx[~last_week]
    unseen = {k: float((~tx.loc[last_week, k].isin(earlier[k])).mean()) if len(earlier) else 0.0
              for k in ("customer_id", "terminal_id")}
    profile = {
        "days": [days[0].isoformat(), days[-1].isoformat()],
        "rows": int(len(tx)),
        "daily_rows_mean": float(np.mean(raw_counts)),
        "daily_rows_min": int(np.min(raw_counts)),
        "daily_rows_max": int(np.max(raw_counts)),
        "null_rates": {c: n / n_raw for c, n in null_counts.items()},
        "amount_edges": edges.tolist(),
        "amount_bin_shares": _shares(amounts, edges).tolist(),
        "amount_p999": float(np.quantile(amounts, 0.999)),
        "amount_median": float(np.median(amounts)),
        "unseen_share": unseen,
    }
    ids = pd.concat([pd.DataFrame({"kind": "customer_id", "id": tx["customer_id"].unique()}),
                     pd.DataFrame({"kind": "terminal_id", "id": tx["terminal_id"].unique()})], ignore_index=True)
    return profile, ids


def save(profile: dict, ids: pd.DataFrame, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PROFILE_FILE).write_text(json.dumps(profile, indent=1))
    ids.to_parquet(folder / IDS_FILE, index=False)
    return [folder / PROFILE_FILE, folder / IDS_FILE]


def load(folder: Path) -> tuple[dict, dict[str, pd.Index]] | None:
    f = Path(folder) / PROFILE_FILE
    if not f.exists():
        return None
    ids = pd.read_parquet(Path(folder) / IDS_FILE)
    return json.loads(f.read_text()), {k: pd.Index(g["id"].to_numpy()) for k, g in ids.groupby("kind")}


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    inner = edges[1:-1]
    counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(inner) + 1)
    return counts / max(len(values), 1)


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = 1e-4) -> float:
    e, a = np.clip(expected, eps, None), np.clip(actual, eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


def check_day(profile: dict, ids: dict[str, pd.Index], raw: pd.DataFrame, admitted: pd.DataFrame,
              t: Thresholds = Thresholds()) -> list[StatCheck]:
    """The batch statistics of one day's raw rows (as read) and admitted rows against the profile."""
    out = []
    sev = lambda name: "ERROR" if name in BLOCKING else "WARN"  # noqa: E731

    # null rates of every column the reference knew, on the rows as read
    increases = {c: float(raw[c].isna().mean()) - ref if c in raw else 1.0 - ref
                 for c, ref in profile["null_rates"].items()}
    worst = max(increases, key=increases.get) if increases else ""
    inc = increases.get(worst, 0.0)
    out.append(StatCheck(NULL_RATES, inc <= t.null_rate_increase, sev(NULL_RATES), round(inc, 6),
                         f"null rate per column at most the reference's + {t.null_rate_increase}", t.null_rate_increase,
                         f"worst column {worst}: " + ", ".join(f"{c} +{v:.4f}" for c, v in sorted(increases.items()) if v > 0)))

    # share of admitted rows whose customer / terminal the model never saw
    shares = {k: float((~admitted[k].isin(ids.get(k, pd.Index([])))).mean()) if len(admitted) else 0.0
              for k in ("customer_id", "terminal_id")}
    excess = {k: shares[k] - profile["unseen_share"][k] for k in shares}
    k = max(excess, key=excess.get)
    out.append(StatCheck(UNSEEN_ENTITIES, excess[k] <= t.unseen_margin, sev(UNSEEN_ENTITIES), round(shares[k], 6),
                         f"{k} unseen share ≤ reference {profile['unseen_share'][k]:.4f} + {t.unseen_margin}",
                         profile["unseen_share"][k] + t.unseen_margin,
                         ", ".join(f"{c}: {shares[c]:.4f} (reference {profile['unseen_share'][c]:.4f})" for c in shares)))

    amounts = admitted["tx_amount"].to_numpy() if len(admitted) else np.array([])
    edges = np.asarray(profile["amount_edges"])
    value = psi(np.asarray(profile["amount_bin_shares"]), _shares(amounts, edges)) if len(amounts) else 0.0
    median = float(np.median(amounts)) if len(amounts) else float("nan")
    out.append(StatCheck(AMOUNT_SHIFT, value <= t.amount_psi, sev(AMOUNT_SHIFT), round(value, 6),
                         f"PSI of tx_amount over the reference deciles ≤ {t.amount_psi}", t.amount_psi,
                         f"median {median:.2f} vs reference {profile['amount_median']:.2f}"))

    limit = t.outlier_factor * profile["amount_p999"]
    share = float((amounts > limit).mean()) if len(amounts) else 0.0
    out.append(StatCheck(AMOUNT_OUTLIERS, share <= t.outlier_share, sev(AMOUNT_OUTLIERS), round(share, 6),
                         f"share of amounts above {limit:.2f} ({t.outlier_factor}× reference p99.9) ≤ {t.outlier_share}",
                         t.outlier_share, f"{int((amounts > limit).sum())} rows above {limit:.2f}"))

    ratio = len(raw) / profile["daily_rows_mean"]
    out.append(StatCheck(DAILY_VOLUME, t.volume_low <= ratio <= t.volume_high, sev(DAILY_VOLUME), round(ratio, 4),
                         f"rows read / reference daily mean ({profile['daily_rows_mean']:.0f}) in [{t.volume_low}, {t.volume_high}]",
                         t.volume_low, f"{len(raw)} rows read"))
    return out


def as_dict(c: StatCheck) -> dict:
    return asdict(c)
