"""Evidence reading and structural validation (sib/evidence.py).

Each case writes its own tiny files to tmp_path next to the assertion, reads them against
the shipped West London contract (or a tiny contract), and asserts reason codes with their
row and column — never wording. Rows are spreadsheet rows (header = 1, first data row = 2);
columns are 1-based positions in the file.
"""

from __future__ import annotations

import io
import re
import textwrap
import zipfile
from datetime import date, datetime
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from hypothesis import given, settings, strategies as st

from sib.contract import load_contract
from sib.evidence import (NO_DAY, Evidence, Source, day_number, day_text, days_text,
                          evidence_paths, parse_days, parse_numbers, read_evidence,
                          read_table, validate_evidence)

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "contracts" / "west-london-ips.yaml"

P_HEAD = "participant_id,enrolled_on,age,borough,ccg,jcp_district"
#          1              2           3   4       5   6
M_HEAD = ("milestone_id,participant_id,milestone,achieved_on,status,verified_on,"
          "evidence_ref,evidence_type,hours_per_week")
#          1            2              3         4           5      6
#          7            8             9
GOOD_P = [
    "P1,2020-01-06,30,Brent,Brent,West London",
    "P2,2020-02-03,45,Ealing,Ealing,West London",
]
GOOD_M = [
    "M1,P1,engagement,2020-02-01,verified,2020-02-03,LOG-1,appointment-log,",
    "M2,P1,job-start,2020-03-02,pending,,,payslip,",
    "M3,P2,sustainment-13w,2020-06-01,verified,2020-06-05,PAY-3,payslip,20",
]


@pytest.fixture(scope="module")
def lc():
    loaded, problems = load_contract(CONTRACT, "contracts/west-london-ips.yaml")
    assert problems == []
    return loaded


def contract_line(text: str) -> int:
    """The 1-based line of the shipped contract where `text` first appears."""
    for n, line in enumerate(CONTRACT.read_text("utf-8").splitlines(), start=1):
        if text in line:
            return n
    raise AssertionError(text)


def csv_bytes(head: str, rows: list[str], *, bom: bool = False, crlf: bool = False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    text = nl.join([head, *rows]) + nl
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")


def run(tmp_path: Path, lc, *, p: list[str] | bytes | None = None,
        m: list[str] | bytes | None = None, p_name: str = "participants.csv",
        m_name: str = "milestones.csv") -> Evidence:
    """Write both files (the good ones unless given) and read them."""
    paths = {}
    for name, given, head, good in (("p", p, P_HEAD, GOOD_P), ("m", m, M_HEAD, GOOD_M)):
        fname = p_name if name == "p" else m_name
        data = given if isinstance(given, bytes) else csv_bytes(head, good if given is None else given)
        paths[name] = tmp_path / fname
        paths[name].write_bytes(data)
    return read_evidence(tmp_path, lc, paths["p"], paths["m"])


def found(ev: Evidence) -> list[tuple[str, str, int | None, int | None]]:
    return sorted(((p.code, p.path, p.line, p.col) for p in ev.problems),
                  key=lambda t: (t[1], t[2] or 0, t[3] or 0, t[0]))


def only(ev: Evidence, code: str, path: str, row: int | None, col: int | None) -> None:
    """Exactly one problem, with this code and location."""
    assert found(ev) == [(code, path, row, col)], [str(p) for p in ev.problems]


# --- reading: formats, encodings, headers ------------------------------------------------


def test_good_files_are_typed(tmp_path, lc):
    ev = run(tmp_path, lc,
             p=["  P1 , 2020-01-06 ,30, Brent ,Brent,West London",
                "P2,03/02/2020,45,Ealing,Ealing,West London"],
             m=["M1,P1,engagement,2020-02-01,Verified,2020-02-03,LOG-1,appointment-log,",
                "M2,P1,job-start,02/03/2020, PENDING ,,,payslip,",
                "M3,P2,sustainment-13w,2020-06-01,verified,2020-06-05,PAY-3,payslip,20"])
    assert ev.problems == [] and ev.notices == [] and not ev.file_problems
    pf, mf = ev.participants, ev.milestones
    assert list(pf.columns[:3]) == ["participant_id", "enrolled_on", "row"]
    assert pf["participant_id"].tolist() == ["P1", "P2"]          # trimmed
    assert pf["borough"].tolist() == ["Brent", "Ealing"]           # extra column, trimmed
    assert pf["enrolled_on"].dtype == np.int64
    assert pf["enrolled_on"].tolist() == [day_number(date(2020, 1, 6)),
                                         day_number(date(2020, 2, 3))]
    assert pf["row"].tolist() == [2, 3]
    assert list(mf.columns) == ["milestone_id", "participant_id", "milestone", "achieved_on",
                                "status", "verified_on", "evidence_ref", "evidence_type",
                                "hours_per_week", "row"]
    assert mf["status"].tolist() == ["verified", "pending", "verified"]
    assert mf["achieved_on"].dtype == np.int64 and mf["verified_on"].dtype == np.int64
    assert mf["achieved_on"].tolist() == [day_number(date(2020, 2, 1)),
                                         day_number(date(2020, 3, 2)),
                                         day_number(date(2020, 6, 1))]
    assert mf["verified_on"].tolist() == [day_number(date(2020, 2, 3)), NO_DAY,
                                         day_number(date(2020, 6, 5))]
    assert mf["hours_per_week"].tolist() == ["", "", "20"]
    assert mf["row"].tolist() == [2, 3, 4]
    assert len(ev.invalid) == 0 and ev.rows_in == 3
    assert set(ev.sources) == {"participants", "milestones"}


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("crlf", [False, True])
def test_bom_and_line_ends_make_no_difference(tmp_path, lc, bom, crlf):
    ev = run(tmp_path, lc, p=csv_bytes(P_HEAD, GOOD_P, bom=bom, crlf=crlf),
             m=csv_bytes(M_HEAD, GOOD_M, bom=bom, crlf=crlf))
    assert ev.problems == []
    assert ev.participants["participant_id"].tolist() == ["P1", "P2"]
    assert ev.participants["jcp_district"].tolist() == ["West London"] * 2  # no stray \r
    assert ev.milestones["milestone_id"].tolist() == ["M1", "M2", "M3"]
    assert ev.milestones["hours_per_week"].tolist() == ["", "", "20"]


def test_column_names_match_case_insensitively_after_trimming(tmp_path, lc):
    head = " Participant_ID ,ENROLLED_ON, Age,Borough ,CCG,Jcp_District,Key Worker"
    ev = run(tmp_path, lc, p=csv_bytes(head, ["P1,2020-01-06,30,Brent,Brent,West London,Ann",
                                              "P2,2020-02-03,45,Ealing,Ealing,West London,Bo"]))
    assert ev.problems == []
    assert ev.participants["key worker"].tolist() == ["Ann", "Bo"]  # extra column kept


def test_extra_milestone_columns_are_kept(tmp_path, lc):
    ev = run(tmp_path, lc, m=csv_bytes(M_HEAD + ",employer", [r + ",ACME" for r in GOOD_M]))
    assert ev.problems == []
    assert ev.milestones["employer"].tolist() == ["ACME"] * 3


def test_column_order_does_not_matter(tmp_path, lc):
    head = "status,milestone,achieved_on,hours_per_week,evidence_type,evidence_ref,verified_on,participant_id,milestone_id"
    ev = run(tmp_path, lc, m=csv_bytes(head, ["verified,engagement,2020-02-01,,appointment-log,LOG-1,2020-02-03,P1,M1",
                                              "sideways,engagement,2020-02-01,,appointment-log,,,P1,M9"]))
    # the bad status is located at the column where the file has it: 1
    only(ev, "bad-value", "milestones.csv", 3, 1)


def _workbook(path: Path, rows: list[list], *, extra_sheet: bool = True) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "export"
    for r in rows:
        ws.append(r)
    if extra_sheet:
        other = wb.create_sheet("notes")
        other.append(["nothing", "to", "see"])
        other.append(["x", "y", "z"])
    wb.save(path)
    return path


def test_xlsx_with_date_cells_text_dates_and_numbers(tmp_path, lc):
    _workbook(tmp_path / "participants.xlsx", [
        ["Participant_ID", "enrolled_on", "age", "borough", "ccg", "jcp_district"],
        ["P1", date(2020, 1, 6), 30, "Brent", "Brent", "West London"],
        ["P2", datetime(2020, 2, 3, 14, 30), 45.0, " Ealing ", "Ealing", "West London"],
        [1003, "03/02/2020", 61, "Harrow", "Harrow", "West London"],
    ])
    _workbook(tmp_path / "milestones.xlsx", [
        M_HEAD.split(","),
        ["M1", "P1", "engagement", date(2020, 2, 1), "verified", datetime(2020, 2, 3, 9, 0),
         "LOG-1", "appointment-log", None],
        ["M2", "P2", "sustainment-13w", "2020-06-01", "Verified", "05/06/2020", "PAY-3",
         "payslip", 16.5],
        ["M3", 1003, "sustainment-13w", "2020-06-01", "pending", None, None, "payslip", 20],
    ])
    ev = read_evidence(tmp_path, lc, tmp_path / "participants.xlsx",
                       tmp_path / "milestones.xlsx")
    assert ev.problems == []
    pf, mf = ev.participants, ev.milestones
    assert pf["participant_id"].tolist() == ["P1", "P2", "1003"]
    assert pf["enrolled_on"].tolist() == [day_number(date(2020, 1, 6)),
                                         day_number(date(2020, 2, 3)),
                                         day_number(date(2020, 2, 3))]
    assert pf["age"].tolist() == ["30", "45", "61"]      # 45.0 is written as 45
    assert pf["borough"].tolist() == ["Brent", "Ealing", "Harrow"]
    assert mf["achieved_on"].tolist() == [day_number(date(2020, 2, 1)),
                                         day_number(date(2020, 6, 1)),
                                         day_number(date(2020, 6, 1))]
    assert mf["verified_on"].tolist() == [day_number(date(2020, 2, 3)),
                                         day_number(date(2020, 6, 5)), NO_DAY]
    assert mf["hours_per_week"].tolist() == ["", "16.5", "20"]
    assert mf["participant_id"].tolist() == ["P1", "P2", "1003"]
    assert mf["status"].tolist() == ["verified", "verified", "pending"]
    assert mf["row"].tolist() == [2, 3, 4]


def test_xlsx_errors_are_located_at_sheet_rows_and_columns(tmp_path, lc):
    _workbook(tmp_path / "milestones.xlsx", [
        M_HEAD.split(","),
        ["M1", "P1", "engagement", date(2020, 2, 1), "verified", date(2020, 2, 3), "LOG-1",
         "appointment-log", None],
        [None] * 9,                                    # a blank row is still row 3
        ["M2", "P1", "job-start", "2020/03/02", "pending", None, None, "payslip", None],
        ["M3", "P2", "sustainment-13w", "2020-06-01", "verified", "2020-06-05", "PAY-3",
         "payslip", "sixteen"],
    ])
    ev = run(tmp_path, lc, m=(tmp_path / "milestones.xlsx").read_bytes(),
             m_name="milestones.xlsx")
    assert found(ev) == [("bad-date", "milestones.xlsx", 4, 4),
                         ("bad-number", "milestones.xlsx", 5, 9)]
    assert ev.milestones["milestone_id"].tolist() == ["M1"]


def test_xlsx_first_sheet_is_used(tmp_path, lc):
    wb = openpyxl.Workbook()
    wb.active.append(M_HEAD.split(","))
    wb.active.append(GOOD_M[0].split(","))
    second = wb.create_sheet("old")
    second.append(M_HEAD.split(","))
    second.append(GOOD_M[1].split(","))
    buf = io.BytesIO()
    wb.save(buf)
    ev = run(tmp_path, lc, m=buf.getvalue(), m_name="milestones.xlsx")
    assert ev.problems == []
    assert ev.milestones["milestone_id"].tolist() == ["M1"]


def test_xlsx_with_a_wrong_stored_dimension_is_read_whole(tmp_path, lc):
    # some exporters write <dimension ref="A1"/>; read-only openpyxl would then see one cell
    path = _workbook(tmp_path / "m.xlsx", [M_HEAD.split(","), *[r.split(",") for r in GOOD_M]],
                     extra_sheet=False)
    src = zipfile.ZipFile(path)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                data, n = re.subn(rb'<dimension ref="[^"]*" ?/>', b'<dimension ref="A1"/>', data)
                assert n == 1
            z.writestr(info, data)
    ev = run(tmp_path, lc, m=out.getvalue(), m_name="milestones.xlsx")
    assert ev.problems == []
    assert ev.milestones["milestone_id"].tolist() == ["M1", "M2", "M3"]
    assert ev.milestones["hours_per_week"].tolist() == ["", "", "20"]


# --- dates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("2022-03-31", date(2022, 3, 31)),
    ("31/03/2022", date(2022, 3, 31)),
    ("1/4/2022", date(2022, 4, 1)),
    ("2020-02-29", date(2020, 2, 29)),
])
def test_good_dates(tmp_path, lc, text, expected):
    ev = run(tmp_path, lc, m=[f"M1,P1,engagement,{text},pending,,,appointment-log,"])
    assert ev.problems == []
    assert ev.milestones["achieved_on"].tolist() == [day_number(expected)]


@pytest.mark.parametrize("text", ["2022-02-30", "31/13/2022", "29/02/2021", "2022/03/31",
                                  "March 3", "2022-3-31", "31-03-2022", "20220331",
                                  "0001-01-01", "31/12/9999", "44651", "2022-03-31T00:00"])
def test_bad_dates_are_located(tmp_path, lc, text):
    ev = run(tmp_path, lc,
             p=[GOOD_P[0], f"P2,{text},45,Ealing,Ealing,West London"],
             m=[GOOD_M[0], GOOD_M[1], f"M3,P1,engagement,{text},pending,,,appointment-log,"])
    assert found(ev) == [("bad-date", "milestones.csv", 4, 4),
                         ("bad-date", "participants.csv", 3, 2)]
    assert str(next(p for p in ev.problems if p.path == "milestones.csv")).startswith(
        "milestones.csv:4:4: [bad-date]")


def test_bad_verified_on_date(tmp_path, lc):
    ev = run(tmp_path, lc, m=["M1,P1,engagement,2020-02-01,verified,2020-02-31,LOG-1,appointment-log,"])
    only(ev, "bad-date", "milestones.csv", 2, 6)


@settings(max_examples=60, deadline=None)
@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2199, 12, 31)))
def test_every_real_date_parses_in_both_forms(d):
    import pandas as pd
    days, ok = parse_days(pd.Series([d.isoformat(), d.strftime("%d/%m/%Y"), ""], dtype=str))
    assert ok.all()
    assert days.tolist() == [day_number(d), day_number(d), NO_DAY]
    assert day_text(days[0]) == d.isoformat()
    assert days_text(days).tolist() == [d.isoformat(), d.isoformat(), ""]


def test_day_helpers():
    assert day_number(date(1970, 1, 1)) == 0
    assert day_number(date(1969, 12, 31)) == -1
    assert day_text(NO_DAY) == ""
    assert day_text(day_number(date(2022, 3, 31))) == "2022-03-31"
    assert days_text(np.array([], dtype=np.int64)).tolist() == []


def test_parse_numbers():
    import pandas as pd
    values, ok = parse_numbers(pd.Series(["16", "16.5", "", ".5", "-2", "1e3", "16 h", "1,000"]))
    assert ok.tolist() == [True, True, True, True, True, False, False, False]
    assert values[[0, 1, 3, 4]].tolist() == [16.0, 16.5, 0.5, -2.0]
    assert np.isnan(values[[2, 5, 6, 7]]).all()


# --- structural errors, one at a time ------------------------------------------------------


def test_missing_default_files(tmp_path, lc):
    ev = read_evidence(tmp_path, lc)
    assert found(ev) == [
        ("missing-file", "evidence/west-london-ips/milestones.csv", None, None),
        ("missing-file", "evidence/west-london-ips/participants.csv", None, None)]
    assert ev.file_problems and ev.rows_in == 0


def test_default_files_are_found_and_both_formats_is_ambiguous(tmp_path, lc):
    folder = tmp_path / "evidence" / "west-london-ips"
    folder.mkdir(parents=True)
    (folder / "participants.csv").write_bytes(csv_bytes(P_HEAD, GOOD_P))
    (folder / "milestones.csv").write_bytes(csv_bytes(M_HEAD, GOOD_M))
    assert evidence_paths(tmp_path, "west-london-ips") == {
        "participants": folder / "participants.csv", "milestones": folder / "milestones.csv"}
    ev = read_evidence(tmp_path, lc)
    assert ev.problems == [] and len(ev.milestones) == 3
    (folder / "milestones.xlsx").write_bytes(b"whatever")
    assert evidence_paths(tmp_path, "west-london-ips")["milestones"] is None
    ev = read_evidence(tmp_path, lc)
    assert found(ev) == [("ambiguous-file", "evidence/west-london-ips/milestones.csv", None, None)]


def test_missing_given_file_still_checks_the_other(tmp_path, lc):
    (tmp_path / "milestones.csv").write_bytes(csv_bytes(M_HEAD, [
        "M1,P1,engagement,2020-02-30,pending,,,appointment-log,"]))
    ev = read_evidence(tmp_path, lc, tmp_path / "nope.csv", tmp_path / "milestones.csv")
    assert found(ev) == [("bad-date", "milestones.csv", 2, 4),
                         ("missing-file", "nope.csv", None, None)]
    assert ev.file_problems


@pytest.mark.parametrize("table, column", [
    ("p", "participant_id"), ("p", "enrolled_on"),
    ("m", "milestone_id"), ("m", "participant_id"), ("m", "milestone"), ("m", "achieved_on"),
    ("m", "status"), ("m", "verified_on"), ("m", "evidence_ref"),
])
def test_missing_required_column(tmp_path, lc, table, column):
    head, rows = (P_HEAD, GOOD_P) if table == "p" else (M_HEAD, GOOD_M)
    names = head.split(",")
    drop = names.index(column)
    data = csv_bytes(",".join(n for n in names if n != column),
                     [",".join(c for j, c in enumerate(r.split(",")) if j != drop) for r in rows])
    ev = run(tmp_path, lc, **{table: data})
    path = "participants.csv" if table == "p" else "milestones.csv"
    only(ev, "missing-column", path, 1, None)
    assert f"'{column}'" in ev.problems[0].message
    assert ev.file_problems and len(ev.milestones) == 0 and len(ev.invalid) == 0


@pytest.mark.parametrize("table, column, where", [
    ("m", "hours_per_week", "when: {hours_per_week"),
    ("m", "evidence_type", "evidence: [appointment-log"),
    ("p", "age", "age: {min: 16"),
    ("p", "borough", "when: {borough"),
    ("p", "ccg", "route: ccg"),
])
def test_column_used_by_the_contract_is_missing(tmp_path, lc, table, column, where):
    head, rows = (P_HEAD, GOOD_P) if table == "p" else (M_HEAD, GOOD_M)
    names = head.split(",")
    drop = names.index(column)
    data = csv_bytes(",".join(n for n in names if n != column),
                     [",".join(c for j, c in enumerate(r.split(",")) if j != drop) for r in rows])
    ev = run(tmp_path, lc, **{table: data})
    only(ev, "missing-column", "participants.csv" if table == "p" else "milestones.csv", 1, None)
    assert f"contracts/west-london-ips.yaml:{contract_line(where)}" in ev.problems[0].message


def test_optional_columns_may_be_absent_when_the_contract_does_not_use_them(tmp_path):
    (tmp_path / "tiny.yaml").write_text(textwrap.dedent("""\
        format: sib-contract/1
        id: tiny
        name: Tiny
        currency: GBP
        claims: quarter
        term: {service_start: 2020-01-01, enrolment_end: 2020-12-31, outcomes_end: 2020-12-31}
        funders:
          - {id: dcms, name: DCMS, kind: central}
        payers:
          - split: [{funder: dcms, share: 100}]
        outcomes:
          - id: start
            name: Start
            milestone: job-start
            prices: {2020-01-01: 100.00}
        """), "utf-8")
    tiny, problems = load_contract(tmp_path / "tiny.yaml")
    assert problems == []
    (tmp_path / "p.csv").write_bytes(csv_bytes("participant_id,enrolled_on", ["P1,2020-01-06"]))
    (tmp_path / "m.csv").write_bytes(csv_bytes(
        "milestone_id,participant_id,milestone,achieved_on,status,verified_on,evidence_ref",
        ["M1,P1,job-start,2020-02-01,verified,2020-02-02,X1"]))
    ev = read_evidence(tmp_path, tiny, tmp_path / "p.csv", tmp_path / "m.csv")
    assert ev.problems == []
    assert ev.milestones["evidence_type"].tolist() == [""]
    assert ev.milestones["hours_per_week"].tolist() == [""]


def test_latin1_is_bad_encoding_at_its_line(tmp_path, lc):
    text = "\n".join([P_HEAD, GOOD_P[0], "P2,2020-02-03,45,Ealing,Ealing,Hôpital"]) + "\n"
    ev = run(tmp_path, lc, p=text.encode("latin-1"))
    only(ev, "bad-encoding", "participants.csv", 3, None)
    assert ev.file_problems


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_is_bad_encoding(tmp_path, lc, encoding):
    text = "\n".join([P_HEAD, *GOOD_P]) + "\n"
    ev = run(tmp_path, lc, p=text.encode(encoding))
    only(ev, "bad-encoding", "participants.csv", 1, None)


def test_nul_bytes_are_bad_encoding_at_their_line(tmp_path, lc):
    data = csv_bytes(M_HEAD, GOOD_M).replace(b"M3,", b"M\x003,")
    ev = run(tmp_path, lc, m=data)
    only(ev, "bad-encoding", "milestones.csv", 4, None)


@pytest.mark.parametrize("line, col", [
    ("M4,P1,engagement,2020-02-01,pending,,,appointment-log,", None),
    (",P1,engagement,2020-02-01,pending,,,appointment-log,", 1),
    ("M4,,engagement,2020-02-01,pending,,,appointment-log,", 2),
    ("M4,P1,,2020-02-01,pending,,,appointment-log,", 3),
    ("M4,P1,engagement,,pending,,,appointment-log,", 4),
    ("M4,P1,engagement,2020-02-01,  ,,,appointment-log,", 5),
])
def test_blank_required_milestone_value(tmp_path, lc, line, col):
    ev = run(tmp_path, lc, m=GOOD_M + [line])
    if col is None:
        assert ev.problems == []
    else:
        only(ev, "blank-value", "milestones.csv", 5, col)
        assert ev.invalid["row"].tolist() == [5]


@pytest.mark.parametrize("line, col", [(",2020-02-03,45,Ealing,Ealing,West London", 1),
                                       ("P2,,45,Ealing,Ealing,West London", 2)])
def test_blank_required_participant_value(tmp_path, lc, line, col):
    ev = run(tmp_path, lc, p=[GOOD_P[0], line])
    only(ev, "blank-value", "participants.csv", 3, col)


def test_bad_number(tmp_path, lc):
    ev = run(tmp_path, lc,
             p=[GOOD_P[0], "P2,2020-02-03,forty,Ealing,Ealing,West London"],
             m=GOOD_M + ["M4,P1,sustainment-13w,2020-06-01,pending,,,payslip,16 hours"])
    assert found(ev) == [("bad-number", "milestones.csv", 5, 9),
                         ("bad-number", "participants.csv", 3, 3)]


def test_bad_status(tmp_path, lc):
    ev = run(tmp_path, lc, m=GOOD_M + ["M4,P1,engagement,2020-02-01,done,,,appointment-log,"])
    only(ev, "bad-value", "milestones.csv", 5, 5)


def test_verified_without_verified_on_or_evidence_ref(tmp_path, lc):
    ev = run(tmp_path, lc, m=[
        "M1,P1,engagement,2020-02-01,verified,,LOG-1,appointment-log,",
        "M2,P1,job-start,2020-03-02,verified,2020-03-05,,payslip,",
        "M3,P2,job-start,2020-03-02,pending,,,payslip,",          # pending needs neither
        "M4,P2,engagement,2020-03-02,withdrawn,,,appointment-log,",
    ])
    assert found(ev) == [("missing-verification", "milestones.csv", 2, 6),
                         ("missing-verification", "milestones.csv", 3, 7)]
    assert ev.milestones["milestone_id"].tolist() == ["M3", "M4"]


def test_verified_on_before_achieved_on(tmp_path, lc):
    ev = run(tmp_path, lc, m=[
        "M1,P1,engagement,2020-02-01,verified,31/01/2020,LOG-1,appointment-log,",
        "M2,P1,job-start,2020-03-02,verified,2020-03-02,PAY-2,payslip,",   # same day is fine
    ])
    only(ev, "verified-before-achieved", "milestones.csv", 2, 6)


def test_same_milestone_id_with_different_content(tmp_path, lc):
    ev = run(tmp_path, lc, m=GOOD_M + ["M1,P1,engagement,2020-02-01,verified,2020-02-04,LOG-1,appointment-log,"])
    only(ev, "duplicate-id", "milestones.csv", 5, 1)
    assert ev.milestones["milestone_id"].tolist() == ["M2", "M3"]
    assert ev.invalid[["milestone_id", "row"]].values.tolist() == [["M1", 2]]
    assert "rows 2, 5" in ev.invalid["detail"].iat[0]
    assert ev.rows_in == 3


def test_exact_repeat_is_a_notice_counted_once(tmp_path, lc):
    ev = run(tmp_path, lc, m=GOOD_M + [GOOD_M[2], GOOD_M[2]])
    assert ev.problems == []
    assert [(n.code, n.line) for n in ev.notices] == [("repeated-row", 5), ("repeated-row", 6)]
    assert ev.milestones["milestone_id"].tolist() == ["M1", "M2", "M3"]
    assert ev.rows_in == 3


def test_same_participant_twice(tmp_path, lc):
    ev = run(tmp_path, lc,
             p=GOOD_P + ["P3,2020-03-01,50,Brent,Brent,West London",
                         "P1,2020-01-06,30,Brent,Brent,West London"])   # even an exact repeat
    only(ev, "duplicate-id", "participants.csv", 5, 1)
    assert ev.participants["participant_id"].tolist() == ["P2", "P3"]
    # P1's milestones cannot be judged, so they are invalid rows, not silently dropped
    assert ev.invalid["milestone_id"].tolist() == ["M1", "M2"]
    assert all("participants.csv" in d for d in ev.invalid["detail"])
    assert ev.milestones["milestone_id"].tolist() == ["M3"]


# --- everything at once ---------------------------------------------------------------------


def test_every_error_in_one_run(tmp_path, lc):
    ev = run(tmp_path, lc,
             p=["P1,2020-01-06,30,Brent,Brent,West London",
                "P2,2020-02-30,45,Ealing,Ealing,West London",      # 3: bad-date
                "P3,2020-03-01,old,Brent,Brent,West London",       # 4: bad-number
                ",2020-03-01,40,Brent,Brent,West London",          # 5: blank-value
                "P1,2020-01-07,30,Brent,Brent,West London",        # 6: duplicate-id
                "P6,2020-03-01,40,Brent,Brent"],                   # 7: ragged-row
             m=["M1,P9,engagement,2020-02-01,verified,2020-02-03,LOG-1,appointment-log,",
                "M2,P9,job-start,2022/03/02,pending,,,payslip,",                   # 3
                "M3,P9,job-start,2020-03-02,verified,,,payslip,",                   # 4
                "M4,P9,job-start,2020-03-02,maybe,,,payslip,",                      # 5
                ",P9,job-start,2020-03-02,pending,,,payslip,",                      # 6
                "M6,P9,sustainment-13w,2020-06-01,pending,,,payslip,lots",          # 7
                "M7,P9,job-start,2020-03-02,verified,2020-03-01,PAY-7,payslip,",    # 8
                "M1,P9,engagement,2020-02-01,verified,2020-02-09,LOG-1,appointment-log,",  # 9
                "M9,P9,job-start,2020-03-02,pending,,,payslip,,extra",              # 10
                "M10,P9,job-start,2020-03-02,pending,,,payslip,",
                "M10,P9,job-start,2020-03-02,pending,,,payslip,",                   # 12: notice
                "M12,P9,,31/04/2020,pending,,,payslip,"])                           # 13: 2 problems
    assert found(ev) == [
        ("bad-date", "milestones.csv", 3, 4),
        ("missing-verification", "milestones.csv", 4, 6),
        ("missing-verification", "milestones.csv", 4, 7),
        ("bad-value", "milestones.csv", 5, 5),
        ("blank-value", "milestones.csv", 6, 1),
        ("bad-number", "milestones.csv", 7, 9),
        ("verified-before-achieved", "milestones.csv", 8, 6),
        ("duplicate-id", "milestones.csv", 9, 1),
        ("ragged-row", "milestones.csv", 10, None),
        ("blank-value", "milestones.csv", 13, 3),
        ("bad-date", "milestones.csv", 13, 4),
        ("bad-date", "participants.csv", 3, 2),
        ("bad-number", "participants.csv", 4, 3),
        ("blank-value", "participants.csv", 5, 1),
        ("duplicate-id", "participants.csv", 6, 1),
        ("ragged-row", "participants.csv", 7, None),
    ]
    assert [(n.code, n.line) for n in ev.notices] == [("repeated-row", 12)]
    assert len(set(ev.problems)) == len(ev.problems)          # nothing reported twice
    assert not ev.file_problems
    # --skip-invalid: rows in = valid + invalid (+ exact repeat and the second M1 collapsed)
    assert ev.milestones["milestone_id"].tolist() == ["M10"]
    assert ev.invalid["milestone_id"].tolist() == ["M1", "M2", "M3", "M4", "row-6", "M6",
                                                  "M7", "M9", "M12"]
    assert ev.invalid["row"].tolist() == [2, 3, 4, 5, 6, 7, 8, 10, 13]
    assert all(d.startswith(f"row {r} of milestones.csv is invalid: ")
               for r, d in zip(ev.invalid["row"], ev.invalid["detail"]))
    data_rows = 12
    assert ev.rows_in == len(ev.milestones) + len(ev.invalid) == data_rows - 1 - 1


def test_read_problems_are_reported_once(tmp_path, lc):
    # problems found while reading (ragged rows) and while checking must each appear once
    ev = run(tmp_path, lc, m=GOOD_M + ["M4,P1,engagement,2020-02-01,pending,,,appointment-log,,x",
                                       "M5,P1,engagement,2020-02-30,pending,,,appointment-log,"])
    assert found(ev) == [("ragged-row", "milestones.csv", 5, None),
                         ("bad-date", "milestones.csv", 6, 4)]


def test_problems_read_the_way_the_cli_prints_them(tmp_path, lc):
    ev = run(tmp_path, lc, m=GOOD_M + ["M4,P1,engagement,2020-02-01,done,,,appointment-log,"])
    text = str(ev.problems[0])
    assert text.startswith("milestones.csv:5:5: [bad-value] status 'done'")
    assert "verified, pending, withdrawn" in text          # says what is expected


# --- --skip-invalid accounting --------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["good", "bad-date", "blank-id", "repeat", "dup-id", "ragged",
                                 "bad-participant"]), max_size=12))
def test_every_milestone_ends_in_exactly_one_place(tmp_path_factory, lc, kinds):
    tmp = tmp_path_factory.mktemp("prop")
    rows, last = [], None
    for n, kind in enumerate(kinds):
        good = f"M{n},P1,engagement,2020-02-01,pending,,,appointment-log,"
        line = {
            "good": good,
            "bad-date": f"M{n},P1,engagement,2020-13-01,pending,,,appointment-log,",
            "blank-id": ",P1,engagement,2020-02-01,pending,,,appointment-log,",
            "repeat": last or good,
            "dup-id": (f"M{n - 1}" if n else "M0") + ",P1,job-start,2020-02-01,pending,,,payslip,",
            "ragged": f"M{n},P1,engagement,2020-02-01,pending,,,appointment-log",
            "bad-participant": f"M{n},PX,engagement,2020-02-01,pending,,,appointment-log,",
        }[kind]
        rows.append(line)
        last = line
    ev = run(tmp, lc, p=GOOD_P + [",2020-01-01,30,Brent,Brent,West London",
                                   "PX,someday,30,Brent,Brent,West London"], m=rows)
    valid = ev.milestones["milestone_id"].tolist()
    bad = ev.invalid["milestone_id"].tolist()
    assert not set(valid) & set(bad)
    assert len(set(valid)) == len(valid) and len(set(bad)) == len(bad)
    # every non-blank data row is counted once: as valid, invalid, a notice, or a row that
    # shares its milestone_id with an earlier one
    # model: an exact repeat of an earlier well-formed row is dropped; the rest count once
    # per milestone_id, and once per row where the id is blank
    seen, units, repeats = set(), set(), 0
    for i, r in enumerate(rows):
        well_formed = r.count(",") == 8
        if well_formed and r in seen:
            repeats += 1
            continue
        if well_formed:
            seen.add(r)
        units.add(r.split(",")[0] or f"row-{i + 2}")
    assert ev.rows_in == len(valid) + len(bad) == len(units)
    assert set(valid) | set(bad) == units
    assert sum(n.code == "repeated-row" for n in ev.notices) == repeats
    assert not ev.file_problems


def test_ragged_milestone_row_is_invalid_under_its_id(tmp_path, lc):
    ev = run(tmp_path, lc, m=GOOD_M + ["M4,P1,engagement,2020-02-30,pending,,,appointment-log"])
    only(ev, "ragged-row", "milestones.csv", 5, None)     # no bad-date noise from shifted cells
    assert ev.invalid[["milestone_id", "row"]].values.tolist() == [["M4", 5]]
    assert ev.invalid["detail"].iat[0] == ("row 5 of milestones.csv is invalid: it has 8 cells "
                                           "but the header has 9")


def test_invalid_frame_is_empty_and_typed_when_all_is_well(tmp_path, lc):
    ev = run(tmp_path, lc)
    assert list(ev.invalid.columns) == ["milestone_id", "participant_id", "milestone", "row",
                                        "detail"]
    assert len(ev.invalid) == 0 and ev.invalid["row"].dtype == np.int64


def test_a_missing_column_still_lets_every_row_problem_be_reported(tmp_path, lc):
    head = M_HEAD.replace(",evidence_ref", "")
    ev = run(tmp_path, lc,
             p=[GOOD_P[0], "P2,2020-02-30,45,Ealing,Ealing,West London"],
             m=csv_bytes(head, ["M1,P1,engagement,2020-02-01,verified,2020-02-03,appointment-log,",
                                "M2,P1,job-start,2020-03-32,pending,,payslip,"]))
    assert found(ev) == [("missing-column", "milestones.csv", 1, None),
                         ("bad-date", "milestones.csv", 3, 4),
                         ("bad-date", "participants.csv", 3, 2)]
    assert ev.file_problems and ev.rows_in == 0


# --- hostile-ish input: always a located problem, never a traceback ------------------------


@pytest.mark.parametrize("line, cells", [
    ("M4,P1,engagement,2020-02-01,pending,,,appointment-log,,", 10),     # too many
    ("M4,P1,engagement,2020-02-01,pending,,,appointment-log,Big, Ltd", 10),
    ("M4,P1,engagement,2020-02-01,pending", 5),                          # too few
    ("M4", 1),
])
def test_ragged_rows(tmp_path, lc, line, cells):
    ev = run(tmp_path, lc, m=GOOD_M + [line, "M5,P1,engagement,2020-02-30,pending,,,appointment-log,"])
    assert found(ev) == [("ragged-row", "milestones.csv", 5, None),
                         ("bad-date", "milestones.csv", 6, 4)]     # later rows still checked
    assert f"has {cells} cells but the header has 9" in ev.problems[0].message
    assert ev.milestones["milestone_id"].tolist() == ["M1", "M2", "M3"]


def test_duplicated_header_names(tmp_path, lc):
    ev = run(tmp_path, lc, m=csv_bytes(M_HEAD + ",Status", [r + ",x" for r in GOOD_M]))
    only(ev, "duplicate-column", "milestones.csv", 1, 10)
    assert ev.file_problems


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n\n  \r\n"])
def test_empty_file(tmp_path, lc, data):
    ev = run(tmp_path, lc, p=data)
    only(ev, "empty-file", "participants.csv", None, None)
    assert ev.file_problems


def test_empty_workbook(tmp_path, lc):
    buf = io.BytesIO()
    openpyxl.Workbook().save(buf)
    ev = run(tmp_path, lc, m=buf.getvalue(), m_name="milestones.xlsx")
    only(ev, "empty-file", "milestones.xlsx", None, None)


def test_header_only_files_are_valid_with_a_notice(tmp_path, lc):
    # a contract's first period may have no participants yet: that claim must be possible
    ev = run(tmp_path, lc, p=csv_bytes(P_HEAD, []), m=csv_bytes(M_HEAD, [], crlf=True))
    assert ev.problems == [] and not ev.file_problems
    assert [(n.code, n.path) for n in ev.notices] == [("no-rows", "participants.csv"),
                                                      ("no-rows", "milestones.csv")]
    assert ev.rows_in == 0 and len(ev.participants) == 0
    assert ev.milestones["achieved_on"].dtype == np.int64


def test_header_not_in_row_1(tmp_path, lc):
    ev = run(tmp_path, lc, p=b"\n" + csv_bytes(P_HEAD, GOOD_P))
    only(ev, "missing-header", "participants.csv", 1, None)


def test_blank_lines_count_as_rows_and_quoted_line_breaks_do_not(tmp_path, lc):
    ev = run(tmp_path, lc, m=[GOOD_M[0], "", ",,,,,,,,",
                              'M2,P1,job-start,2020-03-02,pending,,,payslip,"16\n"',
                              "M3,P2,engagement,2020-02-30,pending,,,appointment-log,"])
    only(ev, "bad-date", "milestones.csv", 6, 4)
    assert ev.milestones["row"].tolist() == [2, 5]


def test_unreadable_csv_is_located(tmp_path, lc):
    huge = '"' + "x" * 200_000 + '"'
    ev = run(tmp_path, lc, m=GOOD_M + [f"M4,P1,engagement,2020-02-01,pending,,{huge},appointment-log,"])
    only(ev, "bad-csv", "milestones.csv", 5, None)


def test_formula_like_text_stays_text(tmp_path, lc):
    ev = run(tmp_path, lc, m=["M1,P1,engagement,2020-02-01,verified,2020-02-03,=1+2,appointment-log,"])
    assert ev.problems == []
    assert ev.milestones["evidence_ref"].tolist() == ["=1+2"]


def test_a_column_named_row_is_ignored_with_a_notice(tmp_path, lc):
    ev = run(tmp_path, lc, p=csv_bytes("row," + P_HEAD, [f"{n},{r}" for n, r in
                                                         enumerate(GOOD_P, start=100)]))
    assert ev.problems == []
    assert [(n.code, n.line, n.col) for n in ev.notices] == [("ignored-column", 1, 1)]
    assert ev.participants["row"].tolist() == [2, 3]


def test_not_a_workbook(tmp_path, lc):
    ev = run(tmp_path, lc, m=csv_bytes(M_HEAD, GOOD_M), m_name="milestones.xlsx")
    only(ev, "bad-workbook", "milestones.xlsx", None, None)


def test_zip_bomb_is_not_opened(tmp_path, lc):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("xl/worksheets/sheet1.xml", b"\0" * 11_000_000)
    ev = run(tmp_path, lc, m=buf.getvalue(), m_name="milestones.xlsx")
    only(ev, "unsafe-workbook", "milestones.xlsx", None, None)


def test_xml_entities_are_refused(tmp_path, lc):
    path = _workbook(tmp_path / "m.xlsx", [M_HEAD.split(","), GOOD_M[0].split(",")],
                     extra_sheet=False)
    src = zipfile.ZipFile(path)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = (b'<?xml version="1.0"?><!DOCTYPE w [<!ENTITY a "aaaaaaaaaa">'
                        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>' + data)
            z.writestr(info, data)
    ev = run(tmp_path, lc, m=out.getvalue(), m_name="milestones.xlsx")
    only(ev, "bad-workbook", "milestones.xlsx", None, None)
    assert "entity" in ev.problems[0].message


def test_read_table_and_validate_evidence_directly(tmp_path, lc):
    psrc = Source(tmp_path / "p.csv", "p.csv", csv_bytes(P_HEAD, GOOD_P, bom=True))
    msrc = Source(tmp_path / "m.CSV", "m.CSV", csv_bytes(M_HEAD, GOOD_M))
    table = read_table(psrc)
    assert table.problems == []
    assert list(table.frame.columns) == P_HEAD.split(",")
    ev = validate_evidence(lc, psrc, msrc)
    assert ev.problems == [] and ev.rows_in == 3
    assert ev.sources == {"participants": psrc, "milestones": msrc}


# --- the fast paths read exactly as the reference does -----------------------------------
#
# A CSV is read by pandas' C parser when its records can be told apart from its bytes
# (evidence._csv_cells_fast), else by the csv module (evidence._csv_cells, the reference);
# dates and numbers are parsed once per distinct value. These properties hold the fast
# paths to the reference on hostile text.

from unittest import mock  # noqa: E402

import pandas as pd  # noqa: E402

from sib import evidence  # noqa: E402

_PIECES = [",", ",", '"', '""', "\n", "\n", "\r\n", "\r", " ", "\t", "x", "é", "\ufeff",
           "\x1a", "\x0b", "\x1c", "\x85", "\u2028", "\x7f", "a,b", "row", "P1"]
_FIELD = st.one_of(
    st.lists(st.sampled_from(list('ab é\t,"\n') + ["\r\n"]), max_size=5).map(
        lambda s: '"' + "".join(s).replace('"', '""') + '"'),
    st.text(st.sampled_from(list("ab é\t\x1a\x85")), max_size=5))
_STRUCTURED = st.tuples(
    st.lists(st.lists(_FIELD, max_size=4).map(",".join), min_size=1, max_size=6),
    st.sampled_from(["\n", "\r\n"]), st.booleans()).map(
    lambda a: a[1].join(a[0]) + (a[1] if a[2] else ""))
_CSV_TEXT = st.one_of(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=30).map("".join),
                      _STRUCTURED)


def _records(cells: "evidence._Cells") -> list:
    """The header, then each record's cells within the header's width, its cell count and
    whether its cells beyond the header's are blank."""
    width = len(cells.header)
    return [list(cells.header)] + [
        ([cells.body[j][i] for j in range(min(int(n), width))], int(n), bool(rest))
        for i, (n, rest) in enumerate(zip(cells.counts, cells.rest_blank))]


@settings(max_examples=400, deadline=None)
@given(_CSV_TEXT, st.booleans())
def test_fast_csv_reading_gives_the_csv_modules_records(text, bom):
    raw = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    text = raw.decode("utf-8-sig")
    if not text.strip():
        return
    fast = evidence._csv_cells_fast(text, raw)
    if fast is None:
        return
    slow = evidence._csv_cells(text, evidence._Table("x.csv"))
    assert slow is not None and _records(fast) == _records(slow)
    cells = [v for col in fast.body for v in col]
    if fast.plain:
        assert not any(re.search("[\x00-\x1f\x7f]", v) for v in cells)
    if fast.trimmed:
        assert all(v == v.strip() for v in cells)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_CSV_TEXT, min_size=1, max_size=4).map(",".join), min_size=1,
                max_size=6).map(lambda rows: "\n".join(["milestone_id,a,row,", *rows])))
def test_read_table_is_the_same_whichever_way_the_csv_is_read(text):
    src = Source(Path("m.csv"), "m.csv", text.encode("utf-8"))
    fast = read_table(src)
    with mock.patch.object(evidence, "_csv_cells_fast", return_value=None):
        slow = read_table(src)
    assert (fast.problems, fast.notices, fast.ragged, fast.colno) == (
        slow.problems, slow.notices, slow.ragged, slow.colno)
    if slow.frame is None:
        assert fast.frame is None
    else:
        pd.testing.assert_frame_equal(fast.frame, slow.frame, check_exact=True)


@pytest.mark.parametrize("data", [
    csv_bytes(M_HEAD, GOOD_M),
    csv_bytes(M_HEAD, GOOD_M, bom=True, crlf=True),
    csv_bytes(M_HEAD, [GOOD_M[0], "", ",,,,,,,,", GOOD_M[1] + ",extra", "M9,P1"]),
    csv_bytes(M_HEAD, ['"M1","P1","engagement","2020-02-01","verified","2020-02-03",'
                       '"LOG, 1","say ""hi""","16"',
                       'M2,P1,job-start,2020-03-02,pending,,,"line\nbreak",']),
])
def test_common_files_take_the_fast_path(data):
    text = data.decode("utf-8-sig")
    fast = evidence._csv_cells_fast(text, data)
    assert fast is not None
    assert _records(fast) == _records(evidence._csv_cells(text, evidence._Table("m.csv")))


@pytest.mark.parametrize("data", [
    b'a,b\n"x"y,z\n',               # a quote closing then text: the csv module's reading
    b'a,b\nx"y",z\n',               # a quote inside an unquoted value
    b'a,b\n"open,z\n',              # a quote never closed
    b"a,b\rx,y\r",                  # carriage returns alone
    "\ufeffa,b\nx,y\n".encode(),    # a second byte-order mark after the first
])
def test_odd_files_are_left_to_the_csv_module(data):
    text = (b"\xef\xbb\xbf" + data).decode("utf-8-sig")
    assert evidence._csv_cells_fast(text, b"\xef\xbb\xbf" + data) is None


_DATE_LIKE = st.one_of(st.dates(date(1890, 1, 1), date(2210, 1, 1)).flatmap(
    lambda d: st.sampled_from([d.isoformat(), d.strftime("%d/%m/%Y"), f"{d.day}/{d.month}/{d.year}"])),
    st.sampled_from(["", "2022-02-30", "31/02/2022", "2022-1-1", "٢٠٢٢-٠١-٠١", " 2022-01-01"]),
    st.text(st.sampled_from("0123456789-/. e"), max_size=10))


@settings(max_examples=200, deadline=None)
@given(st.lists(_DATE_LIKE, max_size=12).flatmap(lambda vs: st.lists(
    st.sampled_from(vs) if vs else st.nothing(), min_size=len(vs), max_size=2 * len(vs))))
def test_dates_and_numbers_parse_once_per_distinct_value_as_one_by_one(values):
    days, ok = parse_days(pd.Series(values, dtype=str))
    numbers, nok = parse_numbers(pd.Series(values, dtype=str))
    for k, v in enumerate(values):
        d1, ok1 = evidence._parse_days(pd.Series([v], dtype=object))
        n1, nok1 = evidence._parse_numbers(pd.Series([v], dtype=object))
        assert (days[k], ok[k]) == (d1[0], ok1[0]), v
        assert nok[k] == nok1[0] and (numbers[k] == n1[0] or (np.isnan(numbers[k]) and np.isnan(n1[0]))), v
