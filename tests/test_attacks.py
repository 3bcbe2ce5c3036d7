"""Crafted attacks on `sib claim`, each a test (issue: hardening, item 2).

Each attack is built next to its assertion and run through the real command on a copy of
the small fuzzing workspace (tests/test_fuzz.py: a contract, claim 2022-Q1 issued, the
evidence for 2022-Q2). Each must end in exit 1 with one located problem or one `sib:`
line — no traceback, no hang, not one byte written inside or outside the workspace — and
most then show that the workspace, once the attack is removed, claims correctly.

- XML entity expansion ("billion laughs") and external entities in every part of an .xlsx
  that is parsed;
- zip bombs: a sheet compressed a thousand to one, a central directory that lies about the
  unpacked size, and many parts whose sizes add up past the limit;
- workbooks whose few bytes declare a sheet of 10**12 rows, cells in the last column of
  every row, or rows out of order (before this work the first two hung sib for hours and
  the third silently dropped rows);
- a YAML alias bomb in the contract;
- symbolic links in the workspace pointing outside it, and evidence that is a device or
  a pipe;
- contract ids and periods that try path traversal.

Nothing here is timed; bench/fuzz_timing.py measures these attacks by hand.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from sib.audit import audit
from sib.cli import cli
from test_fuzz import CID, M_ROWS, PERIOD, base_workspace, check_result, snapshot

# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A copy of the fuzzing workspace, with a folder `outside` next to it (not in it)."""
    shutil.copytree(base_workspace(), tmp_path / "ws")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("do not touch\n")
    return tmp_path / "ws"


def everything(tmp_path: Path) -> dict[str, bytes]:
    """Every file under tmp_path (the workspace and what lies outside it), but locks."""
    return snapshot(tmp_path)


def claim(ws: Path, *args: str, period: str = PERIOD):
    result = CliRunner().invoke(cli, ["claim", "--period", period, "-w", str(ws), *args])
    assert "Traceback" not in result.output and "internal error" not in result.output
    return result


def refused(ws: Path, *args: str, period: str = PERIOD) -> list[str]:
    """Run the claim, which must be refused without writing anything anywhere; the codes."""
    before = everything(ws.parent)
    result = CliRunner().invoke(cli, ["claim", "--period", period, "-w", str(ws), *args])
    outcome = check_result(result, ws, before_ws(before, ws), claimed=True)
    assert outcome.exit_code == 1, result.output
    assert everything(ws.parent) == before
    assert len(result.stderr) < 5_000  # the hostile content is not echoed
    return outcome.codes or [result.stderr]


def before_ws(before_all: dict[str, bytes], ws: Path) -> dict[str, bytes]:
    prefix = ws.name + "/"
    return {k[len(prefix):]: v for k, v in before_all.items() if k.startswith(prefix)}


def claims_cleanly_once_fixed(ws: Path) -> None:
    """The attack removed: the default evidence back in place, the claim goes through."""
    folder = ws / "evidence" / CID
    for p in folder.iterdir():
        if p.is_symlink() or p.is_file():
            p.unlink()
    shutil.copytree(base_workspace() / "evidence" / CID, folder, dirs_exist_ok=True)
    result = claim(ws)
    assert result.exit_code == 0, result.output
    assert not audit(ws, CID).findings


def workbook_parts(rows=M_ROWS) -> dict[str, bytes]:
    """The parts of an ordinary .xlsx of the milestones, as openpyxl writes them."""
    wb = openpyxl.Workbook()
    for r in rows:
        wb.active.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    with zipfile.ZipFile(buf) as z:
        return {n: z.read(n) for n in z.namelist()}


def zip_parts(parts: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return buf.getvalue()


def put_milestones(ws: Path, data: bytes, name: str = "milestones.xlsx") -> None:
    folder = ws / "evidence" / CID
    (folder / "milestones.csv").unlink()
    (folder / name).write_bytes(data)


# --- XML entities in a workbook ----------------------------------------------------------------

LAUGHS = (b'<!DOCTYPE lolz [<!ENTITY lol0 "lol">'
          + b"".join(b'<!ENTITY lol%d "%s">' % (i, b"".join(b"&lol%d;" % (i - 1)
                                                             for _ in range(10)))
                     for i in range(1, 10))
          + b"]>")


def with_doctype(xml: bytes, doctype: bytes, reference: bytes) -> bytes:
    """`xml` with a DOCTYPE after its declaration and `reference` in its first text or
    attribute value, so that a parser that expands entities would expand it."""
    decl = re.match(rb"<\?xml[^>]*\?>", xml)
    head, rest = (xml[: decl.end()], xml[decl.end():]) if decl else (b"", xml)
    rest = re.sub(rb'="([^"]*)"', lambda m: b'="' + reference + m.group(1) + b'"', rest, count=1)
    return head + doctype + rest


def test_the_laughs_really_are_a_bomb() -> None:
    """Guards the tests below: ten levels of ten references, 10**9 'lol's when expanded."""
    text = LAUGHS.decode()
    assert text.count("<!ENTITY") == 10
    assert all(text.count(f"&lol{i};") == 10 for i in range(9))


PARSED_PARTS = ["xl/worksheets/sheet1.xml", "xl/workbook.xml", "xl/styles.xml",
                "[Content_Types].xml", "xl/_rels/workbook.xml.rels", "docProps/core.xml",
                "xl/sharedStrings.xml"]


@pytest.mark.parametrize("part", PARSED_PARTS)
def test_xml_entity_expansion_bomb_in_a_workbook(ws: Path, part: str) -> None:
    parts = workbook_parts()
    if part == "xl/sharedStrings.xml":  # openpyxl writes inline strings: add a string table
        parts[part] = (b'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.'
                       b'openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1">'
                       b'<si><t>&lol9;</t></si></sst>')
        parts[part] = with_doctype(parts[part], LAUGHS, b"")
        parts["[Content_Types].xml"] = parts["[Content_Types].xml"].replace(
            b"</Types>", b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
            b'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>')
    else:
        parts[part] = with_doctype(parts[part], LAUGHS, b"&lol9;")
    put_milestones(ws, zip_parts(parts))
    assert refused(ws) == ["bad-workbook"]
    claims_cleanly_once_fixed(ws)


def test_a_bomb_in_a_part_no_reader_opens_is_inert(ws: Path) -> None:
    """The package relationships (_rels/.rels) are never parsed (the workbook is found
    through [Content_Types].xml): a bomb there is never expanded, and the claim is made."""
    parts = workbook_parts()
    parts["_rels/.rels"] = with_doctype(parts["_rels/.rels"], LAUGHS, b"&lol9;")
    put_milestones(ws, zip_parts(parts))
    result = claim(ws)
    assert result.exit_code == 0, result.output
    assert not audit(ws, CID).findings


@pytest.mark.parametrize("part", ["xl/worksheets/sheet1.xml", "xl/workbook.xml"])
def test_external_entity_in_a_workbook_reads_nothing_outside(ws: Path, part: str) -> None:
    secret = ws.parent / "outside" / "secret.txt"
    secret.write_text("SECRET-TOKEN-123\n")
    doctype = b'<!DOCTYPE x [<!ENTITY xxe SYSTEM "file://' + str(secret).encode() + b'">]>'
    parts = workbook_parts()
    parts[part] = with_doctype(parts[part], doctype, b"&xxe;")
    put_milestones(ws, zip_parts(parts))
    before = everything(ws.parent)
    result = claim(ws)
    assert result.exit_code == 1
    assert "[bad-workbook]" in result.stderr
    assert "SECRET-TOKEN" not in result.output
    assert everything(ws.parent) == before


# --- zip bombs ---------------------------------------------------------------------------------

def test_zip_bomb_a_thousand_to_one(ws: Path) -> None:
    """A sheet of 20 MB of one repeated row, packed about a thousand to one."""
    parts = workbook_parts()
    sheet = parts["xl/worksheets/sheet1.xml"]
    body = b"<row><c t=\"inlineStr\"><is><t>x</t></is></c></row>" * 400_000
    parts["xl/worksheets/sheet1.xml"] = sheet.replace(b"</sheetData>", body + b"</sheetData>")
    data = zip_parts(parts)
    assert len(data) * 200 < 20_000_000
    put_milestones(ws, data)
    assert refused(ws) == ["unsafe-workbook"]


def _patch_sizes(data: bytes, name: bytes, size: int) -> bytes:
    """Write `size` as the unpacked size of part `name`, in its local header and in the
    central directory, as a hostile archiver would."""
    out = bytearray(data)
    for sig, off_name, off_size in ((b"PK\x03\x04", 30, 22), (b"PK\x01\x02", 46, 24)):
        for m in re.finditer(re.escape(sig), data):
            start = m.start()
            if data[start + off_name: start + off_name + len(name)] == name:
                out[start + off_size: start + off_size + 4] = struct.pack("<I", size)
    return bytes(out)


def test_zip_bomb_whose_directory_lies_about_the_size(ws: Path) -> None:
    """The sheet unpacks to 64 MB but the archive says 4 kB: the size check passes, so the
    reader itself must not unpack more than the archive admits (it stops, and the check
    sum fails)."""
    parts = workbook_parts()
    sheet = parts["xl/worksheets/sheet1.xml"]
    parts["xl/worksheets/sheet1.xml"] = sheet.replace(
        b"<sheetData>", b"<sheetData><!--" + b" " * 64_000_000 + b"-->")
    data = _patch_sizes(zip_parts(parts), b"xl/worksheets/sheet1.xml", 4096)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.getinfo("xl/worksheets/sheet1.xml").file_size == 4096
    put_milestones(ws, data)
    assert refused(ws) == ["bad-workbook"]


def test_zip_bomb_of_many_parts(ws: Path) -> None:
    """Many small parts (never opened by a reader that trusts the workbook's own list)
    whose unpacked sizes add up past 512 MB: refused before anything is opened."""
    parts = workbook_parts()
    data = zip_parts({**parts, **{f"xl/media/pad{k}.bin": b"x" for k in range(60)}})
    for k in range(60):  # each says it unpacks to 9.9 MB: 594 MB in all
        data = _patch_sizes(data, f"xl/media/pad{k}.bin".encode(), 9_900_000)
    put_milestones(ws, data)
    assert refused(ws) == ["unsafe-workbook"]


# --- sheets whose few bytes declare a huge grid -------------------------------------------------

def sheet_with(rows_xml: bytes) -> bytes:
    parts = workbook_parts()
    sheet = parts["xl/worksheets/sheet1.xml"]
    parts["xl/worksheets/sheet1.xml"] = re.sub(rb"<dimension[^>]*/>", b'<dimension ref="A1"/>',
                                               sheet).replace(b"</sheetData>",
                                                              rows_xml + b"</sheetData>")
    return zip_parts(parts)


def test_a_row_numbered_ten_to_the_twelve(ws: Path) -> None:
    """1 kB that declares row 1,000,000,000,000: before, openpyxl's reader filled in every
    row up to it (hours, and all memory); now it is a damaged sheet."""
    data = sheet_with(b'<row r="1000000000000"><c t="inlineStr"><is><t>M99</t></is></c></row>')
    assert len(data) < 10_000
    put_milestones(ws, data)
    assert refused(ws) == ["bad-workbook"]
    claims_cleanly_once_fixed(ws)


def test_cells_in_the_last_column_of_every_row(ws: Path) -> None:
    """50,000 rows, each holding one cell in column XFD (16,384): before, each row was padded
    to 16,384 cells (800 million in all); now only the cells there are read, and the rows
    are blank in the header's columns, so they are skipped."""
    rows = b"".join(b'<row r="%d"><c r="XFD%d"><v>1</v></c></row>' % (n, n)
                    for n in range(100, 50_100))
    put_milestones(ws, sheet_with(rows))
    result = claim(ws)
    assert result.exit_code == 0, result.output
    assert not audit(ws, CID).findings


def test_rows_out_of_order_are_not_dropped(ws: Path) -> None:
    """A row numbered lower than the one before it: openpyxl's reader skips it silently (a
    lost milestone); sib refuses the sheet as damaged instead."""
    data = sheet_with(b'<row r="60"><c r="A60" t="inlineStr"><is><t>M98</t></is></c></row>'
                      b'<row r="50"><c r="A50" t="inlineStr"><is><t>M99</t></is></c></row>')
    put_milestones(ws, data)
    assert refused(ws) == ["bad-workbook"]


# --- YAML alias bomb ---------------------------------------------------------------------------

def test_yaml_alias_bomb_in_the_contract(ws: Path) -> None:
    contract = ws / "contracts" / f"{CID}.yaml"
    bomb = "".join(f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]\n"
                   for i in range(1, 10))
    contract.write_text(contract.read_text() + 'x0: &x0 ["lol","lol","lol","lol","lol","lol",'
                        '"lol","lol","lol"]\n' + bomb)
    assert refused(ws) == ["yaml-alias"]
    result = CliRunner().invoke(cli, ["check", "-w", str(ws)])
    assert result.exit_code == 1 and "contracts/tiny.yaml:" in result.stderr
    assert "[yaml-alias]" in result.stderr


def test_yaml_merge_key_bomb_in_the_contract(ws: Path) -> None:
    contract = ws / "contracts" / f"{CID}.yaml"
    contract.write_text(contract.read_text() + "base: &b {a: 1}\nmore:\n  <<: *b\n")
    assert refused(ws) == ["yaml-alias"]


# --- symbolic links pointing outside the workspace -----------------------------------------------

def test_ledgers_folder_linked_outside(ws: Path) -> None:
    outside = ws.parent / "outside"
    shutil.move(str(ws / "ledgers"), outside / "ledgers")
    (ws / "ledgers").symlink_to(outside / "ledgers")
    assert "symbolic link" in refused(ws)[0]


def test_contract_ledgers_folder_linked_outside(ws: Path) -> None:
    outside = ws.parent / "outside"
    shutil.move(str(ws / "ledgers" / CID), outside / CID)
    (ws / "ledgers" / CID).symlink_to(outside / CID)
    assert "symbolic link" in refused(ws)[0]


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-folder", "dangling"])
def test_period_folder_linked_outside(ws: Path, dangling: bool) -> None:
    """ledgers/tiny/2022-Q2 is a link to a folder outside (or to nothing): the claim must
    not be written through it."""
    target = ws.parent / "outside" / "claim"
    if not dangling:
        target.mkdir()
    (ws / "ledgers" / CID / PERIOD).symlink_to(target)
    [message] = refused(ws)
    assert "cannot write the claim" in message and "nothing was issued" in message
    assert not target.exists() or not any(target.iterdir())
    (ws / "ledgers" / CID / PERIOD).unlink()
    claims_cleanly_once_fixed(ws)


def test_lock_file_linked_outside(ws: Path) -> None:
    """ledgers/tiny/.lock is a link to a file outside: never opened through the link."""
    precious = ws.parent / "outside" / "precious.txt"
    (ws / "ledgers" / CID / ".lock").unlink()
    (ws / "ledgers" / CID / ".lock").symlink_to(precious)
    [message] = refused(ws)
    assert "cannot create the lock file" in message
    assert precious.read_text() == "do not touch\n"


def test_leftover_temporary_folder_linked_outside(ws: Path) -> None:
    """A `.tmp-*` entry (what a killed claim leaves, and what a claim removes) that links
    outside, and a real one holding a link outside: removing them must not follow the links."""
    outside = ws.parent / "outside"
    (outside / "claim-files").mkdir()
    (outside / "claim-files" / "keep.csv").write_text("keep\n")
    root = ws / "ledgers" / CID
    (root / ".tmp-2022-Q2-1").symlink_to(outside, target_is_directory=True)
    (root / ".tmp-2022-Q2-2").mkdir()
    (root / ".tmp-2022-Q2-2" / "inputs").symlink_to(outside / "claim-files")
    before = everything(outside)
    result = claim(ws)
    assert result.exit_code == 0, result.output
    assert everything(outside) == before
    assert not (root / ".tmp-2022-Q2-2").exists()
    assert not audit(ws, CID).findings


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "fifo"])
def test_evidence_that_is_a_device_or_a_pipe(ws: Path, device: str) -> None:
    """A link to /dev/zero would be read for ever, a pipe would block: both refused."""
    target = Path(device)
    if device == "fifo":
        target = ws.parent / "outside" / "pipe"
        os.mkfifo(target)
    (ws / "evidence" / CID / "milestones.csv").unlink()
    (ws / "evidence" / CID / "milestones.csv").symlink_to(target)
    assert refused(ws) == ["not-a-file"]
    assert refused(ws, "--milestones", str(target)) == ["not-a-file"]
    claims_cleanly_once_fixed(ws)


# --- path traversal ----------------------------------------------------------------------------

@pytest.mark.parametrize("cid", ["../outside", "../../etc/passwd", "tiny/../../outside", "/tmp",
                                 "..", "tiny\x00", "tiny\n", "TINY", "tiny/"])
def test_contract_option_cannot_traverse(ws: Path, cid: str) -> None:
    [message] = refused(ws, "--contract", cid)
    assert "is not a contract id" in message


@pytest.mark.parametrize("cid", ["../outside", "..", "a/b", "../ledgers/tiny"])
def test_contract_id_in_the_file_cannot_traverse(ws: Path, cid: str) -> None:
    contract = ws / "contracts" / f"{CID}.yaml"
    contract.write_text(contract.read_text().replace("id: tiny", f"id: '{cid}'"))
    codes = refused(ws)
    assert "bad-slug" in codes


@pytest.mark.parametrize("period", ["../../outside", "2022-Q2/../../../outside", "2022-Q2/x",
                                    "../2022-Q2", "2022-Q2\x00", ".tmp-2022-Q2", "2022-Q2 ",
                                    "２０２２-Q2/..", "2022-Q9", "-1-Q1", "99999-Q1"])
def test_period_cannot_traverse(ws: Path, period: str) -> None:
    before = everything(ws.parent)
    result = CliRunner().invoke(cli, ["claim", "--period", period, "-w", str(ws)])
    outcome = check_result(result, ws, before_ws(before, ws), claimed=True)
    if period.strip() == PERIOD:  # surrounding blanks are trimmed: the real 2022-Q2
        assert outcome.exit_code == 0
        assert (ws / "ledgers" / CID / PERIOD / "manifest.json").is_file()
        return
    assert outcome.exit_code == 1, result.output
    assert result.stderr.startswith("sib: --period:") or "period" in result.stderr
    assert everything(ws.parent) == before


def test_a_zip_directory_asking_for_an_unknown_zip_version_is_refused(ws: Path) -> None:
    """A damaged central directory can name a zip version Python cannot extract (zipfile
    raises NotImplementedError while listing it): a located bad-workbook, not an internal
    error (found by tests/test_fuzz.py)."""
    raw = bytearray(zip_parts(workbook_parts()))
    at = raw.find(b"PK\x01\x02")  # the first central directory entry
    raw[at + 6:at + 8] = (64).to_bytes(2, "little")  # "version needed to extract": 6.4
    put_milestones(ws, bytes(raw))
    result = claim(ws)
    assert result.exit_code == 1, result.output
    assert "[bad-workbook]" in result.stderr and "zip file version 6.4" in result.stderr
    claims_cleanly_once_fixed(ws)
