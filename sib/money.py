"""Money and shares: the one place that converts, rounds and splits.

Integer pence inside, `Decimal` at the edges, never a float. Shares are percentages with at
most four decimals, held as integer *share units* (1 unit = 0.0001%, so 100% = 1,000,000).
Imports nothing from sib but problems. Must not read files or know about contracts.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Sequence

import numpy as np

SHARE_UNITS = 1_000_000  # 100.0000 %
# Amounts are held as int64 pence; a bound far above any contract keeps every sum of them
# exact in int64 and every Decimal operation on them within the default context.
MAX_AMOUNT = Decimal(1_000_000_000_000)  # £1 trillion (exclusive)
_SHARE_SCALE = 10_000


class MoneyError(ValueError):
    """A value that is not valid money or share; the message says why."""


def to_decimal(value: object) -> Decimal:
    """Exact decimal from an int, a Decimal or a numeric string. Floats are refused."""
    if isinstance(value, bool) or isinstance(value, float):
        raise MoneyError(f"{value!r} is not an exact decimal")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, str):
        text = value.strip().replace(",", "")
        if text.startswith("£"):
            text = text[1:]
        try:
            d = Decimal(text)
        except InvalidOperation:
            raise MoneyError(f"{value!r} is not a number") from None
    else:
        raise MoneyError(f"{value!r} is not a number")
    if not d.is_finite():
        raise MoneyError(f"{value!r} is not a finite number")
    return d


def decimal_places(d: Decimal) -> int:
    """Decimal places that matter (trailing zeros do not count): 1.50 has 1, 1E+2 has 0.

    Read from the digits, not via `normalize()`, which works in the context's precision
    and exponent range: it overflows on 1E+999999999 and rounds 1E-999999999 to zero.
    """
    _sign, digits, exponent = d.as_tuple()
    significant = "".join(map(str, digits)).rstrip("0")
    if not significant:
        return 0
    return max(0, -(int(exponent) + len(digits) - len(significant)))


def pence(value: object) -> int:
    """Integer pence from a money value with at most two decimal places and ≥ 0."""
    d = to_decimal(value)
    if decimal_places(d) > 2:
        raise MoneyError(f"{value} has more than two decimal places")
    if d < 0:
        raise MoneyError(f"{value} is negative")
    if d >= MAX_AMOUNT:
        raise MoneyError(f"{value} is too large; amounts are below £{MAX_AMOUNT:,}")
    return int(d * 100)


def share_units(value: object) -> int:
    """Integer share units (0.0001 %) from a percentage with at most four decimals, > 0."""
    d = to_decimal(value)
    if decimal_places(d) > 4:
        raise MoneyError(f"{value} has more than four decimal places")
    if d <= 0:
        raise MoneyError(f"{value} is not above zero")
    if d > 100:
        raise MoneyError(f"{value} is above 100")
    return int(d * _SHARE_SCALE)


def pounds(p: int) -> Decimal:
    """Pence as an exact Decimal of pounds (two places)."""
    return (Decimal(int(p)) / 100).quantize(Decimal("0.01"))


def fmt_amount(p: int) -> str:
    """Pence as a plain two-decimal string, as in ledger files: -1234.50."""
    p = int(p)
    sign = "-" if p < 0 else ""
    a = abs(p)
    return f"{sign}{a // 100}.{a % 100:02d}"


def fmt_gbp(p: int) -> str:
    """Pence as money for people: £1,234.50 (−£1,234.50 when negative)."""
    p = int(p)
    sign = "-" if p < 0 else ""
    a = abs(p)
    return f"{sign}£{a // 100:,}.{a % 100:02d}"


def fmt_share(units: int) -> str:
    """Share units as the four-decimal percentage of ledger files: 45.2600."""
    return f"{units // _SHARE_SCALE}.{units % _SHARE_SCALE:04d}"


def fmt_share_short(units: int) -> str:
    """Share units as a short percentage for people: 45.26%."""
    d = Decimal(units) / _SHARE_SCALE
    return f"{d.normalize():f}%"


def split(total: int, units: Sequence[int]) -> list[int]:
    """Split `total` pence by shares (Σ units = 100%) to the penny: largest remainder.

    Each part gets ⌊total·sᵢ/100⌋; the pennies left over go one each to the parts with
    the largest remainders, ties to the part listed first. Parts add up to `total`.
    """
    floors = [total * u // SHARE_UNITS for u in units]
    rems = [total * u % SHARE_UNITS for u in units]
    left = total - sum(floors)
    order = sorted(range(len(units)), key=lambda i: (-rems[i], i))
    for i in order[:left]:
        floors[i] += 1
    return floors


def bounded_split(payable: int, units: Sequence[int], full: Sequence[int]) -> list[int]:
    """Split a capped amount so that no part exceeds its part of the full price.

    As `split`, but a leftover penny passes over a part already at its `full` bound,
    going round the remainder order again if pennies remain. Requires payable ≤ Σ full;
    `full` is meant to be `split(price, units)` for a price ≥ payable, where no floor can
    pass its bound — for any other `full` the floors are held to it as well.
    """
    if payable > sum(full):  # else the floors alone could pass a part's bound, unnoticed
        raise ValueError("bounded_split: payable exceeds the full parts")
    floors = [min(payable * u // SHARE_UNITS, f) for u, f in zip(units, full)]
    rems = [payable * u % SHARE_UNITS for u in units]
    left = payable - sum(floors)
    order = sorted(range(len(units)), key=lambda i: (-rems[i], i))
    while left > 0:
        moved = False
        for i in order:
            if left == 0:
                break
            if floors[i] < full[i]:
                floors[i] += 1
                left -= 1
                moved = True
        if not moved:  # cannot happen while payable ≤ Σ full; guard against a hang
            raise ValueError("bounded_split: payable exceeds the full parts")
    return floors


def split_array(totals: np.ndarray, units: Sequence[int]) -> np.ndarray:
    """Vectorised `split` of many totals by the same shares: shape (len(totals), len(units))."""
    t = np.asarray(totals, dtype=np.int64)[:, None]
    u = np.asarray(units, dtype=np.int64)[None, :]
    prod = t * u
    floors = prod // SHARE_UNITS
    rems = prod % SHARE_UNITS
    left = t[:, 0] - floors.sum(axis=1)
    # rank parts by (-remainder, position): stable argsort on -rems keeps listed order on ties
    order = np.argsort(-rems, axis=1, kind="stable")
    rank = np.empty_like(order)
    rows = np.arange(order.shape[0])[:, None]
    rank[rows, order] = np.arange(order.shape[1])[None, :]
    floors += (rank < left[:, None]).astype(np.int64)
    return floors
