"""A generated corpus of landing days: every row is admitted once with its exact value or
quarantined with its reason and original text, and every file is accounted for.

Each case writes a day as the test builds it, part by part (CSV, JSON lines, Parquet; plain or
gzip/bz2/xz/zstd-compressed; UTF-8 with or without BOM, Latin-1), with hostile rows among good
ones, truncations in each format, repeated header lines and optional columns that differ between
parts. The test keeps its own ledger of what it wrote (each row's file, position and field texts)
and checks the lake against it through the real reader and validation. A Hypothesis property
does the same for generated hostile rows.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil import config, ingestion, lake
from vigil.contracts import ContractError
from vigil.sources import FileSource

DAY = date(2025, 4, 3)
NOW = datetime(2025, 6, 1)
COLS = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount"]
JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


@dataclass
class Row:
    """One data row as written: field texts (None = missing) and the reasons it must be rejected
    for (empty: it must be admitted, exactly)."""

    fields: dict[str, str | None]
    reasons: set[str] = field(default_factory=set)
    file: str = ""
    row: int = 0  # source_row the reader must report
    line: str | None = None  # the original text, for a row the reader can only half-read


class Ledger:
    def __init__(self, folder: Path):
        self.folder, self.rows, self.files, self.headers = folder, [], {}, 0
        self.next_id = 5_000_000

    def good(self, i: int, **over) -> Row:
        self.next_id += 1
        f = {"transaction_id": str(self.next_id), "tx_datetime": f"2025-04-03T{i % 24:02d}:{i % 60:02d}:{(7 * i) % 60:02d}",
             "customer_id": str(100 + i % 50), "terminal_id": str(900_000 + i % 70),
             "tx_amount": f"{(i * 37) % 500 + 1}.{(i * 7919) % 100:02d}"}
        f.update(over)
        return Row(f)


def _compress(data: bytes, how: str | None) -> bytes:
    if how == "gz":
        return gzip.compress(data)
    if how == "bz2":
        return bz2.compress(data)
    if how == "xz":
        return lzma.compress(data)
    if how == "zst":
        return pa.compress(data, codec="zstd", asbytes=True)
    return data


def write_csv(led: Ledger, name: str, rows: list[Row], extra: list[str] = (), compress=None, encoding="utf-8",
              header_at: int | None = None, cut: bool = False, bad_line_at: int | None = None) -> Path:
    """Rows as CSV; ``header_at`` repeats the header before that row; ``bad_line_at`` gives that
    row a surplus field; ``cut`` cuts the last line inside its last field, without a newline."""
    cols = COLS + list(extra)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    record = 0
    for i, r in enumerate(rows):
        if header_at == i:
            w.writerow(cols)
            record += 1
            led.headers += 1
        record += 1
        r.file, r.row = str(led.folder / name), record
        values = ["" if r.fields.get(c) is None else r.fields[c] for c in cols]
        if bad_line_at == i:
            values.append("surplus")
            r.reasons, r.line = {"row:too_many_fields"}, ",".join(values)
        w.writerow(values)
    text = buf.getvalue()
    if cut:
        last = rows[-1]
        text = text.rstrip("\n")
        text = text[: text.rfind(",")]  # the last field and the newline are lost
        last.reasons, last.line = {"row:truncated"}, text[text.rfind("\n") + 1:]
    data = text.encode(encoding)  # "utf-8-sig" writes a BOM
    return _put(led, name, _compress(data, compress), rows)


def _json_value(text: str | None) -> str:
    if text is None:
        return "null"
    return text if JSON_NUMBER.fullmatch(text) else json.dumps(text)  # numbers as written, not re-printed


def write_jsonl(led: Ledger, name: str, rows: list[Row], extra: list[str] = (), compress=None, cut: bool = False,
                bad_line_at: int | None = None, blank_at: int | None = None) -> Path:
    lines = []
    for i, r in enumerate(rows):
        if blank_at == i:
            lines.append("   ")
        r.file, r.row = str(led.folder / name), len(lines) + 1
        cols = [c for c in COLS + list(extra) if c in r.fields]
        line = "{" + ", ".join(f"{json.dumps(c)}: {_json_value(r.fields[c])}" for c in cols) + "}"
        if bad_line_at == i:
            line = line[: len(line) // 2]  # a line cut in the middle: not JSON
            r.reasons, r.line = {"row:malformed_json"}, line
        lines.append(line)
    text = "\n".join(lines) + "\n"
    if cut:
        text = text.rstrip("\n")[:-9]
        rows[-1].reasons, rows[-1].line = {"row:malformed_json"}, text[text.rfind("\n") + 1:]
    return _put(led, name, _compress(text.encode(), compress), rows)


def write_parquet(led: Ledger, name: str, rows: list[Row], extra: list[str] = ()) -> Path:
    """A typed part: ids as int64, amounts as float64, timestamps as timestamps."""
    frame = pd.DataFrame({
        "transaction_id": [int(r.fields["transaction_id"]) for r in rows],
        "tx_datetime": [pd.Timestamp(r.fields["tx_datetime"]) for r in rows],
        "customer_id": [int(r.fields["customer_id"]) for r in rows],
        "terminal_id": [int(r.fields["terminal_id"]) for r in rows],
        "tx_amount": [float(r.fields["tx_amount"]) for r in rows],
        **{c: [r.fields.get(c) for r in rows] for c in extra},
    })
    for i, r in enumerate(rows):
        r.file, r.row = str(led.folder / name), i + 1
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return _put(led, name, buf.getvalue(), rows)


def _put(led: Ledger, name: str, data: bytes, rows: list[Row]) -> Path:
    path = led.folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    led.files[str(path)] = len(data)
    led.rows += rows
    return path


def _expected_datetime(text: str) -> pd.Timestamp:
    ts = pd.Timestamp(text)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo else ts


def check(led: Ledger, paths, source: FileSource, optional: dict[str, int] | None = None, ignored: tuple = ()):
    """Land and validate the day, then hold the lake to the ledger."""
    landed = ingestion.land_transactions(paths, DAY, source)
    v = ingestion.validate_transactions_day(paths, DAY, now=NOW)
    # every file accounted for: read (with its bytes and rows) or listed as ignored
    by_file = {f.file: f for f in landed.files}
    assert set(by_file) == set(led.files) | {str(p) for p in ignored}
    for name, size in led.files.items():
        rep = by_file[name]
        assert rep.status == "read" and rep.bytes == size
        assert rep.rows == sum(r.file == name for r in led.rows), name
    assert all(by_file[str(p)].status.startswith("ignored") for p in ignored)
    assert sum(f.headers_skipped for f in landed.files) == led.headers
    if optional is not None:
        assert landed.optional_columns == optional
    per_file = {f["file"]: f for f in v.files}
    for name in led.files:
        assert per_file[name]["read"] == per_file[name]["admitted"] + per_file[name]["quarantined"]
        assert per_file[name]["quarantined"] == sum(bool(r.reasons) and r.file == name for r in led.rows)

    admitted = v.result.admitted.set_index("transaction_id")
    q = v.result.quarantined
    q_by_pos = {(f, int(r)): i for i, (f, r) in enumerate(zip(q["source_file"], q["source_row"]))}
    assert len(q_by_pos) == len(q), "a row was quarantined twice"
    assert len(admitted) + len(q) == len(led.rows), "a row was lost or invented"
    assert admitted.index.is_unique
    extras = [c for c in admitted.columns if c not in COLS]
    for r in led.rows:
        if not r.reasons:
            got = admitted.loc[int(r.fields["transaction_id"])]
            assert got["customer_id"] == int(r.fields["customer_id"]) and got["terminal_id"] == int(r.fields["terminal_id"])
            assert got["tx_amount"] == float(r.fields["tx_amount"]), (r.fields["tx_amount"], got["tx_amount"])  # exact
            assert got["tx_datetime"] == _expected_datetime(r.fields["tx_datetime"])
            for c in extras:
                want = r.fields.get(c)
                assert (pd.isna(got[c]) and want is None) or str(got[c]) == want, (c, got[c], want)
            continue
        i = q_by_pos[(r.file, r.row)]
        reasons = set(q["reasons"].iloc[i].split(";"))
        assert r.reasons <= reasons, (r.fields, r.reasons, reasons)
        if r.line is not None:
            assert q["source_text"].iloc[i] == r.line
        else:  # every field's original text is in the quarantine
            for c in COLS:
                want, got = r.fields.get(c), q[c].iloc[i]
                assert (want is None and pd.isna(got)) or got == want, (c, got, want)
    return landed, v


@pytest.fixture
def day(tmp_path):
    paths = config.paths(tmp_path)
    folder = paths.landing / "transactions" / DAY.isoformat()
    return paths, Ledger(folder), FileSource(paths.landing / "transactions")


def test_mixed_formats_compression_extra_columns_and_hostile_rows(day):
    paths, led, source = day
    # part 1: CSV with an optional column, a repeated header, a surplus field, hostile values
    rows = [led.good(i, merchant=f"shop {i}") for i in range(40)]
    rows[3].fields["tx_amount"], rows[3].reasons = "12,50", {"tx_amount:wrong_type"}
    rows[5].fields["customer_id"], rows[5].reasons = "12.0", {"customer_id:id_format"}
    rows[6].fields["tx_amount"], rows[6].reasons = "NaN", {"tx_amount:wrong_type"}
    rows[7].fields["tx_amount"], rows[7].reasons = None, {"tx_amount:not_nullable"}
    rows[8].fields["tx_datetime"], rows[8].reasons = "2999-01-01T00:00:00", {"tx_datetime:not_in_future", f"tx_datetime:inside_day({DAY})"}
    rows[9].fields["tx_amount"] = "6.81"
    rows[10].fields["tx_amount"] = "0.1000000000000000055511151231257827"  # more digits than a double holds
    rows[12].fields["tx_amount"] = "4045.55803323859868507"  # pd.to_numeric gives the neighbouring double
    rows[11].fields["terminal_id"] = " 17 "
    write_csv(led, "part-0.csv", rows, extra=["merchant"], header_at=20, bad_line_at=30)
    # part 2: gzip JSON lines, no optional column, a malformed line, a truncated last line, NaN/null amounts
    rows = [led.good(100 + i) for i in range(40)]
    rows[2].fields["tx_amount"] = "6.81"
    rows[4].fields["tx_amount"], rows[4].reasons = "NaN", {"tx_amount:wrong_type"}
    rows[5].fields["tx_amount"], rows[5].reasons = None, {"tx_amount:not_nullable"}
    rows[6].fields["tx_datetime"] = "2025-04-03T10:00:00+02:00"  # an offset: 08:00 UTC
    write_jsonl(led, "part-1.jsonl.gz", rows, compress="gz", bad_line_at=12, cut=True, blank_at=20)
    # part 3: typed Parquet with another optional column
    rows = [led.good(200 + i, channel="web") for i in range(30)]
    write_parquet(led, "part-2.parquet", rows, extra=["channel"])
    # part 4: zstd CSV, UTF-8 with BOM
    write_csv(led, "part-3.csv.zst", [led.good(300 + i) for i in range(25)], compress="zst", encoding="utf-8-sig")
    # markers and uploads in progress are listed as ignored, never read
    (led.folder / "_SUCCESS").write_bytes(b"")
    (led.folder / ".part-4.csv.inprogress").write_text("transaction_id\n1\n")
    landed, v = check(led, paths, source, optional={"merchant": 1, "channel": 1},
                      ignored=(led.folder / "_SUCCESS", led.folder / ".part-4.csv.inprogress"))
    assert not v.held or "quarantine_rate" in v.held[0]
    assert {f.format for f in landed.files if f.status == "read"} == {"csv", "jsonl+gzip", "parquet", "csv+zstd"}


@pytest.mark.parametrize("compress", ["gz", "bz2", "xz", "zst"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_each_compression_and_format(day, fmt, compress):
    paths, led, source = day
    rows = [led.good(i) for i in range(30)]
    rows[4].fields["transaction_id"], rows[4].reasons = "99999999999999999999", {"transaction_id:id_format"}
    (write_csv if fmt == "csv" else write_jsonl)(led, f"part.{fmt}.{compress}", rows, compress=compress)
    check(led, paths, source)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_compressed_stream_cut_short_keeps_the_rows_before_the_cut(day, fmt):
    paths, led, source = day
    rows = [led.good(i) for i in range(400)]
    path = (write_csv if fmt == "csv" else write_jsonl)(led, f"part.{fmt}.gz", rows, compress="gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    landed = ingestion.land_transactions(paths, DAY, source)
    v = ingestion.validate_transactions_day(paths, DAY, now=NOW)
    (rep,) = landed.files
    assert rep.truncated_stream and rep.rows == len(v.result.admitted) + 1
    (reasons,) = v.result.quarantined["reasons"].tolist()
    assert reasons.split(";")[0] == "row:truncated"  # then the fields the cut left empty
    written = {int(r.fields["transaction_id"]) for r in rows}
    assert set(v.result.admitted["transaction_id"]) < written  # a prefix, each row once, values exact
    for r in rows[: len(v.result.admitted)]:
        assert float(r.fields["tx_amount"]) in set(v.result.admitted["tx_amount"])


def test_latin1_source_keeps_accents(day):
    paths, led, _ = day
    rows = [led.good(i, merchant="Café Zürich") for i in range(10)]
    write_csv(led, "part.csv", rows, extra=["merchant"], encoding="latin-1")
    check(led, paths, FileSource(paths.landing / "transactions", encoding="latin-1"))
    with pytest.raises(ContractError, match=r"part.csv: line 2 is not valid utf-8"):
        ingestion.land_transactions(paths, DAY, FileSource(paths.landing / "transactions"))


@pytest.mark.parametrize("name,data,match", [
    ("part.xlsx", b"PK\x03\x04", r"part.xlsx: unsupported landing format '.xlsx'"),
    ("part.txt", b"a,b\n", r"part.txt: unsupported landing format '.txt'"),
    ("part.csv.gz", b"\x1f\x8b\x08\x00garbage-garbage", r"part.csv.gz: corrupt gzip stream"),
    ("part.parquet", b"PAR1 not really", r"part.parquet: cannot read Parquet file"),
    ("part.csv", b"", r"part.csv: empty file \(0 bytes\)"),
])
def test_a_file_that_cannot_be_read_refuses_the_day_by_name(day, name, data, match):
    paths, led, source = day
    write_csv(led, "good.csv", [led.good(i) for i in range(5)])
    (led.folder / name).write_bytes(data)
    with pytest.raises(ContractError, match=match):
        ingestion.land_transactions(paths, DAY, source)
    assert lake.read_day(paths.raw, DAY) is None


def test_a_part_missing_a_required_column_is_named(day):
    paths, led, source = day
    write_csv(led, "a.csv", [led.good(i) for i in range(5)])
    pd.DataFrame({"transaction_id": [1], "tx_datetime": ["2025-04-03"], "customer_id": [1], "terminal_id": [1]}) \
        .to_csv(led.folder / "b.csv", index=False)
    with pytest.raises(ContractError, match=r"b.csv: required column\(s\) \['tx_amount'\] missing"):
        ingestion.land_transactions(paths, DAY, source)


def test_day_file_and_day_folder_are_both_read(day):
    """``2025-04-03.csv`` beside ``2025-04-03/``: both belong to the day; neither is dropped."""
    paths, led, source = day
    write_csv(led, "in-folder.csv", [led.good(i) for i in range(5)])
    led_top = Ledger(led.folder.parent)
    led_top.next_id = 7_000_000
    write_jsonl(led_top, f"{DAY}.jsonl", [led_top.good(i) for i in range(5)])
    led.rows += led_top.rows
    led.files.update(led_top.files)
    check(led, paths, source)


def test_stray_landing_files_are_named(day):
    paths, led, source = day
    write_csv(led, "a.csv", [led.good(i) for i in range(5)])
    (led.folder.parent / "notes.txt").write_text("hello")
    assert source.stray() == ["notes.txt"]


# --- property: hostile rows --------------------------------------------------------------------

def _ids(col: str):
    """(text, reasons) for an id field."""
    return st.one_of(
        st.integers(0, 10**18 - 1).map(lambda n: (str(n), set())),
        st.integers(0, 10**6).map(lambda n: (f" {n} ", set())),
        st.sampled_from(["12.0", "1e3", "-3", "C12", "true", "0x1F", "1_000", "12 3", "99999999999999999999"])
          .map(lambda t: (t, {f"{col}:id_format"})),
        st.just((None, {f"{col}:not_nullable"})),
    )


AMOUNTS = st.one_of(
    st.decimals(min_value="0.01", max_value="10000", places=2).map(lambda d: (str(d), set())),
    st.floats(min_value=0.01, max_value=10000).map(lambda f: (repr(f), set())),  # 17 significant digits
    # more digits than a double holds: a parser that is not correctly rounded is off by an ulp here
    st.tuples(st.integers(1, 9999), st.integers(0, 10**17 - 1)).map(lambda t: (f"{t[0]}.{t[1]:017d}", set())),
    st.sampled_from(["1e3", "  42.5 ", ".5", "+7"]).map(lambda t: (t, set())),
    st.sampled_from(["12,50", "NaN", "nan", "inf", "1_000", "€5", "5.0.1", "--1", "abc"])
      .map(lambda t: (t, {"tx_amount:wrong_type"})),
    st.sampled_from(["0", "-20.5", "-0.0"]).map(lambda t: (t, {"tx_amount:greater_than(0)"})),
    st.sampled_from(["15000.00", "1e9"]).map(lambda t: (t, {"tx_amount:less_than_or_equal_to(10000.0)"})),
    st.just((None, {"tx_amount:not_nullable"})),
)

TIMES = st.one_of(
    st.times().map(lambda t: (f"2025-04-03T{t.isoformat()}", set())),
    st.times().map(lambda t: (f"2025-04-03 {t.replace(microsecond=0).isoformat()}", set())),
    st.sampled_from(["2025-04-03T12:00:00Z", "2025-04-03T12:00:00+01:00"]).map(lambda t: (t, set())),
    st.sampled_from(["yesterday", "2025-13-01", "2025-04-03T25:00:00", "12/04/2025", "1743638400"])
      .map(lambda t: (t, {"tx_datetime:wrong_type"})),
    st.sampled_from(["2025-04-04T00:00:00", "1970-01-01T00:00:00", "2025-04-02T23:59:59"])
      .map(lambda t: (t, {f"tx_datetime:inside_day({DAY})"})),
    st.sampled_from(["2999-01-01T00:00:00", "9999-12-31T23:59:59"])
      .map(lambda t: (t, {"tx_datetime:not_in_future", "tx_datetime:out_of_range"})),
    st.just(("0001-01-01T00:00:00", {"tx_datetime:out_of_range", f"tx_datetime:inside_day({DAY})"})),
    st.just((None, {"tx_datetime:not_nullable"})),
)

HOSTILE = st.fixed_dictionaries({"customer_id": _ids("customer_id"), "terminal_id": _ids("terminal_id"),
                                 "tx_amount": AMOUNTS, "tx_datetime": TIMES})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile=st.lists(HOSTILE, min_size=1, max_size=25), fmt=st.sampled_from(["csv", "jsonl"]), data=st.data())
def test_hostile_rows_are_admitted_exactly_or_quarantined_with_their_text(tmp_path_factory, hostile, fmt, data):
    paths = config.paths(tmp_path_factory.mktemp("h"))
    led = Ledger(paths.landing / "transactions" / DAY.isoformat())
    rows = [led.good(i) for i in range(20)]
    for spec in hostile:
        r = led.good(len(rows))
        for col, (text, reasons) in spec.items():
            r.fields[col] = text
            r.reasons |= reasons
        rows.insert(data.draw(st.integers(0, len(rows))), r)
    (write_csv if fmt == "csv" else write_jsonl)(led, f"part.{fmt}", rows)
    check(led, paths, FileSource(paths.landing / "transactions"))


def test_csv_cut_inside_a_quoted_field(day):
    """The file ends inside a quoted field: the last row is cut, even though a newline ends the file."""
    paths, led, source = day
    rows = [led.good(i, merchant=f"Shop, {i}\nfloor {i}") for i in range(12)]  # quoted: a comma and a newline
    path = write_csv(led, "part.csv", rows, extra=["merchant"])
    text = path.read_text()
    cut = text[: text.rfind("floor")] + "\n"
    path.write_text(cut)
    led.files[str(path)] = len(cut.encode())
    rows[-1].reasons, rows[-1].line = {"row:truncated"}, cut[cut.rfind("\n", 0, cut.rfind('"')) + 1:]
    check(led, paths, source)
