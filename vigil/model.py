"""The fraud model as served: scikit-learn preprocessing fitted at training, LightGBM booster.

Training fits a scikit-learn ``Pipeline`` (imputation + ``LGBMClassifier``). Serving must not pay
scikit-learn's per-call validation (about 0.5 ms a row), so :class:`FraudModel` keeps the fitted
pipeline for reference and scores with the same fitted parameters on numpy: the imputer's fill
values, then ``Booster.predict`` with one thread. A test proves both paths give the same scores.
"""

from __future__ import annotations

import ctypes
import json
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import lightgbm as lgb
import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

PIPELINE_FILE = "pipeline.joblib"
BOOSTER_FILE = "booster.txt"
SPEC_FILE = "model_spec.json"
BATCH_ROWS = 10_000  # from this many rows on, predict uses every core

# Chosen by benchmarks/model_quality.py's budgeted search (12 configurations, mean Handbook AP over
# the 4 prequential validation folds, never a test week): 0.767 there against 0.760 for the
# previous defaults (300 trees, 31 leaves, lr 0.05, min_child 50, colsample 0.8, no class weight).
DEFAULT_PARAMS = {
    "n_estimators": 150,
    "learning_rate": 0.03,
    "num_leaves": 63,
    "min_child_samples": 100,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.6,
    "scale_pos_weight": 3.0,  # frauds weigh 3x: the imbalance handling the search kept
    "reg_lambda": 1.0,
    "n_jobs": 2,
    "verbose": -1,
}


def build_pipeline(params: dict | None = None, seed: int = 0) -> Pipeline:
    from lightgbm import LGBMClassifier

    p = {**DEFAULT_PARAMS, **(params or {}), "random_state": seed}
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value=0.0, keep_empty_features=True)),
            ("model", LGBMClassifier(**p)),
        ]
    )


class SingleRow:
    """LightGBM's own predictor for one row (``LGBM_BoosterPredictForMatSingleRowFast``): the same
    C++ prediction as ``Booster.predict(x, num_threads=1)`` (tests/unit/test_model_and_policy.py
    holds the two equal, bit for bit), set up once instead of at every call. ``Booster.predict``
    builds a predictor, copies its parameters and checks the data on each call: a row took 38 us on
    the benchmark machine, 16 this way, imputation included (benchmarks/README.md). Calls take
    turns (a lock): a row takes microseconds."""

    def __init__(self, booster: lgb.Booster):
        from lightgbm.basic import _LIB, _c_str, _safe_call

        self.ncol = booster.num_feature()
        self._handle = ctypes.c_void_p()
        num_iteration = booster.best_iteration  # what Booster.predict uses when not told
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(num_iteration),  # normal, from the 1st tree
            ctypes.c_int(1), ctypes.c_int32(self.ncol), _c_str("num_threads=1"), ctypes.byref(self._handle)))  # float64
        self._booster = booster  # the fast config points into it: kept alive as long as this
        self._call, self._safe_call = _LIB.LGBM_BoosterPredictForMatSingleRowFast, _safe_call
        self._out, self._len = np.empty(1), ctypes.c_int64()
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._lock = threading.Lock()
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, self._handle)

    def predict(self, row: np.ndarray) -> np.ndarray:
        """The score of one imputed row of ``ncol`` values, as a 1-element array."""
        row = np.ascontiguousarray(row, dtype=np.float64)
        if row.shape != (self.ncol,):
            raise ValueError(f"one row of {self.ncol} features expected, got shape {row.shape}")
        with self._lock:
            self._safe_call(self._call(self._handle, row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(self._len),
                                       self._out_ptr))
            return self._out.copy()


@dataclass
class FraudModel:
    features: list[str]
    fill_values: np.ndarray
    booster: lgb.Booster
    pipeline: Pipeline | None = None

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline, features: list[str]) -> "FraudModel":
        imputer: SimpleImputer = pipeline.named_steps["impute"]
        booster = pipeline.named_steps["model"].booster_
        return cls(list(features), np.asarray(imputer.statistics_, dtype=np.float64), booster, pipeline)

    _one: "SingleRow | None" = field(default=None, init=False, repr=False, compare=False)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Fraud probability for rows of ``x`` (columns in ``self.features`` order; NaN = missing).

        One row (``/score``): LightGBM's single-row predictor (:class:`SingleRow`). One thread for
        what a request carries (threads cost more than they save on a few rows and the server runs
        requests in parallel); every core for a batch of past days."""
        x = self.impute(x)
        if len(x) == 1:
            if self._one is None:
                self._one = SingleRow(self.booster)
            return self._one.predict(x[0])
        return self.booster.predict(x, num_threads=1 if len(x) < BATCH_ROWS else 0)

    def __getstate__(self) -> dict:  # the single-row predictor holds C pointers: rebuilt where it is used
        return {k: v for k, v in self.__dict__.items() if k != "_one"}

    def impute(self, x: np.ndarray) -> np.ndarray:
        """Rows as float64 with missing values replaced by the imputer's fitted fill values."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        return np.where(np.isnan(x), self.fill_values, x)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / BOOSTER_FILE))
        if self.pipeline is not None:
            joblib.dump(self.pipeline, folder / PIPELINE_FILE)
        (folder / SPEC_FILE).write_text(json.dumps({"features": self.features, "fill_values": self.fill_values.tolist()}))

    @classmethod
    def load(cls, folder: Path, with_pipeline: bool = False) -> "FraudModel":
        folder = Path(folder)
        spec = json.loads((folder / SPEC_FILE).read_text())
        booster = lgb.Booster(model_file=str(folder / BOOSTER_FILE))
        pipe = joblib.load(folder / PIPELINE_FILE) if with_pipeline and (folder / PIPELINE_FILE).exists() else None
        return cls(spec["features"], np.asarray(spec["fill_values"], dtype=np.float64), booster, pipe)
