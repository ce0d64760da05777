"""Intraday features: the online list and the offline vectorised form give the same values,
whatever the arrival order, with retries; hand-worked examples of the definition."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vigil.features import (INTRADAY_FEATURES, INTRADAY_MAX_TX, intraday_add, intraday_batch, intraday_day_state,
                            intraday_offline, intraday_values)

DAY = 20_000 * 86_400  # a UTC midnight in epoch seconds


def frame(rows):
    return pd.DataFrame({"transaction_id": [r[0] for r in rows], "customer_id": [r[1] for r in rows],
                         "tx_datetime": pd.to_datetime([r[2] for r in rows], unit="s"),
                         "tx_amount": [float(r[3]) for r in rows]})


def online(rows, order):
    """Score rows in ``order`` through the online list, one state per card."""
    states, out = {}, {}
    for i in order:
        tx_id, card, epoch, amount = rows[i]
        s = states.get(card)
        same_day = s is not None and s["intraday_day"] == epoch // 86_400
        vals = (intraday_values(s["intraday_tx_ids"], s["intraday_epochs"], s["intraday_amounts"], tx_id, epoch)
                if same_day else [0.0, 0.0, 0.0, np.nan])
        out[tx_id] = vals
        states[card] = intraday_add(s, tx_id, epoch, amount)
    return out, states


def test_hand_worked_day():
    rows = [(1, 7, DAY + 3600, 10.0), (2, 7, DAY + 7200, 50.0), (3, 7, DAY + 7200, 5.0), (4, 8, DAY + 100, 1.0),
            (5, 7, DAY + 86_400 + 60, 2.0)]  # 5: next day, the card's list starts again
    got = intraday_offline(frame(rows))
    exp = [[0, 0, 0, np.nan], [1, 10, 10, 3600], [2, 60, 50, 0], [0, 0, 0, np.nan], [0, 0, 0, np.nan]]
    np.testing.assert_allclose(got[INTRADAY_FEATURES].to_numpy(), np.array(exp, dtype=float))
    assert list(got.index) == list(range(5))


def test_retry_is_not_counted_twice_and_old_days_are_dropped():
    s = intraday_add(None, 1, DAY + 10, 5.0)
    s = intraday_add(s, 1, DAY + 10, 5.0)
    assert s["intraday_tx_ids"] == [1]
    assert intraday_values(s["intraday_tx_ids"], s["intraday_epochs"], s["intraday_amounts"], 1, DAY + 10)[0] == 0
    s = intraday_add(s, 2, DAY + 86_400, 3.0)
    assert s["intraday_tx_ids"] == [2] and s["intraday_day"] == DAY // 86_400 + 1


def test_list_is_bounded_to_the_latest():
    s = None
    for i in range(INTRADAY_MAX_TX + 10):
        s = intraday_add(s, i, DAY + i, 1.0)
    assert len(s["intraday_tx_ids"]) == INTRADAY_MAX_TX and min(s["intraday_tx_ids"]) == 10



@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3_000), st.integers(0, 600)), min_size=INTRADAY_MAX_TX + 1,
                max_size=INTRADAY_MAX_TX + 40, unique_by=lambda t: t[0]))
def test_a_full_list_keeps_the_latest_whatever_the_arrival_order(txs):
    """The overflow drop (one element, no sort) keeps exactly the latest INTRADAY_MAX_TX by
    (time, id), as a full sort would."""
    s = None
    for tx_id, sec in txs:
        s = intraday_add(s, tx_id, DAY + sec, float(tx_id))
    latest = sorted(txs, key=lambda t: (t[1], t[0]))[-INTRADAY_MAX_TX:]
    # a late arrival older than the whole full list is dropped at once: the list is the latest of what it saw
    assert sorted(s["intraday_tx_ids"]) == sorted(t[0] for t in latest)
    assert all(a == float(i) for i, a in zip(s["intraday_tx_ids"], s["intraday_amounts"]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2 * 86_400 - 1), st.integers(1, 500)), min_size=1, max_size=40),
       st.randoms(use_true_random=False))
def test_online_equals_offline_in_any_arrival_order(specs, rnd):
    rows = [(i, card, DAY + t, amt) for i, (card, t, amt) in enumerate(specs)]
    order = list(range(len(rows)))
    rnd.shuffle(order)
    order = order + order[: len(order) // 3]  # some retries after the fact
    # Online, an out-of-order arrival cannot see what arrives later: score in time order for
    # values, but build the final lists from any order (they must not depend on it).
    in_time = sorted(range(len(rows)), key=lambda i: (rows[i][2], rows[i][0]))
    served, _ = online(rows, in_time)
    offline = intraday_offline(frame(rows))
    for i, r in enumerate(rows):
        np.testing.assert_allclose(served[r[0]], offline.iloc[i].to_numpy(), equal_nan=True)
    _, states_any = online(rows, order)
    _, states_time = online(rows, in_time)
    for card in states_time:
        a, b = states_any[card], states_time[card]
        if a["intraday_day"] == b["intraday_day"]:
            assert sorted(a["intraday_tx_ids"]) == sorted(b["intraday_tx_ids"])


def test_day_state_is_the_online_list_at_the_end_of_the_day():
    rows = [(1, 7, DAY + 3600, 10.0), (2, 7, DAY + 7200, 50.0), (3, 8, DAY + 100, 1.0)]
    state = intraday_day_state(frame(rows)).set_index("customer_id")
    _, states = online(rows, [2, 1, 0])
    for card, s in states.items():
        row = state.loc[card]
        assert list(row["intraday_tx_ids"]) == sorted(s["intraday_tx_ids"])
        assert row["intraday_last_epoch"] == max(s["intraday_epochs"])


def reference_batch(states, rows):
    """What the endpoint did row by row before :func:`intraday_batch`: values, then add."""
    states, out, changed = dict(states), [], {}
    for tx_id, card, epoch, amount in rows:
        s = states.get(card)
        same_day = s is not None and s["intraday_day"] == epoch // 86_400
        out.append(intraday_values(s["intraday_tx_ids"], s["intraday_epochs"], s["intraday_amounts"], tx_id, epoch)
                   if same_day else [0.0, 0.0, 0.0, np.nan])
        new = intraday_add(s, tx_id, epoch, amount)
        if new is not s:
            states[card] = changed[card] = new
    return np.array(out, dtype=float), changed


def stored_list(card_spec):
    """A card's stored list: its transactions spread over the day in no order, or (``ordered``)
    one a minute from midnight in (time, id) order, as a day's arrivals leave it."""
    day, n, offset, ordered = card_spec
    if day is None:
        return None
    ids = list(range(1_000 + offset, 1_000 + offset + n))
    start = DAY + day * 86_400
    return {"intraday_day": DAY // 86_400 + day, "intraday_tx_ids": ids,
            "intraday_epochs": [start + (k * 60 if ordered else (i * 7919) % 86_400) for k, i in enumerate(ids)],
            "intraday_amounts": [(i % 97) / 7 + 0.01 for i in ids]}  # sums that depend on their order


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.integers(0, 4), st.tuples(st.one_of(st.none(), st.integers(-1, 1)),
                                                      st.sampled_from([0, 1, 3, INTRADAY_MAX_TX - 1, INTRADAY_MAX_TX,
                                                                       INTRADAY_MAX_TX + 3]),
                                                      st.integers(0, 5), st.booleans())),
       st.lists(st.tuples(st.integers(990, 1_300), st.integers(0, 4), st.integers(-1, 2), st.integers(0, 86_399),
                          st.integers(1, 500)), max_size=60))
@example({0: (0, INTRADAY_MAX_TX, 0, False), 1: (0, INTRADAY_MAX_TX - 1, 0, False)},  # full and nearly full lists overflow
         [(2_000 + i, i % 2, 0, 80_000 + i, 5) for i in range(6)] + [(1_003, 0, 0, 10, 5)])
@example({0: (0, INTRADAY_MAX_TX, 0, True), 1: (0, INTRADAY_MAX_TX - 1, 0, True)},  # in order: the running totals
         [(2_000 + i, i % 2, 0, 80_000 + i, 3 + i) for i in range(8)] + [(1_003, 0, 0, 10, 5), (2_050, 0, 0, 80_000, 400)])
def test_the_batch_form_is_the_row_by_row_rule(cards, specs):
    """:func:`intraday_batch` (the endpoint's) gives the values and changed lists of
    ``intraday_values`` then ``intraday_add`` row by row: retries of stored and of earlier rows'
    ids, late rows of an earlier day, a new day, lists at, under and over the cap."""
    states = {c: stored_list(spec) for c, spec in cards.items()}
    rows = [(tx, card, DAY + day * 86_400 + sec, amt / 3) for tx, card, day, sec, amt in specs]
    want, want_changed = reference_batch(states, rows)
    before = {c: None if s is None else {k: list(v) if isinstance(v, list) else v for k, v in s.items()}
              for c, s in states.items()}
    got, changed = intraday_batch(states, [r[1] for r in rows], [r[0] for r in rows], [r[2] for r in rows],
                                  [r[3] for r in rows])
    np.testing.assert_array_equal(got.reshape(-1, 4), want.reshape(-1, 4))
    assert changed == want_changed
    assert states == before  # the stored lists it was given are not modified


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**40), st.lists(st.tuples(st.integers(0, 2**63 - 1), st.integers(0, 2**40),
                                                  st.floats(0.01, 1e6, allow_nan=False)), max_size=INTRADAY_MAX_TX))
def test_a_packed_list_comes_back_as_it_was(day, rows):
    """The online store's one value per card (pack_intraday) holds the list exactly: ids, epochs
    and amounts bit for bit, in order."""
    from vigil.features import pack_intraday, unpack_intraday

    state = {"intraday_day": day, "intraday_tx_ids": [r[0] for r in rows], "intraday_epochs": [r[1] for r in rows],
             "intraday_amounts": [r[2] for r in rows]}
    blob = pack_intraday(state)
    assert len(blob) == 9 + 24 * len(rows) and unpack_intraday(blob) == state


def test_a_value_that_is_not_a_packed_list_is_refused_with_why():
    import pytest

    from vigil.features import pack_intraday, unpack_intraday

    good = pack_intraday({"intraday_day": 1, "intraday_tx_ids": [1], "intraday_epochs": [2], "intraday_amounts": [3.0]})
    for bad in (b"", good[:-1], b"\x02" + good[1:]):
        with pytest.raises(ValueError, match="not a packed intraday list"):
            unpack_intraday(bad)
    with pytest.raises(ValueError, match="1 ids, 2 epochs"):
        pack_intraday({"intraday_day": 1, "intraday_tx_ids": [1], "intraday_epochs": [2, 3], "intraday_amounts": [3.0]})


def test_a_batch_takes_its_cards_lists_a_chunk_at_a_time_with_the_same_result(monkeypatch):
    """Scorer.intraday_step holds the lists of at most INTRADAY_CHUNK cards at once (a /score for
    another card waits for a chunk, not the batch) and gives what one chunk gives: each card's
    rows in one chunk, in order."""
    import contextlib

    from vigil import scoring

    class Lists:  # the online store's lists, in memory
        def __init__(self):
            self.data, self.held, self.yields = {}, [], 0

        def yield_to_waiters(self):  # between two chunks (IntradayStore: to a /score waiting for the lists)
            self.yields += 1

        @contextlib.contextmanager
        def exclusive(self, ids, wait=True):
            self.held.append(list(ids))
            yield

        def read(self, ids):
            return [self.data.get(i) for i in ids]

        def write(self, states):
            self.data.update(states)

    def run(chunk):
        monkeypatch.setattr(scoring, "INTRADAY_CHUNK", chunk)
        s = scoring.Scorer.__new__(scoring.Scorer)
        s.intraday, s._intraday_lock = Lists(), None
        rng = np.random.default_rng(7)
        cards = rng.integers(0, 40, 500).tolist()
        reqs = [{"customer_id": c, "transaction_id": 10_000 + i} for i, c in enumerate(cards)]
        epoch = np.array(sorted(rng.integers(DAY, DAY + 86_400, 500)), dtype=np.int64)
        out = s.intraday_step(reqs, epoch, rng.uniform(1, 100, 500).round(2))
        return out, s.intraday.data, s.intraday.held, s.intraday.yields

    whole, lists, held, yields = run(10_000)
    chunked, chunked_lists, chunked_held, chunked_yields = run(7)
    assert len(held) == 1 and len(chunked_held) == 6 and max(map(len, chunked_held)) == 7
    assert yields == 0 and chunked_yields == 5
    np.testing.assert_array_equal(chunked, whole)
    assert chunked_lists == lists

    # past the request's deadline between chunks: TooLate, the chunks after it not taken
    s = scoring.Scorer.__new__(scoring.Scorer)
    s.intraday, s._intraday_lock = Lists(), None
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 2:
            raise scoring.TooLate("past the request's deadline")

    reqs = [{"customer_id": c, "transaction_id": 50_000 + c} for c in range(20)]
    with pytest.raises(scoring.TooLate):
        s.intraday_step(reqs, np.full(20, DAY + 60, dtype=np.int64), np.ones(20), check=check)
    assert len(s.intraday.held) == 2 and len(s.intraday.data) == 14  # two chunks of 7 written, the third not taken
