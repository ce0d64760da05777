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
# A range of days runs as one run (CLI: ``dagster asset materialize --partition-range a...b``),
# and every daily asset replaces its partitions' files, so re-runs never duplicate.
SINGLE_RUN = dg.BackfillPolicy.single_run()


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
