"""Every ``VIGIL_*`` setting, read from the environment in one place, checked, and passed on.

Entry points (the CLI, Dagster's ``definitions.py``, the endpoint, the benchmarks) call
:meth:`Settings.from_env` once and hand the object down; nothing below them reads ``os.environ``
for a ``VIGIL_*`` name. Secrets are not settings: the source DSN, the Redis URL and the Feast
registry URL reach Dagster resources as ``EnvVar`` (their names are listed in ``SECRETS``) and the
feature store as arguments, never through this object's ``repr`` or the process environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path

DEFAULT_START_DATE = "2025-04-01"
PROFILES = ("local", "production")
SOURCES = ("files", "postgres")
FORMATS = ("auto", "csv", "parquet", "jsonl")
SECRETS = ("VIGIL_SOURCE_DSN", "VIGIL_REDIS_URL", "VIGIL_FEAST_REGISTRY")


class SettingsError(ValueError):
    """A ``VIGIL_*`` variable with a value Vigil cannot use; the message names it."""


def _url(name: str, value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) > 300:
        raise SettingsError(f"{name} must be an http(s) URL; got {value!r}")
    return value.rstrip("/")


def _names(name: str, value: str) -> str:
    """A comma-separated list of job names, normalised (the jobs themselves are checked where they
    are defined, ``pipelines/definitions.py``)."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if len(value) > 500 or any(not n.replace("_", "").isalnum() for n in names):
        raise SettingsError(f"{name} must be job names separated by commas; got {value!r}")
    return ",".join(names)


def _location(name: str, value: str) -> str:
    """A local folder (made absolute) or ``s3://bucket[/prefix]``; any other scheme is refused."""
    if not value:
        return ""
    if "://" in value:
        bucket = value[5:].split("/")[0] if value.startswith("s3://") else ""
        if not bucket or len(value) > 1000:
            raise SettingsError(f"{name} must be a local folder or s3://bucket[/prefix]; got {value!r}")
        return value.rstrip("/")
    return str(Path(value).resolve())


@dataclass(frozen=True)
class Settings:
    home: Path  # VIGIL_HOME: root of every file Vigil keeps (default ./.vigil)
    start_date: date  # VIGIL_START_DATE: first daily partition
    end_date: date | None = None  # VIGIL_END_DATE: last daily partition (default: today, for live data)
    profile: str = "local"  # VIGIL_PROFILE: local (embedded) or production (PostgreSQL, Redis)
    feast_project: str = "vigil"  # VIGIL_FEAST_PROJECT: Feast project (Redis keys, registry rows)
    feast_config: Path | None = None  # VIGIL_FEAST_CONFIG: another feature_store.yaml
    lake_uri: str = ""  # VIGIL_LAKE_URI: the lake, a local folder or s3://bucket/prefix (default <home>/lake)
    model_store_uri: str = ""  # VIGIL_MODEL_STORE_URI: registered models and the promotion pointer shared by every host (s3://bucket/prefix or a shared folder); empty: this host's BentoML store only
    s3_endpoint_url: str = ""  # VIGIL_S3_ENDPOINT_URL: an S3-compatible server (MinIO, moto); empty: AWS
    source: str = "files"  # VIGIL_SOURCE: files or postgres
    source_folder: str = ""  # VIGIL_SOURCE_FOLDER: landing folder (default $VIGIL_HOME/landing)
    source_format: str = "auto"  # VIGIL_SOURCE_FORMAT
    source_encoding: str = "utf-8"  # VIGIL_SOURCE_ENCODING
    source_tx_table: str = "transactions"  # VIGIL_SOURCE_TX_TABLE
    source_labels_table: str = "fraud_reports"  # VIGIL_SOURCE_LABELS_TABLE
    source_lookback_days: int = 40  # VIGIL_SOURCE_LOOKBACK_DAYS: late table rows noticed this far back
    reports_url: str = "http://127.0.0.1:3002"  # VIGIL_REPORTS_URL: where `vigil reports` serves the HTML reports
    retrain_strategy: str = "rollout"  # VIGIL_RETRAIN_STRATEGY: how a triggered retraining deploys (rollout, direct)
    rollout_min_requests: int = 200  # VIGIL_ROLLOUT_MIN_REQUESTS: candidate requests before a rollout step is judged
    rollout_min_seconds: int = 30  # VIGIL_ROLLOUT_MIN_SECONDS: seconds before a rollout step is judged
    # the endpoint's guard (serving/guard.py): what one request may carry and how often
    api_keys_file: Path | None = None  # VIGIL_API_KEYS_FILE: hashed API keys (default <home>/serving/api_keys.json)
    serving_max_body_bytes: int = 4 * 1024 * 1024  # VIGIL_SERVING_MAX_BODY_BYTES: larger bodies get a 413
    serving_max_batch: int = 10_000  # VIGIL_SERVING_MAX_BATCH: transactions in one /score_batch (413 above)
    serving_rate_limit: int = 2_000  # VIGIL_SERVING_RATE_LIMIT: requests per second per key (429 above)
    serving_body_timeout: int = 10  # VIGIL_SERVING_BODY_TIMEOUT: seconds to receive a body (408 after)
    serving_header_timeout: int = 10  # VIGIL_SERVING_HEADER_TIMEOUT: seconds to receive a request's headers (closed after)
    serving_max_future_seconds: int = 300  # VIGIL_SERVING_MAX_FUTURE_SECONDS: clock skew a tx_datetime may have
    serving_oldest: date = date(2000, 1, 1)  # VIGIL_SERVING_OLDEST: older tx_datetime values are refused
    serving_store_timeout_ms: int = 250  # VIGIL_SERVING_STORE_TIMEOUT_MS: online store read timeout (then degraded)
    serving_store_budget_ms: int = 250  # VIGIL_SERVING_STORE_BUDGET_MS: a request's online store calls in all (then degraded)
    serving_store_cooldown_s: int = 2  # VIGIL_SERVING_STORE_COOLDOWN_S: after a store failure, requests skip it this long (degraded)
    serving_workers: int = 2  # VIGIL_SERVING_WORKERS: endpoint processes
    serving_threads: int = 4  # VIGIL_SERVING_THREADS: threads per process for batches and for a networked online store
    serving_feature_cache: int = 200_000  # VIGIL_SERVING_FEATURE_CACHE: snapshot rows a worker keeps in memory (local SQLite online store; 0: off)
    serving_compiled: str = "auto"  # VIGIL_SERVING_COMPILED: auto (batches scored by the booster compiled with lleaves, when installed, once built) or off
    serving_tracing: str = "off"  # VIGIL_SERVING_TRACING: off (BentoML's OpenTelemetry middleware skips every route) or on (BentoML's tracing configuration applies)
    serving_on_loop: str = "auto"  # VIGIL_SERVING_ON_LOOP: auto (/score on the event loop when the online store is a local SQLite file) or never
    k8s_step_jobs: str = ""  # VIGIL_K8S_STEP_JOBS: jobs whose steps each run as a Kubernetes Job (comma-separated)
    backfill_partitions_per_run: int = 0  # VIGIL_BACKFILL_PARTITIONS_PER_RUN: days per backfill run (0: the whole range in one)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            return env.get(name, "") or default

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            v = get(name, default)
            if v not in allowed:
                raise SettingsError(f"{name} must be one of {', '.join(allowed)}; got {v!r}")
            return v

        try:
            start = date.fromisoformat(get("VIGIL_START_DATE", DEFAULT_START_DATE))
        except ValueError as exc:
            raise SettingsError(f"VIGIL_START_DATE must be a date YYYY-MM-DD; got {env.get('VIGIL_START_DATE')!r}") from exc
        end = None
        if get("VIGIL_END_DATE", ""):
            try:
                end = date.fromisoformat(get("VIGIL_END_DATE", ""))
            except ValueError as exc:
                raise SettingsError(f"VIGIL_END_DATE must be a date YYYY-MM-DD; got {env.get('VIGIL_END_DATE')!r}") from exc
            if end < start:
                raise SettingsError(f"VIGIL_END_DATE {end} is before VIGIL_START_DATE {start}")
        lookback = get("VIGIL_SOURCE_LOOKBACK_DAYS", "40")
        if not lookback.isdigit() or not 1 <= int(lookback) <= 3660:
            raise SettingsError(f"VIGIL_SOURCE_LOOKBACK_DAYS must be a whole number of days from 1 to 3660; got {lookback!r}")
        feast_config = get("VIGIL_FEAST_CONFIG", "")

        def day(name: str, default: str) -> date:
            try:
                return date.fromisoformat(get(name, default))
            except ValueError as exc:
                raise SettingsError(f"{name} must be a date YYYY-MM-DD; got {env.get(name)!r}") from exc

        def whole(name: str, default: str, low: int, high: int) -> int:
            v = get(name, default)
            if not v.isdigit() or not low <= int(v) <= high:
                raise SettingsError(f"{name} must be a whole number from {low} to {high}; got {v!r}")
            return int(v)

        return cls(
            home=Path(get("VIGIL_HOME", ".vigil")).resolve(),
            start_date=start,
            end_date=end,
            profile=choice("VIGIL_PROFILE", "local", PROFILES),
            feast_project=get("VIGIL_FEAST_PROJECT", "vigil"),
            feast_config=Path(feast_config).resolve() if feast_config else None,
            lake_uri=_location("VIGIL_LAKE_URI", get("VIGIL_LAKE_URI", "")),
            model_store_uri=_location("VIGIL_MODEL_STORE_URI", get("VIGIL_MODEL_STORE_URI", "")),
            s3_endpoint_url=_url("VIGIL_S3_ENDPOINT_URL", get("VIGIL_S3_ENDPOINT_URL", "")) if get("VIGIL_S3_ENDPOINT_URL", "") else "",
            source=choice("VIGIL_SOURCE", "files", SOURCES),
            source_folder=get("VIGIL_SOURCE_FOLDER", ""),
            source_format=choice("VIGIL_SOURCE_FORMAT", "auto", FORMATS),
            source_encoding=get("VIGIL_SOURCE_ENCODING", "utf-8"),
            source_tx_table=get("VIGIL_SOURCE_TX_TABLE", "transactions"),
            source_labels_table=get("VIGIL_SOURCE_LABELS_TABLE", "fraud_reports"),
            source_lookback_days=int(lookback),
            reports_url=_url("VIGIL_REPORTS_URL", get("VIGIL_REPORTS_URL", "http://127.0.0.1:3002")),
            retrain_strategy=choice("VIGIL_RETRAIN_STRATEGY", "rollout", ("rollout", "direct")),
            rollout_min_requests=whole("VIGIL_ROLLOUT_MIN_REQUESTS", "200", 1, 1_000_000),
            rollout_min_seconds=whole("VIGIL_ROLLOUT_MIN_SECONDS", "30", 0, 86_400),
            api_keys_file=Path(get("VIGIL_API_KEYS_FILE", "")).resolve() if get("VIGIL_API_KEYS_FILE", "") else None,
            serving_max_body_bytes=whole("VIGIL_SERVING_MAX_BODY_BYTES", str(4 * 1024 * 1024), 1024, 256 * 1024 * 1024),
            serving_max_batch=whole("VIGIL_SERVING_MAX_BATCH", "10000", 1, 1_000_000),
            serving_rate_limit=whole("VIGIL_SERVING_RATE_LIMIT", "2000", 1, 1_000_000),
            serving_body_timeout=whole("VIGIL_SERVING_BODY_TIMEOUT", "10", 1, 600),
            serving_header_timeout=whole("VIGIL_SERVING_HEADER_TIMEOUT", "10", 1, 600),
            serving_max_future_seconds=whole("VIGIL_SERVING_MAX_FUTURE_SECONDS", "300", 0, 86_400),
            serving_oldest=day("VIGIL_SERVING_OLDEST", "2000-01-01"),
            serving_store_timeout_ms=whole("VIGIL_SERVING_STORE_TIMEOUT_MS", "250", 10, 60_000),
            serving_store_budget_ms=whole("VIGIL_SERVING_STORE_BUDGET_MS", "250", 10, 60_000),
            serving_store_cooldown_s=whole("VIGIL_SERVING_STORE_COOLDOWN_S", "2", 0, 600),
            serving_workers=whole("VIGIL_SERVING_WORKERS", "2", 1, 64),
            serving_threads=whole("VIGIL_SERVING_THREADS", "4", 1, 256),
            serving_feature_cache=whole("VIGIL_SERVING_FEATURE_CACHE", "200000", 0, 50_000_000),
            serving_on_loop=choice("VIGIL_SERVING_ON_LOOP", "auto", ("auto", "never")),
            serving_tracing=choice("VIGIL_SERVING_TRACING", "off", ("off", "on")),
            serving_compiled=choice("VIGIL_SERVING_COMPILED", "auto", ("auto", "off")),
            k8s_step_jobs=_names("VIGIL_K8S_STEP_JOBS", get("VIGIL_K8S_STEP_JOBS", "")),
            backfill_partitions_per_run=whole("VIGIL_BACKFILL_PARTITIONS_PER_RUN", "0", 0, 366),
        )

    def deploy_config(self) -> dict:
        """Run config of the retraining job's deployment step for a triggered run."""
        return {"ops": {"production_model": {"config": {"strategy": self.retrain_strategy,
                                                        "min_requests": self.rollout_min_requests,
                                                        "min_seconds": float(self.rollout_min_seconds)}}}}

    def keys_file(self) -> Path:
        return self.api_keys_file or self.home / "serving" / "api_keys.json"

    def as_env(self) -> dict[str, str]:
        """The settings as ``VIGIL_*`` variables, for a child process (an endpoint, a Dagster run)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f"VIGIL_{f.name.upper()}"] = v.isoformat() if isinstance(v, date) else str(v)
        return out
