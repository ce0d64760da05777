"""Transient store errors are retried by Dagster (RetryRequested), anything else fails at once."""

import dagster as dg
import pytest

from assets import common
from assets.common import io_retries, is_transient


class FakeRedisDown(Exception):
    pass


FakeRedisDown.__module__, FakeRedisDown.__qualname__ = "redis.exceptions", "ConnectionError"


def test_transient_errors_by_class_chain_and_mro():
    assert is_transient(ConnectionResetError("reset by peer"))  # a builtins.ConnectionError subclass
    assert is_transient(TimeoutError())
    assert is_transient(FakeRedisDown("Error 111 connecting"))
    try:
        try:
            raise FakeRedisDown("down")
        except FakeRedisDown as exc:
            raise RuntimeError("online write failed") from exc
    except RuntimeError as wrapped:
        assert is_transient(wrapped)  # anywhere in the chain
    assert not is_transient(ValueError("required column(s) ['tx_amount'] missing"))
    assert not is_transient(FileNotFoundError("landing/2025-04-01.csv"))
    assert not is_transient(None)


@pytest.mark.parametrize("generator", [False, True])
def test_a_transient_error_is_retried_and_a_contract_error_is_not(monkeypatch, generator):
    monkeypatch.setattr(common, "IO_RETRY_SECONDS", 0.01)
    calls = []

    def body(context):
        calls.append(context.retry_number)
        if len(calls) < 3:
            raise ConnectionResetError("connection reset by peer")
        return dg.MaterializeResult(metadata={"attempts": len(calls)})

    if generator:
        @dg.asset(name="flaky")
        @io_retries
        def flaky(context: dg.AssetExecutionContext):
            yield body(context)
    else:
        @dg.asset(name="flaky")
        @io_retries
        def flaky(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            return body(context)

    assert dg.materialize([flaky]).success and calls == [0, 1, 2]

    broken_calls = []

    @dg.asset
    @io_retries
    def broken(context: dg.AssetExecutionContext) -> None:
        broken_calls.append(1)
        raise ValueError("required column(s) ['tx_amount'] missing")

    assert not dg.materialize([broken], raise_on_error=False).success and broken_calls == [1]

    always = []

    @dg.asset
    @io_retries
    def down(context: dg.AssetExecutionContext) -> None:
        always.append(1)
        raise TimeoutError("redis read timed out")

    assert not dg.materialize([down], raise_on_error=False).success
    assert len(always) == 1 + common.IO_MAX_RETRIES  # gives up after the retries
