"""The compiled engine gives LightGBM's scores (checked on the batch before use), is cached per
booster, and is only chosen where it pays."""

import numpy as np
import pytest

from vigil import compiled
from vigil.model import FraudModel, build_pipeline

pytestmark = pytest.mark.skipif(not compiled.available(), reason="lleaves not installed (the 'batch' extra)")


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 5))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 0]) + rng.normal(size=3000) > 1.5).astype(int)
    pipe = build_pipeline({"n_estimators": 20}).fit(x, y)
    return FraudModel.from_pipeline(pipe, [f"f{i}" for i in range(5)]), x


def test_compiled_scores_equal_lightgbm_and_are_cached(model, tmp_path):
    m, x = model
    rows = m.impute(x)
    predict, engine = compiled.predictor(m, rows, tmp_path, "compiled")
    assert engine == "compiled" and compiled.cached(m, tmp_path).exists()
    np.testing.assert_allclose(predict(rows), m.predict(x), rtol=0, atol=1e-12)
    # auto: a small batch uses the cached library, and LightGBM when nothing is cached
    assert compiled.predictor(m, rows[:10], tmp_path, "auto")[1] == "compiled"
    assert compiled.predictor(m, rows[:10], tmp_path / "empty", "auto")[1] == "lightgbm"


def test_bad_engine_is_named(model, tmp_path):
    m, x = model
    with pytest.raises(ValueError, match="engine must be"):
        compiled.predictor(m, x, tmp_path, "gpu")
