"""Dagster resources: the outside world (lake, feature store, model registry, prediction log).

One implementation per profile where the outside world differs: the embedded profile keeps
everything under ``VIGIL_HOME``; the production profile reads its connection strings from
environment variables (``EnvVar``), never from code.
"""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from vigil import config


class VigilStorage(dg.ConfigurableResource):
    """Root of Vigil's files (lake, models, monitoring). Empty means ``$VIGIL_HOME`` or ``./.vigil``."""

    home: str = ""

    @property
    def paths(self) -> config.Paths:
        return config.paths(self.home or None)


class FeatureStoreResource(dg.ConfigurableResource):
    """Feast, configured by ``infra/feast/<profile>/feature_store.yaml``."""

    home: str = ""
    profile: str = "local"
    _store = PrivateAttr(default=None)

    def store(self):
        if self._store is None:
            from vigil.feature_repo import open_store

            self._store = open_store(config.paths(self.home or None), self.profile)
        return self._store


class ProductionFeatureStoreResource(FeatureStoreResource):
    """Production Feast: Redis online store and SQL registry; connection strings from env vars."""

    profile: str = "production"
    redis_url: str
    registry_url: str

    def store(self):
        import os

        os.environ["VIGIL_REDIS_URL"] = self.redis_url
        os.environ["VIGIL_FEAST_REGISTRY"] = self.registry_url
        return super().store()


def resources_for_profile(profile: str | None = None) -> dict:
    profile = profile or config.profile()
    storage = VigilStorage()
    if profile == "production":
        feast = ProductionFeatureStoreResource(
            redis_url=dg.EnvVar("VIGIL_REDIS_URL"), registry_url=dg.EnvVar("VIGIL_FEAST_REGISTRY")
        )
    else:
        feast = FeatureStoreResource()
    return {"storage": storage, "feature_store": feast}
