from datetime import date

import pandas as pd
import pytest

from vigil.contracts import ContractError, validate_labels, validate_transactions

DAY = date(2025, 4, 2)


def good(n=6):
    return pd.DataFrame({
        "transaction_id": range(100, 100 + n),
        "tx_datetime": pd.date_range("2025-04-02 01:00", periods=n, freq="h"),
        "customer_id": range(n),
        "terminal_id": range(n),
        "tx_amount": [10.0 + i for i in range(n)],
        "channel": ["web"] * n,  # extra columns are kept
    })


def test_clean_batch_is_admitted_whole_and_typed():
    r = validate_transactions(good(), DAY)
    assert len(r.admitted) == 6 and r.quarantined.empty and r.reasons == {}
    assert str(r.admitted["transaction_id"].dtype) == "int64" and "channel" in r.admitted


@pytest.mark.parametrize("column,value,reason", [
    ("tx_amount", -5.0, "tx_amount:greater_than(0)"),
    ("tx_amount", 1e9, "tx_amount:less_than_or_equal_to(10000.0)"),
    ("tx_amount", None, "tx_amount:not_nullable"),
    ("customer_id", "abc", "customer_id:id_format"),
    ("customer_id", "12.0", "customer_id:id_format"),
    ("terminal_id", "1e3", "terminal_id:id_format"),
    ("transaction_id", "-7", "transaction_id:id_format"),
    ("tx_amount", "12,50", "tx_amount:wrong_type"),
    ("tx_datetime", "2025-04-03 00:00:01", "tx_datetime:inside_day(2025-04-02)"),
    ("tx_datetime", "not a date", "tx_datetime:wrong_type"),
])
def test_each_bad_value_is_quarantined_with_its_reason(column, value, reason):
    frame = good().astype({column: object})
    frame.loc[2, column] = value
    r = validate_transactions(frame, DAY, source_file="day.csv")
    assert len(r.admitted) == 5
    assert r.quarantined["reasons"].tolist() == [reason]
    assert r.quarantined["source_row"].tolist() == [3] and r.quarantined["source_file"].tolist() == ["day.csv"]


def test_duplicates_keep_the_first():
    frame = good()
    frame.loc[4, "transaction_id"] = frame.loc[1, "transaction_id"]
    r = validate_transactions(frame, DAY)
    assert len(r.admitted) == 5 and r.quarantined["reasons"].tolist() == ["transaction_id:duplicate"]


def test_future_timestamp():
    r = validate_transactions(good(), DAY, now=pd.Timestamp("2025-04-02 03:30"))
    assert r.reasons == {"tx_datetime:not_in_future": 3}


def test_missing_column_blocks_the_batch_naming_file_and_column():
    with pytest.raises(ContractError, match=r"day.parquet: required column\(s\) \['tx_amount'\] missing"):
        validate_transactions(good().rename(columns={"tx_amount": "amount"}), DAY, source_file="day.parquet")


def test_labels_contract():
    frame = pd.DataFrame({"transaction_id": [1, 2, 3], "tx_fraud": [1, 2, 1], "reported_at": ["2025-04-02", "2025-04-02", None]})
    r = validate_labels(frame)
    assert len(r.admitted) == 1
    assert sorted(r.quarantined["reasons"]) == ["reported_at:not_nullable", "tx_fraud:isin([0, 1])"]


def test_labels_must_refer_to_known_transactions_and_follow_them():
    known = pd.DataFrame({"transaction_id": [1, 2], "tx_datetime": pd.to_datetime(["2025-04-01 10:00", "2025-04-01 12:00"])})
    frame = pd.DataFrame({"transaction_id": [1, 2, 99],
                          "tx_fraud": [1, 1, 1],
                          "reported_at": ["2025-04-02 09:00", "2025-04-01 11:00", "2025-04-02 09:00"]})
    r = validate_labels(frame, known=known)
    assert r.admitted["transaction_id"].tolist() == [1]
    assert r.quarantined["reasons"].tolist() == ["reported_at:before_transaction", "transaction_id:unknown_transaction"]


def test_an_id_admitted_on_an_earlier_day_is_quarantined():
    frame = good()
    r = validate_transactions(frame, DAY, seen_ids=pd.Series([102, 7]))
    assert len(r.admitted) == 5
    assert r.quarantined["reasons"].tolist() == ["transaction_id:duplicate_across_days"]
    assert r.quarantined["transaction_id"].tolist() == ["102"]


def test_numeric_identifiers_must_be_non_negative_integers():
    frame = good().astype({"terminal_id": "float64"})
    frame.loc[1, "customer_id"] = -1
    frame.loc[3, "terminal_id"] = 2.5
    r = validate_transactions(frame, DAY)
    assert r.quarantined["reasons"].tolist() == ["customer_id:non_negative_id", "terminal_id:wrong_type"]
    assert r.admitted["terminal_id"].dtype == "int64"
