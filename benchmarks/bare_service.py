"""The baseline of ``benchmarks/serving.py``: the least a BentoML service can do per request — one
typed ``@bentoml.api`` taking the same five fields as Vigil's ``/score`` and answering
``Booster.predict`` of the promoted model on one fixed feature row (no feature store, no policy,
no log, no guard). Same workers, and the same ``gc.freeze()`` once loaded, threads and tracing
(BentoML's OpenTelemetry middleware, ``serving.tracing``) as Vigil's service (the same
``VIGIL_SERVING_*`` variables); ``BARE_ASYNC=1`` makes the handler ``async``.

    BARE_BOOSTER=<model.txt> BARE_ROW='[...]' python -m bentoml serve benchmarks.bare_service:Bare
"""

from __future__ import annotations

import gc
import json
import os
from datetime import datetime

import bentoml
import lightgbm as lgb
import numpy as np

from serving.tracing import tracing_config
from vigil.settings import Settings

WORKERS = int(os.environ.get("VIGIL_SERVING_WORKERS", "2") or 2)  # Vigil's defaults
THREADS = int(os.environ.get("VIGIL_SERVING_THREADS", "4") or 4)


class _Bare:
    def __init__(self) -> None:
        self.booster = lgb.Booster(model_file=os.environ["BARE_BOOSTER"])
        self.row = np.asarray(json.loads(os.environ["BARE_ROW"]), dtype=np.float64)[None, :]
        gc.freeze()  # as Vigil's worker does once loaded (serving/service.py): the same server configuration

    def _predict(self) -> dict:
        return {"fraud_score": float(self.booster.predict(self.row, num_threads=1)[0])}


CONFIG = dict(name="bare_booster", workers=WORKERS, threads=THREADS, traffic={"timeout": 10},
              logging={"access": {"enabled": False}}, metrics={"enabled": False}, **tracing_config(Settings.from_env()))


@bentoml.service(**CONFIG)
class Bare(_Bare):
    @bentoml.api
    def score(self, transaction_id: int, tx_datetime: datetime, customer_id: int, terminal_id: int, tx_amount: float) -> dict:
        return self._predict()


@bentoml.service(**CONFIG)
class BareAsync(_Bare):
    @bentoml.api
    async def score(self, transaction_id: int, tx_datetime: datetime, customer_id: int, terminal_id: int,
                    tx_amount: float) -> dict:
        return self._predict()
