"""Vigil's service with ``/score`` as an ``async`` handler, for ``benchmarks/serving.py`` to
measure sync against async without touching ``serving/``: the same class (``__init__``, the
scorer, ``/score_batch``, the guard, the workers and threads settings), only ``score`` redefined to
run ``Scorer.score`` on the event loop instead of BentoML's thread pool.

    python -m bentoml serve benchmarks.vigil_async:FraudScorerAsync --working-dir .
"""

from __future__ import annotations

import bentoml

from serving.guard import Guard
from serving.schema import Amount, Id, Score, Timestamp
from serving.service import FraudScorer, rendered


@bentoml.service(**{**FraudScorer.config, "name": "vigil_fraud_async"})
class FraudScorerAsync(FraudScorer.inner):
    @bentoml.api
    async def score(self, transaction_id: Id, tx_datetime: Timestamp, customer_id: Id, terminal_id: Id,
                    tx_amount: Amount) -> Score:
        """Score one transaction (on the event loop: no thread-pool hop)."""
        tx = {"transaction_id": transaction_id, "tx_datetime": tx_datetime, "customer_id": customer_id,
              "terminal_id": terminal_id, "tx_amount": tx_amount}
        return rendered(self._score([tx])[0])


FraudScorerAsync.add_asgi_middleware(Guard)
