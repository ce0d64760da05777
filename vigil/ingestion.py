"""Ingestion and validation of one day: landing file → raw lake copy → validated partition +
quarantine.

A day is all-or-nothing: a file that cannot be read or lacks a required column raises
:class:`ContractError` naming the file and the column, and nothing is written for that day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd

from vigil import lake
from vigil.config import LABEL_MATURITY_DAYS, Paths
from vigil.features import HISTORY_DAYS
from vigil.contracts import ContractError, ValidationResult, validate_labels, validate_transactions

EMPTY_LABELS = {"transaction_id": "int64", "tx_fraud": "int64", "reported_at": "datetime64[ns]"}


@dataclass
class Landed:
    day: date
    source_file: str
    rows: int
    content_hash: str
    columns: list[str]


@dataclass
class Validated:
    day: date
    result: ValidationResult
    content_hash: str


def _read_landing(folder: Path, day: date, what: str) -> tuple[pd.DataFrame, Path] | None:
    src = lake.find_source(folder, day)
    if src is None:
        return None
    try:
        return lake.read_source(src), src
    except Exception as exc:  # unreadable, truncated, wrong encoding: block the day, name the file
        raise ContractError(f"{src}: cannot read {what} file: {type(exc).__name__}: {exc}") from exc


def _as_stored(frame: pd.DataFrame) -> pd.DataFrame:
    """Mixed-type object columns (CSV/JSON) are kept as text; validation coerces them."""
    obj = frame.select_dtypes(include="object").columns
    return frame.astype({c: "string" for c in obj}) if len(obj) else frame


def land_transactions(paths: Paths, day: date) -> Landed:
    loaded = _read_landing(paths.landing / "transactions", day, "transactions")
    if loaded is None:
        raise ContractError(f"no transactions file for {day} in {paths.landing / 'transactions'} (.parquet, .csv or .jsonl)")
    frame, src = loaded
    frame = _as_stored(frame).assign(source_file=str(src))
    lake.write_day(paths.raw, day, frame)
    return Landed(day, str(src), len(frame), lake.content_hash(frame), list(frame.columns))


def land_labels(paths: Paths, day: date) -> Landed:
    """Fraud reports *reported* on ``day``. A day without reports is an empty, valid partition."""
    loaded = _read_landing(paths.landing / "labels", day, "labels")
    if loaded is None:
        frame, src = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in EMPTY_LABELS.items()}), ""
    else:
        frame, src = loaded
    frame = _as_stored(frame).assign(source_file=str(src))
    lake.write_day(paths.lake / "raw_labels", day, frame)
    return Landed(day, str(src), len(frame), lake.content_hash(frame), list(frame.columns))


def validate_transactions_day(paths: Paths, day: date, now: datetime | None = None) -> Validated:
    raw = lake.read_day(paths.raw, day)
    if raw is None:
        raise ContractError(f"raw transactions for {day} are missing: materialize raw_transactions first")
    src = str(raw["source_file"].iloc[0]) if len(raw) else ""
    # ids admitted on the previous days of the feature history (bounded so a day's cost stays flat)
    earlier = [day - timedelta(days=i) for i in range(HISTORY_DAYS, 0, -1)]
    seen = lake.read_days(paths.validated, earlier, ["transaction_id"])
    result = validate_transactions(raw.drop(columns="source_file"), day, source_file=src, now=now,
                                   seen_ids=seen["transaction_id"] if len(seen) else None)
    lake.write_day(paths.validated, day, result.admitted)
    lake.write_day(paths.quarantine, day, result.quarantined)
    return Validated(day, result, lake.content_hash(result.admitted))


def validate_labels_day(paths: Paths, day: date) -> Validated:
    raw = lake.read_day(paths.lake / "raw_labels", day)
    if raw is None:
        raise ContractError(f"raw labels for {day} are missing: materialize label_feed first")
    src = str(raw["source_file"].iloc[0]) if len(raw) else ""
    # reports arrive within the maturity window: they may refer to transactions of these days
    days = [day - timedelta(days=i) for i in range(LABEL_MATURITY_DAYS + 1, -1, -1)]
    known = lake.read_days(paths.validated, days, ["transaction_id", "tx_datetime"])
    if known.empty:
        known = pd.DataFrame({"transaction_id": pd.Series([], dtype="int64"), "tx_datetime": pd.Series([], dtype="datetime64[ns]")})
    result = validate_labels(raw.drop(columns="source_file"), source_file=src, known=known)
    lake.write_day(paths.labels, day, result.admitted)
    lake.write_day(paths.quarantine / "labels", day, result.quarantined)
    return Validated(day, result, lake.content_hash(result.admitted))
