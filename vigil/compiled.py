"""The booster compiled to native code for scoring many rows (``vigil score``).

LightGBM walks its trees through a generic interpreter; ``lleaves`` compiles the same model file
with LLVM into one function per forest, about 4-5x faster on our boosters. Compiling costs
~20 s on two cores, so the result is cached per booster (keyed by the model file's hash) and used
only where it pays: a cached model, or a batch large enough. Every compiled model is checked
against LightGBM on rows of the batch before it scores anything; a mismatch falls back to
LightGBM, so the engine changes speed, never scores.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from vigil.model import FraudModel

log = logging.getLogger("vigil.compiled")
COMPILE_MIN_ROWS = 1_000_000  # below this, compiling (~20 s) costs more than it saves (~15 s at 66k rows/s)
CHECK_ROWS = 2_000
TOLERANCE = 1e-9


def available() -> bool:
    try:
        import lleaves  # noqa: F401
    except ImportError:
        return False
    return True


def booster_hash(model: FraudModel) -> str:
    return hashlib.sha256(model.booster.model_to_string().encode()).hexdigest()[:20]


def cached(model: FraudModel, cache_dir: Path) -> Path:
    return Path(cache_dir) / f"{booster_hash(model)}.so"


def compile_model(model: FraudModel, cache_dir: Path):
    """The compiled predictor of ``model`` (cached in ``cache_dir``)."""
    import lleaves

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cached(model, cache_dir)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        model_file = Path(tmp) / "booster.txt"
        model.booster.save_model(str(model_file))
        compiled = lleaves.Model(model_file=str(model_file))
        if target.exists():
            compiled.compile(cache=str(target))
        else:  # compile beside, then move in: a concurrent reader never loads half a library
            part = Path(tmp) / "model.so"
            compiled.compile(cache=str(part))
            os.replace(part, target)
    return compiled


def predictor(model: FraudModel, x: np.ndarray, cache_dir: Path, engine: str = "auto"):
    """``(predict, name)`` for scoring ``x``: ``engine`` is ``lightgbm``, ``compiled`` or ``auto``
    (compiled when lleaves is installed and the model is cached or ``x`` has at least
    ``COMPILE_MIN_ROWS`` rows). ``predict`` takes rows with missing values already imputed."""
    if engine not in ("auto", "lightgbm", "compiled"):
        raise ValueError(f"engine must be auto, lightgbm or compiled; got {engine!r}")
    lgbm = (lambda rows: model.booster.predict(rows, num_threads=0)), "lightgbm"
    if engine == "lightgbm":
        return lgbm
    if not available():
        if engine == "compiled":
            raise ValueError("engine 'compiled' needs lleaves: install Vigil with the 'batch' extra")
        return lgbm
    if engine == "auto" and not cached(model, cache_dir).exists() and len(x) < COMPILE_MIN_ROWS:
        return lgbm
    compiled = compile_model(model, cache_dir)
    sample = x[:: max(1, len(x) // CHECK_ROWS)][:CHECK_ROWS]
    gap = float(np.max(np.abs(compiled.predict(sample, n_jobs=1) - model.booster.predict(sample, num_threads=1)),
                       initial=0.0))
    if gap > TOLERANCE:
        log.warning("compiled model differs from LightGBM by %.3g on %d rows: scoring with LightGBM", gap, len(sample))
        return lgbm
    return (lambda rows: compiled.predict(rows, n_jobs=os.cpu_count() or 1)), "compiled"
