"""The invariant check a claim runs before it is issued (reconcile.claim_after → _violations).

A claim checks, milestone by milestone and participant by participant, only the groups it
has a line for — with every earlier line of those groups — plus every funder and the
contract over all lines. These tests break the allocation on purpose (a bug sib must catch)
in ways that only show when the earlier claims' lines are counted, so a check that looked
at this claim's lines alone would let them through — through `sib claim` (the earlier
lines read from the ledgers and coded from scratch) and on the path `sib model` takes (the
earlier lines coded as the previous claim handed them on, `Claim.after`), where each claim
is still checked against its own cumulative lines, so that a later reversal cannot hide
the breach.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import sib.reconcile as rc
from sib.cli import cli

CONTRACT = """\
format: sib-contract/1
id: scenario
name: Participant cap
currency: GBP
claims: quarter
term:
  service_start: 2022-01-01
  enrolment_end: 2022-12-31
  outcomes_end: 2022-12-31
caps:
  participant: 250.00
funders:
  - {id: dcms, name: DCMS, kind: central, cap: 1000.00}
  - {id: brent, name: Brent, kind: local-authority}
payers:
  - split:
      - {funder: dcms, share: 60}
      - {funder: brent, share: 40}
outcomes:
  - id: engagement
    name: Engagement
    milestone: engagement
    prices: {2022-01-01: 100.00}
  - id: job-start
    name: Job start
    milestone: job-start
    prices: {2022-01-01: 200.00}
"""
PARTICIPANTS = "participant_id,enrolled_on\nP1,2022-01-05\nP2,2022-01-05\n"
Q1 = ("milestone_id,participant_id,milestone,achieved_on,status,verified_on,evidence_ref\n"
      "M1,P1,engagement,2022-01-10,verified,2022-03-25,E1\n")
Q2 = Q1 + "M2,P1,job-start,2022-04-10,verified,2022-06-25,E2\n"


def _workspace(tmp_path: Path, milestones: str) -> Path:
    (tmp_path / "contracts").mkdir(exist_ok=True)
    (tmp_path / "evidence" / "scenario").mkdir(parents=True, exist_ok=True)
    (tmp_path / "ledgers").mkdir(exist_ok=True)
    (tmp_path / "contracts" / "scenario.yaml").write_text(CONTRACT, "utf-8")
    (tmp_path / "evidence" / "scenario" / "participants.csv").write_text(PARTICIPANTS, "utf-8")
    (tmp_path / "evidence" / "scenario" / "milestones.csv").write_text(milestones, "utf-8")
    return tmp_path


def _claim(ws: Path, period: str):
    return CliRunner().invoke(cli, ["claim", "--period", period, "-w", str(ws)])


def _ignoring_the_participant_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Allocate as if P1 had been paid nothing before: the bug of forgetting history."""
    real = rc._allocate

    def forgetful(c, m, order, outcome, price, split_ix, splits, totals, price_from=None):
        totals.participant_paid.clear()
        return real(c, m, order, outcome, price, split_ix, splits, totals, price_from)

    monkeypatch.setattr(rc, "_allocate", forgetful)


def test_a_participant_cap_broken_only_with_earlier_claims_is_refused(tmp_path, monkeypatch):
    # Q1 pays M1 100.00 (60.00 + 40.00). In Q2, P1's headroom is 250.00 − 100.00 = 150.00, so
    # M2 (200.00) may get 150.00; the forgetful allocation pays all 200.00, and P1 would hold
    # 100.00 + 200.00 = 300.00 > 250.00 — over the cap only counting the Q1 lines.
    ws = _workspace(tmp_path, Q1)
    assert _claim(ws, "2022-Q1").exit_code == 0
    (ws / "evidence" / "scenario" / "milestones.csv").write_text(Q2, "utf-8")
    _ignoring_the_participant_cap(monkeypatch)
    result = _claim(ws, "2022-Q2")
    assert result.exit_code == 1, result.output
    assert "participant-cap-exceeded: participant P1 holds £300.00" in result.output
    assert not (ws / "ledgers" / "scenario" / "2022-Q2").exists()


def test_the_same_claim_without_the_bug_is_issued_capped(tmp_path):
    # the control: the real allocation pays M2 the 150.00 of headroom (90.00 + 60.00)
    ws = _workspace(tmp_path, Q1)
    assert _claim(ws, "2022-Q1").exit_code == 0
    (ws / "evidence" / "scenario" / "milestones.csv").write_text(Q2, "utf-8")
    result = _claim(ws, "2022-Q2")
    assert result.exit_code == 0, result.output
    ledger = (ws / "ledgers" / "scenario" / "2022-Q2" / "ledger.csv").read_text("utf-8")
    assert ",M2,P1,job-start," in ledger and ",dcms,60.0000,90.00,30.00,participant," in ledger


def test_a_funder_cap_is_checked_over_every_earlier_line(tmp_path, monkeypatch):
    # DCMS's cap is 1000.00. Earlier lines: Q1 pays P1 and P2 engagement, 60.00 each to DCMS.
    # The bug below reports DCMS as unpaid and lets the claim pay it 950.00 more in one line:
    # 60.00 + 60.00 + 950.00 = 1070.00 > 1000.00 only with the earlier lines counted.
    q1 = Q1 + "M3,P2,engagement,2022-01-10,verified,2022-03-25,E3\n"
    ws = _workspace(tmp_path, q1)
    assert _claim(ws, "2022-Q1").exit_code == 0
    (ws / "evidence" / "scenario" / "milestones.csv").write_text(
        q1 + "M4,P2,job-start,2022-04-10,verified,2022-06-25,E4\n", "utf-8")
    real = rc._allocate

    def overpaying(*args, **kwargs):
        rows, amounts, capped, caps, fail_code, fail_detail = real(*args, **kwargs)
        amounts[rows[0]] = [95000] + amounts[rows[0]][1:]
        return rows, amounts, capped, caps, fail_code, fail_detail

    monkeypatch.setattr(rc, "_allocate", overpaying)
    result = _claim(ws, "2022-Q2")
    assert result.exit_code == 1, result.output
    assert "funder-cap-exceeded: dcms has been paid £1,070.00" in result.output


def test_standing_lines_of_a_ledger_with_a_repeated_line_id_do_not_crash():
    # a damaged (resealed) ledger may repeat a line id: the reversal names the first line
    # with it, as sib audit reads it, and the engine must not fail on the repeat
    import numpy as np

    kind = np.array(["payment", "payment", "payment", "reversal"], dtype=object)
    mid = np.array(["M1", "M1", "M2", "M1"], dtype=object)
    period = np.array(["2022-Q1", "2022-Q1", "2022-Q1", "2022-Q2"], dtype=object)
    line_id = np.array(["2022-Q1-00001", "2022-Q1-00002", "2022-Q1-00002", "2022-Q2-00001"],
                       dtype=object)
    reverses = np.array(["", "", "", "2022-Q1-00001"], dtype=object)
    # M1's payment of 2022-Q1 (both its lines) is reversed; M2's line stands
    assert rc.standing_mask(kind, mid, period, line_id, reverses).tolist() == [
        False, False, True, False]


# --- the path sib model takes: the earlier lines handed on, coded, from claim to claim ----------

def _handed_on(ws: Path, milestones: str, label: str, number: int, earlier):
    """Claim `label` in memory with the earlier lines as the previous claim handed them on."""
    from sib.evidence import read_evidence
    from sib.period import parse_period
    from sib.workspace import find_contract

    (ws / "evidence" / "scenario" / "milestones.csv").write_text(milestones, "utf-8")
    lc = find_contract(ws, "scenario")
    ev = read_evidence(ws, lc)
    assert not ev.problems, ev.problems
    return rc.claim_after(lc.contract, rc.Rows.of(ev), earlier.lines, number,
                          parse_period(label, "quarter"), earlier=earlier)


def test_a_participant_cap_broken_only_with_earlier_claims_is_refused_when_handed_on(
        tmp_path, monkeypatch):
    # as above (P1 would hold 100.00 + 200.00 = 300.00 > 250.00), with Q1's lines handed on
    ws = _workspace(tmp_path, Q1)
    q1 = _handed_on(ws, Q1, "2022-Q1", 1, rc.Earlier.of(rc.no_lines()))
    assert q1.after.minted == {"2022-Q1"}  # the model's path, not a re-coding of the lines
    _ignoring_the_participant_cap(monkeypatch)
    with pytest.raises(rc.InvariantError) as refused:
        _handed_on(ws, Q2, "2022-Q2", 2, q1.after)
    assert "participant-cap-exceeded: participant P1 holds £300.00" in str(refused.value)


def test_a_funder_cap_is_checked_over_every_earlier_line_when_handed_on(tmp_path, monkeypatch):
    # DCMS 60.00 + 60.00 in Q1, then a bug pays it 950.00 in Q2: 1070.00 > 1000.00
    q1 = Q1 + "M3,P2,engagement,2022-01-10,verified,2022-03-25,E3\n"
    ws = _workspace(tmp_path, q1)
    first = _handed_on(ws, q1, "2022-Q1", 1, rc.Earlier.of(rc.no_lines()))
    real = rc._allocate

    def overpaying(*args, **kwargs):
        rows, amounts, capped, caps, fail_code, fail_detail = real(*args, **kwargs)
        amounts[rows[0]] = [95000] + amounts[rows[0]][1:]
        return rows, amounts, capped, caps, fail_code, fail_detail

    monkeypatch.setattr(rc, "_allocate", overpaying)
    with pytest.raises(rc.InvariantError) as refused:
        _handed_on(ws, q1 + "M4,P2,job-start,2022-04-10,verified,2022-06-25,E4\n", "2022-Q2",
                   2, first.after)
    assert "funder-cap-exceeded: dcms has been paid £1,070.00" in str(refused.value)


def test_a_breach_a_later_reversal_would_hide_is_refused_at_its_own_claim(tmp_path, monkeypatch):
    # Q2's bug makes P1 hold 300.00 > 250.00; withdrawing M2 in Q3 would reverse the 200.00
    # and leave 100.00, so the lines of all three claims together break nothing. Each claim
    # is checked against its own cumulative lines, so Q2 is refused.
    ws = _workspace(tmp_path, Q1)
    q1 = _handed_on(ws, Q1, "2022-Q1", 1, rc.Earlier.of(rc.no_lines()))
    _ignoring_the_participant_cap(monkeypatch)
    with pytest.raises(rc.InvariantError, match="participant-cap-exceeded"):
        _handed_on(ws, Q2, "2022-Q2", 2, q1.after)
    # the same history with the check switched off for Q2 only: the breach is issued, and
    # Q3's reversal takes P1 back under the cap — nothing after Q2 would see what Q2 broke
    monkeypatch.setattr(rc, "_violations", lambda *a, **k: [])
    q2 = _handed_on(ws, Q2, "2022-Q2", 2, q1.after)
    monkeypatch.undo()  # the real allocation and check again
    q3 = _handed_on(ws, Q2.replace("job-start,2022-04-10,verified",
                                   "job-start,2022-04-10,withdrawn"), "2022-Q3", 3, q2.after)
    assert q3.decisions.set_index("milestone_id").loc["M2", "decision"] == "reversed"
    every = pd.concat([q1.lines, q2.lines, q3.lines], ignore_index=True)
    assert int(every[every["participant_id"] == "P1"]["amount"].sum()) == 10000
    from sib.workspace import find_contract
    assert rc.check_invariants(find_contract(ws, "scenario").contract, every) == []
