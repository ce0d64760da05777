"""The prediction log: every served score, appended as one JSON line per prediction.

One writer at a time per process (a lock): a request writes its lines to the operating system
(one ``write(2)`` per day, page cache: microseconds, never an fsync) before it is answered, so a
``kill -9`` of the server loses nothing that was answered; a background thread fsyncs what was
written at most every ``fsync_seconds`` (group commit), so a power loss costs at most that window,
and no request waits for the disk (an earlier version handed lines to a writer thread: the
handoff and the waits behind its fsync were 25 % of the server's samples, benchmarks/README.md). Files are split
by the transaction's day and the writing process (several workers never interleave lines), are
0600 (they hold ids, amounts and feature vectors), and at most ``max_open`` are open at once
whatever days the requests carry (least recently used closed first). Each line carries the
request's ``request_id``; a retried request logs its transaction again, and the daily assets keep
the first line of each ``transaction_id`` (:func:`read_day_checked`).

A line's ``features`` are a JSON array in the order of the file's header line, which the process
writes in the same ``write(2)`` as its first lines each time it opens a file: the names once per
file instead of once per line (a 10,000-row batch's lines were 15 MB and 0.14 s of ``to_json``
with the names, 8 MB and 0.05 s without; benchmarks/README.md). Lines of the earlier format, the
features as an object, are still read.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic_core import to_json  # compact JSON, 6x json.dumps on these lines

from vigil.contracts import MAX_ID

log = logging.getLogger("vigil.prediction_log")
HEADER = "vigil_prediction_log"  # the key of a header line; its value is the format's version
FORMAT = 2  # 2: features as an array named by the header; 1 (no header): features as an object


class PredictionLog:
    def __init__(self, folder: Path, max_open: int = 8, fsync_seconds: float = 0.2, features=()):
        """``features``: the names of the values a record's ``features`` array holds, in order."""
        self.folder = Path(folder)
        self.max_open, self.fsync_seconds = max_open, fsync_seconds
        self.header = to_json({HEADER: FORMAT, "features": list(features)}) + b"\n"
        self._files: OrderedDict[str, int] = OrderedDict()  # day -> fd, least recently used first
        self._headless: set[str] = set()  # opened by this process, header not written yet
        self._torn: set[str] = set()  # its last write failed: a torn line may end the file (bounded: days written)
        self._dirty: set[str] = set()
        self._lock = threading.Lock()  # one writer at a time: the lines of a call are one write(2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sync_loop, name="vigil-prediction-log-fsync", daemon=True)
        self._thread.start()

    def append(self, record: dict) -> None:
        self.append_many([record])

    def append_many(self, records: list[dict]) -> None:
        """Write the lines (one ``write(2)`` per day, page cache, no fsync) before returning.
        ``record['tx_datetime']`` (ISO text) decides the day folder."""
        self.append_lines([r["tx_datetime"][:10] for r in records], [to_json(r, fallback=str) + b"\n" for r in records])

    def append_lines(self, days: list[str], lines: list[bytes]) -> None:
        """:meth:`append_many` of lines already rendered (:func:`log_lines`), each with its day."""
        if len(set(days)) == 1:  # a batch of one day: no regrouping
            by_day = {days[0]: list(lines)}
        else:
            by_day: dict[str, list[bytes]] = {}
            for day, line in zip(days, lines):
                by_day.setdefault(day, []).append(line)
        with self._lock:
            if self._stop.is_set():
                raise RuntimeError("prediction log closed")
            for day, lines in by_day.items():
                fd = self._fd(day)
                if day in self._headless:  # the header and the first lines in one write(2): never one without the other
                    # after a line torn by a failed write, the header starts a line of its own
                    lines.insert(0, (b"\n" if day in self._torn else b"") + self.header)
                data = b"".join(lines)
                try:
                    while data:  # a short write (a full disk, a signal) must not tear a line
                        data = data[os.write(fd, data):]
                except OSError:  # closed: the next call opens the file again and writes the header first
                    self._files.pop(day, None)
                    self._dirty.discard(day)
                    self._headless.discard(day)
                    self._torn.add(day)
                    os.close(fd)
                    raise
                self._headless.discard(day)
                self._torn.discard(day)
                self._dirty.add(day)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        with self._lock:
            for fd in self._files.values():
                os.fsync(fd)
                os.close(fd)
            self._files.clear()
            self._dirty.clear()

    def _fd(self, day: str) -> int:  # under self._lock
        fd = self._files.get(day)
        if fd is not None:
            self._files.move_to_end(day)
            return fd
        while len(self._files) >= self.max_open:
            old, old_fd = self._files.popitem(last=False)
            os.close(old_fd)  # its lines are in the page cache; the kernel writes them back
            self._dirty.discard(old)
            self._headless.discard(old)
        d = self.folder / day
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        # host and pid: replicas in pods (each its own pid 1..n) on a shared volume never share a file
        fd = os.open(d / f"{socket.gethostname()}-{os.getpid()}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._files[day] = fd
        self._headless.add(day)
        return fd

    def _sync_loop(self) -> None:
        """Group commit: every ``fsync_seconds``, fsync what was written since, on duplicated
        descriptors outside the lock, so no request ever waits for the disk."""
        while not self._stop.wait(self.fsync_seconds):
            with self._lock:
                fds = [os.dup(self._files[d]) for d in self._dirty if d in self._files]
                self._dirty.clear()
            for fd in fds:
                try:
                    os.fsync(fd)
                except OSError as exc:
                    log.error("prediction log fsync failed: %s", exc)
                finally:
                    os.close(fd)


_TAIL = b',"customer_id":%d,"terminal_id":%d,"tx_datetime":"%b","features":%b,"served_at":"%b"}\n'


def feature_arrays(x: np.ndarray) -> list[bytes]:
    """Each row of the feature matrix as a JSON array (NaN: null), from one serialisation of the
    whole matrix: the rows are arrays of numbers, so ``],[`` only ever falls between two rows."""
    if not len(x):
        return []
    return to_json(x.tolist(), inf_nan_mode="null")[1:-1].replace(b"],[", b"]\n[").split(b"\n")


def log_lines(answers: list[bytes], customer_ids: list[int], terminal_ids: list[int], tx_datetimes: list[str],
              features: np.ndarray, served_at: str) -> list[bytes]:
    """The log lines of a batch: each answer's JSON object as the client got it, then the ids, the
    transaction's time, the served features (an array, in the header's order) and the time served.
    The same lines as ``to_json({**answer, ...})`` a row, without a dict and a serialisation per row
    (a 10,000-row batch: 42 ms against 58, benchmarks/README.md)."""
    at = served_at.encode()
    return [a[:-1] + _TAIL % (c, t, d.encode(), f, at)
            for a, c, t, d, f in zip(answers, customer_ids, terminal_ids, tx_datetimes, feature_arrays(features))]


def read_lines(path: Path):
    """``(line number, record, None)`` for each prediction of one log file, or ``(line number,
    None, why)`` for a line that cannot be read: a torn or corrupt line, features without a
    header naming them. Header lines are consumed, not yielded."""
    names = None
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():  # the newline a header starts with after a torn line
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                yield n, None, "not JSON (torn or corrupt line)"
                continue
            if isinstance(rec, dict) and HEADER in rec:
                got = rec.get("features")
                names = got if isinstance(got, list) and all(isinstance(x, str) for x in got) else None
                continue
            feats = rec.get("features") if isinstance(rec, dict) else None
            if isinstance(feats, list):
                if names is None:
                    yield n, None, "features: an array without a header line naming them"
                    continue
                if len(feats) != len(names):
                    yield n, None, f"features: {len(feats)} values for the header's {len(names)} names"
                    continue
                rec["features"] = dict(zip(names, feats))
            yield n, rec, None


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.json_normalize(rows, sep="__")
    frame.columns = [c.removeprefix("features__") for c in frame.columns]
    return frame


def read_day(folder: Path, day: date) -> pd.DataFrame:
    """All predictions logged for ``day`` (any process); a line that cannot be read is skipped."""
    rows = [rec for f in sorted((Path(folder) / day.isoformat()).glob("*.jsonl"))
            for _n, rec, _why in read_lines(f) if rec is not None]
    return _frame(rows) if rows else pd.DataFrame()


def prune(folder: Path, before: date, kept) -> list[date]:
    """Retention: delete the raw log folders of days before ``before`` whose copy ``kept(day)``
    confirms (the lake's), so the raw log never grows without bound and nothing unread is lost."""
    import shutil

    gone = []
    for d in sorted(Path(folder).glob("[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]")):
        try:
            day = date.fromisoformat(d.name)
        except ValueError:
            continue
        if day < before and kept(day):
            shutil.rmtree(d, ignore_errors=True)
            gone.append(day)
    return gone


REQUIRED = {"transaction_id": int, "tx_datetime": str, "customer_id": int, "terminal_id": int,
            "fraud_score": float, "decision": str, "model_version": str}


def line_problem(rec, day: date) -> str | None:
    """Why a logged line cannot be used downstream, or None."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    for name, kind in REQUIRED.items():
        v = rec.get(name)
        if kind is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        else:
            ok = isinstance(v, kind) and not isinstance(v, bool)
        if not ok:
            return f"{name}: missing or not {kind.__name__}"
        if kind is int and not 0 <= v <= MAX_ID:
            return f"{name}: outside int64"
    if rec["tx_datetime"][:10] != day.isoformat():
        return f"tx_datetime: not on {day}"
    return None


def read_day_checked(folder: Path, day: date) -> tuple[pd.DataFrame, list[dict], int]:
    """The day's predictions as the daily assets use them: lines that cannot be used are set aside
    with their reason (quarantined, not fatal: nothing a request carried can stop a later run), and
    a transaction logged again (a client's retry) is kept once, its first answer."""
    good, bad = [], []
    for f in sorted((Path(folder) / day.isoformat()).glob("*.jsonl")):
        for n, rec, why in read_lines(f):
            why = why or line_problem(rec, day)
            if why:
                bad.append({"file": f.name, "line": n, "reason": why})
            else:
                good.append(rec)
    if not good:
        return pd.DataFrame(), bad, 0
    frame = _frame(good)
    before = len(frame)
    frame = frame.sort_values("served_at", kind="stable") if "served_at" in frame else frame
    frame = frame.drop_duplicates("transaction_id", keep="first").reset_index(drop=True)
    return frame, bad, before - len(frame)
