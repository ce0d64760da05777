"""Day-partitioned Parquet folders. A partition is one file, replaced atomically on re-run,
so re-running a day never duplicates rows downstream."""

from __future__ import annotations

import hashlib
import os
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

def day_file(folder: Path, day: date, suffix: str = ".parquet") -> Path:
    return Path(folder) / f"{day.isoformat()}{suffix}"


def write_day(folder: Path, day: date, frame: pd.DataFrame) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = day_file(folder, day)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def read_day(folder: Path, day: date, columns: list[str] | None = None) -> pd.DataFrame | None:
    path = day_file(folder, day)
    return pd.read_parquet(path, columns=columns) if path.exists() else None


def read_days(folder: Path, days: list[date], columns: list[str] | None = None) -> pd.DataFrame:
    """The days' partitions concatenated. With ``columns``, one Arrow read of all the files (about
    2x faster than a pandas read per file: the features read 37 days for every day they compute)."""
    if columns:
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = [str(p) for d in days if (p := day_file(folder, d)).exists()]
        if not files:
            return pd.DataFrame(columns=columns)
        try:
            return pq.read_table(files, columns=columns).to_pandas()
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass  # partitions whose types differ: read them one by one below
    frames = [f for d in days if (f := read_day(folder, d, columns)) is not None]
    if not frames:
        return pd.DataFrame(columns=columns) if columns else pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def values_in_range(folder: Path, days: list[date], column: str, lo, hi) -> np.ndarray:
    """Values of an integer ``column`` within [lo, hi] over the days' partitions. A partition whose
    Parquet min/max statistics lie outside the range is skipped without reading its data."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = []
    for d in days:
        path = day_file(folder, d)
        if not path.exists():
            continue
        meta = pq.read_metadata(path)
        idx = meta.schema.names.index(column) if column in meta.schema.names else None
        if idx is None or meta.num_rows == 0:
            continue
        stats = [meta.row_group(i).column(idx).statistics for i in range(meta.num_row_groups)]
        if all(s is not None and s.has_min_max and (s.max < lo or s.min > hi) for s in stats):
            continue
        col = pq.read_table(path, columns=[column]).column(0)
        col = col.filter(pc.and_(pc.greater_equal(col, lo), pc.less_equal(col, hi)))
        out.append(col.to_numpy())
    return np.concatenate(out) if out else np.array([], dtype="int64")


def available_days(folder: Path) -> list[date]:
    out = []
    for p in Path(folder).glob("*.parquet"):
        try:
            out.append(date.fromisoformat(p.stem))
        except ValueError:
            continue
    return sorted(out)


def content_hash(frame: pd.DataFrame) -> str:
    """Stable hash of a frame's content (values and column names), for lineage."""
    h = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]
