"""Fuzzing: broken and malicious contract and evidence files through `sib claim` and `sib check`.

Hypothesis generates files from a small valid workspace (one contract, a claim 2022-Q1
already issued, the evidence for 2022-Q2) by mutating it: random bytes; latin-1, cp1252
and UTF-16 text; byte-order marks; CRLF and lone CR line ends; NUL bytes; truncation;
ragged rows; duplicated, blank, missing or re-cased headers; huge, negative, NaN and
infinite numbers; dates in every wrong form and far in the past or future; formula-like
text (`=`, `+`, `-`, `@`); cells of 1 MB; and for Excel, typed cells (numbers, dates,
booleans, formulas), hand-written sheet XML and corrupted zip bytes.

Each case runs the real command (click's CliRunner, in-process) on a fresh copy of the
workspace and must end in one of two ways (issue: hardening, item 1):

- exit 0 with a correct claim: `sib audit` replays every claim byte for byte and checks
  every invariant, and the printed reconciliation adds up; or
- exit 1 with every message located (`path[:row[:col]]: [code] message`, or one `sib:`
  line for an operational error), and not one byte of the workspace changed.

Never a traceback, an internal error (exit 3), a Python warning, or a message flooded with
the hostile content. Nothing here is timed (tests never time things); the slowest case of
each kind is measured by hand with `bench/fuzz_timing.py`, which runs these same cases.

Counts (COUNTS below): the `ci` profile, the default, generates 200 cases in all (about a
minute); the `long` profile generates 10,000 and is run by hand, either as

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_fuzz.py --hypothesis-show-statistics

or, with every command timed, `.venv/bin/python bench/fuzz_timing.py` (about 20 minutes on
two cores). `--hypothesis-show-statistics` shows how the cases ended (exit code and first
reason code), so a change that makes most cases stop early is visible.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import shutil
import tempfile
import textwrap
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st

from strategies import mostly  # importing strategies registers the `ci` and `long` profiles
from sib.audit import audit
from sib.cli import cli
from sib.issue import issue_claim

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

# generated cases per test: (ci, long)
COUNTS = {
    "contract_text": (50, 2500),
    "contract_bytes": (20, 500),
    "evidence_csv": (60, 3500),
    "evidence_xlsx": (30, 2000),
    "evidence_raw_xlsx": (20, 1000),
    "evidence_bytes": (20, 500),
}
CI_CASES = sum(c for c, _ in COUNTS.values())
LONG_CASES = sum(n for _, n in COUNTS.values())


def cases(name: str) -> int:
    ci, long = COUNTS[name]
    return long if PROFILE == "long" else ci


def fuzz_settings(name: str):
    return settings(max_examples=cases(name), deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# --- the workspace every case starts from ------------------------------------------------

CID = "tiny"
PERIOD = "2022-Q2"

CONTRACT = textwrap.dedent("""\
    format: sib-contract/1
    id: tiny
    name: Tiny contract
    currency: GBP
    claims: quarter
    term:
      service_start: 2022-01-01
      enrolment_end: 2022-12-31
      outcomes_end: 2023-03-31
      claims_end: 2023-12-31
    caps:
      contract: 5000.00
      participant: 900.00
    eligibility:
      age: {min: 16, below: 71}
    funders:
      - {id: central, name: Central fund, kind: central, cap: 2000.00}
      - {id: north, name: North council, kind: local-authority, cap: 700.00, serves: {borough: North}}
      - {id: south, name: South council, kind: local-authority, serves: {borough: South}}
    payers:
      - split:
          - {funder: central, share: 40}
          - {route: borough, share: 60}
    groups:
      sustain: {limit_per_participant: 1}
    outcomes:
      - id: engagement
        name: Engagement
        milestone: engagement
        prices: {2022-01-01: 100.00, 2022-07-01: 120.00}
      - id: job-start
        name: Job start
        milestone: job-start
        evidence: [payslip, letter]
        requires: [{outcome: engagement, within_days: 200}]
        prices: {2022-01-01: 300.00}
      - id: sustain-ft
        name: Sustained full time
        milestone: sustain
        group: sustain
        when: {hours_per_week: {min: 16}}
        requires: [{outcome: job-start}]
        prices: {2022-01-01: 400.00}
      - id: sustain-pt
        name: Sustained part time
        milestone: sustain
        group: sustain
        when: {hours_per_week: {min: 8, below: 16}}
        requires: [{outcome: job-start}]
        max_count: 3
        prices: {2022-01-01: 250.00}
    """)

P_ROWS = [
    ["participant_id", "enrolled_on", "age", "borough"],
    ["P1", "2022-01-05", "30", "North"],
    ["P2", "2022-01-10", "45", "South"],
    ["P3", "2022-02-01", "15", "North"],
    ["P4", "2022-02-14", "50", "South"],
    ["P5", "05/03/2022", "22", "North"],
]
M_HEAD = ["milestone_id", "participant_id", "milestone", "achieved_on", "status", "verified_on",
          "evidence_ref", "evidence_type", "hours_per_week"]
M_ROWS_Q1 = [
    M_HEAD,
    ["M1", "P1", "engagement", "2022-01-20", "verified", "2022-02-01", "E1", "", ""],
    ["M2", "P2", "engagement", "2022-01-25", "verified", "2022-02-03", "E2", "", ""],
    ["M3", "P3", "engagement", "2022-02-10", "verified", "2022-02-20", "E3", "", ""],
    ["M4", "P1", "job-start", "2022-02-15", "verified", "2022-03-01", "E4", "payslip", ""],
    ["M5", "P2", "job-start", "2022-03-10", "pending", "", "", "payslip", ""],
    ["M6", "P4", "engagement", "2022-03-01", "verified", "2022-03-05", "E6", "", ""],
    ["M7", "P5", "engagement", "2022-03-05", "withdrawn", "", "", "", ""],
    ["M8", "P4", "job-start", "2022-03-20", "verified", "2022-03-25", "E8", "self-declaration", ""],
]
M_ROWS = M_ROWS_Q1 + [
    ["M9", "P1", "sustain", "2022-05-20", "verified", "2022-06-01", "E9", "payslip", "20"],
    ["M10", "P4", "engagement", "2022-04-03", "verified", "2022-04-10", "E10", "", ""],
    ["M11", "P5", "engagement", "2022-04-20", "verified", "2022-05-01", "E11", "", ""],
    ["M12", "P2", "sustain", "2022-06-10", "verified", "2022-06-12", "E12", "letter", "12.5"],
    ["M13", "P5", "job-start", "20/06/2022", "verified", "25/06/2022", "E13", "letter", ""],
]


def csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def build_base(ws: Path) -> Path:
    """contracts/, evidence/ and ledgers/ with claim 2022-Q1 issued by sib itself."""
    (ws / "contracts").mkdir(parents=True)
    (ws / "contracts" / f"{CID}.yaml").write_text(CONTRACT, "utf-8")
    ev = ws / "evidence" / CID
    ev.mkdir(parents=True)
    (ev / "participants.csv").write_text(csv_text(P_ROWS), "utf-8")
    (ev / "milestones.csv").write_text(csv_text(M_ROWS_Q1), "utf-8")
    (ws / "ledgers").mkdir()
    issue_claim(ws, CID, "2022-Q1")
    (ev / "milestones.csv").write_text(csv_text(M_ROWS), "utf-8")
    return ws


_BASE: list[Path] = []


def base_workspace() -> Path:
    """Built once per test session (in a temporary folder), copied for each case."""
    if not _BASE:
        root = Path(tempfile.mkdtemp(prefix="sib-fuzz-base-"))
        _BASE.append(build_base(root / "ws"))
    return _BASE[0]


@contextmanager
def fresh_workspace():
    with tempfile.TemporaryDirectory(prefix="sib-fuzz-") as tmp:
        ws = Path(tmp) / "ws"
        shutil.copytree(base_workspace(), ws)
        yield ws


# --- the oracle --------------------------------------------------------------------------------

LOCATED = re.compile(r"^(?P<path>[^\s:][^:]*?)(?::(?P<line>\d+))?(?::(?P<col>\d+))?: "
                     r"\[(?P<code>[a-z0-9-]+)\] \S")
SUMMARY = re.compile(r"^\d+ problems? found; nothing was written\.$")
RECONCILE = re.compile(r"(\d+) rows in = (\d+) paid now \+ (\d+) paid earlier \+ (\d+) corrected "
                       r"\+ (\d+) pending \+ (\d+) rejected")
MAX_MESSAGE = 2_000  # a message quotes at most a short piece of a hostile cell


def snapshot(ws: Path) -> dict[str, bytes]:
    """Every file under the workspace but the lock file (which a claim may create)."""
    return {str(p.relative_to(ws)): p.read_bytes()
            for p in sorted(ws.rglob("*")) if p.is_file() and p.name != ".lock"}


@dataclass
class Outcome:
    exit_code: int
    codes: list[str]


def check_result(result, ws: Path, before: dict[str, bytes], claimed: bool) -> Outcome:
    """The oracle shared by every fuzz case (and by bench/fuzz_timing.py)."""
    out = result.output
    assert result.exit_code in (0, 1), (result.exit_code, out[-3000:])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception)
    assert "Traceback" not in out and "internal error" not in out, out[-3000:]
    assert "Warning" not in out, out[-3000:]  # a library warning leaking to the user
    # a message is one line without control characters (a cell's line break or terminal
    # escape is shown escaped), so split on every kind of line break there is
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f]", result.stderr), result.stderr[:2000]
    codes = []
    for line in result.stderr.splitlines():
        assert len(line) <= MAX_MESSAGE, line[:300] + "…"
        m = LOCATED.match(line)
        if m:
            codes.append(m["code"])
            continue
        assert (SUMMARY.match(line) or line.startswith("sib: ") or line.startswith("  ")
                or line.startswith("--skip-invalid")), line[:300]
    if result.exit_code == 1:
        assert codes or result.stderr.startswith("sib: "), result.stderr[:2000]
        assert snapshot(ws) == before  # nothing written, nothing changed
        return Outcome(1, codes)
    if claimed:
        m = RECONCILE.search(result.stdout)
        assert m, result.stdout[-2000:]
        rows_in, *parts = map(int, m.groups())
        assert rows_in == sum(parts)
        findings = audit(ws, CID).findings
        assert not findings, [str(p) for p in findings]
        assert (ws / "ledgers" / CID / PERIOD / "manifest.json").is_file()
    return Outcome(0, codes)


def run_claim(ws: Path, *extra: str) -> Outcome:
    before = snapshot(ws)
    result = CliRunner().invoke(cli, ["claim", "--period", PERIOD, "-w", str(ws), *extra])
    outcome = check_result(result, ws, before, claimed=True)
    if currently_in_test_context():  # shown by --hypothesis-show-statistics
        event(f"claim exit {outcome.exit_code}" +
              (f" [{outcome.codes[0]}]" if outcome.codes else ""))
    return outcome


def run_check(ws: Path) -> Outcome:
    before = snapshot(ws)
    result = CliRunner().invoke(cli, ["check", "--evidence", "-w", str(ws)])
    return check_result(result, ws, before, claimed=False)


# --- hostile values ----------------------------------------------------------------------------

MB = "x" * 1_000_000
HOSTILE_TEXT = [
    "", " ", "\t", "NaN", "nan", "-nan", "inf", "-inf", "Infinity", "1e308", "1e309", "-1e309",
    "1e-400", "0", "-0", "-1", "-250.50", "+16", "16.", ".5", "1,000", "1 000", "16h", "0x10",
    "9" * 400, "-" + "9" * 400, "99999999999999999999", "NULL", "None", "#N/A", "#VALUE!",
    "TRUE", "false", "=1+1", "+1", "-1", "@SUM(A1:A9)", "=HYPERLINK(\"http://x.invalid\",\"x\")",
    "=cmd|' /C calc'!A0", "+cmd|' /C calc'!A0", "-2+3", "@x", "'=1+1",
    "2022-02-30", "2022-02-29", "31/02/2022", "29/02/2023", "2022/03/31", "03/31/2022",
    "2022-3-1", "1/1/22", "2022-03-31T00:00:00", "2022-03-31 00:00", "20220331", "44651",
    "31-03-2022", "31.03.2022", "March 31, 2022", "31 Mar 2022", "0000-01-01", "0001-01-01",
    "1899-12-31", "1900-01-01", "2199-12-31", "2200-01-01", "9999-12-31", "10000-01-01",
    "-2022-03-31", "2022-13-01", "2022-00-10", "00/00/0000", "32/01/2022", "٢٠٢٢-٠٣-٣١",
    "２０２２-０３-３１", "2022-03-31\n", "2022-03-31\r\nM99,P1", "\"quoted\"", "a,b", "a\"b",
    "line\nbreak", "\u202egnp.exe", "\x1b[31mred\x1b[0m", "\x7f", "é", "Ω≈ç√", "😀",
    "\ufeff", "\u00a0", "verified", "VERIFIED", " verified ", "pending", "withdrawn", "paid",
    "P1", "P2", "P99", "M1", "M9", "engagement", "job-start", "sustain", "North", "South",
    "../../etc/passwd", "C:\\Windows\\system32", "%s%s%s%n", "{0}", "${jndi:x}", "<script>",
    MB, "=" + MB[:100_000], "2022-03-31" + " " * 100_000,
]

hostile_text = st.one_of(st.sampled_from(HOSTILE_TEXT), st.sampled_from(HOSTILE_TEXT),
                         st.text(max_size=20),
                         st.text(alphabet=st.characters(codec="utf-8"), max_size=8))


# --- mutating a table --------------------------------------------------------------------------

@st.composite
def table_edits(draw, width: int, height: int) -> list[tuple]:
    """A list of edits to a table of `height` rows (header included) and `width` columns."""
    row = st.integers(0, height + 1)
    col = st.integers(0, width + 1)
    body_cell = st.tuples(st.just("cell"), st.integers(1, height - 1), st.integers(0, width - 1),
                          hostile_text)
    cell = st.one_of(body_cell, body_cell, body_cell, st.tuples(st.just("cell"), row, col,
                                                                 hostile_text))
    structural = st.one_of(
        st.tuples(st.just("header"), col, st.sampled_from(
            ["", " ", "MILESTONE_ID", " participant_id ", "\ufeffparticipant_id", "row",
             "participant_id", "milestone_id", "status", "achieved_on", "borough", "age",
             "hours_per_week", "x" * 1000, "=A1"])),
        st.tuples(st.just("drop_col"), col),
        st.tuples(st.just("dup_col"), col),
        st.tuples(st.just("drop_row"), row),
        st.tuples(st.just("dup_row"), row),
        st.tuples(st.just("swap_rows"), row, row),
        st.tuples(st.just("ragged"), row, st.integers(-3, 3)),
        st.tuples(st.just("blank_rows"), row, st.integers(1, 3)),
        st.tuples(st.just("many_rows"), st.integers(1, 300)),
    )
    # cell values are what most cases change; the table's shape is broken in about a third
    # (a broken shape stops the claim before the values are looked at)
    shape = draw(mostly(st.just([]), st.lists(structural, min_size=1, max_size=3), 3))
    return shape + draw(st.lists(cell, max_size=6))


def apply_edits(rows: list[list[str]], edits: list[tuple]) -> list[list[str]]:
    rows = [list(r) for r in rows]
    for e in edits:
        kind = e[0]
        if kind == "cell":
            _, r, c, v = e
            if r < len(rows) and c < len(rows[r]):
                rows[r][c] = v
        elif kind == "header" and rows:
            _, c, v = e
            if c < len(rows[0]):
                rows[0][c] = v
        elif kind == "drop_col":
            for r in rows:
                if e[1] < len(r):
                    del r[e[1]]
        elif kind == "dup_col":
            for r in rows:
                if e[1] < len(r):
                    r.insert(e[1], r[e[1]])
        elif kind == "drop_row" and e[1] < len(rows):
            del rows[e[1]]
        elif kind == "dup_row" and e[1] < len(rows):
            rows.insert(e[1], list(rows[e[1]]))
        elif kind == "swap_rows" and max(e[1], e[2]) < len(rows):
            rows[e[1]], rows[e[2]] = rows[e[2]], rows[e[1]]
        elif kind == "ragged" and e[1] < len(rows):
            n = e[2]
            rows[e[1]] = rows[e[1]][:n] if n < 0 else rows[e[1]] + ["extra"] * n
        elif kind == "blank_rows":
            for _ in range(e[2]):
                rows.insert(min(e[1], len(rows)), [])
        elif kind == "many_rows" and len(rows) > 1:  # a longer export, ids kept unique
            body = rows[1:]
            for k in range(e[1]):
                src = list(body[k % len(body)])
                if src:
                    src[0] = f"{src[0]}x{k}"
                rows.append(src)
    return rows


ENCODINGS = ["utf-8", "utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16", "utf-16-le",
             "utf-16-be", "utf-32"]


@st.composite
def byte_edits(draw) -> dict:
    """How a CSV text becomes bytes: encoding, line ends, and damage to the bytes."""
    return {
        # mostly readable text, so that most cases reach the checks behind the decoding
        "encoding": draw(mostly(st.sampled_from(["utf-8", "utf-8-sig"]), st.sampled_from(ENCODINGS))),
        "newline": draw(st.sampled_from(["\n", "\n", "\r\n", "\r"])),
        "nul_at": draw(mostly(st.none(), st.integers(0, 10_000), 10)),
        "truncate_at": draw(mostly(st.none(), st.integers(0, 10_000), 8)),
        "flip": draw(mostly(st.just([]), st.lists(st.tuples(st.integers(0, 10_000),
                                                            st.integers(0, 255)),
                                                  min_size=1, max_size=2), 8)),
        "quote_all": draw(st.booleans()),
    }


def to_bytes(rows: list[list[str]], how: dict) -> bytes:
    buf = io.StringIO()
    quoting = csv.QUOTE_ALL if how["quote_all"] else csv.QUOTE_MINIMAL
    csv.writer(buf, lineterminator=how["newline"], quoting=quoting).writerows(rows)
    data = buf.getvalue().encode(how["encoding"], errors="replace")
    if how["nul_at"] is not None and data:
        k = how["nul_at"] % len(data)
        data = data[:k] + b"\x00" + data[k:]
    for at, byte in how["flip"]:
        if data:
            k = at % len(data)
            data = data[:k] + bytes([byte]) + data[k + 1:]
    if how["truncate_at"] is not None and data:
        data = data[: how["truncate_at"] % len(data)]
    return data


def write_evidence(ws: Path, table: str, data: bytes, suffix: str) -> None:
    """Replace evidence/tiny/<table>.csv with `data` saved as <table><suffix>."""
    folder = ws / "evidence" / CID
    (folder / f"{table}.csv").unlink()
    (folder / f"{table}{suffix}").write_bytes(data)


# --- 1. evidence as CSV --------------------------------------------------------------------------

@fuzz_settings("evidence_csv")
@given(which=st.sampled_from(["participants", "milestones", "both"]),
       p_edits=table_edits(len(P_ROWS[0]), len(P_ROWS)),
       m_edits=table_edits(len(M_HEAD), len(M_ROWS)),
       how=byte_edits(), skip_invalid=st.booleans())
@example(which="milestones", p_edits=[], m_edits=[("cell", 9, 8, MB)],
         how={"encoding": "utf-8", "newline": "\n", "nul_at": None, "truncate_at": None,
              "flip": [], "quote_all": False}, skip_invalid=False)
def test_fuzzed_csv_evidence_is_claimed_or_refused_with_located_problems(
        which, p_edits, m_edits, how, skip_invalid):
    with fresh_workspace() as ws:
        if which in ("participants", "both"):
            write_evidence(ws, "participants", to_bytes(apply_edits(P_ROWS, p_edits), how), ".csv")
        if which in ("milestones", "both"):
            write_evidence(ws, "milestones", to_bytes(apply_edits(M_ROWS, m_edits), how), ".csv")
        run_claim(ws, *(["--skip-invalid"] if skip_invalid else []))


@fuzz_settings("evidence_bytes")
@given(which=st.sampled_from(["participants", "milestones"]),
       data=st.one_of(st.binary(max_size=2000),
                      st.binary(max_size=200).map(lambda b: b"\xef\xbb\xbf" + b),
                      st.binary(max_size=200).map(lambda b: b"\xff\xfe" + b),
                      st.binary(max_size=200).map(lambda b: b"PK\x03\x04" + b)),
       suffix=st.sampled_from([".csv", ".xlsx"]))
def test_random_bytes_as_evidence_are_refused_with_located_problems(which, data, suffix):
    with fresh_workspace() as ws:
        write_evidence(ws, which, data, suffix)
        run_claim(ws)
        run_check(ws)


# --- 2. evidence as XLSX -----------------------------------------------------------------------

XL_VALUES = st.one_of(
    hostile_text,
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, -1, 16, 12.5, 1e308, -1e308, float("inf"), float("-inf"), float("nan"),
                     1e-300, 44651, 44651.5, -44651, 2958466, 10**20, True, False, None]),
    st.datetimes(min_value=datetime(1900, 3, 1), max_value=datetime(9999, 12, 31)),
    st.dates(min_value=date(1900, 3, 1), max_value=date(9999, 12, 31)),
    st.sampled_from([datetime(1899, 12, 31), datetime(1900, 1, 1), datetime(1900, 2, 28),
                     date(2200, 1, 1), date(1950, 6, 1), date(2022, 4, 1)]),
)


@st.composite
def typed_edits(draw, width: int, height: int) -> list[tuple]:
    edits = draw(table_edits(width, height))
    typed = draw(st.lists(st.tuples(st.just("typed"), mostly(st.integers(1, height - 1),
                                                           st.integers(0, height)),
                                    st.integers(0, width), XL_VALUES), max_size=6))
    return edits + typed


def apply_typed(rows: list[list], edits: list[tuple]) -> list[list]:
    plain = [e for e in edits if e[0] != "typed"]
    rows = apply_edits(rows, plain)
    for _, r, c, v in (e for e in edits if e[0] == "typed"):
        if r < len(rows) and c < len(rows[r]):
            rows[r][c] = v
    return rows


def xlsx_bytes(rows: list[list], as_dates: bool) -> bytes:
    """An .xlsx written by openpyxl; text that looks like a formula becomes a formula."""
    import openpyxl
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    wb = openpyxl.Workbook()
    sheet = wb.active
    for r in rows:
        out = []
        for v in r:
            if isinstance(v, str):
                v = ILLEGAL_CHARACTERS_RE.sub("", v)
                if as_dates and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
                    try:
                        v = date.fromisoformat(v)  # a real date cell, as Excel exports
                    except ValueError:
                        pass
            out.append(v)
        sheet.append(out)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


@fuzz_settings("evidence_xlsx")
@given(which=st.sampled_from(["participants", "milestones", "both"]),
       p_edits=typed_edits(len(P_ROWS[0]), len(P_ROWS)),
       m_edits=typed_edits(len(M_HEAD), len(M_ROWS)), as_dates=st.booleans(),
       skip_invalid=st.booleans())
def test_fuzzed_xlsx_evidence_is_claimed_or_refused_with_located_problems(
        which, p_edits, m_edits, as_dates, skip_invalid):
    with fresh_workspace() as ws:
        if which in ("participants", "both"):
            write_evidence(ws, "participants", xlsx_bytes(apply_typed(P_ROWS, p_edits), as_dates),
                           ".xlsx")
        if which in ("milestones", "both"):
            write_evidence(ws, "milestones", xlsx_bytes(apply_typed(M_ROWS, m_edits), as_dates),
                           ".xlsx")
        run_claim(ws, *(["--skip-invalid"] if skip_invalid else []))


# Hand-written workbooks: the parts a real exporter writes, with any cell type and value the
# XML can hold (numbers like 1e309, dates as serials 10**9, shared-string indexes out of
# range, inline strings, error cells), then optionally damaged at the byte level.

def _col(c: int) -> str:
    s = ""
    c += 1
    while c:
        c, r = divmod(c - 1, 26)
        s = chr(65 + r) + s
    return s


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


RAW_CELL = st.one_of(
    st.tuples(st.just("inlineStr"), hostile_text),
    st.tuples(st.just("n"), st.sampled_from(["16", "-1", "1e309", "NaN", "INF", "", "x", "44651",
                                             "1E+300", "0x10", "9" * 400])),
    st.tuples(st.just("s"), st.sampled_from(["0", "1", "999", "-1", "x", ""])),
    st.tuples(st.just("b"), st.sampled_from(["0", "1", "2", "true", ""])),
    st.tuples(st.just("e"), st.sampled_from(["#N/A", "#DIV/0!", "#REF!"])),
    st.tuples(st.just("d"), st.sampled_from(["2022-03-31", "2022-03-31T10:00:00", "9999-99-99",
                                             "x", "0001-01-01"])),
    st.tuples(st.just("date-serial"), st.sampled_from(["44651", "0", "-1", "60", "2958466",
                                                       "1000000000", "1e300", "x"])),
    st.tuples(st.just("str"), hostile_text),  # a formula's cached string result
)


def raw_xlsx(rows: list[list[str]], cells: list[tuple], damage: list[tuple], styles: bool,
             shared: bool) -> bytes:
    """A minimal workbook: [Content_Types], rels, workbook, one sheet, maybe shared strings
    and a style sheet whose style 1 is a date format."""
    grid: list[list[tuple[str, str]]] = [[("inlineStr", v) for v in r] for r in rows]
    for r, c, cell in cells:
        if r < len(grid) and c < len(grid[r]):
            grid[r][c] = cell
    body = []
    for i, r in enumerate(grid, start=1):
        out = []
        for j, (t, v) in enumerate(r):
            ref = f"{_col(j)}{i}"
            if t == "inlineStr":
                out.append(f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{_esc(v)}</t></is></c>')
            elif t == "date-serial":
                out.append(f'<c r="{ref}" s="1"><v>{_esc(v)}</v></c>')
            elif t == "str":
                out.append(f'<c r="{ref}" t="str"><f>A1</f><v>{_esc(v)}</v></c>')
            else:
                out.append(f'<c r="{ref}" t="{t}"><v>{_esc(v)}</v></c>')
        body.append(f'<row r="{i}">{"".join(out)}</row>')
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rns = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            + ('<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>' if styles else "")
            + ('<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>' if shared else "")
            + '</Types>'),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
            '</Relationships>'),
        "xl/workbook.xml": (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook {ns} {rns}>'
            '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>'
            + ('<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>' if styles else "")
            + ('<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>' if shared else "")
            + '</Relationships>'),
        "xl/worksheets/sheet1.xml": (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet {ns}>'
            f'<dimension ref="A1"/><sheetData>{"".join(body)}</sheetData></worksheet>'),
    }
    if styles:
        parts["xl/styles.xml"] = (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><styleSheet {ns}>'
            '<fonts count="1"><font/></fonts>'
            '<fills count="1"><fill><patternFill patternType="none"/></fill></fills>'
            '<borders count="1"><border/></borders>'
            '<cellStyleXfs count="1"><xf/></cellStyleXfs>'
            '<cellXfs count="2"><xf numFmtId="0"/><xf numFmtId="14" applyNumberFormat="1"/></cellXfs>'
            '</styleSheet>')
    if shared:
        parts["xl/sharedStrings.xml"] = (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><sst {ns} count="2" '
            'uniqueCount="2"><si><t>P1</t></si><si><t>2022-03-31</t></si></sst>')
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            z.writestr(name, text.encode("utf-8"))
    data = buf.getvalue()
    for at, byte in damage:
        k = at % len(data)
        data = data[:k] + bytes([byte]) + data[k + 1:]
    return data


@fuzz_settings("evidence_raw_xlsx")
@given(which=st.sampled_from(["participants", "milestones"]),
       edits=st.data(),
       cells=st.lists(st.tuples(st.integers(0, 14), st.integers(0, 9), RAW_CELL), max_size=6),
       damage=mostly(st.just([]), st.lists(st.tuples(st.integers(0, 5000),
                                                     st.integers(0, 255)),
                                           min_size=1, max_size=3), 5),
       styles=st.booleans(), shared=st.booleans())
def test_hand_written_and_damaged_xlsx_evidence_is_claimed_or_refused(
        which, edits, cells, damage, styles, shared):
    base = P_ROWS if which == "participants" else M_ROWS
    rows = apply_edits(base, edits.draw(table_edits(len(base[0]), len(base))))
    with fresh_workspace() as ws:
        write_evidence(ws, which, raw_xlsx(rows, cells, damage, styles, shared), ".xlsx")
        run_claim(ws)


# --- 3. contract files -------------------------------------------------------------------------

CONTRACT_VALUES = [
    "", "~", "null", "true", "[]", "{}", "[1, 2]", "{a: 1}", "-1", "0", "1e999999999",
    "-1e999999999", "1e-999999999", ".nan", ".inf", "-.inf", "NaN", "9" * 5000, "0.001",
    "100.001", "99.99", "100", "1000000000000", "2022-02-30", "2022-13-01", "0001-01-01",
    "9999-12-31", "10000-01-01", "1899-12-31", "2022-1-1", "01/01/2022", "'2022-01-01'",
    "2022-01-01T00:00:00", "=1+1", "+1", "@x", "&a x", "*a", "!!python/object:os.system x",
    "!!binary aGVsbG8=", "!custom x", "|\n  block", ">-\n  folded", "\"\\x00\"", "\"\\uFFFF\"",
    "../../etc/passwd", "..", "/abs/path", "UPPER", "with space", "x" * 100, "x" * 1_000_000,
    "month", "fiscal-quarter", "quarter", "week", "north", "south", "central", "borough",
    "engagement", "job-start", "sustain", "[engagement]", "{outcome: job-start}",
    "{min: 16, below: 8}", "{min: x}", "{outcome: engagement, within_days: 99999999}",
    "{funder: central, share: 100}", "😀", "é", "\t", "'", "\"", "#", "- x", ": x", "? x",
]

_SCALAR_AT = re.compile(r"(?<=: )([^{}\[\],\n]+?)(?=\s*(?:[,}\]]|$))", re.M)


@st.composite
def contract_texts(draw) -> str:
    """The contract with some values replaced, lines removed, repeated or indented wrongly."""
    text = CONTRACT
    spots = [m.span() for m in _SCALAR_AT.finditer(text)]
    for _ in range(draw(mostly(st.integers(0, 1), st.integers(2, 4)))):
        a, b = spots[draw(st.integers(0, len(spots) - 1))]
        new = draw(mostly(st.sampled_from(CONTRACT_VALUES), st.text(max_size=10)))
        text = text[:a] + new + text[b:]
        spots = [m.span() for m in _SCALAR_AT.finditer(text)]
        if not spots:
            break
    lines = text.split("\n")
    for _ in range(draw(mostly(st.just(0), st.integers(1, 3), 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "dup", "indent", "dedent", "anchor", "tab", "doc"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = lines[i].lstrip()
        elif op == "anchor":
            lines[i] = lines[i].replace(": ", ": &a ", 1)
            lines.append("extra: *a")
        elif op == "tab":
            lines[i] = "\t" + lines[i]
        else:
            lines.insert(i, "---")
        if not lines:
            break
    return "\n".join(lines)


@st.composite
def contract_encodings(draw) -> dict:
    return {"encoding": draw(mostly(st.just("utf-8"), st.sampled_from(ENCODINGS), 8)),
            "crlf": draw(st.booleans()),
            "nul_at": draw(mostly(st.none(), st.integers(0, 5000), 10)),
            "flip": draw(mostly(st.just([]), st.lists(st.tuples(st.integers(0, 5000),
                                                                st.integers(0, 255)),
                                                      min_size=1, max_size=2), 6))}


def contract_bytes(text: str, how: dict) -> bytes:
    if how["crlf"]:
        text = text.replace("\n", "\r\n")
    data = text.encode(how["encoding"], errors="replace")
    if how["nul_at"] is not None:
        k = how["nul_at"] % (len(data) + 1)
        data = data[:k] + b"\x00" + data[k:]
    for at, byte in how["flip"]:
        if data:  # (an empty text has no byte to flip)
            k = at % len(data)
            data = data[:k] + bytes([byte]) + data[k + 1:]
    return data


@fuzz_settings("contract_text")
@given(text=contract_texts(), how=contract_encodings())
def test_fuzzed_contract_is_claimed_or_refused_with_located_problems(text, how):
    with fresh_workspace() as ws:
        (ws / "contracts" / f"{CID}.yaml").write_bytes(contract_bytes(text, how))
        run_check(ws)
        run_claim(ws)


@fuzz_settings("contract_bytes")
@given(data=st.one_of(st.binary(max_size=3000),
                      st.binary(max_size=300).map(lambda b: codecs.BOM_UTF8 + b),
                      st.binary(max_size=300).map(lambda b: codecs.BOM_UTF16_LE + b),
                      st.text(max_size=300).map(lambda t: t.encode("utf-8"))))
def test_random_bytes_as_a_contract_are_refused_with_located_problems(data):
    with fresh_workspace() as ws:
        (ws / "contracts" / f"{CID}.yaml").write_bytes(data)
        outcome = run_claim(ws)
        assert outcome.exit_code == 1
        run_check(ws)


# --- bugs the fuzzing found, fixed: each pinned by the smallest case ------------------------------

def test_a_line_break_in_a_header_or_cell_stays_inside_one_message_line() -> None:
    """Found by the CSV and XLSX fuzzing: a header named '0\n0', or a participants file of
    bytes 01 0b 01, was quoted verbatim in `missing-column` and `bad-date` messages, so one
    problem printed as two lines (and a cell could send terminal escapes). Values are now
    quoted with control characters escaped and cut to 60 characters."""
    with fresh_workspace() as ws:
        # (a cell of 1 MB is refused as bad-csv: the csv module reads at most 128 kB a cell)
        rows = apply_edits(P_ROWS, [("header", 0, "0\n0"), ("cell", 2, 1, "\x1b[2J" + MB[:100_000])])
        write_evidence(ws, "participants", csv_text(rows).encode(), ".csv")
        outcome = run_claim(ws)  # the oracle: every line located, no control character
        assert outcome.exit_code == 1 and "missing-column" in outcome.codes
        result = CliRunner().invoke(cli, ["claim", "--period", PERIOD, "-w", str(ws)])
        assert "'0\\n0'" not in result.stderr and "0\\n0" in result.stderr
        assert len(result.stderr) < 5_000


def test_a_carriage_return_in_an_id_cannot_split_a_decisions_row() -> None:
    """Found by the CSV fuzzing (long profile): a quoted participant_id 'ab\rcd' was
    accepted; decisions.csv (written by pandas with '\n' line ends, which leaves a lone
    '\r' unquoted) then held a record split in two, and `sib audit` failed on a claim sib
    had just issued. Ids, codes and the columns the contract tests may not hold control
    characters: `bad-text`, located; with --skip-invalid the row is set aside."""
    with fresh_workspace() as ws:
        rows = apply_edits(M_ROWS, [("cell", 12, 1, "P\r5"), ("cell", 13, 6, "E\t13")])
        write_evidence(ws, "milestones", to_bytes(rows, {
            "encoding": "utf-8", "newline": "\n", "nul_at": None, "truncate_at": None,
            "flip": [], "quote_all": True}), ".csv")
        outcome = run_claim(ws)
        assert outcome.exit_code == 1 and outcome.codes == ["bad-text", "bad-text"]
        assert run_claim(ws, "--skip-invalid").exit_code == 0  # and the oracle audits it
        with open(ws / "ledgers" / CID / PERIOD / "decisions.csv", newline="") as f:
            decisions = list(csv.DictReader(f))
        assert len(decisions) == 13
        assert {d["reason"] for d in decisions if d["milestone_id"] in ("M12", "M13")} == {
            "invalid-row"}


def test_workbook_warnings_never_reach_the_user() -> None:
    """Found by the hand-written XLSX fuzzing: openpyxl's UserWarnings ("Workbook contains
    no default style", "Cell D4 is marked as a date but the serial value 1000000000 is
    outside the limits for dates") went to stderr with openpyxl's file and source line.
    They are silenced; the out-of-range date is then a located bad-date."""
    with fresh_workspace() as ws:
        cells = [(3, 3, ("date-serial", "1000000000")), (4, 3, ("date-serial", "44651"))]
        write_evidence(ws, "milestones", raw_xlsx(M_ROWS, cells, [], True, False), ".xlsx")
        before = snapshot(ws)
        result = CliRunner().invoke(cli, ["claim", "--period", PERIOD, "-w", str(ws)])
        check_result(result, ws, before, claimed=True)
        assert "milestones.xlsx:4:4: [bad-date] achieved_on '#VALUE!'" in result.stderr
    with fresh_workspace() as ws:  # no styles part at all: a readable workbook, no warning
        write_evidence(ws, "milestones", raw_xlsx(M_ROWS, [], [], False, False), ".xlsx")
        assert run_claim(ws).exit_code == 0


def test_a_huge_value_in_the_contract_is_quoted_short() -> None:
    """Found by the contract fuzzing's message-length check (CONTRACT_VALUES holds a number
    of 5,000 digits): bad-money, bad-share and bad-condition messages repeated the whole
    value, a message line of 5,120 characters. Values are now cut to 60 characters."""
    for old, new in [("contract: 5000.00", "contract: " + "9" * 5000),
                     ("share: 40}", "share: " + "1" * 3000 + ".5}"),
                     ("{min: 16}", "{min: " + "9" * 5000 + ", below: 1}")]:
        with fresh_workspace() as ws:
            path = ws / "contracts" / f"{CID}.yaml"
            path.write_text(path.read_text("utf-8").replace(old, new, 1), "utf-8")
            outcome = run_check(ws)  # the oracle: no line over MAX_MESSAGE characters
            assert outcome.exit_code == 1
            result = CliRunner().invoke(cli, ["check", "-w", str(ws)])
            assert max(len(line) for line in result.stderr.splitlines()) < 300


# --- an engine bug found by the fuzzing, fixed by the owner of sib/reconcile.py (277deb6) --------

def test_totals_keep_a_funder_removed_from_the_contract() -> None:
    """Found by test_fuzzed_contract_is_claimed_or_refused_with_located_problems (long
    profile): 2022-Q1 paid the North council; a contract variation removes that funder.
    `sib claim --period 2022-Q2` reverses North's lines (-240.00) and issues, but
    `reconcile.totals` sums only the funders of the current contract, so manifest.json has
    no by_funder.north (and by_kind leaves it out) while ledger.csv has its lines:
    `sib audit` then reported totals-mismatch on a claim sib itself had just issued. Was
    xfail(strict=True) until the engine totalled every funder that has lines."""
    with fresh_workspace() as ws:
        path = ws / "contracts" / f"{CID}.yaml"
        text = path.read_text("utf-8")
        north = "  - {id: north, name: North council, kind: local-authority, cap: 700.00, " \
                "serves: {borough: North}}\n"
        assert north in text
        path.write_text(text.replace(north, ""), "utf-8")
        result = CliRunner().invoke(cli, ["claim", "--period", PERIOD, "-w", str(ws)])
        assert result.exit_code == 0, result.output
        lines = (ws / "ledgers" / CID / PERIOD / "ledger.csv").read_text("utf-8")
        assert ",north," in lines  # the reversal of North's earlier payment
        findings = audit(ws, CID).findings
        assert not findings, [str(p) for p in findings]


# --- the generators really generate what the issue asks for -------------------------------------

def test_the_hostile_values_cover_the_issue_list() -> None:
    joined = HOSTILE_TEXT
    for wanted in ("NaN", "inf", "-inf", "9" * 400, "-1", "=1+1", "+1", "@SUM(A1:A9)",
                   "2022-02-30", "0001-01-01", "9999-12-31", MB):
        assert wanted in joined
    assert len(MB) == 1_000_000
    assert {"latin-1", "utf-16", "utf-8-sig"} <= set(ENCODINGS)


def test_the_base_workspace_claims_cleanly() -> None:
    """Guards the oracle: the unmutated inputs give a real claim with money in it."""
    with fresh_workspace() as ws:
        assert run_claim(ws).exit_code == 0
        assert (ws / "ledgers" / CID / PERIOD / "ledger.csv").read_text().count("\n") > 1


def test_the_oracle_rejects_an_unlocated_message(tmp_path: Path) -> None:
    """Guards the oracle: a traceback-like line on stderr fails the check."""
    class Fake:
        exit_code = 1
        exception = None
        output = stderr = "Traceback (most recent call last):\n"
        stdout = ""
    with pytest.raises(AssertionError):
        check_result(Fake(), tmp_path, snapshot(tmp_path), claimed=True)
