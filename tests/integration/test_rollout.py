"""Rollout through the real BentoML server under concurrent load: a good candidate goes shadow →
canary 5 / 25 / 50 % → production with every response 200; a deliberately bad one (trained on
inverted labels) is rolled back by the analysis on its own, and the champion never stops answering."""

import json
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.conftest import AUTH, replay_bodies
from vigil import registry, rollout
from vigil.features import MODEL_FEATURES
from vigil.policy import fit_policy
from vigil.training import fit

pytestmark = pytest.mark.integration


def _candidate(paths, champion: str, invert: bool, seed: int) -> str:
    """A model trained on the champion's own training set with another seed (or inverted labels)."""
    info = registry.model_info(paths, champion)
    folder = Path(paths.models / "training_sets" / info["metadata"]["dagster_run_id"])
    train, recent = pd.read_parquet(folder / "train.parquet"), pd.read_parquet(folder / "recent.parquet")
    if invert:
        train = train.assign(label=1 - train["label"])
    model = fit(train, info["metadata"]["lineage"]["model_params"], seed)
    policy = fit_policy(model.predict(recent[MODEL_FEATURES].to_numpy()))
    return registry.register(paths, model, policy, {**info["metadata"], "note": f"rollout test, invert={invert}"},
                             reason="rollout test")


class Load:
    """Threads posting /score until stopped; every status, variant and model version kept."""

    def __init__(self, url: str, bodies: list[dict], threads: int = 4):
        self.url, self.bodies, self.stop = url, bodies, threading.Event()
        self.seen: list[tuple[int, str | None, str | None]] = []
        self.threads = [threading.Thread(target=self.run, args=(k,), daemon=True) for k in range(threads)]

    def run(self, k: int) -> None:
        with httpx.Client(base_url=self.url, headers=AUTH, timeout=10) as c:
            i = k
            while not self.stop.is_set():
                r = c.post("/score", json=self.bodies[i % len(self.bodies)])
                body = r.json() if r.status_code == 200 else {}
                self.seen.append((r.status_code, body.get("variant"), body.get("model_version")))
                i += len(self.threads)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)


def _serving(url: str, tag: str, timeout_s: float = 20) -> None:
    """Wait until the endpoint answers with ``tag`` (it follows the pointer within 2 s)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if httpx.post(f"{url}/model_info", json={}, headers=AUTH, timeout=5).json().get("model_version") == tag:
            return
        time.sleep(0.2)
    raise AssertionError(f"the endpoint did not switch to {tag}")


def _drive(paths, until: set, timeout_s: float = 180) -> list[dict]:
    steps, deadline = [], time.time() + timeout_s
    while time.time() < deadline:
        r = rollout.advance(paths)
        if r["action"] not in ("wait", "none"):
            steps.append(r)
        if r["action"] in until:
            return steps
        time.sleep(0.5)
    raise AssertionError(f"rollout did not reach {until} in {timeout_s} s: {steps[-3:]}, last {r}")


def test_a_candidate_rolls_out_step_by_step_under_load_without_a_failed_request(server, pipeline_home):
    paths = pipeline_home["paths"]
    champion = registry.current(paths)["tag"]
    _serving(server, champion)  # an earlier test's promotion may still be on its way
    candidate = _candidate(paths, champion, invert=False, seed=1)
    bodies = replay_bodies(pipeline_home)
    rollout.start(paths, candidate, "rollout test", guardrails=rollout.Guardrails(min_requests=40, min_seconds=0,
                                                                                  max_decision_shift=0.05))
    try:
        with Load(server, bodies) as load:
            steps = _drive(paths, {"promoted", "rolled_back"})
            time.sleep(3)  # the endpoint follows the production pointer within 2 s
        # a "retry" (one guardrail missed within the failure limit, e.g. model p99 on a busy machine) is allowed
        assert [s["action"] for s in steps if s["action"] != "retry"] == ["advanced", "advanced", "advanced", "promoted"], \
            json.dumps(steps, default=str)[:3000]
        assert {code for code, _, _ in load.seen} == {200}, "a request failed during the rollout"
        assert {(v, m) for _, v, m in load.seen} >= {("candidate", candidate), ("champion", champion)}
        assert load.seen[-1][2] == candidate  # all traffic on the new model, no restart
        moves = [(t["from_stage"], t["to_stage"]) for t in registry.records(paths).transitions(candidate)]
        assert moves == [(None, "candidate"), ("candidate", "shadow"), ("shadow", "canary"), ("canary", "canary"),
                         ("canary", "canary"), ("canary", "production")]
        assert registry.records(paths).version(champion)["stage"] == "archived"
        # the variant is in the prediction log too
        day = pipeline_home["replay_day"].isoformat()
        logged = [json.loads(x) for f in (paths.predictions / day).glob("*.jsonl") for x in f.read_text().splitlines()]
        assert {r.get("variant") for r in logged} >= {"champion", "candidate"}
    finally:
        if rollout.read_state(paths):
            rollout.abort(paths, "test cleanup")
        if registry.current(paths)["tag"] != champion:
            registry.promote(paths, champion, reason="restore after the rollout test")


def test_a_bad_candidate_is_rolled_back_by_the_analysis(server, pipeline_home):
    paths = pipeline_home["paths"]
    champion = registry.current(paths)["tag"]
    _serving(server, champion)
    bad = _candidate(paths, champion, invert=True, seed=2)
    rollout.start(paths, bad, "bad candidate test", guardrails=rollout.Guardrails(min_requests=40, min_seconds=0))
    try:
        with Load(server, replay_bodies(pipeline_home)) as load:
            steps = _drive(paths, {"rolled_back", "promoted", "advanced"})
        assert [s["action"] for s in steps] == ["retry", "rolled_back"], json.dumps(steps, default=str)[:3000]
        failed = {c["condition"] for c in steps[-1]["checks"] if not c["passed"]}
        assert "score_psi" in failed
        assert {code for code, _, _ in load.seen} == {200}
        assert {m for _, _, m in load.seen} == {champion}  # in shadow the candidate never answers
        assert registry.records(paths).version(bad)["stage"] == "rejected"
        assert registry.current(paths)["tag"] == champion and rollout.read_state(paths) is None
        alerts = [json.loads(x) for x in (paths.root / "alerts" / "alerts.jsonl").read_text().splitlines()]
        assert any(a["name"] == "model_rolled_back" and a["details"]["candidate"] == bad for a in alerts)
    finally:
        if rollout.read_state(paths):
            rollout.abort(paths, "test cleanup")


def test_a_broken_rollout_state_never_fails_a_request(server, pipeline_home):
    """A rollout naming a model the store does not hold: the champion keeps answering (and the
    error is logged once, not every poll)."""
    paths = pipeline_home["paths"]
    champion = registry.current(paths)["tag"]
    _serving(server, champion)
    state = rollout.state_path(paths)
    state.write_text(json.dumps({"candidate": "vigil-fraud:doesnotexist", "champion": champion, "stage": "canary",
                                 "percent": 50, "started_at": "2026-01-01T00:00:00+00:00"}))
    try:
        time.sleep(3)  # two polls
        with httpx.Client(base_url=server, headers=AUTH) as c:
            codes = {(r.status_code, r.json().get("model_version")) for r in
                     (c.post("/score", json=b) for b in replay_bodies(pipeline_home, 40))}
        assert codes == {(200, champion)}
    finally:
        state.unlink()
    log = (paths.root / "serving-test.log").read_text()
    assert 1 <= log.count("vigil-fraud:doesnotexist") <= 2  # logged once, not at every 2-second poll
