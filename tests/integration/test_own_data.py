"""A user's own CSV files, dropped where the README says, go through the daily pipeline."""

import json
import subprocess
import sys

import dagster as dg
import pandas as pd
import pytest

from vigil import lake

pytestmark = pytest.mark.integration


def test_own_csv_files_through_the_daily_pipeline(home):
    from pipelines.definitions import defs

    tx_dir, lab_dir = home.landing / "transactions", home.landing / "labels"
    tx_dir.mkdir(parents=True)
    lab_dir.mkdir(parents=True)
    rows = []
    for d, day in enumerate(["2025-04-01", "2025-04-02"]):
        for i in range(50):
            rows.append({"transaction_id": 1000 * (d + 1) + i, "tx_datetime": f"{day}T{8 + i % 12:02d}:15:00Z",
                         "customer_id": i % 7, "terminal_id": i % 5, "tx_amount": f"{10 + i}.50", "merchant": "shop"})
    frame = pd.DataFrame(rows)
    frame.loc[3, "tx_amount"] = "-4"  # one bad row: must be quarantined, not lost
    frame.loc[60, "transaction_id"] = 1000  # day 2 re-sends an id admitted on day 1
    for day, part in frame.groupby(frame["tx_datetime"].str[:10]):
        part.to_csv(tx_dir / f"{day}.csv", index=False)
    pd.DataFrame({"transaction_id": [1001], "tx_fraud": [1], "reported_at": ["2025-04-02T10:00:00Z"]}).to_csv(
        lab_dir / "2025-04-02.csv", index=False)

    keys = ["raw_transactions", "label_feed", "validated_transactions", "validated_labels", "feature_snapshots"]
    for day in ["2025-04-01", "2025-04-02"]:
        res = dg.materialize([defs.get_assets_def(k) for k in keys], partition_key=day, resources=defs.resources)
        assert res.success

    day1 = lake.read_day(home.validated, pd.Timestamp("2025-04-01").date())
    assert len(day1) == 49 and "merchant" in day1 and str(day1["tx_amount"].dtype) == "float64"
    q = lake.read_day(home.quarantine, pd.Timestamp("2025-04-01").date())
    assert q["reasons"].tolist() == ["tx_amount:greater_than(0)"] and q["source_row"].tolist() == [4]
    assert q["source_file"].iloc[0].endswith("2025-04-01.csv")
    labels = lake.read_day(home.labels, pd.Timestamp("2025-04-02").date())
    assert labels["transaction_id"].tolist() == [1001]
    cust = lake.read_day(home.features / "customer", pd.Timestamp("2025-04-02").date())
    assert cust["customer_nb_tx_1d"].sum() == 49  # all of day 2's admitted rows
    q2 = lake.read_day(home.quarantine, pd.Timestamp("2025-04-02").date())
    assert q2["reasons"].tolist() == ["transaction_id:duplicate_across_days"] and q2["source_row"].tolist() == [11]

    out = subprocess.run([sys.executable, "-m", "vigil.cli", "quarantine", "--date", "2025-04-01", "--format", "json",
                          "--home", str(home.root)], capture_output=True, text=True, check=True)
    rec = json.loads(out.stdout.splitlines()[0])
    assert rec["reasons"] == "tx_amount:greater_than(0)" and rec["transaction_id"] == "1003"
