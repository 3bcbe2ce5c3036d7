"""`sib claim` on the shipped West London workspace: issuing, re-running, refusing.

The scenario files (tests/scenarios/) pin the rules case by case; these tests pin what a
finance officer sees on the example: the golden claim 13, the summary and its
reconciliation, re-runs, dry runs, period errors, the lock, broken evidence.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from sib.cli import cli

ROOT = Path(__file__).resolve().parent.parent
CID = "west-london-ips"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A copy of the shipped example workspace (claims 2019-Q1 … 2021-Q4 issued)."""
    for name in ("contracts", "evidence", "ledgers"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns(".lock", ".tmp-*"))
    return tmp_path


def run(ws: Path, *args: str):
    result = CliRunner().invoke(cli, [*args, "-w", str(ws)], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_claim_13_is_issued_with_a_reconciling_summary(ws: Path, file_regression) -> None:
    result = run(ws, "claim", "--period", "2022-Q1")
    assert result.exit_code == 0, result.output
    assert "claim 13, 2022-Q1" in result.output
    m = re.search(r"(\d+) rows in = (\d+) paid now \+ (\d+) paid earlier \+ (\d+) corrected \+ "
                  r"(\d+) pending \+ (\d+) rejected", result.output)
    assert m, result.output
    rows_in, *parts = map(int, m.groups())
    assert rows_in == sum(parts)
    milestones = pd.read_csv(ws / "evidence" / CID / "milestones.csv", dtype=str)
    assert rows_in == milestones["milestone_id"].nunique()
    folder = ws / "ledgers" / CID / "2022-Q1"
    lines = pd.read_csv(folder / "ledger.csv", dtype=str)
    statements = sorted(f"statements/{f}.xlsx" for f in set(lines["funder"]))
    assert sorted(files_under(folder)) == sorted([
        "claim.xlsx", "decisions.csv", "inputs/contract.yaml", "inputs/milestones.csv",
        "inputs/participants.csv", "ledger.csv", "manifest.json", *statements])
    # golden files, reviewed like code: the example's claim 13 line by line
    file_regression.check((folder / "ledger.csv").read_text("utf-8"), basename="claim-13-ledger",
                          extension=".csv")
    file_regression.check((folder / "decisions.csv").read_text("utf-8"),
                          basename="claim-13-decisions", extension=".csv")


def test_claim_13_corrects_earlier_claims(ws: Path) -> None:
    """The example's 2022-Q1 evidence withdraws a paid milestone, moves a participant to
    another borough and corrects a sustainment's hours: each flows in as a correction."""
    assert run(ws, "claim", "--period", "2022-Q1").exit_code == 0
    d = pd.read_csv(ws / "ledgers" / CID / "2022-Q1" / "decisions.csv", dtype=str,
                    keep_default_na=False)
    got = set(zip(d["decision"], d["reason"]))
    assert ("reversed", "withdrawn") in got
    assert ("re-rated", "changed-split") in got
    assert ("re-rated", "changed-outcome") in got
    lines = pd.read_csv(ws / "ledgers" / CID / "2022-Q1" / "ledger.csv", dtype=str,
                        keep_default_na=False)
    kinds = lines["kind"].tolist()
    # reversals come first in the file, and each cancels a standing line of an earlier claim
    assert kinds == sorted(kinds, key=lambda k: k != "reversal")
    earlier = pd.concat(pd.read_csv(p, dtype=str, keep_default_na=False)
                        for p in sorted((ws / "ledgers" / CID).glob("20*/ledger.csv"))
                        if "2022-Q1" not in str(p))
    by_id = earlier.set_index("line_id")
    for _, r in lines[lines["kind"] == "reversal"].iterrows():
        orig = by_id.loc[r["reverses"]]
        assert r["amount"] == "-" + orig["amount"]
        assert (r["funder"], r["share"], r["price"]) == (orig["funder"], orig["share"], orig["price"])


def test_manifest_totals_and_chain(ws: Path) -> None:
    assert run(ws, "claim", "--period", "2022-Q1").exit_code == 0
    folder = ws / "ledgers" / CID / "2022-Q1"
    manifest = json.loads((folder / "manifest.json").read_text())
    lines = pd.read_csv(folder / "ledger.csv", dtype=str, keep_default_na=False)
    pence = lines["amount"].str.replace(".", "", regex=False).astype(int)
    assert manifest["totals"]["amount"] == f"{pence.sum() / 100:.2f}"
    by_funder = pence.groupby(lines["funder"]).sum()
    assert manifest["totals"]["by_funder"] == {f: f"{v / 100:.2f}" for f, v in by_funder.items()
                                               if f in manifest["totals"]["by_funder"]}
    assert set(manifest["totals"]["by_funder"]) == set(by_funder.index)
    import hashlib
    prev = (ws / "ledgers" / CID / "2021-Q4" / "manifest.json").read_bytes()
    assert manifest["previous_manifest_sha256"] == hashlib.sha256(prev).hexdigest()
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert manifest["claim_number"] == 13 and manifest["period"] == "2022-Q1"


def test_rerun_of_an_issued_period_is_unchanged(ws: Path) -> None:
    assert run(ws, "claim", "--period", "2022-Q1").exit_code == 0
    before = files_under(ws / "ledgers")
    again = run(ws, "claim", "--period", "2022-Q1")
    assert again.exit_code == 0
    assert "already issued, unchanged" in again.output
    assert files_under(ws / "ledgers") == before


def test_rerun_with_changed_evidence_explains_and_writes_nothing(ws: Path) -> None:
    """2021-Q4 was issued from the evidence of 2022-01-04; today's evidence differs."""
    before = files_under(ws / "ledgers")
    result = run(ws, "claim", "--period", "2021-Q4")
    assert result.exit_code == 1
    assert "already issued" in result.output
    assert "corrections" in result.output
    assert "first difference at line" in result.output
    assert files_under(ws / "ledgers") == before


def test_dry_run_writes_nothing_and_json_reconciles(ws: Path) -> None:
    before = files_under(ws)
    result = run(ws, "claim", "--period", "2022-Q1", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert files_under(ws) == before
    doc = json.loads(result.stdout)
    assert doc["outcome"] == "dry-run"
    counts = doc["claim"]["decisions"]
    assert doc["claim"]["rows_in"] == sum(counts.values()) == len(doc["decisions"])
    total = sum(int(l["amount"].replace(".", "")) for l in doc["lines"])
    assert f"{total / 100:.2f}" == doc["claim"]["totals"]["amount"]


def test_json_without_dry_run_is_a_usage_error(ws: Path) -> None:
    result = CliRunner().invoke(cli, ["claim", "--period", "2022-Q1", "--json", "-w", str(ws)])
    assert result.exit_code == 2
    assert "--dry-run" in result.output


@pytest.mark.parametrize("period, expected", [
    ("2022-Q5", "not a quarter period; write it like '2022-Q1'"),
    ("2022-03", "is a month period, but this contract claims by quarter"),
    ("2022-Q3", "the next one due is 2022-Q1"),
    ("2018-Q4", "before the contract's first claim period 2019-Q1"),
    ("2023-Q2", "starts after term.claims_end 2023-03-31"),
])
def test_period_errors(ws: Path, period: str, expected: str) -> None:
    before = files_under(ws / "ledgers")
    result = run(ws, "claim", "--period", period)
    assert result.exit_code == 1
    assert expected in result.output
    assert files_under(ws / "ledgers") == before


def test_a_second_claim_refuses_the_lock(ws: Path, monkeypatch) -> None:
    import sib.issue
    monkeypatch.setattr(sib.issue, "LOCK_WAIT_SECONDS", 0.3)
    lock = ws / "ledgers" / CID / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = run(ws, "claim", "--period", "2022-Q1")
    finally:
        os.close(fd)
    assert result.exit_code == 1
    assert "another sib claim is writing" in result.output
    assert not (ws / "ledgers" / CID / "2022-Q1").exists()
    assert run(ws, "claim", "--period", "2022-Q1").exit_code == 0


def _edit_milestones(ws: Path, fn) -> None:
    path = ws / "evidence" / CID / "milestones.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(frame).to_csv(path, index=False, lineterminator="\n")


def test_broken_evidence_lists_every_problem_and_writes_nothing(ws: Path) -> None:
    def breakit(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[3, "achieved_on"] = "31/02/2021"
        f.loc[7, "status"] = "done"
        return f
    _edit_milestones(ws, breakit)
    result = run(ws, "claim", "--period", "2022-Q1")
    assert result.exit_code == 1
    assert "evidence/west-london-ips/milestones.csv:5:4: [bad-date]" in result.output
    assert "evidence/west-london-ips/milestones.csv:9:5: [bad-value]" in result.output
    assert not (ws / "ledgers" / CID / "2022-Q1").exists()

    skipped = run(ws, "claim", "--period", "2022-Q1", "--skip-invalid")
    assert skipped.exit_code == 0, skipped.output
    d = pd.read_csv(ws / "ledgers" / CID / "2022-Q1" / "decisions.csv", dtype=str,
                    keep_default_na=False)
    assert (d["reason"] == "invalid-row").sum() == 2


def test_a_paid_milestone_deleted_from_the_evidence_is_refused(ws: Path) -> None:
    paid = pd.read_csv(ws / "ledgers" / CID / "2019-Q2" / "ledger.csv", dtype=str)
    victim = paid["milestone_id"].iloc[0]
    _edit_milestones(ws, lambda f: f[f["milestone_id"] != victim])
    result = run(ws, "claim", "--period", "2022-Q1")
    assert result.exit_code == 1
    assert "[missing-paid-milestone]" in result.output
    assert victim in result.output and "mark it withdrawn" in result.output


def test_the_shipped_example_is_what_the_generator_makes(tmp_path: Path) -> None:
    """evidence/ and ledgers/ are generated, never hand-edited: regenerate and compare."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("west_london_example", ROOT / "scripts" / "west_london_example.py")
    gen = importlib.util.module_from_spec(spec)
    sys.modules["west_london_example"] = gen  # dataclasses look their module up
    spec.loader.exec_module(gen)
    (tmp_path / "contracts").mkdir()
    shutil.copy(ROOT / "contracts" / f"{CID}.yaml", tmp_path / "contracts")
    gen.build(tmp_path)
    for name in ("evidence", "ledgers"):
        assert files_under(tmp_path / name / CID) == files_under(ROOT / name / CID), name


def test_evidence_from_elsewhere_and_from_excel_gives_the_same_claim(ws: Path, tmp_path: Path) -> None:
    """--participants/--milestones point at other files; an .xlsx export (dates as real
    date cells) claims exactly as its CSV twin."""
    import openpyxl
    from datetime import datetime

    expected = json.loads(run(ws, "claim", "--period", "2022-Q1", "--dry-run", "--json").stdout)
    src = ws / "evidence" / CID
    other = tmp_path / "exports"
    other.mkdir()
    shutil.copy(src / "participants.csv", other / "people.csv")
    frame = pd.read_csv(src / "milestones.csv", dtype=str, keep_default_na=False)
    wb = openpyxl.Workbook()
    sheet = wb.active
    sheet.append(list(frame.columns))
    for row in frame.itertuples(index=False):
        cells = list(row)
        for k, col in enumerate(frame.columns):
            if col in ("achieved_on", "verified_on") and cells[k]:
                cells[k] = datetime.strptime(cells[k], "%d/%m/%Y")
        sheet.append(cells)
    wb.save(other / "milestones.xlsx")
    (src / "participants.csv").unlink()
    (src / "milestones.csv").unlink()
    result = run(ws, "claim", "--period", "2022-Q1", "--dry-run", "--json",
                 "--participants", str(other / "people.csv"),
                 "--milestones", str(other / "milestones.xlsx"))
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["lines"] == expected["lines"]
    assert [(d["milestone_id"], d["decision"], d["reason"], d["amount"]) for d in got["decisions"]] \
        == [(d["milestone_id"], d["decision"], d["reason"], d["amount"]) for d in expected["decisions"]]
    assert got["claim"]["sources"]["milestones"].endswith("milestones.xlsx")


def test_a_claim_that_would_break_an_invariant_is_refused(ws: Path, monkeypatch) -> None:
    """A bug that overpays one funder line by a penny must stop the claim, never reach a
    funder: the error names the invariant, and nothing is written."""
    import sib.reconcile as rc

    real = rc._allocate

    def overpaying(*args, **kwargs):
        rows, amounts, capped, caps, fail_code, fail_detail = real(*args, **kwargs)
        first = rows[0]
        amounts[first] = [amounts[first][0] + 1] + amounts[first][1:]
        return rows, amounts, capped, caps, fail_code, fail_detail

    monkeypatch.setattr(rc, "_allocate", overpaying)
    before = files_under(ws / "ledgers")
    result = run(ws, "claim", "--period", "2022-Q1")
    assert result.exit_code == 1
    assert "standing-over-price" in result.output
    assert "invariant" in result.output
    assert files_under(ws / "ledgers") == before
