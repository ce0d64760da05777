"""The scoring endpoint: one BentoML service, features from Feast's online store, the promoted
model, the decision policy, the prediction log and Prometheus metrics.

It imports :mod:`vigil` only (never dagster). The production model is picked up from the
registry's promotion pointer without a restart: the swap is one attribute assignment, so a
request in flight finishes on the model it started with.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from http import HTTPStatus

import anyio
import bentoml
from starlette.responses import Response

from serving import header_timeout
from serving.tracing import tracing_config
from serving.bulk_metrics import count_many, observe_many
from serving.guard import CLIENT_GONE, DIRECT, VALIDATED_BATCH, Guard
from serving.schema import Amount, Id, Score, Timestamp, Transaction, set_window
from vigil import config
from vigil.scoring import Answers, IntradayBusy, ModelUnavailable, Scorer, TooLate
from vigil.settings import Settings

log = logging.getLogger("vigil.serving")


def _vigil_logging() -> None:
    """Vigil's own lines (model swaps, degraded scoring, client errors) beside BentoML's, at INFO."""
    root = logging.getLogger("vigil")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] [%(name)s] %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False


_vigil_logging()


SCORES = bentoml.metrics.Histogram(name="vigil_fraud_score", documentation="fraud scores served",
                                   buckets=(0.01, 0.05, 0.1, 0.2, 0.5, 0.8, 0.95, 1.0))
DECISIONS = bentoml.metrics.Counter(name="vigil_decisions", documentation="decisions served", labelnames=["decision"])
STALE = bentoml.metrics.Counter(name="vigil_stale_features", documentation="requests scored with stale or missing features",
                                labelnames=["view"])
DEGRADED = bentoml.metrics.Counter(name="vigil_degraded", documentation="requests scored without the online store")


def rendered(content: bytes) -> Response:
    """The scorer's answers as the JSON response: they are Vigil's own, built in ``Score``'s shape
    (the fuzz tests check every response against the OpenAPI), and the scorer rendered each once,
    for the log and for this (:class:`vigil.scoring.Answers`). Returned as the ``-> Score`` value
    instead, BentoML would validate them, dump them twice and ``json.dumps`` them: 0.2 s of a
    10,000-row batch. The annotations stay for the OpenAPI."""
    return Response(content=content, media_type="application/json")


class ServiceUnavailable(bentoml.exceptions.BentoMLException):
    error_code = HTTPStatus.SERVICE_UNAVAILABLE  # an HTTPStatus: BentoML reads error_code.value (a bare 503 made its answer a 500)


SETTINGS = Settings.from_env()
TIMEOUT_S = 10
TRACING = tracing_config(SETTINGS)
header_timeout.install(SETTINGS.serving_header_timeout)


@bentoml.service(
    name="vigil_fraud",
    workers=SETTINGS.serving_workers,
    threads=SETTINGS.serving_threads,
    traffic={"timeout": TIMEOUT_S},
    logging={"access": {"enabled": False}},
    metrics={"enabled": False},  # serving.guard.RouteMetrics labels by route template, never by raw path
    **TRACING,
)
class FraudScorer:
    def __init__(self) -> None:
        set_window(SETTINGS)
        self.scorer = Scorer(config.paths(settings=SETTINGS), store_timeout_s=SETTINGS.serving_store_timeout_ms / 1000,
                             store_budget_s=SETTINGS.serving_store_budget_ms / 1000,
                             store_cooldown_s=SETTINGS.serving_store_cooldown_s,
                             feature_cache=SETTINGS.serving_feature_cache,
                             compiled=SETTINGS.serving_compiled == "auto")
        self.scorer.watch()
        # /score on the event loop (no thread hop, no GIL hand-off between the loop and a thread:
        # p50/p99 2.2/5.0 ms against 3.2/8.1 at 200 req/s, benchmarks/README.md) only when the
        # online store is a local file: a networked store's waits would stall the loop, /livez
        # included, so it runs on the threads; so do batches (a 10,000-row batch is ~0.5 s)
        self.on_loop = SETTINGS.serving_on_loop == "auto" and self.scorer.local_store
        self._limiter = None
        DIRECT["/score"] = self.score_one  # the guard answers /score without BentoML's request path
        # what is loaded now (Feast, pandas, the model: ~200k objects) lives as long as the worker:
        # out of the cyclic collector's sight, whose full passes over it took 0.1-0.25 s in the
        # middle of a 10,000-row batch (benchmarks/README.md); requests' garbage is collected as before
        gc.freeze()

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        if DIRECT.get("/score") == self.score_one:  # a later service in this process registers its own
            DIRECT.pop("/score", None)
        self.scorer.close()  # fsync and close the prediction log
        gc.unfreeze()

    def __is_ready__(self) -> bool:
        return self.scorer.deployed is not None

    async def _off_loop(self, txs: list[dict]) -> Answers:
        if self._limiter is None:  # made on the loop, the first time (anyio binds it to the running loop)
            self._limiter = anyio.CapacityLimiter(SETTINGS.serving_threads)
        return await anyio.to_thread.run_sync(self._score, txs, limiter=self._limiter)

    def _score(self, txs: list[dict], wait: bool = True) -> Answers:
        # BentoML answers 504 at TIMEOUT_S; work still running then is dropped before it is logged
        deadline = time.monotonic() + TIMEOUT_S - 0.5
        try:
            out = self.scorer.score(txs, deadline=deadline, gone=CLIENT_GONE.get(), wait=wait)
        except TooLate as exc:
            log.info("%s", exc)  # the client has gone or given up: one line, no traceback
            raise ServiceUnavailable(str(exc)) from exc
        except ModelUnavailable as exc:
            raise ServiceUnavailable(str(exc)) from exc
        if len(out) == 1:
            r = out[0]
            SCORES.observe(r["fraud_score"])
            DECISIONS.labels(decision=r["decision"]).inc()
            for view in r["stale_features"]:
                STALE.labels(view=view).inc()
            if r["degraded"]:
                DEGRADED.inc()
        else:  # a few metric calls per batch, not three per row
            observe_many(SCORES, [r["fraud_score"] for r in out])
            count_many(DECISIONS, "decision", [r["decision"] for r in out])
            count_many(STALE, "view", [v for r in out for v in r["stale_features"]])
            degraded = sum(r["degraded"] for r in out)
            if degraded:
                DEGRADED.inc(degraded)
        return out

    async def score_one(self, tx: dict) -> bytes:
        """One validated transaction's answer as JSON: the guard calls this directly (DIRECT), the
        ``score`` API below through BentoML."""
        if self.on_loop:
            try:
                return self._score([tx], wait=False).rendered[0]
            except IntradayBusy:  # a batch or another process is writing the lists: wait on a thread
                self.scorer.counters["intraday_busy"] += 1
        return (await self._off_loop([tx])).rendered[0]

    @bentoml.api
    async def score(self, transaction_id: Id, tx_datetime: Timestamp, customer_id: Id, terminal_id: Id,
                    tx_amount: Amount) -> Score:
        """Score one transaction: approve, review or decline, with reason codes."""
        return rendered(await self.score_one({"transaction_id": transaction_id, "tx_datetime": tx_datetime,
                                              "customer_id": customer_id, "terminal_id": terminal_id,
                                              "tx_amount": tx_amount}))

    @bentoml.api
    async def score_batch(self, transactions: list[Transaction]) -> list[Score]:
        """Score many transactions in one call (one Feast read, one model call)."""
        txs = VALIDATED_BATCH.get()  # the guard validated them into dicts (serving.schema.TransactionFields)
        if txs is None:
            txs = [t.__dict__ for t in transactions]
        if not txs:
            return rendered(b"[]")
        return rendered((await self._off_loop(txs)).json())

    @bentoml.api
    def model_info(self) -> dict:
        """Which model is serving, since when, and the scorer's counters."""
        d, ro, cache = self.scorer.deployed, self.scorer.rollout, self.scorer.reader.cache
        rollout = {"candidate": ro.candidate.tag, "stage": ro.stage, "percent": ro.percent} if ro else None
        return {"model_version": d.tag if d else None, "promoted_at": d.promoted_at if d else None,
                "rollout": rollout, "pid": os.getpid(), "slow_header_closes": header_timeout.closed[0],
                "store_breaker_opened": self.scorer.breaker.opened, "score_on_event_loop": self.on_loop,
                "feature_cache": {k: getattr(cache, k) for k in ("hits", "misses", "dropped")} if cache else None,
                "batch_engine": d.engine.state if d and d.engine else "lightgbm",
                **self.scorer.counters}


FraudScorer.add_asgi_middleware(Guard)
