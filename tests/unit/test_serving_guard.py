"""The endpoint's guard and request schema as pure logic: keys, rate, parsing, the error text,
the OpenAPI additions; and the prediction log's bounds. The real server is in tests/integration."""

import json
import os
import socket
import threading
import time
import stat
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from serving.guard import MAX_ERRORS, Bucket, Guard, Refused, describe, openapi
from serving.schema import MAX_ID, Batch, Transaction
from vigil import api_keys
from vigil.prediction_log import PredictionLog, read_day, read_day_checked
from vigil.settings import Settings

TX = TypeAdapter(Transaction)
GOOD = {"transaction_id": 1, "tx_datetime": "2025-06-01T10:00:00", "customer_id": 2, "terminal_id": 3, "tx_amount": 12.5}


def test_keys_are_stored_hashed_0600_and_checked(tmp_path):
    path = tmp_path / "k" / "keys.json"
    key = api_keys.create(path, "alice")
    assert key.startswith("vgl_") and key not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = api_keys.KeyRing.load(path)
    assert ring.check(key) == "alice"
    assert ring.check(key + "x") is None and ring.check("") is None and ring.check("x" * 10_000) is None
    with pytest.raises(api_keys.KeyError_, match="exists"):
        api_keys.create(path, "alice")
    with pytest.raises(api_keys.KeyError_, match="key name"):
        api_keys.create(path, "../etc")
    assert api_keys.revoke(path, "alice") and api_keys.KeyRing.load(path).check(key) is None


def test_a_broken_key_file_names_itself(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text("{nope")
    with pytest.raises(api_keys.KeyError_, match=str(path)):
        api_keys.read(path)


def test_token_bucket_allows_its_rate_then_says_how_long_to_wait():
    b = Bucket(5)
    assert [b.take() for _ in range(5)] == [0.0] * 5
    wait = b.take()
    assert 0 < wait <= 0.2 + 1e-6


@pytest.mark.parametrize("field,value,needle", [
    ("transaction_id", "17", "valid integer"), ("transaction_id", 17.0, "valid integer"),
    ("customer_id", True, "valid integer"), ("terminal_id", 2**63, "less than or equal"),
    ("transaction_id", -1, "greater than or equal"), ("tx_amount", 0, "greater than or equal"),
    ("tx_amount", "12", "valid number"), ("tx_datetime", 1_700_000_000, "datetime"),
    ("tx_datetime", "0001-01-01T00:00:00+14:00", "calendar"), ("tx_datetime", "1970-01-01T00:00:00", "before 2000-01-01"),
    ("tx_datetime", "2999-01-01T00:00:00Z", "in the future"),
])
def test_request_schema_refuses_what_the_system_cannot_hold(field, value, needle):
    with pytest.raises(ValidationError) as exc:
        TX.validate_json(json.dumps({**GOOD, field: value}))
    text = describe(exc.value)
    assert text.startswith(field) and needle in text


def test_timestamps_become_naive_utc():
    t = TX.validate_json(json.dumps({**GOOD, "tx_datetime": "2025-06-01T12:00:00+02:00"}))
    assert t.tx_datetime == datetime(2025, 6, 1, 10, 0)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    soon = (now + timedelta(seconds=60)).isoformat()
    assert TX.validate_json(json.dumps({**GOOD, "tx_datetime": soon})).tx_datetime > now


def test_a_thousand_bad_items_give_a_short_answer():
    bad = {"transactions": [{**GOOD, "customer_id": "x"}] * 1000}
    with pytest.raises(ValidationError) as exc:
        TypeAdapter(Batch).validate_json(json.dumps(bad))
    text = describe(exc.value)
    assert text.count("customer_id") == MAX_ERRORS and "995 more" in text and len(text) < 600


def test_guard_counts_a_batch_and_refuses_one_over_the_limit():
    g = Guard(app=None, settings=Settings.from_env({"VIGIL_SERVING_MAX_BATCH": "3"}), metrics=False)
    assert len(g.validate("/score_batch", json.dumps({"transactions": [GOOD] * 3}).encode())["transactions"]) == 3
    with pytest.raises(Refused) as exc:
        g.validate("/score_batch", json.dumps({"transactions": [GOOD] * 4}).encode())
    assert exc.value.status == 413 and "VIGIL_SERVING_MAX_BATCH" in exc.value.detail
    with pytest.raises(Refused) as exc:
        g.validate("/score", b"{not json")
    assert exc.value.status == 400


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(list(GOOD)), st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=True),
    st.text(max_size=40), st.datetimes(timezones=st.none() | st.just(timezone.utc)).map(lambda d: d.isoformat()))))
def test_any_body_is_either_valid_or_a_400_naming_a_field(change):
    """Whatever a client sends in these fields, parsing ends in a valid transaction (ids in int64,
    amount in range, naive UTC time in the window) or a short error naming a field: never another exception."""
    body = json.dumps({**GOOD, **change}).encode()
    try:
        t = TX.validate_json(body)
    except ValidationError as exc:
        text = describe(exc)
        assert any(text.startswith(f) for f in GOOD) and len(text) < 2000
        return
    assert 0 <= t.transaction_id <= MAX_ID and 0 <= t.customer_id <= MAX_ID and 0.01 <= t.tx_amount
    assert t.tx_datetime.tzinfo is None and t.tx_datetime.year >= 2000


def test_openapi_describes_the_guards_answers_and_the_key():
    doc = openapi({"openapi": "3.0.2", "paths": {"/score": {"post": {"responses": {"200": {}}}},
                                                 "/readyz": {"get": {"responses": {"200": {}}}}}})
    score = doc["paths"]["/score"]["post"]
    assert {"400", "401", "413", "415", "429"} <= set(score["responses"]) and score["security"] == [{"apiKey": []}]
    assert "security" not in doc["paths"]["/readyz"]["get"]


def _record(i: int, day: str) -> dict:
    return {"transaction_id": i, "tx_datetime": f"{day}T10:00:00", "customer_id": 1, "terminal_id": 2,
            "fraud_score": 0.1, "decision": "approve", "model_version": "m:1", "served_at": f"2026-01-01T00:00:{i % 60:02d}"}


def test_prediction_log_keeps_few_files_open_whatever_days_requests_carry(tmp_path):
    log = PredictionLog(tmp_path, max_open=4)
    before = len(os.listdir("/proc/self/fd"))
    start = date(2001, 1, 1)
    for i in range(300):
        log.append(_record(i, (start + timedelta(days=i)).isoformat()))
    assert len(os.listdir("/proc/self/fd")) - before <= 4
    log.close()
    assert len(list(tmp_path.glob("*/*.jsonl"))) == 300
    f = next(tmp_path.glob("*/*.jsonl"))
    assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_lines_are_written_before_append_returns(tmp_path):
    log = PredictionLog(tmp_path, fsync_seconds=60)
    log.append_many([_record(i, "2025-06-01") for i in range(10)])
    lines = (tmp_path / "2025-06-01" / f"{socket.gethostname()}-{os.getpid()}.jsonl").read_text().splitlines()
    assert len(lines) == 11 and "vigil_prediction_log" in json.loads(lines[0])  # the header, then the lines; no close needed
    log.close()


def test_log_features_are_arrays_named_by_a_header_per_open(tmp_path):
    """Each time the process opens a file it writes the header in the same write as the first
    lines; the readers name the arrays by it, still read the older object form, and set aside an
    array they cannot name."""
    names = ["a", "b", "c"]
    log = PredictionLog(tmp_path, max_open=1, features=names)
    log.append_many([{**_record(1, "2025-06-01"), "features": [1.0, None, 3.0]}])
    log.append_many([{**_record(2, "2025-06-02"), "features": [4.0, 5.0, 6.0]}])  # closes 06-01's file
    log.append_many([{**_record(3, "2025-06-01"), "features": [7.0, 8.0, 9.0]}])  # reopened: a header again
    log.close()
    day = date(2025, 6, 1)
    f = next((tmp_path / day.isoformat()).glob("*.jsonl"))
    lines = f.read_text().splitlines()
    assert [("vigil_prediction_log" in json.loads(x)) for x in lines] == [True, False, True, False]
    with open(f, "a") as fh:  # the older format, an array of the wrong length, a second header naming other features
        fh.write(json.dumps({**_record(4, "2025-06-01"), "features": {"a": 10.0, "b": 11.0, "c": 12.0}}) + "\n")
        fh.write(json.dumps({**_record(5, "2025-06-01"), "features": [1.0]}) + "\n")
        fh.write(json.dumps({"vigil_prediction_log": 2, "features": ["c", "a", "b"]}) + "\n")
        fh.write(json.dumps({**_record(6, "2025-06-01"), "features": [3.0, 1.0, 2.0]}) + "\n")
    (tmp_path / day.isoformat() / "headless.jsonl").write_text(json.dumps({**_record(7, "2025-06-01"), "features": [1.0, 2.0, 3.0]}) + "\n")
    frame, bad, _ = read_day_checked(tmp_path, day)
    got = frame.set_index("transaction_id")[names]
    assert got.loc[1].tolist()[0] == 1.0 and pd.isna(got.loc[1, "b"]) and got.loc[3].tolist() == [7.0, 8.0, 9.0]
    assert got.loc[4].tolist() == [10.0, 11.0, 12.0] and got.loc[6].tolist() == [1.0, 2.0, 3.0]
    assert sorted(frame["transaction_id"]) == [1, 3, 4, 6]
    assert sorted(b["reason"] for b in bad) == ["features: 1 values for the header's 3 names",
                                                "features: an array without a header line naming them"]
    assert sorted(read_day(tmp_path, day)["transaction_id"]) == [1, 3, 4, 6]


def test_bad_and_repeated_log_lines_are_set_aside_not_fatal(tmp_path):
    day = date(2025, 6, 1)
    folder = tmp_path / day.isoformat()
    folder.mkdir()
    lines = [json.dumps(_record(1, "2025-06-01")), json.dumps(_record(1, "2025-06-01")),  # a client's retry
             json.dumps({**_record(2, "2025-06-01"), "transaction_id": 2**64}), json.dumps(_record(3, "2025-06-02")),
             '{"torn', json.dumps(_record(4, "2025-06-01"))]
    (folder / "1.jsonl").write_text("\n".join(lines) + "\n")
    frame, bad, repeated = read_day_checked(tmp_path, day)
    assert sorted(frame["transaction_id"]) == [1, 4] and repeated == 1
    assert [b["reason"] for b in bad] == ["transaction_id: outside int64", "tx_datetime: not on 2025-06-01",
                                         "not JSON (torn or corrupt line)"]


def test_settings_bound_the_guard():
    from vigil.settings import SettingsError

    with pytest.raises(SettingsError, match="VIGIL_SERVING_MAX_BATCH"):
        Settings.from_env({"VIGIL_SERVING_MAX_BATCH": "0"})
    with pytest.raises(SettingsError, match="VIGIL_SERVING_OLDEST"):
        Settings.from_env({"VIGIL_SERVING_OLDEST": "yesterday"})



def test_client_error_log_lines_are_bounded_per_second():
    from serving.guard import LogBudget

    b = LogBudget(per_second=3)
    got = [b.allow() for _ in range(10)]
    assert [a for a, _ in got].count(True) == 3


def test_json_schema_idioms_become_openapi_30():
    from serving.guard import as_openapi_30

    got = as_openapi_30({"properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                                        "b": {"type": "number", "exclusiveMinimum": 0}, "c": {"const": "x"}}})
    assert got["properties"]["a"] == {"type": "string", "nullable": True}
    assert got["properties"]["b"] == {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    assert got["properties"]["c"] == {"enum": ["x"]}


def test_work_past_its_deadline_is_not_logged(tmp_path):
    """A scorer whose request is already past its deadline logs nothing and raises TooLate."""
    import numpy as np

    from vigil.features import MODEL_FEATURES
    from vigil.policy import DecisionPolicy
    from vigil.scoring import Deployed, Scorer, TooLate

    class Stub(Scorer):
        def __init__(self, folder):
            self.log, self.rollout, self.counters = PredictionLog(folder), None, {"scored": 0, "abandoned": 0}
            model = type("M", (), {"predict": staticmethod(lambda x: np.zeros(len(x)))})()
            self.deployed = Deployed("m", model, DecisionPolicy(0.5, 0.9), "now")

        def assemble(self, requests, wait=True, check=None):
            return np.zeros((len(requests), len(MODEL_FEATURES))), [[] for _ in requests], False

    s = Stub(tmp_path)
    req = {"transaction_id": 1, "tx_datetime": datetime(2025, 6, 1), "customer_id": 1, "terminal_id": 1, "tx_amount": 1.0}
    with pytest.raises(TooLate, match="deadline"):
        s.score([req], deadline=time.monotonic() - 1)
    gone = threading.Event()
    gone.set()  # the client disconnected
    with pytest.raises(TooLate, match="disconnected"):
        s.score([req, req], gone=gone)
    assert s.counters["abandoned"] == 3
    s.score([req], deadline=time.monotonic() + 60, gone=threading.Event())
    s.log.close()
    assert len(list(tmp_path.glob("*/*.jsonl"))) == 1 and s.counters["scored"] == 1


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
       st.floats(min_value=0.01, max_value=10_000), st.one_of(st.just(float("nan")), st.floats(min_value=0, max_value=1e6)),
       st.one_of(st.just(float("nan")), st.floats(min_value=0, max_value=1e6)))
def test_request_time_features_agree_with_the_calendar_and_never_blow_up(when, amount, avg, std):
    """What the endpoint computes per request: the calendar of the UTC timestamp (pandas as the
    reference), and a ratio and z-score that are finite or NaN (imputed), never inf."""
    import numpy as np
    import pandas as pd

    from vigil.features import MIN_STD, NIGHT_END_HOUR, request_features

    epoch = int(pd.Timestamp(when).timestamp())
    row = request_features(np.array([epoch]), np.array([amount]), np.array([avg]), np.array([std]))[0]
    ts = pd.Timestamp(epoch, unit="s")
    assert row[0] == amount
    assert row[1] == float(ts.dayofweek >= 5) and row[3] == ts.hour and row[2] == float(ts.hour < NIGHT_END_HOUR)
    assert not np.isinf(row[4]) and not np.isinf(row[5])
    assert np.isnan(row[4]) == (not avg > MIN_STD) and np.isnan(row[5]) == (not (std > MIN_STD and avg == avg))


def test_retention_deletes_only_old_days_already_kept_elsewhere(tmp_path):
    from vigil.prediction_log import prune

    for d in ("2025-01-01", "2025-01-02", "2025-03-01", "notaday"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "1.jsonl").write_text("{}\n")
    gone = prune(tmp_path, date(2025, 2, 1), kept=lambda d: d != date(2025, 1, 2))
    assert gone == [date(2025, 1, 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2025-01-02", "2025-03-01", "notaday"]


def test_a_failed_log_write_leaves_no_line_without_its_header(tmp_path, monkeypatch):
    """A write that fails part-way (a full disk) tears a line; the file is closed, and the next
    call opens it again and writes the header first, on a line of its own: every later line is
    read, none is quarantined for lack of a header (only the torn line is)."""
    import vigil.prediction_log as pl

    log = PredictionLog(tmp_path, features=["a"])
    real = os.write
    calls = [0]

    def flaky(fd, data):
        calls[0] += 1
        if calls[0] == 1:  # the first write: half of it, then the disk is full
            real(fd, data[:len(data) // 2])
            raise OSError(28, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(pl.os, "write", flaky)
    with pytest.raises(OSError):
        log.append_many([{**_record(1, "2025-06-01"), "features": [1.0]}])
    log.append_many([{**_record(2, "2025-06-01"), "features": [2.0]}])
    log.close()
    frame, bad, _ = read_day_checked(tmp_path, date(2025, 6, 1))
    assert frame["transaction_id"].tolist() == [2] and frame["a"].tolist() == [2.0]
    assert [b["reason"] for b in bad] == ["not JSON (torn or corrupt line)"]


def test_log_lines_rendered_in_bulk_are_the_per_record_lines(tmp_path):
    """log_lines (the scorer's batch path) gives byte for byte the lines append_many renders from a
    dict a row: NaN as null, every value in place, days split, and the readers get the same rows."""
    import numpy as np
    from pydantic_core import to_json

    from vigil.prediction_log import feature_arrays, log_lines

    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4)) * 1e3
    x[rng.random(x.shape) < 0.2] = np.nan
    x[0] = [0.1, -0.0, 1e-7, 12345678901234.5]
    answers = [{"transaction_id": 10 + i, "fraud_score": float(rng.random()), "decision": "approve",
                "reasons": ["HIGH_MODEL_SCORE"] if i % 3 else [], "stale_features": [], "degraded": False,
                "model_version": "vigil-fraud:x", "variant": "champion", "request_id": "r", "latency_ms": 1.5}
               for i in range(50)]
    when = [f"2025-06-0{1 + i % 2}T10:00:0{i % 10}" for i in range(50)]
    rendered = log_lines([to_json(a) for a in answers], list(range(50)), list(range(100, 150)), when, x, "2025-06-02T00:00:00.000+00:00")
    rows = np.where(np.isnan(x), None, x).tolist()
    expected = [to_json({**a, "customer_id": i, "terminal_id": 100 + i, "tx_datetime": when[i], "features": rows[i],
                         "served_at": "2025-06-02T00:00:00.000+00:00"}) + b"\n" for i, a in enumerate(answers)]
    assert rendered == expected and feature_arrays(x[:1]) == [to_json(rows[0])] and feature_arrays(x[:0]) == []
    bulk, per_record = PredictionLog(tmp_path / "bulk", features="abcd"), PredictionLog(tmp_path / "dicts", features="abcd")
    bulk.append_lines([w[:10] for w in when], rendered)
    per_record.append_many([json.loads(line) for line in expected])
    bulk.close()
    per_record.close()
    for day in (date(2025, 6, 1), date(2025, 6, 2)):
        a, b = read_day(tmp_path / "bulk", day), read_day(tmp_path / "dicts", day)
        assert len(a) == 25
        pd.testing.assert_frame_equal(a, b)


def test_the_guards_batch_fields_are_the_transaction_models_rules():
    """The guard validates /score_batch into dicts (TransactionFields), the handler declares models
    (Transaction): the same JSON schema, the same accepted values and the same error texts."""
    from serving.schema import BatchFields, TransactionFields

    model, fields = TypeAdapter(Transaction).json_schema(), TypeAdapter(TransactionFields).json_schema()
    def rules(schema):  # the docstring and the title are not rules
        return {k: v for k, v in schema.items() if k not in ("title", "description")}

    assert rules(model) == rules(fields) and model["properties"]
    assert TypeAdapter(BatchFields).validate_json(json.dumps({"transactions": [GOOD]}))["transactions"] == [
        TX.validate_json(json.dumps(GOOD)).__dict__]
    for change in ({"customer_id": "17"}, {"customer_id": True}, {"tx_amount": 0}, {"tx_datetime": "1999-12-31T00:00:00"},
                   {"transaction_id": MAX_ID + 1}, {"terminal_id": 1.0}):
        errors = []
        for adapter in (TypeAdapter(Batch), TypeAdapter(BatchFields)):
            with pytest.raises(ValidationError) as exc:
                adapter.validate_json(json.dumps({"transactions": [{**GOOD, **change}]}))
            errors.append(describe(exc.value))
        assert errors[0] == errors[1] and next(iter(change)) in errors[0], errors


def test_tracing_off_skips_every_route_and_on_leaves_bentoml_in_charge():
    """VIGIL_SERVING_TRACING: off (the default) gives BentoML's service an excluded-URL list that
    OpenTelemetry's middleware matches on every route (it then makes no span); on gives nothing,
    and BentoML's own tracing configuration applies."""
    from opentelemetry.util.http import ExcludeList

    from serving.guard import ROUTES
    from serving.tracing import tracing_config
    from vigil.settings import SettingsError

    off = tracing_config(Settings.from_env({}))
    excluded = ExcludeList(off["tracing"]["excluded_urls"])  # as BentoMLContainer.tracing_excluded_urls builds it
    assert all(excluded.url_disabled(f"http://127.0.0.1:3000{r}") for r in ROUTES | {"/no/such/route"})
    assert tracing_config(Settings.from_env({"VIGIL_SERVING_TRACING": "on"})) == {}
    with pytest.raises(SettingsError, match="VIGIL_SERVING_TRACING"):
        Settings.from_env({"VIGIL_SERVING_TRACING": "yes"})
