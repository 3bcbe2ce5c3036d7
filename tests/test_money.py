"""sib.money: exact conversion, formatting, and the one rounding rule (largest remainder).

Shares are integer units of 0.0001 % (100 % = 1,000,000). Each worked split below has its
arithmetic written next to it.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, strategies as st

from sib import money
from sib.money import SHARE_UNITS, MoneyError

# --- strategies -------------------------------------------------------------------------------


@st.composite
def shares(draw, max_parts: int = 8) -> list[int]:
    """A split's shares in units, each > 0, adding up to exactly 100 % (1,000,000 units)."""
    n = draw(st.integers(1, max_parts))
    cuts = draw(st.lists(st.integers(1, SHARE_UNITS - 1), min_size=n - 1, max_size=n - 1,
                         unique=True))
    edges = [0, *sorted(cuts), SHARE_UNITS]
    return [b - a for a, b in zip(edges, edges[1:])]


pence_amounts = st.integers(min_value=0, max_value=10**11)  # up to £1bn


# --- to_decimal, decimal_places, pence, share_units ----------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (12, Decimal("12")),
    (Decimal("45.26"), Decimal("45.26")),
    ("2600.00", Decimal("2600.00")),
    (" 1,234.50 ", Decimal("1234.50")),
    ("£76,950.00", Decimal("76950.00")),
])
def test_to_decimal_reads_exact_values(value, expected) -> None:
    d = money.to_decimal(value)
    assert d == expected and isinstance(d, Decimal)


@pytest.mark.parametrize("value", [0.1, 2600.0, float("nan"), True, None, "abc", "NaN",
                                   "Infinity", [1]])
def test_to_decimal_refuses_floats_and_non_numbers(value) -> None:
    with pytest.raises(MoneyError):
        money.to_decimal(value)


@pytest.mark.parametrize("text, places", [
    ("1", 0), ("1.50", 1), ("1.05", 2), ("0.00", 0), ("100", 0), ("1E+2", 0),
    ("45.2613", 4), ("1E-999999999", 999999999), ("1E+999999999", 0),
])
def test_decimal_places_ignores_trailing_zeros_and_handles_any_exponent(text, places) -> None:
    assert money.decimal_places(Decimal(text)) == places


@pytest.mark.parametrize("value, pence", [
    ("2600.00", 260000), ("0.07", 7), (12, 1200), (Decimal("1075000.5"), 107500050),
    ("0", 0), ("999999999999.99", 99999999999999),
])
def test_pence(value, pence) -> None:
    assert money.pence(value) == pence


@pytest.mark.parametrize("value, why", [
    ("1.005", "more than two decimal places"),
    ("-1", "negative"),
    ("1000000000000", "too large"),
    ("1E+999999999", "too large"),
    (1.5, "not an exact decimal"),
])
def test_pence_refuses(value, why) -> None:
    with pytest.raises(MoneyError, match=why):
        money.pence(value)


@pytest.mark.parametrize("value, units", [
    ("45.26", 452600), (100, 1_000_000), ("0.0001", 1), ("6.66", 66600),
])
def test_share_units(value, units) -> None:
    assert money.share_units(value) == units


@pytest.mark.parametrize("value, why", [
    ("0", "not above zero"), ("-5", "not above zero"), ("1.00001", "four decimal places"),
    ("100.0001", "above 100"), ("1E+999999999", "above 100"),
])
def test_share_units_refuses(value, why) -> None:
    with pytest.raises(MoneyError, match=why):
        money.share_units(value)


# --- formatting ---------------------------------------------------------------------------------

@pytest.mark.parametrize("p, amount, gbp", [
    (0, "0.00", "£0.00"),
    (5, "0.05", "£0.05"),
    (123450, "1234.50", "£1,234.50"),
    (123456789, "1234567.89", "£1,234,567.89"),
    (-123450, "-1234.50", "-£1,234.50"),
    (-5, "-0.05", "-£0.05"),
    (np.int64(260000), "2600.00", "£2,600.00"),
])
def test_amount_formats(p, amount, gbp) -> None:
    assert money.fmt_amount(p) == amount
    assert money.fmt_gbp(p) == gbp


@pytest.mark.parametrize("p, pounds", [(123450, "1234.50"), (-5, "-0.05"), (0, "0.00")])
def test_pounds_is_an_exact_two_place_decimal(p, pounds) -> None:
    assert str(money.pounds(p)) == pounds


@pytest.mark.parametrize("units, ledger, short", [
    (452600, "45.2600", "45.26%"),
    (1_000_000, "100.0000", "100%"),
    (1, "0.0001", "0.0001%"),
    (66600, "6.6600", "6.66%"),
])
def test_share_formats(units, ledger, short) -> None:
    assert money.fmt_share(units) == ledger
    assert money.fmt_share_short(units) == short


@given(pence_amounts)
def test_fmt_amount_reads_back_to_the_same_pence(p: int) -> None:
    assert money.pence(money.fmt_amount(p)) == p
    assert money.pence(money.fmt_gbp(p)) == p


# --- split ------------------------------------------------------------------------------------

def test_split_of_the_west_london_default_rule() -> None:
    # £2,600.00 × 45.26% = 1176.76; × 27.37% = 711.62; × 20.71% = 538.46; × 6.66% = 173.16
    # (these add up to 2600.00 with no penny left over)
    assert money.split(260000, [452600, 273700, 207100, 66600]) == [117676, 71162, 53846, 17316]


def test_split_gives_the_leftover_penny_to_the_largest_remainder() -> None:
    # £1.00 × 33.3333% = 33.333p (floor 33); × 33.3334% = 33.334p (floor 33, largest
    # remainder): 99p of floors, the 1p left goes to the 33.3334% part
    assert money.split(100, [333333, 333334, 333333]) == [33, 34, 33]


def test_split_ties_go_to_the_first_listed() -> None:
    # 1p × 50% = 0.5p each: equal remainders, so the first listed gets the penny
    assert money.split(1, [500000, 500000]) == [1, 0]
    # 2p × 33.3333% = 0.666666p twice, × 33.3334% = 0.666668p: the largest remainder
    # (third) gets one penny, then the first of the two tied gets the other
    assert money.split(2, [333333, 333333, 333334]) == [1, 0, 1]


def test_split_of_nothing_is_nothing() -> None:
    assert money.split(0, [452600, 547400]) == [0, 0]


@given(pence_amounts, shares())
def test_split_parts_add_up_exactly_and_each_is_within_a_penny(total: int, units: list[int]) -> None:
    parts = money.split(total, units)
    assert sum(parts) == total
    for part, u in zip(parts, units):
        exact = Fraction(total * u, SHARE_UNITS)
        assert 0 <= part and abs(part - exact) < 1


@given(pence_amounts, shares())
def test_split_rounds_up_exactly_the_largest_remainders_ties_first(total: int,
                                                                   units: list[int]) -> None:
    parts = money.split(total, units)
    rounded_up = [p * SHARE_UNITS > total * u for p, u in zip(parts, units)]
    rems = [total * u % SHARE_UNITS for u in units]
    for i in range(len(units)):
        for j in range(len(units)):
            if rounded_up[j] and not rounded_up[i]:
                # nobody left behind had a larger remainder, or an equal one listed earlier
                assert rems[i] < rems[j] or (rems[i] == rems[j] and i > j)


@given(st.lists(pence_amounts, min_size=1, max_size=20), shares())
def test_split_array_equals_split_row_by_row(totals: list[int], units: list[int]) -> None:
    rows = money.split_array(np.array(totals, dtype=np.int64), units)
    assert rows.tolist() == [money.split(t, units) for t in totals]


# --- bounded_split ----------------------------------------------------------------------------

def test_bounded_split_passes_a_penny_over_a_part_at_its_bound() -> None:
    # full price 3p split 50/50: [2, 1] (tie to the first). A cap lets 2p be paid: 1p each
    # by floors, nothing left over.
    assert money.bounded_split(2, [500000, 500000], [2, 1]) == [1, 1]
    # 3p of full parts [1, 2] at 50/50: floors [1, 1], the 1p left passes over the first
    # (already at its bound 1) to the second
    assert money.bounded_split(3, [500000, 500000], [1, 2]) == [1, 2]


def test_bounded_split_refuses_more_than_the_full_parts() -> None:
    with pytest.raises(ValueError):
        money.bounded_split(4, [500000, 500000], [2, 1])


@given(st.data(), pence_amounts, shares())
def test_bounded_split_never_exceeds_the_full_parts_and_adds_up(data, full_total: int,
                                                                units: list[int]) -> None:
    full = money.split(full_total, units)
    payable = data.draw(st.integers(0, full_total), label="payable")
    parts = money.bounded_split(payable, units, full)
    assert sum(parts) == payable
    assert all(0 <= p <= f for p, f in zip(parts, full))


@given(pence_amounts, shares())
def test_bounded_split_of_the_full_amount_is_the_plain_split(total: int, units: list[int]) -> None:
    full = money.split(total, units)
    assert money.bounded_split(total, units, full) == full
