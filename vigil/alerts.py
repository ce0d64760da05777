"""Alerts: what a person must hear about, with a severity, a runbook, and one message per episode.

Sinks are pluggable: a JSON-lines file (always, ``$VIGIL_HOME/alerts/alerts.jsonl``) and a webhook
(``VIGIL_ALERT_WEBHOOK``, a secret: JSON POST, 5 s timeout). An alert is identified by its name and
episode (a run id, a day, a drift episode): the same pair is delivered once, whoever raises it
again (a sensor re-evaluating, a re-run), so a flapping condition cannot flood the sinks.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

SEVERITIES = ("critical", "warning", "info")
RUNBOOKS = Path(__file__).resolve().parents[1] / "docs" / "runbooks"
RUNBOOK_URL = "docs/runbooks/{name}.md"

# every alert Vigil raises, its severity and one line on what it means (the runbook says the rest)
CATALOGUE = {
    "gate_failed": ("warning", "the evaluation gate refused a candidate model; the champion keeps serving"),
    "day_held": ("critical", "a blocking data check failed: the day is held out of the lake and nothing downstream ran"),
    "run_failed": ("critical", "a Dagster run failed"),
    "drift_detected": ("warning", "the served features drifted from the model's reference; retraining was requested"),
    "model_rolled_back": ("critical", "production went back to the previous model"),
    "stale_features": ("warning", "too many requests were scored with stale or missing online features"),
    "landing_missing": ("critical", "a day's landing file did not arrive by its deadline"),
    "serving_degraded": ("critical", "the endpoint cannot read the online store: it answers from request-time features only"),
    "model_refused": ("critical", "the endpoint refused a promoted model (corrupt files or another feature list); the previous one keeps serving"),
}
MAX_FILE_BYTES = 20_000_000  # the JSON-lines sink rotates once (alerts.jsonl.1) past this
MAX_DETAIL_CHARS = 4_000  # a detail value is cut here: an alert carries evidence, not payloads


@dataclass(frozen=True)
class Alert:
    name: str
    episode: str  # deduplication: one delivery per (name, episode)
    summary: str
    details: dict = field(default_factory=dict)
    severity: str = ""  # empty: the catalogue's
    at: str = ""

    def __post_init__(self) -> None:
        if self.name not in CATALOGUE:
            raise ValueError(f"unknown alert {self.name!r}; known: {sorted(CATALOGUE)}")
        sev = self.severity or CATALOGUE[self.name][0]
        if sev not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}; got {sev!r}")
        object.__setattr__(self, "severity", sev)
        object.__setattr__(self, "at", self.at or datetime.now(timezone.utc).isoformat(timespec="seconds"))
        object.__setattr__(self, "details", {str(k)[:100]: _bounded(v) for k, v in list(self.details.items())[:50]})

    @property
    def runbook(self) -> str:
        return RUNBOOK_URL.format(name=self.name)

    def as_dict(self) -> dict:
        return {**asdict(self), "meaning": CATALOGUE[self.name][1], "runbook": self.runbook}


def _bounded(v):
    if isinstance(v, (int, float, bool)) or v is None:
        return v
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS] + "…"


class JsonlSink:
    def __init__(self, path: Path):
        self.path = Path(path)

    def send(self, alert: Alert) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > MAX_FILE_BYTES:
            os.replace(self.path, self.path.with_suffix(".jsonl.1"))
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(alert.as_dict(), default=str) + "\n").encode())
        finally:
            os.close(fd)


class WebhookSink:
    def __init__(self, url: str, timeout_s: float = 5.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError("VIGIL_ALERT_WEBHOOK must be an http(s) URL")
        self.url, self.timeout_s = url, timeout_s

    def send(self, alert: Alert) -> None:
        import httpx

        r = httpx.post(self.url, json=alert.as_dict(), timeout=self.timeout_s)
        r.raise_for_status()


class Alerter:
    """Delivers each (name, episode) once to every sink; a sink that fails is reported in the
    result and retried the next time the same alert is raised (it is marked sent only when every
    sink took it)."""

    def __init__(self, folder: Path, webhook_url: str = ""):
        self.folder = Path(folder)
        self.sinks = [JsonlSink(self.folder / "alerts.jsonl")] + ([WebhookSink(webhook_url)] if webhook_url else [])

    def _db(self) -> sqlite3.Connection:
        self.folder.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.folder / "sent.db", timeout=10)
        db.execute("CREATE TABLE IF NOT EXISTS sent (name TEXT, episode TEXT, at TEXT, PRIMARY KEY (name, episode))")
        return db

    def raise_alert(self, alert: Alert) -> dict:
        """``{"sent": bool, "duplicate": bool, "errors": [...]}``."""
        with self._db() as db:
            if db.execute("SELECT 1 FROM sent WHERE name = ? AND episode = ?", (alert.name, alert.episode)).fetchone():
                return {"sent": False, "duplicate": True, "errors": []}
            errors = []
            for sink in self.sinks:
                try:
                    sink.send(alert)
                except Exception as exc:  # one sink down must not silence the others
                    errors.append(f"{type(sink).__name__}: {exc}")
            if not errors:
                db.execute("INSERT OR IGNORE INTO sent VALUES (?, ?, ?)", (alert.name, alert.episode, alert.at))
        return {"sent": not errors, "duplicate": False, "errors": errors}

    def recent(self, limit: int = 20) -> list[dict]:
        path = self.folder / "alerts.jsonl"
        if not path.exists():
            return []
        tail = 200_000  # the last alerts are in the file's tail; its first line may be cut
        with open(path, "rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - tail)
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()[1 if start else 0:]
        return [json.loads(x) for x in lines[-limit:] if x.strip()]


def alerter_for(vigil_home: Path, webhook_url: str | None = None) -> Alerter:
    url = webhook_url if webhook_url is not None else os.environ.get("VIGIL_ALERT_WEBHOOK", "")
    return Alerter(Path(vigil_home) / "alerts", url)
