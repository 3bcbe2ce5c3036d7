"""sib.period: claim periods (calendar quarter, UK fiscal quarter from April, month)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, strategies as st

from sib.period import KINDS, PeriodError, parse_period, period_containing

days = st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31))
kinds = st.sampled_from(KINDS)


@pytest.mark.parametrize("label, kind, start, end", [
    ("2022-Q1", "quarter", date(2022, 1, 1), date(2022, 3, 31)),
    ("2022-Q2", "quarter", date(2022, 4, 1), date(2022, 6, 30)),
    ("2022-Q4", "quarter", date(2022, 10, 1), date(2022, 12, 31)),
    # fiscal years start in April: 2022-23-Q1 is April–June 2022, Q4 is January–March 2023
    ("2022-23-Q1", "fiscal-quarter", date(2022, 4, 1), date(2022, 6, 30)),
    ("2022-23-Q3", "fiscal-quarter", date(2022, 10, 1), date(2022, 12, 31)),
    ("2022-23-Q4", "fiscal-quarter", date(2023, 1, 1), date(2023, 3, 31)),
    ("1999-00-Q4", "fiscal-quarter", date(2000, 1, 1), date(2000, 3, 31)),
    ("2022-03", "month", date(2022, 3, 1), date(2022, 3, 31)),
    ("2024-02", "month", date(2024, 2, 1), date(2024, 2, 29)),  # leap year
    ("2023-02", "month", date(2023, 2, 1), date(2023, 2, 28)),
    ("2022-12", "month", date(2022, 12, 1), date(2022, 12, 31)),
])
def test_parse_each_kind(label: str, kind: str, start: date, end: date) -> None:
    p = parse_period(label, kind)
    assert (p.label, p.kind, p.start, p.end) == (label, kind, start, end)
    assert str(p) == label


def test_parse_trims_spaces() -> None:
    assert parse_period(" 2022-Q1\n", "quarter").label == "2022-Q1"


@pytest.mark.parametrize("label, kind, says", [
    ("2022-Q5", "quarter", "write it like '2022-Q1'"),
    ("2022Q1", "quarter", "is not a quarter period"),
    ("22-Q1", "quarter", "is not a quarter period"),
    ("", "quarter", "is not a quarter period"),
    ("2022-13", "month", "write it like '2022-03'"),
    ("2022-3", "month", "is not a month period"),
    ("2022-00", "month", "is not a month period"),
    ("2022-Q1", "fiscal-quarter", "is a quarter period, but this contract claims by "
                                  "fiscal-quarter; write it like '2022-23-Q1'"),
    ("2022-03", "quarter", "is a month period, but this contract claims by quarter"),
    ("2022-23-Q1", "month", "is a fiscal-quarter period"),
    ("2022-24-Q1", "fiscal-quarter", "2022 is followed by 23; write it like '2022-23-Q1'"),
    ("2022-23-Q5", "fiscal-quarter", "is not a fiscal-quarter period"),
    ("0000-Q1", "quarter", "years 0001 to 9999"),
    ("9999-00-Q4", "fiscal-quarter", "years 0001 to 9999"),  # would start in year 10000
])
def test_malformed_periods_say_how_to_fix_them(label: str, kind: str, says: str) -> None:
    with pytest.raises(PeriodError) as e:
        parse_period(label, kind)
    assert says in str(e.value)


@pytest.mark.parametrize("label, kind, after", [
    ("2022-Q4", "quarter", "2023-Q1"),
    ("2022-23-Q3", "fiscal-quarter", "2022-23-Q4"),
    ("2022-23-Q4", "fiscal-quarter", "2023-24-Q1"),
    ("2099-00-Q4", "fiscal-quarter", "2100-01-Q1"),
    ("2022-12", "month", "2023-01"),
])
def test_next_and_previous(label: str, kind: str, after: str) -> None:
    p = parse_period(label, kind)
    assert p.next().label == after
    assert parse_period(after, kind).previous() == p
    assert p < p.next()


@pytest.mark.parametrize("day, kind, label", [
    (date(2022, 5, 15), "quarter", "2022-Q2"),
    (date(2022, 5, 15), "fiscal-quarter", "2022-23-Q1"),
    (date(2023, 2, 1), "fiscal-quarter", "2022-23-Q4"),
    (date(2023, 3, 31), "fiscal-quarter", "2022-23-Q4"),
    (date(2023, 4, 1), "fiscal-quarter", "2023-24-Q1"),
    (date(2019, 1, 2), "quarter", "2019-Q1"),  # West London's service_start
    (date(2022, 5, 15), "month", "2022-05"),
])
def test_period_containing(day: date, kind: str, label: str) -> None:
    assert period_containing(day, kind).label == label


@given(days, kinds)
def test_period_containing_contains_the_day_and_parses_back(day: date, kind: str) -> None:
    p = period_containing(day, kind)
    assert p.start <= day <= p.end
    assert parse_period(p.label, kind) == p
    assert period_containing(p.start, kind) == p == period_containing(p.end, kind)


@given(days, kinds)
def test_next_and_previous_round_trip_and_leave_no_gap(day: date, kind: str) -> None:
    p = period_containing(day, kind)
    assert p.next().previous() == p
    assert p.previous().next() == p
    assert p.next().start == p.end + timedelta(days=1)
    assert p.previous().end == p.start - timedelta(days=1)
    months = 1 if kind == "month" else 3
    assert (p.end.year * 12 + p.end.month) - (p.start.year * 12 + p.start.month) == months - 1
