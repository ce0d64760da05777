"""The endpoint's front door: an ASGI middleware in front of BentoML's routes.

Why here and not in the handlers: everything a hostile client can make grow must be bounded before
BentoML reads the body — the path (unknown paths are a 404, so metrics never see a raw path), the
key (401), the rate (429), the content type (415), the body's size and the time it takes to arrive
(413, 408), the batch's length (413) — and a client's mistake must be a one-line INFO log and a
short 400 naming the field, never an ERROR with a traceback. A valid body is handed to BentoML
unchanged, so the typed ``@bentoml.api`` methods and their OpenAPI stay the single definition.

Only ``/livez``, ``/readyz`` and ``/healthz`` answer without a key; ``/metrics``, ``/model_info``
and the OpenAPI need one like scoring does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from contextvars import ContextVar
from http import HTTPStatus
from pathlib import Path

import anyio
from bentoml.exceptions import BentoMLException
from pydantic import TypeAdapter, ValidationError

from serving.schema import BatchFields, Transaction
from vigil import api_keys
from vigil.settings import Settings

log = logging.getLogger("vigil.serving.guard")
PUBLIC = frozenset({"/livez", "/readyz", "/healthz"})
ROUTES = frozenset({"/score", "/score_batch", "/model_info", "/metrics", "/docs.json", "/", "/docs"}) | PUBLIC
SCORING = {"/score": TypeAdapter(Transaction), "/score_batch": TypeAdapter(BatchFields)}
METHODS = {"/score": "POST", "/score_batch": "POST", "/model_info": "POST"}  # everything else: GET (and HEAD)
OBJECT = TypeAdapter(dict)
MAX_ERRORS = 5
# set when the client of the request in this context has gone (the handler's thread sees it:
# anyio copies the context into BentoML's worker threads); the scorer then drops the work
CLIENT_GONE: ContextVar[threading.Event | None] = ContextVar("vigil_client_gone", default=None)
# a /score_batch body the guard has validated (serving.schema.BatchFields: the rules of the Batch the handler declares):
# BentoML is handed an empty batch instead of parsing and validating 10,000 items a second time, on
# the event loop (26 ms a 10,000-item batch); the handler takes the transactions from here
VALIDATED_BATCH: ContextVar[list | None] = ContextVar("vigil_validated_batch", default=None)
EMPTY_BATCH = b'{"transactions": []}'
# /score answered by the guard itself once it has validated the body: the service registers its
# scoring coroutine here when it starts (FraudScorer.__init__), which takes the validated fields
# and returns the answer's JSON. BentoML's request path (routing, reading and validating the body
# a second time, calling the method) was ~a third of the server's CPU a /score
# (benchmarks/README.md); the typed @bentoml.api method stays, the same coroutine behind it, for
# the OpenAPI and for a service whose scorer is not registered.
DIRECT: dict = {}
EXTRA_RESPONSES = {
    "400": "a field breaks the request schema (detail names at most the first 5)",
    "401": "no API key, or an unknown one (Authorization: Bearer <key>, or X-API-Key)",
    "408": "the body did not arrive within VIGIL_SERVING_BODY_TIMEOUT seconds",
    "413": "body over VIGIL_SERVING_MAX_BODY_BYTES, or a batch over VIGIL_SERVING_MAX_BATCH items",
    "415": "Content-Type is not application/json",
    "429": "over VIGIL_SERVING_RATE_LIMIT requests per second for this key; see Retry-After",
    "503": "no model promoted yet",
}


class Refused(Exception):
    def __init__(self, status: int, error: str, detail: str = "", headers: dict | None = None):
        super().__init__(error)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers or {}


def describe(exc: ValidationError) -> str:
    """The first few problems, each with its field path: short, whatever the client sent."""
    parts = []
    for e in exc.errors(include_url=False, include_context=False, include_input=False)[:MAX_ERRORS]:
        where = ".".join(str(p) for p in e["loc"]) or "body"
        parts.append(f"{where}: {e['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


class LogBudget:
    """At most ``per_second`` client-error lines a second; the rest are counted and summed up in
    one line, so a flood of bad requests cannot grow the log faster than that."""

    def __init__(self, per_second: int = 20):
        self.per_second, self.second, self.used, self.dropped = per_second, 0, 0, 0

    def allow(self) -> tuple[bool, int]:
        """(log this line?, lines dropped in the previous second to report first)."""
        now, report = int(time.monotonic()), 0
        if now != self.second:
            self.second, self.used, report, self.dropped = now, 0, self.dropped, 0
        self.used += 1
        if self.used > self.per_second:
            self.dropped += 1
            return False, report
        return True, report


class Bucket:
    """A token bucket per key: ``rate`` requests a second, bursts up to one second's worth."""

    def __init__(self, rate: float):
        self.rate, self.tokens, self.at = float(rate), float(rate), time.monotonic()

    def take(self) -> float:
        """0 when allowed, else the seconds until a token is there."""
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Guard:
    def __init__(self, app, settings: Settings | None = None, metrics=None):
        self.app = app
        self.settings = settings or Settings.from_env()
        self.keys_file: Path = self.settings.keys_file()
        self._ring, self._ring_mtime, self._ring_checked = api_keys.KeyRing({}), None, 0.0
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()
        self.metrics = metrics if metrics is not None else RouteMetrics()
        self.log_budget = LogBudget()

    # -- keys -------------------------------------------------------------------------------
    def ring(self) -> api_keys.KeyRing:
        """The key file, reread when it changed (checked at most once a second)."""
        now = time.monotonic()
        if now - self._ring_checked >= 1.0:
            self._ring_checked = now
            try:
                mtime = self.keys_file.stat().st_mtime_ns
            except FileNotFoundError:
                mtime = None
            if mtime != self._ring_mtime:
                try:
                    self._ring = api_keys.KeyRing.load(self.keys_file) if mtime else api_keys.KeyRing({})
                    self._ring_mtime = mtime
                    log.info("API keys: %d loaded from %s", len(self._ring.names), self.keys_file)
                except api_keys.KeyError_ as exc:  # keep the last good ring, say why once
                    self._ring_mtime = mtime
                    log.error("%s; keeping the %d keys loaded before", exc, len(self._ring.names))
        return self._ring

    def authorise(self, headers: dict[bytes, bytes]) -> str:
        raw = headers.get(b"authorization", b"").decode("latin-1")
        presented = raw[7:].strip() if raw[:7].lower() == "bearer " else headers.get(b"x-api-key", b"").decode("latin-1")
        name = self.ring().check(presented)
        if name is None:
            raise Refused(401, "missing or unknown API key",
                          "send Authorization: Bearer <key> (create one with: vigil keys create NAME)",
                          {"www-authenticate": "Bearer"})
        with self._lock:
            bucket = self._buckets.setdefault(name, Bucket(self.settings.serving_rate_limit))  # bounded: keys are
            wait = bucket.take()
        if wait:
            raise Refused(429, "rate limit exceeded", f"over {self.settings.serving_rate_limit} requests/s for key {name!r}",
                          {"retry-after": str(max(1, round(wait)))})
        return name

    # -- body -------------------------------------------------------------------------------
    async def read_body(self, headers: dict[bytes, bytes], receive) -> bytes:
        limit = self.settings.serving_max_body_bytes
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media != b"application/json":
            raise Refused(415, "unsupported media type", f"Content-Type must be application/json, got {media.decode('latin-1')[:60]!r}")
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise Refused(413, "request body too large", f"at most {limit} bytes (VIGIL_SERVING_MAX_BODY_BYTES)")
        chunks, size = [], 0
        try:
            # asyncio's own timeout: 4 us a request on the event loop against anyio.fail_after's 11
            async with asyncio.timeout(self.settings.serving_body_timeout):
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        raise Refused(499, "client disconnected")
                    chunk = msg.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise Refused(413, "request body too large", f"at most {limit} bytes (VIGIL_SERVING_MAX_BODY_BYTES)")
                    chunks.append(chunk)
                    if not msg.get("more_body", False):
                        break
        except TimeoutError:
            raise Refused(408, "request body timeout", f"the body did not arrive within {self.settings.serving_body_timeout} s") from None
        return b"".join(chunks)

    def validate(self, path: str, body: bytes):
        """The parsed body (a ``BatchFields`` dict, a ``Transaction``, a dict) when valid; a Refused saying why otherwise."""
        try:
            parsed = SCORING.get(path, OBJECT).validate_json(body)
        except ValidationError as exc:
            raise Refused(400, f"{exc.error_count()} invalid field(s)", describe(exc)) from None
        n = len(parsed["transactions"]) if path == "/score_batch" else 1
        if n > self.settings.serving_max_batch:
            raise Refused(413, "batch too large", f"{n} transactions; at most {self.settings.serving_max_batch} "
                          "(VIGIL_SERVING_MAX_BATCH)")
        return parsed

    async def call_watched(self, scope, replay, receive, send):
        """BentoML's handler, while a task waits for the client to disconnect: if it does, the
        request's ``CLIENT_GONE`` event is set and the scorer drops the work (not scored further,
        not logged; a retry with the same transaction ids is scored afresh)."""
        gone = threading.Event()
        token = CLIENT_GONE.set(gone)

        async def watch():
            while (await receive())["type"] != "http.disconnect":
                await anyio.sleep(0.05)  # a server that answers receive() without waiting must not spin
            gone.set()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                try:
                    return await self.app(scope, replay, send)
                finally:
                    tg.cancel_scope.cancel()  # answered (or failed): stop watching
        finally:
            CLIENT_GONE.reset(token)

    # -- ASGI -------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, t0, status = scope["path"], time.perf_counter(), [0]

        async def counted_send(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        route = path if path in ROUTES else "other"
        try:
            if path in PUBLIC:
                return await self.app(scope, receive, counted_send)
            if path not in ROUTES:
                raise Refused(404, "not found", "routes: /score, /score_batch, /model_info, /metrics, /docs.json")
            allowed = METHODS.get(path, "GET")
            if scope["method"] != allowed and not (allowed == "GET" and scope["method"] == "HEAD"):
                raise Refused(405, "method not allowed", f"{path} takes {allowed}", {"allow": allowed})
            headers = dict(scope["headers"])
            self.authorise(headers)
            if path == "/metrics" and self.metrics is not None:
                return await self.metrics(scope, receive, counted_send)
            if path == "/docs.json":
                return await self.patched_openapi(scope, receive, counted_send)
            if allowed == "GET":
                return await self.app(scope, receive, counted_send)
            body = await self.read_body(headers, receive)
            if len(body) > 65_536:  # a big batch: validated off the event loop, other requests keep flowing
                parsed = await anyio.to_thread.run_sync(self.validate, path, body)
            else:
                parsed = self.validate(path, body)
            if path == "/score_batch" and parsed["transactions"]:
                body = EMPTY_BATCH  # validated once: BentoML parses a placeholder, the handler reads VALIDATED_BATCH
                batch_token = VALIDATED_BATCH.set(parsed["transactions"])
            sent = [False]

            async def replay():
                if not sent[0]:
                    sent[0] = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # then the real stream: a disconnect reaches BentoML

            if path == "/score_batch":  # seconds of work: dropped when its client leaves
                try:
                    return await self.call_watched(scope, replay, receive, counted_send)
                finally:
                    if body is EMPTY_BATCH:
                        VALIDATED_BATCH.reset(batch_token)
            # /score is a few ms: a watcher task would cost ~70-110 us of event-loop time a request
            # (benchmarks/guard_watch.py) to save less; its deadline still bounds it
            direct = DIRECT.get(path)
            if direct is None:
                return await self.app(scope, replay, counted_send)
            try:
                content = await direct(parsed.__dict__)
            except Exception as exc:  # as BentoML answers a BentoMLException (503: no model, too late), else a 500
                code = int(exc.error_code) if isinstance(exc, BentoMLException) else 500
                if code == 500 and self.log_budget.allow()[0]:  # a bug: its traceback, within the log budget
                    log.error("%s failed", path, exc_info=exc)
                raise Refused(code, HTTPStatus(code).phrase.lower(), str(exc)[:300] if code != 500 else "") from None
            await counted_send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]})
            await counted_send({"type": "http.response.body", "body": content})
            return None
        except Refused as exc:
            status[0] = exc.status
            if exc.status == 499:  # nobody to answer
                return None
            allowed, dropped = self.log_budget.allow()
            if dropped:
                log.info("%d more client errors in the last second, not logged one by one", dropped)
            if allowed:
                log.info("%d %s %s: %s%s", exc.status, scope["method"], route, exc.error, f" ({exc.detail})" if exc.detail else "")
            await self.answer(send, exc)
        finally:
            if self.metrics is not None:
                self.metrics.observe(route, status[0], time.perf_counter() - t0)

    @staticmethod
    async def answer(send, exc: Refused) -> None:
        body = json.dumps({"error": exc.error, "detail": exc.detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in exc.headers.items()]
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def patched_openapi(self, scope, receive, send):
        """BentoML's OpenAPI document, plus the guard's answers and its security scheme."""
        start, chunks = {}, []

        async def capture(msg):
            if msg["type"] == "http.response.start":
                start.update(msg)
            else:
                chunks.append(msg.get("body", b""))

        await self.app(scope, receive, capture)
        try:
            doc = json.loads(b"".join(chunks))
            doc = openapi(doc)
            body = json.dumps(doc).encode()
        except ValueError:
            body = b"".join(chunks)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({"type": "http.response.start", "status": start.get("status", 200),
                    "headers": headers + [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def as_openapi_30(node):
    """JSON Schema 2020-12 idioms BentoML and pydantic emit, in the OpenAPI 3.0 form the document
    declares: ``anyOf [X, {type: null}]`` is X with ``nullable``; a numeric ``exclusiveMinimum`` is
    ``minimum`` with ``exclusiveMinimum: true``; ``const`` is a one-value ``enum``."""
    if isinstance(node, list):
        return [as_openapi_30(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            node.pop(key)
            if len(rest) == 1:
                node = {**rest[0], **node}
            else:
                node[key] = rest
            node["nullable"] = True
    node = {k: as_openapi_30(v) for k, v in node.items()}
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node.get(bound), bool):
            node[plain], node[bound] = node[bound], True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("type") == "null":
        node.pop("type")
        node["nullable"] = True
    return node


def openapi(doc: dict) -> dict:
    """Add what the guard answers to every scoring operation, and the key as a security scheme."""
    doc = as_openapi_30(doc)
    comps = doc.setdefault("components", {})
    comps.setdefault("schemas", {})["ClientError"] = {
        "type": "object", "required": ["error", "detail"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}
    comps.setdefault("securitySchemes", {})["apiKey"] = {"type": "http", "scheme": "bearer"}
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ClientError"}}}}
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            if "requestBody" in op:
                op["requestBody"]["required"] = True
            if path not in PUBLIC:
                op["security"] = [{"apiKey": []}]
                for code, text in EXTRA_RESPONSES.items():
                    op["responses"][code] = {"description": text, **ref}
    return doc


class RouteMetrics:
    """Requests and latency by route template (a fixed set: unknown paths count as ``other``) and
    status code, and the ``/metrics`` page itself (BentoML's own metrics, which label by raw path,
    are switched off in the service)."""

    _made: dict = {}

    def __init__(self):
        import bentoml

        if RouteMetrics._made:  # one set per process: Prometheus refuses a metric registered twice
            self.requests, self.seconds = RouteMetrics._made["requests"], RouteMetrics._made["seconds"]
            return
        self.requests = bentoml.metrics.Counter(name="vigil_http_requests", documentation="HTTP requests by route and status",
                                                labelnames=["route", "code"])
        self.seconds = bentoml.metrics.Histogram(name="vigil_http_request_seconds", labelnames=["route"],
                                                 documentation="time from the request to the response, by route",
                                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0))
        RouteMetrics._made.update(requests=self.requests, seconds=self.seconds)

    def observe(self, route: str, code: int, seconds: float) -> None:
        self.requests.labels(route=route, code=str(code)).inc()
        self.seconds.labels(route=route).observe(seconds)

    async def __call__(self, scope, receive, send):
        from bentoml._internal.configuration.containers import BentoMLContainer

        client = BentoMLContainer.metrics_client.get()
        body = await anyio.to_thread.run_sync(client.generate_latest)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", client.CONTENT_TYPE_LATEST.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
