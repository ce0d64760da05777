"""Rollout logic: consistent customer routing and the step analysis against its guardrails."""

import numpy as np
import pandas as pd

from vigil.rollout import Guardrails, analyse, variant_of


def test_routing_is_consistent_grows_with_the_share_and_hits_it():
    ids = range(20_000)
    at5 = {i for i in ids if variant_of(i, 5, "vigil-fraud:abc") == "candidate"}
    at25 = {i for i in ids if variant_of(i, 25, "vigil-fraud:abc") == "candidate"}
    assert at5 <= at25  # growing the share adds customers, never moves one back
    assert abs(len(at5) / 20_000 - 0.05) < 0.01 and abs(len(at25) / 20_000 - 0.25) < 0.015
    assert all(variant_of(i, 5, "vigil-fraud:abc") == variant_of(i, 5, "vigil-fraud:abc") for i in range(100))
    other = {i for i in ids if variant_of(i, 5, "vigil-fraud:xyz") == "candidate"}
    assert len(at5 & other) < len(at5) / 2  # another candidate, another 5 %
    assert variant_of(7, 0, "s") == "champion" and variant_of(7, 100, "s") == "candidate"


def _shadow_rows(n, shift=0.0, disagree=0.0, rng=None):
    rng = rng or np.random.default_rng(0)
    champ = rng.beta(1, 60, n)
    cand = np.clip(champ + shift + rng.normal(0, 0.001, n), 0, 1)
    dec = np.where(champ > 0.05, "review", "approve")
    sdec = np.where(cand > 0.05, "review", "approve")
    flip = rng.random(n) < disagree
    sdec = np.where(flip, np.where(sdec == "approve", "review", "approve"), sdec)
    return pd.DataFrame({"transaction_id": np.arange(n), "variant": "champion", "fraud_score": champ, "decision": dec,
                         "model_ms": 0.05, "candidate_error": False, "shadow_score": cand, "shadow_decision": sdec,
                         "shadow_ms": 0.06})


def test_a_step_waits_for_enough_requests_and_time():
    g = Guardrails(min_requests=200, min_seconds=30)
    assert analyse(_shadow_rows(100), "shadow", g, 60)["passed"] is None
    assert analyse(_shadow_rows(500), "shadow", g, 10)["passed"] is None


def test_a_faithful_shadow_passes_and_a_shifted_one_fails_naming_the_conditions():
    g = Guardrails(min_requests=200, min_seconds=0)
    ok = analyse(_shadow_rows(2000), "shadow", g, 1)
    assert ok["passed"] is True and {c["condition"] for c in ok["checks"]} >= {"error_rate", "agreement", "score_psi",
                                                                               "decision_rate_shift", "model_p99_ms"}
    bad = analyse(_shadow_rows(2000, shift=0.2), "shadow", g, 1)
    failed = {c["condition"] for c in bad["checks"] if not c["passed"]}
    assert bad["passed"] is False and {"score_psi", "agreement", "decision_rate_shift"} <= failed


def test_candidate_errors_fail_the_error_rate():
    g = Guardrails(min_requests=100, min_seconds=0)
    rows = _shadow_rows(1000)
    rows.loc[:50, "candidate_error"] = True
    rows.loc[:50, ["shadow_score", "shadow_decision"]] = None
    out = analyse(rows, "shadow", g, 1)
    assert out["passed"] is False and [c for c in out["checks"] if c["condition"] == "error_rate"][0]["passed"] is False


def test_canary_compares_the_variants_served():
    g = Guardrails(min_requests=100, min_seconds=0)
    rng = np.random.default_rng(1)
    n = 4000
    variant = np.where(rng.random(n) < 0.25, "candidate", "champion")
    score = rng.beta(1, 60, n)
    dec = np.where(score > 0.05, "review", "approve")
    cand = variant == "candidate"
    rows = pd.DataFrame({"transaction_id": np.arange(n), "variant": variant, "fraud_score": score, "decision": dec,
                         "model_ms": 0.05, "candidate_error": False,
                         # the endpoint scores every request with the champion: the candidate's rows carry its score
                         "champion_score": np.where(cand, score, np.nan), "champion_decision": np.where(cand, dec, None)})
    out = analyse(rows, "canary", g, 1)
    assert out["passed"] is True and out["requests"] == int(cand.sum()) == out["paired_requests"]
    rows.loc[cand, "fraud_score"] = 0.5
    rows.loc[cand, "decision"] = "decline"
    bad = analyse(rows, "canary", g, 1)
    assert bad["passed"] is False
    assert {c["condition"] for c in bad["checks"] if not c["passed"]} >= {"score_psi", "decision_rate_shift", "agreement"}


def test_comparisons_use_every_request_since_the_rollout_began():
    """A 5 % step with a dozen candidate rows is judged on shadow's rows too."""
    g = Guardrails(min_requests=10, min_seconds=0)
    shadow = _shadow_rows(2000)
    step = pd.DataFrame({"transaction_id": np.arange(5000, 5012), "variant": "candidate", "fraud_score": 0.01,
                         "decision": "approve", "model_ms": 0.05, "candidate_error": False,
                         "champion_score": 0.01, "champion_decision": "approve"})
    out = analyse(step, "canary", g, 1, since_start=pd.concat([shadow, step], ignore_index=True))
    assert out["paired_requests"] == 2012 and out["passed"] is True


def test_divergence_from_the_champion_is_reported_not_judged_when_the_gate_found_the_candidate_better():
    g = Guardrails(min_requests=100, min_seconds=0)
    rows = _shadow_rows(2000, shift=0.2)
    out = analyse(rows, "shadow", g, 1, divergence_expected=True)
    assert out["passed"] is True
    by = {c["condition"]: c for c in out["checks"]}
    assert by["score_psi"]["passed"] is None and by["score_psi"]["actual"] > g.max_score_psi  # shown, not judged
    assert by["error_rate"]["passed"] is True
    rows.loc[:100, "candidate_error"] = True  # errors are judged whatever the gate said
    assert analyse(rows, "shadow", g, 1, divergence_expected=True)["passed"] is False
