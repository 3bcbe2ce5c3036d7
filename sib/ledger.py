"""Ledger files: the columns and formats of ledger.csv and decisions.csv, and issued history.

After evidence, before reconcile in the flow. Renders typed line/decision frames to the
exact bytes of the files (fixed column order, `\\n` line ends, two-decimal money, four-decimal
shares, ISO dates) and parses them back, so that the engine's input (earlier claims) and
output (this claim) have one shape. Parsing is exact and strict (integers from the digits,
never a float; every malformed value a located problem) and whole-column: amounts, shares
and dates repeat heavily, so each column is parsed once per distinct value, and the
ledgers of a history are read as one CSV when that reads them exactly as one by one.
Reads issued claims; writing a claim is issue.py's job. Must not compute eligibility or
money.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sib import money
from sib.evidence import NO_DAY, day_number, days_text
from sib.period import Period, PeriodError, parse_period
from sib.problems import Problem, ProblemsFound, SibError

LEDGER_COLUMNS = ("line_id", "period", "kind", "milestone_id", "participant_id", "outcome",
                  "achieved_on", "verified_on", "evidence_ref", "price_from", "price", "funder",
                  "share", "amount", "capped", "cap", "late", "reverses")
DECISION_COLUMNS = ("milestone_id", "participant_id", "milestone", "outcome", "decision",
                    "reason", "detail", "amount", "capped")
DAY_COLUMNS = ("achieved_on", "verified_on", "price_from")
PENCE_COLUMNS = ("price", "amount", "capped")
TEXT_COLUMNS = ("line_id", "period", "kind", "milestone_id", "participant_id", "outcome",
                "evidence_ref", "funder", "cap", "reverses")
MANIFEST_FORMAT = "sib-ledger/1"

_AMOUNT = re.compile(r"-?[0-9]+\.[0-9]{2}")  # fullmatch; ASCII digits only
_SHARE = re.compile(r"[0-9]+\.[0-9]{4}")
_INT64 = (-(2**63), 2**63)


def empty_lines() -> pd.DataFrame:
    """A typed, empty ledger-lines frame."""
    cols: dict[str, pd.Series] = {}
    for c in LEDGER_COLUMNS:
        if c in DAY_COLUMNS or c in PENCE_COLUMNS or c == "share":
            cols[c] = pd.Series([], dtype=np.int64)
        elif c == "late":
            cols[c] = pd.Series([], dtype=bool)
        else:
            cols[c] = pd.Series([], dtype=object)
    return pd.DataFrame(cols)


def _each_distinct(values: np.ndarray, fmt) -> np.ndarray:
    """fmt(distinct values) gathered back to every row: a column's values repeat heavily."""
    codes, uniques = pd.factorize(values)
    return np.asarray(fmt(uniques), dtype=object)[codes] if len(uniques) else \
        np.array([], dtype=object)


def fmt_amounts(values: np.ndarray) -> np.ndarray:
    """Pence as ledger-file amounts ('-1234.50'), each distinct value formatted once."""
    return _each_distinct(np.asarray(values, dtype=np.int64),
                          lambda u: [money.fmt_amount(v) for v in u.tolist()])


_SPECIAL = re.compile(r'[,"\r\n]')


def _field(value: str) -> str:
    """One CSV field as the csv module writes it (minimal quoting)."""
    if not _SPECIAL.search(value):
        return value
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([value, ""])  # two fields: no lone-field rule
    return buf.getvalue()[:-2]


def _quoted(values: np.ndarray) -> list[str]:
    """A column's fields: most are text needing no quotes, then as they are; otherwise each
    distinct value quoted once, and a missing one (None, NaN) an empty field, as pandas'
    to_csv wrote it."""
    texts = values.tolist()
    try:
        plain = not _SPECIAL.search("".join(texts))
    except TypeError:  # not all text
        plain = False
    if plain:
        return texts
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=False)
    fields = ["" if pd.isna(v) else _field(str(v)) for v in uniques.tolist()]
    return np.array(fields + [""], dtype=object)[codes].tolist()


def _csv(columns: dict[str, np.ndarray]) -> str:
    """CSV text of aligned text columns, header first, with the csv module's minimal quoting
    and `\\n` line ends: what pandas' to_csv wrote before (its writer is that module), but
    each distinct value quoted once and each row joined once."""
    if len(columns) < 2:  # a lone empty field is written "" (sib's files have 9+ columns)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(
            [list(columns), *zip(*(a.tolist() for a in columns.values()))])
        return buf.getvalue()
    rows = map(",".join, zip(*(_quoted(a) for a in columns.values())))
    return "\n".join([",".join(_field(c) for c in columns), *rows]) + "\n"


def render_ledger(lines) -> str:
    """ledger.csv text for typed lines (already in file order, with line_ids): a frame or
    any table of columns by name (the engine's columns need no frame)."""
    out = {}
    for c in LEDGER_COLUMNS:
        v = np.asarray(lines[c])
        if c in DAY_COLUMNS:
            out[c] = _each_distinct(v.astype(np.int64), days_text)
        elif c in PENCE_COLUMNS:
            out[c] = fmt_amounts(v)
        elif c == "share":
            out[c] = _each_distinct(v.astype(np.int64),
                                    lambda u: [money.fmt_share(x) for x in u.tolist()])
        elif c == "late":
            out[c] = np.where(v.astype(bool), "true", "false").astype(object)
        else:
            out[c] = v.astype(object)
    return _csv(out)


def render_decisions(decisions) -> str:
    """decisions.csv text for typed decisions (sorted by milestone_id): a frame or any table
    of columns by name."""
    return _csv({c: fmt_amounts(np.asarray(decisions[c])) if c in ("amount", "capped")
                 else np.asarray(decisions[c], dtype=object) for c in DECISION_COLUMNS})


def _distinct(values) -> tuple[np.ndarray, np.ndarray]:
    """(codes, distinct): each value as the position of its distinct value, so that a column
    whose values repeat (dates, amounts, shares) is checked and parsed once per distinct value.
    """
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    # a missing value (None or NaN, which read_csv never gives here) is code -1: the last
    # entry, None, which is no valid anything
    return codes, np.append(np.asarray(uniques, dtype=object), None)


def _units(texts: np.ndarray, pattern: re.Pattern) -> tuple[np.ndarray, np.ndarray]:
    """Decimal texts fully matching `pattern` as integers in their last unit (pence, or
    ten-thousandths of a percent); (units, ok). Digits are ASCII; a value that does not fit
    an int64 is not ok. Never through a float."""
    units = np.zeros(len(texts), dtype=np.int64)
    ok = np.zeros(len(texts), dtype=bool)
    for k, t in enumerate(texts.tolist()):
        if isinstance(t, str) and pattern.fullmatch(t):
            n = int(t.replace(".", "", 1))
            if _INT64[0] <= n < _INT64[1]:
                units[k], ok[k] = n, True
    return units, ok


def _iso_days(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """YYYY-MM-DD texts (ASCII digits, a day that exists, years 0001–9999) as day numbers;
    (days, ok), whole-array integer arithmetic on the characters."""
    days = np.full(len(texts), NO_DAY, dtype=np.int64)
    ok = np.zeros(len(texts), dtype=bool)
    shaped = np.fromiter((isinstance(t, str) and len(t) == 10 for t in texts.tolist()),
                         dtype=bool, count=len(texts))
    if not shaped.any():
        return days, ok
    chars = np.array(texts[shaped].tolist(), dtype="<U10").view(np.uint32).reshape(-1, 10)
    digits = chars[:, [0, 1, 2, 3, 5, 6, 8, 9]].astype(np.int64) - ord("0")
    form = (((digits >= 0) & (digits <= 9)).all(axis=1)
            & (chars[:, 4] == ord("-")) & (chars[:, 7] == ord("-")))
    digits = np.where(form[:, None], digits, 0)
    year = digits[:, :4] @ np.array([1000, 100, 10, 1])
    month = digits[:, 4] * 10 + digits[:, 5]
    day = digits[:, 6] * 10 + digits[:, 7]
    good = form & (year >= 1) & (month >= 1) & (month <= 12)
    months = np.where(good, (year - 1970) * 12 + month - 1, 0).astype("datetime64[M]")
    first = months.astype("datetime64[D]").astype(np.int64)
    length = (months + 1).astype("datetime64[D]").astype(np.int64) - first
    good &= (day >= 1) & (day <= length)
    at = np.flatnonzero(shaped)[good]
    days[at] = first[good] + day[good] - 1
    ok[at] = True
    return days, ok


def parse_amounts(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """'-1234.50' strings as pence; (pence, ok). Parsed once per distinct value."""
    codes, distinct = _distinct(values)
    pence, ok = _units(distinct, _AMOUNT)
    return pence[codes], ok[codes]


# the checks of a ledger line, in the order their problems are listed for each file
_CHECKS = (*PENCE_COLUMNS, *DAY_COLUMNS, "share", "late", "kind")


def _raw_ledger(text: str | bytes, shown: str) -> tuple[pd.DataFrame | None, list[Problem]]:
    """ledger.csv text as a frame of text cells, or None and the problem with the file.
    Given bytes, they are UTF-8 with no byte-order mark and no carriage return, so that
    they read exactly as their text does."""
    try:
        # object, not str: the cells are used as numpy arrays of Python strings
        raw = pd.read_csv(io.BytesIO(text) if isinstance(text, bytes) else io.StringIO(text),
                          dtype=object, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        return None, [Problem(shown, None, None, "bad-ledger", f"not a ledger CSV: {e}")]
    if tuple(raw.columns) != LEDGER_COLUMNS:
        return None, [Problem(shown, 1, None, "bad-ledger",
                              "the header is not the ledger header: " + ",".join(LEDGER_COLUMNS))]
    return raw, []


def _columns(raws: list[pd.DataFrame]) -> dict[str, np.ndarray]:
    """The text frames of ledger files, one after the other, as one new array per column."""
    columns = [dict(r.items()) for r in raws]  # (items() is the cheap way to the columns)
    return {c: np.concatenate([cols[c].to_numpy(dtype=object) for cols in columns]
                              + [np.array([], dtype=object)]) for c in LEDGER_COLUMNS}


def _typed_lines(text: dict[str, np.ndarray], sizes: list[int], shown: list[str],
                 index: pd.Index | None = None) -> tuple[pd.DataFrame, list[Problem]]:
    """The text cells of one or more ledger files (each column a new array of all the
    files' lines, in order; `sizes` lines from each file) as one frame of typed lines, and
    a problem for every malformed value, listed file by file, then check by check
    (`_CHECKS`), then line by line.

    Each column is checked and parsed once per distinct value (dates, amounts and shares
    repeat heavily), across all the files at once.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    file_of = np.repeat(np.arange(len(sizes)), sizes)
    line_of = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 2
    found: list[tuple[int, int, Problem]] = []

    def report(check: str, bad: np.ndarray, message) -> None:
        rank, col = _CHECKS.index(check), LEDGER_COLUMNS.index(check) + 1
        for i in np.flatnonzero(bad).tolist():
            found.append((int(file_of[i]), rank, Problem(
                shown[file_of[i]], int(line_of[i]), col, "bad-ledger", message(text[check][i]))))

    out: dict[str, pd.Series | np.ndarray] = {}
    for c in PENCE_COLUMNS:
        codes, distinct = _distinct(text[c])
        pence, ok = _units(distinct, _AMOUNT)
        report(c, ~ok[codes], lambda v, c=c: f"{c} '{v}' is not an amount like 1234.50")
        out[c] = pence[codes]
    for c in DAY_COLUMNS:
        codes, distinct = _distinct(text[c])
        days, ok = _iso_days(distinct)
        blank = np.fromiter((v == "" for v in distinct.tolist()), dtype=bool,
                            count=len(distinct))
        report(c, ~(ok | blank)[codes], lambda v, c=c: f"{c} '{v}' is not a date")
        out[c] = days[codes]
    codes, distinct = _distinct(text["share"])
    shares, ok = _units(distinct, _SHARE)
    report("share", ~ok[codes], lambda v: f"share '{v}' is not a percentage like 45.2600")
    out["share"] = shares[codes]
    late = text["late"] == "true"
    report("late", ~(late | (text["late"] == "false")),
           lambda v: f"late '{v}' is not true or false")
    out["late"] = late
    report("kind", ~((text["kind"] == "payment") | (text["kind"] == "reversal")),
           lambda v: f"kind '{v}' is not payment or reversal")
    for c in TEXT_COLUMNS:
        out[c] = text[c]
    index = index if index is not None else pd.RangeIndex(total)
    # the arrays are the caller's to give (new, or of a frame about to be dropped): hand
    # them over without copying 18 columns again
    lines = pd.DataFrame({c: pd.Series(out[c], index=index, copy=False,
                                       dtype=object if c in TEXT_COLUMNS else None)
                          for c in LEDGER_COLUMNS}, copy=False)
    found.sort(key=lambda f: (f[0], f[1]))  # stable: line order within a check
    return lines, [p for _, _, p in found]


def parse_ledger(text: str, shown: str) -> tuple[pd.DataFrame, list[Problem]]:
    """A ledger.csv text back into typed lines; problems for anything malformed."""
    raw, problems = _raw_ledger(text, shown)
    if raw is None:
        return empty_lines(), problems
    return _typed_lines(_columns([raw]), [len(raw)], [shown], raw.index)


@dataclass(frozen=True)
class History:
    """Claims issued before the one being computed.

    periods: their labels, in order.
    lines: all their ledger lines, in order, typed (as `parse_ledger` gives).
    """

    periods: tuple[str, ...]
    lines: pd.DataFrame

    @staticmethod
    def empty() -> "History":
        return History((), empty_lines())


def issued_periods(ledger_dir: Path, kind: str) -> list[Period]:
    """Periods with an issued claim (a folder with a manifest.json), in order."""
    if not ledger_dir.is_dir():
        return []
    out = []
    for d in ledger_dir.iterdir():
        if d.name.startswith(".") or not d.is_dir():
            continue
        try:
            p = parse_period(d.name, kind)
        except PeriodError:
            continue
        if (d / "manifest.json").is_file():
            out.append(p)
    return sorted(out)


def read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise SibError(f"{folder / 'manifest.json'} cannot be read: {e}") from None


_HEADER = (",".join(LEDGER_COLUMNS) + "\n").encode()


def _read_together(datas: list[bytes]) -> tuple[pd.DataFrame, list[int]] | None:
    """The text frame of several ledger files read as one CSV, and the lines from each;
    None unless that is sure to be what reading them one by one gives: each file the
    ledger header, then lines ending in a line break, each line one record (no blank
    line, no quoted line break: checked by counting), and the header's width throughout
    (else pandas errs, or takes the first column as the index)."""
    if not all(d.startswith(_HEADER) and d.endswith(b"\n") for d in datas):
        return None
    sizes = [d.count(b"\n") - 1 for d in datas]
    try:
        raw = pd.read_csv(io.BytesIO(b"".join(d[len(_HEADER):] for d in datas)), header=None,
                          names=list(LEDGER_COLUMNS), dtype=object, keep_default_na=False,
                          na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError):
        return None
    if not isinstance(raw.index, pd.RangeIndex) or len(raw) != sum(sizes):
        return None
    return raw, sizes


def read_history(ledger_dir: Path, periods: list[Period], shown_dir: str) -> History:
    """The typed lines of the given issued periods, in order."""
    datas: list[str | bytes] = []
    for p in periods:
        path = ledger_dir / p.label / "ledger.csv"
        try:
            data: str | bytes = path.read_bytes()
            data.decode("utf-8")  # as read_text would, so that an undecodable file is an error
            if data.startswith(codecs.BOM_UTF8) or b"\r" in data:
                data = path.read_text("utf-8")  # what the text is, line ends translated
        except (OSError, UnicodeDecodeError) as e:
            raise SibError(f"{shown_dir}/{p.label}/ledger.csv cannot be read ({e}); "
                           "run `sib audit`") from None
        datas.append(data)
    names = [f"{shown_dir}/{p.label}/ledger.csv" for p in periods]
    together = (_read_together(datas) if datas and all(isinstance(d, bytes) for d in datas)
                else None)
    if together is not None:  # the usual case: one read, no copying of columns
        raw, sizes = together
        lines, problems = _typed_lines({c: s.to_numpy(dtype=object) for c, s in raw.items()},
                                       sizes, names)
        if problems:
            raise ProblemsFound(problems)
        return History(tuple(p.label for p in periods), lines)
    raws, shown = [], []
    problems: list[Problem] = []
    for data, name in zip(datas, names):
        raw, probs = _raw_ledger(data, name)
        problems += probs  # a file that is not a ledger: its one problem, in period order
        if raw is not None:
            raws.append(raw)
            shown.append(name)
    if not raws:
        if problems:
            raise ProblemsFound(problems)
        return History(tuple(p.label for p in periods), empty_lines())
    lines, probs = _typed_lines(_columns(raws), [len(r) for r in raws], shown)
    if problems or probs:
        raise ProblemsFound(problems + probs)
    return History(tuple(p.label for p in periods), lines)


def day_of(d) -> int:
    return day_number(d)
