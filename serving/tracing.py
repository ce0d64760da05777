"""BentoML's OpenTelemetry middleware: off unless asked for.

BentoML wraps every request in OpenTelemetry's ASGI middleware, which makes a span for the request
and one for each message received and sent even when nothing is sampled (BentoML's default sample
rate is 0, with no exporter). On the benchmark machine a bare BentoML service answered 1,644-1,677
requests/s with it and 2,069-2,633 with it skipped (``wrk``, 8 connections; benchmarks/README.md).
So every route skips it unless ``VIGIL_SERVING_TRACING=on``; then BentoML's own tracing
configuration (exporter, sample rate, excluded URLs) applies, as BentoML documents it.
"""

from __future__ import annotations

from vigil.settings import Settings

EVERY_ROUTE = [".*"]  # OpenTelemetry's excluded URLs are regular expressions searched in the URL


def tracing_config(settings: Settings) -> dict:
    """The ``@bentoml.service`` keyword arguments for ``settings.serving_tracing``."""
    return {} if settings.serving_tracing == "on" else {"tracing": {"excluded_urls": EVERY_ROUTE}}
