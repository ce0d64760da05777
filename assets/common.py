"""Partitions and small helpers shared by the asset modules."""


import functools
import inspect
import warnings
from datetime import date, timedelta

import dagster as dg
import pandas as pd

from vigil.settings import Settings

warnings.filterwarnings("ignore", category=dg.BetaWarning)  # backfill_policy is beta, and deliberate

_SETTINGS = Settings.from_env()
# Partitions end at the data: VIGIL_END_DATE (the demo sets its last simulated day), else today, so
# a fully backfilled history shows green rather than hundreds of days with no data yet.
DAILY = dg.DailyPartitionsDefinition(
    start_date=_SETTINGS.start_date.isoformat(),
    end_date=(_SETTINGS.end_date + timedelta(days=1)).isoformat() if _SETTINGS.end_date else None,
)
# How a backfill splits a range of days into runs (VIGIL_BACKFILL_PARTITIONS_PER_RUN): 0, the
# default, one run for the whole range (the CLI's ``dagster asset materialize --partition-range a...b``
# accepts only this); N, runs of at most N days, each its own process or, with the K8s run launcher,
# its own Kubernetes Job, ordered by the daemon along the partition dependencies below (window_dep).
# Every daily asset replaces its partitions' files, so re-runs never duplicate.
PARTITIONS_PER_RUN = _SETTINGS.backfill_partitions_per_run
BACKFILL_POLICY = (dg.BackfillPolicy.multi_run(max_partitions_per_run=PARTITIONS_PER_RUN) if PARTITIONS_PER_RUN
                   else dg.BackfillPolicy.single_run())


def window_dep(asset: str, start_offset: int, end_offset: int = 0) -> dg.AssetDep:
    """A dependency of each daily partition on ``asset``'s partitions from ``start_offset`` to
    ``end_offset`` days away (both included; negative is earlier): what the asset really reads, so a
    multi-run backfill never runs a day before the days it reads. Days before the first partition
    (or after the last) do not exist and are not waited for: the first days read what history
    there is, as in a single run."""
    return dg.AssetDep(asset, partition_mapping=dg.TimeWindowPartitionMapping(
        start_offset=start_offset, end_offset=end_offset, allow_nonexistent_upstream_partitions=True))


# Errors of a store over the network that a retry can cure (by class, anywhere in the exception's
# chain or MRO): a dropped or refused connection, a timeout, a database restarting or failing over.
TRANSIENT = frozenset({
    "builtins.ConnectionError", "builtins.TimeoutError", "socket.timeout",
    "redis.exceptions.ConnectionError", "redis.exceptions.TimeoutError", "redis.exceptions.BusyLoadingError",
    "psycopg.OperationalError", "psycopg2.OperationalError", "sqlalchemy.exc.OperationalError",
    "sqlalchemy.exc.InterfaceError", "sqlalchemy.exc.DisconnectionError",
    "botocore.exceptions.EndpointConnectionError", "botocore.exceptions.ConnectionClosedError",
})
IO_MAX_RETRIES = 3
IO_RETRY_SECONDS = 5.0  # the first wait; doubled at each retry (5, 10, 20 s)


def is_transient(exc: BaseException | None) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if any(f"{c.__module__}.{c.__qualname__}" in TRANSIENT for c in type(exc).__mro__):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def io_retries(fn):
    """For assets that talk to a store over the network (the source database, Redis, the SQL
    registries): a transient error (:data:`TRANSIENT`) asks Dagster for a retry, up to
    ``IO_MAX_RETRIES`` with doubling waits; anything else (a broken contract, a bad config) fails at
    once, as a Dagster ``RetryPolicy`` would not tell apart. Each such asset is safe to re-run:
    partitions are replaced atomically, online writes follow the newest-wins rule."""

    def retry(exc: Exception, args, kwargs) -> dg.RetryRequested:
        contexts = (dg.OpExecutionContext, dg.AssetExecutionContext)
        context = next((a for a in (*args, *kwargs.values()) if isinstance(a, contexts)), None)
        attempt = context.retry_number if context is not None else 0
        if context is not None:
            context.log.warning(f"transient {type(exc).__name__}: {exc}; retry {attempt + 1} of {IO_MAX_RETRIES}")
        return dg.RetryRequested(max_retries=IO_MAX_RETRIES, seconds_to_wait=IO_RETRY_SECONDS * 2 ** attempt)

    if inspect.isgeneratorfunction(fn):  # an asset that yields its output and check results
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                raise retry(exc, args, kwargs) from exc

        return generator

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise retry(exc, args, kwargs) from exc

    return wrapper


BACKFILL_ID_TAG = "dagster/backfill"  # the tag Dagster puts on every run of a backfill: its id


def refuse_unordered_backfill(context: dg.AssetExecutionContext) -> None:
    """With a multi-run policy, fail a run of a *job* backfill (one launched from a job's page, e.g.
    ``daily_pipeline``) that spans more than one run. Dagster's job backfills split a range by the
    assets' policy but launch every chunk at once, without the partition dependencies, so a chunk
    could read days another chunk has not written yet; asset backfills (the asset graph or an asset's
    page, GraphQL with ``assetSelection``) order the chunks. Called by the assets that read other days."""
    if not PARTITIONS_PER_RUN or not context.run.tags.get(BACKFILL_ID_TAG):
        return
    backfill = context.instance.get_backfill(context.run.tags[BACKFILL_ID_TAG])
    if backfill is not None and not backfill.is_asset_backfill and len(backfill.partition_names or ()) > PARTITIONS_PER_RUN:
        raise dg.Failure(
            f"backfill {backfill.backfill_id} is a job backfill of {len(backfill.partition_names)} days in runs of "
            f"{PARTITIONS_PER_RUN} (VIGIL_BACKFILL_PARTITIONS_PER_RUN): Dagster launches a job backfill's runs without "
            "ordering them by the days each reads. Launch it as an asset backfill (select the daily assets in the asset "
            "graph, Materialize, choose the days), or with VIGIL_BACKFILL_PARTITIONS_PER_RUN=0 as one run.")


def days_of(context: dg.AssetExecutionContext) -> list[date]:
    return [date.fromisoformat(k) for k in context.partition_keys]


def md_table(frame: pd.DataFrame, floatfmt: str = ".4f") -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False, floatfmt=floatfmt))


MAX_TABLE_ROWS = 100  # a metadata table stays readable (and bounded) whatever the number of files or days


def bounded_table(frame: pd.DataFrame, limit: int = MAX_TABLE_ROWS) -> dg.MetadataValue:
    """A markdown table of at most ``limit`` rows, saying how many were left out."""
    if len(frame) <= limit:
        return md_table(frame)
    return dg.MetadataValue.md(frame.head(limit).to_markdown(index=False) + f"\n\n… {len(frame) - limit} more rows")


def progress(context: dg.AssetExecutionContext, i: int, n: int, what: str) -> None:
    if n > 1 and (i == n - 1 or i % max(1, n // 10) == 0):
        context.log.info(f"{what}: {i + 1}/{n} days")
