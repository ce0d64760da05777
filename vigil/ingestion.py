"""Ingestion and validation of one day: source (landing files or a table) → raw lake copy →
validated partition + quarantine.

A day is all-or-nothing: a file that cannot be read or lacks a required column raises
:class:`ContractError` naming the file and the column, and nothing is written for that day.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone

import pandas as pd

from vigil import lake
from vigil.config import LABEL_MATURITY_DAYS, Paths
from vigil.features import HISTORY_DAYS
from vigil.contracts import (DEFAULT_AMOUNT_CEILING, LABEL_REQUIRED, TX_REQUIRED, ContractError, ValidationResult,
                             validate_labels, validate_transactions)
from vigil.data_profile import StatCheck, Thresholds, check_day
from vigil.sources import DayBatch, DaySource, FileReport, FileSource

Source = DaySource
EMPTY_LABELS = {"transaction_id": "int64", "tx_fraud": "int64", "reported_at": "datetime64[ns]"}
META_TYPES = {"source_file": "string", "source_row": "int64", "read_error": "string", "source_text": "string"}


@dataclass
class Landed:
    day: date
    source_file: str
    rows: int
    content_hash: str
    columns: list[str]
    files: list[FileReport] = field(default_factory=list)  # every file of the day: read or ignored, with counts
    optional_columns: dict[str, int] = field(default_factory=dict)  # column -> parts that have it


@dataclass
class Validated:
    day: date
    result: ValidationResult
    content_hash: str
    stats: list[StatCheck] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # why the day was held back (empty: admitted to the lake)
    files: list[dict] = field(default_factory=list)  # per file: bytes, rows read, admitted, quarantined


def default_sources(paths: Paths) -> tuple[Source, Source]:
    """The embedded default: landing files under ``$VIGIL_HOME/landing``."""
    return FileSource(paths.landing / "transactions"), FileSource(paths.landing / "labels")


MANIFEST = ".files.json"


def _land(folder, day: date, batch: DayBatch, frame: pd.DataFrame, signature: str = "") -> Landed:
    """Write the day's rows and its manifest (the account of every file, and the source's
    signature of the day as it was before the read) beside them."""
    lake.write_day(folder, day, frame)
    lake.day_file(folder, day, MANIFEST).write_text(json.dumps(
        {"files": [asdict(f) for f in batch.files], "optional_columns": batch.extra_columns, "signature": signature},
        indent=1))
    files = sorted(frame["source_file"].unique())
    return Landed(day, ", ".join(map(str, files)), len(frame), lake.content_hash(frame), list(frame.columns),
                  batch.files, batch.extra_columns)


def source_signature(source, day: date) -> str:
    """The source's signature of the day (landing files: names and modification times), or ""
    for a source without one (tables: the sensor keeps their fingerprints in its cursor)."""
    sign = getattr(source, "signature", None)
    return sign(day) if sign is not None else ""


def manifest(folder, day: date) -> dict:
    f = lake.day_file(folder, day, MANIFEST)
    return json.loads(f.read_text()) if f.exists() else {"files": [], "optional_columns": {}}


def land_transactions(paths: Paths, day: date, source: Source | None = None) -> Landed:
    """Copy the day's rows, as read, into the raw lake. No rows at all blocks the day: a card
    network without a single transaction in a day is an outage upstream, not data."""
    source = source or default_sources(paths)[0]
    signature = source_signature(source, day)  # before the read: a file replaced during it looks changed
    batch = source.read_day(day, required=tuple(TX_REQUIRED))
    if batch.frame is None:
        ignored = [f.file for f in batch.files]
        raise ContractError(f"no transactions for {day} in {source.describe()} (.parquet, .csv or .jsonl file, "
                            f"optionally compressed, or a folder of them)" + (f"; ignored: {ignored}" if ignored else ""))
    if batch.frame.empty:
        where = ", ".join(f.file for f in batch.files if f.status == "read")
        raise ContractError(f"{where}: no transaction rows for {day} (header only?)")
    return _land(paths.raw, day, batch, batch.frame, signature)


def land_labels(paths: Paths, day: date, source: Source | None = None) -> Landed:
    """Fraud reports *reported* on ``day``. A day without reports is an empty, valid partition."""
    source = source or default_sources(paths)[1]
    signature = source_signature(source, day)
    batch = source.read_day(day, required=tuple(LABEL_REQUIRED))
    frame = batch.frame
    if frame is None:
        frame = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in {**EMPTY_LABELS, **META_TYPES}.items()})
    return _land(paths.raw_labels, day, batch, frame, signature)


def per_file(raw: pd.DataFrame, result: ValidationResult, files: list[dict]) -> list[dict]:
    """Rows read, admitted and quarantined per landing file (ignored files listed with zeros)."""
    read = raw["source_file"].value_counts() if "source_file" in raw else pd.Series(dtype="int64")
    quarantined = result.quarantined["source_file"].value_counts() if len(result.quarantined) else pd.Series(dtype="int64")
    out = []
    for f in files or [{"file": name, "bytes": 0, "status": "read"} for name in read.index]:
        n, q = int(read.get(f["file"], 0)), int(quarantined.get(f["file"], 0))
        out.append({"file": f["file"], "status": f.get("status", "read"), "bytes": f.get("bytes", 0), "read": n,
                    "admitted": n - q, "quarantined": q, "read_errors": f.get("read_errors", 0),
                    "headers_skipped": f.get("headers_skipped", 0)})
    return out


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
    files = per_file(raw, result, manifest(paths.raw, day)["files"])
    return Validated(day, result, lake.content_hash(result.admitted), stats, held, files)


def validate_labels_day(paths: Paths, day: date) -> Validated:
    raw = lake.read_day(paths.raw_labels, day)
    if raw is None:
        raise ContractError(f"raw labels for {day} are missing: materialize label_feed first")
    # reports arrive within the maturity window: they may refer to transactions of these days
    days = [day - timedelta(days=i) for i in range(LABEL_MATURITY_DAYS + 1, -1, -1)]
    known = lake.read_days(paths.validated, days, ["transaction_id", "tx_datetime"])
    if known.empty:
        known = pd.DataFrame({"transaction_id": pd.Series([], dtype="int64"), "tx_datetime": pd.Series([], dtype="datetime64[ns]")})
    refused = lake.read_days(paths.quarantine, [d for d in days if lake.day_file(paths.quarantine, d).exists()],
                             ["transaction_id"])
    refused_ids = set(pd.to_numeric(refused["transaction_id"], errors="coerce").dropna().astype("int64")) if len(refused) else set()
    result = validate_labels(raw, known=known, quarantined_ids=refused_ids)
    lake.write_day(paths.labels, day, result.admitted)
    lake.write_day(paths.quarantine / "labels", day, result.quarantined)
    return Validated(day, result, lake.content_hash(result.admitted))
