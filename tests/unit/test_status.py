"""`vigil status` pieces that need no trained home: the Dagster run storage read without dagster."""

import sqlite3

from vigil.status import last_runs


def test_last_runs_from_the_sqlite_run_storage(tmp_path):
    assert last_runs(None) is None and last_runs(tmp_path) is None
    (tmp_path / "history").mkdir()
    with sqlite3.connect(tmp_path / "history" / "runs.db") as c:
        c.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, run_id TEXT, pipeline_name TEXT, status TEXT, "
                  "partition TEXT, start_time FLOAT, end_time FLOAT)")
        c.executemany("INSERT INTO runs (run_id, pipeline_name, status, partition, start_time, end_time) VALUES (?,?,?,?,?,?)",
                      [("aaaaaaaaaaaa", "daily_pipeline", "SUCCESS", "2025-06-20", 1.7e9, 1.7e9 + 46.8),
                       ("bbbbbbbbbbbb", "retraining", "FAILURE", None, 1.7e9 + 100, None)])
    runs = last_runs(tmp_path)
    assert [r["job"] for r in runs] == ["retraining", "daily_pipeline"]
    assert runs[0]["status"] == "FAILURE" and runs[0]["seconds"] is None and runs[1]["seconds"] == 46.8
    assert runs[1]["partition"] == "2025-06-20" and runs[0]["run_id"] == "bbbbbbbb"
