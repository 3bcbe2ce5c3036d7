"""Reading an .xlsx workbook back: the cell values openpyxl's read-only, data-only mode gives,
without a Python object per cell.

After workbook.py in the flow; sib/audit.py reads each issued claim workbook and funder
statement back through `read_tables` and compares the rows with the ledger. Read-only:
writing workbooks is sib.workbook's job. Must not touch the file system, print, read the
clock or raise: a workbook that cannot be read is a value (`Tables.unreadable`).

`read_tables(raw, header)` opens the zip, reads its parts the way openpyxl's
`load_workbook(read_only=True, data_only=True)` does (content types, shared strings,
workbook, relationships, styles for the date formats), and for each worksheet in order
looks for a header row among its first 20 rows, handing each row's values to `header`
exactly as `ws.iter_rows(values_only=True)` would give them. Of a sheet whose header
`header` recognises it returns the asked-for columns of every row below, as arrays.

Two readers give the same values; which one ran never shows in the result:

- the fast one (`_Fast`), for sheets as sib.workbook writes them (openpyxl's XML: one
  `<row r="n">` per row, cells `<c r="A2" s="3" t="inlineStr"><is><t>…</t></is></c>` and
  `<c r="K2" s="5" t="n"><v>650</v></c>` in column order). It decompresses a megabyte at
  a time and finds the cells with numpy over the bytes (`_Fast._scan`), proving as it goes
  that it accounts for every element: every `<` of the chunk is one of the tags of the
  rows and cells it found, each cell ends `</v></c>` or `</t></is></c>` right where the
  next begins, row numbers rise, every asked-for cell is the exact shape above (its type,
  style and text then read from the bytes), and the text holds only well-formed
  characters and references. Every row of every sheet is checked so (openpyxl's load
  parses them all), only a table's are read. Anything else makes it give up on that
  sheet (`_Reject`), as does a value it would have to compute that openpyxl cannot read
  (the load-time errors further on come first);
- the general one (`_general_sheet`), a line-by-line port of openpyxl's worksheet reader
  (`WorkSheetParser.parse_row/parse_cell`, `ReadOnlyWorksheet._cells_by_row`) over
  defusedxml's `iterparse`: shared strings, rich text, formulas, missing `r` attributes,
  a `<dimension>`, namespace prefixes, entities, whatever Excel or LibreOffice write.

Failures are those openpyxl would have: a part that is not well-formed XML is a ParseError
where openpyxl's load would meet it (up to `</sheetData>` of every sheet), defusedxml's
refusals (an entity declaration, an external reference) are openpyxl's `ValueError`, a
missing part its `KeyError`. Zip bombs are refused before inflating (`MAX_MEMBER`,
`MAX_RATIO`); members are read through zipfile, which checks each one's CRC.

Not emulated (what openpyxl validates but that decides no value): the schema of docProps,
themes, defined names and chart sheets (only their well-formedness is checked),
the attribute syntax of cells the caller did not ask for in fast-read sheets, whose
position, column and element structure are checked but not every byte of their tags; and
a value openpyxl cannot read (where its header search would have crashed) in the first
rows of a short sheet (up to `PREFILTER` bytes) that holds no header row, of which only
its well-formedness is checked.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from xml.parsers import expat
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterator, Mapping

import numpy as np
from defusedxml.ElementTree import DefusedXMLParser, fromstring as _fromstring, iterparse as _iterparse

# --- limits -----------------------------------------------------------------------------------

MAX_MEMBER = 4 << 30        # bytes one part of the zip may inflate to
MAX_RATIO = 250             # … and times its compressed size, for parts over RATIO_FROM bytes
RATIO_FROM = 16 << 20
CHUNK = 1 << 20             # bytes of sheet XML read (and scanned) at a time
PREFILTER = 16 << 10        # a sheet up to this size is first looked at for a header at all
SMALL = 1 << 20             # … and one up to this size, when the fast reader cannot read it
HEADER_ROWS = 20            # a header row is looked for among the first 20 rows (as audit does)

# --- names openpyxl uses (openpyxl.xml.constants) ----------------------------------------------

MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_WB_MAIN = "application/vnd.openxmlformats-officedocument.spreadsheetml.%s.main+xml"
_WB_MACRO = "application/vnd.ms-excel.%s.macroEnabled.main+xml"
WORKBOOK_TYPES = (_WB_MACRO % "template", _WB_MAIN % "template", _WB_MACRO % "sheet",
                  _WB_MAIN % "sheet")  # the order _find_workbook_part tries them in
SHARED_STRINGS = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
ARC_CONTENT_TYPES = "[Content_Types].xml"
ARC_WORKBOOK = "xl/workbook.xml"
ARC_CORE, ARC_CUSTOM = "docProps/core.xml", "docProps/custom.xml"
ARC_THEME, ARC_STYLE = "xl/theme/theme1.xml", "xl/styles.xml"

_ROW = "{%s}row" % MAIN_NS
_CELL_V = "{%s}v" % MAIN_NS
_CELL_IS = "{%s}is" % MAIN_NS
_DIMENSION = "{%s}dimension" % MAIN_NS
_SHEET_DATA = "{%s}sheetData" % MAIN_NS
_SI = "{%s}si" % MAIN_NS


# --- what is returned -------------------------------------------------------------------------

EMPTY, TEXT, NUMBER, VALUE = 0, 1, 2, 3  # Column.kind


@dataclass(frozen=True)
class Column:
    """One asked-for column of a table's data rows (row i is Table.rows[i]).

    kind: per row, EMPTY (the value is None), TEXT (a str: `raw` decoded as UTF-8, no
      reference or line end to resolve), NUMBER (an int or float: openpyxl's reading of
      `raw`, text int() or float() takes, in a cell without a date format) or
      VALUE (anything else: the value is `values[i]`, computed as openpyxl would).
    raw: per row, the bytes of the value as written in the XML (TEXT and NUMBER rows).
    values: row → value, for VALUE rows.
    """

    kind: np.ndarray
    raw: np.ndarray
    values: Mapping[int, object]
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    def distinct(self) -> tuple[np.ndarray, list[bytes]]:
        """Per row, a code into the distinct `raw` values, and those values (as `distinct`)."""
        if "distinct" not in self._memo:
            self._memo["distinct"] = distinct(self.raw)
        return self._memo["distinct"]

    def value(self, i: int) -> object:
        """Row i's value, as openpyxl gives it."""
        k = self.kind[i]
        if k == EMPTY:
            return None
        if k == TEXT:
            return bytes(self.raw[i]).decode("utf-8")
        if k == NUMBER:
            return _cast_number(bytes(self.raw[i]).decode("ascii"))
        return self.values[i]


@dataclass(frozen=True)
class Table:
    """A worksheet with a header row `header` recognised: its title, the numbers of the
    rows below the header (as openpyxl yields them) and the asked-for columns."""

    title: str
    rows: np.ndarray
    columns: Mapping[str, Column]


@dataclass(frozen=True)
class Tables:
    """What `read_tables` found: the tables in sheet order, or why the workbook cannot be
    read (an exception's type name as openpyxl's load would raise it, or a sentence)."""

    tables: tuple[Table, ...] = ()
    unreadable: str | None = None
    fast_sheets: int = 0     # how many sheets the fast reader read (benchmarks report it)


HeaderFn = Callable[[tuple], "Mapping[str, int] | None"]


def read_tables(raw: bytes, header: HeaderFn) -> Tables:
    """The tables of workbook `raw`: for each worksheet whose first rows include one for
    which `header(values)` gives {label: 0-based column}, that sheet's rows below it with
    those columns. `header` sees each of the first 20 rows (up to the first it accepts)
    as the tuple ws.iter_rows(values_only=True) yields."""
    try:
        book = _Book.open(raw)
    except _Refused as e:
        return Tables(unreadable=str(e))
    except Exception as e:  # noqa: BLE001 - whatever openpyxl's load would raise
        return Tables(unreadable=_load_error_name(e))
    tables, load_error, read_error, fast = [], None, None, 0
    for sheet in book.sheets:
        try:
            result = _read_sheet(book, sheet, header)
        except _Refused as e:
            load_error = load_error or str(e)
            break
        except _LoadError as e:
            load_error = load_error or e.name
            break
        except _IterationError as e:
            read_error = read_error or e.name
            continue
        except Exception as e:  # noqa: BLE001 - met where openpyxl's load meets it
            load_error = load_error or _load_error_name(e)
            break
        fast += result.fast
        if result.table is not None:
            tables.append(result.table)
    book.close()
    if load_error or read_error:
        return Tables(unreadable=load_error or read_error)
    return Tables(tuple(tables), fast_sheets=fast)


def _load_error_name(e: BaseException) -> str:
    # ExcelReader.read re-raises every ValueError (defusedxml's refusals among them) as a
    # ValueError "Unable to read workbook"
    return "ValueError" if isinstance(e, ValueError) else type(e).__name__


class _Refused(Exception):
    """A workbook refused before reading it all (a zip bomb); its message says why."""


class _LoadError(Exception):
    """What openpyxl's load would raise, by name."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _IterationError(Exception):
    """What openpyxl would raise while iterating rows (after its load succeeded)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _Reject(Exception):
    """The fast reader cannot vouch for this sheet: read it with the general one."""


# --- the package --------------------------------------------------------------------------


@dataclass(frozen=True)
class _SheetRef:
    title: str
    path: str


@dataclass(frozen=True)
class _Rules:
    """What a cell's value depends on beyond the cell: the date formats of the styles, the
    epoch, the shared strings (only rows without shared strings are decoded through it
    when it is hashed, so they are left out of its hash)."""

    date_styles: frozenset[int] = frozenset()
    timedelta_styles: frozenset[int] = frozenset()
    epoch_1904: bool = False
    strings: tuple[str, ...] = field(default=(), compare=False, hash=False)

    def date_value(self, value, style):
        from openpyxl.utils.datetime import CALENDAR_MAC_1904, WINDOWS_EPOCH, from_excel
        try:
            return from_excel(value, CALENDAR_MAC_1904 if self.epoch_1904 else WINDOWS_EPOCH,
                              timedelta=style in self.timedelta_styles)
        except (OverflowError, ValueError):
            return "#VALUE!"  # openpyxl warns and makes the cell an error


@dataclass
class _Book:
    """An opened workbook: what openpyxl's load reads before any row."""

    zf: zipfile.ZipFile
    names: frozenset[str]
    sheets: list[_SheetRef] = field(default_factory=list)
    strings: tuple[str, ...] = ()
    strings_may_head: bool = False
    date_styles: frozenset[int] = frozenset()
    timedelta_styles: frozenset[int] = frozenset()
    epoch_1904: bool = False

    @staticmethod
    def open(raw: bytes) -> "_Book":
        zf = zipfile.ZipFile(io.BytesIO(raw))
        book = _Book(zf, frozenset(zf.namelist()))
        try:
            book._load()
        except BaseException:
            zf.close()
            raise
        return book

    def close(self) -> None:
        self.zf.close()

    def info(self, name: str) -> zipfile.ZipInfo:
        info = self.zf.getinfo(name)  # KeyError, as zipfile's read would raise
        if info.file_size > MAX_MEMBER or (info.file_size > RATIO_FROM and
                                           info.file_size > MAX_RATIO * max(info.compress_size, 1)):
            raise _Refused(f"{name} would expand to {info.file_size:,} bytes from "
                           f"{info.compress_size:,}")
        return info

    def read(self, name: str) -> bytes:
        return self.read_info(self.info(name))

    def read_info(self, info: zipfile.ZipInfo) -> bytes:
        """A part, whole. (Asking zipfile for all of it at once: read() with no size
        grows its result piece by piece.)"""
        with self.zf.open(info) as f:
            data = f.read(info.file_size)
            return data + f.read()  # b"" — and zipfile checks the CRC at the end

    def _load(self) -> None:
        # in the order ExcelReader.read goes: each step's failure is the one reported
        types = _content_types(self.read(ARC_CONTENT_TYPES))
        strings_part = next((p for p, ct in types.overrides if ct == SHARED_STRINGS), None)
        if strings_part is not None:
            self.strings = _shared_strings(self.read(strings_part[1:]))
            self.strings_may_head = any(_may_head_text(s) for s in self.strings)
        wb_part = _workbook_part(types)[1:]
        sheets, self.epoch_1904 = _workbook(self.read(wb_part))
        for part in (ARC_CORE, ARC_CUSTOM):  # their content decides nothing read here
            if part in self.names:
                data = self.read(part)
                if not _expat_valid(data):
                    _fromstring(data)  # raises what openpyxl's parse of it raises
        if ARC_THEME in self.names:
            self.read(ARC_THEME)
        if ARC_STYLE in self.names:
            self.date_styles, self.timedelta_styles = _date_styles(self.read(ARC_STYLE))
        rels = None
        for name, rel_id in sheets:
            if not rel_id:
                continue  # openpyxl warns and skips a sheet without r:id
            if rels is None:
                rels = _relationships(self.read(_rels_path(wb_part)), _rels_path(wb_part))
            target, kind = rels[rel_id]  # KeyError, as openpyxl's would be
            if target not in self.names:
                continue  # openpyxl skips a sheet whose part is missing
            if "chartsheet" in kind:
                continue
            sheet_rels = _rels_path(target)
            if sheet_rels in self.names:
                _parses(self.read(sheet_rels))
            self.sheets.append(_SheetRef(name, target))

    @property
    def rules(self) -> _Rules:
        return _Rules(self.date_styles, self.timedelta_styles, self.epoch_1904, self.strings)


@lru_cache(maxsize=64)
def _parses(data: bytes) -> bool:
    """True if openpyxl's parse of the part succeeds; else what it raises (each workbook's
    sheet relationships are alike: parsed once)."""
    _fromstring(data)
    return True


@dataclass(frozen=True)
class _ContentTypes:
    defaults: tuple[str, ...]                 # content types of <Default> elements
    overrides: tuple[tuple[str, str], ...]    # (PartName, ContentType) of <Override>s


@lru_cache(maxsize=64)
def _content_types(data: bytes) -> _ContentTypes:
    root = _fromstring(data)
    defaults, overrides = [], []
    for el in root:
        tag = _local(el.tag)
        if tag == "Default":
            a = _attrs(el, {"Extension", "ContentType"}, {"Extension", "ContentType"})
            if a["ContentType"] not in defaults:
                defaults.append(a["ContentType"])
        elif tag == "Override":
            a = _attrs(el, {"PartName", "ContentType"}, {"PartName", "ContentType"})
            if (a["PartName"], a["ContentType"]) not in overrides:
                overrides.append((a["PartName"], a["ContentType"]))
    if not overrides:  # Manifest's defaults: styles, theme, core and app, no workbook
        overrides = [("/xl/styles.xml", ""), ("/xl/theme/theme1.xml", "")]
    if not defaults:
        defaults = ["application/vnd.openxmlformats-package.relationships+xml", "application/xml"]
    return _ContentTypes(tuple(defaults), tuple(overrides))


def _workbook_part(types: _ContentTypes) -> str:
    for ct in WORKBOOK_TYPES:
        for part, c in types.overrides:
            if c == ct:
                return part
    if set(types.defaults) & set(WORKBOOK_TYPES):
        return "/" + ARC_WORKBOOK
    raise OSError("File contains no valid workbook part")


@lru_cache(maxsize=64)
def _workbook(data: bytes) -> tuple[tuple[tuple[str, str | None], ...], bool]:
    """(name, r:id) of each sheet in order, and whether dates count from 1904."""
    root = _fromstring(data)
    sheets: list = []
    date1904 = False
    for el in root:
        tag = _local(el.tag)
        if tag == "sheets":
            sheets = []
            for s in el:
                a = _attrs(s, {"name", "sheetId", "state", "id"}, {"name", "sheetId"},
                           {"{%s}id" % REL_NS: "id"})
                _int(a["sheetId"])
                if a.get("state", "visible") not in ("visible", "hidden", "veryHidden", "none"):
                    raise ValueError(f"state {a['state']!r}")
                sheets.append((a["name"], a.get("id")))
        elif tag == "workbookPr":
            v = el.get("date1904")
            date1904 = v is not None and v not in ("false", "f", "0")
    return tuple(sheets), date1904


def _rels_path(path: str) -> str:
    folder, obj = posixpath.split(path)
    return posixpath.join(folder, "_rels", f"{obj}.rels")


@lru_cache(maxsize=64)
def _relationships(data: bytes, filename: str) -> dict[str | None, tuple[str, str]]:
    """Id → (target as a zip member name, Type), as openpyxl's get_dependents makes them."""
    root = _fromstring(data)
    rels = []
    try:
        for el in root:
            a = _attrs(el, {"Id", "Type", "Target", "TargetMode", "type"}, {"Target"})
            kind = a.get("Type")
            if a.get("type") is not None:
                kind = f"{REL_NS}/{a['type']}"
            if not isinstance(kind, str):
                raise TypeError("a relationship without a Type")
            rels.append((a.get("Id"), a["Target"], kind, a.get("TargetMode")))
    except TypeError:
        rels = []  # openpyxl warns that the part "contains invalid dependency definitions"
    parent = posixpath.split(posixpath.dirname(filename))[0]
    out = {}
    for rid, target, kind, mode in rels:
        if mode != "External":
            target = target[1:] if target.startswith("/") else \
                posixpath.normpath(posixpath.join(parent, target))
        out[rid] = (target, kind)
    return out


@lru_cache(maxsize=64)
def _date_styles(data: bytes) -> tuple[frozenset[int], frozenset[int]]:
    """The cell styles (indices into cellXfs) openpyxl reads as dates and as durations."""
    from openpyxl.styles.numbers import builtin_format_code, is_date_format, is_timedelta_format
    root = _fromstring(data)
    custom: dict[int, str] = {}
    xfs = None
    for el in root:
        tag = _local(el.tag)
        if tag == "numFmts":
            custom = {}
            for f in el:
                if _local(f.tag) == "numFmt":
                    custom[_int(f.get("numFmtId"))] = f.get("formatCode")
        elif tag == "cellXfs":
            xfs = [_int(x.get("numFmtId", 0)) for x in el if _local(x.tag) == "xf"]
    dates, durations = set(), set()
    for idx, fid in enumerate(xfs or ()):  # no cellXfs: openpyxl keeps its empty defaults
        fmt = custom[fid] if fid in custom else builtin_format_code(fid)
        if is_date_format(fmt):
            dates.add(idx)
        if is_timedelta_format(fmt):
            durations.add(idx)
    return frozenset(dates), frozenset(durations)


def _shared_strings(data: bytes) -> tuple[str, ...]:
    """openpyxl's read_string_table: each <si>'s text, rich text runs joined."""
    out = []
    for _, node in _iterparse(io.BytesIO(data)):
        if node.tag == _SI:
            out.append(_text_content(node).replace("x005F_", ""))
            node.clear()
    return tuple(out)


def _int(v) -> int:
    """openpyxl's Integer descriptor: int(v), a TypeError when it cannot be."""
    try:
        return int(v)
    except Exception:  # noqa: BLE001 - as openpyxl's _convert
        raise TypeError(f"expected an integer, not {v!r}") from None


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _attrs(el, allowed: set[str], required: set[str], namespaced: Mapping[str, str] = {}) -> dict:
    """An element's attributes as openpyxl's Serialisable.from_tree takes them: known
    namespaced ones renamed, other namespaced ones dropped, an unknown or missing one a
    TypeError (the class's constructor would refuse it)."""
    out = {}
    for k, v in el.attrib.items():
        if k in namespaced:
            out[namespaced[k]] = v
        elif k.startswith("{"):
            continue
        elif k in allowed:
            out[k] = v
        else:
            raise TypeError(f"unexpected attribute {k!r}")
    missing = required - out.keys()
    if missing:
        raise TypeError(f"missing {sorted(missing)}")
    return out


# --- values as openpyxl makes them ----------------------------------------------------------


def _cast_number(value: str):
    """openpyxl's _cast_number: an int unless the text has '.', 'e' or 'E'."""
    if "." in value or "E" in value or "e" in value:
        return float(value)
    return int(value)


def _text_content(node) -> str:
    """openpyxl's Text.from_tree(node).content: the last <t> child's text, then each rich
    text run's (its last <t>'s) text, children matched by local name."""
    plain, runs = None, []
    for el in node:
        tag = _local(el.tag)
        if tag == "t":
            plain = el.text
        elif tag == "r":
            t = None
            for x in el:
                if _local(x.tag) == "t":
                    t = x.text
            runs.append(t)
    return "".join([plain] if plain is not None else []) + "".join(t for t in runs if t is not None)


def _cell_value(book: "_Rules", t: str, style, v: str | None, inline: str | None):
    """parse_cell's value (data_only): `t` the type attribute ('n' when absent), `style`
    the style id as parse_cell holds it, `v` the <v> text or None, `inline` the <is>
    content (None without an <is>)."""
    if t == "inlineStr":
        return inline
    if not v:
        return None
    if t == "n":
        value = _cast_number(v)
        if style in book.date_styles:
            return book.rules.date_value(value, style) if isinstance(book, _Book) else \
                book.date_value(value, style)
        return value
    if t == "s":
        return book.strings[int(v)]
    if t == "b":
        return bool(int(v))
    if t == "d":
        from openpyxl.utils.datetime import from_ISO8601
        return from_ISO8601(v)
    return v  # str, e, or a type openpyxl does not know: the text


# --- one sheet --------------------------------------------------------------------------------


@dataclass
class _SheetResult:
    table: Table | None
    fast: int = 0


def _read_sheet(book: _Book, sheet: _SheetRef, header: HeaderFn) -> _SheetResult:
    info = book.info(sheet.path)
    if info.file_size <= PREFILTER:
        data = book.read_info(info)
        # a short sheet that cannot hold a header row need only be well-formed
        if not _may_have_header(data, book):
            _check_well_formed(book, sheet, data)
            return _SheetResult(None)
        try:
            return _SheetResult(_Fast(book, sheet, header).read_bytes(data), 1)
        except (_Reject, _IterationError):
            return _SheetResult(_general_sheet(book, sheet, header, io.BytesIO(data)))
    # (a value openpyxl cannot read: the general reader says so, after the load-time
    # scan of the whole sheet, whose errors come first)
    try:
        with book.zf.open(info) as f:
            return _SheetResult(_Fast(book, sheet, header).read_stream(f), 1)
    except _Reject:
        pass
    except _IterationError:
        with book.zf.open(info) as f:
            return _SheetResult(_general_sheet(book, sheet, header, f))
    if info.file_size <= SMALL:
        data = book.read_info(info)
        if not _may_have_header(data, book):
            _check_well_formed(book, sheet, data)
            return _SheetResult(None)
        return _SheetResult(_general_sheet(book, sheet, header, io.BytesIO(data)))
    with book.zf.open(info) as f:
        return _SheetResult(_general_sheet(book, sheet, header, f))


_LINE_ID = re.compile(rb"line[^a-z0-9]+id")
# a rich text run (<r>, perhaps namespace-prefixed: [<:]r[>/ \t\n\r]) joins its text to
# its neighbours'; found by its end, which is rarer than '<' (and then its start looked at)
_RUN_END = re.compile(rb"r[>/ \t\n\r]")


def _may_head_text(text: str) -> bool:
    low = text.lower()
    return "amount" in low or "line" in low


def _may_have_header(data: bytes, book: _Book) -> bool:
    """False only when no cell of the sheet can have the key `amount` and one `line_id`
    (audit's header): neither is anywhere in its text, which no markup splits. Keys are
    lower-cased text with runs of other characters made '_': 'amount' needs those six
    letters in a row (no other character lower-cases to them), 'line_id' 'line', some
    non-alphanumerics, 'id'."""
    if book.strings_may_head or (b"&" in data and b"&#" in data) or \
            (b"!" in data and b"<!" in data) or data.find(b"<?", 6) >= 0:
        return True
    if not _utf8_document(data) or any(data[m.start() - 1] in b"<:"
                                       for m in _RUN_END.finditer(data, 1)):
        return True
    low = data.lower()
    return b"amount" in low and _LINE_ID.search(low) is not None


_XML_DECL = re.compile(rb"(?:\xef\xbb\xbf)?<\?xml([^>]*)\?>")
_ENCODING = re.compile(rb"encoding\s*=\s*[\"']([^\"']*)[\"']")


def _utf8_document(data: bytes) -> bool:
    """Whether the XML is in UTF-8 (no other byte order mark or declared encoding)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00", b"<\x00")):
        return False
    m = _XML_DECL.match(data)
    if m:
        e = _ENCODING.search(m.group(1))
        return e is None or e.group(1).lower() in (b"utf-8", b"utf8")
    return True


class _Unsure(Exception):
    pass


def _refuse(*_args):
    raise _Unsure


def _expat_valid(data: bytes) -> bool:
    """Whether `data` is well-formed XML as defusedxml's parser (namespace-aware) would
    read it, checked by expat alone at C speed; False also when unsure (a DOCTYPE, whose
    undefined entities ElementTree judges itself)."""
    p = expat.ParserCreate(None, "}")
    p.StartDoctypeDeclHandler = p.EntityDeclHandler = p.UnparsedEntityDeclHandler = _refuse
    p.ExternalEntityRefHandler = _refuse
    try:
        p.Parse(data, True)
    except Exception:  # noqa: BLE001 - an error, or unsure
        return False
    return True


def _check_well_formed(book: _Book, sheet: _SheetRef, data: bytes) -> None:
    """A sheet with no table: openpyxl's load parses it up to </sheetData> (or its
    <dimension>), its header search up to row 20. All of it well-formed settles it (but
    for its values: module docstring); if not, the general reader finds what openpyxl
    would meet, where it would meet it."""
    if not _expat_valid(data):
        _general_sheet(book, sheet, lambda values: None, io.BytesIO(data))


# --- the general reader: openpyxl's, line by line -----------------------------------------------


class _LoadScan:
    """Target for the load-time scan (ReadOnlyWorksheet._get_size): stops at the end of
    the first <dimension> (keeping its ref) or of <sheetData>."""

    def __init__(self):
        self.ref = None
        self.dimension = False

    def start(self, tag, attrib):
        if tag == _DIMENSION:
            self.ref = attrib.get("ref")
            self.dimension = True

    def end(self, tag):
        if tag == _DIMENSION or tag == _SHEET_DATA:
            raise _Stop


class _Stop(Exception):
    pass


def _dimensions(stream) -> tuple | None:
    """parse_dimensions: the first <dimension>'s boundaries, read before </sheetData>;
    ParseError (or defusedxml's refusal) if the XML breaks before that."""
    target = _LoadScan()
    p = DefusedXMLParser(target=target)
    try:
        while True:
            data = stream.read(16 * 1024)
            if not data:
                p.close()  # no </sheetData>: the whole document was parsed
                break
            p.feed(data)
    except _Stop:
        pass
    if not target.dimension:
        return None
    if target.ref is None:
        raise TypeError("a dimension without ref")
    from openpyxl.utils.cell import range_boundaries
    return range_boundaries(target.ref)


def _general_sheet(book: _Book, sheet: _SheetRef, header: HeaderFn, stream) -> Table | None:
    """The sheet read as openpyxl reads it: the load-time scan (errors there are load
    errors), then the rows (errors there are `_IterationError`s)."""
    dims = _dimensions(stream)
    stream.seek(0)
    max_col = max_row = None
    if dims is not None:
        _min_col, _min_row, max_col, max_row = dims
    try:
        return _general_rows(book, sheet, header, stream, max_col, max_row)
    except _IterationError:
        raise
    except Exception as e:  # noqa: BLE001 - openpyxl would raise it from iter_rows
        raise _IterationError(_load_error_name(e) if isinstance(e, ValueError)
                              else type(e).__name__) from e


def _openpyxl_rows(book: _Book, stream, max_col, max_row) -> Iterator[tuple[int, tuple]]:
    """(row number, values) as ReadOnlyWorksheet._cells_by_row(values_only=True) yields
    them, without the empty rows it fills gaps with."""
    from openpyxl.utils.cell import coordinate_to_tuple
    counter = 1
    row_counter = 0
    for _, element in _iterparse(stream):
        if element.tag != _ROW:
            if _local(element.tag) in _CLEARED:
                element.clear()
            continue
        attrs = element.attrib
        if "r" in attrs:
            try:
                row_counter = int(attrs["r"])
            except ValueError:
                val = float(attrs["r"])
                if not val.is_integer():
                    raise ValueError(f"{attrs['r']} is not a valid row number")
                row_counter = int(val)
        else:
            row_counter += 1
        col_counter = 0
        cells = []
        for el in element:
            t = el.get("t", "n")
            coordinate = el.get("r")
            style = el.get("s", 0)
            if style:
                style = int(style)
            v = None if t == "inlineStr" else (el.findtext(_CELL_V, None) or None)
            if coordinate:
                _r, column = coordinate_to_tuple(coordinate)
                col_counter = column
            else:
                col_counter += 1
                column = col_counter
            inline = None
            if t == "inlineStr":
                child = el.find(_CELL_IS)
                if child is not None:
                    inline = _text_content(child)
            cells.append((column, _cell_value(book, t, style, v, inline)))
        element.clear()
        idx = row_counter
        if max_row is not None and idx > max_row:
            return
        if counter <= idx:
            counter = idx + 1
            yield idx, _row_values(cells, max_col)


# the elements openpyxl's parse() clears once read (their parsing is not emulated)
_CLEARED = {"cols", "sheetProtection", "extLst", "conditionalFormatting", "legacyDrawing",
            "rowBreaks", "colBreaks", "customSheetViews", "printOptions", "pageMargins",
            "pageSetup", "headerFooter", "autoFilter", "dataValidations", "sheetPr",
            "sheetViews", "sheetFormatPr", "scenarios", "tableParts", "hyperlinks",
            "mergeCells"}


def _row_values(cells: list, max_col) -> tuple:
    """_get_row(values_only=True): the row as wide as max_col, or as its last cell's column."""
    if not cells and not max_col:
        return ()
    width = max_col or cells[-1][0]
    out = [None] * width
    for column, value in cells:
        if 1 <= column <= width:
            out[column - 1] = value
    return tuple(out)


def _general_rows(book: _Book, sheet: _SheetRef, header: HeaderFn, stream, max_col,
                  max_row) -> Table | None:
    rows = _openpyxl_rows(book, stream, max_col, max_row)
    found = None
    for idx, values in rows:
        if idx > HEADER_ROWS:
            break
        cols = header(values)
        if cols:
            found = idx, dict(cols)
            break
        if idx >= HEADER_ROWS:
            break
    if found is None:
        return None
    start, cols = found
    nums, per = [], {k: {} for k in cols}
    for idx, values in rows:
        i = len(nums)
        nums.append(idx)
        for k, c in cols.items():
            v = values[c] if c < len(values) else None
            if v is not None:
                per[k][i] = v
    n = len(nums)
    columns = {}
    for k, vals in per.items():
        kind = np.full(n, EMPTY, dtype=np.int8)
        if vals:
            kind[list(vals)] = VALUE
        columns[k] = Column(kind, np.zeros(n, dtype="S1"), vals)
    return Table(sheet.title, np.array(nums, dtype=np.int64), columns)


# --- the fast reader: sheets as sib.workbook writes them ----------------------------------------


def _word(b: bytes) -> int:
    return int.from_bytes(b[:8].ljust(8, b"\0"), "little")


def _mask(k: int) -> int:
    return (1 << (8 * min(k, 8))) - 1


_U = np.uint64
_K_C, _M6 = _U(_word(b'<c r="')), _U(_mask(6))
_K_ROW = _U(_word(b'<row r="'))
_K_EROW = _U(_word(b"</row>"))
_K_VC = _U(_word(b"</v></c>"))
_K_IS8, _K_T5, _M5 = _U(_word(b"/is></c>")), _U(_word(b"</t><")), _U(_mask(5))
_POW10 = np.array([10 ** (7 - k) for k in range(8)], dtype=np.int64)
_WMAX = 64          # longest value read into the arrays; longer ones are read one by one

_TYPES = {"n": 0, "inlineStr": 1, "str": 2, "e": 3, "b": 4, "s": 5, "d": 6}
_T_N, _T_INLINE, _T_STR, _T_E = 0, 1, 2, 3
_T_OTHER = 7

_ROW_TAG = re.compile(rb'<row r="([0-9]{1,7})"((?: [A-Za-z][A-Za-z0-9]*="[^"<>&\t\n\r]*")*)>')
_ROW_ATTR = re.compile(rb' ([A-Za-z][A-Za-z0-9]*)=')
_CELL_TAG = re.compile(
    rb'<c r="([A-Z])([0-9]{1,7})"(?: s="([0-9]{1,9})")?(?: t="([A-Za-z]{1,16})")?>'
    rb'(?:<v>([^<]*)</v>|<is><t>([^<]*)</t></is>|<is><t xml:space="preserve">([^<]*)</t></is>)</c>')
_FRAME = re.compile(rb'"(?: s="([0-9]{1,9})")?(?: t="([A-Za-z]{1,16})")?>'
                    rb'(<v>|<is><t>|<is><t xml:space="preserve">)')
_REF = re.compile(rb"&(?:(amp|lt|gt|quot|apos)|#([0-9]{1,8})|#x([0-9A-Fa-f]{1,7}));")
_NAMED = {b"amp": "&", b"lt": "<", b"gt": ">", b"quot": '"', b"apos": "'"}


def _xml_char(c: int) -> bool:
    return c in (9, 10, 13) or 0x20 <= c <= 0xD7FF or 0xE000 <= c <= 0xFFFD or \
        0x10000 <= c <= 0x10FFFF


def _ref_text(m: re.Match) -> str:
    if m.group(1):
        return _NAMED[bytes(m.group(1))]
    c = int(m.group(2)) if m.group(2) else int(m.group(3), 16)
    if not _xml_char(c):
        raise _Reject
    return chr(c)


def _xml_text(b: bytes) -> str:
    """Character data as expat gives it: UTF-8, line ends made \\n, references resolved."""
    if b"\r" in b:
        b = b.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if b"&" not in b:
        return b.decode("utf-8")
    out, pos = [], 0
    for m in _REF.finditer(b):
        out.append(b[pos:m.start()])
        out.append(_ref_text(m).encode("utf-8"))
        pos = m.end()
    out.append(b[pos:])
    if any(b"&" in x for x in out[::2]):
        raise _Reject  # an '&' that starts no reference
    return b"".join(out).decode("utf-8")


class _Frames:
    """The cell openings seen in a sheet: from the quote that closes r="…" to the opening
    tag of the value (`" s="5" t="n"><v>`), each 16 to 32 bytes, looked up by
    their first 16 bytes and then compared whole."""

    def __init__(self):
        self.items: list[tuple[bytes, int, int, str, bool]] = []

    def add(self, frame: bytes, style: int, t: str, is_content: bool) -> None:
        """Add an opening (then `index` before the next `match`)."""
        self.items.append((frame, style, _TYPES.get(t, _T_OTHER), t, is_content))

    def index(self, date_styles: frozenset[int]) -> None:
        """Make the arrays `match` compares with."""
        self.__dict__.update(_frames_index(tuple(self.items), date_styles))

    def match(self, q: np.ndarray) -> np.ndarray:
        """Per cell (`q`: the 32 bytes from the quote closing its r="…", as 4 words), the
        index of its opening, or -1."""
        f = np.full(len(q), -1, dtype=np.int64)
        if not self.items or not hasattr(self, "w0"):
            return f
        w1, w2 = q[:, 0], q[:, 1]
        for i in range(len(self.items)):
            f[(w1 == self.w0[i]) & (w2 == self.w1[i])] = i
        fi = np.maximum(f, 0)
        ok = (f >= 0) & ((q[:, 2] & self.m2.take(fi)) == self.w2.take(fi))
        if self.long:
            ok &= (q[:, 3] & self.m3.take(fi)) == self.w3.take(fi)
        f[~ok] = -1
        return f


@lru_cache(maxsize=64)
def _frames_index(items: tuple, date_styles: frozenset[int]) -> dict:
    """`_Frames.index`'s arrays (the same openings recur in every statement: made once)."""
    words, masks = [], []
    for f, *_rest in items:
        for j in range(4):
            seg = f[8 * j: 8 * j + 8]
            words.append(_word(seg))
            masks.append(_mask(len(seg)))
    k = len(items)
    w = np.array(words or [0] * 4, dtype=np.uint64).reshape(-1, 4)
    m = np.array(masks or [0] * 4, dtype=np.uint64).reshape(-1, 4)
    out = {f"w{j}": w[:, j].copy() for j in range(4)}
    out["m2"], out["m3"] = m[:, 2].copy(), m[:, 3].copy()
    out["length"] = np.array([len(x[0]) for x in items] or [0], dtype=np.int64)
    out["is_content"] = np.array([x[4] for x in items] or [False])
    # the kind of a frame's value when its text is plain: kind1 if it has any, kind0 if
    # it is empty (parse_cell: an inlineStr's <v> and another type's <is> are ignored)
    kind0, kind1 = [], []
    for _f, style, tcode, _t, is_content in items:
        if (tcode == _T_INLINE) != is_content:
            k0 = k1 = EMPTY
        elif tcode == _T_INLINE:
            k0 = k1 = TEXT
        elif tcode in (_T_STR, _T_E, _T_OTHER):
            k0, k1 = EMPTY, TEXT
        elif tcode == _T_N and style not in date_styles:
            k0, k1 = EMPTY, NUMBER
        else:
            k0, k1 = EMPTY, VALUE
        kind0.append(k0)
        kind1.append(k1)
    out["kind0"] = np.array(kind0 or [VALUE], dtype=np.int8)
    out["kind1"] = np.array(kind1 or [VALUE], dtype=np.int8)
    out["long"] = any(len(x[0]) > 24 for x in items) and k > 0
    for v in out.values():
        if isinstance(v, np.ndarray):
            v.flags.writeable = False  # shared by every reader of these openings
    return out


@dataclass(frozen=True)
class _Outline:
    """The XML around a sheet's rows, parsed as one document with the rows cut out.

    fits: <sheetData> (where the rows were) is the spreadsheet namespace's, and no row or
      dimension element comes before it; load_error / later_error: why the XML up to
      </sheetData> (what openpyxl's load parses) / after it is not well-formed, if it is
      not; rows_after: a row element after </sheetData>, which openpyxl would read."""

    fits: bool
    load_error: str | None
    later_error: str | None
    rows_after: bool


class _Forbidden(Exception):
    pass


def _forbid(*_args):
    raise _Forbidden  # defusedxml's refusal, which openpyxl's load reports as a ValueError


@lru_cache(maxsize=256)
def _outline(head: bytes, tail: bytes) -> _Outline:
    """`head`: the XML up to and including <sheetData>; `tail`: what follows </sheetData>."""
    starts: list[tuple[str, int]] = []
    p = expat.ParserCreate(None, "}")
    p.StartElementHandler = lambda tag, _attrs: starts.append((tag, p.CurrentByteIndex))
    p.EntityDeclHandler = p.UnparsedEntityDeclHandler = p.ExternalEntityRefHandler = _forbid
    n = 0
    try:
        p.Parse(head, False)
        n = len(starts)
        p.Parse(b"</sheetData>", False)
    except Exception as e:  # noqa: BLE001 - an ExpatError or a refusal
        return _Outline(False, "ValueError" if isinstance(e, _Forbidden) else "ParseError",
                        None, False)
    fits = n > 0 and starts[n - 1] == (_SHEET_DATA[1:], len(head) - 11) and \
        not any(tag in (_ROW[1:], _DIMENSION[1:]) for tag, _ in starts[:n])
    later = None
    try:
        p.Parse(tail, True)
    except Exception as e:  # noqa: BLE001
        later = "ValueError" if isinstance(e, _Forbidden) else "ParseError"
    return _Outline(fits, None, later, any(tag == _ROW[1:] for tag, _ in starts[n:]))


def _head_row(book: _Book, cells: bytes, digits: bytes) -> tuple:
    """The (column, value) of each cell of a row among the first ones, as openpyxl reads
    them (the row's cells as bytes, its number's digits). A sheet's header row is the
    same in every statement: decoded once."""
    if b't="s"' in cells:
        return _decode_row(book, cells, digits)
    return _decode_row_cached(cells, digits, book.rules)


def _decode_row(book: _Book, cells: bytes, digits: bytes) -> tuple:
    out, p, last = [], 0, 0
    while p < len(cells):
        c = _CELL_TAG.match(cells, p)
        if not c or c.group(2) != digits:
            raise _Reject
        col = c.group(1)[0] - 64
        if col <= last:
            raise _Reject
        last = col
        style = int(c.group(3)) if c.group(3) is not None else 0
        t = c.group(4).decode("ascii") if c.group(4) is not None else "n"
        try:
            if c.group(5) is not None:
                value = _cell_value(book, t, style, _xml_text(c.group(5)), None)
            else:
                text = c.group(6) if c.group(6) is not None else c.group(7)
                value = _cell_value(book, t, style, None, _xml_text(text))
        except _Reject:
            raise
        except Exception as e:  # noqa: BLE001 - openpyxl would raise it iterating rows
            raise _IterationError(_load_error_name(e)) from e
        out.append((col, value))
        p = c.end()
    return tuple(out)


@lru_cache(maxsize=256)
def _decode_row_cached(cells: bytes, digits: bytes, rules: "_Rules") -> tuple:
    return _decode_row(rules, cells, digits)


_BUFFERS: list[bytearray] = []  # the fast reader's buffers, kept for reuse


def _borrow(size: int) -> bytearray:
    """A buffer of at least `size` bytes (and 2 * CHUNK), from those kept if one is free."""
    try:
        ba = _BUFFERS.pop()
    except IndexError:
        ba = bytearray(2 * CHUNK + 64)
    return ba if len(ba) >= size else bytearray(size)


def _give_back(ba: bytearray) -> None:
    if len(ba) <= 8 * CHUNK and len(_BUFFERS) < 4:
        _BUFFERS.append(ba)


class _Fast:
    """The fast reader of one sheet (see the module docstring)."""

    def __init__(self, book: _Book, sheet: _SheetRef, header: HeaderFn):
        self.book, self.sheet, self.header = book, sheet, header
        self.rests = [b'">']            # what ends a row tag after its number
        self.frames = _Frames()
        self.known: set[bytes] = set()
        self.last_row = 0               # the last row number scanned
        self.seen = 0                   # … and looked at for the header
        self.searching = True           # the first 20 rows not all looked at
        self.header_row = None
        self.labels: list[str] = []
        self.need = np.zeros(256, dtype=bool)       # column letters asked for
        self.label_of = np.zeros(256, dtype=np.intp)
        self.out_rows: list[np.ndarray] = []
        self.out_kind: list[np.ndarray] = []
        self.out_raw: list[list[np.ndarray]] = []
        self.out_values: list[dict] = []
        self.n_rows = 0

    # -- driving --

    def read_bytes(self, data: bytes) -> Table | None:
        return self._run(iter((data,)))

    def read_stream(self, f) -> Table | None:
        return self._run(iter(lambda: f.read(CHUNK), b""))

    def _run(self, pieces: Iterator[bytes]) -> Table | None:
        buf = b""
        for piece in pieces:
            buf += piece
            if b"<sheetData>" in buf or len(buf) > 4 * CHUNK:
                break
        at = buf.find(b"<sheetData>")
        if at < 0:
            raise _Reject
        head = buf[:at + 11]
        if not _utf8_document(head) or b"<!" in head:
            raise _Reject  # another encoding, a DOCTYPE, a comment: the general reader
        # ba[:size]: the bytes not yet scanned, in one buffer used throughout (fresh memory
        # for every megabyte costs page faults, so it is one of a few kept for reuse); 64
        # bytes more are always there, since numpy reads a little past a chunk's end
        rest = buf[at + 11:]
        size = len(rest)
        ba = _borrow(size + CHUNK + 64)
        try:
            return self._rows(pieces, head, ba, size, rest)
        finally:
            _give_back(ba)

    def _rows(self, pieces, head: bytes, ba: bytearray, size: int, rest: bytes) -> Table | None:
        ba[:size] = rest
        eof = False
        while True:
            if not eof and size < CHUNK:
                piece = next(pieces, b"")
                eof = not piece
                ba, size = self._append(ba, size, piece)
                continue
            j = ba.rfind(b"</row>", 0, size)
            if j < 0:
                if eof:
                    break
                if size > 8 * CHUNK:
                    raise _Reject  # a row of more than 8 MB
                piece = next(pieces, b"")
                eof = not piece
                ba, size = self._append(ba, size, piece)
                continue
            n = j + 6  # the chunk: ba[:n], whole rows
            if self.searching:
                self._head(ba, n)
            # every row is checked (openpyxl's load parses them all); only a table's are read
            self._scan(ba, n)
            ba[:size - n] = ba[n:size]
            size -= n
            if eof:
                break
        buf = bytes(ba[:size])
        if not buf.startswith(b"</sheetData>"):
            raise _Reject
        out = _outline(head, buf[12:])
        if not out.fits:
            raise _Reject
        if out.load_error:
            raise _LoadError(out.load_error)
        if self.header_row is not None or self.searching:  # openpyxl reads on after the rows
            if out.rows_after:
                raise _Reject
            if out.later_error:
                raise _IterationError(out.later_error)
        return self._table()

    @staticmethod
    def _append(ba: bytearray, size: int, piece: bytes) -> tuple[bytearray, int]:
        if size + len(piece) + 64 > len(ba):  # a larger buffer (this one may be lent out)
            ba = ba[:size] + bytes(size + len(piece) + 64 - size)
        ba[size:size + len(piece)] = piece
        return ba, size + len(piece)

    # -- the first rows, each cell read in Python: the header search --

    def _head(self, chunk: bytes, n: int) -> None:
        p = 0
        while self.searching and p < n:
            m = _ROW_TAG.match(chunk, p, n)
            if not m:
                raise _Reject
            self._learn_rest(m)
            q = chunk.find(b"</row>", m.end(), n)
            if q < 0:
                raise _Reject
            num = int(m.group(1))
            cells = _head_row(self.book, bytes(chunk[m.end():q]), bytes(m.group(1)))
            p = q + 6
            if not cells or num <= self.seen:
                raise _Reject
            self.seen = num
            if num > HEADER_ROWS:
                self.searching = False
                break
            cols = self.header(_row_values(list(cells), None))
            if cols:
                self._found(num, dict(cols))
            elif num >= HEADER_ROWS:
                self.searching = False

    def _found(self, num: int, cols: dict) -> None:
        self.searching = False
        self.header_row = num
        self.labels = list(cols)
        seen = _FRAMES_SEEN.get(tuple(self.labels), ())
        for frame, style, t, content in seen:
            self.known.add(frame)
            self.frames.add(frame, style, t, content)
        if seen:
            self.frames.index(self.book.date_styles)
        for i, (label, c) in enumerate(cols.items()):
            if not 0 <= c < 26:
                raise _Reject  # columns past Z: the general reader
            letter = 65 + c
            if self.need[letter]:
                raise _Reject  # two labels on one column
            self.need[letter] = True
            self.label_of[letter] = i

    def _learn_rest(self, m: re.Match) -> None:
        names = [bytes(x) for x in _ROW_ATTR.findall(m.group(2))]
        if len(set(names)) != len(names) or b"r" in names:
            raise _Reject  # a repeated attribute: not well-formed
        rest = b'"' + bytes(m.group(2)) + b">"
        if rest not in self.rests:
            if len(self.rests) >= 16 or len(rest) > 64:
                raise _Reject
            self.rests.append(rest)

    # -- a chunk of whole rows, with numpy --

    def _characters(self, buf: bytes, n: int, body: np.ndarray | None = None) -> tuple[bool, bool]:
        """The chunk's (buf[:n]) characters are ones XML allows, its references
        well-formed and it holds no ']]>'; whether it holds a reference, a carriage return."""
        if body is None:
            body = np.frombuffer(buf, dtype=np.uint8, count=n)
        amp = buf.find(b"&", 0, n) >= 0
        if amp:
            self._check_refs(buf, n)
        cr = False
        if int(body.min()) < 32:
            if np.count_nonzero((body < 32) & (body != 9) & (body != 10) & (body != 13)):
                raise _Reject  # a character XML does not allow
            cr = buf.find(b"\r", 0, n) >= 0
        if int(body.max()) >= 128:
            chunk = buf[:n]
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError:
                raise _Reject from None
            if b"\xef\xbf\xbe" in chunk or b"\xef\xbf\xbf" in chunk:
                raise _Reject
        if buf.find(b"]", 0, n) >= 0 and buf.find(b"]]>", 0, n) >= 0:
            raise _Reject
        return amp, cr

    def _scan(self, pad: bytes, n: int) -> None:
        """Check and read the chunk pad[:n] (whole rows; pad holds 64 bytes more)."""
        a = np.frombuffer(pad, dtype=np.uint8)
        w = np.ndarray((n + 40,), dtype="<u8", buffer=pad, offset=0, strides=(1,))
        body = a[:n]
        amp, cr = self._characters(pad, n, body)
        chunk = pad
        lt = body == 60
        nlt = int(np.count_nonzero(lt))
        C = np.flatnonzero(lt[:-1] & (body[1:] == 99))      # each '<c'
        nc = len(C)
        if nc == 0:
            raise _Reject
        v16 = np.ndarray((n + 48,), dtype="S16", buffer=pad, offset=0, strides=(1,))
        v24 = np.ndarray((n + 40,), dtype="S24", buffer=pad, offset=0, strides=(1,))
        # per cell, the 16 bytes before it and its first 8 (<c r="K2), in one gather
        G = v24[np.maximum(C - 16, 0)].view("<u8").reshape(-1, 3)
        if C[0] < 16:
            G[0, 2] = w[C[0]]
        w0 = G[:, 2]
        L = ((w0 >> _U(48)) & _U(0xFF)).astype(np.uint8)
        if not (((w0 & _M6) == _K_C) & ((L - np.uint8(65)) < 26) &
                ((w0 >> _U(56)) - _U(48) < _U(10))).all():
            raise _Reject  # not <c r="A1…: a column past Z, or no row number
        # a cell is closed right where the next one starts (</v></c> or </t></is></c>),
        # else a row ends and another begins between them
        c8 = np.empty(nc, dtype=np.uint64)
        t5 = np.empty(nc, dtype=np.uint64)
        c8[:-1] = G[1:, 1]
        t5[:-1] = (G[1:, 0] >> _U(24)) & _M5
        adj = np.zeros(nc, dtype=bool)
        adj[1:] = (c8[:-1] == _K_VC) | ((c8[:-1] == _K_IS8) & (t5[:-1] == _K_T5))
        if nc > 1 and not ((L[1:] > L[:-1]) | ~adj[1:]).all():
            raise _Reject  # cells out of column order
        starts = np.flatnonzero(~adj)                      # each row's first cell
        s = C[starts]
        rstart, nd, dw = self._row_tags(chunk, w, s)
        if rstart[0] != 0 or pad[n - 6:n] != b"</row>":
            raise _Reject
        db = dw.view(np.uint8).reshape(-1, 8)
        if len(s) > 1 and not ((w[rstart[1:] - 6] & _M6) == _K_EROW).all():
            raise _Reject
        nums = ((db.astype(np.int64) - 48) * (np.arange(8) >= (8 - nd)[:, None])) @ _POW10
        if nums[0] <= self.last_row or (len(nums) > 1 and not (np.diff(nums) > 0).all()):
            raise _Reject  # rows not in order: the general reader follows openpyxl
        self.last_row = int(nums[-1])
        end = np.empty(nc, dtype=np.int64)                 # where each cell's </c> ends
        end[:-1] = C[1:]
        last = np.append(starts[1:] - 1, nc - 1)           # each row's last cell
        end[last] = np.append(rstart[1:] - 6, n - 6)
        E = v16[end[last] - 16].view("<u8").reshape(-1, 2)
        c8[last] = E[:, 1]
        t5[last] = (E[:, 0] >> _U(24)) & _M5
        is_is = (c8 == _K_IS8) & (t5 == _K_T5)
        if not ((c8 == _K_VC) | is_is).all():
            raise _Reject
        if 4 * nc + 2 * int(np.count_nonzero(is_is)) + 2 * len(s) != nlt:
            raise _Reject  # a '<' no row or cell accounts for
        if self.header_row is not None:
            self._extract(pad, n, a, C, L, starts, nums, nd, end, is_is, amp, cr)

    def _check_refs(self, chunk: bytes, n: int) -> None:
        for m in re.compile(rb"&").finditer(chunk, 0, n):
            r = _REF.match(chunk, m.start(), n)
            if r is None:
                raise _Reject
            if r.group(1) is None:
                _ref_text(r)

    def _row_tags(self, chunk: bytes, w: np.ndarray, s: np.ndarray):
        """Per row (its first cell at s): where its tag <row r="N"…> starts, the digits of N
        and the 8 bytes that end with them. Each tag must end in a known way (`">`,
        `" ht="30" customHeight="1">`, …; learnt from the tags themselves)."""
        k = len(s)
        rstart = np.full(k, -1, dtype=np.int64)
        nd = np.zeros(k, dtype=np.int64)
        dw = np.zeros(k, dtype=np.uint64)
        for _ in range(17):
            for rest in sorted(self.rests, key=len, reverse=True):
                todo = np.flatnonzero(rstart < 0)
                if not len(todo):
                    return rstart, nd, dw
                p = s[todo]
                r = len(rest)
                ok = np.ones(len(todo), dtype=bool)
                for off in range(0, r, 8):
                    seg = rest[off:off + 8]
                    ok &= (w[np.maximum(p - r + off, 0)] & _U(_mask(len(seg)))) == _U(_word(seg))
                q = p - r
                d = w[np.maximum(q - 8, 0)]
                isd = (d.view(np.uint8).reshape(-1, 8) >= 48) & (d.view(np.uint8).reshape(-1, 8) <= 57)
                n = np.argmin(isd[:, ::-1], axis=1)
                ok &= (n > 0) & ~isd.all(axis=1)
                start = q - n - 8
                ok &= w[np.maximum(start, 0)] == _K_ROW
                ok &= start >= 0
                hit = todo[ok]
                rstart[hit], nd[hit], dw[hit] = start[ok], n[ok], d[ok]
            todo = np.flatnonzero(rstart < 0)
            if not len(todo):
                return rstart, nd, dw
            before = len(self.rests)
            for p in s[todo[:4]].tolist():  # learn how these rows' tags end
                j = chunk.rfind(b'<row r="', 0, p)
                m = _ROW_TAG.fullmatch(chunk, j, p) if j >= 0 else None
                if m is None:
                    raise _Reject
                self._learn_rest(m)
            if len(self.rests) == before:
                break
        raise _Reject

    def _extract(self, chunk, n, a, C, L, starts, nums, nd, end, is_is, amp, cr):
        """The asked-for cells of the data rows: each checked whole, its value's bytes
        gathered into arrays (or, when it needs more, read in Python)."""
        k0 = int(np.searchsorted(nums, self.header_row, side="right"))
        nrows = len(nums) - k0
        if nrows <= 0:
            return
        first = int(starts[k0])
        idx = np.flatnonzero(self.need.take(L[first:])) + first
        ri = np.searchsorted(starts, idx, side="right") - 1  # each cell's row
        ndc = nd.take(ri)
        # where the cell's r="…" ends if its number is as long as its row's: the opening
        # found there (it begins with that quote) proves it; the digits themselves do not
        # matter, openpyxl places a cell by its column and its row's number only
        fq = C[idx] + 7 + ndc
        v32 = np.ndarray((n + 32,), dtype="S32", buffer=chunk, offset=0, strides=(1,))
        Q = v32[fq].view("<u8").reshape(-1, 4)
        fr = self.frames.match(Q)
        loose: dict[int, tuple] = {}
        for _ in range(8):  # learn the unknown openings from a few cells, then look again
            unknown = np.flatnonzero(fr < 0)
            if not len(unknown):
                break
            learnt = False
            for i in unknown[:4].tolist():
                m = _FRAME.match(chunk, int(fq[i]))
                if m is None:
                    raise _Reject
                frame, style, t, content = self._frame(m)
                if 16 <= len(frame) <= 32 and frame not in self.known:
                    if len(self.known) >= 64:
                        raise _Reject
                    self.known.add(frame)
                    self.frames.add(frame, style, t, content)
                    learnt = True
            if not learnt:
                break
            self.frames.index(self.book.date_styles)
            fr = self.frames.match(Q)
        tabled = fr >= 0
        fi = np.maximum(fr, 0)
        flen = self.frames.length.take(fi)
        content = self.frames.is_content.take(fi)
        if not tabled.all():
            for i in np.flatnonzero(~tabled).tolist():  # openings too short or long to table
                m = _FRAME.match(chunk, int(fq[i]))
                if m is None:
                    raise _Reject
                loose[i] = self._frame(m)
                flen[i], content[i] = len(loose[i][0]), loose[i][3]
        isis = is_is.take(idx)
        if not (content == isis).all():
            raise _Reject  # <v> opened, </t></is> closed (or the reverse)
        ts = fq + flen
        te = end.take(idx) - np.where(isis, 13, 8)
        length = te - ts
        if (length < 0).any():
            raise _Reject
        plain = tabled & (length <= _WMAX)
        if amp:
            plain &= self._without(a[:n] == 38, ts, te)
        if cr:
            plain &= self._without(a[:n] == 13, ts, te)
        # the kind each opening gives its value (`_Frames.kinds`); one in Python otherwise
        kind = np.where(length == 0, self.frames.kind0.take(fi), self.frames.kind1.take(fi))
        kind[~plain & (kind != EMPTY) | ~tabled] = VALUE
        W = max(int(length.max(initial=0, where=plain)), 1)
        view = np.ndarray((n + 64 - W,), dtype=f"S{W}", buffer=a, offset=0, strides=(1,))
        raw = view[ts]
        M = raw.view(np.uint8).reshape(-1, W)
        M *= np.arange(W)[None, :] < np.where(plain, length, 0)[:, None]
        lab = self.label_of.take(L.take(idx))
        local = ri - k0
        K = np.full((len(self.labels), nrows), EMPTY, dtype=np.int8)
        K[lab, local] = kind
        R = np.zeros((len(self.labels), nrows), dtype=f"S{W}")
        R[lab, local] = raw
        values: dict[int, dict] = {}
        for i in np.flatnonzero(kind == VALUE).tolist():
            values.setdefault(int(lab[i]), {})[self.n_rows + int(local[i])] = \
                self._value(chunk, i, int(ts[i]), int(te[i]), fi, loose, isis)
        self.out_rows.append(nums[k0:])
        self.out_kind.append(K)
        self.out_raw.append(R)
        self.out_values.append(values)
        self.n_rows += nrows

    @staticmethod
    def _frame(m: re.Match) -> tuple[bytes, int, str, bool]:
        style = int(m.group(1)) if m.group(1) is not None else 0
        t = m.group(2).decode("ascii") if m.group(2) is not None else "n"
        return bytes(m.group(0)), style, t, m.group(3) != b"<v>"

    @staticmethod
    def _without(hits: np.ndarray, ts: np.ndarray, te: np.ndarray) -> np.ndarray:
        at = np.flatnonzero(hits)
        return np.searchsorted(at, ts) == np.searchsorted(at, te)

    def _value(self, chunk, i, ts, te, fi, loose, isis):
        if i in loose:
            _f, style, t, _ic = loose[i]
        else:
            _f, style, _c, t, _ic = self.frames.items[int(fi[i])]
        try:
            text = _xml_text(chunk[ts:te])
            if isis[i]:
                return _cell_value(self.book, t, style, None, text)
            return _cell_value(self.book, t, style, text, None)
        except _Reject:
            raise
        except Exception as e:  # noqa: BLE001 - openpyxl would raise it iterating rows
            raise _IterationError(_load_error_name(e)) from e

    def _table(self) -> Table | None:
        if self.header_row is None:
            return None
        if len(_FRAMES_SEEN) >= 64:
            _FRAMES_SEEN.clear()
        _FRAMES_SEEN[tuple(self.labels)] = tuple(x[:2] + x[3:] for x in self.frames.items)
        if not self.out_kind:
            empty = Column(np.zeros(0, dtype=np.int8), np.zeros(0, dtype="S1"), {})
            return Table(self.sheet.title, np.zeros(0, dtype=np.int64),
                         {label: empty for label in self.labels})
        one = len(self.out_kind) == 1
        rows = self.out_rows[0] if one else np.concatenate(self.out_rows)
        kinds = self.out_kind[0] if one else np.concatenate(self.out_kind, axis=1)
        numbers = (kinds == NUMBER).any(axis=1).tolist()
        columns = {}
        for j, label in enumerate(self.labels):
            raw = self.out_raw[0][j] if one else np.concatenate([r[j] for r in self.out_raw])
            width = max(int(np.char.str_len(raw).max(initial=0)), 1)  # its longest value's
            if raw.dtype.itemsize != width:
                raw = raw.astype(f"S{width}")
            values = {}
            for part in self.out_values:
                values.update(part.get(j, {}))
            columns[label] = Column(kinds[j], raw, values)
            if numbers[j]:
                _check_numbers(columns[label])
        return Table(self.sheet.title, rows, columns)


# the cell openings of the last table read with each header: the next such table is
# likely to use the same (each is still compared with the bytes of every cell)
_FRAMES_SEEN: dict[tuple, tuple] = {}


def distinct(raw: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
    """Codes into the distinct values of a bytes array, and those values (as bytes): a
    column of few distinct numbers is read once per value."""
    import pandas as pd
    if len(raw) < 256:
        seen: dict[bytes, int] = {}
        codes = np.array([seen.setdefault(x, len(seen)) for x in raw.tolist()], dtype=np.intp)
        return codes, list(seen)
    w = raw.dtype.itemsize
    if w <= 8 and len(raw):
        key = (raw if w == 8 else raw.astype("S8")).view("<u8")
        codes, uniques = pd.factorize(key)
        # (an S8 array's items drop trailing NULs, as the column's own do)
        return codes, np.asarray(uniques, dtype="<u8").view("S8").tolist()
    codes, uniques = pd.factorize(raw.astype(object))
    return codes, [bytes(u) for u in uniques.tolist()]


def _check_numbers(column: Column) -> None:
    """openpyxl reads each NUMBER cell's text with int() or float(): one it cannot is the
    error it would raise."""
    codes, uniques = column.distinct()
    used = np.zeros(len(uniques) + 1, dtype=bool)
    used[codes[column.kind == NUMBER]] = True
    for u, is_used in zip(uniques, used.tolist()):
        if is_used and not _number_text(u):
            raise _IterationError("ValueError")


@lru_cache(maxsize=4096)
def _number_text(u: bytes) -> bool:
    """Whether openpyxl's int() or float() reads this text (amounts recur: asked once)."""
    try:
        _cast_number(u.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return False
    return True
