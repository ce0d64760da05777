"""Settings: every VIGIL_* variable parsed in one place, with errors that name the variable."""

from datetime import date
from pathlib import Path

import pytest

from vigil.feature_repo import INFRA, repo_config
from vigil.settings import Settings, SettingsError


def test_defaults_and_round_trip(tmp_path):
    s = Settings.from_env({"VIGIL_HOME": str(tmp_path)})
    assert s.home == tmp_path.resolve() and s.start_date == date(2025, 4, 1) and s.profile == "local"
    assert s.source == "files" and s.source_lookback_days == 40
    assert Settings.from_env(s.as_env()) == s
    end = Settings.from_env({"VIGIL_HOME": str(tmp_path), "VIGIL_END_DATE": "2025-07-01"})
    assert end.end_date == date(2025, 7, 1) and Settings.from_env(end.as_env()) == end


@pytest.mark.parametrize("name,value", [("VIGIL_PROFILE", "prod"), ("VIGIL_START_DATE", "01/04/2025"),
                                        ("VIGIL_SOURCE", "s3"), ("VIGIL_SOURCE_FORMAT", "xlsx"),
                                        ("VIGIL_SOURCE_LOOKBACK_DAYS", "-3"), ("VIGIL_SOURCE_LOOKBACK_DAYS", "99999"),
                                        ("VIGIL_END_DATE", "2025-13-01"), ("VIGIL_END_DATE", "2025-01-01"),
                                        ("VIGIL_REPORTS_URL", "file:///tmp")])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_production_feast_config_is_filled_from_arguments_not_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("VIGIL_REDIS_URL", raising=False)
    yaml_file = INFRA / "production" / "feature_store.yaml"
    values = {"VIGIL_HOME": str(tmp_path), "VIGIL_FEAST_PROJECT": "p1", "VIGIL_REDIS_URL": "127.0.0.1:6399",
              "VIGIL_FEAST_REGISTRY": "postgresql+psycopg://u@127.0.0.1:5432/x"}
    cfg = repo_config(yaml_file, values, tmp_path)
    assert cfg.project == "p1" and cfg.online_store.connection_string == "127.0.0.1:6399"
    assert cfg.registry.path == values["VIGIL_FEAST_REGISTRY"]
    import os

    assert "VIGIL_REDIS_URL" not in os.environ
    with pytest.raises(ValueError, match="VIGIL_FEAST_REGISTRY, VIGIL_REDIS_URL"):
        repo_config(yaml_file, {"VIGIL_HOME": str(tmp_path), "VIGIL_FEAST_PROJECT": "p"}, Path(tmp_path))
