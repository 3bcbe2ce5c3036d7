"""Claim periods: calendar quarters, UK fiscal quarters and months.

Parses period labels (`2022-Q1`, `2022-23-Q1`, `2022-03`), gives their first and last days,
and steps through them in order. Pure; imports nothing from sib. Must not know about
contracts or ledgers beyond the period kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

KINDS = ("quarter", "fiscal-quarter", "month")

_EXAMPLE = {"quarter": "2022-Q1", "fiscal-quarter": "2022-23-Q1", "month": "2022-03"}
_PATTERNS = {
    "quarter": re.compile(r"^(\d{4})-Q([1-4])$"),
    "fiscal-quarter": re.compile(r"^(\d{4})-(\d{2})-Q([1-4])$"),
    "month": re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$"),
}


class PeriodError(ValueError):
    """A period label that is malformed or of the wrong kind; the message says how to fix it."""


@dataclass(frozen=True, order=True, slots=True)
class Period:
    """One claim period.

    index: months since year 0 of the first month (orders periods of one kind).
    kind: quarter | fiscal-quarter | month.
    label: as written by users (`2022-Q1`).
    start, end: first and last day, inclusive.
    """

    index: int
    kind: str
    label: str
    start: date
    end: date

    def next(self) -> "Period":
        return _from_index(self.kind, self.index + _months(self.kind))

    def previous(self) -> "Period":
        return _from_index(self.kind, self.index - _months(self.kind))

    def __str__(self) -> str:
        return self.label


def _months(kind: str) -> int:
    return 1 if kind == "month" else 3


def _month_end(year: int, month: int) -> date:
    if month == 12:
        return date(year, 12, 31)
    return date.fromordinal(date(year, month + 1, 1).toordinal() - 1)


def _from_index(kind: str, index: int) -> Period:
    year, m0 = divmod(index, 12)
    month = m0 + 1
    n = _months(kind)
    end_year, end_m0 = divmod(index + n - 1, 12)
    start = date(year, month, 1)
    end = _month_end(end_year, end_m0 + 1)
    if kind == "month":
        label = f"{year:04d}-{month:02d}"
    elif kind == "quarter":
        label = f"{year:04d}-Q{m0 // 3 + 1}"
    else:
        fy = year if month >= 4 else year - 1
        q = ((month - 4) % 12) // 3 + 1
        label = f"{fy:04d}-{(fy + 1) % 100:02d}-Q{q}"
    return Period(index, kind, label, start, end)


def period_containing(day: date, kind: str) -> Period:
    """The period of `kind` that contains `day`."""
    index = day.year * 12 + day.month - 1
    if kind == "quarter":
        index -= (day.month - 1) % 3
    elif kind == "fiscal-quarter":
        index -= (day.month - 4) % 3
    return _from_index(kind, index)


def parse_period(text: str, kind: str) -> Period:
    """The period labelled `text`, which must be of `kind`; PeriodError says how to fix it."""
    text = text.strip()
    m = _PATTERNS[kind].match(text)
    if not m:
        other = [k for k in KINDS if k != kind and _PATTERNS[k].match(text)]
        if other:
            raise PeriodError(
                f"'{text}' is a {other[0]} period, but this contract claims by {kind}; "
                f"write it like '{_EXAMPLE[kind]}'"
            )
        raise PeriodError(
            f"'{text}' is not a {kind} period; write it like '{_EXAMPLE[kind]}'"
        )
    year = int(m.group(1))
    if kind == "quarter":
        index = year * 12 + (int(m.group(2)) - 1) * 3
    elif kind == "month":
        index = year * 12 + int(m.group(2)) - 1
    else:
        if int(m.group(2)) != (year + 1) % 100:
            raise PeriodError(
                f"'{text}' is not a fiscal year: {year} is followed by "
                f"{(year + 1) % 100:02d}; write it like "
                f"'{year}-{(year + 1) % 100:02d}-Q{m.group(3)}'"
            )
        index = year * 12 + 3 + (int(m.group(3)) - 1) * 3
    try:
        return _from_index(kind, index)
    except ValueError:  # date() has no year 0 and no year after 9999
        raise PeriodError(
            f"'{text}' is outside the calendar sib knows (years 0001 to 9999); "
            f"write it like '{_EXAMPLE[kind]}'"
        ) from None
