"""Online scoring shared by the endpoint and batch scoring: Feast online features, Vigil's own
freshness rule, the model, the decision policy and the prediction log.

It never imports dagster, and it is the only place that assembles a feature vector at serving
time; training assembles the same columns through :mod:`vigil.training` with the same
:func:`vigil.features.request_features`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from pydantic_core import to_json

from vigil import registry
from vigil.config import Paths
from vigil.feature_repo import (CardsLocked, IntradayBusy, IntradayStore, OnlineReader, SnapshotCache,
                                open_store, snapshot_marker)
from vigil.features import (FEATURE_VIEWS, INTRADAY_FEATURES, MODEL_FEATURES, REQUEST_FEATURES, epoch_seconds_of,
                            fresh_mask, intraday_batch, request_features)
from vigil.compiled import ServingEngine
from vigil.compiled import available as compiled_available
from vigil.model import FraudModel
from vigil.policy import DecisionPolicy
from vigil.prediction_log import PredictionLog, log_lines

log = logging.getLogger("vigil.scoring")
AVG_30D = MODEL_FEATURES.index("customer_avg_amount_30d")
STD_30D = MODEL_FEATURES.index("customer_std_amount_30d")
INTRADAY = MODEL_FEATURES.index(INTRADAY_FEATURES[0])
INTRADAY_CHUNK = 256  # a batch's cards whose lists are read, added to and written under one lock
STORE_BUDGET_PER_ROW_S = 0.0001  # a batch's store calls may take this much longer per row (SQLite: ~0.05 ms)
REASON_COLS = {f: MODEL_FEATURES.index(f) for f in ("customer_avg_amount_30d", "tx_amount", "terminal_risk_7d", "customer_nb_tx_30d")}


def utc_naive(dt: datetime) -> datetime:
    """Requests may carry an offset; the lake and the features are in naive UTC."""
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt


class ModelUnavailable(RuntimeError):
    """No model has been promoted to production yet."""


class TooLate(RuntimeError):
    """The request's deadline passed, or its client disconnected, before its predictions were
    logged: nothing is logged or returned (the client has given up; its retry is scored afresh).
    Its transactions may already be in their cards' intraday lists, where a retry of the same
    ``transaction_id`` is not added twice."""


class StoreBreaker:
    """After a failed or over-budget online-store call, requests skip the store for ``cooldown_s``
    (answered degraded at once, without waiting for a timeout); then one request at a time tries
    it again, and the first that succeeds closes the breaker. Without it, a store that times out
    costs every request its timeout: at 200 req/s and 250 ms a call, a worker falls behind by
    seconds within a second and every answer comes too late."""

    def __init__(self, cooldown_s: float, clock=time.monotonic):
        self.cooldown_s, self.clock = cooldown_s, clock
        self.open_until: float | None = None  # None: closed
        self.probing = False
        self.opened = 0  # times it opened, for /model_info
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            if self.open_until is None:
                return True
            if self.probing or self.clock() < self.open_until:
                return False
            self.probing = True  # this request is the probe; the others keep skipping
            return True

    def success(self) -> None:
        with self._lock:
            self.open_until, self.probing = None, False

    def failure(self) -> None:
        with self._lock:
            if self.open_until is None:
                self.opened += 1
            self.open_until, self.probing = self.clock() + self.cooldown_s, False

    def abandon(self) -> None:
        """An allowed request ended without a verdict (it will run again elsewhere)."""
        with self._lock:
            self.probing = False


class Answers(list):
    """:meth:`Scorer.score`'s answers (dicts), with each one's JSON as the log holds it
    (``rendered``): the endpoint sends those bytes instead of serialising the answers again."""

    def __init__(self, answers: list[dict], rendered: list[bytes]):
        super().__init__(answers)
        self.rendered = rendered

    def json(self) -> bytes:
        return b"[" + b",".join(self.rendered) + b"]"


@dataclass(frozen=True)
class Deployed:
    tag: str
    model: FraudModel
    policy: DecisionPolicy
    promoted_at: str
    engine: ServingEngine | None = None  # the booster compiled to native code, for batches

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The model's scores of ``x``: the compiled booster's for a batch once it is ready (the
        same scores, spot-checked against LightGBM on every batch), else LightGBM's."""
        out = self.engine.predict(x) if self.engine is not None else None  # None: a small batch, or not ready
        return self.model.predict(x) if out is None else out


@dataclass(frozen=True)
class Rollout:
    """A candidate beside the champion (``vigil.rollout``): shadow (scored and logged, never
    answers) or canary (answers for ``percent`` % of customers)."""

    stage: str
    percent: float
    candidate: Deployed
    log: object  # vigil.rollout.RolloutLog


class Scorer:
    def __init__(self, paths: Paths, store=None, log_predictions: bool = True, poll_seconds: float = 2.0,
                 store_timeout_s: float = 0.25, store_budget_s: float = 0.25, store_cooldown_s: float = 2.0,
                 feature_cache: int = 200_000, compiled: bool = False):
        """``compiled``: batches are scored by the booster compiled to native code once a child
        process has built it (:class:`vigil.compiled.ServingEngine`; needs lleaves, the 'batch' extra)."""
        self.paths = paths
        self.compiled = compiled and compiled_available()
        self.store = store or open_store(paths)
        self.store_budget_s, self.clock = store_budget_s, time.monotonic
        self.breaker = StoreBreaker(store_cooldown_s)

        self.reader = OnlineReader(self.store)
        self._bound_redis(store_timeout_s)
        self.intraday = IntradayStore(self.store, self.reader)
        self.checkpointer = None  # the local store's WAL checkpoints, on a thread of their own (Checkpointer)
        if self.local_store:
            self.checkpointer = self.reader.checkpoint_in_background()
        marker = snapshot_marker(self.store) if feature_cache and self.local_store else None
        if marker is not None:  # the snapshot rows in memory until a write replaces the marker (SnapshotCache)
            self.reader.cache = SnapshotCache(marker, feature_cache)
        # IntradayStore.exclusive serialises read-add-writes across threads too (each thread its own
        # SQLite connection; Redis lock keys per card), except on Feast's one shared SQLite connection
        self._intraday_lock = threading.Lock() if self.intraday.shares_connection else None
        self.log = PredictionLog(paths.predictions, features=MODEL_FEATURES) if log_predictions else None
        self.deployed: Deployed | None = None
        self.poll_seconds = poll_seconds
        self._pointer_seen: str | None = None
        self.rollout: Rollout | None = None
        self._last_error = ""
        self._alerted: set[tuple[str, str]] = set()
        self._rollout_seen: str | None = None
        self._stop = threading.Event()
        self.counters = {**{f"stale_{v.name}": 0 for v in FEATURE_VIEWS}, "scored": 0, "degraded": 0, "abandoned": 0,
                         "store_skipped": 0, "intraday_busy": 0}
        try:
            self.reload()
        except Exception as exc:  # a corrupt production model: not ready (503), retried at every poll
            self._log_once(f"model load failed ({exc}); not serving until a loadable model is promoted")

    @property
    def local_store(self) -> bool:
        """The online store is a SQLite file on this host, read and written by Vigil's own SQL: a
        call is tens of microseconds of CPU, no network wait (the endpoint's event loop may make it)."""
        return self.intraday._sqlite()

    def _bound_redis(self, timeout_s: float) -> None:
        """A slow, silent or refusing Redis costs a request at most ``timeout_s`` per call and one
        immediate retry, then a degraded answer: never redis-py's default retries with backoff
        (3.5 s for a refused connection), never a hang."""
        online = self.store.config.online_store
        if getattr(online, "type", "") != "redis":
            return
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if "socket_timeout" not in online.connection_string:
            online.connection_string += f",socket_timeout={timeout_s},socket_connect_timeout={timeout_s}"
        client = self.reader.online_store._get_client(online)
        client.set_retry(Retry(NoBackoff(), 1))

    # -- model lifecycle -------------------------------------------------------------------
    def reload(self) -> bool:
        """Load the production model if the pointer moved, and the rollout's candidate if the
        rollout moved; each swap is one assignment (no request waits, none fails)."""
        try:
            self.reload_rollout()
        except Exception as exc:  # a broken rollout must not stop production promotions
            self._log_once(f"rollout reload failed ({exc}); the champion keeps answering")
        # the pointer's content, not its modification time: an object store's is whole seconds, and
        # two promotions can fall in one second; the file is a few hundred bytes
        text = registry.read_pointer(self.paths)
        if text is None or text == self._pointer_seen:
            return False
        entry = json.loads(text)
        if self.deployed is None or entry["tag"] != self.deployed.tag:
            model, policy, _ = self._load(entry["tag"])
            self.deployed = Deployed(entry["tag"], model, policy, entry["at"], self._engine(model))
            log.info("serving model %s", entry["tag"])
        self._pointer_seen = text
        return True

    def reload_rollout(self) -> None:
        from vigil import rollout

        try:  # by content, as the pointer
            text = rollout.state_path(self.paths).read_text()
        except FileNotFoundError:
            if self.rollout is not None:
                log.info("rollout of %s ended", self.rollout.candidate.tag)
                old, self.rollout, self._rollout_seen = self.rollout, None, None
                old.log.close()
            return
        if text == self._rollout_seen:
            return
        state = json.loads(text)
        current = self.rollout
        if current is not None and current.candidate.tag == state["candidate"]:
            cand, rlog = current.candidate, current.log
        else:
            model, policy, _ = self._load(state["candidate"])
            cand = Deployed(state["candidate"], model, policy, state["started_at"], self._engine(model))
            rlog = rollout.RolloutLog(rollout.log_folder(self.paths, state["candidate"]))
        self.rollout = Rollout(state["stage"], float(state["percent"]), cand, rlog)
        self._rollout_seen = text
        log.info("rollout: %s at %s %s %%", cand.tag, state["stage"], state["percent"])

    def _engine(self, model: FraudModel) -> ServingEngine | None:
        return ServingEngine(model, self.paths.models / "compiled") if self.compiled else None

    def _alert(self, name: str, episode: str, summary: str, details: dict) -> None:
        """Raise an alert once per (name, episode) in this process, off the request path (a slow
        webhook must not slow scoring); the alerter dedupes across processes."""
        if (name, episode) in self._alerted:
            return
        if len(self._alerted) > 1_000:
            self._alerted.clear()
        self._alerted.add((name, episode))

        def send():
            from vigil.alerts import Alert, alerter_for

            try:
                alerter_for(self.paths.root).raise_alert(Alert(name, episode, summary, details))
            except Exception as exc:
                log.warning("alert %s could not be raised: %s", name, exc)

        threading.Thread(target=send, name=f"vigil-alert-{name}", daemon=True).start()

    def _load(self, tag: str):
        try:
            return registry.load(self.paths, tag)
        except registry.CorruptModel as exc:
            self._alert("model_refused", tag, f"the endpoint refused model {tag}", {"model": tag, "why": str(exc)})
            raise

    def _log_once(self, message: str) -> None:
        """A failure that repeats every poll is logged once, not every 2 s (bounded log volume)."""
        if message != self._last_error:
            self._last_error = message
            log.error(message)

    def watch(self) -> threading.Thread:
        def loop():
            while not self._stop.wait(self.poll_seconds):
                try:
                    self.reload()
                except Exception as exc:  # a broken promotion must not take serving down
                    self._log_once(f"model reload failed ({exc}); still serving {self.deployed and self.deployed.tag}")

        t = threading.Thread(target=loop, name="vigil-model-watch", daemon=True)
        t.start()
        return t

    def close(self) -> None:
        self._stop.set()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if self.rollout is not None:
            self.rollout.log.close()
        if self.log:
            self.log.close()

    # -- features --------------------------------------------------------------------------
    def assemble(self, requests: list[dict], wait: bool = True, check=None) -> tuple[np.ndarray, list[list[str]], bool]:
        """Feature matrix in ``MODEL_FEATURES`` order; stale or missing snapshots become NaN. When
        the online store cannot be read, every view is missing (NaN, the value the model was trained
        to see for "no snapshot") and the batch is ``degraded``: answered, flagged, never failed.
        After the first failed store call the request makes no other, nor once its store calls have
        taken ``store_budget_s``: a slow store costs one call's timeout (and its one retry) and the
        budget, not one timeout per call; and then :class:`StoreBreaker` spares the next requests
        even that. ``wait=False``: :class:`IntradayBusy` (nothing written, nothing counted) when
        another thread or worker holds the cards' lists."""
        n = len(requests)
        epoch = epoch_seconds_of([r["tx_datetime"] for r in requests])
        amount = np.array([r["tx_amount"] for r in requests], dtype=np.float64)
        x = np.full((n, len(MODEL_FEATURES)), np.nan)
        stale: list[list[str]] = [[] for _ in range(n)]
        stale_counts = {}
        allowed = self.breaker.allow()
        degraded, verdict = not allowed, False
        t0, budget = self.clock(), self.store_budget_s + n * STORE_BUDGET_PER_ROW_S

        def fail(what: str, exc: Exception | None) -> None:
            nonlocal degraded, verdict
            why = f"{type(exc).__name__}: {exc}" if exc is not None else f"over the request's {budget * 1000:g} ms budget"
            self._log_once(f"online store {what} failed ({why}); scoring degraded, without its features")
            degraded = verdict = True
            self.breaker.failure()

        def in_budget(what: str) -> bool:
            if self.clock() - t0 <= budget:
                return True
            fail(what, None)
            return False

        try:
            first = offset = len(REQUEST_FEATURES)
            for spec in FEATURE_VIEWS:  # MODEL_FEATURES order: request-time, then each view's features
                names = spec.features
                got = None
                if not degraded and in_budget(f"read of {spec.name}"):
                    try:
                        got = self.reader.read_matrix(spec.name, [r[spec.key] for r in requests], names + (spec.asof,))
                    except Exception as exc:  # the store is down, refuses or is too slow: a defined answer, not a 500
                        fail(f"read of {spec.name}", exc)
                if got is None:
                    got = np.full((n, len(names) + 1), np.nan)
                fresh = fresh_mask(got[:, -1], epoch)
                x[fresh, offset : offset + len(names)] = got[fresh, :-1]
                for i in np.flatnonzero(~fresh):
                    stale[i].append(spec.name)
                stale_counts[spec.name] = int(n - fresh.sum())
                offset += len(names)
            x[:, :first] = request_features(epoch, amount, x[:, AVG_30D], x[:, STD_30D])
            nothing_today = (0.0, 0.0, 0.0, np.nan)  # the intraday features of "nothing earlier today"
            today = None
            if not degraded and in_budget("intraday step"):
                try:
                    today = self.intraday_step(requests, epoch, amount, wait, check)
                except (IntradayBusy, TooLate):
                    raise
                except CardsLocked as exc:  # a few cards held by another worker: this request only, the store is well
                    self._log_once(f"online store intraday step: {exc}; scoring degraded, without its features")
                    degraded = True
                except Exception as exc:
                    fail("intraday step", exc)
            x[:, INTRADAY:INTRADAY + len(INTRADAY_FEATURES)] = nothing_today if today is None else today
            if allowed and not verdict:  # every call answered (CardsLocked included)
                self.breaker.success()
                verdict = True
        finally:
            if allowed and not verdict:  # IntradayBusy or a bug: no verdict on the store
                self.breaker.abandon()
        for view, k in stale_counts.items():
            self.counters[f"stale_{view}"] += k
        if not allowed:
            self.counters["store_skipped"] += n
        if degraded:
            self.counters["degraded"] += n
            self._alert("serving_degraded", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H"),
                        f"the endpoint cannot read the online store: {self._last_error[:300]}",
                        {"requests_degraded_so_far": self.counters["degraded"], "pid": os.getpid()})
        return x, stale, degraded

    def intraday_step(self, requests: list[dict], epoch: np.ndarray, amount: np.ndarray, wait: bool = True,
                      check=None) -> np.ndarray:
        """The intraday features of each request from its card's list of today's transactions in the
        online store, then the list with the request added, written back: the next request of the
        card sees this one. Requests of one card in one batch see each other in order.
        A batch's cards take their turn INTRADAY_CHUNK cards at a time (each card's rows in one
        chunk, in order): a /score for another card waits for one chunk, not for the whole batch
        (with the lists held for all of a 10,000-row batch, /score's p50 during back-to-back
        batches was 70 ms, benchmarks/README.md); between two chunks the batch leaves the lists
        to whoever waits for them (:meth:`IntradayStore.yield_to_waiters`), or it would take them
        again before any waiter tried.
        ``wait=False`` (one chunk: the endpoint's single requests): :class:`IntradayBusy`, nothing
        written, rather than wait for another thread or worker. ``check`` runs before each chunk
        after the first (:class:`TooLate` once the request's deadline has passed or its client has
        gone: each chunk may wait up to INTRADAY_SQLITE_WAIT_S for the lists, and a batch has 40)."""
        cards = [int(r["customer_id"]) for r in requests]
        tx_ids, eps, amts = [int(r["transaction_id"]) for r in requests], epoch.tolist(), amount.tolist()
        unique = list(dict.fromkeys(cards))
        if len(unique) <= INTRADAY_CHUNK or not wait:
            return self._intraday_chunk(unique, cards, tx_ids, eps, amts, wait)
        chunk_of = {c: k // INTRADAY_CHUNK for k, c in enumerate(unique)}
        rows: list[list[int]] = [[] for _ in range(-(-len(unique) // INTRADAY_CHUNK))]
        for i, c in enumerate(cards):
            rows[chunk_of[c]].append(i)
        out = np.empty((len(cards), len(INTRADAY_FEATURES)))
        for k, idx in enumerate(rows):
            if k:
                self.intraday.yield_to_waiters()  # a /score waiting for the lists takes them now, not after the batch
                if check is not None:
                    check()
            out[idx] = self._intraday_chunk(unique[k * INTRADAY_CHUNK:(k + 1) * INTRADAY_CHUNK], [cards[i] for i in idx],
                                            [tx_ids[i] for i in idx], [eps[i] for i in idx], [amts[i] for i in idx], wait)
        return out

    def _intraday_chunk(self, unique: list[int], cards: list[int], tx_ids: list[int], eps: list[int], amts: list[float],
                        wait: bool) -> np.ndarray:
        lock = self._intraday_lock
        if lock is not None and not lock.acquire(blocking=wait):
            raise IntradayBusy("another thread of this worker holds the intraday lists")
        try:
            with self.intraday.exclusive(unique, wait):  # other threads and workers
                states = dict(zip(unique, self.intraday.read(unique)))
                out, changed = intraday_batch(states, cards, tx_ids, eps, amts)
                self.intraday.write(changed)
        finally:
            if lock is not None:
                lock.release()
        return out

    # -- scoring ---------------------------------------------------------------------------
    def _give_up_if_late(self, n: int, deadline: float | None, gone: threading.Event | None) -> None:
        why = ("its client disconnected" if gone is not None and gone.is_set()
               else "past the request's deadline" if deadline is not None and time.monotonic() > deadline else "")
        if why:
            self.counters["abandoned"] += n
            raise TooLate(f"{n} predictions abandoned, {why}; not logged, not returned")

    def score(self, requests: list[dict], deadline: float | None = None, gone: threading.Event | None = None,
              wait: bool = True) -> list[dict]:
        """Scores, decisions and reasons for ``requests``, logged before they are returned.
        Past ``deadline`` (``time.monotonic()``) or once ``gone`` is set (the client disconnected):
        :class:`TooLate`, checked before the features, before the model and before the log.
        ``wait=False``: :class:`IntradayBusy`, with nothing written, logged or counted, rather than
        wait for another thread or worker (the endpoint then scores it again on a thread)."""
        deployed = self.deployed
        if deployed is None:
            raise ModelUnavailable("no model promoted to production yet; run the retraining job")
        ro = self.rollout  # one read: a step that moves mid-request does not split this batch
        t0 = time.perf_counter()
        self._give_up_if_late(len(requests), deadline, gone)  # queued behind others while its client left
        if any(r["tx_datetime"].tzinfo is not None for r in requests):  # the endpoint's are naive UTC already
            requests = [{**r, "tx_datetime": utc_naive(r["tx_datetime"])} for r in requests]
        x, stale, degraded = self.assemble(requests, wait, check=lambda: self._give_up_if_late(len(requests), deadline, gone))
        self._give_up_if_late(len(requests), deadline, gone)
        request_id = uuid.uuid4().hex
        t1 = time.perf_counter()
        scores = deployed.predict(x)
        n = len(requests)
        model_ms = (time.perf_counter() - t1) * 1000 / n  # per row: batches of any size compare
        answer = [deployed] * n
        variant = ["champion"] * n
        shadow, shadow_ms, cand_error, champion_score = None, None, [False] * n, None
        if ro is not None:
            from vigil.rollout import variant_of

            if ro.stage == "shadow":
                picked = np.arange(n)
            else:
                picked = np.array([i for i, r in enumerate(requests)
                                   if variant_of(r["customer_id"], ro.percent, ro.candidate.tag) == "candidate"], dtype=int)
            if len(picked):
                t2 = time.perf_counter()
                try:
                    cand_scores = ro.candidate.predict(x[picked])
                except Exception:  # a broken candidate never fails a request: the champion answers
                    log.exception("candidate %s failed to score; the champion answered", ro.candidate.tag)
                    cand_scores = None
                shadow_ms = (time.perf_counter() - t2) * 1000 / len(picked)
                for j, i in enumerate(picked):
                    if ro.stage != "shadow":
                        variant[i] = "candidate"
                    if cand_scores is None or not np.isfinite(cand_scores[j]):
                        cand_error[i] = True
                    elif ro.stage == "shadow":
                        shadow = shadow if shadow is not None else {}
                        shadow[i] = float(cand_scores[j])
                    else:
                        champion_score = champion_score if champion_score is not None else {}
                        champion_score[i] = float(scores[i])  # the same row, both models: a paired comparison
                        scores[i], answer[i] = cand_scores[j], ro.candidate
        named = lambda i: {f: None if v != v else v for f, v in zip(MODEL_FEATURES, x[i].tolist())}  # noqa: E731
        out, s_list = [], scores.tolist()
        if n >= 64:  # numpy's per-call overhead pays off from a few dozen rows on
            decisions = deployed.policy.decide_many(scores).tolist()
            reasons = deployed.policy.reasons_many(scores, {f: x[:, REASON_COLS[f]] for f in REASON_COLS}, stale)
        else:
            decisions = [deployed.policy.decide(v) for v in s_list]
            reasons = [deployed.policy.reasons(v, named(i), st) for i, (v, st) in enumerate(zip(s_list, stale))]
        for i, r in enumerate(requests):
            if answer[i] is not deployed:  # a canary's rows: the candidate's own policy
                decisions[i] = answer[i].policy.decide(s_list[i])
                reasons[i] = answer[i].policy.reasons(s_list[i], named(i), stale[i])
            out.append({
                "transaction_id": r["transaction_id"],
                "fraud_score": s_list[i],
                "decision": decisions[i],
                "reasons": reasons[i] + ["ONLINE_STORE_UNAVAILABLE"] if degraded else reasons[i],
                "stale_features": stale[i],
                "degraded": degraded,
                "model_version": answer[i].tag,
                "variant": variant[i],
                "request_id": request_id,
            })
        latency_ms = round((time.perf_counter() - t0) * 1000, 3)
        for resp in out:
            resp["latency_ms"] = latency_ms
        rendered = [to_json(resp) for resp in out]  # once, for the response and the log
        self._give_up_if_late(len(requests), deadline, gone)
        if self.log:
            served_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            tx_iso = [r["tx_datetime"].isoformat() for r in requests]
            self.log.append_lines([d[:10] for d in tx_iso], log_lines(
                rendered, [r["customer_id"] for r in requests], [r["terminal_id"] for r in requests], tx_iso, x, served_at))
        if ro is not None:
            served_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            rows = []
            for i, (resp, r) in enumerate(zip(out, requests)):
                row = {"served_at": served_at, "transaction_id": r["transaction_id"], "customer_id": r["customer_id"],
                       "variant": variant[i], "fraud_score": resp["fraud_score"], "decision": resp["decision"],
                       "model_ms": model_ms if answer[i] is deployed else shadow_ms, "candidate_error": cand_error[i]}
                if shadow is not None and i in shadow:
                    row.update(shadow_score=shadow[i], shadow_decision=ro.candidate.policy.decide(shadow[i]),
                               shadow_ms=shadow_ms)
                if champion_score is not None and i in champion_score:
                    row.update(champion_score=champion_score[i],
                               champion_decision=deployed.policy.decide(champion_score[i]))
                rows.append(row)
            ro.log.append(rows)
        self.counters["scored"] += len(requests)
        return Answers(out, rendered)
