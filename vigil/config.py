"""Where Vigil keeps its state, and the knobs every stage shares.

Everything is derived from one root (``VIGIL_HOME``, default ``./.vigil``) so a run, a test or a
user's deployment can be isolated by pointing one variable somewhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from vigil import lake
from vigil.settings import DEFAULT_START_DATE, Settings  # noqa: F401  (DEFAULT_START_DATE re-exported)

LABEL_MATURITY_DAYS = 7


@dataclass(frozen=True)
class Paths:
    root: Path
    lake_uri: str = ""  # empty: <root>/lake; else a local folder or s3://bucket/prefix (VIGIL_LAKE_URI)
    s3_endpoint: str = ""  # an S3-compatible server for s3:// locations (VIGIL_S3_ENDPOINT_URL)
    model_store_uri: str = ""  # registered models and the promotion pointer for every host (VIGIL_MODEL_STORE_URI)

    @property
    def landing(self) -> Path:
        """Source system drop zone: ``transactions/YYYY-MM-DD.parquet`` and ``labels/...``."""
        return self.root / "landing"

    @property
    def lake(self) -> lake.LakeFolder:
        """Every day-partitioned table: a local folder, or a prefix on an object store."""
        return lake.location(self.lake_uri, self.s3_endpoint) if self.lake_uri else self.root / "lake"

    @property
    def shared_models(self) -> lake.LakeFolder | None:
        """Where every host finds the registered models and the promotion pointer (an object-store
        prefix or a shared folder); None: this host's BentoML store and ``registry/`` only."""
        return lake.location(self.model_store_uri, self.s3_endpoint) if self.model_store_uri else None

    @property
    def lake_is_remote(self) -> bool:
        return self.lake_uri.startswith("s3://")

    @property
    def raw(self) -> lake.LakeFolder:
        return self.lake / "raw_transactions"

    @property
    def raw_labels(self) -> lake.LakeFolder:
        return self.lake / "raw_labels"

    @property
    def validated(self) -> lake.LakeFolder:
        return self.lake / "validated_transactions"

    @property
    def quarantine(self) -> lake.LakeFolder:
        return self.lake / "quarantine"

    @property
    def held(self) -> lake.LakeFolder:
        """Admitted rows of days a blocking check stopped: kept, but not read by features."""
        return self.lake / "held"

    @property
    def labels(self) -> lake.LakeFolder:
        return self.lake / "labels"

    @property
    def features(self) -> lake.LakeFolder:
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


def paths(root: str | Path | None = None, settings: Settings | None = None) -> Paths:
    """Paths under ``root``, else under the settings' home (``VIGIL_HOME``); the lake where the
    settings put it (``VIGIL_LAKE_URI``, default ``<root>/lake``)."""
    settings = settings or Settings.from_env()
    return Paths(Path(root).resolve() if root else settings.home, settings.lake_uri, settings.s3_endpoint_url,
                 settings.model_store_uri)


def start_date(settings: Settings | None = None) -> date:
    """First day of the daily partitions (``VIGIL_START_DATE``)."""
    return (settings or Settings.from_env()).start_date


def profile(settings: Settings | None = None) -> str:
    return (settings or Settings.from_env()).profile
