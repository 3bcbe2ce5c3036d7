"""Parsing issued ledgers back (sib/ledger.py: parse_ledger, read_history, parse_amounts).

The parser is fast (each column parsed once per distinct value, the dates by whole-array
arithmetic, the files of a history read as one CSV when that is safe), so these properties
hold it to a plain per-line reading written from the format (ledger.md): every value typed
exactly as the oracle types it, every malformed value one `bad-ledger` problem at its file,
line and column, in the same order; `render_ledger` → `parse_ledger` gives back the lines;
and a history reads as its files one by one would.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, strategies as st

from sib.evidence import NO_DAY
from sib.ledger import (DAY_COLUMNS, LEDGER_COLUMNS, PENCE_COLUMNS, TEXT_COLUMNS, parse_amounts,
                        parse_ledger, read_history, render_ledger)
from sib.period import parse_period
from sib.problems import Problem, ProblemsFound

INT64 = (-(2**63), 2**63)
GOOD = {"line_id": "2022-Q1-00001", "period": "2022-Q1", "kind": "payment",
        "milestone_id": "M1", "participant_id": "P1", "outcome": "job-start",
        "achieved_on": "2022-01-10", "verified_on": "2022-02-01", "evidence_ref": "E1",
        "price_from": "2019-01-01", "price": "2000.00", "funder": "dcms", "share": "35.5000",
        "amount": "710.00", "capped": "0.00", "cap": "", "late": "false", "reverses": ""}


# --- the oracle: one value at a time, from ledger.md -----------------------------------------

def oracle_units(text: str, pattern: str) -> int | None:
    if not re.fullmatch(pattern, text):
        return None
    n = int(text.replace(".", ""))
    return n if INT64[0] <= n < INT64[1] else None


def oracle_day(text: str) -> int | None:
    """Day number of an ISO date written with ASCII digits; NO_DAY for blank."""
    if text == "":
        return int(NO_DAY)
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return None
    try:
        d = date(int(text[:4]), int(text[5:7]), int(text[8:]))
    except ValueError:
        return None
    return (d - date(1970, 1, 1)).days


def oracle(rows: list[dict[str, str]], shown: str) -> tuple[list[dict], list[Problem]]:
    """Typed rows and problems, line by line, checks in the order parse_ledger lists them."""
    typed, problems = [], []
    checks = []
    for c in PENCE_COLUMNS:
        checks.append((c, lambda v: oracle_units(v, r"-?[0-9]+\.[0-9]{2}"),
                       lambda c, v: f"{c} '{v}' is not an amount like 1234.50"))
    for c in DAY_COLUMNS:
        checks.append((c, oracle_day, lambda c, v: f"{c} '{v}' is not a date"))
    checks.append(("share", lambda v: oracle_units(v, r"[0-9]+\.[0-9]{4}"),
                   lambda c, v: f"share '{v}' is not a percentage like 45.2600"))
    checks.append(("late", lambda v: {"true": True, "false": False}.get(v),
                   lambda c, v: f"late '{v}' is not true or false"))
    checks.append(("kind", lambda v: v if v in ("payment", "reversal") else None,
                   lambda c, v: f"kind '{v}' is not payment or reversal"))
    for row in rows:
        typed.append(dict(row))
    for c, parse, message in checks:
        for n, row in enumerate(rows, start=2):
            value = parse(row[c])
            if value is None:
                problems.append(Problem(shown, n, LEDGER_COLUMNS.index(c) + 1, "bad-ledger",
                                        message(c, row[c])))
            if c != "kind":
                typed[n - 2][c] = value if value is not None else (
                    int(NO_DAY) if c in DAY_COLUMNS else False if c == "late" else 0)
    return typed, problems


def ledger_text(rows: list[dict[str, str]], crlf: bool = False) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n" if crlf else "\n")
    w.writerow(LEDGER_COLUMNS)
    for row in rows:
        w.writerow([row[c] for c in LEDGER_COLUMNS])
    return buf.getvalue()


def as_records(lines: pd.DataFrame) -> list[dict]:
    return [{c: (v.item() if hasattr(v, "item") else v) for c, v in row.items()}
            for row in lines.to_dict("records")]


# --- strategies: mostly valid values, some of every malformed kind --------------------------

digits = st.text(st.sampled_from("0123456789"), min_size=1, max_size=20)
odd_text = st.text(st.sampled_from("0123456789-.:/ +eE\n١٢x"), max_size=12)
amounts = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(lambda p: f"{'-' if p < 0 else ''}{abs(p) // 100}."
                                                   f"{abs(p) % 100:02d}"),
    st.integers(-10**7, 10**7).map(lambda p: f"{'-' if p < 0 else ''}{abs(p) // 100}."
                                             f"{abs(p) % 100:02d}"),
    st.sampled_from(["92233720368547758.08", "-92233720368547758.09", "0012.50", "-0.00",
                     "1.5", "1.500", "1,000.00", "", "١٢.٥٠", "12.50\n", " 1.00", "+1.00"]),
    st.builds(lambda a, b: f"{a}.{b}", digits, digits), odd_text)
days = st.one_of(
    st.dates().map(date.isoformat),
    st.dates(date(1900, 1, 1), date(2199, 12, 31)).map(date.isoformat),
    st.sampled_from(["", "2022-02-30", "2021-02-29", "2024-02-29", "0000-01-01", "2300-01-01",
                     "1600-03-01", "9999-12-31", "2022-13-01", "2022-00-10", "2022-1-01",
                     "22-01-01", "2022/01/01", "2022-01-01\n", "٢٠٢٢-٠١-٠١", "2022-01-01T00"]),
    st.builds(lambda y, m, d: f"{y:04d}-{m:02d}-{d:02d}", st.integers(0, 9999),
              st.integers(0, 99), st.integers(0, 99)),
    odd_text)
shares = st.one_of(st.integers(0, 2**63 - 1).map(lambda u: f"{u // 10000}.{u % 10000:04d}"),
                   st.sampled_from(["45.26", "-1.0000", "100.0000 ", "", "1.00000"]), odd_text)
values = {"price": amounts, "amount": amounts, "capped": amounts,
          "achieved_on": days, "verified_on": days, "price_from": days, "share": shares,
          "late": st.sampled_from(["true", "false", "True", "", "yes"]),
          "kind": st.sampled_from(["payment", "reversal", "Payment", ""])}
row = st.fixed_dictionaries({c: values.get(c, st.just(GOOD[c])) for c in LEDGER_COLUMNS})


@given(st.lists(row, max_size=12))
def test_parse_ledger_types_every_value_as_the_oracle_does(rows):
    lines, problems = parse_ledger(ledger_text(rows), "l.csv")
    typed, expected = oracle(rows, "l.csv")
    assert problems == expected
    assert as_records(lines) == typed
    assert list(lines.columns) == list(LEDGER_COLUMNS)
    for c in LEDGER_COLUMNS:
        want = object if c in TEXT_COLUMNS else bool if c == "late" else np.int64
        assert lines[c].dtype == want, c


@given(st.lists(amounts, max_size=30))
def test_parse_amounts_is_the_oracle_value_by_value(texts):
    pence, ok = parse_amounts(pd.Series(texts, dtype=str))
    for text, p, good in zip(texts, pence.tolist(), ok.tolist()):
        want = oracle_units(text, r"-?[0-9]+\.[0-9]{2}")
        assert good == (want is not None) and p == (want or 0), text


@pytest.mark.parametrize("text, day", [
    ("2300-01-01", (date(2300, 1, 1) - date(1970, 1, 1)).days),  # was read as -92974
    ("1600-03-01", (date(1600, 3, 1) - date(1970, 1, 1)).days),
    ("0001-01-01", (date(1, 1, 1) - date(1970, 1, 1)).days),
    ("9999-12-31", (date(9999, 12, 31) - date(1970, 1, 1)).days),
])
def test_dates_far_from_today_are_exact(text, day):
    lines, problems = parse_ledger(ledger_text([{**GOOD, "price_from": text}]), "l.csv")
    assert problems == [] and lines["price_from"].tolist() == [day]


@pytest.mark.parametrize("column, text", [
    ("achieved_on", "0000-01-01"),            # no year 0 (was accepted as a day in 1677)
    ("achieved_on", "٢٠٢٢-٠١-٠١"),            # digits other than ASCII
    ("amount", "١٢.٥٠"),                        # (were read as 12.50)
    ("amount", "12.50\n"),                     # a quoted line break after the amount
    ("amount", "92233720368547758.08"),        # more pence than an int64 holds (was a crash)
    ("share", "922337203685477.5808"),
])
def test_values_the_old_parser_let_through_or_crashed_on_are_problems(column, text):
    lines, problems = parse_ledger(ledger_text([GOOD, {**GOOD, column: text}]), "l.csv")
    assert [(p.line, p.col, p.code) for p in problems] == [
        (3, LEDGER_COLUMNS.index(column) + 1, "bad-ledger")]


def typed_lines() -> st.SearchStrategy[pd.DataFrame]:
    text = st.text(st.sampled_from('ab ,"é-1'), max_size=6)
    day = st.one_of(st.just(int(NO_DAY)), st.dates().map(lambda d: (d - date(1970, 1, 1)).days))
    one = st.fixed_dictionaries({
        **{c: text for c in TEXT_COLUMNS},
        **{c: day for c in DAY_COLUMNS},
        **{c: st.integers(-(2**63), 2**63 - 1) for c in PENCE_COLUMNS},
        "share": st.integers(0, 2**63 - 1), "late": st.booleans()})
    return st.lists(one, max_size=10).map(
        lambda rs: pd.DataFrame({c: pd.Series([r[c] for r in rs], dtype=(
            object if c in TEXT_COLUMNS else bool if c == "late" else np.int64))
            for c in LEDGER_COLUMNS}))


@given(typed_lines())
def test_render_then_parse_gives_the_lines_back(lines):
    lines = lines.assign(kind=np.where(np.arange(len(lines)) % 2, "payment", "reversal"))
    back, problems = parse_ledger(render_ledger(lines), "l.csv")
    assert problems == []
    pd.testing.assert_frame_equal(back, lines.astype({"kind": object}), check_exact=True)


def test_not_a_ledger():
    _, problems = parse_ledger("a,b\n1,2\n", "l.csv")
    assert [(p.line, p.col, p.code) for p in problems] == [(1, None, "bad-ledger")]
    _, problems = parse_ledger(ledger_text([GOOD]) + ",".join(["x"] * 19) + "\n", "l.csv")
    assert [(p.line, p.col, p.code) for p in problems] == [(None, None, "bad-ledger")]


# --- a history: several files, read together when safe, one by one otherwise -----------------

files = st.lists(st.tuples(st.lists(row, max_size=5),
                           st.sampled_from(["plain", "plain", "plain", "crlf", "bom",
                                            "blank-line", "no-final-break", "header-only",
                                            "wide-row", "bad-header", "quoted-break"])),
                 min_size=1, max_size=4)


def write_file(path: Path, rows: list[dict], how: str) -> str:
    text = ledger_text(rows, crlf=how == "crlf")
    if how == "bom":
        text = "\ufeff" + text
    elif how == "blank-line":
        text = text.replace("\n", "\n\n", 1)
    elif how == "no-final-break":
        text = text[:-1]
    elif how == "header-only":
        text = ledger_text([])
    elif how == "wide-row":
        text += ",".join(["x"] * 19) + "\n"
    elif how == "bad-header":
        text = text.replace("line_id", "id", 1)
    elif how == "quoted-break":
        text = ledger_text(rows + [{**GOOD, "evidence_ref": "E\n2"}])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path.read_text("utf-8")


@given(files)
def test_a_history_reads_as_its_files_one_by_one(tmp_path_factory, spec):
    root = tmp_path_factory.mktemp("ledgers")
    periods = [parse_period(f"20{20 + k // 4}-Q{k % 4 + 1}", "quarter") for k in range(len(spec))]
    frames, expected = [], []
    for p, (rows, how) in zip(periods, spec):
        text = write_file(root / p.label / "ledger.csv", rows, how)
        lines, problems = parse_ledger(text, f"ledgers/{p.label}/ledger.csv")
        frames.append(lines)
        expected += problems
    if expected:
        with pytest.raises(ProblemsFound) as e:
            read_history(root, periods, "ledgers")
        assert e.value.problems == ProblemsFound(expected).problems
        return
    history = read_history(root, periods, "ledgers")
    assert history.periods == tuple(p.label for p in periods)
    want = pd.concat(frames, ignore_index=True)
    pd.testing.assert_frame_equal(history.lines, want, check_exact=True)
