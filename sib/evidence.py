"""Evidence files: the participants and milestones tables, read and structurally validated.

After contract in the flow. Reads CSV (UTF-8, with or without BOM) or XLSX (first sheet;
through defusedxml, with a zip-bomb guard) into DataFrames of trimmed text, then types the
columns the engine needs: dates become integer day numbers (days since 1970-01-01), so the
engine compares and subtracts plain integers. Every structural problem in both files is
collected — all of them, in one run — as `path:row:col`, where row is the spreadsheet row
(the header is row 1, the first data row is row 2; in a CSV a quoted value spanning lines
is one row, and a blank line is a row) and col is the 1-based column number in the file.

Reading is whole-column: a CSV is parsed by pandas' C parser when its records can be told
apart from its bytes (the usual export; else by the csv module, which is the reference and
gives the same records), and dates, numbers and statuses are parsed once per distinct value.

Must not decide eligibility or money (that is reconcile.py) and must not write anything.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import stat
import warnings
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
import pandas as pd

from sib.contract import Contract, LoadedContract, condition_columns
from sib.problems import Problem
from sib.yamlsafe import quoted

NO_DAY = np.int64(2**62)  # "no date": later than every real day
EPOCH = date(1970, 1, 1).toordinal()
MIN_YEAR, MAX_YEAR = 1900, 2199

PARTICIPANT_REQUIRED = ("participant_id", "enrolled_on")
# verified_on and evidence_ref are required as columns (a verified row needs both); their
# cells may be blank on pending and withdrawn rows.
MILESTONE_REQUIRED = ("milestone_id", "participant_id", "milestone", "achieved_on", "status",
                      "verified_on", "evidence_ref")
MILESTONE_OPTIONAL = ("evidence_type", "hours_per_week")
STATUSES = ("verified", "pending", "withdrawn")
ROW = "row"  # the column sib adds: the spreadsheet row a record came from

MAX_XLSX_UNCOMPRESSED = 512 * 1024 * 1024  # a 1M-row export is ~100 MB unpacked
MAX_XLSX_RATIO = 200

_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_UK = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)$")
_BLANK = "\x00blank"  # placeholder name of a column whose header cell is blank (dropped)
_DATE_HINT = f"write it as 2022-03-31 or 31/03/2022 (a real date, years {MIN_YEAR}–{MAX_YEAR})"


def day_number(d: date) -> int:
    """A date as its day number (days since 1970-01-01)."""
    return d.toordinal() - EPOCH


def day_text(n: int) -> str:
    """An integer day number as YYYY-MM-DD ('' for NO_DAY)."""
    if n >= NO_DAY:
        return ""
    return date.fromordinal(int(n) + EPOCH).isoformat()


def days_text(values: np.ndarray) -> np.ndarray:
    """Vectorised `day_text` for an int64 array."""
    values = np.asarray(values, dtype=np.int64)
    out = np.full(values.shape, "", dtype=object)
    ok = values < NO_DAY
    if ok.any():
        out[ok] = np.datetime_as_string(values[ok].astype("datetime64[D]"), unit="D")
    return out


@dataclass(frozen=True)
class Source:
    """One evidence file as read: where it is, how users see it, and its exact bytes."""

    path: Path
    shown: str
    raw: bytes

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower()


@dataclass
class Evidence:
    """Both tables, typed, with every problem found.

    participants: participant_id, enrolled_on (day number, int64), row (int64), then the
      other columns of the file (trimmed text). Valid rows only.
    milestones: milestone_id, participant_id, milestone, achieved_on (day number), status
      (lower-case), verified_on (day number; NO_DAY when blank), evidence_ref,
      evidence_type, hours_per_week (text, '' when the file lacks the column; checked to be
      a number or blank — type it with `parse_numbers`), row, then the other columns (text).
      Valid rows only, exact repeats removed.
    invalid: one row per milestone that failed validation (milestone_id, participant_id,
      milestone, row, detail). A row with a blank milestone_id is keyed 'row-<row>'; rows
      sharing a milestone_id appear once, at the first of them. Empty unless problems were
      found (or the file is unusable, see file_problems).
    problems: structural problems, each refusing the claim unless --skip-invalid.
    notices: things reported but not refused (an exact repeat of a row; a file with a
      header but no rows; an ignored column named 'row').
    sources: the files read, by table name.
    file_problems: a problem with a whole file (missing, unreadable, a missing column):
      then participants, milestones and invalid are empty and --skip-invalid cannot help.
    rows_in: milestones counted once each (an exact repeat, or a row sharing a
      milestone_id, counts once): valid + invalid.
    """

    participants: pd.DataFrame
    milestones: pd.DataFrame
    invalid: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    notices: list[Problem] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)
    file_problems: bool = False

    @property
    def rows_in(self) -> int:
        return len(self.milestones) + len(self.invalid)


# --- reading tables ----------------------------------------------------------------------

class _Table:
    """A file read as text cells.

    frame: one column per named header cell (name trimmed and lower-cased), every cell
      trimmed text, wholly blank rows dropped; the index is the spreadsheet row − 2 (the
      header is row 1). None when the file cannot be read as a table.
    colno: column name → its 1-based column number in the file.
    ragged: spreadsheet row → message, for CSV rows whose cell count differs from the
      header's (kept in frame, padded with blanks or cut to the header's width; their cells
      are not trustworthy, so only their ids are used).
    plain: True when no cell can hold a control character (seen in the file's bytes), so
      the per-cell search for one can be skipped.
    problems / notices: what was found while reading (and later, while checking).
    """

    def __init__(self, shown: str):
        self.shown = shown
        self.frame: pd.DataFrame | None = None
        self.colno: dict[str, int] = {}
        self.ragged: dict[int, str] = {}
        self.plain = False
        self.problems: list[Problem] = []
        self.notices: list[Problem] = []

    def problem(self, row: int | None, col: str | None, code: str, message: str) -> None:
        self.problems.append(Problem(self.shown, row, self.colno.get(col) if col else None,
                                     code, message))


def _header(names: list, table: _Table) -> list[str] | None:
    """Normalised column names, or None (with problems) when they cannot name columns."""
    out = []
    seen: dict[str, int] = {}
    ok = True
    for i, raw in enumerate(names, start=1):
        name = str(raw if raw is not None else "").replace("\ufeff", "").strip().lower()
        if not name:
            name = f"{_BLANK}{i}"
        if name in seen:
            table.problems.append(Problem(
                table.shown, 1, i, "duplicate-column",
                f"column {quoted(name)} appears twice in the header (columns {seen[name]} and "
                f"{i}); "
                "rename or remove one"))
            ok = False
        else:
            seen[name] = i
        out.append(name)
    if not seen or all(n.startswith(_BLANK) for n in seen):
        table.problems.append(Problem(
            table.shown, 1, None, "missing-header",
            "row 1 has no column names; the first row must be the header (e.g. "
            "participant_id,enrolled_on,...) with the data below it"))
        ok = False
    table.colno = dict(seen)
    return out if ok else None


def _read_csv(src: Source, table: _Table) -> None:
    raw = src.raw
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        enc = "UTF-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "not UTF-8"
        table.problems.append(Problem(
            table.shown, line, None, "bad-encoding",
            f"the file is {enc} (byte 0x{raw[e.start]:02x} at line {line}); export it again "
            "as CSV UTF-8 (in Excel: Save As → 'CSV UTF-8 (Comma delimited)')"))
        return
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        table.problems.append(Problem(
            table.shown, line, None, "bad-encoding",
            "the file contains NUL bytes, so it is not a UTF-8 text CSV (a UTF-16 'Unicode "
            "Text' export looks like this); export it again as CSV UTF-8"))
        return
    if not text.strip():
        table.problems.append(Problem(table.shown, None, None, "empty-file",
                                      "the file is empty; it needs a header row"))
        return
    cells = _csv_cells_fast(text, raw) or _csv_cells(text, table)
    if cells is None:
        return
    names = _header(cells.header, table)
    if names is None:
        return
    table.plain = cells.plain
    table.frame = _fill(table, names, cells)


class _Cells(NamedTuple):
    """The records of a CSV file.

    header: the first record's cells.
    body: the other records' cells as columns, one per header cell: padded with '', or cut.
    counts: each body record's own number of cells (0 for a blank line).
    rest_blank: for each body record, whether all its cells beyond the header's are blank.
    plain: True when no cell holds a control character (see _Table.plain).
    trimmed: True when no cell starts or ends with white space.
    """

    header: list[str]
    body: list[np.ndarray]
    counts: np.ndarray
    rest_blank: np.ndarray
    plain: bool = False
    trimmed: bool = False


def _csv_cells(text: str, table: _Table) -> _Cells | None:
    """The records of a CSV text read with the csv module (the reference reading); None,
    with a problem, when the csv module cannot read it."""
    # newline="" so that \r\n, \n and \r all end records and quoted line breaks survive
    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[list[str]] = []
    try:
        for rec in reader:
            records.append(rec)  # a blank line is [] and still counts as a row
    except csv.Error as e:
        table.problems.append(Problem(
            table.shown, len(records) + 1, None, "bad-csv",
            f"the CSV cannot be read from here on ({quoted(e, 200)[1:-1]}); check the quotes "
            "in this row, or "
            "export the file again as CSV UTF-8"))
        return None
    body, width = records[1:], len(records[0])
    counts = np.fromiter(map(len, body), dtype=np.int64, count=len(body))
    rest_blank = np.ones(len(body), dtype=bool)
    odd = np.flatnonzero(counts != width)
    if len(odd):
        body = list(body)
        for i in odd.tolist():
            rec = body[i]
            rest_blank[i] = not any(cell.strip() for cell in rec[width:])
            body[i] = (rec + [""] * width)[:width]
    matrix = np.array(body, dtype=object).reshape(len(body), width)
    return _Cells(records[0], [np.ascontiguousarray(matrix[:, j]) for j in range(width)],
                  counts, rest_blank)


def _csv_cells_fast(text: str, raw: bytes) -> _Cells | None:
    """What `_csv_cells` gives, read by pandas' C parser, for a text whose records can be
    told apart with whole-array operations on its bytes; None for any other text (then
    the csv module reads it).

    The csv module is the reference: it is what gives a quoted line break its place in one
    row, a blank line its row, and a record's true cell count (pandas pads short records).
    So the structure is found here — record ends and delimiters are the line breaks and
    commas outside quotes, quotes counted from the start — and pandas is used only for
    texts where both read the same: no lone carriage return, no second byte-order mark,
    every quote opening a field or closing it (or doubled inside it), no field longer
    than the csv module accepts, and no row so much wider than the rest that padding
    would cost more than the cells.
    """
    if text.startswith("\ufeff") or ("\r" in text and text.count("\r") != text.count("\r\n")):
        return None
    # the bytes of the text (raw without its byte-order mark): each of the ASCII
    # characters looked for here is one byte, and no other character contains that byte
    body = raw[3:] if raw.startswith(codecs.BOM_UTF8) else raw
    b = np.frombuffer(body, dtype=np.uint8)
    n = len(b)
    quotes = np.flatnonzero(b == ord('"'))
    if len(quotes) % 2:
        return None
    if len(quotes):
        before = np.concatenate(([ord(",")], b))[quotes]      # byte before each quote
        after = np.concatenate((b, [ord(",")]))[quotes + 1]    # byte after it
        prev_quote = np.concatenate(([-2], quotes[:-1])) == quotes - 1
        next_quote = np.concatenate((quotes[1:], [-2])) == quotes + 1
        opening = np.arange(len(quotes)) % 2 == 0
        ok = np.where(opening,
                      np.isin(before, (ord(","), ord("\n"))) | prev_quote,
                      np.isin(after, (ord(","), ord("\n"), ord("\r"))) | next_quote)
        if not ok.all():
            return None
    commas = np.flatnonzero(b == ord(","))
    breaks = np.flatnonzero(b == ord("\n"))
    # the only control characters are line ends, and none is in a quoted value
    plain = (np.count_nonzero((b < 0x20) | (b == 0x7f))
             == len(breaks) + (np.count_nonzero(b == ord("\r")) if "\r" in text else 0))
    # outside quotes: an even number of quotes before it
    if len(quotes):
        commas = commas[np.searchsorted(quotes, commas) % 2 == 0]
        outside = breaks[np.searchsorted(quotes, breaks) % 2 == 0]
        plain &= len(outside) == len(breaks)
        breaks = outside
    ends = breaks
    if not len(ends) or ends[-1] != n - 1:
        ends = np.append(ends, n)  # a last record without a line break
    starts = np.concatenate(([0], ends[:-1] + 1))
    stops = ends - ((ends > starts) & (np.concatenate((b, [0]))[ends - 1] == ord("\r")))
    counts = np.diff(np.searchsorted(commas, np.concatenate(([0], ends)))) + 1
    counts[stops == starts] = 0  # a blank line is a record with no cells
    if (ends - starts).max(initial=0) > csv.field_size_limit():  # a record, so maybe a field
        seps = np.concatenate(([-1], np.sort(np.concatenate((commas, ends)))))
        if np.diff(seps).max(initial=0) - 1 > csv.field_size_limit():
            return None
    trimmed = False
    if not len(quotes):
        # the bytes at the edges of every cell (clipped, so sometimes a delimiter: that is
        # never white space); white space is ASCII 9-13 and 28-32 (10 and 13 end records
        # here) or a character beyond ASCII, whose bytes are all 0x80 or above
        edges = b[np.clip(np.concatenate((commas + 1, commas - 1, starts, stops - 1)), 0,
                          n - 1)]
        trimmed = not np.any((edges == 9) | (edges == 11) | (edges == 12)
                             | ((edges >= 28) & (edges <= 32)) | (edges >= 0x80))
    width = int(counts.max(initial=0))
    if width * len(counts) > 2 * int(counts.sum()) + 10_000:
        return None
    try:
        frame = pd.read_csv(io.BytesIO(body), header=None, names=range(max(width, 1)),
                            dtype=object, na_filter=False, keep_default_na=False,
                            skip_blank_lines=False, index_col=False, engine="c")
    except (pd.errors.ParserError, ValueError):
        return None
    if len(frame) != len(counts):
        return None
    columns = [frame[j].to_numpy(dtype=object)[1:] for j in range(width)]
    header, counts = list(frame.iloc[0, : counts[0]]), counts[1:]
    rest_blank = np.ones(len(counts), dtype=bool)
    for i in np.flatnonzero(counts > len(header)).tolist():
        rest_blank[i] = not any(col[i].strip() for col in columns[len(header):counts[i]])
    return _Cells(header, columns[: len(header)], counts, rest_blank, bool(plain), trimmed)


def _fill(table: _Table, names: list[str], cells: _Cells) -> pd.DataFrame:
    """The table's frame from its body records: trimmed text, the header's width, records
    blank within it dropped; a ragged-row problem for each record whose cell count is not
    the header's, unless all its cells are blank."""
    body, counts = cells.body, cells.counts
    width, rows = len(names), np.arange(len(counts), dtype=np.int64) + 2  # == len(body)
    blank = np.ones(len(counts), dtype=bool)
    columns = []
    for col in body:
        if not cells.trimmed:
            col = np.fromiter(map(str.strip, col), dtype=object, count=len(counts))
        blank &= col == ""
        columns.append(col)
    ragged = counts != width
    for i in np.flatnonzero(ragged & ~(blank & cells.rest_blank)).tolist():
        row, count = int(rows[i]), int(counts[i])
        table.problems.append(Problem(
            table.shown, row, None, "ragged-row",
            f"row {row} has {count} cells but the header has {width}; check for a stray "
            "comma, or a value containing a comma that is not in double quotes"))
        table.ragged[row] = f"it has {count} cells but the header has {width}"
    keep = ~blank
    index = pd.Index(rows[keep] - 2)
    return pd.DataFrame({n: pd.Series(c[keep], index=index, dtype=str, copy=False)
                         for n, c in zip(names, columns)}, index=index, copy=False)


def _frame(data: list[list[str]], names: list[str], rows: list[int]) -> pd.DataFrame:
    index = pd.Index(np.asarray(rows, dtype=np.int64) - 2)
    if not data:
        return pd.DataFrame({n: pd.Series([], dtype=str) for n in names}, index=index)
    return pd.DataFrame(data, columns=names, index=index, dtype=str)


def _cell_text(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, datetime):
        return v.date().isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        d = Decimal(repr(v))
        if d == d.to_integral_value():
            return str(int(d))
        return format(d.normalize(), "f")
    return str(v)


EXCEL_MAX_ROW = 1_048_576  # the last row an Excel sheet can have


def _sheet_rows(wb, ws) -> Iterator[tuple[int, list[tuple[int, object]]]]:
    """(row number, [(column number, value)]) for each row the first sheet's XML holds, in
    file order, holding only the cells that are there.

    Not `ws.iter_rows()`: it pads the gaps with blank cells, so a 1 kB hostile workbook
    declaring a row numbered 10**12, or cells in column XFD of every row, costs hours and
    all memory (found by tests/test_attacks.py). This is the same parser openpyxl's own
    read-only sheets use, given the same settings, without the padding; work grows with
    the cells in the file, not with the numbers written on them.
    """
    from openpyxl.worksheet._reader import WorkSheetParser

    with wb._archive.open(ws._worksheet_path) as xml:
        parser = WorkSheetParser(xml, ws._shared_strings, data_only=True, epoch=wb.epoch,
                                 date_formats=wb._date_formats,
                                 timedelta_formats=wb._timedelta_formats)
        for row, cells in parser.parse():
            yield row, [(c["column"], c["value"]) for c in cells]


def _read_xlsx(src: Source, table: _Table) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(src.raw)) as z:
            total = 0
            for info in z.infolist():
                total += info.file_size
                ratio = info.file_size / max(info.compress_size, 1)
                if total > MAX_XLSX_UNCOMPRESSED or (info.file_size > 10_000_000 and
                                                     ratio > MAX_XLSX_RATIO):
                    table.problems.append(Problem(
                        table.shown, None, None, "unsafe-workbook",
                        f"the workbook unpacks to more than {MAX_XLSX_UNCOMPRESSED // 2**20} MB "
                        f"or is compressed {ratio:.0f}:1 ({quoted(info.filename)[1:-1]}); it "
                        "looks like a zip bomb, so it was not opened: export the data again"))
                    return
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError):
        table.problems.append(Problem(table.shown, None, None, "bad-workbook",
                                      "the file is not an .xlsx workbook (not a zip archive); "
                                      "save it as Excel Workbook (.xlsx) or CSV UTF-8"))
        return
    except (NotImplementedError, ValueError, RuntimeError, EOFError) as e:
        # a damaged directory can ask for a zip version or feature Python does not have
        table.problems.append(Problem(
            table.shown, None, None, "bad-workbook",
            f"the workbook's zip archive is damaged or unsupported "
            f"({quoted(' '.join(str(e).split()), 200)[1:-1]}); save it again as Excel "
            "Workbook (.xlsx) or CSV UTF-8"))
        return
    header: dict[int, object] = {}
    body: list[tuple[int, dict[int, object]]] = []
    damaged = ""
    try:
        import openpyxl  # defusedxml is installed, so openpyxl parses through it

        # openpyxl warns (on stderr) about odd but readable files, e.g. "no default style"
        # from other exporters, or a date cell out of range (then read as '#VALUE!', which
        # is reported as a bad date): the user sees located problems, never a warning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wb = openpyxl.load_workbook(io.BytesIO(src.raw), read_only=True, data_only=True)
            try:
                if not wb.worksheets:
                    table.problems.append(Problem(table.shown, None, None, "empty-file",
                                                  "the workbook has no worksheet; put the "
                                                  "table on the first sheet, header in row 1"))
                    return
                last = 0
                for row, cells in _sheet_rows(wb, wb.worksheets[0]):
                    if row <= last or row > EXCEL_MAX_ROW:
                        damaged = (f"row number {row} follows row {last}" if row <= last else
                                   f"row number {row} is beyond Excel's last row "
                                   f"{EXCEL_MAX_ROW:,}")
                        break
                    last = row
                    values = dict(cells)
                    if len(values) != len(cells):
                        damaged = f"row {row} has two cells in one column"
                        break
                    if row == 1:
                        header = values
                    else:
                        body.append((row, values))
            finally:
                wb.close()
    except Exception as e:  # noqa: BLE001 - any failure inside a hostile workbook
        # openpyxl wraps the parser's error (defusedxml's EntitiesForbidden, ...): look
        # down the chain for the cause
        chain, x = [], e
        while x is not None and len(chain) < 10:
            chain.append(type(x).__name__)
            x = x.__cause__ or x.__context__
        if any("Entit" in n or "DTD" in n or "Forbidden" in n for n in chain):
            msg = ("the workbook contains XML entity declarations (a possible XML bomb); it "
                   "was not read: export the data again from the source system")
        else:
            detail = quoted(" ".join(str(e).split()), 200)[1:-1]
            msg = (f"the workbook cannot be read ({chain[0]}: {detail}); save it again as "
                   ".xlsx or CSV UTF-8")
        table.problems.append(Problem(table.shown, None, None, "bad-workbook", msg))
        return
    if damaged:
        table.problems.append(Problem(
            table.shown, None, None, "bad-workbook",
            f"the first sheet is damaged ({damaged}), so rows could be lost; open it in Excel "
            "and save it again, or export CSV UTF-8"))
        return
    named = [c for c, v in header.items() if _cell_text(v).strip()]
    if not named and not any(_cell_text(v).strip() for _, rec in body for v in rec.values()):
        table.problems.append(Problem(table.shown, None, None, "empty-file",
                                      "the first sheet is empty; it needs a header row"))
        return
    width = max(named, default=0)
    names = _header([header.get(c) for c in range(1, width + 1)], table)
    if names is None:
        return
    rows, data = [], []
    for row, rec in body:
        cells = [""] * width
        for c, v in rec.items():
            if 1 <= c <= width:
                cells[c - 1] = _cell_text(v).strip()
        if not any(cells):
            continue
        rows.append(row)
        data.append(cells)
    table.frame = _frame(data, names, rows)


def read_table(src: Source) -> _Table:
    """A file as a DataFrame of trimmed text (or problems); see `_Table`."""
    table = _Table(src.shown)
    if src.suffix == ".xlsx":
        _read_xlsx(src, table)
    else:
        _read_csv(src, table)
    if table.frame is not None:
        frame = table.frame  # its cells are trimmed text already
        drop = [c for c in frame.columns if c.startswith(_BLANK)]
        if ROW in frame.columns:
            drop.append(ROW)
            table.notices.append(Problem(
                table.shown, 1, table.colno[ROW], "ignored-column",
                "the column 'row' was ignored: sib numbers the rows itself; rename it if it "
                "matters"))
            del table.colno[ROW]
        if drop:
            frame = frame.drop(columns=drop)
        if drop and len(frame.columns):  # (the readers drop the rows blank in every column)
            empty = np.logical_and.reduce([frame[c].to_numpy(dtype=object) == ""
                                           for c in frame.columns])
            if empty.any():
                frame = frame[~empty]
        if frame.empty:
            table.notices.append(Problem(table.shown, None, None, "no-rows",
                                         "the file has a header but no rows"))
        table.frame = frame
    return table


# --- typing values -----------------------------------------------------------------------

def _by_distinct(values: pd.Series, parse: Callable[[pd.Series], tuple[np.ndarray, ...]]
                 ) -> tuple[np.ndarray, ...]:
    """`parse`, an element-wise parser, applied once per distinct value and spread back:
    dates and numbers repeat heavily (a few thousand days among a million rows). Only for
    text; other values (never from the readers) are parsed as they are."""
    cells = values.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(cells, skipna=False) != "string":
        return parse(values)
    codes, distinct = pd.factorize(cells)
    return tuple(a[codes] for a in parse(pd.Series(distinct, dtype=object)))


def parse_days(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dates as day numbers; (days, ok). Blank → NO_DAY and ok; unparseable → not ok.

    Accepts ISO 2022-03-31 and UK 31/03/2022 (trimmed text); a date that does not exist
    (2022-02-30) or whose year is outside MIN_YEAR..MAX_YEAR is not ok.
    """
    return _by_distinct(values, _parse_days)


def _parse_days(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    ser = pd.Series(values.to_numpy(dtype=object), dtype=object).astype(str)
    days = np.full(len(ser), NO_DAY, dtype=np.int64)
    ok = np.ones(len(ser), dtype=bool)
    if not len(ser):
        return days, ok
    blank = (ser == "").to_numpy(dtype=bool)
    iso = ser.str.match(_ISO.pattern).to_numpy(dtype=bool)
    uk = ser.str.match(_UK.pattern).to_numpy(dtype=bool)
    for m, fmt in ((iso, "%Y-%m-%d"), (uk, "%d/%m/%Y")):
        if m.any():
            parsed = pd.to_datetime(ser[m], format=fmt, errors="coerce")
            good = (parsed.notna() & parsed.dt.year.between(MIN_YEAR, MAX_YEAR)).to_numpy(dtype=bool)
            idx = np.flatnonzero(m)
            days[idx[good]] = (parsed[good].to_numpy().astype("datetime64[D]")
                               .astype(np.int64))
            ok[idx[~good]] = False
    ok[~(blank | iso | uk)] = False
    return days, ok


def parse_numbers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Numbers for condition tests (hours, age): float64 with NaN for blank; (values, ok).

    Not money: money never passes through here.
    """
    return _by_distinct(values, _parse_numbers)


def _parse_numbers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    ser = pd.Series(values.to_numpy(dtype=object), dtype=object).astype(str).str.strip()
    out = np.full(len(ser), np.nan)
    if not len(ser):
        return out, np.ones(0, dtype=bool)
    blank = (ser == "").to_numpy(dtype=bool)
    good = ser.str.match(_NUMBER.pattern).to_numpy(dtype=bool)
    if good.any():
        out[good] = ser[good].astype(float).to_numpy()
    return out, blank | good


# --- the evidence ----------------------------------------------------------------------------

def read_regular_file(path: Path) -> bytes | None:
    """The bytes of a regular file, or None when `path` is something else.

    A symbolic link to /dev/zero or /dev/urandom would be read for ever, and a named pipe
    would block the open until someone writes to it: both are refused before any read
    (the open is non-blocking, and the type is checked on the opened file itself).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read()


def evidence_paths(workspace: Path, contract_id: str) -> dict[str, Path | None]:
    """The default files, evidence/<id>/<table>.csv or .xlsx: None when neither or both exist."""
    folder = workspace / "evidence" / contract_id
    out: dict[str, Path | None] = {}
    for name in ("participants", "milestones"):
        found = [folder / f"{name}{ext}" for ext in (".csv", ".xlsx")
                 if (folder / f"{name}{ext}").exists()]
        out[name] = found[0] if len(found) == 1 else None
    return out


def _shown_path(path: Path, workspace: Path) -> str:
    """A path relative to the workspace when inside it (as sib.workspace shows paths)."""
    try:
        return str(path.resolve().relative_to(workspace.resolve()))
    except ValueError:
        return str(path)


def read_evidence(workspace: Path, lc: LoadedContract, participants: Path | None = None,
                  milestones: Path | None = None,
                  shown: Callable[[Path], str] | None = None) -> Evidence:
    """Read and validate both evidence files of a contract (defaults: evidence/<id>/).

    A missing file is a problem; the other file is still read and checked, so that every
    problem is reported in one run.
    """
    show = shown or (lambda p: _shown_path(p, workspace))
    defaults = evidence_paths(workspace, lc.contract.id)
    folder = workspace / "evidence" / lc.contract.id
    problems: list[Problem] = []
    sources: dict[str, Source] = {}
    for name, given in (("participants", participants), ("milestones", milestones)):
        path = given or defaults[name]
        if path is None:
            both = [folder / f"{name}{e}" for e in (".csv", ".xlsx") if (folder / f"{name}{e}").exists()]
            if both:
                problems.append(Problem(show(both[0]), None, None, "ambiguous-file",
                                        f"both {name}.csv and {name}.xlsx exist in {show(folder)}; "
                                        f"keep one, or choose with --{name} FILE"))
            else:
                problems.append(Problem(show(folder / f"{name}.csv"), None, None, "missing-file",
                                        f"no {name} file: expected {show(folder / (name + '.csv'))} "
                                        f"(or .xlsx), or pass --{name} FILE"))
            continue
        try:
            raw = read_regular_file(path)
        except OSError as e:
            problems.append(Problem(show(path), None, None, "missing-file",
                                    f"cannot read the {name} file ({e.strerror or e}); check "
                                    f"the path, or pass --{name} FILE"))
            continue
        if raw is None:
            problems.append(Problem(show(path), None, None, "not-a-file",
                                    f"the {name} file is not a regular file (a folder, a device "
                                    "such as /dev/zero, or a pipe), so it was not read; point "
                                    f"--{name} at the exported file"))
            continue
        sources[name] = Source(path, show(path), raw)
    return _validate(lc, sources, problems)


def validate_evidence(lc: LoadedContract, psrc: Source, msrc: Source,
                      problems: list[Problem] | None = None) -> Evidence:
    """Type and check both tables; rows with problems are split off into `invalid`."""
    return _validate(lc, {"participants": psrc, "milestones": msrc}, list(problems or []))


def _empty_frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    def frame(cols: dict[str, str]) -> pd.DataFrame:
        return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in cols.items()})
    text, day = "str", "int64"
    participants = frame({"participant_id": text, "enrolled_on": day, ROW: "int64"})
    milestones = frame({"milestone_id": text, "participant_id": text, "milestone": text,
                        "achieved_on": day, "status": text, "verified_on": day,
                        "evidence_ref": text, "evidence_type": text, "hours_per_week": text,
                        ROW: "int64"})
    invalid = frame({"milestone_id": text, "participant_id": text, "milestone": text,
                     ROW: "int64", "detail": text})
    return participants, milestones, invalid


def _ordered(frame: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    first = [c for c in first if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]].reset_index(drop=True)


class _Rows:
    """Bookkeeping for one table's rows: which are invalid, and the first reason why."""

    def __init__(self, table: _Table, frame: pd.DataFrame):
        self.table = table
        self.rows = frame[ROW].to_numpy(dtype=np.int64)
        self.ragged = np.isin(self.rows, list(table.ragged))
        self.bad = self.ragged.copy()
        self.why = np.full(len(self.rows), "", dtype=object)
        for i in np.flatnonzero(self.ragged).tolist():
            self.why[i] = table.ragged[int(self.rows[i])]

    def flag(self, mask: np.ndarray, col: str | None, code: str,
             msg: Callable[[int], str]) -> None:
        """Report `code` at every row in `mask` (ragged rows excepted: their cells may be
        shifted, so the ragged-row problem stands for them)."""
        for i in np.flatnonzero(np.asarray(mask, dtype=bool) & ~self.ragged):
            text = msg(i)
            self.table.problem(int(self.rows[i]), col, code, text)
            if not self.bad[i]:
                self.why[i] = text
            self.bad[i] = True


def _missing_columns(lc: LoadedContract, table: _Table, name: str, required: tuple,
                     used: dict[str, tuple]) -> bool:
    """Report each required or contract-used column the file lacks; True when any."""
    have = list(table.frame.columns)
    found = ", ".join(quoted(h, 40)[1:-1] for h in have[:20]) or "(no column names)"
    if len(have) > 20:
        found += f", … ({len(have)} columns)"
    missing = False
    for col in required:
        if col not in have:
            table.problem(1, None, "missing-column",
                          f"the header has no '{col}' column, which every {name} file needs; "
                          f"add it (found: {found})")
            missing = True
    for col, loc in used.items():
        if col not in have and col not in required:
            table.problem(1, None, "missing-column",
                          f"the contract uses column '{col}' ({lc.where(*loc)}) but this file "
                          f"has no such column; add it to the export (found: {found})")
            missing = True
    return missing


def _validate(lc: LoadedContract, sources: dict[str, Source],
              problems: list[Problem]) -> Evidence:
    """Check whatever tables could be read; `problems` holds those found before (a missing
    file). A table that cannot be used as a whole still has its rows checked, so that one
    run lists every problem."""
    c = lc.contract
    file_level = bool(problems)  # a file missing or ambiguous
    part_cols, mile_cols = condition_columns(c)
    ptab = read_table(sources["participants"]) if "participants" in sources else None
    mtab = read_table(sources["milestones"]) if "milestones" in sources else None
    tables = [t for t in (ptab, mtab) if t is not None]
    file_level |= any(t.frame is None for t in tables)

    mile_used = dict(mile_cols)
    if any(o.evidence for o in c.outcomes):
        i = next(i for i, o in enumerate(c.outcomes) if o.evidence)
        mile_used.setdefault("evidence_type", ("outcomes", i, "evidence"))

    pf = bad_participants = None
    if ptab is not None and ptab.frame is not None:
        file_level |= _missing_columns(lc, ptab, "participants", PARTICIPANT_REQUIRED, part_cols)
        pf, bad_participants = _check_participants(c, ptab, part_cols)
    mf = invalid = None
    repeats: list[Problem] = []
    if mtab is not None and mtab.frame is not None:
        file_level |= _missing_columns(lc, mtab, "milestones", MILESTONE_REQUIRED, mile_used)
        mf, invalid, repeats = _check_milestones(c, mtab, mile_cols, bad_participants or set(),
                                                 ptab.shown if ptab else "")

    # each table's problems are collected exactly once, here, after every check has run
    for t in tables:
        problems += t.problems
    notices = [n for t in tables for n in t.notices] + repeats
    if file_level:
        empty = _empty_frames()
        return Evidence(*empty, problems, notices, sources, file_problems=True)
    return Evidence(pf, mf, invalid, problems, notices, sources)


def _check_participants(c: Contract, ptab: _Table,
                        part_cols: dict[str, tuple]) -> tuple[pd.DataFrame, set[str]]:
    """The valid participants, typed, and the ids of participants with an invalid row."""
    pf = ptab.frame.reset_index(names="_i")
    pf.insert(0, ROW, pf.pop("_i").to_numpy(dtype=np.int64) + 2)
    rows = _Rows(ptab, pf)
    has = set(pf.columns)
    if "participant_id" in has:
        blank = pf["participant_id"].to_numpy(dtype=object) == ""
        rows.flag(blank, "participant_id", "blank-value",
                  lambda i: "participant_id is blank; fill in the participant's case id")
        # the same id twice: every row of it is invalid (which one is right is unknown),
        # and the problem is reported at each row after the first
        ids = pf["participant_id"]
        dup = ids.duplicated(keep=False).to_numpy() & ~blank
        if dup.any():
            first = ids.map(pf[dup].groupby("participant_id")[ROW].min()).to_numpy()
            later = dup & (rows.rows != first)
            rows.flag(later, "participant_id", "duplicate-id",
                      lambda i: f"participant_id {quoted(ids.iat[i])} is also in row "
                                f"{int(first[i])}; "
                                "each participant has exactly one row: merge the two rows")
            for i in np.flatnonzero(dup & ~rows.bad):
                rows.why[i] = f"participant_id {quoted(ids.iat[i])} is in more than one row"
            rows.bad |= dup
    _flag_control_characters(pf, rows, ["participant_id", *sorted(part_cols)], has)
    if "enrolled_on" in has:
        pdays, pok = parse_days(pf["enrolled_on"])
        rows.flag(~pok, "enrolled_on", "bad-date",
                  lambda i: f"enrolled_on {quoted(pf['enrolled_on'].iat[i])} is not a date; "
                            f"{_DATE_HINT}")
        rows.flag(pok & (pdays == NO_DAY), "enrolled_on", "blank-value",
                  lambda i: "enrolled_on is blank; give the date the participant enrolled "
                            "(e.g. 2022-03-31)")
        pf["enrolled_on"] = pdays
    for col in sorted(part_cols):
        if col in has and _numeric_column(c, col, participant=True):
            _, ok = parse_numbers(pf[col])
            rows.flag(~ok, col, "bad-number",
                      lambda i, col=col: f"{col} {quoted(pf[col].iat[i])} is not a number; "
                                         "write it "
                                         "like 42 or 16.5, or leave it blank")
    bad_ids = set(pf.loc[rows.bad, "participant_id"]) if "participant_id" in has else set()
    bad_ids.discard("")
    valid = _ordered(pf[~rows.bad], list(PARTICIPANT_REQUIRED) + [ROW])
    return valid, bad_ids


def _check_milestones(c: Contract, mtab: _Table, mile_cols: dict[str, tuple],
                      bad_participants: set[str], participants_shown: str
                      ) -> tuple[pd.DataFrame, pd.DataFrame, list[Problem]]:
    """(valid milestones typed, invalid milestones, notices of exact repeats)."""
    mf = mtab.frame.reset_index(names="_i")
    mf.insert(0, ROW, mf.pop("_i").to_numpy(dtype=np.int64) + 2)
    for col in MILESTONE_REQUIRED + MILESTONE_OPTIONAL:
        if col not in mf.columns:
            mf[col] = ""  # a missing column is a problem already; checks treat it as blank
    # an exact repeat of a row is reported and counted once (ragged rows are never "exact")
    content = [col for col in mf.columns if col != ROW]
    ragged = np.isin(mf[ROW].to_numpy(), list(mtab.ragged))
    # only rows sharing a milestone_id can be exact repeats: compare whole rows among those
    shared = mf["milestone_id"].duplicated(keep=False).to_numpy(dtype=bool)
    maybe = ~ragged & shared
    exact = np.zeros(len(mf), dtype=bool)
    if maybe.any():
        exact[maybe] = mf[maybe].duplicated(subset=content, keep="first").to_numpy(dtype=bool)
    repeats = [Problem(mtab.shown, int(r), None, "repeated-row",
                       f"row {int(r)} repeats milestone {quoted(mid)} exactly (same values in "
                       "every "
                       "column); it is counted once — delete the repeat to silence this")
               for r, mid in zip(mf.loc[exact, ROW], mf.loc[exact, "milestone_id"])]
    mf = mf[~exact].reset_index(drop=True)
    rows = _Rows(mtab, mf)
    has = set(mtab.frame.columns)

    for col in ("milestone_id", "participant_id", "milestone", "status"):
        if col in has:
            rows.flag(mf[col].to_numpy(dtype=object) == "", col, "blank-value",
                      lambda i, col=col: f"{col} is blank; every milestone row needs one")
    _flag_control_characters(mf, rows, ["milestone_id", "participant_id", "milestone",
                                        "evidence_ref", "evidence_type", *sorted(mile_cols)], has)
    # status is one of a few words: lower-cased and tested once per distinct value
    codes, distinct = pd.factorize(mf["status"].to_numpy(dtype=object))
    lower = [s.lower() for s in distinct]
    status = pd.Series(np.array(lower, dtype=object)[codes], index=mf.index, dtype=str)
    verified = np.array([s == "verified" for s in lower], dtype=bool)[codes]
    if "status" in has:
        badstatus = np.array([s not in STATUSES and s != "" for s in lower], dtype=bool)[codes]
        rows.flag(badstatus, "status", "bad-value",
                  lambda i: f"status {quoted(mf['status'].iat[i])} is not one of verified, "
                            "pending, "
                            "withdrawn; use one of those three words")
    adays, aok = parse_days(mf["achieved_on"])
    vdays, vok = parse_days(mf["verified_on"])
    if "achieved_on" in has:
        rows.flag(~aok, "achieved_on", "bad-date",
                  lambda i: f"achieved_on {quoted(mf['achieved_on'].iat[i])} is not a date; "
                            f"{_DATE_HINT}")
        rows.flag(aok & (adays == NO_DAY), "achieved_on", "blank-value",
                  lambda i: "achieved_on is blank; give the date the milestone was achieved "
                            "(e.g. 2022-03-31)")
    if "verified_on" in has:
        rows.flag(~vok, "verified_on", "bad-date",
                  lambda i: f"verified_on {quoted(mf['verified_on'].iat[i])} is not a date; "
                            f"{_DATE_HINT}")
        rows.flag(verified & vok & (vdays == NO_DAY), "verified_on", "missing-verification",
                  lambda i: "status is verified but verified_on is blank; give the date the "
                            "evidence was verified, or set status to pending")
    if "evidence_ref" in has:
        rows.flag(verified & (mf["evidence_ref"].to_numpy(dtype=object) == ""), "evidence_ref",
                  "missing-verification",
                  lambda i: "status is verified but evidence_ref is blank; give the reference "
                            "of the evidence held (e.g. the payslip scan id), or set status to "
                            "pending")
    early = vok & aok & (vdays < NO_DAY) & (adays < NO_DAY) & (vdays < adays)
    rows.flag(early, "verified_on", "verified-before-achieved",
              lambda i: f"verified_on {mf['verified_on'].iat[i]} is before achieved_on "
                        f"{mf['achieved_on'].iat[i]}; evidence cannot be verified before the "
                        "outcome: correct one of the dates")
    numeric = {"hours_per_week"} | {col for col in mile_cols if _numeric_column(c, col, False)}
    for col in sorted(numeric):
        if col in has:
            _, ok = parse_numbers(mf[col])
            rows.flag(~ok, col, "bad-number",
                      lambda i, col=col: f"{col} {quoted(mf[col].iat[i])} is not a number; "
                                         "write it "
                                         "like 16 or 12.5, or leave it blank")
    mf["status"] = status
    mf["achieved_on"] = adays
    mf["verified_on"] = vdays

    # the same id in rows with different content: all of them are invalid (which one is
    # right is unknown); reported at each row after the first
    ids = mf["milestone_id"]
    if exact.any():
        shared = ids.duplicated(keep=False).to_numpy(dtype=bool)
    dup = shared & (ids.to_numpy(dtype=object) != "")
    if dup.any():
        rows_of = {mid: sorted(int(r) for r in g)
                   for mid, g in mf[dup].groupby("milestone_id")[ROW]}
        for i in np.flatnonzero(dup):
            mid, row = ids.iat[i], int(rows.rows[i])
            seen = rows_of[mid]
            if row != seen[0]:
                mtab.problem(row, "milestone_id", "duplicate-id",
                             f"milestone_id {quoted(mid)} is also in row {seen[0]} with different "
                             "content; each milestone has one row: correct it in place "
                             "instead of adding another")
            if not rows.bad[i]:
                rows.why[i] = (f"milestone_id {quoted(mid)} is in rows {', '.join(map(str, seen))} "
                               "with different content")
            rows.bad[i] = True
    if bad_participants:
        of_bad = mf["participant_id"].isin(bad_participants).to_numpy() & ~rows.bad
        for i in np.flatnonzero(of_bad):
            rows.why[i] = (f"its participant {quoted(mf['participant_id'].iat[i])} has an invalid "
                           f"row in {participants_shown}")
        rows.bad |= of_bad

    invalid = mf.loc[rows.bad, ["milestone_id", "participant_id", "milestone", ROW]].copy()
    invalid["detail"] = pd.Series([f"row {r} of {mtab.shown} is invalid: {w}"
                                   for r, w in zip(invalid[ROW], rows.why[rows.bad])],
                                  index=invalid.index, dtype="str")
    # an invalid row may have no usable id (blank, or holding a line break): key it by its
    # row, so each invalid milestone is one entry; the texts it shows are made printable
    unusable = (invalid["milestone_id"] == "") | invalid["milestone_id"].str.contains(
        _CONTROL.pattern, regex=True)
    invalid["milestone_id"] = np.where(unusable, "row-" + invalid[ROW].astype(str),
                                       invalid["milestone_id"])
    for col in ("participant_id", "milestone"):
        invalid[col] = [quoted(v, max(len(v), 1))[1:-1] for v in invalid[col]]
    invalid = invalid.drop_duplicates("milestone_id", keep="first").reset_index(drop=True)
    invalid = invalid.astype({"milestone_id": "str", ROW: "int64"})
    valid = _ordered(mf[~rows.bad], list(MILESTONE_REQUIRED + MILESTONE_OPTIONAL) + [ROW])
    return valid, invalid, repeats


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _control_characters(values: pd.Series, plain: bool) -> np.ndarray:
    """Which values hold a control character. None does in a plain table (_Table.plain),
    nor in a column whose joined text is printable: the per-value search runs only when
    one may."""
    cells = values.to_numpy(dtype=object)
    if plain:
        return np.zeros(len(cells), dtype=bool)
    try:
        if "".join(cells).isprintable():  # every control character is unprintable
            return np.zeros(len(cells), dtype=bool)
    except TypeError:  # not all text
        pass
    return values.str.contains(_CONTROL.pattern, regex=True).to_numpy(dtype=bool)


def _flag_control_characters(frame: pd.DataFrame, rows: "_Rows", cols: list[str],
                             has: set[str]) -> None:
    """A control character (a line break, a tab, an escape) in an id, a code or a column
    the contract tests is an error: these values are written to ledger.csv and
    decisions.csv and printed, where a carriage return would split a CSV record in two."""
    for col in cols:
        if col not in has:
            continue
        bad = _control_characters(frame[col], rows.table.plain)
        rows.flag(bad, col, "bad-text",
                  lambda i, col=col: f"{col} {quoted(frame[col].iat[i])} holds a control "
                                     "character (a line break, tab or escape); ids and codes "
                                     "are one line of plain text: correct it in the source "
                                     "and export again")


def _numeric_column(c: Contract, col: str, participant: bool) -> bool:
    """Whether the contract tests `col` with a numeric range somewhere."""
    conds = []
    if participant:
        conds.append(c.eligibility or {})
        for rules in [c.payers] + [o.payers for o in c.outcomes if o.payers]:
            conds += [r.when or {} for r in rules]
    else:
        conds += [o.when or {} for o in c.outcomes]
    return any(col in cond and cond[col].is_range for cond in conds)
