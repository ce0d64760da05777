"""Data contracts: the raw transaction and label schemas, and the rules that reject a row.

Validation never drops a row silently: every rejected row leaves with the reason code(s) that
rejected it, so the quarantine can say exactly what was wrong and a fixed re-run can admit it.
Reason codes are ``<column>:<rule>``, e.g. ``tx_amount:greater_than(0)`` or
``transaction_id:wrong_type``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import pandas as pd
import pandera.pandas as pa

TX_REQUIRED = {
    "transaction_id": "id",
    "tx_datetime": "datetime",
    "customer_id": "id",
    "terminal_id": "id",
    "tx_amount": "float",
}
LABEL_REQUIRED = {"transaction_id": "id", "tx_fraud": "int", "reported_at": "datetime"}
DEFAULT_AMOUNT_CEILING = 10_000.0
MAX_ID = 2**63 - 1  # ids are int64: Feast entity keys, the lake's columns, the prediction log
SOURCE_COLUMNS = ["source_file", "source_row"]
# provenance added by the reader (vigil.sources); ``source_text`` is a half-read row's original text
META_COLUMNS = SOURCE_COLUMNS + ["read_error", "source_text"]
ID_TEXT = r"\s*[0-9]{1,18}\s*"  # a well-formed identifier given as text: plain digits, fits int64
TZ_SUFFIX = r"[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?\s*(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)\s*$"  # a time with an offset
# a decimal number as text ("6.81", "-2", ".5", "1e3"): anything else ("12,50", "NaN", "1_000") is wrong_type
DECIMAL_TEXT = r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*"


class ContractError(ValueError):
    """The whole batch breaks the contract (missing column, unreadable file): nothing is admitted."""


def require_columns(where: str, columns: list[str], required) -> None:
    """Refuse a file, table or batch that lacks a required column, naming it and what it has."""
    missing = [c for c in required if c not in columns]
    if missing:
        found = [c for c in columns if c not in META_COLUMNS]
        raise ContractError(f"{where}: required column(s) {missing} missing; found columns {found}")


@dataclass
class ValidationResult:
    admitted: pd.DataFrame
    quarantined: pd.DataFrame  # original values as text + reasons + source_file + source_row
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def n_read(self) -> int:
        return len(self.admitted) + len(self.quarantined)

    @property
    def quarantine_rate(self) -> float:
        return len(self.quarantined) / self.n_read if self.n_read else 0.0


def transaction_schema(day: date, now: datetime | None = None, amount_ceiling: float = DEFAULT_AMOUNT_CEILING) -> pa.DataFrameSchema:
    start = pd.Timestamp(day)
    end = start + pd.Timedelta(days=1)
    checks_time = [pa.Check.ge(start, error=f"inside_day({day})"), pa.Check.lt(end, error=f"inside_day({day})")]
    if now is not None:
        checks_time.append(pa.Check.le(pd.Timestamp(now), error="not_in_future"))
    ident = [pa.Check.ge(0, error="non_negative_id")]
    return pa.DataFrameSchema(
        {
            "transaction_id": pa.Column("Int64", ident, unique=True, report_duplicates="exclude_first"),
            "tx_datetime": pa.Column("datetime64[ns]", checks_time),
            "customer_id": pa.Column("Int64", ident),
            "terminal_id": pa.Column("Int64", ident),
            "tx_amount": pa.Column("float64", [pa.Check.gt(0), pa.Check.le(amount_ceiling)]),
        },
        strict=False,
        name="raw_transactions",
    )


def label_schema() -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            "transaction_id": pa.Column("Int64", pa.Check.ge(0, error="non_negative_id"), unique=True, report_duplicates="exclude_first"),
            "tx_fraud": pa.Column("Int64", pa.Check.isin([0, 1])),
            "reported_at": pa.Column("datetime64[ns]"),
        },
        strict=False,
        name="labels",
    )


def _parse_text(text: pd.Series, kind: str) -> tuple[pd.Series, np.ndarray]:
    """Values of a text column by the contract's rules, exactly: ids are plain digits (parsed as
    int64, never through a float), amounts are decimals parsed with correct rounding (Arrow's
    parser; ``pd.to_numeric`` is off by one ulp on about one value in ten). Returns the values
    and a mask of present texts that break the rule."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pattern = ID_TEXT if kind == "id" else DECIMAL_TEXT
    text = text.astype("string[pyarrow]")
    bad = (text.notna() & ~text.str.fullmatch(pattern).fillna(False)).to_numpy(dtype=bool)
    arr = pa.array(text.where(~bad).to_numpy(dtype=object, na_value=None), type=pa.string())
    values = pc.cast(pc.utf8_trim_whitespace(arr), pa.int64() if kind == "id" else pa.float64())
    nullable = {pa.int64(): pd.Int64Dtype(), pa.float64(): pd.Float64Dtype()}
    return pd.Series(values.to_pandas(types_mapper=nullable.get), index=text.index), bad


def _parse_datetimes(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """ISO 8601 text → UTC (naive). A valid timestamp outside pandas' range (years 1677–2262) is
    clipped to the range's edge, so the day and not-in-future rules judge it, and flagged."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        val = raw.dt.tz_convert("UTC").dt.tz_localize(None) if raw.dt.tz is not None else raw
        return val.astype("datetime64[ns]"), np.zeros(len(raw), dtype=bool)
    text = raw.astype("string[pyarrow]")
    # Offsets and naive times are parsed apart: in one call, pandas 2 applies the last offset it saw
    # to the naive strings after it ("…T01:00" after "…+02:00" became 23:00 the day before).
    aware = text.str.contains(TZ_SUFFIX, regex=True).fillna(False).to_numpy(dtype=bool)
    val = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    if (~aware).any():
        val[~aware] = pd.to_datetime(text[~aware], errors="coerce", format="ISO8601").astype("datetime64[ns]")
    if aware.any():
        val[aware] = pd.to_datetime(text[aware], errors="coerce", utc=True, format="ISO8601").dt.tz_localize(None).astype("datetime64[ns]")
    out_of_range = np.zeros(len(raw), dtype=bool)
    for i in np.flatnonzero((text.notna() & val.isna()).to_numpy()):
        try:
            ts = datetime.fromisoformat(str(text.iloc[i]).strip())
        except ValueError:
            continue  # not a timestamp at all: wrong_type
        val.iloc[i] = pd.Timestamp.max.floor("us") if ts.year > 2000 else pd.Timestamp.min.ceil("us")
        out_of_range[i] = True
    return val, out_of_range


def _coerce(frame: pd.DataFrame, required: dict[str, str]) -> tuple[pd.DataFrame, list[tuple[str, str, np.ndarray]]]:
    """Explicit coercion of the required columns, from text by the contract's rules or from a typed
    column (Parquet, a table). Returns the coerced frame and the rule each value breaks, as
    ``(column, rule, mask)``: ``id_format`` (an id that is not plain digits: "12.0", "1e3", " C12"),
    ``wrong_type`` (present but not a value of the type), ``not_nullable`` (missing or blank),
    ``out_of_range`` (a valid timestamp beyond what can be stored)."""
    out = frame.copy()
    flags: list[tuple[str, str, np.ndarray]] = []
    for col, kind in required.items():
        raw = frame[col]
        texty = not pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_datetime64_any_dtype(raw)
        if texty:
            raw = raw.astype("string[pyarrow]")  # vectorised string kernels (Arrow), not a Python loop
            raw = raw.where(raw.str.strip() != "")  # a blank field is a missing value
        missing = raw.isna().to_numpy()
        format_bad = np.zeros(len(raw), dtype=bool)
        if kind == "datetime":
            val, out_of_range = _parse_datetimes(raw)
            if out_of_range.any():
                flags.append((col, "out_of_range", out_of_range))
        elif texty and kind in ("id", "float"):
            val, format_bad = _parse_text(raw, kind)
        else:
            val = pd.to_numeric(raw, errors="coerce")
        if kind in ("int", "id") and pd.api.types.is_float_dtype(val):
            frac = val.notna() & (val != np.floor(val.fillna(0)))
            val = val.where(~frac).astype("Float64")
        out[col] = val.astype("Int64") if kind in ("int", "id") else (val.astype("float64") if kind == "float" else val)
        if kind == "id" and texty:
            flags.append((col, "id_format", format_bad))
        wrong = ~missing & ~format_bad & out[col].isna().to_numpy()
        if kind == "float" and texty:
            wrong |= format_bad
        flags.append((col, "wrong_type", wrong))
        flags.append((col, "not_nullable", missing))
    return out, flags


RowRule = Callable[[pd.DataFrame], dict[int, list[str]]]


def validate(frame: pd.DataFrame, schema: pa.DataFrameSchema, required: dict[str, str], source_file: str = "",
             row_rules: list[RowRule] = ()) -> ValidationResult:
    """Split ``frame`` into admitted rows (typed) and quarantined rows (with reasons).

    ``row_rules`` are extra checks that need context beyond the batch (e.g. other partitions);
    each gets the coerced frame and returns reason codes by row position.
    """
    files = ", ".join(map(str, frame["source_file"].unique())) if "source_file" in frame.columns else ""
    require_columns(files or source_file or "batch", list(frame.columns), required)
    frame = frame.reset_index(drop=True)
    meta = frame[[c for c in META_COLUMNS if c in frame.columns]]
    frame = frame.drop(columns=meta.columns)
    coerced, flags = _coerce(frame, required)
    reasons: dict[int, list[str]] = {}
    if "read_error" in meta:
        for i in np.flatnonzero(meta["read_error"].notna().to_numpy()):
            reasons.setdefault(int(i), []).append(str(meta["read_error"].iloc[i]))
    for col, rule, mask in flags:
        for i in np.flatnonzero(mask):
            reasons.setdefault(int(i), []).append(f"{col}:{rule}")
    # Rows with type problems are judged on the rest of their values by pandera too, so a
    # row's reason list is complete; their nulls are already explained above.
    try:
        schema.validate(coerced, lazy=True)
    except pa.errors.SchemaErrors as err:
        fc = err.failure_cases
        fc = fc[fc["index"].notna() & (fc["check"] != "not_nullable")]
        for idx, col, check in zip(fc["index"], fc["column"], fc["check"]):
            code = f"{col}:{'duplicate' if check == 'field_uniqueness' else check}"
            lst = reasons.setdefault(int(idx), [])
            if code not in lst:
                lst.append(code)
    for rule in row_rules:
        for i, codes in rule(coerced).items():
            lst = reasons.setdefault(int(i), [])
            lst.extend(c for c in codes if c not in lst)
    bad_rows = np.array(sorted(reasons), dtype=np.int64)
    mask = np.zeros(len(frame), dtype=bool)
    mask[bad_rows] = True
    admitted = coerced.loc[~mask].copy()
    for col, kind in required.items():
        if kind in ("int", "id"):
            admitted[col] = admitted[col].astype("int64")
    quarantined = frame.loc[mask].astype("string")
    quarantined["reasons"] = [";".join(reasons[i]) for i in bad_rows]
    # where the row came from: the reader's provenance, else the batch's file and position
    quarantined["source_file"] = meta["source_file"].to_numpy()[mask] if "source_file" in meta else source_file
    quarantined["source_row"] = meta["source_row"].to_numpy()[mask] if "source_row" in meta else bad_rows + 1
    # a half-read row's original text: its fields above may be incomplete
    quarantined["source_text"] = pd.array(meta["source_text"].to_numpy()[mask] if "source_text" in meta
                                          else [None] * int(mask.sum()), dtype="string")
    counts: dict[str, int] = {}
    for lst in reasons.values():
        for code in lst:
            counts[code] = counts.get(code, 0) + 1
    return ValidationResult(admitted.reset_index(drop=True), quarantined.reset_index(drop=True), counts)


def validate_transactions(frame: pd.DataFrame, day: date, source_file: str = "", now: datetime | None = None,
                          amount_ceiling: float = DEFAULT_AMOUNT_CEILING,
                          seen_ids: pd.Series | None = None) -> ValidationResult:
    """``seen_ids``: transaction ids already admitted on earlier days (cross-partition uniqueness)."""
    rules = [seen_before_rule(seen_ids)] if seen_ids is not None and len(seen_ids) else []
    return validate(frame, transaction_schema(day, now, amount_ceiling), TX_REQUIRED, source_file, rules)


def seen_before_rule(seen_ids: pd.Series) -> RowRule:
    """A transaction id admitted on an earlier day may not be admitted again."""
    seen = pd.Index(seen_ids.unique())

    def rule(frame: pd.DataFrame) -> dict[int, list[str]]:
        dup = frame["transaction_id"].isin(seen).to_numpy()
        return {int(i): ["transaction_id:duplicate_across_days"] for i in np.flatnonzero(dup)}

    return rule


TRANSACTION_QUARANTINED = "transaction_id:transaction_quarantined"


def validate_labels(frame: pd.DataFrame, source_file: str = "", known: pd.DataFrame | None = None,
                    quarantined_ids: set | None = None) -> ValidationResult:
    """``known``: the validated transactions a report may refer to (transaction_id, tx_datetime);
    ``quarantined_ids``: transactions the contract refused (their reports are kept aside with
    :data:`TRANSACTION_QUARANTINED`, the transaction's own quarantine row says why)."""
    rules = [known_transaction_rule(known, quarantined_ids)] if known is not None else []
    return validate(frame, label_schema(), LABEL_REQUIRED, source_file, rules)


def known_transaction_rule(known: pd.DataFrame, quarantined_ids: set | None = None) -> RowRule:
    """A report must refer to a known transaction, and cannot be made before it."""
    when = known.drop_duplicates("transaction_id").set_index("transaction_id")["tx_datetime"]
    refused = quarantined_ids or set()

    def rule(labels: pd.DataFrame) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        ids = labels["transaction_id"]
        tx_time = ids.map(when)
        for i in np.flatnonzero((ids.notna() & tx_time.isna()).to_numpy()):
            out[int(i)] = [TRANSACTION_QUARANTINED if ids.iloc[i] in refused else "transaction_id:unknown_transaction"]
        early = (labels["reported_at"] < tx_time).fillna(False).to_numpy()
        for i in np.flatnonzero(early):
            out.setdefault(int(i), []).append("reported_at:before_transaction")
        return out

    return rule

