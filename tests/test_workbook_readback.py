"""Reading claim workbooks back (sib.xlsx_read behind sib.audit.workbook_differences) gives
exactly the findings the openpyxl read-back gave, for every kind of workbook.

`reference_workbook_differences` below is that read-back as it was (openpyxl's read-only,
data-only mode, cell by cell), kept as the oracle: each test builds a workbook — the ones
sib writes, edited the ways a person or a hostile file would, or resaved by LibreOffice —
and asserts the two give the same list of (row, message), in the same order. Tests that
only the new reader can pass (files openpyxl itself crashes on, zip bombs) assert the
finding instead. Which of xlsx_read's two readers ran is asserted where it matters
(`Tables.fast_sheets`), so a test of the fast reader cannot pass by falling back.
"""

from __future__ import annotations

import io
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pandas as pd

from sib import money

MAX_DIFFS = 3


# --- the oracle: the openpyxl read-back, as sib.audit had it ------------------------------------

def _header_key(v: object) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(v if v is not None else "").strip().lower()).strip("_")


def _pence_of(v: object) -> int | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        d = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
    except InvalidOperation:
        return None
    q = d * 100
    if q != q.to_integral_value():
        return None
    return int(q)


_LINES_SHEET = re.compile(r"^lines( \(\d+\))?$")


def reference_workbook_differences(name: str, raw: bytes, lines: pd.DataFrame) -> list[tuple[int | None, str]]:
    import openpyxl

    statement = name.startswith("statements/")
    want = lines[lines["funder"] == Path(name).stem] if statement else lines
    by_id = {lid: i for i, lid in enumerate(want["line_id"].tolist())}
    ledger = {k: want[k].tolist() for k in ("price", "amount", "capped", "funder",
                                           "milestone_id", "kind")}
    try:
        wb = openpyxl.load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
    except Exception as e:  # noqa: BLE001
        return [(None, f"cannot be read as a workbook ({type(e).__name__}); it should be the "
                       "one sib wrote")]
    out: list[tuple[int | None, str]] = []
    on_lines: set[str] = set()
    lines_sheets = []
    try:
        for ws in wb.worksheets:
            rows = ws.iter_rows(values_only=True)
            header, start = None, 0
            for r, values in enumerate(rows, start=1):
                keys = [_header_key(v) for v in values]
                if "line_id" in keys and "amount" in keys:
                    header, start = keys, r
                    break
                if r >= 20:
                    break
            if header is None:
                continue
            is_lines = bool(_LINES_SHEET.match(ws.title.strip().lower()))
            if is_lines:
                lines_sheets.append(ws.title)
            col = {k: i for i, k in reversed(list(enumerate(header))) if k}
            for r, values in enumerate(rows, start=start + 1):
                cell = lambda k: values[col[k]] if k in col and col[k] < len(values) else None  # noqa: E731
                lid = cell("line_id")
                if lid is None or str(lid).strip() == "":
                    continue
                lid = str(lid).strip()
                where = f"sheet {ws.title} row {r}"
                if lid not in by_id:
                    out.append((r, f"{where}: {lid} is not a ledger line of this "
                                   f"{'funder' if statement else 'claim'}"))
                    continue
                if is_lines:
                    on_lines.add(lid)
                j = by_id[lid]
                line = {k: v[j] for k, v in ledger.items()}
                for k in ("price", "amount", "capped"):
                    if k in col and _pence_of(cell(k)) != int(line[k]):
                        out.append((r, f"{where}: {k} of {lid} is {cell(k)!r}, the ledger's is "
                                       f"{money.fmt_amount(int(line[k]))}"))
                for k in ("funder", "milestone_id", "kind"):
                    if k in col and str(cell(k)) != str(line[k]):
                        out.append((r, f"{where}: {k} of {lid} is {cell(k)!r}, the ledger's is "
                                       f"{line[k]!r}"))
    finally:
        wb.close()
    if not lines_sheets:
        return out + [(None, "no Lines sheet (a sheet named Lines with a header row naming "
                             "line_id and amount) to check the figures against")]
    missing = [x for x in want["line_id"] if x not in on_lines]
    where = ", ".join(lines_sheets)
    for lid in missing[:MAX_DIFFS]:
        out.append((None, f"ledger line {lid} is not on the sheet(s) {where}"))
    if len(missing) > MAX_DIFFS:
        out.append((None, f"and {len(missing) - MAX_DIFFS} more ledger lines are not on "
                          f"the sheet(s) {where}"))
    return out


# --- workbooks to read ---------------------------------------------------------------------------

import shutil  # noqa: E402
import subprocess  # noqa: E402
import zipfile  # noqa: E402

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sib import xlsx_read  # noqa: E402
from sib.audit import _header_columns, workbook_differences  # noqa: E402
from sib.ledger import parse_ledger  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLAIMS = ROOT / "ledgers" / "west-london-ips"
LINES_XML = "xl/worksheets/sheet4.xml"  # claim.xlsx's Lines sheet, as sib.workbook lays it out


def claim_lines(period: str) -> pd.DataFrame:
    lines, problems = parse_ledger((CLAIMS / period / "ledger.csv").read_text("utf-8"), "x")
    assert not problems
    return lines


def books(period: str) -> list[tuple[str, bytes]]:
    folder = CLAIMS / period
    return [("claim.xlsx", (folder / "claim.xlsx").read_bytes())] + [
        (f"statements/{p.name}", p.read_bytes())
        for p in sorted((folder / "statements").glob("*.xlsx"))]


def same(name: str, raw: bytes, lines: pd.DataFrame) -> list:
    """The findings of the read-back, asserted equal to the openpyxl read-back's."""
    got = workbook_differences(name, raw, lines)
    assert got == reference_workbook_differences(name, raw, lines)
    return got


def rezip(raw: bytes, edits: dict) -> bytes:
    """The workbook with some parts changed: {name: new bytes | function of the old | None
    (left out)}; a name not in it is added."""
    src = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename in edits:
                e = edits[info.filename]
                if e is None:
                    continue
                data = e(data) if callable(e) else e
            z.writestr(info.filename, data)
        for name, e in edits.items():
            if name not in src.namelist() and e is not None:
                z.writestr(name, e if not callable(e) else e(b""))
    return out.getvalue()


def in_lines(fn) -> dict:
    """An edit of claim.xlsx's Lines sheet, by a function of its XML text."""
    return {LINES_XML: lambda b: fn(b.decode("utf-8")).encode("utf-8")}


def cell(xml: str, ref: str, new: str) -> str:
    """The sheet XML with cell `ref` (e.g. N3) replaced by `new` (its whole XML)."""
    out, n = re.subn(rf'<c r="{ref}"[^>]*?(?:/>|>.*?</c>)', lambda m: new, xml, count=1)
    assert n == 1, ref
    return out


def row(xml: str, r: int) -> str:
    m = re.search(rf'<row r="{r}"[^>]*>.*?</row>', xml)
    assert m, r
    return m.group(0)


def value(xml: str, ref: str) -> str:
    return re.search(rf'<c r="{ref}"[^>]*><v>([^<]*)</v>', xml).group(1)


@pytest.fixture(scope="module")
def q4() -> tuple[pd.DataFrame, bytes]:
    """2019-Q4 of the shipped example: its lines and its claim workbook as issued."""
    return claim_lines("2019-Q4"), (CLAIMS / "2019-Q4" / "claim.xlsx").read_bytes()


# --- as issued -----------------------------------------------------------------------------------

@pytest.mark.parametrize("period", ["2019-Q1", "2019-Q4", "2021-Q4"])
def test_issued_workbooks_read_back_like_openpyxl_and_fast(period: str) -> None:
    """Every workbook sib issued reads back with no finding, as openpyxl read it, and the
    tables (Lines, Corrections) through the fast reader."""
    lines = claim_lines(period)
    for name, raw in books(period):
        assert same(name, raw, lines) == [], name
        found = xlsx_read.read_tables(raw, _header_columns)
        assert found.unreadable is None and found.tables
        assert found.fast_sheets >= len(found.tables), name


def test_values_are_openpyxls(q4) -> None:
    """The reader's values of every asked-for column are openpyxl's, row by row, through
    both readers (and through the fast one a few kilobytes at a time)."""
    import openpyxl
    _, raw = q4
    ws = openpyxl.load_workbook(io.BytesIO(raw), read_only=True, data_only=True)["Lines"]
    rows = list(ws.iter_rows(values_only=True))
    cols = _header_columns(rows[0])
    for mode in ("fast", "small chunks", "general"):
        with pytest.MonkeyPatch.context() as mp:
            if mode == "small chunks":
                mp.setattr(xlsx_read, "CHUNK", 3000)
            if mode == "general":
                mp.setattr(xlsx_read._Fast, "_run", _never)
            table = xlsx_read.read_tables(raw, _header_columns).tables[0]
        assert table.title == "Lines" and list(table.rows) == list(range(2, len(rows) + 1))
        for label, c in cols.items():
            got = [table.columns[label].value(i) for i in range(len(table.rows))]
            want = [r[c] if c < len(r) else None for r in rows[1:]]
            assert got == want and [type(x) for x in got] == [type(x) for x in want], label


def _never(*_args):
    raise xlsx_read._Reject


# --- edited ---------------------------------------------------------------------------------------

EDITS = {
    "an amount changed": lambda x: cell(x, "N3", '<c r="N3" s="5" t="n"><v>-172.07</v></c>'),
    "a price in pounds and pence": lambda x: cell(x, "K3", '<c r="K3" s="5" t="n"><v>650.00</v></c>'),
    "an amount made text": lambda x: cell(
        x, "N3", '<c r="N3" s="3" t="inlineStr"><is><t>-172.06</t></is></c>'),
    "an amount with three decimals": lambda x: cell(x, "N3", '<c r="N3" s="5" t="n"><v>-172.061</v></c>'),
    "an amount as an exponent": lambda x: cell(x, "N3", '<c r="N3" s="5" t="n"><v>-1.7206e2</v></c>'),
    "an amount a bool": lambda x: cell(x, "N3", '<c r="N3" s="7" t="b"><v>1</v></c>'),
    "an amount styled as a date": lambda x: cell(x, "N3", '<c r="N3" s="4" t="n"><v>43600</v></c>'),
    "an amount a str": lambda x: cell(x, "N3", '<c r="N3" s="5" t="str"><v>-172.06</v></c>'),
    "an amount gone": lambda x: cell(x, "N3", ""),
    "a capped of 0.0": lambda x: cell(x, "O3", '<c r="O3" s="5" t="n"><v>0.0</v></c>'),
    "a funder changed": lambda x: cell(
        x, "L3", '<c r="L3" s="3" t="inlineStr"><is><t>brent</t></is></c>'),
    "a funder with an entity": lambda x: cell(
        x, "L3", '<c r="L3" s="3" t="inlineStr"><is><t>har&amp;row</t></is></c>'),
    "a kind with line ends": lambda x: cell(
        x, "C3", '<c r="C3" s="3" t="inlineStr"><is><t>rever\r\nsal</t></is></c>'),
    "a milestone as a number": lambda x: cell(x, "D3", '<c r="D3" s="8" t="n"><v>5</v></c>'),
    "a line id with spaces": lambda x: cell(
        x, "A3", '<c r="A3" s="3" t="inlineStr"><is><t xml:space="preserve"> 2019-Q4-00002 </t></is></c>'),
    "a line id not of the claim": lambda x: cell(
        x, "A3", '<c r="A3" s="3" t="inlineStr"><is><t>2019-Q4-99999</t></is></c>'),
    "a line id empty": lambda x: cell(x, "A3", '<c r="A3" s="3" t="inlineStr"><is><t></t></is></c>'),
    "a line id gone": lambda x: cell(x, "A3", ""),
    "a line id as a number": lambda x: cell(x, "A3", '<c r="A3" s="8" t="n"><v>7</v></c>'),
    "a line id in rich text": lambda x: cell(
        x, "A3", '<c r="A3" s="3" t="inlineStr"><is><r><t>2019-Q4</t></r><r><t>-00002</t></r></is></c>'),
    "a line id by character references": lambda x: cell(
        x, "A3", '<c r="A3" s="3" t="inlineStr"><is><t>2019-Q4-0000&#50;</t></is></c>'),
    "a row deleted": lambda x: x.replace(row(x, 5), ""),
    "a row twice": lambda x: x.replace(row(x, 5), row(x, 5) + row(x, 5).replace('"5"', '"9999"', 1)),
    "rows out of order": lambda x: x.replace(row(x, 4), row(x, 4).replace('<row r="4"', '<row r="2"', 1)),
    "a cell out of order": lambda x: x.replace(
        row(x, 3), row(x, 3).replace('</row>', '<c r="B3" s="3" t="inlineStr"><is><t>x</t></is></c></row>')),
    "a cell past Z": lambda x: x.replace(
        row(x, 3), row(x, 3).replace('</row>', '<c r="AB3" s="5" t="n"><v>1</v></c></row>')),
    "a cell without r": lambda x: cell(x, "N3", '<c s="5" t="n"><v>-172.06</v></c>'),
    "a formula": lambda x: cell(x, "N3", '<c r="N3" s="5"><f>1+1</f><v>-172.06</v></c>'),
    "a comment": lambda x: x.replace(row(x, 3), "<!-- a note -->" + row(x, 3)),
    "a dimension": lambda x: x.replace("<sheetData>", '<dimension ref="A1:T6"/><sheetData>'),
    "row heights": lambda x: x.replace('<row r="3">', '<row r="3" ht="30" customHeight="1">'),
    "a second header row": lambda x: x.replace(row(x, 1), row(x, 1) + row(x, 1).replace(
        '"1"', '"2"').replace('1"', '2"').replace('line_id', 'Line ID'), 1),
    "no row numbers": lambda x: re.sub(r'<row r="\d+">', "<row>", x),
    "a namespace prefix": lambda x: x.replace("<worksheet ", '<worksheet xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main" ').replace(
        row(x, 3), row(x, 3).replace("<c ", "<x:c ").replace("</c>", "</x:c>")),
    "the header renamed": lambda x: x.replace("<t>amount</t>", "<t>Amount (£)</t>", 1),
    "the header lost": lambda x: x.replace("<t>line_id</t>", "<t>line</t>", 1),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edited_lines_sheet_reads_back_like_openpyxl(q4, edit: str) -> None:
    lines, raw = q4
    edited = rezip(raw, in_lines(EDITS[edit]))
    found = same("claim.xlsx", edited, lines)
    assert bool(found) == (edit not in UNCHANGED), edit


# edits after which openpyxl still reads the ledger's values
UNCHANGED = {"a price in pounds and pence", "an amount as an exponent", "a capped of 0.0",
             "row heights", "a line id with spaces", "no row numbers", "a comment", "a formula",
             "a cell past Z", "a line id in rich text", "a line id by character references",
             "a namespace prefix", "a cell without r", "the header renamed"}


def test_edits_in_many_small_chunks_read_back_alike(q4, monkeypatch) -> None:
    """The fast reader a few kilobytes at a time (rows carried across chunks) finds what
    openpyxl finds, edits anywhere in the sheet."""
    monkeypatch.setattr(xlsx_read, "CHUNK", 2048)
    lines, raw = q4
    for edit in ("an amount changed", "a funder with an entity", "a row deleted", "row heights"):
        same("claim.xlsx", rezip(raw, in_lines(EDITS[edit])), lines)
    xml = zipfile.ZipFile(io.BytesIO(raw)).read(LINES_XML).decode()
    last = max(int(r) for r in re.findall(r'<row r="(\d+)"', xml))
    late = rezip(raw, in_lines(lambda x: cell(
        x, f"N{last}", f'<c r="N{last}" s="5" t="n"><v>1.01</v></c>')))
    assert same("claim.xlsx", late, lines)


def test_the_general_reader_finds_the_same(q4, monkeypatch) -> None:
    """With the fast reader refusing every sheet, the general one gives the same findings."""
    monkeypatch.setattr(xlsx_read._Fast, "_run", _never)
    lines, raw = q4
    for edit in ("an amount changed", "an amount with three decimals", "a line id empty",
                 "a row twice", "a dimension"):
        same("claim.xlsx", rezip(raw, in_lines(EDITS[edit])), lines)
    assert same("claim.xlsx", raw, lines) == []


def test_statements_with_the_wrong_lines(q4) -> None:
    """A statement holding another funder's lines, and one missing lines."""
    lines, _ = q4
    folder = CLAIMS / "2019-Q4" / "statements"
    dcms = (folder / "dcms.xlsx").read_bytes()
    assert same("statements/brent.xlsx", dcms, lines)
    path = next(p for p in zipfile.ZipFile(io.BytesIO(dcms)).namelist()
                if p.startswith("xl/worksheets/sheet2"))
    cut = rezip(dcms, {path: lambda b: re.sub(rb'<row r="3">.*?</row>', b"", b, count=1)})
    assert same("statements/dcms.xlsx", cut, lines)


@pytest.mark.parametrize("what", ["renamed Lines (2)", "renamed Lines x", "no Lines sheet",
                                  "its part missing", "two Lines sheets"])
def test_sheets_renamed_or_missing(q4, what: str) -> None:
    lines, raw = q4
    wb = zipfile.ZipFile(io.BytesIO(raw)).read("xl/workbook.xml").decode()
    edits = {
        "renamed Lines (2)": {"xl/workbook.xml": wb.replace('name="Lines"', 'name="Lines (2)"').encode()},
        "renamed Lines x": {"xl/workbook.xml": wb.replace('name="Lines"', 'name="Lines x"').encode()},
        "no Lines sheet": {"xl/workbook.xml": re.sub(r'<sheet name="Lines"[^>]*/>', "", wb).encode()},
        "its part missing": {LINES_XML: None},
        "two Lines sheets": {"xl/workbook.xml": wb.replace(
            'name="Corrections"', 'name="Lines (2)"').encode()},
    }[what]
    found = same("claim.xlsx", rezip(raw, edits), lines)
    assert bool(found) == (what in ("renamed Lines x", "no Lines sheet", "its part missing"))


def test_resaved_by_openpyxl(q4) -> None:
    """Written again by openpyxl (shared strings, its own styles): the general reader."""
    import openpyxl
    lines, raw = q4
    wb = openpyxl.load_workbook(io.BytesIO(raw))
    wb["Lines"]["N4"].value = 1.5
    wb["Lines"].delete_rows(7)
    wb["Lines"].insert_rows(1)  # the header now on row 2
    out = io.BytesIO()
    wb.save(out)
    assert len(same("claim.xlsx", out.getvalue(), lines)) >= 2


# --- LibreOffice --------------------------------------------------------------------------------

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")
needs_soffice = pytest.mark.skipif(
    SOFFICE is None, reason="LibreOffice is not installed (soffice not on PATH): no workbook to "
    "read back as LibreOffice saves it; install it with `apt-get install libreoffice-calc-nogui`")


def soffice(files: list[Path], out: Path, profile: Path) -> None:
    """Convert to .xlsx with LibreOffice headless (a throwaway profile)."""
    out.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([SOFFICE, f"-env:UserInstallation={profile.as_uri()}", "--headless",
                          "--convert-to", "xlsx", "--outdir", str(out), *map(str, files)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    for f in files:
        assert (out / f.name).is_file(), f"LibreOffice did not convert {f.name}: {run.stdout}"


@needs_soffice
def test_resaved_by_libreoffice(q4, tmp_path: Path) -> None:
    """Saved again by LibreOffice (shared strings, a dimension, formulas for booleans, row
    attributes): the same findings as openpyxl's, with and without an edit."""
    lines, raw = q4
    src = tmp_path / "src"
    src.mkdir()
    (src / "claim.xlsx").write_bytes(raw)
    (src / "edited.xlsx").write_bytes(rezip(raw, in_lines(EDITS["an amount changed"])))
    (src / "dcms.xlsx").write_bytes((CLAIMS / "2019-Q4" / "statements" / "dcms.xlsx").read_bytes())
    soffice(sorted(src.iterdir()), tmp_path / "out", tmp_path / "profile")
    assert same("claim.xlsx", (tmp_path / "out" / "claim.xlsx").read_bytes(), lines) == []
    assert same("claim.xlsx", (tmp_path / "out" / "edited.xlsx").read_bytes(), lines)
    assert same("statements/dcms.xlsx", (tmp_path / "out" / "dcms.xlsx").read_bytes(), lines) == []


# --- random edits ---------------------------------------------------------------------------------

TEXTS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from(
    "&<>\"' \t\n\r"), max_size=12)
NUMBERS = st.one_of(st.decimals(-10**6, 10**6, places=2, allow_nan=False).map(str),
                    st.integers(-10**9, 10**9).map(str), st.floats(-1e6, 1e6).map(repr),
                    st.sampled_from(["1e3", "-0", "0.0", "00012.50", "1.005", "", " 5", "+3"]))


def _esc(t: str) -> str:
    return t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


@st.composite
def cell_xml(draw, ref: str) -> str:
    kind = draw(st.sampled_from(["text", "number", "bool", "str", "empty", "date", "gone"]))
    if kind == "text":
        return f'<c r="{ref}" s="3" t="inlineStr"><is><t>{_esc(draw(TEXTS))}</t></is></c>'
    if kind == "number":
        n = draw(NUMBERS)
        return f'<c r="{ref}" s="5" t="n"><v>{n}</v></c>' if n.strip() else f'<c r="{ref}" s="5"/>'
    if kind == "bool":
        return f'<c r="{ref}" s="7" t="b"><v>{draw(st.sampled_from(["0", "1"]))}</v></c>'
    if kind == "str":
        return f'<c r="{ref}" t="str"><v>{_esc(draw(TEXTS))}</v></c>'
    if kind == "date":
        return f'<c r="{ref}" s="4" t="n"><v>{draw(st.integers(1, 60000))}</v></c>'
    return "" if kind == "gone" else f'<c r="{ref}" s="3" t="inlineStr"><is><t></t></is></c>'


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_random_cell_edits_read_back_like_openpyxl(data) -> None:
    """Cells of the Lines sheet of 2019-Q1 (a small claim) replaced at random — any
    column, text with markup characters, numbers in any notation, other types, cells left
    out — give the findings openpyxl's values give."""
    lines = claim_lines("2019-Q1")
    raw = (CLAIMS / "2019-Q1" / "claim.xlsx").read_bytes()
    xml = zipfile.ZipFile(io.BytesIO(raw)).read(LINES_XML).decode()
    last = max(int(r) for r in re.findall(r'<row r="(\d+)"', xml))
    for _ in range(data.draw(st.integers(1, 3))):
        r = data.draw(st.integers(2, last))
        letter = data.draw(st.sampled_from("ACDKLNOB"))
        ref = f"{letter}{r}"
        new = data.draw(cell_xml(ref))
        if re.search(rf'<c r="{ref}"', xml):
            xml = cell(xml, ref, new)
    same("claim.xlsx", rezip(raw, {LINES_XML: xml.encode()}), lines)


# --- files that are not workbooks -----------------------------------------------------------------

def test_not_a_zip_and_a_truncated_one(q4) -> None:
    lines, raw = q4
    for bad in (b"not a workbook", raw[: len(raw) // 2], b""):
        found = same("claim.xlsx", bad, lines)
        assert found == [(None, "cannot be read as a workbook (BadZipFile); it should be the "
                                "one sib wrote")]


def test_parts_missing(q4) -> None:
    lines, raw = q4
    assert "KeyError" in same("claim.xlsx", rezip(raw, {"xl/workbook.xml": None}), lines)[0][1]
    assert "KeyError" in same("claim.xlsx", rezip(raw, {"[Content_Types].xml": None}), lines)[0][1]
    assert same("claim.xlsx", rezip(raw, {"xl/_rels/workbook.xml.rels": None}), lines)


DOCTYPE = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
           '"&lol;&lol;&lol;&lol;">]>')


@pytest.mark.parametrize("part", ["xl/workbook.xml", LINES_XML, "xl/worksheets/sheet8.xml",
                                  "xl/styles.xml"])
def test_entities_are_refused_like_defusedxml_does(q4, part: str) -> None:
    lines, raw = q4
    bomb = rezip(raw, {part: lambda b: DOCTYPE.encode() + re.sub(rb"^<\?xml[^>]*\?>", b"", b)})
    assert same("claim.xlsx", bomb, lines) == [
        (None, "cannot be read as a workbook (ValueError); it should be the one sib wrote")]


@pytest.mark.parametrize("where", ["in the Lines sheet", "in a sheet with no table",
                                   "in a longer sheet with no table", "in workbook.xml",
                                   "after the rows of a sheet with no table",
                                   "after the rows of a longer sheet with no table"])
def test_xml_that_is_not_well_formed(q4, where: str) -> None:
    """Broken XML where openpyxl's load parses is a ParseError; after </sheetData> of a
    sheet of more than 20 rows without a table openpyxl never looks, nor does the reader.
    (Sheets 8 and 6 are short and long sheets without a table: Provenance, Not paid.)"""
    lines, raw = q4
    broken = {"xl/worksheets/sheet8.xml": lambda b: b.replace(b"</row>", b"</rwo>", 1)}
    edits = {
        "in the Lines sheet": in_lines(lambda x: x.replace("<v>650</v>", "<v>650</v", 1)),
        "in a sheet with no table": broken,
        "in a longer sheet with no table": {"xl/worksheets/sheet6.xml": broken[
            "xl/worksheets/sheet8.xml"]},
        "in workbook.xml": {"xl/workbook.xml": lambda b: b[:-5]},
        "after the rows of a sheet with no table": {"xl/worksheets/sheet8.xml": lambda b: b.replace(
            b"</sheetData>", b"</sheetData><oops>", 1)},
        "after the rows of a longer sheet with no table": {
            "xl/worksheets/sheet6.xml": lambda b: b.replace(b"</sheetData>", b"</sheetData><oops>", 1)},
    }[where]
    edited = rezip(raw, edits)
    if where == "after the rows of a sheet with no table":  # openpyxl reads on past its 15
        found = workbook_differences("claim.xlsx", edited, lines)  # rows and crashes there
        assert found == [(None, "cannot be read as a workbook (ParseError); it should be the "
                                "one sib wrote")]
        return
    found = same("claim.xlsx", edited, lines)
    assert (found == []) == where.startswith("after the rows")


@pytest.mark.parametrize("where", ["late in a sheet with no table", "late in the Lines sheet, "
                                   "after a value openpyxl cannot read"])
def test_broken_xml_further_on_comes_first(q4, monkeypatch, where: str) -> None:
    """openpyxl's load parses every row of every sheet before any value is read: broken XML
    a long way into a sheet with no table, or after a value whose reading would fail, is
    the ParseError it reports (the fast reader, a few kilobytes at a time here, reads on
    to find it)."""
    monkeypatch.setattr(xlsx_read, "CHUNK", 2048)
    lines, raw = q4

    def break_last_row(b: bytes) -> bytes:
        at = b.rindex(b"</row>")
        return b[:at] + b"</rwo>" + b[at + 6:]

    if where.startswith("late in a sheet"):
        edits = {"xl/worksheets/sheet6.xml": break_last_row}
    else:
        edits = {LINES_XML: lambda b: break_last_row(cell(
            b.decode(), "N3", '<c r="N3" s="7" t="b"><v>x</v></c>').encode())}
    assert same("claim.xlsx", rezip(raw, edits), lines) == [
        (None, "cannot be read as a workbook (ParseError); it should be the one sib wrote")]


def test_a_damaged_part(q4) -> None:
    """A part whose bytes no longer match its CRC: zipfile's BadZipFile, as openpyxl's."""
    lines, raw = q4
    small = rezip(raw, {})
    z = zipfile.ZipFile(io.BytesIO(small))
    info = z.getinfo("xl/worksheets/sheet8.xml")
    damaged = bytearray(small)
    damaged[info.header_offset + 30 + len(info.filename) + 40] ^= 0x01
    found = workbook_differences("claim.xlsx", bytes(damaged), lines)
    assert len(found) == 1 and "cannot be read as a workbook" in found[0][1]


def test_zip_bombs_are_refused_unread(q4, monkeypatch) -> None:
    """A part that would inflate absurdly (here 40 MB of one byte, or a size the zip lies
    about) is refused before it is inflated: one finding, no memory spent."""
    lines, raw = q4
    bomb = rezip(raw, {LINES_XML: b"<" * (40 << 20)})
    found = workbook_differences("claim.xlsx", bomb, lines)
    assert len(found) == 1 and "would expand to 41,943,040 bytes" in found[0][1]
    monkeypatch.setattr(xlsx_read, "MAX_MEMBER", 1000)  # as if the sheet said 4 GB
    found = workbook_differences("claim.xlsx", raw, lines)
    assert len(found) == 1 and "cannot be read as a workbook" in found[0][1]
