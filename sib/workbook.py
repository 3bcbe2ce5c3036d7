"""The claim workbook and the funder statements, as the bytes of .xlsx files.

After reconcile in the flow, before issue. `claim_workbooks` takes a computed claim (the
contract, the `Claim`, the earlier claims' lines and the facts the manifest records, among
them the sha256 of ledger.csv) and returns `claim.xlsx` and `statements/<funder-id>.xlsx`
as ../shared/spec/claim-workbook.md describes them:

- money cells hold the exact ledger values (pence → Decimal, never a float) formatted
  `£#,##0.00`; dates are real date cells `dd/mm/yyyy`; headers frozen; columns sized to
  their content; every sheet prints landscape, one page wide;
- the totals on Claim, Outcomes and Funders (and on a statement's cover and history) are
  live SUMIFS/COUNT-like formulas over the Lines sheet(s), so a funder can trace every
  figure; the earlier claims' figures, which are not in this workbook, are plain numbers;
- text (evidence values above all) is always written as a text cell, never as a formula,
  and a text that starts like one (`=`, `+`, `-`, `@`) also gets Excel's quote prefix, so
  editing the cell keeps it text;
- the Lines sheet is streamed; a claim with more lines than a sheet holds continues on
  `Lines (2)`, `Lines (3)`, … and every formula covers all of them.

openpyxl (in write-only mode) writes the workbooks, except the data rows of the long
tables (Lines, Corrections, Not paid): `_Rows` writes those as the very XML openpyxl would
write for their cells — each distinct value made into XML once, the rows joined from
them a block at a time as the sheet is compressed into the file — because a cell object
per value made a 100,000-line claim take minutes (bench/workbook.py; issue 7). Same
bytes as openpyxl's own, so the cells, styles and files are exactly what they were.

The same inputs give the same bytes: the document's created/modified times and the zip
entries' timestamps are the claim's `prepared_at` (the manifest's `issued_at`, already
shown on the cover as the date prepared), never the clock.

Only this module imports openpyxl for writing. Must not read or write files (openpyxl's
write-only mode streams each sheet through a temporary file of its own, read back into
the workbook and removed when the workbook is saved), print, look at the clock or compute
money beyond summing ledger lines of earlier claims for the "earlier claims" figures.
"""

from __future__ import annotations

import collections
import io
import textwrap
import warnings
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from functools import cached_property
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.compat import safe_string
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.utils.datetime import to_excel
from openpyxl.worksheet.filters import AutoFilter
from openpyxl.worksheet.properties import PageSetupProperties
from openpyxl.worksheet.table import Table, TableColumn, TableStyleInfo
from openpyxl.writer.excel import ExcelWriter

from sib import money
from sib.contract import Contract
from sib.evidence import EPOCH, NO_DAY
from sib.ledger import LEDGER_COLUMNS, History
from sib.period import Period, parse_period
from sib.reconcile import Claim

MAX_SHEET_ROWS = 1_048_576                # rows in an Excel sheet
LINES_PER_SHEET = MAX_SHEET_ROWS - 1      # data rows under the header row
MAX_CELL_TEXT = 32_767                    # characters a cell holds

MONEY = "£#,##0.00"
DATE = "dd/mm/yyyy"
DATETIME = "dd/mm/yyyy hh:mm"
COUNT = "#,##0"
SHARE = "0.0000"
PERCENT = "0.0%"

KIND_LABELS = (("central", "Central top-up"), ("local-authority", "Local authorities"),
               ("health", "Health"), ("dwp", "DWP"), ("other", "Other"))
NOT_PAID = ("pending-verification", "rejected", "reversed")  # in this order on "Not paid"

# Lines: ledger.csv's columns, then two columns the formulas need (see `LINES_NOTE`).
LINE_KINDS = {"achieved_on": "date", "verified_on": "date", "price_from": "date",
              "price": "money", "amount": "money", "capped": "money", "share": "share",
              "late": "bool"}
LINES_HEADERS = LEDGER_COLUMNS + ("funder_kind", "milestones")
LINES_NOTE = ("Lines: columns A–R are ledger.csv's; funder_kind is the paying funder's kind "
              "and milestones is +1 on the first line of a milestone's payment and −1 on the "
              "first line of its reversal (0 otherwise), so that summing it counts milestones.")

_FONT = "Calibri"  # the workbook's default font; named on every styled cell so bold matches
_BOLD = Font(name=_FONT, size=11, bold=True)
_TITLE = Font(name=_FONT, bold=True, size=16)
_SUBTITLE = Font(name=_FONT, size=12, color="404040")
_NOTE = Font(name=_FONT, size=11, italic=True, color="404040")
_HEADING = Font(name=_FONT, bold=True, size=12)
_HEAD_FILL = PatternFill("solid", fgColor="D9E1F2")
_THIN = Side(style="thin", color="808080")
_HEAD_BORDER = Border(bottom=_THIN)
_TOTAL_BORDER = Border(top=_THIN)
_SIGN_BORDER = Border(bottom=Side(style="thin", color="000000"))
_WRAP = Alignment(wrap_text=True, vertical="top")
_TOP = Alignment(vertical="top")
_RIGHT = Alignment(horizontal="right", vertical="top")
_LEFT = Alignment(horizontal="left", vertical="top")
# text in tables is indented one step, so that it does not touch a number on its left
_INDENT = Alignment(horizontal="left", vertical="top", indent=1)
_WRAP_INDENT = Alignment(horizontal="left", vertical="top", indent=1, wrap_text=True)


@dataclass(frozen=True)
class Header:
    """What the workbooks say about where the claim came from: the manifest's facts.

    prepared_at: when the claim was issued (the manifest's `issued_at`, UTC); shown as the
      date prepared and used for the file's timestamps.
    ledger_sha256: sha256 of this claim's ledger.csv, printed on the covers.
    files_sha256: relative path → sha256 of the claim's other files (decisions.csv,
      inputs/…), listed on Provenance.
    previous_manifest_sha256: the previous claim's manifest hash (None for the first claim).
    sib_version: the sib that computed the claim.
    command: the command that produced it, e.g. `sib claim --contract x --period 2022-Q1`.
    sources: where the inputs were read from, as the manifest's `sources` (contract,
      participants, milestones → path shown to users).
    """

    prepared_at: datetime
    ledger_sha256: str
    files_sha256: Mapping[str, str] = field(default_factory=dict)
    previous_manifest_sha256: str | None = None
    sib_version: str = ""
    command: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)


def claim_workbooks(c: Contract, claim: Claim, history: History, header: Header, *,
                    rows_per_sheet: int = LINES_PER_SHEET) -> dict[str, bytes]:
    """`claim.xlsx` and `statements/<funder-id>.xlsx` (each funder with lines) as bytes.

    history: the claims issued before this one (their lines give the earlier figures).
    rows_per_sheet: data rows per Lines sheet before continuing on `Lines (2)`, … (the
      default is what a sheet holds; tests pass a small number).
    """
    if not 1 <= rows_per_sheet <= LINES_PER_SHEET:
        raise ValueError(f"rows_per_sheet must be 1 to {LINES_PER_SHEET}, not {rows_per_sheet}")
    data = _ClaimData.of(c, claim, history, header)
    out = {"claim.xlsx": _claim_book(data, rows_per_sheet)}
    present = set(claim.lines["funder"])
    for f in c.funders:
        if f.id in present:
            out[f"statements/{f.id}.xlsx"] = _statement_book(data, f.id, rows_per_sheet)
    return out


def lines_workbook(c: Contract, claim: Claim, history: History, header: Header, *,
                   rows_per_sheet: int = LINES_PER_SHEET) -> bytes:
    """A workbook holding only claim.xlsx's Lines sheet(s), as bytes: the largest part of
    the claim workbook, on its own (bench/workbook.py times it)."""
    if not 1 <= rows_per_sheet <= LINES_PER_SHEET:
        raise ValueError(f"rows_per_sheet must be 1 to {LINES_PER_SHEET}, not {rows_per_sheet}")
    d = _ClaimData.of(c, claim, history, header)
    book = _Book(d, f"Ledger lines of claim {claim.number}, {claim.period} — {c.name}",
                 f"{c.id} claim {claim.period} lines")
    _table_sheets(book, "Lines", _line_columns(d.lines, d.lines_encoded), rows_per_sheet,
                  table_name="LedgerLines")
    return book.save()


# --- the claim's figures, prepared once -------------------------------------------------------

def _milestone_marks(lines: pd.DataFrame) -> np.ndarray:
    """+1 on the first line of each milestone's payment in a claim, −1 on its reversal's."""
    if not len(lines):
        return np.zeros(0, dtype=np.int64)
    first = ~lines.duplicated(["period", "milestone_id", "kind"]).to_numpy()
    sign = np.where(lines["kind"].to_numpy() == "reversal", -1, 1)
    return (first * sign).astype(np.int64)


@dataclass(frozen=True)
class _ClaimData:
    c: Contract
    claim: Claim
    header: Header
    earlier: pd.DataFrame            # earlier claims' lines (typed), with `marks`
    earlier_periods: tuple[Period, ...]
    lines: pd.DataFrame              # this claim's lines with funder_kind and milestones

    @staticmethod
    def of(c: Contract, claim: Claim, history: History, header: Header) -> "_ClaimData":
        kinds = {f.id: f.kind for f in c.funders}
        lines = claim.lines.reset_index(drop=True).copy()
        lines["funder_kind"] = lines["funder"].map(kinds).fillna("").astype(object)
        lines["milestones"] = _milestone_marks(lines)
        earlier = history.lines.reset_index(drop=True).copy()
        earlier["marks"] = _milestone_marks(earlier)
        periods = tuple(parse_period(p, c.claims) for p in history.periods)
        return _ClaimData(c, claim, header, earlier, periods, lines)

    @cached_property
    def largest_pence(self) -> int:
        """A bound on any money figure of the claim to date (for sizing formula columns): a
        headroom is at most its cap, a total at most the sum of every line's size."""
        caps = [money.pence(f.cap) for f in self.c.funders if f.cap is not None]
        if self.c.caps and self.c.caps.contract is not None:
            caps.append(money.pence(self.c.caps.contract))
        lines = int(self.earlier["amount"].abs().sum()) + int(self.lines["amount"].abs().sum())
        return max([lines, sum(caps)])

    @property
    def largest_count(self) -> int:
        return len(self.earlier) + len(self.lines)

    @property
    def title(self) -> str:
        return f"{self.c.name} — claim {self.claim.number}, {self.claim.period}"

    # The figures below are asked for per funder, outcome or statement: each is worked out
    # for all of them in one pass (sums of integer pence, exact whatever their order).

    @cached_property
    def _earlier_sums(self) -> dict[tuple, int]:
        """(column, value, what) → the earlier lines' sum of `what` where `column` is
        `value`, for funder and outcome; (funder, period) pairs under ('funder-period', …)."""
        e = self.earlier
        out: dict[tuple, int] = {}
        if not len(e):
            return out
        for column in ("funder", "outcome"):
            sums = e.groupby(column, sort=False)[["amount", "marks"]].sum()
            for value, amount, marks in zip(sums.index, sums["amount"].tolist(),
                                            sums["marks"].tolist()):
                out[column, value, "amount"] = int(amount)
                out[column, value, "marks"] = int(marks)
        by = e.groupby(["funder", "period"], sort=False)["amount"].sum()
        for (funder, period), amount in zip(by.index, by.tolist()):
            out["funder-period", funder, period] = int(amount)
        return out

    def earlier_by(self, column: str, value: str, what: str = "amount") -> int:
        """The earlier lines' total of `what` (amount or marks) where `column` (funder or
        outcome) is `value`."""
        return self._earlier_sums.get((column, value, what), 0)

    def earlier_in(self, funder: str, period: str) -> int:
        """What `funder` was claimed in earlier period `period`."""
        return self._earlier_sums.get(("funder-period", funder, period), 0)

    @cached_property
    def _funder_rows(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in
                self.lines.groupby("funder", sort=False).indices.items()}

    def rows_of(self, funder: str) -> np.ndarray:
        """Positions of `funder`'s lines in `lines`, in order."""
        return self._funder_rows.get(funder, np.zeros(0, dtype=np.intp))

    @cached_property
    def lines_encoded(self) -> dict[str, "_Encoded"]:
        """The Lines columns as cell XML (`_Column.encode`), made once for the claim's Lines
        sheet and every statement's."""
        return {col.name: col.encode() for col in _line_columns(self.lines)}


# --- cells and sheets -------------------------------------------------------------------------

def _clean(text: str) -> str:
    """Text a cell can hold: XML-illegal control characters shown as U+FFFD, length capped."""
    return _capped(ILLEGAL_CHARACTERS_RE.sub("\ufffd", text))


def _capped(text: str) -> str:
    """Text no longer than a cell holds."""
    if len(text) > MAX_CELL_TEXT:
        text = text[:MAX_CELL_TEXT - 14] + " … [truncated]"
    return text


def _set_text(cell: WriteOnlyCell, text: str) -> WriteOnlyCell:
    """Put `text` in `cell` as a text cell, whatever it looks like (never a formula)."""
    text = _clean(text)
    cell.value = text
    cell.data_type = "s"  # openpyxl would make "=…" a formula
    return cell


class _Sheet:
    """A write-only sheet whose rows are collected as cells, then sized and written in one go.

    Columns are sized to the cells of rows added with `fit=True` (titles, notes and values
    meant to run on into empty neighbours are added with `fit=False`).
    """

    def __init__(self, book: "_Book", title: str, *, freeze: str | None = None,
                 print_titles: str | None = None, max_width: int = 60):
        self.book = book
        self.formula_widths = book.formula_widths
        self.ws = book.wb.create_sheet(title)
        self.title = title
        self.max_width = max_width
        book.page_setup(self.ws, print_titles)
        if freeze:
            self.ws.freeze_panes = freeze
        self.rows: list[list] = []
        self.fits: list[bool] = []

    @property
    def next_row(self) -> int:
        return len(self.rows) + 1

    def cell(self, value, fmt: str | None = None, font: Font | None = None,
             fill: PatternFill | None = None, border: Border | None = None,
             align: Alignment | None = None) -> WriteOnlyCell | None:
        if value is None and not (fill or border):
            return None
        c = WriteOnlyCell(self.ws)
        if isinstance(value, _Formula):
            c.value = "=" + value.text
        elif isinstance(value, str):
            _set_text(c, value)
            if value[:1] in "=+-@":
                c.quotePrefix = True
        else:
            c.value = value
        if fmt:
            c.number_format = fmt
        if font:
            c.font = font
        if fill:
            c.fill = fill
        if border:
            c.border = border
        c.alignment = align or _TOP  # a row with a wrapped cell reads from its top line
        return c

    def add(self, *cells, fit: bool = True) -> int:
        self.rows.append(list(cells))
        self.fits.append(fit)
        return len(self.rows)

    def blank(self) -> int:
        return self.add()

    def close(self) -> None:
        widths: dict[int, float] = {}
        for row, fit in zip(self.rows, self.fits):
            if not fit:
                continue
            for i, cell in enumerate(row, 1):
                if cell is not None:
                    widths[i] = max(widths.get(i, 0),
                                    _shown_width(cell, self.max_width, self.formula_widths))
        for i, w in widths.items():
            self.ws.column_dimensions[get_column_letter(i)].width = max(w, 6)
        for r, (row, fit) in enumerate(zip(self.rows, self.fits), 1):
            if fit and r not in self.ws.row_dimensions:
                n = max((_wrapped_lines(cell, widths.get(i, 10)) for i, cell in enumerate(row, 1)
                         if cell is not None), default=1)
                if n > 1:
                    self.ws.row_dimensions[r].height = 15 * n
            self.ws.append(row)


# Widths are in characters of the default font; a little over the character count, so a
# column still fits where the font is replaced by a wider one (LibreOffice without Calibri).
def _chars_to_width(n: int) -> float:
    return round(n * 1.15 + 3, 1)


def _wrap_chars(width: float) -> int:
    """Characters of text that fit on one line of a column `width` wide (a little under)."""
    return max(int((width - 3) / 1.05), 1)


def _wrapped_lines(cell: WriteOnlyCell, width: float) -> int:
    """Lines a wrapped text cell takes at `width` (row heights are set, not left to the
    application: LibreOffice does not fit them when it opens the file)."""
    if not (isinstance(cell.value, str) and cell.data_type == "s" and cell.alignment is not None
            and cell.alignment.wrap_text):
        return 1
    chars = _wrap_chars(width)
    return max(len(textwrap.wrap(cell.value, chars, break_long_words=True)), 1)


def _shown_width(cell: WriteOnlyCell, cap: int, formula_widths: Mapping[str, int]) -> float:
    """How wide a cell's shown value is, in column-width units (a formula's value is not
    known here: it is sized as the largest figure of its format in the workbook)."""
    v, fmt = cell.value, cell.number_format
    if v is None:
        return 0
    if cell.data_type == "f":
        n = formula_widths.get(fmt, 10)
    elif isinstance(v, str):
        # a wrapped header is as wide as its longest word; other text as its length (a
        # wrapped cell up to the cap, beyond which it takes more lines)
        header = cell.alignment.wrap_text and cell.alignment.vertical == "bottom"
        n = max((len(w) for w in v.split()), default=0) if header else len(v)
    elif isinstance(v, bool):
        n = 5
    elif isinstance(v, datetime):
        n = 16
    elif isinstance(v, date):
        n = 10
    elif fmt == MONEY:
        n = len(money.fmt_gbp(int(Decimal(v) * 100)))
    elif isinstance(v, int):
        n = len(f"{v:,}")
    else:
        n = len(str(v))
    if cell.font is not None and cell.font.b:
        n += 1
    return _chars_to_width(min(n, cap))


@dataclass(frozen=True)
class _Formula:
    """A formula for `_Sheet.cell` (without its '='); every plain string is written as text."""

    text: str


def formula(text: str) -> _Formula:
    return _Formula(text)


def _money(p) -> Decimal:
    return money.pounds(int(p))


def _day(n) -> date | None:
    n = int(n)
    return None if n >= NO_DAY else date.fromordinal(n + EPOCH)


class _Book:
    """A write-only workbook with the house page setup, saved to deterministic bytes."""

    def __init__(self, data: _ClaimData, title: str, subject: str):
        self.data = data
        self.formula_widths = {MONEY: len(money.fmt_gbp(data.largest_pence)),
                               COUNT: len(f"{data.largest_count:,}"), PERCENT: 7}
        self.wb = Workbook(write_only=True)
        self.wb.calculation.fullCalcOnLoad = True  # no cached values: compute on open
        props = self.wb.properties
        stamp = _naive_utc(data.header.prepared_at)
        props.created = stamp
        props.modified = stamp
        props.creator = f"sib {data.header.sib_version}".strip()
        props.lastModifiedBy = props.creator
        props.title = title
        props.subject = subject
        self.footer = data.title
        self.streams: list[tuple[object, _Rows]] = []

    def page_setup(self, ws, print_titles: str | None) -> None:
        ws.page_setup.orientation = "landscape"
        ws.page_setup.paperSize = "9"  # A4
        ws.page_setup.fitToWidth = 1
        ws.page_setup.fitToHeight = 0
        ws.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
        ws.page_margins.left = ws.page_margins.right = 0.5
        ws.page_margins.top = ws.page_margins.bottom = 0.6
        ws.print_options.horizontalCentered = False
        # a header or footer holds 255 characters, its codes included
        ws.oddFooter.left.text = _clean(self.footer)[:120].replace("&", "&&")
        ws.oddFooter.left.size = 8
        ws.oddFooter.center.text = "Page &P of &N"
        ws.oddFooter.center.size = 8
        ws.oddFooter.right.text = "&A"
        ws.oddFooter.right.size = 8
        if print_titles:
            ws.print_title_rows = print_titles

    def stream(self, ws, rows: "_Rows") -> None:
        """Have `rows` written as `ws`'s data rows, after the rows appended to it so far, when
        the workbook is saved (see `_StampedZip`)."""
        self.streams.append((ws, rows))

    def save(self) -> bytes:
        raw = io.BytesIO()
        archive = _StampedZip(raw, self.data.header.prepared_at, self.streams)
        ExcelWriter(self.wb, archive).save()  # unlike wb.save, keeps properties.modified
        if archive.pending:  # cannot happen: every sheet is written
            raise RuntimeError(f"the rows of sheet {archive.pending[0][0].title} were not "
                               "written into the workbook")
        return raw.getvalue()


def _naive_utc(t: datetime) -> datetime:
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc).replace(tzinfo=None)
    return t.replace(microsecond=0)


class _StampedZip(zipfile.ZipFile):
    """The zip openpyxl's writer saves into: every entry stamped `when` rather than the clock
    (zip's clock starts in 1980 and counts seconds in twos), compressed once, and each
    streamed table sheet's rows written into its sheet as the sheet is compressed.

    openpyxl writes a write-only sheet's XML to a temporary file and adds that file with
    `write`; a streamed sheet's file holds its header row only, and its data rows (a
    `_Rows`) go in before its `</sheetData>` here, a block at a time.
    """

    def __init__(self, file, when: datetime, streams: Sequence[tuple[object, "_Rows"]]):
        super().__init__(file, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
        t = _naive_utc(when)
        self._stamp = max((t.year, t.month, t.day, t.hour, t.minute, t.second - t.second % 2),
                          (1980, 1, 1, 0, 0, 0))
        self.pending = collections.deque(streams)  # in the order the sheets are written

    def _info(self, name: str) -> zipfile.ZipInfo:
        z = zipfile.ZipInfo(name, date_time=self._stamp)
        z.compress_type = zipfile.ZIP_DEFLATED
        z.create_system = 0
        z.external_attr = 0
        return z

    def writestr(self, zinfo_or_arcname, data, compress_type=None, compresslevel=None):
        name = (zinfo_or_arcname.filename if isinstance(zinfo_or_arcname, zipfile.ZipInfo)
                else zinfo_or_arcname)
        super().writestr(self._info(name), data)

    def write(self, filename, arcname=None, compress_type=None, compresslevel=None):
        arcname = arcname or filename
        with open(filename, "rb") as f:  # openpyxl's own temporary file of the sheet
            data = f.read()
        rows = self._rows_of(arcname)
        if rows is None:
            return self.writestr(arcname, data)
        # the header row is there (text in it is escaped), so this is where the rows end
        head, end, tail = data.partition(b"</sheetData>")
        if not end:
            raise RuntimeError(f"{arcname} has no rows to add the table's rows to")
        z = self._info(arcname)
        # the size, known in advance, decides zip64 exactly as `writestr` would
        z.file_size = len(head) + rows.size() + len(end) + len(tail)
        with self.open(z, "w") as out:
            out.write(head)
            for block in rows.blocks():
                out.write(block)
            out.write(end + tail)

    def _rows_of(self, arcname: str) -> "_Rows | None":
        """The streamed rows of the sheet written as `arcname`, if it has any. A sheet's path
        is known once the writer numbers the sheets, as it writes them: in the order they
        were made, so the next sheet with rows is almost always the first pending."""
        for k, (ws, rows) in enumerate(self.pending):
            if ws.path[1:] == arcname:
                del self.pending[k]
                return rows
        return None


# --- tables (Lines, Corrections, Not paid), split across sheets when long ---------------------

@dataclass(frozen=True)
class _Column:
    """One column of a streamed table, typed as the engine holds it.

    kind: text (str; '' or None is an empty cell) | money (pence; None is empty) | date
    (day number; NO_DAY is empty) | share (share units) | bool | count (int).
    """

    name: str
    kind: str
    data: pd.Series
    encoded: "_Encoded | None" = None  # its cells, when made already (`encode`)

    def encode(self) -> "_Encoded":
        """The column as codes into its distinct values, each value written once as it is
        inside its cell in the XML openpyxl writes (`<v>650</v>`, `<t>a &amp; b</t>`)."""
        if self.encoded is not None:
            return self.encoded
        codes, uniques = pd.factorize(self.data, use_na_sentinel=True)
        codes = np.asarray(codes, dtype=np.intp)
        k = self.kind
        m = len(uniques)
        values = np.empty(m + 1, dtype=object)  # + a last slot for the empty cell (code -1)
        variant = np.full(m + 1, -1, dtype=np.int8)
        raw: list[str | None] = []
        if k == "text":
            raw = [None if v is None or v != v else (str(v) or None) for v in uniques]
            # most columns hold no character a cell cannot: look for one in all at once
            clean = _clean if ILLEGAL_CHARACTERS_RE.search("\n".join(filter(None, raw))) \
                else _capped
            shown = [None if v is None else clean(v) for v in raw]
            values[:-1] = [None if v is None else _escape(v) for v in shown]
            variant[:-1] = [-1 if v is None else
                            (2 if r[:1] in "=+-@" else 0) + (1 if _keeps_space(v) else 0)
                            for v, r in zip(shown, raw)]
            t = "inlineStr"
        else:
            for i, x in enumerate(uniques):
                v = _cell_value(k, x)
                if v is not None:
                    if k == "date":
                        v = to_excel(v)  # the serial number openpyxl writes for a date
                    values[i], variant[i] = safe_string(v), 0
            t = "b" if k == "bool" else "n"
        if (variant[:-1] < 0).any():  # '' and NO_DAY are empty cells, as None is
            codes = np.where(variant[codes] < 0, -1, codes)
        return _Encoded(codes, values, variant, t, raw)

    def width(self, enc: "_Encoded") -> float:
        """Its header (with room for the filter button) or its longest shown value, bounded
        (`enc`: the column encoded)."""
        d = self.data
        n = 0
        if self.kind == "text":
            n = max((len(v) + 1 for v in enc.raw if v is not None), default=0)  # + the indent
        elif self.kind == "money":
            vals = [int(v) for v in d.dropna().tolist()] if d.dtype == object else d
            if len(vals):
                n = max(len(money.fmt_gbp(int(min(vals)))), len(money.fmt_gbp(int(max(vals)))))
        elif self.kind == "date":
            n = 10
        elif self.kind == "count":
            n = len(f"{int(d.abs().max()):,}") + 1 if len(d) else 1
        elif self.kind == "share":
            n = 7
        elif self.kind == "bool":
            n = 5
        return max(_chars_to_width(min(n, 60)), _chars_to_width(len(self.name) + 3))


def _cell_value(kind: str, v):
    """A table value as the cell value openpyxl is given for it (None: an empty cell)."""
    if v is None or v != v:
        return None
    if kind == "money":
        return _money(v)
    if kind == "date":
        return _day(v)
    if kind == "share":
        return Decimal(money.fmt_share(int(v)))
    if kind == "bool":
        return bool(v)
    return int(v)


# A text cell as openpyxl writes it with the standard library's XML writer: `<is><t>` with
# &, < and > escaped, and xml:space="preserve" when the text has leading or trailing space.
_TEXT_OPEN = ("<is><t>", '<is><t xml:space="preserve">')
_TEXT_CLOSE = "</t></is></c>"
_NUMBER_OPEN, _NUMBER_CLOSE = "<v>", "</v></c>"


def _keeps_space(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and text != stripped


def _escape(text: str) -> str:
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "xmlcharrefreplace")  # as openpyxl's XML writer encodes


@dataclass
class _Encoded:
    """A column as `_Column.encode` gives it: its distinct values, each written once.

    codes: per row, its value's index (-1: an empty cell).
    values: per distinct value (and None last, for -1), the text (escaped) or number as
      written inside its cell's <t> or <v>; a text that needs no escaping is the engine's
      own string, so a column of distinct ids costs no copy of them.
    variant: per distinct value (and -1 last): which opening its cell takes. For text, +1
      where the text keeps leading or trailing space (xml:space="preserve") and +2 where
      it starts like a formula (Excel's quote prefix: another cell style); 0 for numbers.
    t: the cells' type attribute (inlineStr, n or b).
    raw: per distinct value, its text as given (text columns only; None: empty).
    """

    codes: np.ndarray
    values: np.ndarray
    variant: np.ndarray
    t: str
    raw: list
    _nbytes: np.ndarray | None = None

    @property
    def text(self) -> bool:
        return self.t == "inlineStr"

    def nbytes(self) -> np.ndarray:
        """Per value (and 0 last), the bytes it is written as."""
        if self._nbytes is None:
            self._nbytes = np.array(
                [0 if v is None else len(v) if v.isascii() else len(_utf8(v))
                 for v in self.values.tolist()], dtype=np.int64)
        return self._nbytes

    def take(self, rows: np.ndarray) -> "_Encoded":
        """The column of these rows only (its distinct values: those the rows use)."""
        used, codes = np.unique(self.codes[rows], return_inverse=True)
        codes = codes.reshape(-1).astype(np.intp)
        if len(used) and used[0] == -1:  # empty cells keep -1
            used, codes = used[1:], codes - 1
        keep = np.append(used, -1)  # and the empty cell's slot, last
        return _Encoded(codes, self.values[keep], self.variant[keep], self.t,
                        [self.raw[i] for i in used.tolist()] if self.raw else [])

    def opens(self, plain: str | None, quoted: str | None) -> tuple:
        """Per variant, what a cell writes between its row number and its value: `plain` or
        `quoted` (the attributes of its two cell styles; None: a style the sheet does not
        use) and the value's opening tag."""
        if not self.text:
            return (None if plain is None else plain + _NUMBER_OPEN,)
        return tuple(None if mid is None else mid + _TEXT_OPEN[v & 1]
                     for v, mid in enumerate((plain, plain, quoted, quoted)))

    @property
    def close(self) -> str:
        return _TEXT_CLOSE if self.text else _NUMBER_CLOSE


class _Rows:
    """The data rows of one table sheet (rows `lo` to `hi` of its columns), as the XML
    openpyxl's write-only mode writes for them, made a block of rows at a time when the
    workbook is saved. Writing the XML here, not through a cell object per value, is what
    takes a 100,000-line Lines sheet from 25 s to under 2 s (bench/workbook.py).

    columns: per column, (letter, its `_Encoded`, its `opens`)."""

    def __init__(self, columns: Sequence[tuple[str, _Encoded, tuple]], lines: np.ndarray | None,
                 lo: int, hi: int):
        self.columns, self.lines, self.lo, self.hi = columns, lines, lo, hi

    def _opens(self, b0: int, b1: int) -> list[str]:
        rs = range(b0 - self.lo + 2, b1 - self.lo + 2)
        if self.lines is None:
            return [f'<row r="{r}">' for r in rs]
        # a row of wrapped text gets its height: LibreOffice does not fit heights on opening
        return [f'<row r="{r}">' if n <= 1 else f'<row r="{r}"{_height(n)}>'
                for r, n in zip(rs, self.lines[b0:b1].tolist())]

    def blocks(self):
        for b0 in range(self.lo, self.hi, _BLOCK):
            b1 = min(b0 + _BLOCK, self.hi)
            rs = [str(r) for r in range(b0 - self.lo + 2, b1 - self.lo + 2)]
            cells = []
            for letter, enc, opens in self.columns:
                c = enc.codes[b0:b1]
                pre, close = '<c r="' + letter, enc.close
                cells.append([pre + r + opens[v] + x + close if v >= 0 else ""
                              for r, v, x in zip(rs, enc.variant[c].tolist(),
                                                 enc.values[c].tolist())])
            yield _utf8("".join([o + "".join(row) + "</row>" for o, row in
                                 zip(self._opens(b0, b1), zip(*cells))]))

    def size(self) -> int:
        """The bytes `blocks` makes, counted without making them."""
        lo, hi = self.lo, self.hi
        if hi <= lo:
            return 0
        # the digits of each row's number (2 … hi - lo + 1)
        digits = np.char.str_len(np.arange(2, hi - lo + 2).astype(str)).astype(np.int64)
        total = int(digits.sum()) + len('<row r=""></row>') * (hi - lo)
        if self.lines is not None:
            high = self.lines[lo:hi]
            total += sum(len(_height(n)) for n in high[high > 1].tolist())
        for letter, enc, opens in self.columns:
            c = enc.codes[lo:hi]
            full = c >= 0
            nbytes = enc.nbytes()
            total += int(np.bincount(c[full], minlength=len(nbytes))[:len(nbytes)] @ nbytes)
            per_variant = np.bincount(enc.variant[c[full]], minlength=len(opens))
            total += sum(int(k) * len(o) for k, o in zip(per_variant.tolist(), opens) if k)
            total += int(full.sum()) * (len('<c r="') + len(letter) + len(enc.close))
            total += int(digits[full].sum())
        return total


def _height(lines: int) -> str:
    """A row's attributes for a height of `lines` lines (as openpyxl writes a row height)."""
    return f' ht="{safe_string(float(15 * lines))}" customHeight="1"'


_RIGHT_KINDS = ("money", "count", "share", "date")
_FORMATS = {"money": MONEY, "date": DATE, "count": COUNT, "share": SHARE}
_BLOCK = 10_000  # rows made into XML at a time


def _table_sheets(book: _Book, base: str, columns: Sequence[_Column], rows_per_sheet: int, *,
                  table_name: str | None = None, freeze: str = "B2", wrap: Iterable[str] = (),
                  empty_note: str | None = None) -> list[tuple[str, int]]:
    """Stream a table onto `base`, `base (2)`, …; each with a header row. Returns
    (sheet title, data rows) per sheet. With `table_name`, each sheet's range is an Excel
    table (filters, banding) named `table_name`, `table_name_2`, …; else an autofilter.

    The header rows are openpyxl cells; the data rows are written by `_Rows` as the XML
    openpyxl would write for cells styled as one prototype cell per column (two for text:
    plain, and quote-prefixed for text that starts like a formula), byte for byte."""
    n = len(columns[0].data)
    encoded = [col.encode() for col in columns]
    widths = [col.width(enc) for col, enc in zip(columns, encoded)]
    wrap = set(wrap)
    lines = None  # per row, the lines its wrapped text takes
    for i, (col, enc) in enumerate(zip(columns, encoded)):
        if col.name in wrap:
            chars = _wrap_chars(widths[i]) - 1
            per_value = np.array([len(textwrap.wrap(v or "", chars)) for v in enc.raw] + [0],
                                 dtype=np.int64)
            got = per_value[enc.codes]
            lines = got if lines is None else np.maximum(lines, got)
    letters = [get_column_letter(i) for i in range(1, len(columns) + 1)]
    chunks = [(s, min(s + rows_per_sheet, n)) for s in range(0, n, rows_per_sheet)] or [(0, 0)]
    out = []
    last_col = letters[-1]
    for k, (lo, hi) in enumerate(chunks, 1):
        title = base if k == 1 else f"{base} ({k})"
        ws = book.wb.create_sheet(title)
        book.page_setup(ws, "1:1")
        for i, w in enumerate(widths, 1):
            ws.column_dimensions[get_column_letter(i)].width = w
        ws.freeze_panes = freeze
        head = []
        for col in columns:
            h = WriteOnlyCell(ws)
            _set_text(h, col.name)
            h.font, h.fill, h.border = _BOLD, _HEAD_FILL, _HEAD_BORDER
            h.alignment = _RIGHT if col.kind in _RIGHT_KINDS else _INDENT
            head.append(h)
        ws.append(head)
        protos = []
        for col in columns:
            p, q = WriteOnlyCell(ws), WriteOnlyCell(ws)
            if col.kind in _FORMATS:
                p.number_format = _FORMATS[col.kind]
            if col.name in wrap:
                p.alignment = q.alignment = _WRAP_INDENT
            elif col.kind == "text":
                p.alignment = q.alignment = _INDENT
            else:
                p.alignment = _TOP
            q.quotePrefix = True
            protos.append((p, q))
        if hi > lo:
            # a cell's style gets its number in the workbook when first written: number the
            # prototypes in the order the rows first use them, as writing cells would
            first = []
            for i, (enc, (p, q)) in enumerate(zip(encoded, protos)):
                c = enc.codes[lo:hi]
                used = c >= 0
                prefixed = (enc.variant[c] >= 2) & used
                for which, cell, mask in ((0, p, used & ~prefixed), (1, q, prefixed)):
                    if mask.any():
                        first.append((int(np.argmax(mask)), i, which, cell))
            ids: dict[tuple[int, int], int] = {}
            for _r, i, which, cell in sorted(first, key=lambda x: x[:3]):
                ids[i, which] = cell.style_id
            cols = []
            for i, (letter, enc, (p, q)) in enumerate(zip(letters, encoded, protos)):
                mids = [None if (i, which) not in ids else
                        (f'" s="{ids[i, which]}" t="{enc.t}">' if cell.has_style
                         else f'" t="{enc.t}">')
                        for which, cell in ((0, p), (1, q))]
                cols.append((letter, enc, enc.opens(*mids)))
            book.stream(ws, _Rows(cols, lines, lo, hi))
        if hi == lo and empty_note:
            ws.append([_note_cell(ws, empty_note)])
        last_row = max(hi - lo, 1) + 1
        ref = f"A1:{last_col}{last_row}"
        if table_name:
            name = table_name if k == 1 else f"{table_name}_{k}"
            t = Table(displayName=name, name=name, ref=ref)
            t.tableStyleInfo = TableStyleInfo(name="TableStyleLight1", showRowStripes=True)
            t.tableColumns = [TableColumn(id=i, name=col.name) for i, col in enumerate(columns, 1)]
            t.autoFilter = AutoFilter(ref=ref)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "add table columns manually": done above
                ws.add_table(t)
        else:
            ws.auto_filter.ref = ref
        out.append((title, hi - lo))
    return out


def _note_cell(ws, text: str) -> WriteOnlyCell:
    c = WriteOnlyCell(ws)
    _set_text(c, text)
    c.font = _NOTE
    return c


def _line_columns(lines: pd.DataFrame,
                  encoded: Mapping[str, "_Encoded"] | None = None) -> list[_Column]:
    """The Lines sheet's columns from typed lines (with funder_kind and milestones), with
    their cells if already made."""
    return [_Column(name, LINE_KINDS.get(name, "count" if name == "milestones" else "text"),
                    lines[name].reset_index(drop=True), (encoded or {}).get(name))
            for name in LINES_HEADERS]


class _Lines:
    """Where the lines are, for formulas: each Lines sheet and its data rows."""

    def __init__(self, sheets: list[tuple[str, int]]):
        self.sheets = sheets

    def _range(self, sheet: str, rows: int, column: str) -> str:
        letter = get_column_letter(LINES_HEADERS.index(column) + 1)
        quoted = sheet.replace("'", "''")
        return f"'{quoted}'!${letter}$2:${letter}${max(rows, 1) + 1}"

    def sum(self, column: str) -> str:
        return "SUM(" + ",".join(self._range(s, n, column) for s, n in self.sheets) + ")"

    def sumifs(self, column: str, *criteria: tuple[str, str]) -> str:
        """SUMIFS over every Lines sheet; criteria are (column, criterion expression)."""
        parts = []
        for s, n in self.sheets:
            args = [self._range(s, n, column)]
            for col, crit in criteria:
                args += [self._range(s, n, col), crit]
            parts.append("SUMIFS(" + ",".join(args) + ")")
        return "+".join(parts)

    def described(self) -> str:
        names = [s for s, _ in self.sheets]
        if len(names) == 1:
            return f"on sheet {names[0]}"
        listed = ", ".join(names[:-1]) + " and " + names[-1]
        return (f"on sheets {listed} (a sheet holds {max(n for _, n in self.sheets):,}); "
                "every total covers all of them")


def _q(text: str) -> str:
    """A text constant inside a formula."""
    return '"' + text.replace('"', '""') + '"'


# --- claim.xlsx -------------------------------------------------------------------------------

def _claim_book(d: _ClaimData, rows_per_sheet: int) -> bytes:
    c, claim = d.c, d.claim
    book = _Book(d, f"Outcomes payment claim {claim.number}, {claim.period} — {c.name}",
                 f"{c.id} claim {claim.period}")
    # sheets in the spec's order; the small ones are filled once the Lines sheets are known
    cover = _Sheet(book, "Claim")
    outcomes = _Sheet(book, "Outcomes", freeze="B2", print_titles="1:1", max_width=45)
    funders = _Sheet(book, "Funders", freeze="B2", print_titles="1:1")
    L = _Lines(_table_sheets(book, "Lines", _line_columns(d.lines, d.lines_encoded),
                             rows_per_sheet, table_name="LedgerLines"))
    _corrections_sheet(book, d, rows_per_sheet)
    _not_paid_sheet(book, d, rows_per_sheet)
    recon = _Sheet(book, "Reconciliation", freeze="B3", print_titles="1:2")
    prov = _Sheet(book, "Provenance", freeze="A2", print_titles="1:1")

    _cover(cover, d, L, len(d.lines))
    _outcomes(outcomes, d, L)
    _funders(funders, d, L)
    _reconciliation(recon, d)
    _provenance(prov, d, L)
    for sheet in (cover, outcomes, funders, recon, prov):
        sheet.close()
    return book.save()


def _head_row(s: _Sheet, names: Sequence[str], right_from: int = 1, wrap: bool = False) -> int:
    """A header row; the headers of number columns (from `right_from`) sit over the numbers.
    With `wrap`, headers wrap onto two lines so that number columns stay narrow."""
    cells = []
    for i, n in enumerate(names):
        align = Alignment(horizontal="right" if i >= right_from else "left",
                          vertical="bottom", wrap_text=wrap)
        cells.append(s.cell(n, font=_BOLD, fill=_HEAD_FILL, border=_HEAD_BORDER, align=align))
    r = s.add(*cells)
    if wrap:
        s.ws.row_dimensions[r].height = 30
    return r


def _identity(s: _Sheet, d: _ClaimData, L: _Lines, n_lines: int) -> None:
    """The header block shared by the claim's cover and the statements (values run on into
    the empty columns to their right, so they do not size the columns)."""
    c, claim, h = d.c, d.claim, d.header

    def row(label: str, *cells) -> None:
        s.add(s.cell(label, font=_BOLD), *cells, fit=False)

    for k, v in (("Fund", c.fund), ("Project", c.name), ("Project reference", c.reference),
                 ("Contract", c.id), ("Provider", c.provider)):
        if v:
            row(k, s.cell(str(v)))
    row("Claim number", s.cell(claim.number, fmt="0", align=_LEFT))
    row("Claim period", s.cell(claim.period.label))
    row("Period from", s.cell(claim.period.start, fmt=DATE, align=_LEFT))
    row("Period to", s.cell(claim.period.end, fmt=DATE, align=_LEFT))
    row("Date prepared", s.cell(_naive_utc(h.prepared_at).date(), fmt=DATE, align=_LEFT))
    row("Ledger hash (SHA-256 of ledger.csv)", s.cell(h.ledger_sha256))
    row("Ledger lines", s.cell(f"{n_lines:,} {L.described()}"))


def _cover(s: _Sheet, d: _ClaimData, L: _Lines, n_lines: int) -> None:
    c, claim = d.c, d.claim
    r = s.add(s.cell(f"Outcomes payment claim {claim.number} — {claim.period}", font=_TITLE),
              fit=False)
    s.ws.row_dimensions[r].height = 24  # a 16 pt title: heights are not fitted on opening
    s.add(s.cell(c.name, font=_SUBTITLE), fit=False)
    s.blank()
    _identity(s, d, L, n_lines)
    s.blank()
    _head_row(s, ["Totals by funder kind", "This claim", "Earlier claims", "Claimed to date",
                  "Cap", "Headroom"])
    for kind, label in KIND_LABELS:
        fs = [f for f in c.funders if f.kind == kind]
        caps = [f.cap for f in fs]
        cap = sum((money.pence(x) for x in caps), 0) if fs and all(x is not None for x in caps) \
            else None
        earlier = sum(d.earlier_by("funder", f.id) for f in fs)
        _total_row(s, label, formula(L.sumifs("amount", ("funder_kind", _q(kind)))), earlier, cap)
    contract_cap = money.pence(c.caps.contract) if c.caps and c.caps.contract is not None else None
    earlier_all = int(d.earlier["amount"].sum()) if len(d.earlier) else 0
    _total_row(s, "All funders (contract cap)" if contract_cap is not None else "All funders",
               formula(L.sum("amount")), earlier_all, contract_cap, total=True)
    s.blank()
    _head_row(s, ["This claim's lines", "Amount"])
    s.add(s.cell("Payments"),
          s.cell(formula(L.sumifs("amount", ("kind", _q("payment")))), fmt=MONEY))
    s.add(s.cell("Reversals (corrections of earlier claims)"),
          s.cell(formula(L.sumifs("amount", ("kind", _q("reversal")))), fmt=MONEY))
    s.add(s.cell("Withheld by caps (not claimed)"), s.cell(formula(L.sum("capped")), fmt=MONEY))
    s.blank()
    s.add(s.cell("Declaration", font=_HEADING), fit=False)
    r = s.add(s.cell("I declare that the outcomes claimed here were achieved by eligible "
                     "participants as the contract defines them, that the evidence listed on the "
                     "Lines sheet is held and available for inspection, and that no outcome is "
                     "claimed twice.", align=_WRAP), fit=False)
    s.ws.merged_cells.add(f"A{r}:F{r}")
    s.ws.row_dimensions[r].height = 32  # two lines: a merged cell's height is not fitted
    for k in ("Name", "Role", "Signature", "Date"):
        s.blank()
        r = s.add(s.cell(k, font=_BOLD, align=Alignment(vertical="bottom")),
                  *[s.cell(None, border=_SIGN_BORDER) for _ in range(3)])
        s.ws.row_dimensions[r].height = 24


def _total_row(s: _Sheet, label: str, this_claim: _Formula, earlier: int, cap: int | None,
               total: bool = False) -> int:
    r = s.next_row
    font = _BOLD if total else None
    border = _TOTAL_BORDER if total else None
    cells = [s.cell(label, font=font, border=border),
             s.cell(this_claim, fmt=MONEY, font=font, border=border),
             s.cell(_money(earlier), fmt=MONEY, font=font, border=border),
             s.cell(formula(f"B{r}+C{r}"), fmt=MONEY, font=font, border=border)]
    if cap is not None:
        cells += [s.cell(_money(cap), fmt=MONEY, font=font, border=border),
                  s.cell(formula(f"E{r}-D{r}"), fmt=MONEY, font=font, border=border)]
    else:
        cells += [s.cell(None, border=border), s.cell(None, border=border)]
    return s.add(*cells)


def _price_in_force(prices: Mapping[date, object], on: date) -> tuple[date, int] | None:
    eff = sorted(d for d in prices if d <= on)
    return (eff[-1], money.pence(prices[eff[-1]])) if eff else None


def _versions_in(prices: Mapping[date, object], period: Period) -> list[date]:
    """The effective dates of the price versions in force on some day of `period`."""
    days = sorted(prices)
    return [k for k, nxt in zip(days, days[1:] + [None])
            if k <= period.end and (nxt is None or nxt > period.start)]


def _outcomes(s: _Sheet, d: _ClaimData, L: _Lines) -> None:
    c, period = d.c, d.claim.period
    _head_row(s, ["outcome", "name", "price in force", "price from", "count this claim",
                  "amount this claim", "of which top-up (central)", "count earlier",
                  "amount earlier", "count to date", "amount to date", "max_count"],
              right_from=2, wrap=True)
    first = s.next_row
    changed = []
    for o in c.outcomes:
        r = s.next_row
        p = _price_in_force(o.prices, period.end)
        if len(_versions_in(o.prices, period)) > 1:
            changed.append(o)
        s.add(s.cell(o.id, align=_TOP), s.cell(o.name, align=_WRAP),
              s.cell(_money(p[1]) if p else None, fmt=MONEY),
              s.cell(p[0] if p else None, fmt=DATE),
              s.cell(formula(L.sumifs("milestones", ("outcome", f"$A{r}"))), fmt=COUNT),
              s.cell(formula(L.sumifs("amount", ("outcome", f"$A{r}"))), fmt=MONEY),
              s.cell(formula(L.sumifs("amount", ("outcome", f"$A{r}"),
                                      ("funder_kind", _q("central")))), fmt=MONEY),
              s.cell(d.earlier_by("outcome", o.id, "marks"), fmt=COUNT),
              s.cell(_money(d.earlier_by("outcome", o.id)), fmt=MONEY),
              s.cell(formula(f"E{r}+H{r}"), fmt=COUNT),
              s.cell(formula(f"F{r}+I{r}"), fmt=MONEY),
              s.cell(o.max_count, fmt=COUNT))
    last = s.next_row - 1
    b = dict(font=_BOLD, border=_TOTAL_BORDER)
    s.add(s.cell("All outcomes", **b), *[s.cell(None, border=_TOTAL_BORDER) for _ in "BCD"],
          *[s.cell(formula(f"SUM({col}{first}:{col}{last})"), fmt=COUNT if col in "EHJ" else MONEY,
                   **b) for col in "EFGHIJK"],
          s.cell(None, border=_TOTAL_BORDER))
    if changed:  # a price changed during the period: every version in force in it
        s.blank()
        _head_row(s, ["outcome", "price versions in force during the period", "price",
                      "price from"], right_from=2)
        for o in changed:
            for k in _versions_in(o.prices, period):
                s.add(s.cell(o.id), s.cell(o.name, align=_WRAP),
                      s.cell(_money(money.pence(o.prices[k])), fmt=MONEY), s.cell(k, fmt=DATE))


def _funders(s: _Sheet, d: _ClaimData, L: _Lines) -> None:
    _head_row(s, ["funder", "name", "kind", "this claim", "earlier claims", "claimed to date",
                  "cap", "headroom", "cap used"], right_from=3, wrap=True)
    first = s.next_row
    for f in d.c.funders:
        r = s.next_row
        cap = money.pence(f.cap) if f.cap is not None else None
        s.add(s.cell(f.id), s.cell(f.name), s.cell(f.kind),
              s.cell(formula(L.sumifs("amount", ("funder", f"$A{r}"))), fmt=MONEY),
              s.cell(_money(d.earlier_by("funder", f.id)), fmt=MONEY),
              s.cell(formula(f"D{r}+E{r}"), fmt=MONEY),
              s.cell(_money(cap) if cap is not None else None, fmt=MONEY),
              s.cell(formula(f"G{r}-F{r}") if cap is not None else None, fmt=MONEY),
              s.cell(formula(f"F{r}/G{r}") if cap else None, fmt=PERCENT))
    last = s.next_row - 1
    b = dict(font=_BOLD, border=_TOTAL_BORDER)
    s.add(s.cell("All funders", **b), *[s.cell(None, border=_TOTAL_BORDER) for _ in "BC"],
          *[s.cell(formula(f"SUM({col}{first}:{col}{last})"), fmt=MONEY, **b) for col in "DEF"],
          *[s.cell(None, border=_TOTAL_BORDER) for _ in "GHI"])


def _corrections_sheet(book: _Book, d: _ClaimData, rows_per_sheet: int) -> None:
    """Reversal lines, and the new payment lines of re-rated milestones, by milestone."""
    lines, dec = d.lines, d.claim.decisions
    rerated = set(dec.loc[dec["decision"] == "re-rated", "milestone_id"])
    sel = (lines["kind"] == "reversal") | lines["milestone_id"].isin(rerated)
    rows = lines[sel].merge(dec[["milestone_id", "decision", "reason", "detail"]],
                            on="milestone_id", how="left", sort=False)
    rows = rows.sort_values(["milestone_id", "line_id"], kind="stable").reset_index(drop=True)
    # the earlier line each reversal corrects (none for a re-rated milestone's new payment)
    e = d.earlier
    once = ~e["line_id"].duplicated().to_numpy()
    at = pd.Index(e["line_id"].to_numpy()[once]).get_indexer(rows["reverses"].to_numpy()) \
        if len(e) else np.full(len(rows), -1)
    periods, amounts = e["period"].to_numpy()[once], e["amount"].to_numpy()[once]
    period = pd.Series([periods[i] if i >= 0 else None for i in at.tolist()], dtype=object)
    amount = pd.Series([int(amounts[i]) if i >= 0 else None for i in at.tolist()],
                       dtype=object)

    def text(name: str) -> pd.Series:
        return rows[name].fillna("").astype(object)

    cols = [_Column(name, "text", text(name)) for name in
            ("milestone_id", "participant_id", "decision", "reason", "line_id", "kind",
             "outcome", "funder")]
    cols += [_Column("amount", "money", rows["amount"]),
             _Column("corrects line", "text", text("reverses")),
             _Column("claimed in", "text", period),
             _Column("amount corrected", "money", amount),
             _Column("detail", "text", text("detail"))]
    _table_sheets(book, "Corrections", cols, rows_per_sheet, wrap=("detail",),
                  empty_note="No corrections in this claim.")


def _not_paid_sheet(book: _Book, d: _ClaimData, rows_per_sheet: int) -> None:
    """Milestones left unpaid by this claim: pending, rejected, reversed (to chase)."""
    dec = d.claim.decisions
    rows = dec[dec["decision"].isin(NOT_PAID)].copy()
    rows["order"] = rows["decision"].map({k: i for i, k in enumerate(NOT_PAID)})
    rows = rows.sort_values(["order", "reason", "milestone_id"], kind="stable")
    rows = rows.reset_index(drop=True)
    cols = [_Column(name, "text", rows[name].fillna("").astype(object))
            for name in ("milestone_id", "participant_id", "milestone", "outcome", "decision",
                         "reason", "detail")]
    _table_sheets(book, "Not paid", cols, rows_per_sheet, wrap=("detail",),
                  empty_note="Every milestone looked at was paid, now or earlier.")


def _reconciliation(s: _Sheet, d: _ClaimData) -> None:
    dec = d.claim.decisions
    s.add(s.cell("rows in = paid now + paid earlier + corrected (re-rated or reversed) + "
                 "pending + rejected", font=_BOLD), fit=False)
    _head_row(s, ["outcome", "rows in", "paid now", "paid earlier", "corrected", "pending",
                  "rejected", "sum of the parts", "check"], wrap=True)
    outs = [o.id for o in d.c.outcomes]
    extra = sorted(set(dec["outcome"]) - set(outs) - {""})
    groups = outs + extra + ([""] if (dec["outcome"] == "").any() else [])
    counts = dec.groupby(["outcome", "decision"]).size()

    def n(o: str, *ds: str) -> int:
        return int(sum(counts.get((o, x), 0) for x in ds))

    def check(r: int) -> str:
        return formula(f'IF(B{r}=H{r},"agrees","DIFFERS")')

    first = s.next_row
    for o in groups:
        r = s.next_row
        s.add(s.cell(o or "(no outcome matched)"),
              s.cell(int((dec["outcome"] == o).sum()), fmt=COUNT),
              s.cell(n(o, "paid"), fmt=COUNT), s.cell(n(o, "paid-earlier"), fmt=COUNT),
              s.cell(n(o, "re-rated", "reversed"), fmt=COUNT),
              s.cell(n(o, "pending-verification"), fmt=COUNT), s.cell(n(o, "rejected"), fmt=COUNT),
              s.cell(formula(f"SUM(C{r}:G{r})"), fmt=COUNT), s.cell(check(r), align=_RIGHT))
    last = s.next_row - 1
    r = s.next_row
    b = dict(font=_BOLD, border=_TOTAL_BORDER)
    s.add(s.cell("All milestone rows", **b), s.cell(d.claim.rows_in, fmt=COUNT, **b),
          *[s.cell(formula(f"SUM({col}{first}:{col}{last})"), fmt=COUNT, **b) for col in "CDEFG"],
          s.cell(formula(f"SUM(C{r}:G{r})"), fmt=COUNT, **b), s.cell(check(r), align=_RIGHT, **b))
    s.blank()
    s.add(s.cell("The total's rows in is the engine's count of milestone rows looked at "
                 "(exact repeats counted once); the parts are counted from the decisions.",
                 font=_NOTE), fit=False)


def _provenance(s: _Sheet, d: _ClaimData, L: _Lines) -> None:
    h, c = d.header, d.c
    _head_row(s, ["what", "file or value", "SHA-256"], right_from=3)
    src = dict(h.sources)
    s.add(s.cell("Contract"), s.cell(c.id))
    files = dict(h.files_sha256)
    files.setdefault("ledger.csv", h.ledger_sha256)
    labels = {"contract": "Contract file", "participants": "Participants file",
              "milestones": "Milestones file", "ledger": "Ledger", "decisions": "Decisions"}
    order = {"contract": 0, "participants": 1, "milestones": 2, "ledger": 3, "decisions": 4}

    def key(path: str) -> tuple:
        stem = path.rsplit("/", 1)[-1].split(".", 1)[0]
        return (order.get(stem, 5), path)

    for path in sorted(files, key=key):
        stem = path.rsplit("/", 1)[-1].split(".", 1)[0]
        shown = path + (f" (copy of {src[stem]})" if path.startswith("inputs/") and stem in src
                        else "")
        s.add(s.cell(labels.get(stem, "File")), s.cell(shown), s.cell(files[path]))
    prev = d.earlier_periods[-1].label if d.earlier_periods else None
    s.add(s.cell("Previous claim's manifest"),
          s.cell(f"ledgers/{c.id}/{prev}/manifest.json" if prev
                 else "none: this is the first claim"),
          s.cell(h.previous_manifest_sha256))
    s.add(s.cell("sib version"), s.cell(h.sib_version))
    s.add(s.cell("Command"), s.cell(h.command))
    s.add(s.cell("Issued at (UTC)"), s.cell(_naive_utc(h.prepared_at), fmt=DATETIME, align=_LEFT))
    s.add(s.cell("Ledger lines"), s.cell("; ".join(f"{t}: {n:,}" for t, n in L.sheets)))
    s.blank()
    s.add(s.cell(LINES_NOTE, font=_NOTE), fit=False)
    s.add(s.cell("The Claim, Outcomes and Funders totals are formulas over the Lines sheet(s); "
                 "earlier claims' figures are numbers taken from their ledgers.", font=_NOTE),
          fit=False)


# --- statements/<funder>.xlsx ---------------------------------------------------------------------

def _statement_book(d: _ClaimData, funder_id: str, rows_per_sheet: int) -> bytes:
    c, claim = d.c, d.claim
    f = next(x for x in c.funders if x.id == funder_id)
    book = _Book(d, f"Outcomes payment statement: {f.name}, claim {claim.number}, {claim.period}",
                 f"{c.id} claim {claim.period} statement for {f.id}")
    rows = d.rows_of(funder_id)
    mine = d.lines.take(rows).reset_index(drop=True)
    mine["milestones"] = _milestone_marks(mine)  # one line per milestone here: ±1 each
    cover = _Sheet(book, "Statement")
    # the claim's Lines cells, those of the funder's rows (its milestones column is its own)
    cols = [col if col.name == "milestones" else
            _Column(col.name, col.kind, col.data, d.lines_encoded[col.name].take(rows))
            for col in _line_columns(mine)]
    L = _Lines(_table_sheets(book, "Lines", cols, rows_per_sheet, table_name="LedgerLines"))
    hist = _Sheet(book, "History", freeze="A2", print_titles="1:1")

    # History: one row per claim to date, this one last (a formula over its Lines)
    _head_row(hist, ["claim", "period", "from", "to", "amount claimed", "claimed to date"],
              right_from=2)
    first = hist.next_row
    entries = [(k + 1, p, _money(d.earlier_in(funder_id, p.label)))
               for k, p in enumerate(d.earlier_periods)]
    entries.append((claim.number, claim.period, formula(L.sum("amount"))))
    for num, p, amount in entries:
        r = hist.next_row
        hist.add(hist.cell(num, fmt="0", align=_LEFT), hist.cell(p.label),
                 hist.cell(p.start, fmt=DATE), hist.cell(p.end, fmt=DATE),
                 hist.cell(amount, fmt=MONEY),
                 hist.cell(formula(f"E{r}" if r == first else f"F{r - 1}+E{r}"), fmt=MONEY))
    last = hist.next_row - 1
    b = dict(font=_BOLD, border=_TOTAL_BORDER)
    hist.add(hist.cell("Total", **b), *[hist.cell(None, border=_TOTAL_BORDER) for _ in "BCD"],
             hist.cell(formula(f"SUM(E{first}:E{last})"), fmt=MONEY, **b),
             hist.cell(None, border=_TOTAL_BORDER))

    s = cover
    r = s.add(s.cell(f"Outcomes payment statement — claim {claim.number}, {claim.period}",
                     font=_TITLE), fit=False)
    s.ws.row_dimensions[r].height = 24
    s.add(s.cell(f.name, font=_SUBTITLE), fit=False)
    s.blank()
    for label, value in (("Funder", f.name), ("Funder id", f.id), ("Funder kind", f.kind)):
        s.add(s.cell(label, font=_BOLD), s.cell(value), fit=False)
    _identity(s, d, L, len(mine))
    s.blank()
    _head_row(s, ["Amounts", "Amount"])
    due = s.next_row
    s.add(s.cell("Amount due this claim", font=_BOLD),
          s.cell(formula(L.sum("amount")), fmt=MONEY, font=_BOLD))
    s.add(s.cell("  of which payments"),
          s.cell(formula(L.sumifs("amount", ("kind", _q("payment")))), fmt=MONEY))
    s.add(s.cell("  of which reversals"),
          s.cell(formula(L.sumifs("amount", ("kind", _q("reversal")))), fmt=MONEY))
    s.add(s.cell("Withheld by caps this claim (not due)"),
          s.cell(formula(L.sum("capped")), fmt=MONEY))
    earlier = s.next_row
    s.add(s.cell("Claimed in earlier claims"),
          s.cell(formula(f"SUM(History!E{first}:E{last - 1})") if last > first else _money(0),
                 fmt=MONEY))
    to_date = s.next_row
    s.add(s.cell("Claimed to date", font=_BOLD),
          s.cell(formula(f"B{due}+B{earlier}"), fmt=MONEY, font=_BOLD))
    if f.cap is not None:
        cap = s.next_row
        s.add(s.cell("Cap"), s.cell(_money(money.pence(f.cap)), fmt=MONEY))
        s.add(s.cell("Headroom"), s.cell(formula(f"B{cap}-B{to_date}"), fmt=MONEY))
        if money.pence(f.cap):
            s.add(s.cell("Cap used"), s.cell(formula(f"B{to_date}/B{cap}"), fmt=PERCENT))
    else:
        s.add(s.cell("Cap"), s.cell("no cap", align=_RIGHT))
    s.blank()
    s.add(s.cell("Every figure above is a formula over this workbook's Lines and History "
                 "sheets; the claim's full workbook is claim.xlsx.", font=_NOTE), fit=False)
    cover.close()
    hist.close()
    return book.save()
