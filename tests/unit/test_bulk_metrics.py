"""Batch metric updates expose exactly what one update per row exposes."""

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from serving.bulk_metrics import count_many, observe_many

BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.5, 0.8, 0.95, 1.0)


def exposition(update) -> dict[str, float]:
    """Every sample but the creation times, by name and labels."""
    reg = CollectorRegistry()
    h = Histogram("score", "s", buckets=BUCKETS, registry=reg)
    c = Counter("decisions", "d", labelnames=["decision"], registry=reg)
    update(h, c)
    lines = generate_latest(reg).decode().splitlines()
    return {k: float(v) for k, _, v in (ln.rpartition(" ") for ln in lines if not ln.startswith("#") and "_created" not in ln)}


def test_bulk_updates_expose_what_row_by_row_updates_expose():
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.random(5_000), list(BUCKETS), [0.0, 1.0, 1.0 + 1e-9, 7.5]])  # edges and +Inf
    decisions = rng.choice(["approve", "review", "decline"], size=len(scores)).tolist()

    def one_by_one(h, c):
        for s, d in zip(scores.tolist(), decisions):
            h.observe(s)
            c.labels(decision=d).inc()

    def bulk(h, c):
        observe_many(h, scores)
        count_many(c, "decision", decisions)

    want, got = exposition(one_by_one), exposition(bulk)
    assert want['score_bucket{le="+Inf"}'] == 5012 and want['score_bucket{le="1.0"}'] == 5010
    assert got.pop("score_sum") == pytest.approx(want.pop("score_sum"), rel=1e-12)  # summed in another order
    assert got == want


def test_empty_batch_changes_nothing():
    assert exposition(lambda h, c: (observe_many(h, []), count_many(c, "decision", []))) == exposition(lambda h, c: None)
