"""Concurrency: `sib claim` processes started together on one workspace (issue: hardening,
item 4).

Real processes (the `sib` console script), started back to back so that their runs
overlap: exactly one issues the claim; every other one either waits for the lock and then
finds the period "already issued, unchanged" (exit 0), or refuses with a clear message
(exit 1); none prints a traceback; the result is byte for byte the claim a lone run writes
and passes `sib audit`. Which of the two a loser does depends on the scheduler, so the
tests accept both and check each fully; a separate test forces the refusal.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sib.audit import audit
from test_fuzz import CID, PERIOD, build_base

EPOCH = "1650000000"
ENV = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH)
SIB = Path(sys.executable).parent / "sib"
COMMAND = [str(SIB)] if SIB.exists() else [sys.executable, "-c", "from sib.cli import main; main()"]
REFUSED = "another sib claim is writing to ledgers/tiny (it holds ledgers/tiny/.lock)"


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """The workspace, and the claim a lone run writes."""
    root = tmp_path_factory.mktemp("concurrency")
    ws = build_base(root / "base")
    alone = root / "alone"
    shutil.copytree(ws, alone)
    done = subprocess.run([*COMMAND, "claim", "--period", PERIOD, "-w", str(alone)], env=ENV,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return ws, files(alone / "ledgers" / CID / PERIOD)


def start_together(ws: Path, periods: list[str], command=COMMAND, env=ENV) -> list[tuple]:
    procs = [subprocess.Popen([*command, "claim", "--period", p, "-w", str(ws)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in periods]
    return [(p.wait(), *p.communicate()) for p in procs]


@pytest.mark.parametrize("n", [2, 2, 2, 3, 4], ids=["two-a", "two-b", "two-c", "three", "four"])
def test_claims_started_together_issue_exactly_once(base, tmp_path: Path, n: int) -> None:
    ws_base, alone = base
    ws = tmp_path / "ws"
    shutil.copytree(ws_base, ws)
    results = start_together(ws, [PERIOD] * n)
    issued = waited = refused = 0
    for code, out, err in results:
        assert "Traceback" not in out + err and "internal error" not in err, err
        if code == 0 and f"{PERIOD} (2022-04-01 to 2022-06-30): issued" in out:
            issued += 1
        elif code == 0:
            assert "already issued, unchanged" in out, out
            waited += 1
        else:
            assert code == 1 and err.startswith(f"sib: {REFUSED}"), (code, err)
            refused += 1
    assert issued == 1, results
    assert waited + refused == n - 1
    root = ws / "ledgers" / CID
    assert files(root / PERIOD) == alone  # as if it ran alone
    assert not list(root.glob(".tmp-*"))
    assert not audit(ws, CID).findings


def test_two_periods_started_together_stay_in_order(base, tmp_path: Path) -> None:
    """2022-Q2 and 2022-Q3 at once: Q3 either waits for Q2 and follows it, or (when it gets
    the lock first) refuses because Q2 is not issued yet; never a gap or a mixed chain."""
    ws_base, alone = base
    ws = tmp_path / "ws"
    shutil.copytree(ws_base, ws)
    (q2, q2_out, q2_err), (q3, q3_out, q3_err) = start_together(ws, [PERIOD, "2022-Q3"])
    assert q2 == 0, q2_err
    assert files(ws / "ledgers" / CID / PERIOD) == alone
    if q3 == 0:
        assert "2022-Q3 (2022-07-01 to 2022-09-30): issued" in q3_out
    else:
        assert q3 == 1 and "2022-Q3 cannot be claimed yet" in q3_err and \
               "the next one due is 2022-Q2" in q3_err, q3_err
        assert not (ws / "ledgers" / CID / "2022-Q3").exists()
    assert "Traceback" not in q2_err + q3_err
    assert not audit(ws, CID).findings


def test_a_claim_that_cannot_get_the_lock_refuses_clearly(base, tmp_path: Path) -> None:
    """The lock held by another process (this test) for longer than the wait: a clear refusal
    naming the lock, nothing written; once the lock is free the claim goes through. The
    wait is shortened to half a second in the child, so the test does not sit for 10 s."""
    ws_base, alone = base
    ws = tmp_path / "ws"
    shutil.copytree(ws_base, ws)
    short_wait = [sys.executable, "-c", textwrap.dedent("""\
        import sib.issue
        sib.issue.LOCK_WAIT_SECONDS = 0.5
        from sib.cli import main
        main()
        """)]
    lock = ws / "ledgers" / CID / ".lock"
    before = files(ws)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        [(code, out, err)] = start_together(ws, [PERIOD], command=short_wait)
    finally:
        os.close(fd)
    assert code == 1 and out == ""
    assert err == (f"sib: {REFUSED}; waited 0 s — try again when it has finished\n"), err
    assert files(ws) == before
    [(code, out, err)] = start_together(ws, [PERIOD], command=short_wait)
    assert code == 0, err
    assert files(ws / "ledgers" / CID / PERIOD) == alone
    assert not audit(ws, CID).findings
