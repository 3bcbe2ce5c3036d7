"""Whole-history properties of claims, checked with hypothesis (issue: hardening, item 6).

Random contracts (funders, routes, caps, prerequisites, groups, price versions, limits,
volume caps) and random evidence that changes between claims (late verification,
withdrawals, reinstatements, corrected hours, boroughs, ages, dates and participants,
backdated price and share variations) come from tests/strategies.py (imported, not
edited). Each scenario is issued claim by claim, and these hold on the files written,
read back with the csv module, not with sib's own parser:

1. claiming period by period equals replaying the history: a second workspace built
   only from each claim's `inputs/` and issued in order writes every claim byte for byte
   the same (manifest included, the clock pinned), and `sib audit` finds nothing;
2. at every claim, each milestone's standing payment is between zero and its price, each
   funder's part of it is never negative, and every reversal cancels exactly one standing
   payment line, once;
3. at every claim no cap is exceeded: funder caps, the contract cap, the participant cap,
   per-participant limits of outcomes and groups, and volume caps (`max_count`);
4. a paid milestone withdrawn at one claim and restored at the next is reversed, then paid
   again — in full as before when nothing else took its room in between, or at worst
   refused for a limit or cap that someone else filled;
5. at every claim every milestone row gets exactly one decision, with a reason the
   decision allows, and its net money matches the ledger.

Examples per test: COUNTS, 25 in the `ci` profile (the default) and 300 in `long`
(HYPOTHESIS_PROFILE=long, run by hand). Each example uses fresh temporary workspaces.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sib.audit import audit
from sib.issue import issue_claim, prepare_claim
from sib.period import parse_period
from strategies import (CONTRACT_ID, Scenario, claim_folder, pence_of, read_csv, read_ledger,
                        scenarios, write_inputs, write_workspace)

# examples per test, (ci, long): fixed here, whatever max_examples the profile gives others
COUNTS = {"history": (25, 300), "restore": (25, 300)}


def history_settings(name: str):
    ci, long = COUNTS[name]
    return settings(max_examples=long if os.environ.get("HYPOTHESIS_PROFILE") == "long" else ci,
                    deadline=None, suppress_health_check=list(HealthCheck))

ELIGIBILITY = {"unknown-participant", "unknown-milestone", "enrolled-outside-term",
               "participant-ineligible", "achieved-outside-term", "conditions-not-met",
               "evidence-not-accepted", "outside-enrolment-window", "missing-prerequisite",
               "prerequisite-too-old", "no-price", "no-funder-for-route"}
MONEY = {"limit-reached", "volume-cap", "participant-cap", "contract-cap", "funder-cap"}
CAPS = {"participant-cap", "contract-cap", "funder-cap"}
# decision → the reasons it may carry (README, "Decisions and reason codes")
REASONS = {
    "paid": {""} | CAPS,
    "re-rated": {"changed-participant", "changed-outcome", "changed-price", "changed-split"},
    "reversed": {"withdrawn", "pending-verification"} | ELIGIBILITY | MONEY,
    "paid-earlier": {""},
    "pending-verification": {"status-pending", "verified-after-period"},
    "rejected": ELIGIBILITY | MONEY | {"withdrawn", "invalid-row"},
}


@contextmanager
def workspaces(n: int):
    with tempfile.TemporaryDirectory(prefix="sib-history-") as tmp:
        yield [Path(tmp) / f"ws{k}" for k in range(n)]


@contextmanager
def fixed_clock():
    with mock.patch.dict(os.environ, {"SOURCE_DATE_EPOCH": "1650000000"}):
        yield


def claim_files(ws: Path, period: str) -> dict[str, bytes]:
    folder = claim_folder(ws, period)
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def next_label(contract: dict, label: str) -> str | None:
    """The period after `label`, or None when it would start after claims_end."""
    nxt = parse_period(label, contract["claims"]).next()
    end = contract["term"].get("claims_end")
    return None if end is not None and nxt.start.isoformat() > end else nxt.label


# --- the history as the files tell it ------------------------------------------------------------

class History:
    """Every ledger line issued up to a claim, and what stands.

    A payment is the lines one claim wrote for one milestone. A reversal cancels the whole
    payment it names (ledger.md reverses only the non-zero lines, so a 0.00 line left by a
    funder cap has no reversal line of its own); the lines of uncancelled payments stand.
    """

    def __init__(self, ws: Path, periods: list[str]):
        self.lines = [r for p in periods for r in read_ledger(claim_folder(ws, p) / "ledger.csv")]
        reversed_ids = Counter(r["reverses"] for r in self.lines if r["kind"] == "reversal")
        self.reversed_ids = reversed_ids
        self.payments: dict[tuple, list[dict]] = defaultdict(list)
        for r in self.lines:
            if r["kind"] == "payment":
                self.payments[(r["milestone_id"], r["period"])].append(r)
        self.cancelled = {key for key, rows in self.payments.items()
                          if any(r["line_id"] in reversed_ids for r in rows)}
        self.standing = [r for key, rows in self.payments.items() if key not in self.cancelled
                         for r in rows]

    def net(self, key) -> Counter:
        out: Counter = Counter()
        for r in self.lines:
            out[key(r)] += r["amount"]
        return out

    def standing_by_milestone(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = defaultdict(list)
        for r in self.standing:
            out[r["milestone_id"]].append(r)
        return out


def check_ledger_history(h: History) -> None:
    """Property 2: each reversal cancels one standing payment line exactly, once; standing
    payments lie between zero and the price."""
    by_id = {r["line_id"]: r for r in h.lines}
    assert len(by_id) == len(h.lines)  # line ids are unique across claims
    for rid, n in h.reversed_ids.items():
        assert n == 1, f"line {rid} reversed {n} times"
        orig = by_id[rid]
        assert orig["kind"] == "payment", rid
    for key in h.cancelled:  # a cancelled payment has every non-zero line reversed
        rows = h.payments[key]
        assert {r["line_id"] for r in rows if r["amount"] != 0} == {
            r["line_id"] for r in rows if r["line_id"] in h.reversed_ids}, rows
    for r in h.lines:
        if r["kind"] == "reversal":
            orig = by_id[r["reverses"]]
            assert orig["period"] != r["period"], (r, orig)  # it reverses an earlier claim
            assert r["amount"] == -orig["amount"] and r["amount"] != 0, (r, orig)
            assert (r["milestone_id"], r["funder"], r["share"], r["price"]) == (
                orig["milestone_id"], orig["funder"], orig["share"], orig["price"]), (r, orig)
    net_m = h.net(lambda r: r["milestone_id"])
    net_mf = h.net(lambda r: (r["milestone_id"], r["funder"]))
    assert min(net_mf.values(), default=0) >= 0, net_mf
    standing = h.standing_by_milestone()
    for mid, total in net_m.items():
        rows = standing.get(mid, [])
        assert total == sum(r["amount"] for r in rows), (mid, total, rows)
        if rows:
            assert len({r["period"] for r in rows}) == 1, rows  # one standing payment
            assert len({r["price"] for r in rows}) == 1, rows
            assert 0 <= total <= rows[0]["price"], (mid, total, rows)
            assert len({r["funder"] for r in rows}) == len(rows), rows  # one line per funder
        else:
            assert total == 0, mid


def check_caps(h: History, contract: dict) -> None:
    """Property 3: every money cap, limit and volume cap, on what stands."""
    by_funder = h.net(lambda r: r["funder"])
    for f in contract["funders"]:
        if "cap" in f:
            assert by_funder[f["id"]] <= pence_of(f["cap"]), (f, by_funder)
    caps = contract.get("caps", {})
    total = sum(r["amount"] for r in h.lines)
    if "contract" in caps:
        assert total <= pence_of(caps["contract"]), (total, caps)
    if "participant" in caps:
        by_p = Counter()
        for r in h.standing:
            by_p[r["participant_id"]] += r["amount"]
        assert max(by_p.values(), default=0) <= pence_of(caps["participant"]), by_p
    outcomes = {o["id"]: o for o in contract["outcomes"]}
    groups = contract.get("groups") or {}
    paid = {(r["milestone_id"], r["participant_id"], r["outcome"]) for r in h.standing}
    per_limit: Counter = Counter()
    per_outcome: Counter = Counter()
    for _mid, pid, oid in paid:
        o = outcomes[oid]
        key = ("group", o["group"]) if "group" in o else ("outcome", oid)
        per_limit[(pid, key)] += 1
        per_outcome[oid] += 1
    for (pid, (kind, name)), n in per_limit.items():
        limit = (groups[name]["limit_per_participant"] if kind == "group"
                 else outcomes[name].get("limit_per_participant", 1))
        assert n <= limit, (pid, kind, name, n, limit)
    for oid, n in per_outcome.items():
        if "max_count" in outcomes[oid]:
            assert n <= outcomes[oid]["max_count"], (oid, n)
    # milestones with standing payments keep one participant and one outcome
    assert len({mid for mid, _, _ in paid}) == len(paid), paid


def check_decisions(ws: Path, period: str, h_before: History, h_after: History) -> None:
    """Property 5: one decision per row, a reason the decision allows, the money matching."""
    folder = claim_folder(ws, period)
    rows = read_csv(ws / "evidence" / CONTRACT_ID / "milestones.csv")
    ids = {r["milestone_id"] for r in rows}
    decisions = read_csv(folder / "decisions.csv")
    got = [d["milestone_id"] for d in decisions]
    assert sorted(got) == sorted(ids) and len(got) == len(set(got)), (got, ids)
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    counts = Counter(d["decision"] for d in decisions)
    assert manifest["rows_in"] == len(ids) == sum(manifest["decisions"].values())
    assert {k: v for k, v in manifest["decisions"].items() if v} == dict(counts)
    this = Counter()
    for r in read_ledger(folder / "ledger.csv"):
        this[r["milestone_id"]] += r["amount"]
    before = h_before.net(lambda r: r["milestone_id"])
    after = h_after.net(lambda r: r["milestone_id"])
    for d in decisions:
        decision, reason, mid = d["decision"], d["reason"], d["milestone_id"]
        assert reason in REASONS[decision], d
        amount = pence_of(d["amount"])
        assert amount == this[mid], (d, this[mid])
        if decision in ("paid-earlier", "pending-verification", "rejected"):
            assert amount == 0, d
        if decision == "paid":
            assert amount >= 0 and before[mid] == 0, d
        if decision == "reversed":
            assert after[mid] == 0 and amount == -before[mid], d
        if decision == "paid-earlier":
            assert after[mid] == before[mid], d
        if decision in ("pending-verification", "rejected"):
            assert after[mid] == 0, d  # a milestone not payable now has nothing standing


def issue_history(ws: Path, s: Scenario) -> list[Scenario]:
    """Issue the scenario claim by claim, checking properties 2, 3 and 5 after each."""
    states = s.states()
    write_workspace(ws, s)
    for k, (period, state) in enumerate(zip(s.periods, states)):
        write_inputs(ws, state)
        _prep, issued = issue_claim(ws, CONTRACT_ID, period)
        assert issued.outcome == "issued", (period, issued)
        before, after = History(ws, s.periods[:k]), History(ws, s.periods[: k + 1])
        check_ledger_history(after)
        check_caps(after, state.contract)
        check_decisions(ws, period, before, after)
    return states


def replay(ws: Path, other: Path, periods: list[str]) -> None:
    """Property 1: issue every claim again in `other` from its inputs/ alone."""
    (other / "contracts").mkdir(parents=True)
    (other / "ledgers").mkdir()
    evidence = other / "evidence" / CONTRACT_ID
    evidence.mkdir(parents=True)
    for period in periods:
        inputs = claim_folder(ws, period) / "inputs"
        shutil.copyfile(inputs / "contract.yaml", other / "contracts" / f"{CONTRACT_ID}.yaml")
        for name in ("participants.csv", "milestones.csv"):
            shutil.copyfile(inputs / name, evidence / name)
        _prep, issued = issue_claim(other, CONTRACT_ID, period)
        assert issued.outcome == "issued"
        assert claim_files(other, period) == claim_files(ws, period), period


# --- properties 1, 2, 3, 5 -----------------------------------------------------------------------

@history_settings("history")
@given(s=scenarios(max_claims=4))
def test_whole_history_holds_at_every_claim_and_replays_byte_for_byte(s):
    with workspaces(2) as (ws, other), fixed_clock():
        issue_history(ws, s)
        replay(ws, other, s.periods)
        report = audit(ws, CONTRACT_ID)
        assert not report.findings, [str(p) for p in report.findings]
        event(f"{len(s.periods)} claims")


# --- property 4: withdrawn, then restored -----------------------------------------------------------

def took_room(ws: Path, periods: list[str], mid: str, old: list[dict], reason: str,
              contract: dict) -> bool:
    """Whether, in `periods`, another milestone was paid that shares with `mid` the limit or
    cap named by `reason` (so it may have taken the room `mid` left)."""
    outcomes = {o["id"]: o for o in contract["outcomes"]}
    pid, oid = old[0]["participant_id"], old[0]["outcome"]
    funders = {r["funder"] for r in old}

    def limit_key(o: str) -> tuple:
        return ("group", outcomes[o]["group"]) if "group" in outcomes[o] else ("outcome", o)

    others = [r for period in periods for r in read_ledger(claim_folder(ws, period) / "ledger.csv")
              if r["kind"] == "payment" and r["milestone_id"] != mid]
    return any(reason == "contract-cap"
               or (reason == "participant-cap" and r["participant_id"] == pid)
               or (reason == "funder-cap" and r["funder"] in funders and r["amount"] > 0)
               or (reason == "volume-cap" and r["outcome"] == oid)
               or (reason == "limit-reached" and r["participant_id"] == pid
                   and limit_key(r["outcome"]) == limit_key(oid))
               for r in others)


@history_settings("restore")
@given(s=scenarios(max_claims=3), data=st.data())
def test_a_withdrawn_then_restored_milestone_is_paid_again(s, data):
    withdraw_at = next_label(s.contract, s.periods[-1])
    restore_at = withdraw_at and next_label(s.contract, withdraw_at)
    if restore_at is None:
        event("vacuous: no room in the term for two more claims")
        return
    with workspaces(1) as (ws,), fixed_clock():
        states = issue_history(ws, s)
        last = states[-1]
        h = History(ws, s.periods)
        standing = h.standing_by_milestone()
        if not standing:
            event("vacuous: nothing paid")
            return
        mid = data.draw(st.sampled_from(sorted(standing)), label="milestone")
        old = sorted((r["funder"], r["share"], r["price"], r["amount"]) for r in standing[mid])
        paid_before = sum(r["amount"] for r in standing[mid])

        withdrawn = copy.deepcopy(last)
        withdrawn.extra_rows = []
        for m in withdrawn.milestones:
            if m["milestone_id"] == mid:
                m["status"] = "withdrawn"
        restored = copy.deepcopy(last)
        restored.extra_rows = []

        periods = list(s.periods)
        seen = {}
        for label, state in ((withdraw_at, withdrawn), (restore_at, restored)):
            write_inputs(ws, state)
            before = History(ws, periods)
            issue_claim(ws, CONTRACT_ID, label)
            periods.append(label)
            after = History(ws, periods)
            check_ledger_history(after)
            check_caps(after, state.contract)
            check_decisions(ws, label, before, after)
            seen[label] = {d["milestone_id"]: d for d in
                           read_csv(claim_folder(ws, label) / "decisions.csv")}

        gone = seen[withdraw_at][mid]
        assert (gone["decision"], gone["reason"]) == ("reversed", "withdrawn"), gone
        assert pence_of(gone["amount"]) == -paid_before
        back = seen[restore_at][mid]
        others_paid = any(d["decision"] in ("paid", "re-rated")
                          for label in seen for m, d in seen[label].items() if m != mid)
        others_changed = others_paid or any(
            d["decision"] == "reversed" for label in seen for m, d in seen[label].items()
            if m != mid)
        now = History(ws, periods).standing_by_milestone().get(mid, [])
        amount = sum(r["amount"] for r in now)
        if back["decision"] == "rejected":
            # only for a limit or cap, and only when another milestone sharing that limit
            # or cap was paid meanwhile and took the room it left
            assert back["reason"] in MONEY, back
            assert took_room(ws, [withdraw_at, restore_at], mid, standing[mid],
                             back["reason"], s.contract), (back, seen)
            event("restored: refused, its room taken by another milestone")
            return
        assert back["decision"] == "paid", back
        price = old[0][2]
        if others_paid:
            assert 0 <= amount <= price, (amount, price)
        else:  # the room it left is still there: at least what it had, never over the price
            assert paid_before <= amount <= price, (paid_before, amount, price)
        if not others_changed:
            new = sorted((r["funder"], r["share"], r["price"], r["amount"]) for r in now)
            assert new == old, (old, new)
            event("restored: paid again exactly as before")
        else:
            event("restored: paid again, others changed meanwhile")


# --- engine bugs found here, for the owner of sib/reconcile.py ---------------------------------------
# (each was xfail(strict=True) until fixed in sib/reconcile.py)

LEFT_WITH_NOTHING = """\
format: sib-contract/1
id: prop
name: Contract cap reached after the participant cap cut the price
currency: GBP
claims: quarter
term: {service_start: '2022-01-01', enrolment_end: '2022-06-30', outcomes_end: '2022-06-30'}
caps: {contract: '1.00', participant: '50.00'}
funders:
  - {id: f1, name: Funder 1, kind: other}
payers:
  - split: [{funder: f1, share: 100}]
outcomes:
  - {id: o1, name: Outcome, milestone: t1, prices: {'2022-01-01': '100.00'}}
"""


def test_left_with_nothing_by_the_contract_cap_says_contract_cap(tmp_path):
    """Found by test_a_withdrawn_then_restored_milestone_is_paid_again. M1 (p1) takes the
    whole contract cap: 100.00 cut to 50.00 by the participant cap, then to 1.00 by the
    contract cap. M2 (p2, nothing paid yet) is cut to 50.00 by the participant cap, then
    to 0.00 by the contract cap: left with nothing by the contract cap, so
    `rejected contract-cap`. The engine keeps the first cap that cut anything
    (reconcile.py, `bit = bit or "contract"`, right for a line's `cap` column) and decides
    `participant-cap` with the detail "participant p2 has reached the participant cap of
    £50.00" — untrue: p2 has been paid nothing. (The property test met this with a funder
    cap too, fixed in e10ba16; this contract-cap case was fixed in 277deb6.)"""
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "prop.yaml").write_text(LEFT_WITH_NOTHING, "utf-8")
    ev = tmp_path / "evidence" / "prop"
    ev.mkdir(parents=True)
    (ev / "participants.csv").write_text(
        "participant_id,enrolled_on\np1,2022-01-10\np2,2022-01-10\n", "utf-8")
    (ev / "milestones.csv").write_text(
        "milestone_id,participant_id,milestone,achieved_on,status,verified_on,evidence_ref\n"
        "M1,p1,t1,2022-02-01,verified,2022-02-15,EV-1\n"
        "M2,p2,t1,2022-02-02,verified,2022-02-15,EV-2\n", "utf-8")
    prep = prepare_claim(tmp_path, "prop", "2022-Q1")
    d = prep.claim.decisions.set_index("milestone_id")
    assert (d.loc["M1", "decision"], d.loc["M1", "reason"]) == ("paid", "participant-cap")
    assert (d.loc["M2", "decision"], d.loc["M2", "reason"]) == ("rejected", "contract-cap")


ZERO_PRICE = """\
format: sib-contract/1
id: prop
name: A price of nothing
currency: GBP
claims: quarter
term: {service_start: '2022-01-01', enrolment_end: '2022-01-31', outcomes_end: '2022-01-31'}
funders:
  - {id: f1, name: Funder f1, kind: other}
payers:
  - split: [{funder: f1, share: 100}]
outcomes:
  - {id: o1, name: Outcome 1, milestone: t1, prices: {'2022-01-01': '0.00'}}
"""


def test_a_zero_price_is_not_blamed_on_a_cap_nobody_has(tmp_path):
    """Found by the long profile of the two properties above (HYPOTHESIS_PROFILE=long): with
    e10ba16 a milestone priced 0.00 crashed the claim (KeyError '' in reconcile._allocate,
    an internal error); 277deb6 stopped the crash by deciding it `rejected funder-cap` with
    the detail "every funder in its split (f1) has reached its cap" — but f1 has no cap and
    the contract none. A contract may price an outcome at 0.00 (check allows it); since
    3aa7973 it is `rejected no-price`, and its detail invents no cap."""
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "prop.yaml").write_text(ZERO_PRICE, "utf-8")
    ev = tmp_path / "evidence" / "prop"
    ev.mkdir(parents=True)
    (ev / "participants.csv").write_text("participant_id,enrolled_on\np1,2022-01-01\n", "utf-8")
    (ev / "milestones.csv").write_text(
        "milestone_id,participant_id,milestone,achieved_on,status,verified_on,evidence_ref\n"
        "M1,p1,t1,2022-01-01,verified,2022-01-01,EV-1\n", "utf-8")
    prep = prepare_claim(tmp_path, "prop", "2022-Q1")
    [d] = prep.claim.decisions.to_dict("records")
    assert d["reason"] not in CAPS, d
    assert (d["decision"], d["reason"]) == ("rejected", "no-price"), d
    assert "£0.00" in d["detail"] and "cap" not in d["detail"], d
