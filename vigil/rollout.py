"""Safe rollout of a candidate model: shadow, then canary 5 % → 25 % → 50 % of customers, then
production; each step analysed against guardrails, a failed analysis beyond the failure limit
sends all traffic back to the champion by itself.

In the spirit of Argo Rollouts' AnalysisTemplate (success and failure conditions, a failure
limit) and SageMaker's deployment guardrails, inside Vigil:

- the state is one small JSON file (``registry/rollout.json``) written atomically; the endpoint
  follows it as it follows the production pointer, so one process serves both models and a step
  is a reference swap (no restart, no failed request);
- a customer's variant is a consistent hash of ``customer_id`` salted with the candidate's tag,
  so a card sees one model during a step and the canary share grows by adding customers;
- every served row of a rollout goes to ``registry/rollout/<candidate>/<pid>.jsonl`` (bounded)
  with its variant, both scores in shadow, and per-variant model time; the analysis reads it;
- every step is a registry transition (candidate → shadow → canary (5, 25, 50 %) → production, or
  → rejected with the failed conditions).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from vigil import lake
from vigil.config import Paths
from vigil.monitoring import psi
from vigil.registry_db import ROLLOUT_STATE as STATE
from vigil.registry_db import shared_file
STEPS = (("shadow", 0), ("canary", 5), ("canary", 25), ("canary", 50))
MAX_LOG_BYTES = 50_000_000  # per process and candidate: a stuck rollout cannot fill the disk


@dataclass(frozen=True)
class Guardrails:
    """Success needs every condition; a step is judged once it has ``min_requests`` candidate
    rows (all rows in shadow) and ``min_seconds`` have passed."""

    min_requests: int = 200
    min_seconds: float = 30.0
    max_error_rate: float = 0.01  # candidate predictions that failed (the champion answered instead)
    max_p99_ratio: float = 3.0  # candidate model time p99 / champion's (plus 1 ms of slack)
    max_decision_shift: float = 0.03  # |flagged rate of candidate - champion|
    max_score_psi: float = 1.0  # candidate vs champion scores of the same requests (see the README: a model
    # retrained after a drift differed by 0.13-0.60 from its champion, one trained on inverted labels by > 2)
    min_agreement: float = 0.95  # shadow: same decision on the same request
    max_ap_drop: float = 0.05  # shadow, once enough labels matured: AP(candidate) >= AP(champion) - this
    min_ap_frauds: int = 20
    failure_limit: int = 1  # failed analyses tolerated before the rollback (Argo's failureLimit)


def variant_of(customer_id: int, percent: float, salt: str) -> str:
    """``candidate`` for ``percent`` % of customers, the same ones for a given salt and more as it grows."""
    bucket = int.from_bytes(hashlib.sha256(f"{salt}:{int(customer_id)}".encode()).digest()[:4], "big") % 10_000
    return "candidate" if bucket < percent * 100 else "champion"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def state_path(paths: Paths):
    return shared_file(paths, STATE)


def read_state(paths: Paths) -> dict | None:
    try:
        return json.loads(state_path(paths).read_text())
    except FileNotFoundError:
        return None


def _write_state(paths: Paths, state: dict | None) -> None:
    p = state_path(paths)
    if state is None:
        p.unlink(missing_ok=True)
        return
    lake.put(p, json.dumps(state, indent=1).encode())


def log_folder(paths: Paths, candidate: str) -> Path:
    return paths.registry / "rollout" / candidate.replace(":", "_")


def start(paths: Paths, candidate: str, reason: str, actor: str | None = None,
          guardrails: Guardrails | None = None) -> dict:
    """Begin the rollout of a registered ``candidate``: it enters ``shadow`` beside the champion."""
    from vigil import registry

    if read_state(paths):
        raise ValueError(f"a rollout is in progress ({read_state(paths)['candidate']}): finish or abort it first")
    champion = registry.current(paths)
    if champion is None:
        raise ValueError("no champion in production to roll out against: promote the first model directly")
    if champion["tag"] == candidate:
        raise ValueError(f"{candidate} is already in production")
    info = registry.model_info(paths, candidate)  # fails with ModelNotFound for an unknown tag
    evidence = info["metadata"].get("gate_evidence") or {}
    # the gate found it better than *this* champion beyond noise, on the recent window with the
    # labels known at T: then disagreeing with the champion is what it is for, not a fault
    better = bool(evidence.get("champion") == champion["tag"] and (evidence.get("ci_low") or -1) > 0)
    db = registry.records(paths)
    if db.version(candidate)["stage"] != "shadow":  # a start whose state write failed is finished by a re-run
        db.move(candidate, "shadow", f"rollout started: {reason}", registry.actor_name(actor))
    state = {"candidate": candidate, "champion": champion["tag"], "step": 0, "stage": "shadow", "percent": 0,
             "started_at": _now(), "step_started_at": _now(), "failures": 0, "reason": reason,
             "guardrails": asdict(guardrails or Guardrails()), "analyses": [],
             "better_than_champion": better, "gate_evidence": evidence}
    _write_state(paths, state)
    return state


def read_rows(paths: Paths, candidate: str, since: str) -> pd.DataFrame:
    """The rollout log's rows served at or after ``since`` (ISO time)."""
    rows = []
    for f in sorted(log_folder(paths, candidate).glob("*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a torn last line
                continue
            if r.get("served_at", "") >= since:
                rows.append(r)
    return pd.DataFrame(rows)


def paired(rows: pd.DataFrame) -> pd.DataFrame:
    """Requests both models scored: shadow rows (the champion answered, the candidate was logged)
    and the canary's candidate rows (the endpoint scores every request with the champion too).
    Columns: transaction_id, old, new (scores), old_decision, new_decision."""
    cols = ["transaction_id", "old", "new", "old_decision", "new_decision"]
    parts = []
    if len(rows) and "shadow_score" in rows:
        sh = rows[rows["shadow_score"].notna()]
        parts.append(pd.DataFrame({"transaction_id": sh["transaction_id"], "old": sh["fraud_score"], "new": sh["shadow_score"],
                                   "old_decision": sh["decision"], "new_decision": sh["shadow_decision"]}))
    if len(rows) and "champion_score" in rows:
        ca = rows[rows["champion_score"].notna()]
        parts.append(pd.DataFrame({"transaction_id": ca["transaction_id"], "old": ca["champion_score"], "new": ca["fraud_score"],
                                   "old_decision": ca["champion_decision"], "new_decision": ca["decision"]}))
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols]


DIVERGENCE = ("agreement", "decision_rate_shift", "score_psi")  # how far from the champion, not how good


def analyse(rows: pd.DataFrame, stage: str, g: Guardrails, elapsed_s: float,
            labels: set | None = None, since_start: pd.DataFrame | None = None,
            divergence_expected: bool = False) -> dict:
    """The step's verdict: ``passed`` True / False, or None while there is not yet enough traffic
    or time to judge; every condition with its actual value and threshold.

    Operational conditions (errors, model time) are judged on the step's own ``rows``; the
    comparisons with the champion (score PSI, decision-rate shift, agreement, AP) on every request
    both models scored since the rollout began (``since_start``, default ``rows``), so a 5 %
    canary step of a small deployment is not judged on a dozen rows.

    ``divergence_expected`` (the gate found the candidate better than this champion beyond noise):
    agreement, decision-rate shift and score PSI are reported, not judged; errors, model time and
    AP on matured labels still are. A model retrained after a concept drift flagged 10 % more of
    the drifted traffic than its champion, which a divergence limit would roll back."""
    cand = rows[rows["variant"] == "candidate"] if len(rows) and stage != "shadow" else rows
    n = len(cand)
    if n < g.min_requests or elapsed_s < g.min_seconds:
        return {"passed": None, "requests": int(n), "elapsed_s": round(elapsed_s, 1),
                "note": f"waiting: {n}/{g.min_requests} requests, {elapsed_s:.0f}/{g.min_seconds:.0f} s"}
    checks = []

    def check(name, actual, threshold, ok):
        judged = not (divergence_expected and name in DIVERGENCE)
        checks.append({"condition": name, "actual": None if actual is None else round(float(actual), 4),
                       "threshold": threshold, "passed": bool(ok) if judged else None})

    err = rows["candidate_error"].fillna(False).astype(bool) if "candidate_error" in rows else pd.Series(False, index=rows.index)
    errors = int(err.sum())
    check("error_rate", errors / max(n, 1), g.max_error_rate, errors / max(n, 1) <= g.max_error_rate)
    ok = rows[~err]
    if stage == "shadow":
        champ_ms, cand_ms = ok["model_ms"].to_numpy(float), ok.get("shadow_ms", pd.Series(dtype=float)).dropna().to_numpy(float)
    else:
        champ_ms = ok.loc[ok["variant"] == "champion", "model_ms"].to_numpy(float)
        cand_ms = ok.loc[ok["variant"] == "candidate", "model_ms"].to_numpy(float)
    if len(champ_ms) and len(cand_ms):
        c99, k99 = float(np.percentile(champ_ms, 99)), float(np.percentile(cand_ms, 99))
        limit = g.max_p99_ratio * c99 + 1.0
        check("model_p99_ms", k99, round(limit, 3), k99 <= limit)
    both = paired(since_start if since_start is not None else rows)
    if len(both):
        old_flag, new_flag = (both["old_decision"] != "approve").to_numpy(), (both["new_decision"] != "approve").to_numpy()
        agreement = float(np.mean(both["old_decision"].to_numpy() == both["new_decision"].to_numpy()))
        check("agreement", agreement, g.min_agreement, agreement >= g.min_agreement)
        shift = abs(float(new_flag.mean()) - float(old_flag.mean()))
        check("decision_rate_shift", shift, g.max_decision_shift, shift <= g.max_decision_shift)
        p = psi(both["old"].to_numpy(float), both["new"].to_numpy(float))
        check("score_psi", p, g.max_score_psi, p <= g.max_score_psi)
        if labels:
            from sklearn.metrics import average_precision_score

            y = both["transaction_id"].isin(labels).to_numpy()
            if g.min_ap_frauds <= y.sum() < len(y):
                drop = float(average_precision_score(y, both["old"]) - average_precision_score(y, both["new"]))
                check("ap_drop_vs_champion", drop, g.max_ap_drop, drop <= g.max_ap_drop)
    return {"passed": all(c["passed"] is not False for c in checks), "requests": int(n), "paired_requests": int(len(both)),
            "elapsed_s": round(elapsed_s, 1), "checks": checks}


def advance(paths: Paths, now: datetime | None = None, labels: set | None = None, actor: str = "rollout") -> dict:
    """One analysis of the current step and what follows from it: ``wait``, ``retry`` (failed,
    within the limit: the step starts again), ``advanced`` (next step), ``promoted`` (production),
    ``rolled_back`` (the candidate is rejected, all traffic to the champion), or ``none``."""
    from vigil import registry

    state = read_state(paths)
    if state is None:
        return {"action": "none"}
    now = now or datetime.now(timezone.utc)
    g = Guardrails(**state["guardrails"])
    elapsed = (now - datetime.fromisoformat(state["step_started_at"])).total_seconds()
    every = read_rows(paths, state["candidate"], state["started_at"])
    rows = every[every["served_at"] >= state["step_started_at"]] if len(every) else every
    verdict = analyse(rows, state["stage"], g, elapsed, labels, since_start=every,
                      divergence_expected=state.get("better_than_champion", False))
    step_name = f"{state['stage']} {state['percent']} %" if state["stage"] == "canary" else "shadow"
    if verdict["passed"] is None:
        return {"action": "wait", "step": step_name, **verdict}
    state["analyses"] = (state["analyses"] + [{"step": step_name, "at": _now(), **verdict}])[-20:]
    db, cand = registry.records(paths), state["candidate"]
    mark = {True: "ok", False: "FAILED", None: "reported"}
    summary = ", ".join(f"{c['condition']} {c['actual']} ({mark[c['passed']]}, {c['threshold']})" for c in verdict["checks"])
    if not verdict["passed"]:
        state["failures"] += 1
        if state["failures"] > g.failure_limit:
            failed = [c["condition"] for c in verdict["checks"] if c["passed"] is False]
            db.move(cand, "rejected", f"rollout rolled back at {step_name}: {', '.join(failed)} failed ({summary})", actor)
            _write_state(paths, None)
            from vigil.alerts import Alert, alerter_for

            alerter_for(paths.root).raise_alert(Alert(
                "model_rolled_back", f"rollout:{cand}", f"rollout of {cand} rolled back at {step_name}: "
                                                         f"{', '.join(failed)} failed; {state['champion']} serves all traffic",
                {"candidate": cand, "champion": state["champion"], "step": step_name, "checks": verdict["checks"]}))
            return {"action": "rolled_back", "step": step_name, **verdict}
        state["step_started_at"] = _now()
        _write_state(paths, state)
        return {"action": "retry", "step": step_name, "failures": state["failures"], **verdict}
    nxt = state["step"] + 1
    if nxt == len(STEPS):
        registry.promote(paths, cand, f"rollout complete: every step passed (last: {step_name}: {summary})", actor=actor)
        _write_state(paths, None)
        return {"action": "promoted", "step": step_name, **verdict}
    stage, percent = STEPS[nxt]
    db.move(cand, stage, f"{step_name} passed ({summary}); canary {percent} %", actor)
    state.update(step=nxt, stage=stage, percent=percent, step_started_at=_now(), failures=0)
    _write_state(paths, state)
    return {"action": "advanced", "step": f"{stage} {percent} %", "passed_step": step_name, **verdict}


def abort(paths: Paths, reason: str, actor: str | None = None) -> dict:
    """Stop the rollout by hand: the candidate is rejected, the champion answers everything."""
    from vigil import registry

    state = read_state(paths)
    if state is None:
        raise ValueError("no rollout in progress")
    registry.records(paths).move(state["candidate"], "rejected", f"rollout aborted: {reason}", registry.actor_name(actor))
    _write_state(paths, None)
    return state


@dataclass
class RolloutLog:
    """Append-only rows of one process during a rollout (one ``write`` per batch, bounded)."""

    folder: Path
    written: int = 0
    fd: int | None = field(default=None, repr=False)

    def append(self, rows: list[dict]) -> None:
        if self.written > MAX_LOG_BYTES or not rows:
            return
        if self.fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.folder / f"{socket.gethostname()}-{os.getpid()}.jsonl",  # replicas never share a file
                              os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        data = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in rows).encode()
        os.write(self.fd, data)
        self.written += len(data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
