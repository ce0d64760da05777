"""`vigil status` and `vigil models`: the registry's records, the production pointer and the last
drift report, read without importing the model stack (under a second)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from vigil.config import Paths
from vigil.registry_db import ROLLOUT_STATE, read_pointer, shared_file

SHOWN = (("handbook_auc", "AUC"), ("handbook_average_precision", "AP"), ("handbook_card_precision_at_100", "CP@100"))


def _figures(metrics: dict) -> str:
    vals = [f"{name} {metrics[k]:.3f}" for k, name in SHOWN if isinstance(metrics.get(k), (int, float))]
    return " / ".join(vals) + " (Handbook protocol, test week)" if vals else "no figures"


def last_runs(dagster_home: Path | None, limit: int = 5) -> list[dict] | None:
    """The instance's last runs, read from its SQLite run storage (no dagster import: fast); None
    when there is no local run storage to read (e.g. the production profile's PostgreSQL)."""
    import sqlite3

    db = Path(dagster_home) / "history" / "runs.db" if dagster_home else None
    if db is None or not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
    try:
        rows = conn.execute("SELECT run_id, pipeline_name, status, partition, start_time, end_time FROM runs "
                            "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    out = []
    for run_id, job, st, partition, start, end in rows:
        out.append({"run_id": run_id[:8], "job": job, "status": st, "partition": partition,
                    "started": datetime.fromtimestamp(start, timezone.utc).isoformat(timespec="seconds") if start else None,
                    "seconds": round(end - start, 1) if start and end else None})
    return out


def status(paths: Paths, dagster_home: Path | None = None) -> dict:
    from vigil.registry_db import open_records

    db = open_records(paths.registry)
    pointer = read_pointer(paths)
    serving = json.loads(pointer) if pointer else None
    prod = db.version(serving["tag"]) if serving else None
    since = None
    if prod:
        into = [t for t in db.transitions(prod["tag"]) if t["to_stage"] == "production"]
        since = into[-1] if into else None
    versions = db.versions()
    rejected = [v for v in versions if v["stage"] == "rejected"]
    reports = sorted((paths.monitoring / "drift").glob("*.json")) if (paths.monitoring / "drift").exists() else []
    drift = None
    if reports:
        last = json.loads(reports[-1].read_text())
        drift = {"day": reports[-1].stem, "dataset_drift": last.get("dataset_drift"), "drift_share": last.get("drift_share"),
                 "report": last.get("url") or last.get("html"), "model": last.get("model")}
    rollout_file = shared_file(paths, ROLLOUT_STATE)  # read here, not through vigil.rollout (no pandas)
    rollout = json.loads(rollout_file.read_text()) if rollout_file.exists() else None
    from vigil.alerts import Alerter

    alerts = Alerter(paths.root / "alerts").recent(5)
    return {"production": prod, "since": since, "versions": len(versions), "rollout": rollout, "last_alerts": alerts,
            "last_rejected": rejected[-1] if rejected else None, "last_transitions": db.transitions(limit=5),
            "last_drift": drift, "last_runs": last_runs(dagster_home)}


def render_status(s: dict) -> str:
    lines = []
    prod = s["production"]
    if prod is None:
        lines.append("production   none: no model promoted yet (run the retraining job)")
    else:
        since = s["since"]
        lines.append(f"production   {prod['tag']}  since {since['at'] if since else '?'}"
                     + (f"  ({since['actor']}: {since['reason']})" if since else ""))
        lines.append(f"  quality    {_figures(prod['metrics'])}")
        lin = prod["lineage"]
        lines.append(f"  trained on {' .. '.join(lin.get('train_days', []))}"
                     + (f", compared on {' .. '.join(lin['recent_days'])}" if lin.get("recent_days") else "")
                     + f", Handbook week {' .. '.join(lin.get('test_days', []))}, code {prod['code_version'] or '?'}")
    rej = s["last_rejected"]
    if rej:
        lines.append(f"rejected     {rej['tag']} at {rej['created_at']}: {rej['note']}")
    ro = s.get("rollout")
    if ro:
        step = "shadow (scored and logged, the champion answers)" if ro["stage"] == "shadow" else f"canary {ro['percent']} % of customers"
        last = ro["analyses"][-1] if ro.get("analyses") else None
        lines.append(f"rollout      {ro['candidate']} vs {ro['champion']}: {step}, since {ro['step_started_at']}, "
                     f"failed analyses {ro['failures']}" + (f"; last: {last['step']} {'passed' if last['passed'] else 'FAILED'}"
                                                            if last else ""))
    lines.append(f"versions     {s['versions']} on record (vigil models lists them)")
    d = s["last_drift"]
    if d:
        lines.append(f"drift        {d['day']}: {'DRIFT' if d['dataset_drift'] else 'no drift'} "
                     f"(share {d['drift_share']:.2f}, model {d['model']})  report {d['report']}")
    else:
        lines.append("drift        no report yet")
    for a in s.get("last_alerts") or []:
        lines.append(f"alert        {a['at']} {a['severity'].upper()} {a['name']}: {a['summary'][:120]}  ({a['runbook']})")
    runs = s.get("last_runs")
    if runs is None:
        lines.append("runs         no local Dagster run storage (set DAGSTER_HOME)")
    else:
        lines.append("last runs")
        for r in runs:
            part = f" [{r['partition']}]" if r["partition"] else ""
            took = f", {r['seconds']} s" if r["seconds"] is not None else ""
            lines.append(f"  {r['started'] or '-'}  {r['job']}{part}  {r['status'].lower()}{took}  ({r['run_id']})")
    lines.append("last transitions")
    for t in s["last_transitions"]:
        lines.append(f"  {t['at']}  {t['tag']}  {t['from_stage'] or '-'} -> {t['to_stage']}  by {t['actor']}: {t['reason']}")
    return "\n".join(lines)


def render_models(versions: list[dict]) -> str:
    rows = [("version", "stage", "created", "AUC / AP / CP@100 (Handbook)", "test week")]
    for v in versions:
        m = v["metrics"]
        figs = " / ".join(f"{m[k]:.3f}" if isinstance(m.get(k), (int, float)) else "-" for k, _ in SHOWN)
        rows.append((v["tag"], v["stage"], v["created_at"][:19], figs, " .. ".join(v["lineage"].get("test_days", []))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
