"""Where a day's raw rows come from: landing files or a PostgreSQL table.

Whatever the source, every row leaves the reader with its provenance (``source_file``,
``source_row``) and, when the reader could only half-read it (a truncated last line, a malformed
JSON line, too many fields), a ``read_error`` reason, so validation quarantines that one row
instead of losing it or failing the whole file. A file that cannot be read at all (wrong encoding,
corrupt Parquet, zero bytes) raises :class:`ContractError` naming the file: nothing of the day is
admitted until the source is fixed.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd

from vigil.contracts import META_COLUMNS as META
from vigil.contracts import ContractError
SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
FORMATS = ("auto", "parquet", "csv", "jsonl")


def _with_meta(frame: pd.DataFrame, source: str, read_error: list | None = None) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame["source_file"] = source
    frame["source_row"] = pd.RangeIndex(1, len(frame) + 1)  # 1-based data row (the header is not a row)
    frame["read_error"] = pd.Series(read_error if read_error is not None else [None] * len(frame), dtype="string")
    return frame


def _decode(path: Path, data: bytes, encoding: str) -> str:
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding  # tolerate a BOM
    try:
        return data.decode(enc)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ContractError(
            f"{path}: line {line} is not valid {encoding} (byte {exc.start}: {data[exc.start:exc.start + 4]!r}); "
            f"if the file uses another encoding, set VIGIL_SOURCE_ENCODING (e.g. latin-1)"
        ) from exc


def _csv_rowwise(text: str) -> tuple[pd.DataFrame, list]:
    """Slow path for a CSV that pandas' C parser rejects: keep every row, flag the odd ones."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    header, body = rows[0], rows[1:]
    n = len(header)
    errors = [None if len(r) == n else ("row:too_many_fields" if len(r) > n else "row:missing_fields") for r in body]
    body = [(r + [None] * n)[:n] for r in body]
    return pd.DataFrame(body, columns=header, dtype="string"), errors


def _read_csv(path: Path, text: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=True)
        errors = [None] * len(frame)
    except pd.errors.EmptyDataError as exc:
        raise ContractError(f"{path}: empty file (no header, no rows)") from exc
    except pd.errors.ParserError:
        frame, errors = _csv_rowwise(text)
    # A last line without its newline and with fewer fields than the header was cut in transfer.
    if len(frame) and not text.endswith(("\n", "\r")):
        last = next(csv.reader(io.StringIO(text.rstrip().splitlines()[-1])), [])
        if len(last) < len(frame.columns):
            errors[-1] = "row:truncated"
    return _with_meta(frame, str(path), errors)


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    try:
        return _with_meta(pd.read_json(io.StringIO(text), lines=True, dtype=False), str(path))
    except ValueError:
        pass
    records, errors = [], []
    for line in (l for l in text.splitlines() if l.strip()):
        try:
            rec = json.loads(line)
            ok = isinstance(rec, dict)
        except ValueError:
            rec, ok = {}, False
        records.append(rec if ok else {})
        errors.append(None if ok else "row:malformed_json")
    return _with_meta(pd.DataFrame.from_records(records), str(path), errors)


def read_file(path: Path, fmt: str = "auto", encoding: str = "utf-8") -> pd.DataFrame:
    """One landing file as read (text stays text; validation owns coercion), plus provenance."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower()) if fmt == "auto" else fmt
    if kind not in ("parquet", "csv", "jsonl"):
        raise ContractError(f"{path}: unsupported landing format {path.suffix!r}; use {sorted(SUFFIXES)} or set VIGIL_SOURCE_FORMAT")
    if path.stat().st_size == 0:
        raise ContractError(f"{path}: empty file (0 bytes)")
    if kind == "parquet":
        try:
            return _with_meta(pd.read_parquet(path), str(path))
        except Exception as exc:  # truncated or corrupt: pyarrow's message says which part
            raise ContractError(f"{path}: cannot read Parquet file: {type(exc).__name__}: {exc}") from exc
    text = _decode(path, path.read_bytes(), encoding)
    return _read_csv(path, text) if kind == "csv" else _read_jsonl(path, text)


@dataclass(frozen=True)
class FileSource:
    """``<folder>/<YYYY-MM-DD>.<ext>`` or every file in ``<folder>/<YYYY-MM-DD>/`` (parts of one day)."""

    folder: Path
    format: str = "auto"
    encoding: str = "utf-8"

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"source format must be one of {FORMATS}, got {self.format!r}")

    def _readable(self, p: Path) -> bool:
        return p.is_file() and not p.name.startswith(".") and (self.format != "auto" or p.suffix.lower() in SUFFIXES)

    def files(self, day: date) -> list[Path]:
        folder = Path(self.folder)
        part_dir = folder / day.isoformat()
        if part_dir.is_dir():
            return sorted(p for p in part_dir.iterdir() if self._readable(p))
        return sorted(p for p in folder.glob(f"{day.isoformat()}.*") if self._readable(p))[:1]

    def days(self) -> list[date]:
        out = set()
        for p in Path(self.folder).glob("*") if Path(self.folder).exists() else []:
            try:
                day = date.fromisoformat(p.name.split(".")[0])
            except ValueError:
                continue
            if self.files(day):
                out.add(day)
        return sorted(out)

    def signature(self, day: date) -> str:
        """Changes whenever a file of the day is added, removed or rewritten (the sensor's run key)."""
        return "-".join(f"{p.name}@{p.stat().st_mtime_ns}" for p in self.files(day))

    def newest_mtime_ns(self, day: date) -> int:
        return max((p.stat().st_mtime_ns for p in self.files(day)), default=0)

    def describe(self) -> str:
        return f"files {self.folder} (format {self.format}, encoding {self.encoding})"

    def read(self, day: date) -> pd.DataFrame | None:
        files = self.files(day)
        if not files:
            return None
        frames = [read_file(p, self.format, self.encoding) for p in files]
        for p, f in zip(files[1:], frames[1:]):
            if set(f.columns) != set(frames[0].columns):
                raise ContractError(f"{p}: columns {sorted(set(f.columns) - set(META))} differ from {files[0].name}'s "
                                    f"{sorted(set(frames[0].columns) - set(META))}; all parts of a day need the same columns")
        frames = [f.astype({c: "string" for c in f.select_dtypes(include="object").columns}) for f in frames]
        if len(frames) == 1:
            return frames[0]
        # parts in different formats may type a column differently: keep such a column as text
        mixed = [c for c in frames[0].columns if len({str(f[c].dtype) for f in frames}) > 1]
        return pd.concat([f.astype({c: "string" for c in mixed}) for f in frames], ignore_index=True)


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

    def read(self, day: date) -> pd.DataFrame | None:
        from psycopg import sql

        table, col = self._ident()
        start = datetime.combine(day, datetime.min.time())
        query = sql.SQL("SELECT * FROM {} WHERE {} >= %s AND {} < %s ORDER BY {}").format(table, col, col, col)
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute(query, (start, start + timedelta(days=1)))
            names = [d.name for d in cur.description]
            frame = pd.DataFrame(cur.fetchall(), columns=names)
        frame = frame.astype({c: "string" for c in frame.select_dtypes(include="object").columns})
        return _with_meta(frame, f"{self.describe()} ({self.time_column} on {day})")

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

    def unattributed(self) -> int:
        from psycopg import sql

        table, col = self._ident()
        with self._connect() as conn:
            return int(conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL").format(table, col)).fetchone()[0])
