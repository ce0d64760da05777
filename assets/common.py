"""Partitions and small helpers shared by the asset modules."""


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
