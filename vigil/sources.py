"""Where a day's raw rows come from: landing files or a PostgreSQL table.

Every file of a day is accounted for: read (plain or compressed), or refused with a
:class:`ContractError` that names it and says why; hidden files (a leading dot, the convention for
uploads in progress) are listed as ignored. Nothing is skipped without a word.

Text formats are read as text: every field keeps the characters the source wrote, and the
contract (:mod:`vigil.contracts`) parses ids, amounts and timestamps from that text with its own
rules, so no reader's type guess (an id turned float by one bad line) reaches a good row. A row
the reader can only half-read (a cut last line, a malformed JSON line, a wrong number of fields)
leaves with a ``read_error`` and its original text (``source_text``), and validation quarantines
that row alone. Every row carries its provenance (``source_file``, ``source_row``).
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import lzma
import zlib
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from vigil.contracts import META_COLUMNS as META
from vigil.contracts import ContractError, require_columns

SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
FORMATS = ("auto", "parquet", "csv", "jsonl")
MAX_FILE_BYTES = 1 << 30  # one landing file, after decompression: larger files are refused, not half-read
MAX_SOURCE_TEXT = 4096  # characters of a malformed row's original text kept in the quarantine


@dataclass
class FileReport:
    """What became of one landing file."""

    file: str
    bytes: int  # on disk (compressed size for a compressed file)
    format: str  # e.g. "csv", "jsonl+gzip", "parquet", "table"
    status: str = "read"  # read | ignored: <why>
    rows: int = 0  # data rows read, including those with a read error
    read_errors: int = 0  # rows the reader could only half-read: quarantined by validation
    headers_skipped: int = 0  # header lines repeated inside a CSV (recognised, not data)
    truncated_stream: bool = False  # a compressed stream cut short: what came before the cut is read
    columns: list[str] = field(default_factory=list)

    def as_row(self) -> dict:
        row = asdict(self)
        row["columns"] = len(self.columns)
        return row


@dataclass
class DayBatch:
    """A day's rows from every file, and the account of every file."""

    frame: pd.DataFrame | None
    files: list[FileReport]
    extra_columns: dict[str, int] = field(default_factory=dict)  # optional column -> parts that have it


def _with_meta(frame: pd.DataFrame, source: str, rows=None, errors=None, texts=None) -> pd.DataFrame:
    n = len(frame)
    frame = frame.reset_index(drop=True)
    frame["source_file"] = source
    # 1-based data row in the file (the first header is not a row; repeated headers and blank lines are)
    frame["source_row"] = np.asarray(rows, dtype=np.int64) if rows is not None else np.arange(1, n + 1, dtype=np.int64)
    frame["read_error"] = pd.Series(errors if errors is not None else [None] * n, dtype="string")
    frame["source_text"] = pd.Series(texts if texts is not None else [None] * n, dtype="string")
    return frame


def _clip(text: str) -> str:
    return text if len(text) <= MAX_SOURCE_TEXT else f"{text[:MAX_SOURCE_TEXT]}…[{len(text) - MAX_SOURCE_TEXT} more characters]"


def _decode(name: str, data: bytes, encoding: str) -> str:
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding  # tolerate a BOM
    try:
        return data.decode(enc)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ContractError(
            f"{name}: line {line} is not valid {encoding} (byte {exc.start}: {data[exc.start:exc.start + 4]!r}); "
            f"if the file uses another encoding, set VIGIL_SOURCE_ENCODING (e.g. latin-1)"
        ) from exc
    except LookupError as exc:
        raise ContractError(f"{name}: unknown encoding {encoding!r} (VIGIL_SOURCE_ENCODING)") from exc


def _too_big(name: str) -> ContractError:
    return ContractError(f"{name}: larger than {MAX_FILE_BYTES} bytes once decompressed; split it into parts "
                         f"(a folder per day) so no single file exceeds the limit")


def _decompress(name: str, data: bytes, kind: str) -> tuple[bytes, bool]:
    """(decompressed bytes, whether the stream was cut short). A stream cut short keeps what came
    before the cut (the cut row is then quarantined as truncated); a corrupt stream refuses the file."""
    if kind == "zstd":
        import pyarrow as pa

        stream, out, cut, size = pa.CompressedInputStream(pa.BufferReader(data), "zstd"), [], False, 0
        try:
            while chunk := stream.read(1 << 20):
                out.append(chunk)
                size += len(chunk)
                if size > MAX_FILE_BYTES:
                    raise _too_big(name)
        except OSError as exc:  # pyarrow: "Truncated compressed stream" or a corrupt frame
            if "runcated" not in str(exc):
                raise ContractError(f"{name}: corrupt zstd stream: {exc}") from exc
            cut = True
        return b"".join(out), cut
    factory = {"gzip": lambda: zlib.decompressobj(wbits=47), "bz2": bz2.BZ2Decompressor, "xz": lzma.LZMADecompressor}[kind]
    out, rest, size = [], data, 0
    while rest:  # concatenated members (cat a.gz b.gz) are one valid stream
        d = factory()
        try:
            chunk = d.decompress(rest, MAX_FILE_BYTES + 1 - size)
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
            raise ContractError(f"{name}: corrupt {kind} stream: {exc}") from exc
        out.append(chunk)
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise _too_big(name)
        if not d.eof:
            return b"".join(out), True
        rest = d.unused_data
        if kind == "gzip" and not rest.strip(b"\0"):
            break
    return b"".join(out), False


def _csv_fields(text: str) -> list[str]:
    return next(csv.reader(io.StringIO(text)), [])


def _read_csv(name: str, text: str, cut: bool) -> tuple[pd.DataFrame, FileReport]:
    """Every field as text, exactly as written; empty fields are missing. Rows with the wrong number
    of fields are kept in place with a read error and their original text."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    header = _csv_fields(text.lstrip("\ufeff"))
    if not header:
        raise ContractError(f"{name}: empty file (no header, no rows)")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise ContractError(f"{name}: header names column(s) {dupes} more than once")
    invalid: list[tuple[int, str]] = []

    def on_invalid(row) -> str:
        invalid.append((row.number, row.text))
        return "skip"

    try:
        table = pcsv.read_csv(
            pa.BufferReader(text.encode("utf-8")),
            read_options=pcsv.ReadOptions(use_threads=False, block_size=1 << 24),  # row numbers need one thread
            parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in header}, null_values=[""],
                                                strings_can_be_null=True, quoted_strings_can_be_null=False))
    except pa.ArrowInvalid as exc:
        raise ContractError(f"{name}: cannot read CSV: {exc}") from exc
    good = table.to_pandas(types_mapper=lambda t: pd.StringDtype("pyarrow") if t == pa.string() else None)
    n = len(good) + len(invalid)
    is_bad = np.zeros(n, dtype=bool)
    bad_pos = np.array([num - 2 for num, _ in invalid], dtype=np.int64)  # record number counts the header as 1
    is_bad[bad_pos] = True
    if invalid:  # put the half-read rows back in their places
        frame = pd.DataFrame({c: pd.Series(pd.NA, index=range(n), dtype="string[pyarrow]") for c in header})
        frame.loc[~is_bad, header] = good[header].to_numpy()
    else:
        frame = good[header]
    errors: list = [None] * n
    texts: list = [None] * n
    width = len(header)
    for (num, raw), pos in zip(invalid, bad_pos):
        fields = _csv_fields(raw)
        frame.iloc[pos, :width] = (fields + [None] * width)[:width]
        errors[pos] = "row:too_many_fields" if len(fields) > width else "row:missing_fields"
        texts[pos] = _clip(raw)
    last_open = n and not text.endswith(("\n", "\r"))
    open_quote = text.count('"') % 2 == 1  # a quoted field never closed: the file ends inside it
    if n and (cut or open_quote or (last_open and errors[-1] == "row:missing_fields")):
        errors[-1] = "row:truncated"  # the last line was cut in transfer (or the stream ended early)
        texts[-1] = texts[-1] or _clip(text[text.rstrip("\r\n").rfind("\n") + 1:])
    # a header line repeated inside the file (files concatenated with their headers) is not data
    repeated = (frame[header] == pd.Series(header, index=header)).fillna(False).all(axis=1).to_numpy(dtype=bool) & ~is_bad
    rows = np.arange(1, n + 1)
    frame = _with_meta(frame, name, rows, errors, texts)
    if repeated.any():
        frame = frame.loc[~repeated].reset_index(drop=True)
    report = FileReport(name, 0, "csv", rows=len(frame), read_errors=int(frame["read_error"].notna().sum()),
                        headers_skipped=int(repeated.sum()), truncated_stream=cut, columns=header)
    return frame, report


_JSON_ERR = "row:malformed_json"


def _json_text(value) -> str | None:
    """A JSON value as the text the source wrote: numbers keep their digits (6.81 stays "6.81")."""
    if value is None:
        return None
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return str(value)


def _no_duplicate_keys(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


_DECODER = json.JSONDecoder(parse_float=str, parse_int=str, parse_constant=str, object_pairs_hook=_no_duplicate_keys)


def _read_jsonl(name: str, text: str, cut: bool) -> tuple[pd.DataFrame, FileReport]:
    """One JSON object per line. Numbers are kept as their text (``parse_float=str``), so the contract
    parses them exactly; a line that is not one JSON object is quarantined with its text."""
    records, rows, errors, texts = [], [], [], []
    lines = text.split("\n")  # not splitlines(): U+2028 and friends are legal inside JSON strings
    scan = _DECODER.scan_once  # the C scanner, one call a line (json.loads with hooks builds a decoder per call)
    for i, line in enumerate(lines, start=1):
        body = line.strip()
        if not body:
            continue
        try:
            rec, end = scan(line, len(line) - len(line.lstrip()))
            error = None if line[end:].strip() == "" else _JSON_ERR  # nothing may follow the object
            if error is None and type(rec) is not dict:
                error = "row:not_an_object"
        except StopIteration:
            rec, error = None, _JSON_ERR
        except ValueError as exc:
            rec, error = None, ("row:duplicate_key" if str(exc) == "duplicate key" else _JSON_ERR)
        records.append(rec if error is None else {})
        texts.append(None if error is None else _clip(line.rstrip("\r")))
        rows.append(i)
        errors.append(error)
    if cut and errors:
        errors[-1], texts[-1] = "row:truncated", _clip(lines[rows[-1] - 1])
    columns = list(dict.fromkeys(k for r in records for k in r))
    data = {}
    for c in columns:
        values = [r.get(c) for r in records]
        if not all(type(v) is str or v is None for v in values):  # booleans, objects, arrays: as JSON text
            values = [_json_text(v) if type(v) not in (dict, list) else  # nested: re-read with numbers as numbers
                      json.dumps(json.loads(lines[rows[n] - 1])[c], separators=(",", ":")) for n, v in enumerate(values)]
        data[c] = pd.array(values, dtype="string[pyarrow]")
    frame = _with_meta(pd.DataFrame(data, index=range(len(records))), name, rows, errors, texts)
    report = FileReport(name, 0, "jsonl", rows=len(frame), read_errors=int(frame["read_error"].notna().sum()),
                        truncated_stream=cut, columns=columns)
    return frame, report


def _kind(path: Path, fmt: str) -> tuple[str | None, str | None]:
    """(format, compression) from the name: ``day.csv.gz`` is gzip-compressed CSV."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    inner = suffixes[-2] if compression and len(suffixes) > 1 else (suffixes[-1] if suffixes and not compression else "")
    return (SUFFIXES.get(inner) if fmt == "auto" else fmt), compression


def read_file(path: Path, fmt: str = "auto", encoding: str = "utf-8") -> tuple[pd.DataFrame, FileReport]:
    """One landing file as read (text stays text; validation owns coercion), plus provenance and
    its account. Anything that cannot be read row by row raises :class:`ContractError` naming it."""
    path = Path(path)
    name = str(path)
    kind, compression = _kind(path, fmt)
    if kind not in ("parquet", "csv", "jsonl"):
        raise ContractError(f"{name}: unsupported landing format {''.join(path.suffixes) or '(no suffix)'!r}: use "
                            f"{', '.join(sorted(SUFFIXES))}, optionally compressed ({', '.join(sorted(COMPRESSIONS))}), "
                            f"or set VIGIL_SOURCE_FORMAT")
    size = path.stat().st_size
    if size == 0:
        raise ContractError(f"{name}: empty file (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise _too_big(name)
    data, cut = path.read_bytes(), False
    if compression:
        data, cut = _decompress(name, data, compression)
        if not data:
            raise ContractError(f"{name}: the {compression} stream holds no data" + (" (cut short)" if cut else ""))
    if kind == "parquet":
        if cut:
            raise ContractError(f"{name}: the {compression} stream was cut short; a partial Parquet file cannot be read")
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # truncated or corrupt: pyarrow's message says which part
            raise ContractError(f"{name}: cannot read Parquet file: {type(exc).__name__}: {exc}") from exc
        frame, report = _with_meta(frame, name), FileReport(name, 0, "parquet", rows=len(frame), columns=list(frame.columns))
    else:
        text = _decode(name, data, encoding)
        frame, report = (_read_csv if kind == "csv" else _read_jsonl)(name, text, cut)
    report.bytes = size
    report.format = kind + (f"+{compression}" if compression else "")
    return frame, report


def _as_text(s: pd.Series) -> pd.Series:
    """A typed column as the text that denotes the same value, for parts whose types differ (a
    Parquet part beside a CSV part): ints as digits, integral floats as digits (a Parquet writer's
    int-with-nulls), other floats as their shortest exact repr, timestamps in ISO 8601."""
    if isinstance(s.dtype, pd.StringDtype):
        return s
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.map({True: "true", False: "false"}).astype("string")
    if pd.api.types.is_integer_dtype(s.dtype):
        return s.astype("string")
    if pd.api.types.is_float_dtype(s.dtype):
        v = s.astype("float64")
        integral = (v.notna() & np.isfinite(v.fillna(0)) & (v == np.floor(v.fillna(0))) & (v.abs() < 2**53)).to_numpy()
        out = v.astype("string")
        out[integral] = v[integral].astype("int64").astype("string")
        return out
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return s.map(lambda t: None if pd.isna(t) else t.isoformat()).astype("string")
    return s.map(lambda v: None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))
                 else (v if isinstance(v, str) else str(v))).astype("string")


def _nullable(dtype) -> str | object:
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "Int64"
    return dtype


def combine(parts: list[pd.DataFrame], required=()) -> tuple[pd.DataFrame, dict[str, int]]:
    """The parts of one day as one frame. Columns may differ between parts beyond the required
    ones: an optional column is kept where present and null elsewhere. A column typed differently
    by two parts is carried as text in both (the contract parses it). Returns the frame and the
    optional columns with the number of parts that have each."""
    parts = [f.astype({c: "string" for c in f.select_dtypes(include="object").columns}) for f in parts]
    data_cols = list(dict.fromkeys(c for f in parts for c in f.columns if c not in META))
    optional = {c: sum(c in f.columns for f in parts) for c in data_cols if c not in required}
    if len(parts) == 1:
        return parts[0], optional
    for c in data_cols:
        having = [f for f in parts if c in f.columns]
        dtypes = {str(f[c].dtype) for f in having}
        if len(dtypes) > 1:
            for f in having:
                f[c] = _as_text(f[c])
            dtype = "string"
        else:
            dtype = _nullable(having[0][c].dtype)
            for f in having:
                f[c] = f[c].astype(dtype)
        for f in parts:
            if c not in f.columns:
                f[c] = pd.Series(index=f.index, dtype=dtype)
    return pd.concat([f[data_cols + [m for m in META if m in f.columns]] for f in parts], ignore_index=True), optional


class DaySource(Protocol):
    """Where a day's rows come from (landing files, a table): what ingestion, validation and the
    asset metadata need, whatever the source."""

    def read_day(self, day: date, required=()) -> DayBatch: ...

    def read(self, day: date) -> pd.DataFrame | None: ...

    def describe(self) -> str: ...

    def unaccounted(self) -> dict[str, object]:
        """What the source holds that no daily partition reads (named in the ingestion metadata)."""
        ...


IGNORED_PREFIXES = (".", "_")  # uploads in progress (.part) and markers (_SUCCESS), by Hadoop/Spark convention


@dataclass(frozen=True)
class FileSource:
    """``<folder>/<YYYY-MM-DD>.<ext>`` and every file in ``<folder>/<YYYY-MM-DD>/`` (parts of one day)."""

    folder: Path
    format: str = "auto"
    encoding: str = "utf-8"

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"source format must be one of {FORMATS}, got {self.format!r}")

    def _entries(self, day: date) -> list[Path]:
        folder = Path(self.folder)
        part_dir = folder / day.isoformat()
        inside = sorted(part_dir.iterdir()) if part_dir.is_dir() else []
        return inside + sorted(p for p in folder.glob(f"{day.isoformat()}.*"))

    def files(self, day: date) -> list[Path]:
        """Every file the day is made of: each is read or refused, none is skipped."""
        return [p for p in self._entries(day) if not _ignored(p)]

    def days(self) -> list[date]:
        return sorted(d for d in map(_day_of, self._top()) if d is not None and self.files(d))

    def _top(self) -> list[Path]:
        folder = Path(self.folder)
        return sorted(folder.iterdir()) if folder.is_dir() else []

    def stray(self) -> list[str]:
        """Entries of the landing folder that belong to no day (their name does not start with a
        date): they are never read, and the ingestion metadata names them."""
        return [p.name for p in self._top() if _day_of(p) is None and not _ignored(p)]

    def unaccounted(self) -> dict[str, object]:
        stray = self.stray()
        return {"stray_files": ", ".join(stray[:20]) + (f" … and {len(stray) - 20} more" if len(stray) > 20 else "")
                if stray else "none", "stray_file_count": len(stray)}

    def signature(self, day: date) -> str:
        """Changes whenever a file of the day is added, removed or rewritten (the sensor's run key)."""
        return "-".join(f"{p.name}@{p.stat().st_mtime_ns}" for p in self.files(day))

    def describe(self) -> str:
        return f"files {self.folder} (format {self.format}, encoding {self.encoding})"

    def read_day(self, day: date, required=()) -> DayBatch:
        """Every file of the day, read or refused. A file lacking a required column refuses the day."""
        entries = self._entries(day)
        reports = [FileReport(str(p), p.stat().st_size if p.is_file() else 0, "-",
                              status=f"ignored: name starts with {p.name[0]!r} (upload in progress or marker)")
                   for p in entries if _ignored(p)]
        frames = []
        for p in (p for p in entries if not _ignored(p)):
            if p.is_dir():
                raise ContractError(f"{p}: a folder inside the day's folder; put every part of {day} directly in "
                                    f"{Path(self.folder) / day.isoformat()}")
            frame, report = read_file(p, self.format, self.encoding)
            require_columns(str(p), report.columns, required)
            frames.append(frame)
            reports.append(report)
        if not frames:
            return DayBatch(None, reports)
        frame, optional = combine(frames, required)
        return DayBatch(frame, reports, optional)

    def read(self, day: date) -> pd.DataFrame | None:
        return self.read_day(day).frame


def _ignored(p: Path) -> bool:
    return p.name.startswith(IGNORED_PREFIXES)


def _day_of(p: Path) -> date | None:
    try:
        return date.fromisoformat(p.name.split(".")[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class PostgresSource:
    """A table with one row per record; the day is selected on ``time_column`` (UTC).

    ``table`` may be ``schema.table``. Rows whose time column is NULL belong to no day and cannot
    be read by a daily partition: :meth:`unattributed` counts them so a check can say so.
    """

    dsn: str
    table: str
    time_column: str

    def _ident(self):
        from psycopg import sql

        return sql.Identifier(*self.table.split(".")), sql.Identifier(self.time_column)

    def _connect(self):
        import psycopg

        conn = psycopg.connect(self.dsn, autocommit=True)
        conn.execute("SET TIME ZONE 'UTC'")
        return conn

    def describe(self) -> str:
        import psycopg

        info = psycopg.conninfo.conninfo_to_dict(self.dsn)
        return f"postgresql://{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')} {self.table}"

    def read_day(self, day: date, required=()) -> DayBatch:
        from psycopg import sql

        table, col = self._ident()
        start = datetime.combine(day, datetime.min.time())
        query = sql.SQL("SELECT * FROM {} WHERE {} >= %s AND {} < %s ORDER BY {}").format(table, col, col, col)
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute(query, (start, start + timedelta(days=1)))
            names = [d.name for d in cur.description]
            frame = pd.DataFrame(cur.fetchall(), columns=names)
        where = f"{self.describe()} ({self.time_column} on {day})"
        require_columns(where, names, required)
        # NUMERIC arrives as Decimal: as text it keeps its exact digits for the contract to parse
        frame, optional = combine([_with_meta(frame, where)], required)
        return DayBatch(frame, [FileReport(where, 0, "table", rows=len(frame), columns=names)], optional)

    def read(self, day: date) -> pd.DataFrame | None:
        return self.read_day(day).frame

    def fingerprints(self, since: date, before: date) -> dict[date, str]:
        """Per day in [since, before): row count and newest row version (``xmin``), which change
        when rows of that day are inserted, updated or deleted (the sensor's change signal)."""
        from psycopg import sql

        table, col = self._ident()
        query = sql.SQL("SELECT ({})::date AS day, count(*), max(xmin::text::bigint) FROM {} "
                        "WHERE {} >= %s AND {} < %s GROUP BY 1").format(col, table, col, col)
        with self._connect() as conn:
            rows = conn.execute(query, (datetime.combine(since, datetime.min.time()),
                                        datetime.combine(before, datetime.min.time()))).fetchall()
        return {day: f"{n}:{xmin}" for day, n, xmin in rows}

    def unaccounted(self) -> dict[str, object]:
        return {"rows_without_day": self.unattributed()}

    def unattributed(self) -> int:
        from psycopg import sql

        table, col = self._ident()
        with self._connect() as conn:
            return int(conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL").format(table, col)).fetchone()[0])
