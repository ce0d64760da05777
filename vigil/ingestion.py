"""Ingestion and validation of one day: source (landing files or a table) → raw lake copy →
validated partition + quarantine.

A day is all-or-nothing: a file that cannot be read or lacks a required column raises
:class:`ContractError` naming the file and the column, and nothing is written for that day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import pandas as pd

from vigil import lake
from vigil.config import LABEL_MATURITY_DAYS, Paths
from vigil.features import HISTORY_DAYS
from vigil.contracts import DEFAULT_AMOUNT_CEILING, ContractError, ValidationResult, validate_labels, validate_transactions
from vigil.data_profile import StatCheck, Thresholds, check_day
from vigil.sources import FileSource, PostgresSource

Source = FileSource | PostgresSource
EMPTY_LABELS = {"transaction_id": "int64", "tx_fraud": "int64", "reported_at": "datetime64[ns]"}
META_TYPES = {"source_file": "string", "source_row": "int64", "read_error": "string"}


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
    stats: list[StatCheck] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # why the day was held back (empty: admitted to the lake)


def default_sources(paths: Paths) -> tuple[Source, Source]:
    """The embedded default: landing files under ``$VIGIL_HOME/landing``."""
    return FileSource(paths.landing / "transactions"), FileSource(paths.landing / "labels")


def land_transactions(paths: Paths, day: date, source: Source | None = None) -> Landed:
    """Copy the day's rows, as read, into the raw lake. No rows at all blocks the day: a card
    network without a single transaction in a day is an outage upstream, not data."""
    source = source or default_sources(paths)[0]
    frame = source.read(day)
    if frame is None:
        raise ContractError(f"no transactions for {day} in {source.describe()} (.parquet, .csv or .jsonl file, or a folder of them)")
    if frame.empty:
        where = ", ".join(map(str, source.files(day))) if isinstance(source, FileSource) else source.describe()
        raise ContractError(f"{where}: no transaction rows for {day} (header only?)")
    files = sorted(frame["source_file"].unique())
    lake.write_day(paths.raw, day, frame)
    return Landed(day, ", ".join(map(str, files)), len(frame), lake.content_hash(frame), list(frame.columns))


def land_labels(paths: Paths, day: date, source: Source | None = None) -> Landed:
    """Fraud reports *reported* on ``day``. A day without reports is an empty, valid partition."""
    source = source or default_sources(paths)[1]
    frame = source.read(day)
    if frame is None:
        frame = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in {**EMPTY_LABELS, **META_TYPES}.items()})
    lake.write_day(paths.lake / "raw_labels", day, frame)
    files = sorted(frame["source_file"].unique())
    return Landed(day, ", ".join(map(str, files)), len(frame), lake.content_hash(frame), list(frame.columns))


def validate_transactions_day(paths: Paths, day: date, now: datetime | None = None,
                              amount_ceiling: float = DEFAULT_AMOUNT_CEILING, max_quarantine_rate: float = 1.0,
                              reference: tuple | None = None, thresholds: Thresholds = Thresholds()) -> Validated:
    """Contract per row, then the batch statistics against ``reference`` (profile, ids).

    A day whose quarantine rate or a blocking statistic fails is *held*: its admitted rows go to
    ``lake/held`` instead of the validated lake (replacing any earlier version of the day), so no
    later day's features read it until the source is fixed and the day re-run.
    """
    raw = lake.read_day(paths.raw, day)
    if raw is None:
        raise ContractError(f"raw transactions for {day} are missing: materialize raw_transactions first")
    # ids admitted on the previous days of the feature history (bounded so a day's cost stays flat)
    earlier = [day - timedelta(days=i) for i in range(HISTORY_DAYS, 0, -1)]
    ids = pd.to_numeric(raw["transaction_id"], errors="coerce") if "transaction_id" in raw else pd.Series([], dtype="float64")
    # only ids inside this batch's range can collide: partitions outside it are skipped by their stats
    seen = pd.Series(lake.values_in_range(paths.validated, earlier, "transaction_id",
                                              int(max(ids.min(), 0)), int(min(ids.max(), 2**63 - 1)))
                     if ids.notna().any() else [], dtype="int64")
    result = validate_transactions(raw, day, now=now or datetime.now(timezone.utc).replace(tzinfo=None),
                                   amount_ceiling=amount_ceiling,
                                   seen_ids=seen if len(seen) else None)
    stats = check_day(*reference, raw, result.admitted, thresholds) if reference else []
    held = [f"quarantine_rate {result.quarantine_rate:.2%} > {max_quarantine_rate:.2%}"] \
        if result.quarantine_rate > max_quarantine_rate else []
    held += [f"{c.name} {c.actual} (expected {c.expected})" for c in stats if not c.passed and c.severity == "ERROR"]
    lake.write_day(paths.quarantine, day, result.quarantined)
    if held:
        lake.write_day(paths.held, day, result.admitted)
        lake.day_file(paths.held, day, ".txt").write_text("\n".join(held) + "\n")
        lake.day_file(paths.validated, day).unlink(missing_ok=True)
    else:
        lake.write_day(paths.validated, day, result.admitted)
        for suffix in (".parquet", ".txt"):
            lake.day_file(paths.held, day, suffix).unlink(missing_ok=True)
    return Validated(day, result, lake.content_hash(result.admitted), stats, held)


def held_reason(paths: Paths, day: date) -> str | None:
    f = lake.day_file(paths.held, day, ".txt")
    return f.read_text().strip() if f.exists() else None


def validate_labels_day(paths: Paths, day: date) -> Validated:
    raw = lake.read_day(paths.lake / "raw_labels", day)
    if raw is None:
        raise ContractError(f"raw labels for {day} are missing: materialize label_feed first")
    # reports arrive within the maturity window: they may refer to transactions of these days
    days = [day - timedelta(days=i) for i in range(LABEL_MATURITY_DAYS + 1, -1, -1)]
    known = lake.read_days(paths.validated, days, ["transaction_id", "tx_datetime"])
    if known.empty:
        known = pd.DataFrame({"transaction_id": pd.Series([], dtype="int64"), "tx_datetime": pd.Series([], dtype="datetime64[ns]")})
    result = validate_labels(raw, known=known)
    lake.write_day(paths.labels, day, result.admitted)
    lake.write_day(paths.quarantine / "labels", day, result.quarantined)
    return Validated(day, result, lake.content_hash(result.admitted))
