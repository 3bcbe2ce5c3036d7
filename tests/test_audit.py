"""`sib audit`: the shipped example passes; each kind of tampering is found, with its code
and location.

Most tests audit a copy of the example cut to its first four claims (2019-Q1 … 2019-Q4:
reversals and re-ratings included), so that each replays in under a second; one test
audits all twelve, and one audits a freshly issued claim 13. Tampering is done the way a
person would: edit a file, and sometimes recompute the hashes ("reseal") so that only the
replay, the totals or the invariants can catch it.
"""

from __future__ import annotations

import json
import re
import shutil
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from sib.audit import AUDIT_CODES, STEPS, audit
from sib.cli import cli
from sib.contract import load_contract
from sib.issue import manifest_bytes, sha256
from sib.ledger import LEDGER_COLUMNS, parse_ledger
from sib.reconcile import totals as line_totals

ROOT = Path(__file__).resolve().parent.parent
CID = "west-london-ips"
LEDGERS = f"ledgers/{CID}"


def copy_workspace(dest: Path, upto: str | None = None) -> Path:
    """A copy of the shipped example; with `upto`, only the claims up to that period."""
    for name in ("contracts", "evidence", "ledgers"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns(".lock", ".tmp-*"))
    if upto is not None:
        for d in (dest / "ledgers" / CID).iterdir():
            if d.name > upto:
                shutil.rmtree(d)
    return dest


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return copy_workspace(tmp_path)


@pytest.fixture
def short(tmp_path: Path) -> Path:
    """Claims 2019-Q1 … 2019-Q4 of the example."""
    return copy_workspace(tmp_path, upto="2019-Q4")


def run(ws: Path, *args: str):
    result = CliRunner().invoke(cli, [*args, "-w", str(ws)], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def claim_dir(ws: Path, period: str) -> Path:
    return ws / "ledgers" / CID / period


def findings(ws: Path) -> set[tuple[str, str]]:
    """(location, code) of every finding."""
    return {(p.location, p.code) for p in audit(ws).findings}


def line_of(path: Path, pattern: str) -> int:
    """1-based number of the first line of `path` containing `pattern`."""
    for n, line in enumerate(path.read_text("utf-8").split("\n"), start=1):
        if pattern in line:
            return n
    raise AssertionError(f"{pattern!r} not in {path}")


def edit_line(path: Path, n: int, fn) -> str:
    """Replace line n (1-based) of a text file by fn(line); returns the new line."""
    lines = path.read_text("utf-8").split("\n")
    lines[n - 1] = fn(lines[n - 1])
    path.write_text("\n".join(lines), "utf-8")
    return lines[n - 1]


def set_cell(line: str, column: str, value: str) -> str:
    cells = line.split(",")  # ledger lines of the example hold no quoted commas
    cells[LEDGER_COLUMNS.index(column)] = value
    return ",".join(cells)


def reseal(ws: Path, period: str, chain: bool = True, totals: bool = False,
           add: tuple[str, ...] = ()) -> None:
    """Recompute `period`'s manifest for its files as they are now (listing `add` too) and,
    with `chain`, every later manifest's previous_manifest_sha256: what a careful forger
    would do. With `totals`, the forger recomputes the totals as well."""
    root = ws / "ledgers" / CID
    prev = None
    for folder in sorted(d for d in root.iterdir() if d.is_dir()):
        path = folder / "manifest.json"
        m = json.loads(path.read_text("utf-8"))
        if folder.name == period:
            m["files"] = {name: sha256((folder / name).read_bytes())
                          for name in sorted([*m["files"], *add])}
            if totals:
                lc, _ = load_contract(ws / "contracts" / f"{CID}.yaml")
                lines, _ = parse_ledger((folder / "ledger.csv").read_text("utf-8"), "x")
                t = line_totals(lines, lc.contract)
                fmt = lambda p: f"{Decimal(p) / 100:.2f}"  # noqa: E731
                m["totals"] = {"amount": fmt(t["amount"]), "capped": fmt(t["capped"]),
                               "by_funder": {k: fmt(v) for k, v in t["by_funder"].items()},
                               "by_kind": {k: fmt(v) for k, v in t["by_kind"].items()}}
            path.write_bytes(manifest_bytes(m))
        elif folder.name > period and chain:
            m["previous_manifest_sha256"] = prev
            path.write_bytes(manifest_bytes(m))
        prev = sha256(path.read_bytes())


# --- the shipped example ---------------------------------------------------------------------

def test_the_shipped_example_passes(ws: Path) -> None:
    result = run(ws, "audit")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = result.stdout
    assert "ledgers/west-london-ips: 12 claim(s), 2019-Q1 … 2021-Q4" in out
    assert len(re.findall(r"^  20\d\d-Q\d +claim \d+ +ok$", out, re.M)) == 12
    assert "All 12 claim(s) verified." in out
    head = sha256((claim_dir(ws, "2021-Q4") / "manifest.json").read_bytes())
    assert f"Chain head: {LEDGERS}/2021-Q4/manifest.json sha256 {head}" in out


def test_a_freshly_issued_claim_13_passes(ws: Path) -> None:
    assert run(ws, "claim", "--period", "2022-Q1").exit_code == 0
    report = audit(ws)
    assert report.ok, [str(p) for p in report.findings]
    assert [c.period for c in report.claims][-2:] == ["2021-Q4", "2022-Q1"]
    assert report.claims[-1].checks["replay"] == "ok"


# Shape of `sib audit --json` (stdout):
#   {"ok": bool, "contract": str, "ledgers": str,                # e.g. "ledgers/west-london-ips"
#    "head": {"period": str, "manifest_sha256": str} | null,     # the latest claim: pins the chain
#    "claims": [{"period": str, "folder": str, "claim_number": int|null,
#                "manifest_sha256": str|null,
#                "checks": {step: "ok"|"failed"|"skipped"|"absent"},   # steps: STEPS
#                "notes": [str]}],                                  # why a step was skipped
#    "findings": [{"path": str, "line": int|null, "col": int|null, "code": str, "message": str}]}

def test_json_shape(short: Path) -> None:
    result = run(short, "audit", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"ok", "contract", "ledgers", "head", "claims", "findings"}
    assert doc["ok"] is True and doc["findings"] == []
    assert (doc["contract"], doc["ledgers"]) == (CID, LEDGERS)
    assert [c["period"] for c in doc["claims"]] == ["2019-Q1", "2019-Q2", "2019-Q3", "2019-Q4"]
    assert [c["claim_number"] for c in doc["claims"]] == [1, 2, 3, 4]
    for c in doc["claims"]:
        assert set(c) == {"period", "folder", "claim_number", "manifest_sha256", "checks", "notes"}
        assert c["folder"] == f"{LEDGERS}/{c['period']}"
        assert c["manifest_sha256"] == sha256((short / c["folder"] / "manifest.json").read_bytes())
        assert set(c["checks"]) == set(STEPS)
        assert c["checks"] == {s: "ok" for s in STEPS}
    assert doc["head"] == {"period": "2019-Q4",
                           "manifest_sha256": doc["claims"][-1]["manifest_sha256"]}


def test_json_lists_findings_and_exits_1(short: Path) -> None:
    edit_line(claim_dir(short, "2019-Q3") / "decisions.csv", 2, lambda s: s + " ")
    result = run(short, "audit", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert {"path": f"{LEDGERS}/2019-Q3/decisions.csv", "line": None, "col": None,
            "code": "file-hash"} in [{k: f[k] for k in ("path", "line", "col", "code")}
                                     for f in doc["findings"]]
    assert doc["claims"][2]["checks"]["files"] == "failed"
    assert all(f["code"] in AUDIT_CODES for f in doc["findings"])


def test_progress_is_reported_claim_by_claim(short: Path) -> None:
    calls = []
    audit(short, progress=lambda done, total, label: calls.append((done, total, label)))
    assert calls == [(1, 4, "2019-Q1"), (2, 4, "2019-Q2"), (3, 4, "2019-Q3"), (4, 4, "2019-Q4")]


def test_findings_go_to_stderr_as_path_line_code(short: Path) -> None:
    ledger = claim_dir(short, "2019-Q2") / "ledger.csv"
    edit_line(ledger, 3, lambda s: set_cell(s, "amount", "999.99"))
    result = run(short, "audit")
    assert result.exit_code == 1
    assert "FAILED" in result.stdout
    assert re.search(rf"^{LEDGERS}/2019-Q2/ledger.csv:3: \[replay-mismatch\] the issued line "
                     r"is `2019-Q2-00002,.*,999\.99,.*`; the replay gives `2019-Q2-00002,.*`$",
                     result.stderr, re.M), result.stderr
    assert re.search(r"^\d+ findings in 1 of 4 claim\(s\)", result.stderr, re.M)


# --- tampering, each found with its code and location -------------------------------------------

def test_an_amount_changed_in_ledger_csv(short: Path) -> None:
    ledger = claim_dir(short, "2019-Q2") / "ledger.csv"
    edit_line(ledger, 3, lambda s: set_cell(s, "amount", f"{Decimal(s.split(',')[13]) + Decimal('0.01')}"))
    got = findings(short)
    assert (f"{LEDGERS}/2019-Q2/ledger.csv", "file-hash") in got
    assert (f"{LEDGERS}/2019-Q2/ledger.csv:3", "replay-mismatch") in got
    # the replay recovers the issued file (its hash is the manifest's), so the later claims
    # replay against what they really read: every finding is in the claim that was changed
    assert all(loc.startswith(f"{LEDGERS}/2019-Q2/") for loc, _ in got), got


def test_a_byte_changed_in_decisions_csv(short: Path) -> None:
    path = claim_dir(short, "2019-Q3") / "decisions.csv"
    n = line_of(path, "paid in 2019-Q2; unchanged")
    edit_line(path, n, lambda s: s.replace("unchanged", "unchangee"))
    got = findings(short)
    assert got == {(f"{LEDGERS}/2019-Q3/decisions.csv", "file-hash"),
                   (f"{LEDGERS}/2019-Q3/decisions.csv:{n}", "replay-mismatch")}


def test_an_edited_file_under_inputs(short: Path) -> None:
    folder = claim_dir(short, "2019-Q3")
    paid = pd.read_csv(folder / "ledger.csv", dtype=str)["milestone_id"].iloc[0]
    path = folder / "inputs" / "milestones.csv"
    n = line_of(path, paid + ",")
    edit_line(path, n, lambda s: s.replace(",verified,", ",pending,"))
    got = findings(short)
    assert (f"{LEDGERS}/2019-Q3/inputs/milestones.csv", "file-hash") in got
    # and even with the hash recomputed, the replay no longer gives the issued claim
    reseal(short, "2019-Q3")
    got = findings(short)
    assert (f"{LEDGERS}/2019-Q3/ledger.csv:2", "replay-mismatch") in got
    assert (f"{LEDGERS}/2019-Q3/inputs/milestones.csv", "file-hash") not in got


def _write_claim_workbook(folder: Path, name: str = "claim.xlsx", funder: str | None = None) -> None:
    """A minimal workbook: a Lines sheet holding ledger.csv's lines (one funder's, for a
    statement), money as numbers (claim-workbook.md). Stands in for sib.workbook's output,
    which does not exist yet: only its Lines sheet is read back."""
    import openpyxl
    wb = openpyxl.Workbook()
    wb.active.title = "Claim"
    ws = wb.create_sheet("Lines")
    frame = pd.read_csv(folder / "ledger.csv", dtype=str, keep_default_na=False)
    if funder is not None:
        frame = frame[frame["funder"] == funder]
    ws.append(list(frame.columns))
    for _, r in frame.iterrows():
        ws.append([float(v) if k in ("price", "amount", "capped", "share") else v
                   for k, v in r.items()])
    (folder / name).parent.mkdir(exist_ok=True)
    wb.save(folder / name)


def test_a_changed_claim_workbook(short: Path) -> None:
    """The real claim workbook of 2019-Q4 with one amount changed after issue: caught by its
    hash and, at the row, by reading its figures back against the ledger."""
    folder = claim_dir(short, "2019-Q4")
    report = audit(short)
    assert report.ok and report.claims[-1].checks["workbooks"] == "ok"

    import openpyxl
    wb = openpyxl.load_workbook(folder / "claim.xlsx")
    ws = wb["Lines"]
    head_row = next(r for r in range(1, 21)
                    if "amount" in [str(c.value).strip().lower() for c in ws[r] if c.value])
    col = [str(c.value).strip().lower() if c.value else "" for c in ws[head_row]].index("amount") + 1
    row = head_row + 2
    ws.cell(row=row, column=col).value = ws.cell(row=row, column=col).value + 1
    wb.save(folder / "claim.xlsx")
    got = findings(short)
    assert (f"{LEDGERS}/2019-Q4/claim.xlsx", "file-hash") in got
    assert (f"{LEDGERS}/2019-Q4/claim.xlsx:{row}", "workbook-mismatch") in got


def test_workbook_figures_must_be_the_ledgers(short: Path) -> None:
    """Issued with its hashes right but a figure wrong (a writer bug): the read-back finds it."""
    import openpyxl
    folder = claim_dir(short, "2019-Q4")
    _write_claim_workbook(folder)
    _write_claim_workbook(folder, "statements/dcms.xlsx", funder="dcms")
    _write_claim_workbook(folder, "statements/brent.xlsx", funder="dcms")  # the wrong lines
    wb = openpyxl.load_workbook(folder / "claim.xlsx")
    wb["Lines"].delete_rows(5)
    wb.save(folder / "claim.xlsx")
    reseal(short, "2019-Q4", add=("claim.xlsx", "statements/dcms.xlsx", "statements/brent.xlsx"))
    report = audit(short)
    got = {(p.location, p.code) for p in report.findings}
    assert {code for _, code in got} == {"workbook-mismatch"}
    assert (f"{LEDGERS}/2019-Q4/claim.xlsx", "workbook-mismatch") in got  # a line missing
    assert (f"{LEDGERS}/2019-Q4/statements/brent.xlsx:2", "workbook-mismatch") in got
    assert not any("dcms.xlsx" in loc for loc, _ in got)
    assert report.claims[-1].checks["workbooks"] == "failed"


def test_an_edited_manifest(short: Path) -> None:
    path = claim_dir(short, "2019-Q2") / "manifest.json"
    path.write_text(path.read_text("utf-8").replace("2019-07-04T09:30:00Z", "2019-07-05T09:30:00Z"))
    nxt = claim_dir(short, "2019-Q3") / "manifest.json"
    assert findings(short) == {
        (f"{LEDGERS}/2019-Q3/manifest.json:{line_of(nxt, 'previous_manifest_sha256')}",
         "chain-broken")}


def test_a_deleted_claim_in_the_middle(short: Path) -> None:
    shutil.rmtree(claim_dir(short, "2019-Q2"))
    report = audit(short)
    got = {(p.location, p.code) for p in report.findings}
    assert (f"{LEDGERS}/2019-Q2", "missing-claim") in got
    nxt = claim_dir(short, "2019-Q3") / "manifest.json"
    assert (f"{LEDGERS}/2019-Q3/manifest.json:{line_of(nxt, 'previous_manifest_sha256')}",
            "chain-broken") in got
    # the later claims cannot be replayed without what they read; the audit says so
    assert [c.checks["replay"] for c in report.claims] == ["ok", "skipped", "skipped"]
    assert "2019-Q2 is missing" in report.claims[1].notes[0]


def test_two_claims_swapped(short: Path) -> None:
    a, b = claim_dir(short, "2019-Q2"), claim_dir(short, "2019-Q3")
    a.rename(short / "swap")
    b.rename(a)
    (short / "swap").rename(b)
    got = findings(short)
    for folder, holds in (("2019-Q2", "2019-Q3"), ("2019-Q3", "2019-Q2")):
        path = claim_dir(short, folder) / "manifest.json"
        assert json.loads(path.read_text())["period"] == holds
        n = line_of(path, '"period"')
        assert (f"{LEDGERS}/{folder}/manifest.json:{n}", "misplaced-claim") in got


def test_an_extra_line_with_the_manifest_hash_recomputed(short: Path) -> None:
    ledger = claim_dir(short, "2019-Q2") / "ledger.csv"
    lines = ledger.read_text("utf-8").split("\n")  # ends with "" after the last \n
    n = len(lines)  # the new line's number: after the header and len(lines) - 2 lines
    extra = lines[-2].replace(lines[-2].split(",")[0], f"2019-Q2-{n - 1:05d}")
    ledger.write_text("\n".join(lines[:-1] + [extra, ""]), "utf-8")
    reseal(short, "2019-Q2", chain=False)  # the file hash is right again; the chain is not
    got = findings(short)
    nxt = claim_dir(short, "2019-Q3") / "manifest.json"
    assert (f"{LEDGERS}/2019-Q3/manifest.json:{line_of(nxt, 'previous_manifest_sha256')}",
            "chain-broken") in got
    assert (f"{LEDGERS}/2019-Q2/ledger.csv:{n}", "replay-mismatch") in got
    assert (f"{LEDGERS}/2019-Q2/ledger.csv", "file-hash") not in got


def test_lines_that_do_not_add_up_to_the_manifest_totals(short: Path) -> None:
    folder = claim_dir(short, "2019-Q3")
    edit_line(folder / "ledger.csv", 2, lambda s: set_cell(s, "amount", "0.00"))
    reseal(short, "2019-Q3")  # hashes and chain recomputed, the totals forgotten
    got = findings(short)
    manifest = folder / "manifest.json"
    amount_line = line_of(manifest, '    "amount": ')
    assert (f"{LEDGERS}/2019-Q3/manifest.json:{amount_line}", "totals-mismatch") in got
    assert (f"{LEDGERS}/2019-Q3/ledger.csv:2", "replay-mismatch") in got


def test_a_cap_exceeded_in_a_hand_edited_history(short: Path) -> None:
    folder = claim_dir(short, "2019-Q3")
    ledger = folder / "ledger.csv"
    n = line_of(ledger, ",dcms,")
    edit_line(ledger, n, lambda s: set_cell(s, "amount", "1075000.00"))  # dcms's cap
    reseal(short, "2019-Q3", totals=True)  # a thorough forger: hashes, totals and chain
    report = audit(short)
    got = {(p.location, p.code) for p in report.findings}
    assert (f"{LEDGERS}/2019-Q3/ledger.csv:{n}", "funder-cap-exceeded") in got
    assert (f"{LEDGERS}/2019-Q3/ledger.csv:{n}", "replay-mismatch") in got
    # the breach is reported once, where it happened, not again in every later claim
    assert [loc for loc, code in got if code == "funder-cap-exceeded"] == \
        [f"{LEDGERS}/2019-Q3/ledger.csv:{n}"]
    msg = next(p.message for p in report.findings if p.code == "funder-cap-exceeded")
    assert "funder dcms's total" in msg and "£1,075,000.00" in msg


def test_a_file_added_and_a_stray_folder(short: Path) -> None:
    (claim_dir(short, "2019-Q1") / "notes.txt").write_text("hello")
    (short / "ledgers" / CID / "old").mkdir()
    got = findings(short)
    assert got == {(f"{LEDGERS}/2019-Q1/notes.txt", "file-unlisted"),
                   (f"{LEDGERS}/old", "stray-entry")}


def test_a_manifest_that_is_not_json(short: Path) -> None:
    (claim_dir(short, "2019-Q4") / "manifest.json").write_text("{not json")
    report = audit(short)
    assert (f"{LEDGERS}/2019-Q4/manifest.json", "bad-manifest") in \
        {(p.location, p.code) for p in report.findings}
    assert report.claims[-1].checks["replay"] == "skipped"


def test_a_contract_with_no_claims_yet(tmp_path: Path) -> None:
    ws = copy_workspace(tmp_path)
    shutil.rmtree(ws / "ledgers" / CID)
    result = run(ws, "audit")
    assert result.exit_code == 0
    assert "no claims issued yet" in result.stdout


def test_an_unknown_contract_is_one_line(short: Path) -> None:
    result = run(short, "audit", "--contract", "no-such")
    assert result.exit_code == 1
    assert result.stderr.startswith("sib: no contract 'no-such'")
    assert len(result.stderr.strip().splitlines()) == 1


# --- invariants judged against the running state of a long history (issue 7) ---------------
# The audit no longer re-reads every earlier line for each claim: it carries running totals,
# the standing payments and the limit counts from claim to claim. These find breaches that
# only the whole history shows, at their line, in a late claim.

def _pence(text: str) -> int:
    return int(Decimal(text) * 100)


def test_a_cap_crossed_late_in_a_long_history_is_found_at_its_line(ws: Path) -> None:
    """dcms's running total over eleven claims and the lines before it in claim 12 is taken
    to exactly one penny over its cap by one hand-edited line of claim 12."""
    ledger = claim_dir(ws, "2021-Q4") / "ledger.csv"
    n = line_of(ledger, ",dcms,")
    paid = 0
    for folder in sorted((ws / LEDGERS).iterdir()):
        frame = pd.read_csv(folder / "ledger.csv", dtype=str, keep_default_na=False)
        if folder.name == "2021-Q4":
            frame = frame.iloc[:n - 2]  # the lines before line n
        paid += sum(_pence(a) for a in frame.loc[frame["funder"] == "dcms", "amount"])
    cap = _pence("1075000.00")
    assert 0 < cap - paid  # within the cap so far
    forged = cap + 1 - paid
    edit_line(ledger, n, lambda s: set_cell(s, "amount", f"{Decimal(forged) / 100:.2f}"))
    reseal(ws, "2021-Q4", totals=True)
    report = audit(ws)
    breaches = [p for p in report.findings if p.code.endswith("-cap-exceeded")]
    assert [(p.location, p.code) for p in breaches] == [
        (f"{LEDGERS}/2021-Q4/ledger.csv:{n}", "funder-cap-exceeded")]
    assert "funder dcms's total reaches £1,075,000.01 with this line" in breaches[0].message
    assert {p.location.split("/")[2] for p in report.findings} == {"2021-Q4"}


def test_a_reversal_three_claims_back_is_checked_against_the_line_it_names(tmp_path: Path) -> None:
    ws = copy_workspace(tmp_path, upto="2020-Q1")
    ledger = claim_dir(ws, "2020-Q1") / "ledger.csv"
    n = line_of(ledger, "2020-Q1-00001,")
    assert ledger.read_text("utf-8").split("\n")[n - 1].endswith(",2019-Q2-00029")
    edit_line(ledger, n, lambda s: set_cell(s, "amount", "-294.20"))  # paid 294.19
    reseal(ws, "2020-Q1", totals=True)
    report = audit(ws)
    bad = [p for p in report.findings if p.code == "bad-reversal"]
    assert [p.location for p in bad] == [f"{LEDGERS}/2020-Q1/ledger.csv:{n}"]
    assert bad[0].message == ("reversal of milestone WLM000012: it is -£294.20 but "
                              "2019-Q2-00029 paid £294.19")


def test_a_payment_reversed_in_an_earlier_claim_cannot_be_reversed_again(tmp_path: Path) -> None:
    """2019-Q4 reversed 2019-Q2's payment of WLM000005 (and paid it again on new terms);
    the same reversal copied into 2020-Q1 names a line that no longer stands."""
    ws = copy_workspace(tmp_path, upto="2020-Q1")
    first = (claim_dir(ws, "2019-Q4") / "ledger.csv").read_text("utf-8").split("\n")[1]
    assert first.endswith(",2019-Q2-00005") and ",WLM000005," in first
    ledger = claim_dir(ws, "2020-Q1") / "ledger.csv"
    rows = ledger.read_text("utf-8").split("\n")
    rows.insert(1, first.replace("2019-Q4-00001,2019-Q4,", "2020-Q1-00000,2020-Q1,", 1))
    ledger.write_text("\n".join(rows), "utf-8")
    reseal(ws, "2020-Q1", totals=True)
    got = [(p.location, p.message) for p in audit(ws).findings if p.code == "bad-reversal"]
    assert got == [(f"{LEDGERS}/2020-Q1/ledger.csv:2",
                    "reversal of milestone WLM000005: reverses 2019-Q2-00005, which is no "
                    "standing payment line of an earlier claim")]


def test_a_limit_exceeded_across_claims(tmp_path: Path) -> None:
    """WL00024's 13-week sustainment, paid in 2020-Q1, still stands when 2020-Q2 pays
    another one — WL00106's, handed to WL00024 — against the group's limit of one."""
    ws = copy_workspace(tmp_path, upto="2020-Q3")
    ledger = claim_dir(ws, "2020-Q2") / "ledger.csv"
    n = line_of(ledger, "2020-Q2-00024,")
    for k in range(n, n + 4):  # the payment's four lines (one per funder)
        edit_line(ledger, k, lambda s: s.replace(",WLM000228,WL00106,", ",WLM000228,WL00024,"))
    reseal(ws, "2020-Q2", totals=True)
    limits = [p for p in audit(ws).findings if p.code == "limit-exceeded"]
    assert [(p.location, p.message) for p in limits] == [
        (f"{LEDGERS}/2020-Q2/ledger.csv:{n}",
         "participant WL00024 holds 2 payments of sustainment-13w (group), over its limit of "
         "1 per participant")]
