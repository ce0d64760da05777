"""Dagster resources: the outside world (lake, feature store, model registry, prediction log).

One implementation per profile where the outside world differs: the embedded profile keeps
everything under ``VIGIL_HOME``; the production profile reads its connection strings from
environment variables (``EnvVar``), never from code.
"""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from vigil import config
from vigil.settings import Settings


class VigilStorage(dg.ConfigurableResource):
    """Root of Vigil's files (lake, models, monitoring). Empty means ``$VIGIL_HOME`` or ``./.vigil``."""

    home: str = ""
    reports_url: str = ""  # empty: VIGIL_REPORTS_URL (default http://127.0.0.1:3002, `vigil reports`)

    @property
    def paths(self) -> config.Paths:
        return config.paths(self.home or None)

    def report_link(self, file) -> str:
        """The URL of a report under the monitoring folder on Vigil's report server."""
        from vigil.reports import report_url

        return report_url(self.reports_url or Settings.from_env().reports_url, self.paths.monitoring, file)


class FeatureStoreResource(dg.ConfigurableResource):
    """Feast, configured by ``infra/feast/<profile>/feature_store.yaml``."""

    home: str = ""  # empty: the settings' home (VIGIL_HOME) when the store is opened
    profile: str = "local"
    project: str = ""  # Feast project; empty: the settings' (VIGIL_FEAST_PROJECT, default vigil)
    _store = PrivateAttr(default=None)

    def _secrets(self) -> dict[str, str]:
        return {}

    def store(self):
        if self._store is None:
            from dataclasses import replace

            from vigil.feature_repo import open_store

            settings = Settings.from_env()
            settings = replace(settings, profile=self.profile, feast_project=self.project or settings.feast_project)
            self._store = open_store(config.paths(self.home or None, settings), settings=settings, secrets=self._secrets())
        return self._store


class ProductionFeatureStoreResource(FeatureStoreResource):
    """Production Feast: Redis online store and SQL registry; connection strings from env vars
    (``EnvVar``), handed to Feast as arguments."""

    profile: str = "production"
    redis_url: str
    registry_url: str

    def _secrets(self) -> dict[str, str]:
        return {"VIGIL_REDIS_URL": self.redis_url, "VIGIL_FEAST_REGISTRY": self.registry_url}


class SourceResource(dg.ConfigurableResource):
    """Where the daily rows come from, chosen by ``VIGIL_SOURCE`` (``files`` or ``postgres``).
    Each implementation has ``transactions(paths)`` and ``labels(paths)``, returning a
    :mod:`vigil.sources` reader; assets and the sensor take this type."""


class LandingFilesSource(SourceResource):
    """Landing files: ``<folder>/transactions/YYYY-MM-DD.<csv|parquet|jsonl>`` (or a folder of parts
    per day) and ``<folder>/labels/...``. Empty ``folder`` means ``$VIGIL_HOME/landing``."""

    folder: str = ""
    format: str = "auto"  # auto (by suffix), csv, parquet or jsonl
    encoding: str = "utf-8"

    def _root(self, paths: config.Paths):
        from pathlib import Path

        return Path(self.folder) if self.folder else paths.landing

    def transactions(self, paths: config.Paths):
        from vigil.sources import FileSource

        return FileSource(self._root(paths) / "transactions", self.format, self.encoding)

    def labels(self, paths: config.Paths):
        from vigil.sources import FileSource

        return FileSource(self._root(paths) / "labels", self.format, self.encoding)


class PostgresTableSource(SourceResource):
    """Tables in PostgreSQL (production profile): the day is selected on the time column (UTC)."""

    dsn: str  # from the VIGIL_SOURCE_DSN environment variable, never from code
    transactions_table: str = "transactions"
    labels_table: str = "fraud_reports"

    def transactions(self, paths: config.Paths):
        from vigil.sources import PostgresSource

        return PostgresSource(self.dsn, self.transactions_table, "tx_datetime")

    def labels(self, paths: config.Paths):
        from vigil.sources import PostgresSource

        return PostgresSource(self.dsn, self.labels_table, "reported_at")


def source_resource(settings: Settings) -> SourceResource:
    """``VIGIL_SOURCE=files`` (default): ``VIGIL_SOURCE_FOLDER``, ``VIGIL_SOURCE_FORMAT``,
    ``VIGIL_SOURCE_ENCODING``. ``VIGIL_SOURCE=postgres``: ``VIGIL_SOURCE_DSN`` (secret, ``EnvVar``),
    ``VIGIL_SOURCE_TX_TABLE``, ``VIGIL_SOURCE_LABELS_TABLE``."""
    if settings.source == "postgres":
        return PostgresTableSource(dsn=dg.EnvVar("VIGIL_SOURCE_DSN"), transactions_table=settings.source_tx_table,
                                   labels_table=settings.source_labels_table)
    return LandingFilesSource(folder=settings.source_folder, format=settings.source_format,
                              encoding=settings.source_encoding)


class AlertSinks(dg.ConfigurableResource):
    """Where alerts go: always ``$VIGIL_HOME/alerts/alerts.jsonl``; also a webhook when
    ``VIGIL_ALERT_WEBHOOK`` is set (a secret, passed as ``EnvVar``)."""

    webhook_url: str = ""

    def alerter(self, paths: config.Paths):
        from vigil.alerts import Alerter

        return Alerter(paths.root / "alerts", self.webhook_url)


def resources_for_profile(settings: Settings | str | None = None) -> dict:
    """The resources of the settings' profile (a profile name: that profile with the other settings
    from the environment), one implementation per environment. Storage and Feast resolve an empty
    home when used, so one loaded code location follows ``VIGIL_HOME`` of the run."""
    from dataclasses import replace

    if not isinstance(settings, Settings):
        settings = replace(Settings.from_env(), **({"profile": settings} if settings else {}))
    if settings.profile == "production":
        feast = ProductionFeatureStoreResource(redis_url=dg.EnvVar("VIGIL_REDIS_URL"),
                                               registry_url=dg.EnvVar("VIGIL_FEAST_REGISTRY"))
    else:
        feast = FeatureStoreResource()
    import os

    alerts = AlertSinks(webhook_url=dg.EnvVar("VIGIL_ALERT_WEBHOOK")) if os.environ.get("VIGIL_ALERT_WEBHOOK") else AlertSinks()
    return {"storage": VigilStorage(), "feature_store": feast, "source": source_resource(settings), "alerts": alerts}
