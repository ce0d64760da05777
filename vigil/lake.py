"""Day-partitioned Parquet folders. A partition is one file, replaced atomically on re-run,
so re-running a day never duplicates rows downstream.

The lake is a local folder (the embedded default) or a prefix on an S3-compatible object store
(``VIGIL_LAKE_URI=s3://bucket/prefix``, ``VIGIL_S3_ENDPOINT_URL`` for MinIO or another
S3-compatible server; credentials from the standard ``AWS_*`` variables). Local folders are plain
:class:`~pathlib.Path` objects; object-store folders are :class:`ObjectPath`, which has the part of
``pathlib``'s API the lake's callers use, so every stage reads and writes both the same way.
"""

from __future__ import annotations

import hashlib
import io
import os
from datetime import date
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd


class ObjectPath:
    """A key (or key prefix) on an S3-compatible object store, through fsspec's ``s3fs``.

    A write is one PUT, which an object store applies atomically: readers see the old object or
    the new one, never a part. Listings are not cached, so a partition another process wrote is
    seen at once.
    """

    __slots__ = ("fs", "key", "endpoint")

    def __init__(self, fs, key: str, endpoint: str = ""):
        self.fs, self.key, self.endpoint = fs, key.strip("/"), endpoint

    @classmethod
    def from_uri(cls, uri: str, endpoint: str = "") -> "ObjectPath":
        if not uri.startswith("s3://") or not uri[5:].strip("/"):
            raise ValueError(f"an object-store location is s3://bucket[/prefix]; got {uri!r}")
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=endpoint or None, use_listings_cache=False)
        return cls(fs, uri[5:], endpoint)

    # pathlib's naming
    def __truediv__(self, name) -> "ObjectPath":
        return ObjectPath(self.fs, f"{self.key}/{str(name).strip('/')}", self.endpoint)

    def __str__(self) -> str:
        return f"s3://{self.key}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectPath) and other.key == self.key and other.endpoint == self.endpoint

    def __hash__(self) -> int:
        return hash((self.key, self.endpoint))

    def __lt__(self, other: "ObjectPath") -> bool:
        return self.key < other.key

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.key).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.key).suffix

    @property
    def parent(self) -> "ObjectPath":
        return ObjectPath(self.fs, str(PurePosixPath(self.key).parent), self.endpoint)

    def with_suffix(self, suffix: str) -> "ObjectPath":
        return ObjectPath(self.fs, str(PurePosixPath(self.key).with_suffix(suffix)), self.endpoint)

    def relative_to(self, other: "ObjectPath") -> PurePosixPath:
        return PurePosixPath(self.key).relative_to(other.key)

    # what the lake's callers do with a path
    def exists(self) -> bool:
        return self.fs.exists(self.key)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.key)

    def iterdir(self) -> list["ObjectPath"]:
        try:
            names = self.fs.ls(self.key, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(ObjectPath(self.fs, n, self.endpoint) for n in names if n.strip("/") != self.key)

    def glob(self, pattern: str) -> list["ObjectPath"]:
        import fnmatch

        return [p for p in self.iterdir() if fnmatch.fnmatch(p.name, pattern)]

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no folders: a key's prefix exists once an object is under it."""

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.key)

    def write_bytes(self, data: bytes) -> int:
        self.fs.pipe_file(self.key, data)
        return len(data)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        if not missing_ok and not self.exists():  # S3's DELETE of a missing key succeeds
            raise FileNotFoundError(str(self))
        try:
            self.fs.rm_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def mtime_ns(self) -> int:
        """The object's LastModified (the store's clock, whole seconds on S3)."""
        return int(pd.Timestamp(self.fs.info(self.key)["LastModified"]).value)


LakeFolder = Path | ObjectPath


def location(uri: str, endpoint: str = "") -> LakeFolder:
    """A lake location from a setting: ``s3://bucket/prefix`` or a local folder."""
    return ObjectPath.from_uri(uri, endpoint) if uri.startswith("s3://") else Path(uri).resolve()


def _folder(folder) -> LakeFolder:
    return folder if isinstance(folder, ObjectPath) else Path(folder)


def put(dest: LakeFolder, data: bytes) -> None:
    """Write ``dest`` whole: one PUT on an object store, a rename in a local or shared folder, so a
    reader sees the old content or the new, never a part."""
    if isinstance(dest, ObjectPath):
        dest.write_bytes(data)
        return
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, dest)


def mtime_ns(path: LakeFolder) -> int:
    return path.mtime_ns() if isinstance(path, ObjectPath) else path.stat().st_mtime_ns


def read_metadata(path: LakeFolder):
    import pyarrow.parquet as pq

    if isinstance(path, ObjectPath):
        with path.fs.open(path.key, "rb") as f:
            return pq.read_metadata(f)
    return pq.read_metadata(path)


def read_parquet(path: LakeFolder, columns: list[str] | None = None, **kwargs) -> pd.DataFrame:
    if isinstance(path, ObjectPath):
        return pd.read_parquet(io.BytesIO(path.read_bytes()), columns=columns, **kwargs)
    return pd.read_parquet(path, columns=columns, **kwargs)


def day_file(folder: LakeFolder, day: date, suffix: str = ".parquet") -> LakeFolder:
    return _folder(folder) / f"{day.isoformat()}{suffix}"


def write_day(folder: LakeFolder, day: date, frame: pd.DataFrame) -> LakeFolder:
    folder = _folder(folder)
    path = day_file(folder, day)
    if isinstance(folder, ObjectPath):
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        put(path, buf.getvalue())
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def read_day(folder: LakeFolder, day: date, columns: list[str] | None = None) -> pd.DataFrame | None:
    try:
        return read_parquet(day_file(folder, day), columns)  # one GET on an object store, no HEAD first
    except FileNotFoundError:
        return None


def read_days(folder: LakeFolder, days: list[date], columns: list[str] | None = None) -> pd.DataFrame:
    """The days' partitions concatenated. With ``columns``, one Arrow read of all the files (about
    2x faster than a pandas read per file: the features read 37 days for every day they compute)."""
    folder = _folder(folder)
    if isinstance(folder, ObjectPath):  # one listing instead of a request per day
        have = set(available_days(folder))
        days = [d for d in days if d in have]
    if columns:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if isinstance(folder, ObjectPath):
            files, fs = [day_file(folder, d).key for d in days], folder.fs
        else:
            files, fs = [str(p) for d in days if (p := day_file(folder, d)).exists()], None
        if not files:
            return pd.DataFrame(columns=columns)
        try:
            return pq.read_table(files, columns=columns, filesystem=fs).to_pandas()
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass  # partitions whose types differ: read them one by one below
    frames = [f for d in days if (f := read_day(folder, d, columns)) is not None]
    if not frames:
        return pd.DataFrame(columns=columns) if columns else pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _in_range(source, column: str, lo, hi) -> np.ndarray | None:
    """The values of ``column`` within [lo, hi] in one Parquet file, None when its statistics
    say it holds none (its data is then never read)."""
    import pyarrow.compute as pc

    meta = source.metadata
    idx = meta.schema.names.index(column) if column in meta.schema.names else None
    if idx is None or meta.num_rows == 0:
        return None
    stats = [meta.row_group(i).column(idx).statistics for i in range(meta.num_row_groups)]
    if all(s is not None and s.has_min_max and (s.max < lo or s.min > hi) for s in stats):
        return None
    col = source.read(columns=[column]).column(0)
    return col.filter(pc.and_(pc.greater_equal(col, lo), pc.less_equal(col, hi))).to_numpy()


def values_in_range(folder: LakeFolder, days: list[date], column: str, lo, hi) -> np.ndarray:
    """Values of an integer ``column`` within [lo, hi] over the days' partitions. A partition whose
    Parquet min/max statistics lie outside the range is skipped without reading its data."""
    import pyarrow.parquet as pq

    folder = _folder(folder)
    if isinstance(folder, ObjectPath):
        have = set(available_days(folder))
        days = [d for d in days if d in have]
    out = []
    for d in days:
        path = day_file(folder, d)
        if isinstance(path, ObjectPath):  # ranged reads: the footer first, the column only if it may hold one
            with path.fs.open(path.key, "rb") as fh:
                got = _in_range(pq.ParquetFile(fh), column, lo, hi)
        elif path.exists():
            got = _in_range(pq.ParquetFile(path), column, lo, hi)
        else:
            continue
        if got is not None:
            out.append(got)
    return np.concatenate(out) if out else np.array([], dtype="int64")


def available_days(folder: LakeFolder) -> list[date]:
    folder = _folder(folder)
    names = [p.name for p in folder.iterdir()] if isinstance(folder, ObjectPath) else \
        [p.name for p in folder.glob("*.parquet")]
    out = []
    for n in names:
        if not n.endswith(".parquet"):
            continue
        try:
            out.append(date.fromisoformat(n[: -len(".parquet")]))
        except ValueError:
            continue
    return sorted(out)


def content_hash(frame: pd.DataFrame) -> str:
    """Stable hash of a frame's content (values and column names), for lineage."""
    h = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]
