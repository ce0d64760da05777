"""The prediction log: every served score, appended as one JSON line per prediction.

Each line is written with a single ``write`` on a file opened in append mode, without a user-space
buffer, so a crash or kill of the server loses nothing that was answered. Files are split by the
transaction's day and the writing process, so several workers never interleave partial lines.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import date
from pathlib import Path

import pandas as pd


class PredictionLog:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._files: dict[str, int] = {}
        self._lock = threading.Lock()

    def _fd(self, day: str) -> int:
        fd = self._files.get(day)
        if fd is None:
            with self._lock:
                fd = self._files.get(day)
                if fd is None:
                    d = self.folder / day
                    d.mkdir(parents=True, exist_ok=True)
                    fd = os.open(d / f"{os.getpid()}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                    self._files[day] = fd
        return fd

    def append(self, record: dict) -> None:
        """``record['tx_datetime']`` (ISO text) decides the day folder."""
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        os.write(self._fd(record["tx_datetime"][:10]), line)

    def append_many(self, records: list[dict]) -> None:
        by_day: dict[str, list[bytes]] = {}
        for r in records:
            by_day.setdefault(r["tx_datetime"][:10], []).append((json.dumps(r, separators=(",", ":"), default=str) + "\n").encode())
        for day, lines in by_day.items():
            os.write(self._fd(day), b"".join(lines))

    def close(self) -> None:
        with self._lock:
            for fd in self._files.values():
                os.fsync(fd)
                os.close(fd)
            self._files.clear()


def read_day(folder: Path, day: date) -> pd.DataFrame:
    """All predictions logged for ``day`` (any process); a torn last line is skipped, not fatal."""
    rows = []
    for f in sorted((Path(folder) / day.isoformat()).glob("*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    if not rows:
        return pd.DataFrame()
    frame = pd.json_normalize(rows, sep="__")
    frame.columns = [c.removeprefix("features__") for c in frame.columns]
    return frame
