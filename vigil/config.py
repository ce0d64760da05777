"""Where Vigil keeps its state, and the knobs every stage shares.

Everything is derived from one root (``VIGIL_HOME``, default ``./.vigil``) so a run, a test or a
user's deployment can be isolated by pointing one variable somewhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

DEFAULT_START_DATE = "2025-04-01"
LABEL_MATURITY_DAYS = 7


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def landing(self) -> Path:
        """Source system drop zone: ``transactions/YYYY-MM-DD.parquet`` and ``labels/...``."""
        return self.root / "landing"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def raw(self) -> Path:
        return self.lake / "raw_transactions"

    @property
    def validated(self) -> Path:
        return self.lake / "validated_transactions"

    @property
    def quarantine(self) -> Path:
        return self.lake / "quarantine"

    @property
    def held(self) -> Path:
        """Admitted rows of days a blocking check stopped: kept, but not read by features."""
        return self.lake / "held"

    @property
    def labels(self) -> Path:
        return self.lake / "labels"

    @property
    def features(self) -> Path:
        return self.lake / "features"

    @property
    def feast_repo(self) -> Path:
        return self.root / "feast"

    @property
    def models(self) -> Path:
        """Training artefacts (training sets, evaluation plots) before they enter the store."""
        return self.root / "models"

    @property
    def bentoml_home(self) -> Path:
        return self.root / "bentoml"

    @property
    def registry(self) -> Path:
        """Promotion pointer and promotion log."""
        return self.root / "registry"

    @property
    def predictions(self) -> Path:
        """Raw prediction log written by the endpoint (JSON lines, one folder per day)."""
        return self.root / "predictions"

    @property
    def monitoring(self) -> Path:
        return self.root / "monitoring"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"


def vigil_home() -> Path:
    return Path(os.environ.get("VIGIL_HOME", ".vigil")).resolve()


def paths(root: str | Path | None = None) -> Paths:
    return Paths(Path(root).resolve() if root else vigil_home())


def start_date() -> date:
    """First day of the daily partitions (``VIGIL_START_DATE``)."""
    return date.fromisoformat(os.environ.get("VIGIL_START_DATE", DEFAULT_START_DATE))


def profile() -> str:
    p = os.environ.get("VIGIL_PROFILE", "local")
    if p not in ("local", "production"):
        raise ValueError(f"VIGIL_PROFILE must be 'local' or 'production', got {p!r}")
    return p
