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


def test_serving_engine_compiles_off_the_request_path_and_scores_as_lightgbm(model, tmp_path):
    from vigil.scoring import Deployed

    m, x = model
    engine = compiled.ServingEngine(m, tmp_path, min_rows=100)
    d = Deployed("t", m, None, "now", engine)
    assert engine.predict(x[:99]) is None and engine.state == "lightgbm"  # too small: never starts
    np.testing.assert_array_equal(d.predict(x), m.predict(x))  # the first batch starts the build, LightGBM answers
    engine.start().join(timeout=300)
    assert engine.state == "compiled", engine.state
    target = compiled.cached(m, tmp_path)
    assert target.exists() and target.with_suffix(".sha256").exists() and compiled.host_key() in target.name
    np.testing.assert_allclose(d.predict(x), m.predict(x), rtol=0, atol=1e-12)
    assert engine.predict(x) is not None
    # a second worker loads the library the first built (no second build)
    other = compiled.ServingEngine(m, tmp_path, min_rows=100)
    mtime = target.stat().st_mtime_ns
    other.start().join(timeout=60)
    assert other.state == "compiled" and target.stat().st_mtime_ns == mtime


def test_serving_engine_refuses_an_altered_library_and_one_that_disagrees(model, tmp_path):
    m, x = model
    first = compiled.ServingEngine(m, tmp_path, min_rows=100)
    first.start().join(timeout=300)
    assert first.state == "compiled"

    class Off:  # a library that scores differently from LightGBM
        def predict(self, rows, n_jobs=1):
            return m.booster.predict(rows) + 1e-6

    first.compiled = Off()
    assert first.predict(x) is None and first.state.startswith("failed: differs from LightGBM by 1e-06")
    assert first.predict(x) is None  # dropped for good: LightGBM scores from then on
    target = compiled.cached(m, tmp_path)
    good = target.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))  # torn or altered: never loaded, built again
    assert compiled.verified(target) is None
    altered = compiled.ServingEngine(m, tmp_path, min_rows=100)
    altered.start().join(timeout=300)
    assert altered.state == "compiled" and target.read_bytes() == good
    target.with_suffix(".sha256").unlink()  # a library without its digest (an older `vigil score`): built again
    again = compiled.ServingEngine(m, tmp_path, min_rows=100)
    again.start().join(timeout=300)
    assert again.state == "compiled" and compiled.verified(target) == good
    np.testing.assert_allclose(again.predict(x), m.predict(x), rtol=0, atol=1e-12)

    class Raises:
        def predict(self, rows, n_jobs=1):
            raise ValueError("broken library")

    again.compiled = Raises()  # an error is LightGBM's turn, not a failed batch
    assert again.predict(x) is None and "raised ValueError" in again.state


def test_a_failed_build_is_tried_again_after_a_backoff(model, tmp_path, monkeypatch):
    m, x = model
    monkeypatch.setattr(compiled, "COMPILE_TIMEOUT_S", 0.01)  # the build cannot finish: as at nice 19 on busy cores
    engine = compiled.ServingEngine(m, tmp_path, min_rows=100)
    engine.start().join(timeout=60)
    assert engine.compiled is None and "TimeoutExpired" in engine.state and "tried again in 60 s" in engine.state
    assert engine.predict(x) is None and engine.start() is not None and "failed" in engine.state  # not before
    monkeypatch.setattr(compiled, "COMPILE_TIMEOUT_S", 900)
    engine._retry_at = 0.0  # the backoff has passed
    engine.start().join(timeout=300)
    assert engine.state == "compiled" and engine._backoff == compiled.RETRY_FIRST_S
    np.testing.assert_allclose(engine.predict(x), m.predict(x), rtol=0, atol=1e-12)


def test_build_folders_a_killed_build_left_are_swept_and_live_ones_kept(tmp_path):
    import os
    import time

    from vigil.compiled import COMPILE_TIMEOUT_S, sweep

    old, live, library = tmp_path / "tmpold123", tmp_path / "tmplive456", tmp_path / "abc-def.so"
    old.mkdir()
    (old / "booster.txt").write_text("x")
    live.mkdir()
    library.write_bytes(b"\0")
    past = time.time() - 3 * COMPILE_TIMEOUT_S
    os.utime(old, (past, past))
    os.utime(library, (past, past))
    assert sweep(tmp_path) == 1
    assert not old.exists() and live.exists() and library.exists()  # a build under way, and the libraries, stay
