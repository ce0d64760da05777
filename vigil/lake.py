"""Day-partitioned Parquet folders. A partition is one file, replaced atomically on re-run,
so re-running a day never duplicates rows downstream."""

from __future__ import annotations

import hashlib
import os
from datetime import date
from pathlib import Path

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
    frames = [f for d in days if (f := read_day(folder, d, columns)) is not None]
    if not frames:
        return pd.DataFrame(columns=columns) if columns else pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


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
