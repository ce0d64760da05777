"""Alerts: severities, one delivery per episode, the JSON-lines and webhook sinks, runbooks."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from vigil.alerts import CATALOGUE, RUNBOOKS, Alert, Alerter, MAX_DETAIL_CHARS


@pytest.fixture
def receiver():
    got, status = [], {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(status["code"])
            self.end_headers()

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", got, status
    server.shutdown()


def test_every_alert_has_a_runbook_that_says_what_how_fix_verify():
    for name in CATALOGUE:
        text = (RUNBOOKS / f"{name}.md").read_text()
        for section in ("## What it means", "## Diagnose", "## Fix", "## Verify"):
            assert section in text, (name, section)
        assert "```" in text, f"{name}: the runbook gives commands"


def test_unknown_names_and_severities_are_refused():
    with pytest.raises(ValueError, match="unknown alert"):
        Alert("something", "e", "s")
    with pytest.raises(ValueError, match="severity"):
        Alert("run_failed", "e", "s", severity="panic")
    assert Alert("run_failed", "e", "s").severity == "critical"


def test_one_delivery_per_episode_to_the_file_and_the_webhook(tmp_path, receiver):
    url, got, _ = receiver
    alerter = Alerter(tmp_path, url)
    a = Alert("drift_detected", "2025-06-30-12", "drift", {"share": 0.5})
    assert alerter.raise_alert(a) == {"sent": True, "duplicate": False, "errors": []}
    assert alerter.raise_alert(Alert("drift_detected", "2025-06-30-12", "drift again"))["duplicate"]
    assert alerter.raise_alert(Alert("drift_detected", "2025-07-01-13", "next episode"))["sent"]
    lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [x["episode"] for x in lines] == ["2025-06-30-12", "2025-07-01-13"]
    assert [x["episode"] for x in got] == ["2025-06-30-12", "2025-07-01-13"]
    assert got[0]["runbook"] == "docs/runbooks/drift_detected.md" and got[0]["severity"] == "warning"
    assert (tmp_path / "alerts.jsonl").stat().st_mode & 0o077 == 0  # not world-readable
    assert [x["summary"] for x in alerter.recent()] == ["drift", "next episode"]


def test_a_failing_webhook_is_reported_and_retried_next_time(tmp_path, receiver):
    url, got, status = receiver
    alerter = Alerter(tmp_path, url)
    status["code"] = 500
    r = alerter.raise_alert(Alert("run_failed", "run-1", "boom"))
    assert not r["sent"] and "WebhookSink" in r["errors"][0]
    status["code"] = 200
    assert alerter.raise_alert(Alert("run_failed", "run-1", "boom"))["sent"]  # not marked sent before
    assert len(got) == 2
    dead = Alerter(tmp_path / "x", "http://127.0.0.1:9/none")  # nothing listens: the file still gets it
    assert not dead.raise_alert(Alert("run_failed", "run-2", "boom"))["sent"]
    assert "run-2" in (tmp_path / "x" / "alerts.jsonl").read_text()


def test_details_are_bounded():
    a = Alert("run_failed", "r", "s", {f"k{i}": "x" * 10_000 for i in range(80)})
    assert len(a.details) == 50 and all(len(v) <= MAX_DETAIL_CHARS + 1 for v in a.details.values())


def test_webhook_url_must_be_http(tmp_path):
    with pytest.raises(ValueError, match="http"):
        Alerter(tmp_path, "file:///etc/passwd")


def test_a_landing_file_is_overdue_only_for_live_data_past_its_deadline():
    from dataclasses import replace
    from datetime import date, datetime, timezone

    from pipelines.sensors import missing_landing_day
    from vigil.settings import Settings

    live = replace(Settings.from_env({}), end_date=None)
    days = [date(2026, 11, 27), date(2026, 11, 28)]
    at = lambda h: datetime(2026, 11, 30, h, tzinfo=timezone.utc)  # noqa: E731
    assert missing_landing_day(days, at(5), live) is None  # 29th is due at 06:00 on the 30th
    assert missing_landing_day(days, at(7), live) == date(2026, 11, 29)
    assert missing_landing_day(days + [date(2026, 11, 29)], at(7), live) is None
    assert missing_landing_day(days, at(7), replace(live, end_date=date(2026, 11, 28))) is None  # a replay
    assert missing_landing_day([], at(7), live) is None  # nothing landed yet: a new install is not late
