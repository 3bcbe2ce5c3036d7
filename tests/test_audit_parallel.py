"""The audit's replays and workbook read-backs in forked processes (sib.forked): the report
is the one running everything in order gives, tampered or not, and a child that fails in any
way has its job run again in the parent, so nothing is lost and no failure is hidden."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sib.audit import audit
from sib.forked import Jobs, can_fork
from test_audit import claim_dir, copy_workspace, edit_line, line_of, reseal, set_cell

needs_fork = pytest.mark.skipif(not can_fork(), reason="this system cannot fork: audits "
                                "run in one process there, which the other tests cover")


def both(ws: Path) -> dict:
    """The audit report run in order and with two worker processes; they must agree."""
    inline = audit(ws, workers=1).as_json()
    forked = audit(ws, workers=2).as_json()
    assert forked == inline
    return inline


def _pay_line(ws: Path, period: str) -> int:
    return line_of(claim_dir(ws, period) / "ledger.csv", ",payment,")


def change_amount(ws: Path) -> None:
    """An edited amount, resealed: only the replay and the read-back can see it."""
    path = claim_dir(ws, "2019-Q2") / "ledger.csv"
    edit_line(path, _pay_line(ws, "2019-Q2"), lambda s: set_cell(s, "amount", "1.00"))
    reseal(ws, "2019-Q2")


def change_evidence(ws: Path) -> None:
    """A verified milestone of the evidence read made pending, resealed: the replay sees it."""
    folder = claim_dir(ws, "2019-Q3") / "inputs"
    path = next(p for p in sorted(folder.iterdir()) if p.name.startswith("milestones"))
    text = path.read_text("utf-8").split("\n")
    n = next(k for k, s in enumerate(text) if ",verified," in s)
    text[n] = text[n].replace(",verified,", ",pending,", 1)
    path.write_text("\n".join(text), "utf-8")
    reseal(ws, "2019-Q3")


def stale_ledger(ws: Path) -> None:
    """An edited ledger left unsealed: the next claim reads the recovered one."""
    path = claim_dir(ws, "2019-Q2") / "ledger.csv"
    edit_line(path, _pay_line(ws, "2019-Q2"), lambda s: set_cell(s, "amount", "2.00"))


def change_workbook(ws: Path) -> None:
    """A statement whose bytes are replaced by another claim's, resealed."""
    a = claim_dir(ws, "2019-Q1") / "claim.xlsx"
    b = claim_dir(ws, "2019-Q3") / "claim.xlsx"
    b.write_bytes(a.read_bytes())
    reseal(ws, "2019-Q3")


def remove_claim(ws: Path) -> None:
    import shutil
    shutil.rmtree(claim_dir(ws, "2019-Q2"))


@needs_fork
@pytest.mark.parametrize("tamper", [None, change_amount, change_evidence, stale_ledger,
                                    change_workbook, remove_claim])
def test_forked_audit_reports_what_the_audit_in_order_reports(tmp_path: Path, tamper) -> None:
    ws = copy_workspace(tmp_path, upto="2019-Q4")
    if tamper is not None:
        tamper(ws)
    report = both(ws)
    assert report["ok"] == (tamper is None)
    if tamper is not None:  # the tampering is found (so the comparison compared findings)
        assert report["findings"]
    if tamper in (change_amount, change_evidence):
        assert any(f["code"] == "replay-mismatch" for f in report["findings"])
    if tamper is change_workbook:
        assert any(f["code"] == "workbook-mismatch" for f in report["findings"])


# --- sib.forked -------------------------------------------------------------------------------

def _square(x: int) -> int:
    return x * x


@needs_fork
def test_jobs_give_their_results_in_the_children() -> None:
    parent = os.getpid()
    jobs = Jobs(2)
    pending = [jobs.submit(lambda k=k: (_square(k), os.getpid() != parent)) for k in range(5)]
    assert [p.result() for p in pending] == [(k * k, True) for k in range(5)]


@needs_fork
def test_a_child_that_dies_has_its_job_run_in_the_parent() -> None:
    parent = os.getpid()

    def job() -> str:
        if os.getpid() != parent:
            os._exit(3)  # the child dies without a word
        return "done here"

    assert Jobs(2).submit(job).result() == "done here"


@needs_fork
def test_a_job_that_raises_raises_in_the_parent_as_inline() -> None:
    def job() -> None:
        raise ValueError("broken input")

    pending = Jobs(2).submit(job)
    with pytest.raises(ValueError, match="broken input"):
        pending.result()


def test_one_worker_runs_the_job_when_submitted() -> None:
    seen = []
    pending = Jobs(1).submit(lambda: seen.append(os.getpid()) or 7)
    assert seen == [os.getpid()] and pending.result() == 7



@needs_fork
def test_sib_audit_workers_prints_the_same_whatever_n(tmp_path: Path) -> None:
    from test_audit import run
    ws = copy_workspace(tmp_path, upto="2019-Q4")
    change_amount(ws)
    one, two = run(ws, "audit", "--workers", "1"), run(ws, "audit", "--workers", "2")
    assert one.exit_code == two.exit_code == 1
    assert (one.stdout, one.stderr) == (two.stdout, two.stderr)
    assert "replay-mismatch" in one.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_counts_each_claim_once_in_order(tmp_path: Path, workers: int) -> None:
    ws = copy_workspace(tmp_path, upto="2019-Q4")
    seen = []
    report = audit(ws, progress=lambda done, total, label: seen.append((done, total, label)),
                   workers=workers)
    assert seen == [(k + 1, 4, c.period) for k, c in enumerate(report.claims)]
    assert [c.period for c in report.claims] == ["2019-Q1", "2019-Q2", "2019-Q3", "2019-Q4"]


@needs_fork
def test_ready_says_when_a_child_has_reported() -> None:
    import time
    r, w = os.pipe()  # the child waits for this pipe, so it cannot have reported yet

    def job() -> int:
        os.close(w)
        os.read(r, 1)
        return 5

    pending = Jobs(2).submit(job)
    assert not pending.ready()
    os.write(w, b"x")
    for _ in range(3000):  # (not a timing: the child needs a moment to answer)
        if pending.ready():
            break
        time.sleep(0.01)
    assert pending.ready() and pending.result() == 5
    os.close(r), os.close(w)
