"""claim.xlsx and the funder statements (sib/workbook.py), read back as a funder would.

- golden cell values of the example's claim 13 (openpyxl, `data_regression`; never bytes);
- the Lines sheet is ledger.csv, cell for cell, with money, dates and flags typed;
- every sheet's print and view settings; the ledger hash on the cover;
- the same inputs give the same bytes (timestamps come from the claim, not the clock);
- long claims continue on `Lines (2)`, … with the formulas covering every Lines sheet;
- the long tables' rows, written as XML directly for speed, are byte for byte what openpyxl
  writes cell by cell (hypothesis, with text as hostile as evidence gets);
- evidence text that looks like a formula stays text;
- LibreOffice recalculates every formula total to the ledger's figure, to the penny, and
  prints the cover page with its figures (skipped, with the reason, without `soffice`).

Expected figures are computed here from the ledger CSV files with `Decimal`, never taken
from sib/workbook.py.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import textwrap
import warnings
import zipfile
from collections import defaultdict
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import openpyxl
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import sib.workbook as wbmod
from sib.cli import cli
from sib.evidence import EPOCH, NO_DAY
from sib.issue import prepare_claim
from sib.ledger import History, issued_periods, read_history
from sib.workbook import Header, claim_workbooks

ROOT = Path(__file__).resolve().parent.parent
CID = "west-london-ips"
PREPARED_AT = datetime(2022, 4, 4, 9, 30, tzinfo=timezone.utc)
MONEY, DATE = "£#,##0.00", "dd/mm/yyyy"
KIND_ROWS = {"central": "Central top-up", "local-authority": "Local authorities",
             "health": "Health", "dwp": "DWP", "other": "Other"}
SUSPECT = ('=HYPERLINK("http://x","y")', "+44 20 7946 0000", "-1", "@SUM(A1)", "=1+2")


# --- building the workbooks of a workspace's next claim ----------------------------------------

def build(ws: Path, period: str, rows_per_sheet: int = wbmod.LINES_PER_SHEET,
          prepared_at: datetime = PREPARED_AT):
    """(prepared claim, {name: bytes}) for claim `period` of the workspace."""
    prep = prepare_claim(ws, None, period, workbooks=False)
    root = ws / "ledgers" / prep.lc.contract.id
    before = [p for p in issued_periods(root, prep.lc.contract.claims) if p < prep.claim.period]
    history = read_history(root, before, "ledgers")
    m = prep.manifest
    header = Header(prepared_at=prepared_at,
                    ledger_sha256=hashlib.sha256(prep.files["ledger.csv"]).hexdigest(),
                    files_sha256={k: v for k, v in m["files"].items() if k != "ledger.csv"},
                    previous_manifest_sha256=m["previous_manifest_sha256"],
                    sib_version=m["sib_version"],
                    command=f"sib claim --contract {prep.lc.contract.id} --period {period}",
                    sources=m["sources"])
    return prep, claim_workbooks(prep.lc.contract, prep.claim, history, header,
                                 rows_per_sheet=rows_per_sheet)


def load(data: bytes, data_only: bool = False) -> openpyxl.Workbook:
    return openpyxl.load_workbook(io.BytesIO(data), data_only=data_only)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """A copy of the shipped example workspace (claims 2019-Q1 … 2021-Q4 issued)."""
    ws = tmp_path_factory.mktemp("example")
    for name in ("contracts", "evidence", "ledgers"):
        shutil.copytree(ROOT / name, ws / name, ignore=shutil.ignore_patterns(".lock", ".tmp-*"))
    return ws


@pytest.fixture(scope="module")
def claim13(example: Path):
    return build(example, "2022-Q1")


@pytest.fixture(scope="module")
def claim13_small(example: Path):
    """Claim 13 with at most 300 lines a Lines sheet: Lines, Lines (2), Lines (3)."""
    return build(example, "2022-Q1", rows_per_sheet=300)


def ledger_frame(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


def pence(text: str) -> int:
    return int(Decimal(text) * 100)


def lines_rows(wb: openpyxl.Workbook) -> list[tuple]:
    """Data rows of Lines, Lines (2), … in order."""
    out = []
    for name in wb.sheetnames:
        if re.fullmatch(r"Lines( \(\d+\))?", name):
            out += list(wb[name].iter_rows(min_row=2, values_only=True))
    return out


def cell_text(v) -> str:
    """A Lines cell as ledger.csv writes it (None → '')."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        return v.date().isoformat()
    return str(v)


# --- golden values -------------------------------------------------------------------------------

def _plain(v):
    if isinstance(v, datetime):
        return v.isoformat() if (v.hour, v.minute, v.second) != (0, 0, 0) else v.date().isoformat()
    if isinstance(v, float):
        return repr(v)  # exact, and stable in YAML
    return v


def cell_values(data: bytes, keep_lines: int = 3) -> dict:
    """The sheets in order, each one's view and print titles, and its cell values (formulas
    as their text), rows with trailing blanks cut.

    A Lines sheet keeps its header, first `keep_lines` rows and last row, and its row
    count: `test_lines_sheet_is_ledger_csv` compares every line with ledger.csv."""
    wb = load(data)
    out = {"sheets": [{"name": ws.title, "freeze": ws.freeze_panes,
                       "print_titles": ws.print_title_rows,
                       "merged": sorted(str(r) for r in ws.merged_cells.ranges)}
                      for ws in wb.worksheets],
           "cells": {}}
    for ws in wb.worksheets:
        rows = []
        for row in ws.iter_rows(values_only=True):
            vals = [_plain(v) for v in row]
            while vals and vals[-1] is None:
                vals.pop()
            rows.append(vals)
        while rows and not rows[-1]:
            rows.pop()
        if ws.title.startswith("Lines"):
            rows = {"data_rows": len(rows) - 1,
                    "rows": rows[:1 + keep_lines]
                    + (rows[-1:] if len(rows) > 1 + keep_lines else [])}
        out["cells"][ws.title] = rows
    return out


def test_claim_workbook_cell_values_are_golden(claim13, data_regression) -> None:
    """Golden, reviewed like code: every sheet of the example's claim 13 workbook."""
    _prep, books = claim13
    data_regression.check(cell_values(books["claim.xlsx"]), basename="claim-13-workbook")


def test_statement_cell_values_are_golden(claim13, data_regression) -> None:
    _prep, books = claim13
    data_regression.check(cell_values(books["statements/brent.xlsx"]),
                          basename="claim-13-statement-brent")


# --- structure and types -----------------------------------------------------------------------

def test_claim_workbook_has_the_eight_sheets_and_a_statement_per_funder(claim13) -> None:
    prep, books = claim13
    wb = load(books["claim.xlsx"])
    assert wb.sheetnames == ["Claim", "Outcomes", "Funders", "Lines", "Corrections", "Not paid",
                             "Reconciliation", "Provenance"]
    funders = set(ledger_frame(prep.files["ledger.csv"].decode())["funder"])
    assert sorted(books) == ["claim.xlsx"] + sorted(f"statements/{f}.xlsx" for f in funders)
    for f in funders:
        assert load(books[f"statements/{f}.xlsx"]).sheetnames == ["Statement", "Lines", "History"]


def test_lines_sheet_is_ledger_csv(claim13) -> None:
    """Every ledger line, every column, as ledger.csv has it; money, dates and flags typed."""
    prep, books = claim13
    text = prep.files["ledger.csv"].decode()
    ledger = ledger_frame(text)
    wb = load(books["claim.xlsx"])
    ws = wb["Lines"]
    header = [c.value for c in ws[1]]
    assert header[:18] == list(ledger.columns)
    assert header[18:] == ["funder_kind", "milestones"]
    rows = lines_rows(wb)
    assert len(rows) == len(ledger) == 814
    for i, (row, expect) in enumerate(zip(rows, ledger.itertuples(index=False))):
        got = [cell_text(v) for v in row[:18]]
        want = list(expect)
        for col in ("price", "amount", "capped"):
            k = ledger.columns.get_loc(col)
            got[k] = f"{Decimal(got[k]):.2f}"  # openpyxl reads 650.00 back as 650.0
        k = ledger.columns.get_loc("share")
        got[k] = f"{Decimal(got[k]):.4f}"
        assert got == want, f"Lines row {i + 2}"
    # types: a funder filters and adds these up
    col = {name: i + 1 for i, name in enumerate(header)}
    for r in ws.iter_rows(min_row=2, max_row=ws.max_row):
        for name in ("price", "amount", "capped"):
            c = r[col[name] - 1]
            assert c.data_type == "n" and c.number_format == MONEY, (c.coordinate, c.value)
        for name in ("achieved_on", "price_from"):
            c = r[col[name] - 1]
            assert c.is_date and c.number_format == DATE, (c.coordinate, c.value)
        assert r[col["late"] - 1].data_type == "b"
        assert r[col["share"] - 1].data_type == "n"
    # the table spans the lines, its columns named as the header
    (table,) = ws.tables.values()
    assert table.ref == f"A1:T{len(ledger) + 1}"
    assert [tc.name for tc in table.tableColumns] == header


def test_every_sheet_prints_landscape_one_page_wide_with_frozen_headers(claim13) -> None:
    _prep, books = claim13
    for name, data in books.items():
        wb = load(data)
        for ws in wb.worksheets:
            where = f"{name}:{ws.title}"
            assert ws.page_setup.orientation == "landscape", where
            assert ws.sheet_properties.pageSetUpPr.fitToPage, where
            assert (int(ws.page_setup.fitToWidth), int(ws.page_setup.fitToHeight)) == (1, 0), where
            if ws.title not in ("Claim", "Statement"):  # the covers are not tables
                assert ws.freeze_panes in ("A2", "B2", "B3"), where
                assert ws.print_title_rows in ("$1:$1", "$1:$2"), where
            widths = [ws.column_dimensions[c].width for c in "AB"]
            assert all(w and w >= 6 for w in widths), where  # sized, not the default


def test_money_and_dates_are_numbers_and_dates_never_text(claim13) -> None:
    """A funder must be able to add figures up: nothing that looks like money is text."""
    _prep, books = claim13
    looks_like_money = re.compile(r"^-?£?-?[\d,]+\.\d{2}$")
    looks_like_date = re.compile(r"^\d{4}-\d{2}-\d{2}$|^\d{2}/\d{2}/\d{4}$")
    for name, data in books.items():
        wb = load(data)
        for ws in wb.worksheets:
            for row in ws.iter_rows():
                for c in row:
                    if c.value is None:
                        continue
                    where = f"{name}:{ws.title}!{c.coordinate}"
                    if c.number_format == MONEY:
                        assert c.data_type in ("n", "f"), where
                    if c.number_format == DATE:
                        assert c.is_date, where
                    if c.data_type == "s":
                        assert not looks_like_money.match(c.value), where
                        assert not looks_like_date.match(c.value), where


def test_cover_shows_the_ledger_hash_and_the_claim(claim13) -> None:
    prep, books = claim13
    digest = hashlib.sha256(prep.files["ledger.csv"]).hexdigest()
    for name, data in books.items():
        cover = load(data).worksheets[0]
        fields = {r[0]: r[1] for r in cover.iter_rows(values_only=True) if r and r[0]}
        assert fields["Ledger hash (SHA-256 of ledger.csv)"] == digest, name
        assert fields["Claim number"] == 13
        assert fields["Period from"] == datetime(2022, 1, 1)
        assert fields["Period to"] == datetime(2022, 3, 31)
        assert fields["Date prepared"] == datetime(2022, 4, 4)
    cover = load(books["claim.xlsx"])["Claim"]
    labels = [r[0] for r in cover.iter_rows(values_only=True)]
    for want in ("Declaration", "Name", "Role", "Signature", "Date", *KIND_ROWS.values()):
        assert want in labels


# --- deterministic bytes ----------------------------------------------------------------------

def test_same_inputs_give_the_same_bytes_stamped_with_the_claim_not_the_clock(example) -> None:
    """Built twice: identical bytes. And the stamps inside are the claim's prepared time
    (a build within the same second could hide a clock, so the stamps are checked too)."""
    _p, first = build(example, "2022-Q1")
    _p, second = build(example, "2022-Q1")
    assert first == second
    _p, other = build(example, "2022-Q1", prepared_at=datetime(2023, 5, 6, 7, 8, 10,
                                                                tzinfo=timezone.utc))
    for books, when in ((first, PREPARED_AT), (other, datetime(2023, 5, 6, 7, 8, 10))):
        for name, data in books.items():
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                stamps = {i.date_time for i in z.infolist()}
                core = z.read("docProps/core.xml").decode()
            assert stamps == {(when.year, when.month, when.day, when.hour, when.minute,
                               when.second)}, name
            iso = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            assert f"<dcterms:created xsi:type=\"dcterms:W3CDTF\">{iso}</dcterms:created>" in core
            assert f"<dcterms:modified xsi:type=\"dcterms:W3CDTF\">{iso}</dcterms:modified>" in core
    assert first["claim.xlsx"] != other["claim.xlsx"]


# --- large claims -----------------------------------------------------------------------------

def test_lines_are_streamed_in_write_only_mode(example, monkeypatch) -> None:
    made = []
    real = wbmod.Workbook

    def spy(*args, **kwargs):
        made.append(kwargs.get("write_only", args[0] if args else False))
        return real(*args, **kwargs)

    monkeypatch.setattr(wbmod, "Workbook", spy)
    _p, books = build(example, "2022-Q1")
    assert len(made) == len(books) and all(made)


def _formula_sheets(formula: str) -> set[str]:
    return set(re.findall(r"'(Lines(?: \(\d+\))?)'!", formula))


def test_a_claim_longer_than_a_sheet_continues_on_more_lines_sheets(claim13_small) -> None:
    prep, books = claim13_small
    ledger = ledger_frame(prep.files["ledger.csv"].decode())
    wb = load(books["claim.xlsx"])
    assert wb.sheetnames == ["Claim", "Outcomes", "Funders", "Lines", "Lines (2)", "Lines (3)",
                             "Corrections", "Not paid", "Reconciliation", "Provenance"]
    sheets = ["Lines", "Lines (2)", "Lines (3)"]
    assert [wb[s].max_row - 1 for s in sheets] == [300, 300, 214]
    # together they are the ledger, in order, each with its header and its own table
    assert [r[0] for r in lines_rows(wb)] == list(ledger["line_id"])
    names = set()
    for s in sheets:
        ws = wb[s]
        assert [c.value for c in ws[1]] == [c.value for c in wb["Lines"][1]]
        (table,) = ws.tables.values()
        assert table.ref == f"A1:T{ws.max_row}"
        names.add(table.name)
    assert len(names) == 3
    # every formula that reads the lines reads all of them
    reading = 0
    for ws in (wb["Claim"], wb["Outcomes"], wb["Funders"]):
        for row in ws.iter_rows():
            for c in row:
                if c.data_type == "f" and "Lines" in c.value:
                    reading += 1
                    assert _formula_sheets(c.value) == set(sheets), (ws.title, c.coordinate)
    c = prep.lc.contract  # kinds and all; the lines block; 3 per outcome; 1 per funder
    assert reading == len(KIND_ROWS) + 1 + 3 + 3 * len(c.outcomes) + len(c.funders)
    # the cover says so
    cover = {r[0]: r[1] for r in wb["Claim"].iter_rows(values_only=True) if r and r[0]}
    assert "Lines, Lines (2) and Lines (3)" in cover["Ledger lines"]
    assert cover["Ledger lines"].startswith("814 ")


def test_a_statement_longer_than_a_sheet_continues_too(example) -> None:
    prep, books = build(example, "2022-Q1", rows_per_sheet=100)
    ledger = ledger_frame(prep.files["ledger.csv"].decode())
    mine = ledger[ledger["funder"] == "dcms"]
    wb = load(books["statements/dcms.xlsx"])
    sheets = [s for s in wb.sheetnames if s.startswith("Lines")]
    assert sheets == ["Lines", "Lines (2)", "Lines (3)"] and len(mine) == 208
    assert [r[0] for r in lines_rows(wb)] == list(mine["line_id"])
    formulas = [c.value for ws in (wb["Statement"], wb["History"]) for row in ws.iter_rows()
                for c in row if c.data_type == "f" and "Lines" in c.value]
    assert len(formulas) == 5  # due, payments, reversals, withheld; this claim's history row
    assert all(_formula_sheets(f) == set(sheets) for f in formulas)


@pytest.mark.parametrize("per_sheet, expect", [(814, ["Lines"]), (813, ["Lines", "Lines (2)"])])
def test_lines_sheets_at_the_boundary(example, per_sheet, expect) -> None:
    _p, books = build(example, "2022-Q1", rows_per_sheet=per_sheet)
    wb = load(books["claim.xlsx"])
    got = [s for s in wb.sheetnames if s.startswith("Lines")]
    assert got == expect
    assert len(lines_rows(wb)) == 814
    if len(expect) == 2:
        assert wb["Lines (2)"].max_row == 2


def test_rows_per_sheet_is_checked(claim13) -> None:
    prep, _books = claim13
    with pytest.raises(ValueError, match="rows_per_sheet"):
        claim_workbooks(prep.lc.contract, prep.claim, History.empty(),
                        Header(prepared_at=PREPARED_AT, ledger_sha256="x"), rows_per_sheet=0)


def workbook_inputs(ws: Path, period: str) -> tuple:
    """(contract, claim, history, header) that `build` gives `claim_workbooks`."""
    prep = prepare_claim(ws, None, period, workbooks=False)
    root = ws / "ledgers" / prep.lc.contract.id
    before = [p for p in issued_periods(root, prep.lc.contract.claims) if p < prep.claim.period]
    header = Header(prepared_at=PREPARED_AT,
                    ledger_sha256=hashlib.sha256(prep.files["ledger.csv"]).hexdigest())
    return prep.lc.contract, prep.claim, read_history(root, before, "ledgers"), header


def test_the_lines_workbook_is_the_claim_workbooks_lines_sheets(example, claim13_small) -> None:
    """`lines_workbook` (what bench/workbook.py times) writes the claim's Lines sheets alone."""
    c, claim, history, header = workbook_inputs(example, "2022-Q1")
    wb = load(wbmod.lines_workbook(c, claim, history, header, rows_per_sheet=300))
    assert wb.sheetnames == ["Lines", "Lines (2)", "Lines (3)"]
    _prep, books = claim13_small
    full = load(books["claim.xlsx"])
    assert lines_rows(wb) == lines_rows(full)
    assert [c.value for c in wb["Lines"][1]] == [c.value for c in full["Lines"][1]]
    with pytest.raises(ValueError, match="rows_per_sheet"):
        wbmod.lines_workbook(c, claim, history, header, rows_per_sheet=0)


# --- the streamed rows are the XML openpyxl writes ------------------------------------------------

def cell_by_cell_tables(book, base: str, columns, rows_per_sheet: int, *, table_name=None,
                        freeze: str = "B2", wrap=(), empty_note=None) -> None:
    """How sib/workbook.py wrote a table before issue 7: an openpyxl cell per value (one
    prototype cell per column, two for text, re-filled for every row). The reference that
    the rows written directly as XML are compared with, byte for byte."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.filters import AutoFilter
    from openpyxl.worksheet.table import Table, TableColumn, TableStyleInfo

    from sib import money

    def values(col, lo: int, hi: int) -> list:
        raw, k = col.data.iloc[lo:hi].tolist(), col.kind
        if k == "text":
            return [None if v is None or v == "" or v != v else str(v) for v in raw]
        if k == "money":
            return [None if v is None or v != v else money.pounds(int(v)) for v in raw]
        if k == "date":
            return [None if int(v) >= NO_DAY else date.fromordinal(int(v) + EPOCH)
                    for v in raw]
        if k == "share":
            return [Decimal(money.fmt_share(v)) for v in raw]
        if k == "bool":
            return [bool(v) for v in raw]
        return [int(v) for v in raw]

    def width(col) -> float:
        d, n = col.data, 0
        if col.kind == "text":
            text = d.dropna().astype(str)
            n = int(text.str.len().max()) + 1 if len(text) else 0
        elif col.kind == "money":
            vals = [int(v) for v in d.dropna().tolist()] if d.dtype == object else d
            if len(vals):
                n = max(len(money.fmt_gbp(int(min(vals)))), len(money.fmt_gbp(int(max(vals)))))
        elif col.kind == "count":
            n = len(f"{int(d.abs().max()):,}") + 1 if len(d) else 1
        else:
            n = {"date": 10, "share": 7, "bool": 5}[col.kind]
        return max(wbmod._chars_to_width(min(n, 60)), wbmod._chars_to_width(len(col.name) + 3))

    n = len(columns[0].data)
    widths = [width(col) for col in columns]
    wrap = set(wrap)
    chunks = [(s, min(s + rows_per_sheet, n)) for s in range(0, n, rows_per_sheet)] or [(0, 0)]
    last_col = get_column_letter(len(columns))
    for k, (lo, hi) in enumerate(chunks, 1):
        ws = book.wb.create_sheet(base if k == 1 else f"{base} ({k})")
        book.page_setup(ws, "1:1")
        for i, w in enumerate(widths, 1):
            ws.column_dimensions[get_column_letter(i)].width = w
        ws.freeze_panes = freeze
        head = []
        for col in columns:
            h = WriteOnlyCell(ws)
            wbmod._set_text(h, col.name)
            h.font, h.fill, h.border = wbmod._BOLD, wbmod._HEAD_FILL, wbmod._HEAD_BORDER
            h.alignment = wbmod._RIGHT if col.kind in wbmod._RIGHT_KINDS else wbmod._INDENT
            head.append(h)
        ws.append(head)
        protos = []
        for col in columns:
            p, q = WriteOnlyCell(ws), WriteOnlyCell(ws)
            if col.kind in wbmod._FORMATS:
                p.number_format = wbmod._FORMATS[col.kind]
            if col.name in wrap:
                p.alignment = q.alignment = wbmod._WRAP_INDENT
            elif col.kind == "text":
                p.alignment = q.alignment = wbmod._INDENT
            else:
                p.alignment = wbmod._TOP
            q.quotePrefix = True
            protos.append((col.kind, p, q))
        wrapped = [(i, wbmod._wrap_chars(widths[i]) - 1) for i, col in enumerate(columns)
                   if col.name in wrap]
        cols = [values(col, lo, hi) for col in columns]
        for r in range(hi - lo):
            if wrapped:
                lines = max(len(textwrap.wrap(cols[i][r] or "", chars)) for i, chars in wrapped)
                if lines > 1:
                    ws.row_dimensions[r + 2].height = 15 * lines
            row = []
            for (kind, p, q), vals in zip(protos, cols):
                v = vals[r]
                if v is None:
                    row.append(None)
                elif kind == "text":
                    row.append(wbmod._set_text(q if v[:1] in "=+-@" else p, v))
                else:
                    p.value = v
                    row.append(p)
            ws.append(row)
        if hi == lo and empty_note:
            ws.append([wbmod._note_cell(ws, empty_note)])
        ref = f"A1:{last_col}{max(hi - lo, 1) + 1}"
        if table_name:
            name = table_name if k == 1 else f"{table_name}_{k}"
            t = Table(displayName=name, name=name, ref=ref)
            t.tableStyleInfo = TableStyleInfo(name="TableStyleLight1", showRowStripes=True)
            t.tableColumns = [TableColumn(id=i, name=col.name) for i, col in enumerate(columns, 1)]
            t.autoFilter = AutoFilter(ref=ref)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ws.add_table(t)
        else:
            ws.auto_filter.ref = ref


# text as evidence and details have it, and as it should never be: formula-like, spaced,
# markup, control characters, lone surrogates, astral characters, tabs, over a cell's size
TRICKY = ("", " ", "  lead", "trail ", "\tTab", "=HYPERLINK(\"x\",\"y\")", "+44 20 7946 0000",
          "-1", "@SUM(A1)", "a&b<c>d\"e'f", "é€😀", "\ud800x", "ctl\x01\x1f", "\x85nel\u2028",
          "line\nbreak", "cr\r\nlf", "12.50", "2022-01-01", "\u00a0nbsp\u00a0",
          "withdrawn by the provider; the earlier payment is reversed and paid again " * 3,
          "x" * 33_000)
texts = st.one_of(st.sampled_from(TRICKY), st.text(max_size=20), st.none())
TABLE_KINDS = (("ref", "text"), ("amount", "money"), ("achieved_on", "date"),
               ("share", "share"), ("late", "bool"), ("milestones", "count"),
               ("detail", "text"))


@st.composite
def tables(draw) -> tuple[list, int, bool]:
    n = draw(st.integers(0, 25))
    col = {
        "text": lambda: st.lists(texts, min_size=n, max_size=n),
        "money": lambda: st.lists(st.one_of(st.none(), st.integers(-10**14 + 1, 10**14 - 1),
                                            st.sampled_from([0, 65000, -29419, 1])),
                                  min_size=n, max_size=n),
        "date": lambda: st.lists(st.one_of(st.integers(-25567, 84000),
                                           st.just(int(NO_DAY))),
                                 min_size=n, max_size=n),
        "share": lambda: st.lists(st.integers(1, 1_000_000), min_size=n, max_size=n),
        "bool": lambda: st.lists(st.booleans(), min_size=n, max_size=n),
        "count": lambda: st.lists(st.integers(-1, 1), min_size=n, max_size=n)}
    columns = []
    for name, kind in TABLE_KINDS:
        data = draw(col[kind]())
        dtype = object if kind in ("text", "money") else (bool if kind == "bool" else "int64")
        columns.append(wbmod._Column(name, kind, pd.Series(data, dtype=dtype)))
    return columns, draw(st.integers(1, 30)), draw(st.booleans())


@settings(max_examples=60)
@given(table=tables())
def test_rows_written_as_xml_are_the_bytes_openpyxl_writes_cell_by_cell(table) -> None:
    """The long tables' rows are XML written directly (issue 7: a cell object per value was
    too slow); the workbook must be byte for byte the one openpyxl writes from cells —
    values, types, styles and their numbering, row heights of wrapped text, quote prefixes,
    escapes, sheets continued — and the size announced to the zip must be the size written."""
    columns, per_sheet, is_table = table
    stand_in = SimpleNamespace(largest_pence=10**9, largest_count=10**4, title="Claim 1",
                               header=Header(prepared_at=PREPARED_AT, ledger_sha256="0" * 64))
    kw = dict(table_name="LedgerLines" if is_table else None, wrap=("detail",),
              empty_note="No lines.")
    direct = wbmod._Book(stand_in, "t", "s")
    wbmod._table_sheets(direct, "Lines", columns, per_sheet, **kw)
    for _ws, rows in direct.streams:
        assert len(b"".join(rows.blocks())) == rows.size()
    by_cells = wbmod._Book(stand_in, "t", "s")
    cell_by_cell_tables(by_cells, "Lines", columns, per_sheet, **kw)
    assert direct.save() == by_cells.save()


# --- evidence text that looks like a formula ------------------------------------------------------

CONTRACT = textwrap.dedent("""\
    format: sib-contract/1
    id: tiny
    name: Tiny contract
    provider: "-Provider & Co"
    currency: GBP
    claims: quarter
    term:
      service_start: 2022-01-01
      enrolment_end: 2022-12-31
      outcomes_end: 2022-12-31
    funders:
      - {id: fund, name: "=Central fund", kind: central, cap: 1000.00}
      - {id: council, name: "@Council", kind: local-authority}
    payers:
      - split:
          - {funder: fund, share: 40}
          - {funder: council, share: 60}
    outcomes:
      - id: engagement
        name: Engagement
        milestone: engagement
        prices: {2022-01-01: 100.00}
    """)


@pytest.fixture(scope="module")
def formula_like(tmp_path_factory) -> tuple:
    """A workspace whose evidence is full of formula-like text; claim 2 reverses claim 1's
    payment of the =HYPERLINK milestone, so the text is on Lines, Corrections and Not paid."""
    ws = tmp_path_factory.mktemp("formula-like")
    (ws / "contracts").mkdir()
    (ws / "contracts" / "tiny.yaml").write_text(CONTRACT, "utf-8")
    ev = ws / "evidence" / "tiny"
    ev.mkdir(parents=True)
    (ev / "participants.csv").write_text(
        "participant_id,enrolled_on\n+44 20 7946 0000,2022-01-03\n-1,2022-01-04\n", "utf-8")
    head = "milestone_id,participant_id,milestone,achieved_on,status,verified_on,evidence_ref\n"
    m1 = ('"=HYPERLINK(""http://x"",""y"")",+44 20 7946 0000,engagement,2022-01-10,{},'
          '2022-01-20,-1\n')
    rest = ("-1,-1,engagement,2022-01-12,pending,,\n"
            "M4,=1+2,engagement,2022-01-13,verified,2022-01-22,=1+2\n")
    (ev / "milestones.csv").write_text(head + m1.format("verified") + rest, "utf-8")
    result = CliRunner().invoke(cli, ["claim", "--period", "2022-Q1", "-w", str(ws)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    new = "@SUM(A1),-1,engagement,2022-04-11,verified,2022-04-21,@SUM(A1)\n"
    (ev / "milestones.csv").write_text(head + m1.format("withdrawn") + rest + new, "utf-8")
    return build(ws, "2022-Q2")


def test_formula_like_text_is_written_as_text_in_every_workbook(formula_like) -> None:
    _prep, books = formula_like
    assert sorted(books) == ["claim.xlsx", "statements/council.xlsx", "statements/fund.xlsx"]
    for name, data in books.items():
        wb = load(data)
        found = defaultdict(list)
        for ws in wb.worksheets:
            for row in ws.iter_rows():
                for c in row:
                    if c.data_type == "f":  # no evidence text ever became a formula
                        assert not any(s in c.value for s in SUSPECT), (name, ws.title, c.value)
                    if c.value in SUSPECT or c.value in ("-Provider & Co", "=Central fund",
                                                         "@Council"):
                        assert c.data_type == "s", (name, ws.title, c.coordinate)
                        assert c.quotePrefix, (name, ws.title, c.coordinate)  # Excel keeps it text
                        found[c.value].append(ws.title)
        # each value is really there: on the lines (reversal), and on the claim's other sheets
        assert {'=HYPERLINK("http://x","y")', "+44 20 7946 0000", "-1"} <= set(found), name
        if name == "claim.xlsx":
            assert set(SUSPECT) <= set(found)
            assert "Corrections" in found['=HYPERLINK("http://x","y")']
            assert "Not paid" in found["-1"] and "Not paid" in found["=1+2"]
            assert "Funders" in found["=Central fund"]
            assert "Claim" in found["-Provider & Co"]


@pytest.fixture(scope="module")
def no_lines(tmp_path_factory) -> tuple:
    """A first claim whose only milestone is still pending: no ledger lines at all."""
    ws = tmp_path_factory.mktemp("no-lines")
    (ws / "contracts").mkdir()
    (ws / "contracts" / "tiny.yaml").write_text(CONTRACT, "utf-8")
    ev = ws / "evidence" / "tiny"
    ev.mkdir(parents=True)
    (ev / "participants.csv").write_text("participant_id,enrolled_on\nP1,2022-01-03\n", "utf-8")
    (ev / "milestones.csv").write_text(
        "milestone_id,participant_id,milestone,achieved_on,status,verified_on,evidence_ref\n"
        "M1,P1,engagement,2022-01-10,pending,,\n", "utf-8")
    return build(ws, "2022-Q1")


def test_a_claim_with_no_lines_still_makes_a_whole_workbook(no_lines) -> None:
    prep, books = no_lines
    assert len(prep.claim.lines) == 0
    assert sorted(books) == ["claim.xlsx"]  # no funder has a line: no statement
    wb = load(books["claim.xlsx"])
    assert wb["Lines"].max_row == 1
    assert [c.value for c in wb["Lines"][1]][:2] == ["line_id", "period"]
    (table,) = wb["Lines"].tables.values()
    assert table.ref == "A1:T2"  # a table needs a row; an empty one sums to nothing
    assert wb["Corrections"]["A2"].value == "No corrections in this claim."
    assert wb["Not paid"]["A2"].value == "M1"
    cover = {r[0]: r[1] for r in wb["Claim"].iter_rows(values_only=True) if r and r[0]}
    assert cover["Ledger lines"] == "0 on sheet Lines"
    assert cover["All funders"] == "=SUM('Lines'!$N$2:$N$2)"


def test_a_price_change_within_the_period_lists_each_version(tmp_path) -> None:
    ws = tmp_path
    (ws / "contracts").mkdir()
    (ws / "contracts" / "tiny.yaml").write_text(
        CONTRACT.replace("prices: {2022-01-01: 100.00}",
                         "prices: {2022-01-01: 100.00, 2022-02-15: 120.00}"), "utf-8")
    ev = ws / "evidence" / "tiny"
    ev.mkdir(parents=True)
    (ev / "participants.csv").write_text("participant_id,enrolled_on\nP1,2022-01-03\n", "utf-8")
    (ev / "milestones.csv").write_text(
        "milestone_id,participant_id,milestone,achieved_on,status,verified_on,evidence_ref\n"
        "M1,P1,engagement,2022-01-10,verified,2022-03-01,E1\n", "utf-8")
    _prep, books = build(ws, "2022-Q1")
    rows = [r for r in load(books["claim.xlsx"])["Outcomes"].iter_rows(values_only=True)]
    assert rows[1][:4] == ("engagement", "Engagement", 120, datetime(2022, 2, 15))
    at = [r[0] for r in rows].index("outcome", 1)  # the versions block's header
    assert rows[at][1] == "price versions in force during the period"
    assert [r[:4] for r in rows[at + 1:]] == [("engagement", "Engagement", 100, datetime(2022, 1, 1)),
                             ("engagement", "Engagement", 120, datetime(2022, 2, 15))]


# --- LibreOffice: recalculated formulas, and the printed cover --------------------------------

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")
needs_soffice = pytest.mark.skipif(
    SOFFICE is None, reason="LibreOffice is not installed (soffice not on PATH): the formula "
    "totals are not recalculated; install it with `apt-get install libreoffice-calc-nogui`")


def soffice(files: list[Path], to: str, out: Path, profile: Path) -> None:
    """Convert with LibreOffice headless (which recalculates formulas without cached values)."""
    out.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([SOFFICE, f"-env:UserInstallation={profile.as_uri()}", "--headless",
                          "--convert-to", to, "--outdir", str(out), *map(str, files)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    for f in files:
        assert (out / f"{f.stem}.{to}").is_file(), f"LibreOffice did not convert {f.name}: " \
                                                   f"{run.stdout} {run.stderr}"


@pytest.fixture(scope="module")
def lo_profile(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lo-profile")


def recalculated(books: dict[str, bytes], tmp: Path, profile: Path) -> dict[str, tuple]:
    """{name: (workbook as written, workbook recalculated by LibreOffice, values only)}."""
    src = tmp / "src"
    src.mkdir(parents=True)
    paths = []
    for name, data in books.items():
        p = src / name.replace("/", "__")
        p.write_bytes(data)
        paths.append(p)
    soffice(paths, "xlsx", tmp / "out", profile)
    return {name: (load(books[name]), openpyxl.load_workbook(tmp / "out" / p.name, data_only=True))
            for name, p in zip(books, paths)}


class Checked:
    """Recalculated cells compared with expected figures, remembering which were checked."""

    def __init__(self, name: str, written: openpyxl.Workbook, calc: openpyxl.Workbook):
        self.name, self.written, self.calc = name, written, calc
        self.seen: set[tuple[str, str]] = set()

    def value(self, sheet: str, coord: str):
        self.seen.add((sheet, coord))
        return self.calc[sheet][coord].value

    def money(self, sheet: str, coord: str, expect_pence: int) -> None:
        v = self.value(sheet, coord)
        assert isinstance(v, (int, float)), (self.name, sheet, coord, v)
        assert round(v * 100) == expect_pence, (self.name, sheet, coord, v, expect_pence)

    def count(self, sheet: str, coord: str, expect: int) -> None:
        v = self.value(sheet, coord)
        assert isinstance(v, (int, float)) and v == expect, (self.name, sheet, coord, v, expect)

    def ratio(self, sheet: str, coord: str, num: int, den: int) -> None:
        v = self.value(sheet, coord)
        assert abs(v - num / den) < 1e-12, (self.name, sheet, coord, v, num, den)

    def all_formulas_checked(self) -> None:
        formulas = {(ws.title, c.coordinate) for ws in self.written.worksheets
                    for row in ws.iter_rows() for c in row if c.data_type == "f"}
        assert formulas, self.name
        assert formulas - self.seen == set(), f"{self.name}: formulas left unchecked"


def _rows_by_label(ws) -> dict:
    """Label in column A → its (first) row."""
    out: dict = {}
    for row in ws.iter_rows():
        if row[0].value is not None:
            out.setdefault(row[0].value, row[0].row)
    return out


def _columns(ws, header_row: int = 1) -> dict:
    return {c.value: c.column_letter for c in ws[header_row] if c.value is not None}


class Expected:
    """The ledger's figures, from ledger.csv files with Decimal."""

    def __init__(self, ws: Path, prep):
        self.contract = prep.lc.contract
        self.now = ledger_frame(prep.files["ledger.csv"].decode())
        root = ws / "ledgers" / self.contract.id
        label = prep.claim.period.label
        self.periods = sorted(p.name for p in root.iterdir()
                              if (p / "manifest.json").is_file() and p.name < label)
        frames = [ledger_frame((root / p / "ledger.csv").read_text("utf-8")) for p in self.periods]
        self.before = pd.concat(frames) if frames else self.now.iloc[0:0]
        self.kind = {f.id: f.kind for f in self.contract.funders}
        self.rows_in = prep.claim.rows_in
        self.decisions = prep.claim.decisions

    @staticmethod
    def total(frame: pd.DataFrame, col: str = "amount") -> int:
        return sum(pence(v) for v in frame[col])

    @staticmethod
    def milestones(frame: pd.DataFrame) -> int:
        """Net milestones paid: a payment counts 1, a reversal −1 (per claim)."""
        first = frame.drop_duplicates(["period", "milestone_id", "kind"])
        return int((first["kind"] == "payment").sum() - (first["kind"] == "reversal").sum())

    def of_kind(self, frame, kind):
        return frame[frame["funder"].map(self.kind) == kind]


def check_claim_workbook(e: Expected, ck: Checked) -> None:
    c = e.contract
    cover = ck.written["Claim"]
    rows = _rows_by_label(cover)
    caps = {f.id: pence(str(f.cap)) if f.cap is not None else None for f in c.funders}
    for kind, label in KIND_ROWS.items():
        r = rows[label]
        now, before = e.total(e.of_kind(e.now, kind)), e.total(e.of_kind(e.before, kind))
        ck.money("Claim", f"B{r}", now)
        ck.money("Claim", f"D{r}", now + before)
        ids = [f.id for f in c.funders if f.kind == kind]
        if ids and all(caps[i] is not None for i in ids):
            ck.money("Claim", f"F{r}", sum(caps[i] for i in ids) - now - before)
    r = rows["All funders (contract cap)"]
    now, before = e.total(e.now), e.total(e.before)
    ck.money("Claim", f"B{r}", now)
    ck.money("Claim", f"D{r}", now + before)
    ck.money("Claim", f"F{r}", pence(str(c.caps.contract)) - now - before)
    ck.money("Claim", f"B{rows['Payments']}", e.total(e.now[e.now['kind'] == 'payment']))
    ck.money("Claim", f"B{rows['Reversals (corrections of earlier claims)']}",
             e.total(e.now[e.now["kind"] == "reversal"]))
    ck.money("Claim", f"B{rows['Withheld by caps (not claimed)']}", e.total(e.now, "capped"))

    ws = ck.written["Outcomes"]
    col = _columns(ws)
    rows = _rows_by_label(ws)
    for o in c.outcomes:
        r = rows[o.id]
        now, before = e.now[e.now["outcome"] == o.id], e.before[e.before["outcome"] == o.id]
        ck.count("Outcomes", f"{col['count this claim']}{r}", e.milestones(now))
        ck.money("Outcomes", f"{col['amount this claim']}{r}", e.total(now))
        ck.money("Outcomes", f"{col['of which top-up (central)']}{r}",
                 e.total(e.of_kind(now, "central")))
        ck.count("Outcomes", f"{col['count to date']}{r}", e.milestones(now) + e.milestones(before))
        ck.money("Outcomes", f"{col['amount to date']}{r}", e.total(now) + e.total(before))
    r = rows["All outcomes"]
    ck.count("Outcomes", f"{col['count this claim']}{r}", e.milestones(e.now))
    ck.money("Outcomes", f"{col['amount this claim']}{r}", e.total(e.now))
    ck.money("Outcomes", f"{col['of which top-up (central)']}{r}",
             e.total(e.of_kind(e.now, "central")))
    ck.count("Outcomes", f"{col['count earlier']}{r}", e.milestones(e.before))
    ck.money("Outcomes", f"{col['amount earlier']}{r}", e.total(e.before))
    ck.count("Outcomes", f"{col['count to date']}{r}", e.milestones(e.now) + e.milestones(e.before))
    ck.money("Outcomes", f"{col['amount to date']}{r}", e.total(e.now) + e.total(e.before))

    ws = ck.written["Funders"]
    col = _columns(ws)
    rows = _rows_by_label(ws)
    for f in c.funders:
        r = rows[f.id]
        now = e.total(e.now[e.now["funder"] == f.id])
        to_date = now + e.total(e.before[e.before["funder"] == f.id])
        ck.money("Funders", f"{col['this claim']}{r}", now)
        ck.money("Funders", f"{col['claimed to date']}{r}", to_date)
        if caps[f.id] is not None:
            ck.money("Funders", f"{col['headroom']}{r}", caps[f.id] - to_date)
            ck.ratio("Funders", f"{col['cap used']}{r}", to_date, caps[f.id])
    r = rows["All funders"]
    ck.money("Funders", f"{col['this claim']}{r}", e.total(e.now))
    ck.money("Funders", f"{col['earlier claims']}{r}", e.total(e.before))
    ck.money("Funders", f"{col['claimed to date']}{r}", e.total(e.now) + e.total(e.before))

    ws = ck.written["Reconciliation"]
    col = _columns(ws, 2)
    dec = e.decisions
    parts = {"paid now": ["paid"], "paid earlier": ["paid-earlier"],
             "corrected": ["re-rated", "reversed"], "pending": ["pending-verification"],
             "rejected": ["rejected"]}
    labels = []
    for row in ws.iter_rows(min_row=3):
        label, r = row[0].value, row[0].row
        if label is None or ws[f"{col['check']}{r}"].value is None:
            continue
        labels.append(label)
        if label == "All milestone rows":
            mine = dec
            assert ws[f"{col['rows in']}{r}"].value == e.rows_in == len(dec)
        else:
            mine = dec[dec["outcome"] == ("" if label == "(no outcome matched)" else label)]
            assert ws[f"{col['rows in']}{r}"].value == len(mine)
        for k, ds in parts.items():
            expect, cell = int(mine["decision"].isin(ds).sum()), f"{col[k]}{r}"
            if ws[cell].data_type == "f":
                ck.count("Reconciliation", cell, expect)
            else:
                assert ws[cell].value == expect, (label, k)
        ck.count("Reconciliation", f"{col['sum of the parts']}{r}", len(mine))
        assert ck.value("Reconciliation", f"{col['check']}{r}") == "agrees"
    assert labels[-1] == "All milestone rows"
    assert [o.id for o in c.outcomes] == labels[:len(c.outcomes)]
    ck.all_formulas_checked()


def check_statement(e: Expected, ck: Checked, funder: str) -> None:
    f = next(x for x in e.contract.funders if x.id == funder)
    now = e.now[e.now["funder"] == funder]
    before = e.before[e.before["funder"] == funder]
    rows = _rows_by_label(ck.written["Statement"])
    ck.money("Statement", f"B{rows['Amount due this claim']}", e.total(now))
    ck.money("Statement", f"B{rows['  of which payments']}", e.total(now[now['kind'] == 'payment']))
    ck.money("Statement", f"B{rows['  of which reversals']}",
             e.total(now[now["kind"] == "reversal"]))
    ck.money("Statement", f"B{rows['Withheld by caps this claim (not due)']}",
             e.total(now, "capped"))
    if len(e.periods):
        ck.money("Statement", f"B{rows['Claimed in earlier claims']}", e.total(before))
    ck.money("Statement", f"B{rows['Claimed to date']}", e.total(now) + e.total(before))
    if f.cap is not None:
        cap = pence(str(f.cap))
        ck.money("Statement", f"B{rows['Headroom']}", cap - e.total(now) - e.total(before))
        ck.ratio("Statement", f"B{rows['Cap used']}", e.total(now) + e.total(before), cap)
    hist = ck.written["History"]
    running = 0
    for row in hist.iter_rows(min_row=2):
        period, r = row[1].value, row[0].row
        if row[0].value == "Total":
            ck.money("History", f"E{r}", running)
            continue
        frame = (now if period == str(e.now["period"].iloc[0])
                 else before[before["period"] == period])
        running += e.total(frame)
        if hist[f"E{r}"].data_type == "f":
            ck.money("History", f"E{r}", e.total(frame))
        else:
            assert round(hist[f"E{r}"].value * 100) == e.total(frame)
        ck.money("History", f"F{r}", running)
    ck.all_formulas_checked()


@needs_soffice
@pytest.mark.parametrize("period, per_sheet", [
    ("2022-Q1", wbmod.LINES_PER_SHEET),
    ("2022-Q1", 100),                    # Lines … Lines (9); dcms's statement on 3 sheets
    ("2019-Q1", wbmod.LINES_PER_SHEET),  # the first claim: nothing earlier
    ("2020-Q3", wbmod.LINES_PER_SHEET),  # an issued claim, rebuilt from its evidence
])
def test_libreoffice_recalculates_every_total_to_the_ledger(example, lo_profile, tmp_path,
                                                            period, per_sheet) -> None:
    prep, books = build(example, period, rows_per_sheet=per_sheet)
    if per_sheet == 100:
        assert "Lines (9)" in load(books["claim.xlsx"]).sheetnames
    e = Expected(example, prep)
    done = recalculated(books, tmp_path, lo_profile)
    for name, (written, calc) in done.items():
        ck = Checked(name, written, calc)
        if name == "claim.xlsx":
            check_claim_workbook(e, ck)
        else:
            check_statement(e, ck, name.removeprefix("statements/").removesuffix(".xlsx"))
    if period == "2022-Q1":  # the figure a reader knows from the README: claim 13's total
        calc = done["claim.xlsx"][1]["Claim"]
        totals = {r[0]: r[1] for r in calc.iter_rows(values_only=True) if r and r[0]}
        assert round(totals["All funders (contract cap)"] * 100) == 21041562


@needs_soffice
def test_libreoffice_recalculates_an_empty_claim_to_zero(no_lines, lo_profile, tmp_path) -> None:
    _prep, books = no_lines
    written, calc = recalculated(books, tmp_path, lo_profile)["claim.xlsx"]
    n = 0
    for ws in written.worksheets:
        for row in ws.iter_rows():
            for c in row:
                if c.data_type == "f":
                    got = calc[ws.title][c.coordinate].value
                    # nothing claimed: 0, except the fund's headroom (its £1,000 cap), the
                    # reconciliation's one row in, and its checks
                    assert got in (0, 1000, 1, "agrees"), (ws.title, c.coordinate, got)
                    assert got != 1000 or (ws.title, ws[f"A{c.row}"].value) in (
                        ("Claim", "Central top-up"), ("Funders", "fund")), (ws.title, c.coordinate)
                    n += 1
    assert n > 20


@needs_soffice
def test_libreoffice_keeps_formula_like_text_as_text(formula_like, lo_profile, tmp_path) -> None:
    _prep, books = formula_like
    for name, (_written, calc) in recalculated(books, tmp_path, lo_profile).items():
        seen = set()
        for ws in calc.worksheets:
            for row in ws.iter_rows():
                for c in row:
                    if c.value in SUSPECT:
                        assert c.data_type == "s", (name, ws.title, c.coordinate)
                        seen.add(c.value)
        assert {'=HYPERLINK("http://x","y")', "-1"} <= seen, name


@needs_soffice
@pytest.mark.skipif(shutil.which("pdftotext") is None,
                    reason="poppler-utils is not installed (no pdftotext): the printed cover "
                    "is not checked; install it with `apt-get install poppler-utils`")
def test_printed_cover_page_shows_the_claim(claim13, lo_profile, tmp_path) -> None:
    """Page 1 of the printed workbook is the Claim sheet, whole: figures formatted as money,
    the ledger hash in full, the declaration, the page footer."""
    prep, books = claim13
    src = tmp_path / "claim.xlsx"
    src.write_bytes(books["claim.xlsx"])
    soffice([src], "pdf", tmp_path / "pdf", lo_profile)
    text = subprocess.run(["pdftotext", "-f", "1", "-l", "1", "-layout",
                           str(tmp_path / "pdf" / "claim.pdf"), "-"],
                          capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha256(prep.files["ledger.csv"]).hexdigest()
    for want in ("Outcomes payment claim 13 — 2022-Q1", "IPS Into Work (West London Alliance)",
                 digest, "01/01/2022", "31/03/2022", "04/04/2022", "£210,415.62",
                 "£101,314.51", "-£7,900.00", "£2,375,150.00", "Declaration", "Signature",
                 "Page 1 of"):
        assert want in text, want
