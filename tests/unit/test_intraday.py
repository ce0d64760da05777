"""Intraday features: the online list and the offline vectorised form give the same values,
whatever the arrival order, with retries; hand-worked examples of the definition."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.features import (INTRADAY_FEATURES, INTRADAY_MAX_TX, intraday_add, intraday_day_state, intraday_offline,
                            intraday_values)

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
