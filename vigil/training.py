"""Training sets from Feast point-in-time retrieval, the model fit, and its evaluation.

Time discipline (all relative to the training time T, the end of the last ingested day L):
- labels are those *reported* before T;
- the served model trains on the freshest days, up to the recent window (``Plan.fit_days``); a
  transaction there that is younger than the label-maturity window and not reported is not yet
  known to be genuine: ``label_rule`` says what happens to it (``drop``, the default: left out, so
  the young days contribute their early-reported frauds only; ``weight``: kept as genuine with the
  weight of the share of frauds reported by its age, which keeps the known fraud rate of each age
  at the mature one but, under a burst of new fraud, teaches the model that the new pattern's
  unreported rows are genuine: it lost to ``drop`` by 0.06-0.08 AP after a drift in
  ``benchmarks/adaptation.py``);
- champion and challenger are compared on the recent window (the last ``recent_days`` days) with
  the labels known at T, which both face alike (``recent_known_*``);
- the Handbook figures come from a backtest of the same recipe: a model trained on the weeks
  before a gap, tested on the most recent week whose labels are mature at T, as in the Handbook.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from vigil import evaluation, lake
from vigil.config import LABEL_MATURITY_DAYS, Paths
from vigil.feature_repo import FEATURE_SERVICE
from vigil.features import (FEATURE_VIEWS, HISTORY_DAYS, INTRADAY_FEATURES, MODEL_FEATURES, REQUEST_FEATURES,
                            epoch_seconds, intraday_offline, request_features)
from vigil.model import FraudModel, build_pipeline
from vigil.policy import DecisionPolicy, fit_policy

KEYS = ["customer_id", "terminal_id", "event_timestamp"]


@dataclass(frozen=True)
class Window:
    train_days: list[date]
    test_days: list[date]
    as_of: pd.Timestamp  # training time T

    @classmethod
    def ending(cls, last_day: date, train_days: int = 21, test_days: int = 7, gap_days: int = 7,
               first_day: date | None = None, min_train_days: int = 7) -> "Window":
        """The window for training at the end of ``last_day``.

        With ``first_day`` (the first day of data), training starts no earlier than
        ``first_day + HISTORY_DAYS``: before that the 30-day windows are still filling up and the
        model would learn feature values that serving never sees again.
        """
        test_end = last_day - timedelta(days=LABEL_MATURITY_DAYS)  # last day with mature labels
        test = [test_end - timedelta(days=i) for i in range(test_days - 1, -1, -1)]
        train_end = test[0] - timedelta(days=gap_days + 1)
        train = [train_end - timedelta(days=i) for i in range(train_days - 1, -1, -1)]
        if first_day is not None:
            warm = first_day + timedelta(days=HISTORY_DAYS)
            train = [d for d in train if d >= warm]
            if len(train) < min_train_days:
                need = HISTORY_DAYS + min_train_days + gap_days + test_days + LABEL_MATURITY_DAYS
                raise ValueError(f"not enough history to train at {last_day}: {(last_day - first_day).days + 1} days from "
                                 f"{first_day}, need at least {need} ({HISTORY_DAYS} warm-up + {min_train_days} train + "
                                 f"{gap_days} gap + {test_days} test + {LABEL_MATURITY_DAYS} label maturity)")
        return cls(train, test, pd.Timestamp(last_day) + pd.Timedelta(days=1))


LABEL_RULES = ("weight", "drop")
MIN_DELAY_SAMPLES = 30  # mature reported frauds needed to estimate the report delay; fewer: a linear ramp


@dataclass(frozen=True)
class Plan:
    """What one retraining at T trains and measures on (see the module docstring)."""

    backtest: Window  # train / gap / mature test week: the recipe's Handbook figures
    fit_days: list[date]  # the served model's training days: the freshest, up to the recent window
    recent_days: list[date]  # champion vs challenger, labels known at T
    as_of: pd.Timestamp

    @classmethod
    def at(cls, last_day: date, train_days: int = 21, test_days: int = 7, gap_days: int = 7, recent_days: int = 2,
           first_day: date | None = None, min_train_days: int = 7) -> "Plan":
        if recent_days < 1:
            raise ValueError(f"recent_days must be at least 1 (the window champion and challenger are compared on); "
                             f"got {recent_days}")
        backtest = Window.ending(last_day, train_days, test_days, gap_days, first_day, min_train_days)
        recent = [last_day - timedelta(days=i) for i in range(recent_days - 1, -1, -1)]
        fit_end = recent[0] - timedelta(days=1)
        fit = [fit_end - timedelta(days=i) for i in range(train_days - 1, -1, -1)]
        if first_day is not None:
            fit = [d for d in fit if d >= first_day + timedelta(days=HISTORY_DAYS)]
        return cls(backtest, fit, recent, backtest.as_of)

    @property
    def days(self) -> list[date]:
        """Every day the plan reads, in order."""
        return sorted(set(self.backtest.train_days) | set(self.backtest.test_days) | set(self.fit_days)
                      | set(self.recent_days))


def report_delay_cdf(delays_days: np.ndarray, maturity_days: float = LABEL_MATURITY_DAYS):
    """F(age): the share of frauds reported within ``age`` days, from the delays of the mature
    reported frauds (empirical; a linear ramp over the maturity window when there are too few)."""
    d = np.sort(np.asarray(delays_days, dtype=float))
    if len(d) < MIN_DELAY_SAMPLES:
        return lambda age: np.clip(np.asarray(age, dtype=float) / maturity_days, 0.0, 1.0)
    return lambda age: np.searchsorted(d, np.asarray(age, dtype=float), side="right") / len(d)


def label_weights(frame: pd.DataFrame, as_of: pd.Timestamp, rule: str = "drop",
                  maturity_days: float = LABEL_MATURITY_DAYS) -> np.ndarray:
    """Training weight of each row (``tx_datetime``, ``label``, ``reported_at``) at ``as_of``.

    Reported frauds and mature rows weigh 1. An unreported row younger than the maturity window
    weighs 0 under ``drop`` and F(age) under ``weight`` (:func:`report_delay_cdf`): at age a only
    F(a) of the frauds are known, so genuine rows of that age weighted F(a) keep the known fraud
    rate at its mature level instead of inflating it (``drop``) or diluting it (weight 1).
    """
    if rule not in LABEL_RULES:
        raise ValueError(f"label_rule must be one of {LABEL_RULES}; got {rule!r}")
    age = ((as_of - frame["tx_datetime"]) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    label = frame["label"].to_numpy()
    young = (age < maturity_days) & (label == 0)
    w = np.ones(len(frame))
    if rule == "drop":
        w[young] = 0.0
    else:
        mature_frauds = (label == 1) & (age >= maturity_days)
        delays = ((frame["reported_at"] - frame["tx_datetime"]) / pd.Timedelta(days=1)).to_numpy(dtype=float)[mature_frauds]
        w[young] = report_delay_cdf(delays, maturity_days)(age[young])
    return w


@dataclass
class TrainingResult:
    model: FraudModel
    policy: DecisionPolicy
    metrics: dict[str, float]
    train_metrics: dict[str, float]
    test_frame: pd.DataFrame
    lineage: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def point_in_time_features(store, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Feast point-in-time retrieval, keeping every entity row.

    Feast's file offline store drops an entity row whose entity has snapshots but none inside the
    TTL (all candidates filtered), and deduplicates rows with the same keys and timestamp. The
    correct value for such a row is "missing", so the result is joined back onto the entity frame:
    every transaction comes out exactly once.
    """
    ent = entity_df[KEYS].drop_duplicates()
    refs = [f"{v.name}:{f}" for v in FEATURE_VIEWS for f in v.features]  # the service's snapshot views
    got = store.get_historical_features(entity_df=ent, features=refs).to_df()
    got = got.drop_duplicates(KEYS)
    cols = KEYS + [c for v in FEATURE_VIEWS for c in v.features if c in got.columns]
    return entity_df.merge(got[cols], on=KEYS, how="left", validate="many_to_one")


def labelled_transactions(paths: Paths, days: list[date], as_of: pd.Timestamp, with_history: bool = False,
                          keep_immature: bool = False):
    """Transactions of ``days`` with the labels known at ``as_of`` (``label``, ``reported_at``: NaT
    when not reported), and the partitions' hashes (and, ``with_history``, every transaction of
    those days: the intraday features see them). Unreported rows younger than the maturity window
    are left out unless ``keep_immature`` (then :func:`label_weights` decides)."""
    hashes, frames = {}, []
    for d in days:
        f = lake.read_day(paths.validated, d)
        if f is None:
            raise FileNotFoundError(f"validated partition {d} is missing: run the daily pipeline for it first")
        hashes[d.isoformat()] = lake.content_hash(f)
        frames.append(f)
    tx = pd.concat(frames, ignore_index=True)
    label_days = [d for d in lake.available_days(paths.labels) if pd.Timestamp(d) < as_of]
    labels = lake.read_days(paths.labels, label_days, ["transaction_id", "tx_fraud", "reported_at"])
    known = labels[(labels["reported_at"] < as_of) & (labels["tx_fraud"] == 1)] if len(labels) else labels
    first = known.groupby("transaction_id")["reported_at"].min() if len(known) else pd.Series(dtype="datetime64[ns]")
    tx["reported_at"] = tx["transaction_id"].map(first).astype("datetime64[ns]")
    tx["label"] = tx["reported_at"].notna().astype("int8")
    history = tx
    if not keep_immature:
        mature = tx["tx_datetime"] <= as_of - pd.Timedelta(days=LABEL_MATURITY_DAYS)
        tx = tx[mature | (tx["label"] == 1)].reset_index(drop=True)
    return (tx, hashes, history) if with_history else (tx, hashes)


def known_compromised(paths: Paths, since: date, until: pd.Timestamp) -> pd.DataFrame:
    """Cards with a fraud among the transactions from ``since`` on, reported before ``until``, with
    the report time (``customer_id``, ``known_at``): the Handbook protocol drops such a card's test
    transactions from the day after its report (:func:`vigil.evaluation.exclude_known_compromised`)."""
    label_days = [d for d in lake.available_days(paths.labels) if since <= d and pd.Timestamp(d) < until]
    labels = lake.read_days(paths.labels, label_days, ["transaction_id", "tx_fraud", "reported_at"])
    empty = pd.DataFrame({"customer_id": pd.Series([], dtype="int64"), "known_at": pd.Series([], dtype="datetime64[ns]")})
    if labels.empty:
        return empty
    frauds = labels[(labels["tx_fraud"] == 1) & (labels["reported_at"] < until)]
    tx_days = [d for d in lake.available_days(paths.validated) if since <= d and pd.Timestamp(d) < until]
    tx = lake.read_days(paths.validated, tx_days, ["transaction_id", "customer_id", "tx_datetime"])
    if tx.empty or frauds.empty:
        return empty
    hit = frauds.merge(tx, on="transaction_id", how="inner")
    hit = hit[hit["tx_datetime"] >= pd.Timestamp(since)]
    return hit.rename(columns={"reported_at": "known_at"})[["customer_id", "known_at"]].reset_index(drop=True)


def model_features(store, tx: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every model feature for transactions (``transaction_id``, ``tx_datetime``, ``customer_id``,
    ``terminal_id``, ``tx_amount``): Feast point-in-time views, the request-time features through
    the same function the endpoint calls, and the intraday features from ``history`` (the
    transactions the cards made those days; default ``tx`` itself, right when ``tx`` holds whole
    days), strictly before each transaction."""
    frame = point_in_time_features(store, tx.assign(event_timestamp=tx["tx_datetime"].dt.tz_localize("UTC")))
    req = request_features(epoch_seconds(frame["tx_datetime"]), frame["tx_amount"].to_numpy(),
                           frame["customer_avg_amount_30d"].to_numpy(), frame["customer_std_amount_30d"].to_numpy())
    for i, name in enumerate(REQUEST_FEATURES):
        frame[name] = req[:, i]
    cols = ["transaction_id", "tx_datetime", "customer_id", "tx_amount"]
    seen = tx[cols] if history is None else pd.concat([history[cols], tx[cols]]).drop_duplicates("transaction_id")
    seen = seen.reset_index(drop=True)
    intraday = intraday_offline(seen).set_index(seen["transaction_id"])
    frame[INTRADAY_FEATURES] = intraday.loc[frame["transaction_id"].to_numpy()].to_numpy()
    return frame


def build_dataset(store, paths: Paths, days: list[date], as_of: pd.Timestamp,
                  keep_immature: bool = False) -> tuple[pd.DataFrame, dict[str, str]]:
    tx, hashes, history = labelled_transactions(paths, days, as_of, with_history=True, keep_immature=keep_immature)
    return model_features(store, tx, history), hashes


def plan_frames(frame: pd.DataFrame, plan: Plan, label_rule: str) -> dict[str, pd.DataFrame]:
    """The plan's four frames from one dataset of ``plan.days`` built with ``keep_immature``:
    ``backtest_train`` and ``test`` (mature rows), ``train`` (the fit days with ``weight`` by
    ``label_rule``, rows of weight 0 left out) and ``recent`` (every row, labels known at T)."""
    day = frame["tx_datetime"].dt.date
    age_ok = frame["tx_datetime"] <= plan.as_of - pd.Timedelta(days=LABEL_MATURITY_DAYS)
    mature = frame[age_ok | (frame["label"] == 1)]
    mday = mature["tx_datetime"].dt.date
    fit = frame[day.isin(set(plan.fit_days))]
    fit = fit.assign(weight=label_weights(fit, plan.as_of, label_rule))
    return {
        "backtest_train": mature[mday.isin(set(plan.backtest.train_days))].reset_index(drop=True),
        "test": mature[mday.isin(set(plan.backtest.test_days))].reset_index(drop=True),
        "train": fit[fit["weight"] > 0].reset_index(drop=True),
        "recent": frame[day.isin(set(plan.recent_days))].reset_index(drop=True),
    }


def fit(train: pd.DataFrame, params: dict | None = None, seed: int = 0) -> FraudModel:
    """The model on ``train`` (``weight`` column: per-row training weights, see :func:`label_weights`)."""
    if train["label"].nunique() < 2:
        raise ValueError(f"training set of {len(train)} rows has a single class: need frauds and genuine transactions")
    pipe = build_pipeline(params, seed)
    weight = train["weight"].to_numpy() if "weight" in train else None
    pipe.fit(train[MODEL_FEATURES], train["label"], model__sample_weight=weight)
    return FraudModel.from_pipeline(pipe, MODEL_FEATURES)


def train_and_evaluate(train: pd.DataFrame, test: pd.DataFrame, params: dict | None = None, seed: int = 0,
                       known: pd.DataFrame | None = None) -> TrainingResult:
    """Fit on ``train``; measure on ``test`` under the Handbook protocol (``known``: the cards known
    to be compromised, see :func:`known_compromised`) and on the whole week."""
    t0 = time.perf_counter()
    model = fit(train, params, seed)
    fit_s = time.perf_counter() - t0
    test = test.assign(score=model.predict(test[MODEL_FEATURES].to_numpy()))
    tr = train.assign(score=model.predict(train[MODEL_FEATURES].to_numpy()))
    return TrainingResult(
        model=model,
        policy=fit_policy(test["score"].to_numpy()),
        metrics=evaluation.metrics(test, known),
        train_metrics=evaluation.week_metrics(tr),
        test_frame=test,
        seconds={"fit": fit_s},
    )
