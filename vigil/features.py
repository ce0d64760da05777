"""Feature logic shared by training and serving: the Handbook baseline plus request-time flags.

Semantics (the README's feature section says the same):

- A *snapshot* for day D is computed at the end of that day, ``as_of = D + 1 day 00:00`` UTC, from
  transactions strictly before ``as_of``. A transaction at time t sees the latest snapshot with
  ``as_of <= t`` (the previous midnight), never itself nor anything else from its own day.
- Customer spending windows: number of transactions and mean amount over the last 1, 7 and 30
  days before ``as_of``.
- Terminal risk windows are shifted by the label delay (7 days): over transactions in
  ``[as_of - 7d - w, as_of - 7d)``, their count and the share reported as fraud *by* ``as_of``.
  A label reported later than ``as_of`` is invisible to that snapshot, so nothing leaks.
- A snapshot older than one day (``FEATURE_TTL``) is stale: it is treated as missing, identically in
  Feast's point-in-time join (TTL) and at serving time (Vigil's own freshness check, because Feast
  does not enforce TTL on online reads). Missing counts and rates mean "no activity": 0.
- Request-time features (``tx_amount``, ``is_weekend``, ``is_night``, ``hour_of_day``, and
  ``amount_to_customer_avg_30d``, the amount over the 30-day mean of the snapshot the transaction
  sees) come from :func:`request_features`, the one function both sides call.
- Intraday features (``INTRADAY_FEATURES``) see the card's transactions *earlier the same UTC day*,
  up to the transaction itself (strictly before it in ``(tx_datetime, transaction_id)`` order), which
  the midnight snapshots cannot: a burst today. Online, each scored transaction is added to the
  card's list of today's transactions in the online store (view ``customer_intraday``); offline,
  :func:`intraday_offline` computes the same values from the day's transactions. Both call
  :func:`intraday_values` on the same kind of list, so arrival order and retries do not matter.
"""

from __future__ import annotations

import operator
import struct
import sys
from array import array
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

WINDOWS = (1, 7, 30)
LABEL_DELAY_DAYS = 7
FEATURE_TTL = timedelta(days=1)
HISTORY_DAYS = max(WINDOWS) + LABEL_DELAY_DAYS  # days of input one snapshot needs

REPORT_WINDOWS = (1, 3, 7, 14, 28)  # terminal risk from the fraud reports known at the snapshot
CUSTOMER_FEATURES = ([f"customer_nb_tx_{w}d" for w in WINDOWS] + [f"customer_avg_amount_{w}d" for w in WINDOWS]
                     + ["customer_std_amount_30d"])
TERMINAL_FEATURES = ([f"terminal_nb_tx_{w}d" for w in WINDOWS] + [f"terminal_risk_{w}d" for w in WINDOWS]
                     + [f"terminal_reported_frauds_{w}d" for w in REPORT_WINDOWS]
                     + [f"terminal_reported_risk_{w}d" for w in REPORT_WINDOWS] + ["terminal_days_since_report"])
CUSTOMER_ASOF = "customer_as_of"  # epoch seconds of the snapshot, served for freshness checks
TERMINAL_ASOF = "terminal_as_of"
REQUEST_FEATURES = ["tx_amount", "is_weekend", "is_night", "hour_of_day", "amount_to_customer_avg_30d",
                    "amount_zscore_customer_30d"]


@dataclass(frozen=True)
class FeatureViewSpec:
    """One snapshot table as every side sees it: the Feast definitions (view, entity, source), the
    snapshot writer (folder), the online reader and writer (key, freshness column) and the scorer
    (feature order). Adding a view or a feature here reaches all of them."""

    name: str  # Feast feature view
    entity: str  # Feast entity
    key: str  # entity column and join key
    folder: str  # snapshots under ``lake/features/<folder>``, the view's offline source
    features: tuple[str, ...]
    asof: str  # epoch seconds of the snapshot: Vigil's freshness check online


FEATURE_VIEWS = (
    FeatureViewSpec("customer_spending", "customer", "customer_id", "customer", tuple(CUSTOMER_FEATURES), CUSTOMER_ASOF),
    FeatureViewSpec("terminal_risk", "terminal", "terminal_id", "terminal", tuple(TERMINAL_FEATURES), TERMINAL_ASOF),
)
INTRADAY_STATE = ("intraday_day", "intraday_tx_ids", "intraday_epochs", "intraday_amounts")
INTRADAY_LIST = "intraday_list"  # the online store's one value per card: its list, packed (pack_intraday)
INTRADAY_VIEW = FeatureViewSpec("customer_intraday", "customer", "customer_id", "customer_intraday",
                                (INTRADAY_LIST,), "intraday_last_epoch")
INTRADAY_FEATURES = ["customer_nb_tx_today", "customer_amount_today", "customer_max_amount_today",
                     "seconds_since_prev_tx_today"]
INTRADAY_MAX_TX = 256  # a card's list keeps its latest 256 transactions of the day: bounded per key
ONLINE_VIEWS = FEATURE_VIEWS + (INTRADAY_VIEW,)  # what the Feast definitions declare and serving reads
MODEL_FEATURES = REQUEST_FEATURES + [f for v in FEATURE_VIEWS for f in v.features] + INTRADAY_FEATURES
NIGHT_END_HOUR = 6
MIN_STD = 1e-6


def request_features(epoch_seconds: np.ndarray, tx_amount: np.ndarray, customer_avg_30d: np.ndarray,
                     customer_std_30d: np.ndarray | None = None) -> np.ndarray:
    """Request-time features as a (n, 6) float array, in ``REQUEST_FEATURES`` order: amount,
    weekend flag, night flag (before 06:00 UTC), hour of day, the amount relative to the
    customer's 30-day mean amount from the snapshot the transaction sees (NaN when that snapshot is
    missing or stale or the customer had no transaction in 30 days: the model imputes it), and the
    amount's z-score against that snapshot's 30-day mean and standard deviation (NaN without a
    spread: fewer than two transactions).

    Plain numpy, so the endpoint pays microseconds for one row and training the same code for a
    million. 1970-01-01 was a Thursday (weekday 3).
    """
    secs = np.asarray(epoch_seconds, dtype=np.int64).reshape(-1)
    amount = np.asarray(tx_amount, dtype=np.float64).reshape(-1)
    avg = np.asarray(customer_avg_30d, dtype=np.float64).reshape(-1)
    out = np.empty((len(secs), len(REQUEST_FEATURES)))  # filled column by column: /score's one row pays
    hour = (secs % 86_400) // 3600                      # no stacking, no error-state context
    out[:, 0] = amount
    out[:, 1] = (secs // 86_400 + 3) % 7 >= 5
    out[:, 2] = hour < NIGHT_END_HOUR
    out[:, 3] = hour
    out[:, 4:] = np.nan
    # divided only where the divisor is real (a mean of real amounts is >= 0.01; a spread or mean
    # under MIN_STD is float noise of identical amounts, a real spread is >= ~0.005 in cents):
    # elsewhere NaN, never a z-score of 1e15 or inf
    np.divide(amount, avg, out=out[:, 4], where=avg > MIN_STD)
    if customer_std_30d is not None:
        std = np.asarray(customer_std_30d, dtype=np.float64).reshape(-1)
        np.divide(amount - avg, std, out=out[:, 5], where=std > MIN_STD)
    return out


_PACKED = struct.Struct("<Bq")  # format version, day; then the ids, the epochs (int64) and the amounts (float64)
PACKED_VERSION = 1


def pack_intraday(state: dict) -> bytes:
    """A card's list as the one value the online store keeps for it: a version byte, the day, then
    its ids, epochs and amounts as little-endian arrays. One row a card instead of five (the
    list's day, three lists and its latest time, each a Feast protobuf value): a 10,000-row
    batch's intraday write took 0.09 s of its 0.38 (benchmarks/README.md)."""
    cols = (array("q", state["intraday_tx_ids"]), array("q", state["intraday_epochs"]), array("d", state["intraday_amounts"]))
    if not len(cols[0]) == len(cols[1]) == len(cols[2]):
        raise ValueError(f"intraday list of {len(cols[0])} ids, {len(cols[1])} epochs and {len(cols[2])} amounts")
    if sys.byteorder != "little":
        for c in cols:
            c.byteswap()
    return _PACKED.pack(PACKED_VERSION, int(state["intraday_day"])) + b"".join(c.tobytes() for c in cols)


def unpack_intraday(blob: bytes) -> dict:
    """:func:`pack_intraday`'s value back as a list state; a ValueError that says why otherwise."""
    size = len(blob) - _PACKED.size
    if size < 0 or size % 24 or blob[0] != PACKED_VERSION:
        raise ValueError(f"not a packed intraday list of version {PACKED_VERSION} "
                         f"({len(blob)} bytes, version byte {blob[0] if blob else None})")
    n = size // 24
    _, day = _PACKED.unpack_from(blob)
    cols = []
    for kind, at in (("q", 0), ("q", 8 * n), ("d", 16 * n)):
        c = array(kind)
        c.frombytes(blob[_PACKED.size + at:_PACKED.size + at + 8 * n])
        if sys.byteorder != "little":
            c.byteswap()
        cols.append(c.tolist())
    return {"intraday_day": day, "intraday_tx_ids": cols[0], "intraday_epochs": cols[1], "intraday_amounts": cols[2]}


def intraday_values(tx_ids: np.ndarray, epochs: np.ndarray, amounts: np.ndarray, tx_id: int, epoch: int) -> list[float]:
    """``INTRADAY_FEATURES`` for one transaction from the card's transactions of the same day
    (ids, epoch seconds, amounts; any order, may include the transaction itself): count, sum and
    max of the amounts strictly before it in (time, id) order, and the seconds since the latest of
    them (NaN when none)."""
    count, total, top, last = 0, 0.0, float("-inf"), None  # plain Python: a card's list is short
    for i, e, a in zip(tx_ids, epochs, amounts):
        if e < epoch or (e == epoch and i < tx_id):
            count, total, top = count + 1, total + a, max(top, a)
            last = e if last is None or e > last else last
    if not count:
        return [0.0, 0.0, 0.0, np.nan]
    return [float(count), float(total), float(top), float(epoch - last)]


def intraday_add(state: dict | None, tx_id: int, epoch: int, amount: float) -> dict:
    """The card's list of today's transactions after seeing one more: a list of an earlier day is
    replaced, a late transaction of a day before the list's is ignored, a transaction already in
    the list is not added again (a retried request), and only the latest ``INTRADAY_MAX_TX`` are
    kept."""
    day = epoch // 86_400
    if state is not None and state.get("intraday_day", day) > day:
        return state
    if state is None or state.get("intraday_day") != day:
        state = {"intraday_day": day, "intraday_tx_ids": [], "intraday_epochs": [], "intraday_amounts": []}
    if tx_id in state["intraday_tx_ids"]:
        return state
    ids, eps, amts = (list(state[k]) + [v] for k, v in zip(INTRADAY_STATE[1:], (tx_id, epoch, amount)))
    if len(ids) == INTRADAY_MAX_TX + 1:  # the usual overflow: drop the earliest, O(n), no sort
        drop = min(zip(eps, ids, range(len(ids))))[2]
        for xs in (ids, eps, amts):
            del xs[drop]
    elif len(ids) > INTRADAY_MAX_TX:
        keep = sorted(range(len(ids)), key=lambda i: (eps[i], ids[i]))[-INTRADAY_MAX_TX:]
        ids, eps, amts = ([xs[i] for i in keep] for xs in (ids, eps, amts))
    return {"intraday_day": day, "intraday_tx_ids": ids, "intraday_epochs": eps, "intraday_amounts": amts}


_NEG_INF = float("-inf")
_NOTHING_TODAY = (0.0, 0.0, 0.0, np.nan)


def _totals(ids: list, eps: list, amts: list) -> list:
    """What :func:`intraday_values` gives a transaction after every one of a card's list: count,
    sum (added in the list's order, as it adds them), max amount, latest epoch, the largest
    (epoch, id) key, and whether the list is in (epoch, id) order (then its earliest is its
    first); kept up to date in O(1) as the list grows at its end."""
    keys = list(zip(eps, ids))
    return [len(ids), _seq_sum(amts), max(amts, default=_NEG_INF), max(eps, default=_NEG_INF),
            max(keys, default=(_NEG_INF, _NEG_INF)), all(map(operator.lt, keys, keys[1:]))]


def _seq_sum(amts: list) -> float:
    total = 0.0  # one addition at a time, in order, as intraday_values adds (not sum(): Python 3.12 compensates)
    for a in amts:
        total += a
    return total


def intraday_batch(states: dict, cards: list[int], tx_ids: list[int], epochs: list[int],
                   amounts: list[float]) -> tuple[np.ndarray, dict]:
    """For each row in order, :func:`intraday_values` from its card's list, then the row added by
    :func:`intraday_add`: the values and the changed lists the endpoint gets by calling those two
    row by row (``tests/unit/test_intraday.py`` holds it to that, bit for bit), without copying a
    card's list at every row nor scanning it for a retried id (0.25 s of a 10,000-row batch).
    A row later than every transaction in its card's list (the usual case) takes the list's
    running totals instead of a scan (a card with 256 transactions that day: 0.9 s of a
    10,000-row batch went to the scans). ``states``: ``{card: list state or None}`` as read;
    returns the ``(n, 4)`` values and ``{card: new state}`` for the cards whose list changed."""
    out = np.empty((len(cards), len(INTRADAY_FEATURES)))
    # card -> [day, ids, epochs, amounts, set of ids, totals (_totals)], the card's list as rows add to it
    work: dict = {}
    changed = set()
    for row, (card, tx_id, epoch, amount) in enumerate(zip(cards, tx_ids, epochs, amounts)):
        w = work.get(card)
        if w is None:
            st = states.get(card)
            if st is None:
                w = work[card] = None
            else:
                ids, eps, amts = list(st["intraday_tx_ids"]), list(st["intraday_epochs"]), list(st["intraday_amounts"])
                w = work[card] = [st["intraday_day"], ids, eps, amts, set(ids), _totals(ids, eps, amts)]
        day = epoch // 86_400
        if w is not None and w[0] == day:
            t = w[5]
            if not t[0]:
                out[row] = _NOTHING_TODAY
            elif t[4] < (epoch, tx_id):  # after every transaction in the list: its running totals
                out[row] = (float(t[0]), float(t[1]), float(t[2]), float(epoch - t[3]))
            else:  # intraday_values, inlined: a late or retried transaction
                count, total, top, last = 0, 0.0, _NEG_INF, _NEG_INF
                for i, e, a in zip(w[1], w[2], w[3]):
                    if e < epoch or (e == epoch and i < tx_id):
                        count += 1
                        total += a
                        if a > top:
                            top = a
                        if e > last:
                            last = e
                out[row] = (float(count), float(total), float(top), float(epoch - last)) if count else _NOTHING_TODAY
        else:
            out[row] = _NOTHING_TODAY
        if w is not None and w[0] > day:  # a late transaction of an earlier day
            continue
        if w is None or w[0] != day:
            w = work[card] = [day, [], [], [], set(), _totals([], [], [])]
            changed.add(card)
        if tx_id in w[4]:  # a retry
            continue
        ids, eps, amts, t = w[1], w[2], w[3], w[5]
        ids.append(tx_id), eps.append(epoch), amts.append(amount), w[4].add(tx_id)
        changed.add(card)
        if len(ids) == INTRADAY_MAX_TX + 1 and t[5] and t[4] < (epoch, tx_id):  # a full list in order: its first goes
            gone, top = ids[0], amts[0]
            del ids[0], eps[0], amts[0]
            if gone not in ids:  # a stored list holding an id twice keeps the other
                w[4].discard(gone)
            t[1] = _seq_sum(amts)
            t[2] = max(amount, t[2] if top < t[2] else max(amts))
            t[3], t[4] = max(t[3], epoch), (epoch, tx_id)
        elif len(ids) == INTRADAY_MAX_TX + 1:  # intraday_add's usual overflow: its earliest (time, id) goes
            first = min(eps)
            drop = eps.index(first) if eps.count(first) == 1 else min(zip(eps, ids, range(len(ids))))[2]
            gone, gone_amount = ids[drop], amts[drop]
            del ids[drop], eps[drop], amts[drop]
            if gone not in ids:
                w[4].discard(gone)
            key = (epoch, tx_id)
            t[1] = _seq_sum(amts)
            t[2] = max(amount, t[2]) if gone_amount < t[2] else max(amts)
            t[3] = max(epoch, t[3]) if first < t[3] else max(eps)
            t[4] = max(key, t[4]) if (first, gone) < t[4] else max(zip(eps, ids))
            t[5] = False  # added before the list's latest (else the branch above), or already out of order
        elif len(ids) > INTRADAY_MAX_TX:  # a stored list over the cap
            kept = intraday_add({"intraday_day": day, "intraday_tx_ids": ids[:-1], "intraday_epochs": eps[:-1],
                                 "intraday_amounts": amts[:-1]}, tx_id, epoch, amount)
            w[1], w[2], w[3] = (kept[k] for k in INTRADAY_STATE[1:])
            w[4], w[5] = set(w[1]), _totals(w[1], w[2], w[3])
        else:
            key = (epoch, tx_id)
            t[0] += 1
            t[1] += amount
            if amount > t[2]:
                t[2] = amount
            if epoch > t[3]:
                t[3] = epoch
            if key > t[4]:
                t[4] = key
            else:
                t[5] = False  # added before the list's latest: no longer in order
    return out, {c: {"intraday_day": work[c][0], "intraday_tx_ids": work[c][1], "intraday_epochs": work[c][2],
                     "intraday_amounts": work[c][3]} for c in changed}


def intraday_offline(tx: pd.DataFrame) -> pd.DataFrame:
    """``INTRADAY_FEATURES`` for every row of ``tx`` (``transaction_id``, ``tx_datetime``,
    ``customer_id``, ``tx_amount``) from the other rows of ``tx``: the vectorised form of
    :func:`intraday_values` over each card's transactions of the same day. Indexed like ``tx``."""
    epoch = epoch_seconds(tx["tx_datetime"])
    f = pd.DataFrame({"i": np.arange(len(tx)), "c": tx["customer_id"].to_numpy(), "d": epoch // 86_400, "e": epoch,
                      "t": tx["transaction_id"].to_numpy(), "a": tx["tx_amount"].to_numpy(dtype=np.float64)})
    f = f.sort_values(["c", "d", "e", "t"], kind="stable")
    g = f.groupby(["c", "d"], sort=False)
    n = g.cumcount().to_numpy()
    prev_sum = g["a"].cumsum().to_numpy() - f["a"].to_numpy()
    prev_max = g["a"].cummax().groupby([f["c"], f["d"]], sort=False).shift(1).to_numpy()
    gap = (f["e"] - g["e"].shift(1)).to_numpy(dtype=np.float64)
    first = n == 0
    out = np.column_stack([n.astype(np.float64), np.where(first, 0.0, prev_sum), np.where(first, 0.0, prev_max),
                           np.where(first, np.nan, gap)])
    res = np.empty_like(out)
    res[f["i"].to_numpy()] = out
    return pd.DataFrame(res, columns=INTRADAY_FEATURES, index=tx.index)


def intraday_day_state(tx: pd.DataFrame) -> pd.DataFrame:
    """Each card's list of its transactions on each day of ``tx`` (the latest ``INTRADAY_MAX_TX``):
    what the online store holds for it at the end of that day. The offline source of the
    ``customer_intraday`` view, and what ingestion loads online."""
    epoch = epoch_seconds(tx["tx_datetime"])
    f = pd.DataFrame({"customer_id": tx["customer_id"].to_numpy(dtype=np.int64), "intraday_day": epoch // 86_400,
                      "intraday_tx_ids": tx["transaction_id"].to_numpy(dtype=np.int64), "intraday_epochs": epoch,
                      "intraday_amounts": tx["tx_amount"].to_numpy(dtype=np.float64)})
    f = f.sort_values(["customer_id", "intraday_day", "intraday_epochs", "intraday_tx_ids"], kind="stable")
    f = f.groupby(["customer_id", "intraday_day"], sort=False).tail(INTRADAY_MAX_TX)
    out = f.groupby(["customer_id", "intraday_day"], sort=False).agg(list).reset_index()
    last = out["intraday_epochs"].map(max).astype("int64")
    out[INTRADAY_VIEW.asof] = last
    out["event_timestamp"] = pd.to_datetime(last, unit="s", utc=True).astype("datetime64[us, UTC]")
    out[INTRADAY_LIST] = [pack_intraday(dict(zip(INTRADAY_STATE, r)))
                          for r in zip(*(out[k].tolist() for k in INTRADAY_STATE))]  # what the view holds online
    return out[["customer_id", *INTRADAY_STATE, INTRADAY_LIST, INTRADAY_VIEW.asof, "event_timestamp"]]


def epoch_seconds(ts: pd.Series) -> np.ndarray:
    return ts.astype("datetime64[ns]").to_numpy().astype("datetime64[s]").astype(np.int64)


_EPOCH, _SECOND = datetime(1970, 1, 1), timedelta(seconds=1)


def epoch_seconds_of(naive_utc: list[datetime]) -> np.ndarray:
    """:func:`epoch_seconds` for a list of naive UTC datetimes (a request batch): whole seconds,
    floored as numpy's cast floors. 4x ``int(dt.timestamp())`` on a 10,000-row batch (which also
    rounded toward zero, not down, before 1970), 5x numpy's own conversion of datetime objects."""
    return np.fromiter(((d - _EPOCH) // _SECOND for d in naive_utc), dtype=np.int64, count=len(naive_utc))


def snapshot_as_of(day: date) -> pd.Timestamp:
    return pd.Timestamp(day) + pd.Timedelta(days=1)


def _windows(tx: pd.DataFrame, key: str, value: str, end: pd.Timestamp, as_of: pd.Timestamp,
             count_name: str, mean_name: str, columns: list[str], asof_col: str) -> pd.DataFrame:
    """Count and mean of ``value`` per ``key`` over each window ending at ``end`` (exclusive),
    one row per entity seen in the longest window, stamped with the snapshot time."""
    tx = tx[(tx["tx_datetime"] < end) & (tx["tx_datetime"] >= end - pd.Timedelta(days=max(WINDOWS)))]
    parts = []
    for w in WINDOWS:
        g = tx[tx["tx_datetime"] >= end - pd.Timedelta(days=w)].groupby(key)[value].agg(["size", "mean"])
        g.columns = [count_name.format(w=w), mean_name.format(w=w)]
        parts.append(g)
    out = pd.concat(parts, axis=1).reindex(columns=columns).fillna(0.0).astype("float64").reset_index()
    out[key] = out[key].astype("int64")
    out["event_timestamp"] = pd.Series(as_of.tz_localize("UTC"), index=out.index).astype("datetime64[us, UTC]")
    out[asof_col] = np.int64(as_of.timestamp())
    return out


def customer_snapshot(tx: pd.DataFrame, day: date) -> pd.DataFrame:
    """Customer spending windows as of the end of ``day`` (one row per customer active in 30 days),
    and the spread of the 30-day amounts (population std; 0 with one transaction)."""
    as_of = snapshot_as_of(day)
    out = _windows(tx, "customer_id", "tx_amount", as_of, as_of, "customer_nb_tx_{w}d", "customer_avg_amount_{w}d",
                   CUSTOMER_FEATURES[:-1], CUSTOMER_ASOF)
    recent = tx[(tx["tx_datetime"] < as_of) & (tx["tx_datetime"] >= as_of - pd.Timedelta(days=max(WINDOWS)))]
    std = recent.groupby("customer_id")["tx_amount"].std(ddof=0)
    out.insert(len(CUSTOMER_FEATURES), "customer_std_amount_30d",
               out["customer_id"].map(std).fillna(0.0).astype("float64").to_numpy())
    return out


def terminal_snapshot(tx: pd.DataFrame, labels: pd.DataFrame, day: date) -> pd.DataFrame:
    """Terminal risk windows as of the end of ``day``, shifted by the label delay.

    ``labels`` holds fraud reports (transaction_id, tx_fraud, reported_at); only reports made
    before the snapshot time count.
    """
    as_of = snapshot_as_of(day)
    reports = labels[(labels["reported_at"] < as_of) & (labels["tx_fraud"] == 1)]
    tx = tx.assign(fraud=tx["transaction_id"].isin(reports["transaction_id"]).astype("float64"))
    delayed = _windows(tx, "terminal_id", "fraud", as_of - pd.Timedelta(days=LABEL_DELAY_DAYS), as_of,
                       "terminal_nb_tx_{w}d", "terminal_risk_{w}d", TERMINAL_FEATURES[:2 * len(WINDOWS)], TERMINAL_ASOF)
    reported = _reported_windows(tx, reports, as_of)
    out = delayed.drop(columns=["event_timestamp", TERMINAL_ASOF]).merge(reported, on="terminal_id", how="outer")
    out["terminal_days_since_report"] = out["terminal_days_since_report"].fillna(float(HISTORY_DAYS))
    out[TERMINAL_FEATURES] = out[TERMINAL_FEATURES].astype("float64").fillna(0.0)  # no activity: 0
    out["terminal_id"] = out["terminal_id"].astype("int64")
    out["event_timestamp"] = pd.Series(as_of.tz_localize("UTC"), index=out.index).astype("datetime64[us, UTC]")
    out[TERMINAL_ASOF] = np.int64(as_of.timestamp())
    return out[["terminal_id"] + TERMINAL_FEATURES + ["event_timestamp", TERMINAL_ASOF]]


def _reported_windows(tx: pd.DataFrame, reports: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Terminal risk from the fraud reports known at ``as_of``, without the fixed label delay: per
    window w in ``REPORT_WINDOWS``, the terminal's transactions in [as_of - w, as_of) that were
    reported as fraud before ``as_of``, as a count and a share of its transactions there; and the
    days since its latest report (``HISTORY_DAYS`` when none in the history read). A compromised
    terminal shows from its first report on, instead of a week later."""
    recent = tx[(tx["tx_datetime"] < as_of) & (tx["tx_datetime"] >= as_of - pd.Timedelta(days=max(REPORT_WINDOWS)))]
    parts = []
    for w in REPORT_WINDOWS:
        g = recent[recent["tx_datetime"] >= as_of - pd.Timedelta(days=w)].groupby("terminal_id")["fraud"].agg(["sum", "mean"])
        g.columns = [f"terminal_reported_frauds_{w}d", f"terminal_reported_risk_{w}d"]
        parts.append(g)
    hit = tx[["transaction_id", "terminal_id"]].merge(reports[["transaction_id", "reported_at"]], on="transaction_id")
    last = hit.groupby("terminal_id")["reported_at"].max()
    out = pd.concat(parts, axis=1)
    out = out.reindex(out.index.union(last.index))
    out["terminal_days_since_report"] = ((as_of - last.reindex(out.index)) / pd.Timedelta(days=1)).fillna(float(HISTORY_DAYS))
    return out.rename_axis("terminal_id").reset_index()


def history_days(day: date) -> list[date]:
    """The days of transactions (and label reports) one snapshot for ``day`` reads: flat in history."""
    return [day - timedelta(days=i) for i in range(HISTORY_DAYS - 1, -1, -1)]


def fresh_mask(as_of_epoch: np.ndarray, request_epoch: np.ndarray) -> np.ndarray:
    """Vigil's TTL rule, the same as Feast's point-in-time TTL: a snapshot at most one day old, and
    not from the request's future (a request dated before the snapshot it would see is not scored
    with what happened after it: its features are stale). Missing (NaN) is never fresh."""
    age = np.asarray(request_epoch, dtype=np.float64) - np.asarray(as_of_epoch, dtype=np.float64)
    return (age >= 0) & (age <= FEATURE_TTL.total_seconds())  # NaN compares False


def is_fresh(as_of_epoch: float | None, request_epoch: float) -> bool:
    """:func:`fresh_mask` for one snapshot (None: no snapshot)."""
    return as_of_epoch is not None and bool(fresh_mask(as_of_epoch, request_epoch))


def _no_gaps(paths, days: list[date]) -> None:
    """Features over a history with a hole would be silently wrong (counts too low): refuse."""
    from vigil import lake

    # one listing per folder (one request on an object store) instead of one per day
    held_days, validated_days = set(lake.available_days(paths.held)), set(lake.available_days(paths.validated))
    held = [d for d in days if d in held_days]
    if held:
        why = (lake.day_file(paths.held, held[0], ".txt").read_text().strip().splitlines() or [""])[0]
        raise ValueError(f"history day(s) {', '.join(map(str, held))} held by validation ({why}); "
                         "fix the source and re-run those days first")
    present = [d in validated_days for d in days]
    if True in present:
        first = present.index(True)
        gaps = [d for d, ok in zip(days[first:], present[first:]) if not ok]
        if gaps:
            raise ValueError(f"validated partition(s) missing inside the feature history: {', '.join(map(str, gaps))}")


def build_snapshots(paths, day: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compute and store the customer and terminal snapshots for ``day`` from the validated lake.

    Reads only the last ``HISTORY_DAYS`` partitions, so the cost of a day is flat in history.
    """
    from vigil import lake

    days = history_days(day)
    _no_gaps(paths, days)
    tx = lake.read_days(paths.validated, days, ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount"])
    labels = lake.read_days(paths.labels, days, ["transaction_id", "tx_fraud", "reported_at"])
    if tx.empty:
        raise ValueError(f"no validated transactions in {days[0]}..{days[-1]}: ingest them first")
    if labels.empty:
        labels = pd.DataFrame({"transaction_id": pd.Series([], dtype="int64"), "tx_fraud": pd.Series([], dtype="int64"),
                               "reported_at": pd.Series([], dtype="datetime64[ns]")})
    cust = customer_snapshot(tx, day)
    term = terminal_snapshot(tx, labels, day)
    customer_view, terminal_view = FEATURE_VIEWS
    lake.write_day(paths.features / customer_view.folder, day, cust)
    lake.write_day(paths.features / terminal_view.folder, day, term)
    today = tx[tx["tx_datetime"] >= pd.Timestamp(day)]
    lake.write_day(paths.features / INTRADAY_VIEW.folder, day, intraday_day_state(today))
    return cust, term
