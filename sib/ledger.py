"""Ledger files: the columns and formats of ledger.csv and decisions.csv, and issued history.

After evidence, before reconcile in the flow. Renders typed line/decision frames to the
exact bytes of the files (fixed column order, `\\n` line ends, two-decimal money, four-decimal
shares, ISO dates) and parses them back, so that the engine's input (earlier claims) and
output (this claim) have one shape. Reads issued claims; writing a claim is issue.py's job.
Must not compute eligibility or money.
"""

from __future__ import annotations

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

_AMOUNT = re.compile(r"^-?\d+\.\d{2}$")
_SHARE = re.compile(r"^\d+\.\d{4}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


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


def fmt_amounts(values: np.ndarray) -> list[str]:
    return [money.fmt_amount(v) for v in np.asarray(values, dtype=np.int64).tolist()]


def _csv(frame: pd.DataFrame) -> str:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def render_ledger(lines: pd.DataFrame) -> str:
    """ledger.csv text for typed lines (already in file order, with line_ids)."""
    out = pd.DataFrame({c: lines[c].astype(object) for c in LEDGER_COLUMNS})
    for c in DAY_COLUMNS:
        out[c] = days_text(lines[c].to_numpy())
    for c in PENCE_COLUMNS:
        out[c] = fmt_amounts(lines[c].to_numpy())
    out["share"] = [money.fmt_share(u) for u in lines["share"].astype(np.int64).tolist()]
    out["late"] = np.where(lines["late"].to_numpy(dtype=bool), "true", "false")
    return _csv(out)


def render_decisions(decisions: pd.DataFrame) -> str:
    """decisions.csv text for typed decisions (sorted by milestone_id)."""
    out = pd.DataFrame({c: decisions[c].astype(object) for c in DECISION_COLUMNS})
    out["amount"] = fmt_amounts(decisions["amount"].to_numpy())
    out["capped"] = fmt_amounts(decisions["capped"].to_numpy())
    return _csv(out)


def parse_amounts(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """'-1234.50' strings as pence; (pence, ok)."""
    s = values.astype(str)
    ok = s.str.match(_AMOUNT.pattern).to_numpy(dtype=bool)
    out = np.zeros(len(s), dtype=np.int64)
    if ok.any():
        parts = s[ok].str.replace(".", "", regex=False)
        out[ok] = parts.astype(np.int64).to_numpy()
    return out, ok


def parse_ledger(text: str, shown: str) -> tuple[pd.DataFrame, list[Problem]]:
    """A ledger.csv text back into typed lines; problems for anything malformed."""
    problems: list[Problem] = []
    try:
        raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        return empty_lines(), [Problem(shown, None, None, "bad-ledger", f"not a ledger CSV: {e}")]
    if tuple(raw.columns) != LEDGER_COLUMNS:
        return empty_lines(), [Problem(shown, 1, None, "bad-ledger",
                                       "the header is not the ledger header: "
                                       + ",".join(LEDGER_COLUMNS))]
    out = raw.copy()
    for c in PENCE_COLUMNS:
        vals, ok = parse_amounts(raw[c])
        for i in np.flatnonzero(~ok):
            problems.append(Problem(shown, int(i) + 2, LEDGER_COLUMNS.index(c) + 1, "bad-ledger",
                                    f"{c} '{raw[c].iat[i]}' is not an amount like 1234.50"))
        out[c] = vals
    for c in DAY_COLUMNS:
        s = raw[c]
        days = np.full(len(s), NO_DAY, dtype=np.int64)
        blank = (s == "").to_numpy(dtype=bool)
        shaped = s.str.match(_DATE.pattern).to_numpy(dtype=bool)
        parsed = pd.to_datetime(s.where(shaped, None), format="%Y-%m-%d", errors="coerce")
        good = shaped & parsed.notna().to_numpy(dtype=bool)
        if good.any():
            days[good] = (parsed[good].to_numpy(dtype="datetime64[ns]")
                          .astype("datetime64[D]").astype(np.int64))
        for i in np.flatnonzero(~(good | blank)):
            problems.append(Problem(shown, int(i) + 2, LEDGER_COLUMNS.index(c) + 1, "bad-ledger",
                                    f"{c} '{s.iat[i]}' is not a date"))
        out[c] = days
    share_ok = raw["share"].str.match(_SHARE.pattern).to_numpy(dtype=bool)
    shares = np.zeros(len(raw), dtype=np.int64)
    if share_ok.any():
        shares[share_ok] = raw["share"][share_ok].str.replace(".", "", regex=False).astype(
            np.int64).to_numpy()
    for i in np.flatnonzero(~share_ok):
        problems.append(Problem(shown, int(i) + 2, LEDGER_COLUMNS.index("share") + 1, "bad-ledger",
                                f"share '{raw['share'].iat[i]}' is not a percentage like 45.2600"))
    out["share"] = shares
    late_ok = raw["late"].isin(["true", "false"]).to_numpy(dtype=bool)
    for i in np.flatnonzero(~late_ok):
        problems.append(Problem(shown, int(i) + 2, LEDGER_COLUMNS.index("late") + 1, "bad-ledger",
                                f"late '{raw['late'].iat[i]}' is not true or false"))
    out["late"] = (raw["late"] == "true").to_numpy()
    kind_ok = raw["kind"].isin(["payment", "reversal"]).to_numpy(dtype=bool)
    for i in np.flatnonzero(~kind_ok):
        problems.append(Problem(shown, int(i) + 2, LEDGER_COLUMNS.index("kind") + 1, "bad-ledger",
                                f"kind '{raw['kind'].iat[i]}' is not payment or reversal"))
    for c in TEXT_COLUMNS:
        out[c] = raw[c].astype(object)
    return out[list(LEDGER_COLUMNS)], problems


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


def read_history(ledger_dir: Path, periods: list[Period], shown_dir: str) -> History:
    """The typed lines of the given issued periods, in order."""
    frames = []
    problems: list[Problem] = []
    for p in periods:
        path = ledger_dir / p.label / "ledger.csv"
        shown = f"{shown_dir}/{p.label}/ledger.csv"
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SibError(f"{shown} cannot be read ({e}); run `sib audit`") from None
        lines, probs = parse_ledger(text, shown)
        problems += probs
        frames.append(lines)
    if problems:
        raise ProblemsFound(problems)
    lines = pd.concat(frames, ignore_index=True) if frames else empty_lines()
    return History(tuple(p.label for p in periods), lines)


def day_of(d) -> int:
    return day_number(d)
