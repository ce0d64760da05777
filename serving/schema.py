"""What a scoring request may carry, stated once for the guard, the service and the OpenAPI.

Every bound is what the rest of the system can hold: ids are JSON integers that fit the int64 keys
of Feast and the lake (a string, float or boolean is refused, as the file contract refuses
``"12.0"``); amounts are positive and under the contract's ceiling; a timestamp carries an offset
or is UTC, and lies between ``VIGIL_SERVING_OLDEST`` and now plus ``VIGIL_SERVING_MAX_FUTURE_SECONDS``
(so no request can create a log folder for year 1 or 2999). A timestamp older than its features
is scored with those features flagged stale (:func:`vigil.features.fresh_mask`).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field
from typing_extensions import TypedDict

from vigil.contracts import DEFAULT_AMOUNT_CEILING, MAX_ID
from vigil.settings import Settings

_window: dict = {}


def set_window(settings: Settings) -> None:
    _window.update(oldest=datetime.combine(settings.serving_oldest, datetime.min.time()),
                   future=timedelta(seconds=settings.serving_max_future_seconds))
    _now[0] = -1e9  # the next check reads the clock with the new skew


_now = [0.0, datetime.min]  # (monotonic time of the reading, the latest accepted datetime)


def _latest() -> datetime:
    """Now + the allowed skew, read at most every 0.25 s (a 10,000-item batch asked the clock
    10,000 times): the bound is at most 0.25 s behind on a window of minutes."""
    mono = time.monotonic()
    if mono - _now[0] > 0.25:
        _now[:] = [mono, datetime.now(timezone.utc).replace(tzinfo=None) + _window["future"]]
    return _now[1]


def _in_window(dt: datetime) -> datetime:
    """Naive UTC within the accepted window, or a ValueError that says which bound."""
    if not _window:
        set_window(Settings.from_env())
    if dt.tzinfo is not None:
        try:
            dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
        except OverflowError:
            raise ValueError("outside the representable calendar once converted to UTC") from None
    if dt < _window["oldest"]:
        raise ValueError(f"before {_window['oldest']:%Y-%m-%d} (VIGIL_SERVING_OLDEST)")
    latest = _latest()
    if dt > latest:
        raise ValueError(f"more than {_window['future'].total_seconds():.0f} s in the future "
                         "(VIGIL_SERVING_MAX_FUTURE_SECONDS)")
    return dt


Id = Annotated[int, Field(strict=True, ge=0, le=MAX_ID, description="a JSON integer, 0 to 2**63-1")]
Amount = Annotated[float, Field(strict=True, ge=0.01, le=DEFAULT_AMOUNT_CEILING,
                                description=f"transaction amount, 0.01 to {DEFAULT_AMOUNT_CEILING:g}")]
Timestamp = Annotated[datetime, Field(strict=True, json_schema_extra={"pattern": "^2[0-9]{3}-"}, description=(
    "ISO 8601 date-time; with an offset, or read as UTC; between VIGIL_SERVING_OLDEST (default "
    "2000-01-01) and now + VIGIL_SERVING_MAX_FUTURE_SECONDS (default 300)")), AfterValidator(_in_window)]


class Transaction(BaseModel):
    transaction_id: Id
    tx_datetime: Timestamp
    customer_id: Id
    terminal_id: Id
    tx_amount: Amount


class Batch(BaseModel):
    transactions: list[Transaction] = Field(description="at most VIGIL_SERVING_MAX_BATCH (default 10,000) items")


class TransactionFields(TypedDict):
    """:class:`Transaction`'s fields validated into a plain dict: the guard's ``/score_batch`` path
    (8 ms for 10,000 items against 20 ms for models and their ``__dict__``, benchmarks/README.md).
    The same annotations, so the same rules and error texts; a unit test compares the schemas."""

    transaction_id: Id
    tx_datetime: Timestamp
    customer_id: Id
    terminal_id: Id
    tx_amount: Amount


class BatchFields(TypedDict):
    transactions: list[TransactionFields]


class Score(BaseModel):
    transaction_id: int
    fraud_score: float
    decision: str
    reasons: list[str]
    stale_features: list[str]
    degraded: bool = Field(False, description="scored without the online store's features (it was unreachable)")
    model_version: str
    variant: str = Field(description="champion, or candidate during a canary step (vigil.rollout)")
    latency_ms: float = Field(description="time inside the handler for features, model and policy; excludes "
                                          "the prediction-log write, HTTP parsing, validation and queueing")
    request_id: str = Field("", description="the id this prediction is logged under")


class ClientError(BaseModel):
    error: str
    detail: str = Field(description="at most the first 5 problems, each naming its field")
