import numpy as np
import pandas as pd

from vigil.evaluation import card_precision_at_k, metrics
from vigil.model import FraudModel, build_pipeline
from vigil.policy import APPROVE, DECLINE, REVIEW, fit_policy


def data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) + rng.normal(0, 0.5, n) > 1.5).astype(int)
    return pd.DataFrame(x, columns=list("abcd")), y


def test_serving_fast_path_equals_the_sklearn_pipeline(tmp_path):
    x, y = data()
    pipe = build_pipeline({"n_estimators": 50}).fit(x, y)
    model = FraudModel.from_pipeline(pipe, list(x.columns))
    np.testing.assert_allclose(model.predict(x.to_numpy()), pipe.predict_proba(x)[:, 1], rtol=1e-9, atol=1e-12)
    model.save(tmp_path)
    loaded = FraudModel.load(tmp_path)
    np.testing.assert_allclose(loaded.predict(x.to_numpy()[:5]), model.predict(x.to_numpy()[:5]))
    assert loaded.predict(x.to_numpy()[0]).shape == (1,)


def test_one_row_scores_are_booster_predicts_bit_for_bit(tmp_path):
    """/score's one row goes through LightGBM's single-row predictor (vigil.model.SingleRow):
    the same scores as Booster.predict, bit for bit, from any thread, after a save and load, after
    pickling, and with a booster whose best iteration stops before its last tree."""
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    import lightgbm as lgb
    import pytest

    from vigil.model import SingleRow

    x, y = data(n=4000, seed=3)
    pipe = build_pipeline({"n_estimators": 60}).fit(x, y)
    model = FraudModel.from_pipeline(pipe, list(x.columns))
    rows = x.to_numpy()[:400]
    rows[::7] = np.nan  # rows with every value missing: the imputer's fill values
    batch = model.booster.predict(model.impute(rows), num_threads=1)
    one = np.concatenate([model.predict(r[None, :]) for r in rows])
    assert one.tobytes() == batch.tobytes()
    with ThreadPoolExecutor(4) as pool:  # one predictor, calls from four threads
        threaded = np.concatenate(list(pool.map(lambda r: model.predict(r[None, :]), rows)))
    assert threaded.tobytes() == batch.tobytes()
    model.save(tmp_path)
    loaded = pickle.loads(pickle.dumps(FraudModel.load(tmp_path)))  # the pickle leaves the predictor out
    assert np.concatenate([loaded.predict(r[None, :]) for r in rows[:50]]).tobytes() == batch[:50].tobytes()

    early = lgb.Booster(model_str=model.booster.model_to_string())
    early.best_iteration = 10  # Booster.predict's default: the best iteration, not every tree
    stopped = FraudModel(model.features, model.fill_values, early)
    want = early.predict(model.impute(rows[:20]), num_threads=1)
    assert not np.array_equal(want, batch[:20])
    assert np.concatenate([stopped.predict(r[None, :]) for r in rows[:20]]).tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="one row of 4 features"):
        SingleRow(model.booster).predict(np.zeros(5))


def test_policy_thresholds_and_reasons():
    p = fit_policy(np.linspace(0, 1, 1001), review_rate=0.02, decline_rate=0.005)
    assert p.decide(0.999) == DECLINE and p.decide(0.985) == REVIEW and p.decide(0.5) == APPROVE
    reasons = p.reasons(0.99, {"tx_amount": 400.0, "customer_avg_amount_30d": 50.0, "terminal_risk_7d": 0.5,
                               "customer_nb_tx_30d": 3.0}, ["terminal_risk"])
    assert reasons == ["HIGH_MODEL_SCORE", "AMOUNT_ABOVE_CUSTOMER_HABIT", "RISKY_TERMINAL", "STALE_FEATURES:terminal_risk"]


def test_card_precision_at_k_by_hand():
    f = pd.DataFrame({
        "tx_datetime": pd.to_datetime(["2025-04-01 10:00"] * 4 + ["2025-04-02 10:00"] * 3),
        "customer_id": [1, 1, 2, 3, 1, 2, 3],
        "score": [0.9, 0.1, 0.8, 0.2, 0.1, 0.7, 0.9],
        "label": [0, 1, 0, 1, 0, 1, 0],
    })
    # day 1: top-2 cards by max score = 1 (fraud via its 2nd tx), 2 (genuine) -> 1/2
    # day 2: top-2 = 3 (genuine), 2 (fraud) -> 1/2
    assert card_precision_at_k(f, k=2) == 0.5
    m = metrics(f, k=2)
    assert set(m) >= {"handbook_auc", "handbook_average_precision", "handbook_card_precision_at_2",
                      "week_auc", "week_average_precision", "week_card_precision_at_2"}


def test_decide_many_equals_decide_including_ties():
    import numpy as np

    from vigil.policy import DecisionPolicy

    p = DecisionPolicy(review_threshold=0.5, decline_threshold=0.9)
    scores = np.array([0.0, 0.4999, 0.5, 0.7, 0.9, 0.95, 1.0])
    assert p.decide_many(scores).tolist() == [p.decide(s) for s in scores]


def test_reasons_many_equals_reasons_row_by_row():
    """The batch form gives the codes of :meth:`reasons` on the dict of each row (None for NaN, as
    the scorer builds it), in the same order: NaN and zero means, amounts at the ratio's edge,
    risk at the threshold, no history, stale views."""
    from vigil.policy import DecisionPolicy

    rng = np.random.default_rng(7)
    n = 4_000
    pol = DecisionPolicy(review_threshold=0.5, decline_threshold=0.9, high_amount_ratio=3.0, risky_terminal_rate=0.2)
    avg = rng.choice([np.nan, 0.0, 10.0, 33.0], size=n)
    cols = {"customer_avg_amount_30d": avg,
            "tx_amount": np.where(rng.random(n) < 0.2, 3.0 * np.nan_to_num(avg), rng.choice([5.0, 30.0, 99.0, 100.0], size=n)),
            "terminal_risk_7d": rng.choice([np.nan, 0.0, 0.1999, 0.2, 0.7], size=n),
            "customer_nb_tx_30d": rng.choice([np.nan, 0.0, 1.0, 12.0], size=n)}
    scores = rng.choice([0.1, 0.5, 0.4999, 0.95], size=n)
    stale = [[] if i % 3 else (["customer_spending"] if i % 2 else ["customer_spending", "terminal_risk"]) for i in range(n)]
    got = pol.reasons_many(scores, cols, stale)
    for i in range(n):
        row = {k: None if np.isnan(v[i]) else float(v[i]) for k, v in cols.items()}
        assert got[i] == pol.reasons(float(scores[i]), row, stale[i]), i
    assert {tuple(r[:4]) for r in got} >= {("HIGH_MODEL_SCORE", "AMOUNT_ABOVE_CUSTOMER_HABIT", "RISKY_TERMINAL",
                                            "NO_CUSTOMER_HISTORY")}
