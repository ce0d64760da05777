"""Output monitoring: score PSI against the validation window, decision rates and amounts."""

import numpy as np
import pandas as pd

from vigil.monitoring import PSI_ALERT, PSI_WARN, output_monitoring, psi


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    ref = rng.beta(1, 50, 20_000)
    assert psi(ref, rng.beta(1, 50, 5_000)) < PSI_WARN
    assert psi(ref, rng.beta(1, 15, 5_000)) > PSI_ALERT
    assert np.isfinite(psi(ref, np.full(100, 0.9)))  # every row in one bin: large, not infinite
    assert np.isnan(psi(ref, np.array([])))


def test_psi_merges_tied_quantiles():
    ref = np.r_[np.zeros(900), np.linspace(0.1, 1, 100)]  # 90 % ties at 0
    assert psi(ref, ref.copy()) < 1e-9


def test_output_monitoring_rates_and_amounts():
    served = pd.DataFrame({"fraud_score": [0.01, 0.02, 0.5, 0.9], "decision": ["approve", "approve", "review", "decline"],
                           "tx_amount": [10.0, 20.0, 30.0, 40.0]})
    out = output_monitoring(served, np.array([0.01, 0.02, 0.03, 0.04] * 50))
    assert out["approve_rate"] == 0.5 and out["decline_rate"] == 0.25 and out["decline_amount"] == 40.0
    assert out["score_psi"] > PSI_ALERT
    assert np.isnan(output_monitoring(served, None)["score_psi"])
