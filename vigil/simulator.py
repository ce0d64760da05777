"""A seeded, vectorised card-network simulator after the Fraud Detection Handbook (Le Borgne et al.).

It is Vigil's source system for demos and tests: it writes one transactions file per day into the
landing zone and a delayed label feed (fraud reports dated by when they were reported), and can
inject named drift scenarios from a chosen day so the monitoring loop has something real to catch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

SECONDS_PER_DAY = 86_400
TX_COLUMNS = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount"]
LABEL_COLUMNS = ["transaction_id", "tx_fraud", "reported_at"]

SCENARIOS = ("concept", "amount_inflation", "new_segment", "upstream_breakage")


@dataclass(frozen=True)
class Drift:
    """A drift scenario switched on from ``day`` (0-based index into the simulated days).

    - ``concept``: a card-testing ring; every day ``intensity`` of the customers are compromised
      for 7 days and the fraudster adds small purchases (1-10) at random terminals. Features the
      model was trained on barely separate them from genuine small purchases.
    - ``amount_inflation``: every amount is multiplied by ``1 + intensity`` (covariate shift).
    - ``new_segment``: a block of new customers (``intensity`` × customers) with high spend appears.
    - ``upstream_breakage``: the written files break: nulls and ×100 amounts in ``intensity`` of
      the rows, and ``tx_amount`` renamed to ``amount``. Applied when writing the landing files.
    """

    scenario: str
    day: int
    intensity: float = 0.05

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown drift scenario {self.scenario!r}; choose one of {SCENARIOS}")
        if self.day < 0:
            raise ValueError("drift day must be >= 0")


@dataclass
class Simulation:
    transactions: pd.DataFrame  # TX_COLUMNS + tx_fraud, tx_fraud_scenario (ground truth)
    labels: pd.DataFrame  # LABEL_COLUMNS: the delayed fraud-report feed
    start_date: date
    n_days: int
    drift: list[Drift] = field(default_factory=list)

    def day(self, i: int) -> date:
        return self.start_date + timedelta(days=i)


def _customers(rng: np.random.Generator, n: int, id_offset: int = 0) -> pd.DataFrame:
    mean = rng.uniform(5, 100, n)
    return pd.DataFrame(
        {
            "customer_id": np.arange(id_offset, id_offset + n, dtype=np.int64),
            "x": rng.uniform(0, 100, n),
            "y": rng.uniform(0, 100, n),
            "mean_amount": mean,
            "std_amount": mean / 2,
            "tx_per_day": rng.uniform(0, 4, n),
        }
    )


def _genuine_transactions(
    rng: np.random.Generator,
    customers: pd.DataFrame,
    terminal_xy: np.ndarray,
    n_days: int,
    first_day: int = 0,
    radius: float = 5.0,
) -> pd.DataFrame:
    tree = cKDTree(terminal_xy)
    near = tree.query_ball_point(customers[["x", "y"]].to_numpy(), r=radius)
    n_near = np.fromiter((len(a) for a in near), dtype=np.int64, count=len(near))
    offsets = np.concatenate([[0], np.cumsum(n_near)[:-1]])
    flat = np.concatenate([np.asarray(a, dtype=np.int64) for a in near]) if n_near.sum() else np.zeros(0, np.int64)

    days = np.arange(first_day, n_days)
    counts = rng.poisson(customers["tx_per_day"].to_numpy()[:, None], size=(len(customers), len(days)))
    counts[n_near == 0, :] = 0  # a customer with no terminal in reach cannot transact
    cust_idx = np.repeat(np.repeat(np.arange(len(customers)), len(days)), counts.ravel())
    day_idx = np.repeat(np.tile(days, len(customers)), counts.ravel())
    n = len(cust_idx)

    seconds = rng.normal(SECONDS_PER_DAY / 2, 20_000, n)
    keep = (seconds > 0) & (seconds < SECONDS_PER_DAY)
    cust_idx, day_idx, seconds = cust_idx[keep], day_idx[keep], seconds[keep].astype(np.int64)
    n = len(cust_idx)

    mean = customers["mean_amount"].to_numpy()[cust_idx]
    std = customers["std_amount"].to_numpy()[cust_idx]
    amount = rng.normal(mean, std)
    neg = amount < 0
    amount[neg] = rng.uniform(0, 2 * mean[neg])
    amount = np.round(amount, 2)

    pick = (rng.random(n) * n_near[cust_idx]).astype(np.int64)
    terminal_idx = flat[offsets[cust_idx] + pick]
    return pd.DataFrame(
        {
            "customer_idx": cust_idx,
            "customer_id": customers["customer_id"].to_numpy()[cust_idx],
            "terminal_id": terminal_idx.astype(np.int64),
            "day": day_idx,
            "seconds": seconds,
            "tx_amount": amount,
        }
    )


def simulate(
    n_customers: int = 5_000,
    n_terminals: int = 10_000,
    n_days: int = 183,
    start_date: date | str = "2025-04-01",
    seed: int = 42,
    drift: list[Drift] | None = None,
) -> Simulation:
    """Simulate ``n_days`` of card traffic. Same arguments, same data."""
    start = date.fromisoformat(start_date) if isinstance(start_date, str) else start_date
    drift = list(drift or [])
    rng = np.random.default_rng(seed)
    customers = _customers(rng, n_customers)
    terminal_xy = rng.uniform(0, 100, size=(n_terminals, 2))
    tx = _genuine_transactions(rng, customers, terminal_xy, n_days)

    for d in drift:
        if d.scenario == "new_segment" and d.day < n_days:
            seg = _customers(rng, max(1, int(n_customers * d.intensity)), id_offset=n_customers)
            seg["mean_amount"] = rng.uniform(150, 300, len(seg))
            seg["std_amount"] = seg["mean_amount"] / 4
            seg_tx = _genuine_transactions(rng, seg, terminal_xy, n_days, first_day=d.day)
            seg_tx["customer_idx"] += n_customers
            customers = pd.concat([customers, seg], ignore_index=True)
            tx = pd.concat([tx, seg_tx], ignore_index=True)
        if d.scenario == "amount_inflation":
            tx.loc[tx["day"] >= d.day, "tx_amount"] = np.round(tx.loc[tx["day"] >= d.day, "tx_amount"] * (1 + d.intensity), 2)

    fraud = np.zeros(len(tx), dtype=np.int8)
    scenario = np.zeros(len(tx), dtype=np.int8)

    # Scenario 1: any amount above 220 is fraudulent.
    s1 = tx["tx_amount"].to_numpy() > 220
    fraud[s1], scenario[s1] = 1, 1

    # Scenario 2: two terminals a day compromised for 28 days; all their transactions are fraud.
    comp_t = np.zeros((n_terminals, n_days + 28), dtype=bool)
    for day in range(n_days):
        comp_t[rng.choice(n_terminals, 2, replace=False), day : day + 28] = True
    s2 = comp_t[tx["terminal_id"].to_numpy(), tx["day"].to_numpy()]
    fraud[s2], scenario[s2] = 1, 2

    # Scenario 3: three customers a day compromised for 14 days; a third of their transactions
    # are fraudulent with the amount multiplied by 5.
    n_cust_all = len(customers)
    comp_c = np.zeros((n_cust_all, n_days + 14), dtype=bool)
    for day in range(n_days):
        comp_c[rng.choice(n_customers, 3, replace=False), day : day + 14] = True
    s3 = comp_c[tx["customer_idx"].to_numpy(), tx["day"].to_numpy()] & (rng.random(len(tx)) < 1 / 3)
    amounts = tx["tx_amount"].to_numpy().copy()
    amounts[s3] = np.round(amounts[s3] * 5, 2)
    tx["tx_amount"] = amounts
    fraud[s3], scenario[s3] = 1, 3
    tx["tx_fraud"], tx["tx_fraud_scenario"] = fraud, scenario

    for d in drift:
        if d.scenario == "concept" and d.day < n_days:
            tx = pd.concat([tx, _card_testing(rng, customers, n_terminals, n_days, d)], ignore_index=True)

    return _finish(rng, tx, start, n_days, drift)


def _card_testing(rng: np.random.Generator, customers: pd.DataFrame, n_terminals: int, n_days: int, d: Drift) -> pd.DataFrame:
    """Concept drift: compromised cards get bursts of small purchases at random terminals."""
    rows = []
    per_day = max(1, int(len(customers) * d.intensity))
    for day in range(d.day, n_days):
        victims = rng.choice(len(customers), per_day, replace=False)
        for burst_day in range(day, min(day + 7, n_days)):
            k = rng.poisson(3, per_day)
            idx = np.repeat(victims, k)
            rows.append(
                pd.DataFrame(
                    {
                        "customer_idx": idx,
                        "customer_id": customers["customer_id"].to_numpy()[idx],
                        "terminal_id": rng.integers(0, n_terminals, len(idx)),
                        "day": burst_day,
                        "seconds": rng.integers(0, SECONDS_PER_DAY, len(idx)),
                        "tx_amount": np.round(rng.uniform(1, 10, len(idx)), 2),
                        "tx_fraud": np.int8(1),
                        "tx_fraud_scenario": np.int8(4),
                    }
                )
            )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _finish(rng: np.random.Generator, tx: pd.DataFrame, start: date, n_days: int, drift: list[Drift]) -> Simulation:
    epoch = pd.Timestamp(start)
    tx["tx_datetime"] = epoch + pd.to_timedelta(tx["day"].to_numpy() * SECONDS_PER_DAY + tx["seconds"].to_numpy(), unit="s")
    tx = tx.sort_values(["tx_datetime", "customer_id"], kind="stable").reset_index(drop=True)
    tx["transaction_id"] = np.arange(len(tx), dtype=np.int64)
    tx = tx[TX_COLUMNS + ["tx_fraud", "tx_fraud_scenario"]]

    # The label feed: each fraud is reported between 6 hours and 7 days later (inside the
    # label-maturity window); genuine transactions are never reported.
    frauds = tx[tx["tx_fraud"] == 1]
    delay = pd.to_timedelta(rng.uniform(0.25, 7.0, len(frauds)) * SECONDS_PER_DAY, unit="s").round("s")
    labels = pd.DataFrame(
        {
            "transaction_id": frauds["transaction_id"].to_numpy(),
            "tx_fraud": np.int8(1),
            "reported_at": (frauds["tx_datetime"] + delay).to_numpy(),
        }
    ).sort_values("reported_at", kind="stable", ignore_index=True)
    return Simulation(tx, labels, start, n_days, drift)


def write_landing(sim: Simulation, landing: Path, days: range | None = None, labels: bool = True) -> list[Path]:
    """Write one transactions file per day and the label feed by report day (Parquet).

    Only the source columns are written: the ground truth stays out of the landing zone, as it
    would in a real card network. Reports dated after the last simulated day are written too (they
    have simply not "arrived" yet for a pipeline that runs day by day).
    """
    landing = Path(landing)
    (landing / "transactions").mkdir(parents=True, exist_ok=True)
    (landing / "labels").mkdir(parents=True, exist_ok=True)
    days = days if days is not None else range(sim.n_days)
    breakage = [d for d in sim.drift if d.scenario == "upstream_breakage"]
    tx_day = (sim.transactions["tx_datetime"] - pd.Timestamp(sim.start_date)).dt.days.to_numpy()
    written = []
    rng = np.random.default_rng(len(sim.transactions))
    for i in days:
        frame = sim.transactions.loc[tx_day == i, TX_COLUMNS].reset_index(drop=True)
        for d in breakage:
            if i >= d.day:
                frame = _break(rng, frame, d.intensity)
        path = landing / "transactions" / f"{sim.day(i).isoformat()}.parquet"
        frame.to_parquet(path, index=False)
        written.append(path)
    if not labels:
        return written
    lab_day = (sim.labels["reported_at"] - pd.Timestamp(sim.start_date)).dt.days.to_numpy()
    lo, hi = min(days, default=0), max(days, default=-1)
    for i in sorted(set(lab_day[(lab_day >= lo)].tolist())):
        if i > hi + 8:
            continue
        frame = sim.labels.loc[lab_day == i].reset_index(drop=True)
        path = landing / "labels" / f"{sim.day(i).isoformat()}.parquet"
        frame.to_parquet(path, index=False)
        written.append(path)
    return written


def _break(rng: np.random.Generator, frame: pd.DataFrame, share: float) -> pd.DataFrame:
    frame = frame.copy()
    n = len(frame)
    hit = rng.random(n)
    frame["tx_amount"] = frame["tx_amount"].astype("float64")
    frame.loc[hit < share / 2, "tx_amount"] = np.nan
    frame.loc[(hit >= share / 2) & (hit < share), "tx_amount"] *= 100
    return frame.rename(columns={"tx_amount": "amount"})
