"""Properties of the claim engine, checked with hypothesis on random contracts and evidence.

The rules' invariants (claim-rules.md §3, §4, §7 and "Invariants"; ledger.md), each
checked on the files a claim writes, read back without sib's own parser:

1. splits add up exactly and never exceed the uncapped part (money.split, bounded_split);
2. no cap is ever exceeded, over consecutive claims with changing evidence;
3. shuffling the rows of the evidence files changes no byte of ledger.csv / decisions.csv;
4. re-running is byte-identical, and re-issuing an issued period is 'unchanged';
5. every milestone row gets exactly one decision, and the decision counts add up.

Profiles (tests/conftest.py): `ci` (default) and `long` (10x the examples), chosen with
HYPOTHESIS_PROFILE=long. Examples per property, ci / long: each split property 600 / 6000;
caps 30 / 300 (+ an explicit example); shuffled rows 20 / 200; re-running 15 / 150; one
decision per row 25 / 250. Each example gets fresh workspaces from `tempfile`, never the
function-scoped tmp_path (hypothesis does not reset it between examples).
"""

from __future__ import annotations

import copy
import json
import os
import random
import tempfile
from collections import Counter, defaultdict
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from unittest import mock

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sib import money
from sib.issue import issue_claim, manifest_bytes, prepare_claim
from sib.period import parse_period
from strategies import (CONTRACT_ID, Scenario, claim_folder, examples, pence_of, read_csv,
                        read_ledger, scenarios, share_units, write_inputs, write_workspace)

DECISIONS = ("paid", "re-rated", "reversed", "paid-earlier", "pending-verification", "rejected")


# A claim fsyncs every file it writes; on a busy disk that, not the engine, dominates the
# run time. Memory-backed /dev/shm (where there is one) makes fsync free.
TMP_ROOT = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@contextmanager
def workspaces(n: int):
    """`n` fresh, empty workspace folders for one hypothesis example."""
    with tempfile.TemporaryDirectory(prefix="sib-prop-", dir=TMP_ROOT) as tmp:
        yield [Path(tmp) / f"ws{k}" for k in range(n)]


@contextmanager
def fixed_clock():
    """Pin manifest.json's issued_at (the one clock read in sib) for byte comparisons."""
    with mock.patch.dict(os.environ, {"SOURCE_DATE_EPOCH": "1650000000"}):
        yield


def claim_files(ws: Path, period: str) -> dict[str, bytes]:
    folder = claim_folder(ws, period)
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def issue_all(ws: Path, s: Scenario, shuffle: random.Random | None = None,
              skip_invalid: bool = False, after_each=None) -> list[Scenario]:
    """Issue the scenario's claims in order, writing each state's inputs before its claim;
    `after_each(ws, s, periods_so_far, state)` checks the files after every claim."""
    states = s.states()
    write_workspace(ws, s)
    for k, (period, state) in enumerate(zip(s.periods, states)):
        write_inputs(ws, state, shuffle)
        _prep, issued = issue_claim(ws, CONTRACT_ID, period, skip_invalid=skip_invalid)
        assert issued.outcome == "issued", (period, issued)
        if after_each is not None:
            after_each(ws, s, s.periods[: k + 1], state)
    return states


# --- 1. splits ---------------------------------------------------------------------------------

TOTALS = st.integers(0, 10**9)


@settings(max_examples=examples(30))
@given(total=TOTALS, units=share_units())
@example(total=1, units=[333_333, 333_333, 333_334])       # one penny, near-equal thirds
@example(total=10**9, units=[1] * 19 + [1_000_000 - 19])  # tiny shares at the top total
def test_split_adds_up_and_each_part_is_floor_or_floor_plus_one(total, units):
    parts = money.split(total, units)
    assert len(parts) == len(units)
    assert sum(parts) == total
    for part, u in zip(parts, units):
        floor = total * u // money.SHARE_UNITS
        assert part in (floor, floor + 1), (part, total, u)
    # §4: the extra pennies go to the largest remainders, ties to the funder listed first
    rems = [total * u % money.SHARE_UNITS for u in units]
    got = [i for i, (p, u) in enumerate(zip(parts, units)) if p > total * u // money.SHARE_UNITS]
    order = sorted(range(len(units)), key=lambda i: (-rems[i], i))
    assert got == sorted(order[: len(got)])


@settings(max_examples=examples(30))
@given(amounts=st.tuples(TOTALS, TOTALS).map(sorted), units=share_units())
@example(amounts=[2, 3], units=[500_000, 500_000])                 # a penny held back
@example(amounts=[1, 10**9], units=[1, 999_999])                   # a penny, a tiny share
@example(amounts=[99, 100], units=[333_333, 333_333, 333_334])     # ties in the remainder
def test_bounded_split_adds_up_and_never_exceeds_the_uncapped_part(amounts, units):
    payable, full_total = amounts  # a capped amount, and the full price it was cut from
    full = money.split(full_total, units)
    parts = money.bounded_split(payable, units, full)
    assert sum(parts) == payable
    for part, whole, u in zip(parts, full, units):
        assert payable * u // money.SHARE_UNITS <= part <= whole, (part, whole, payable, u)
    if payable == full_total:
        assert parts == full


# --- 2. caps ------------------------------------------------------------------------------------

def check_caps(ws: Path, s: Scenario, periods: list[str], state: Scenario) -> None:
    """Every cap and the per-milestone bounds hold on all ledger lines issued so far.

    Standing money is the net of all lines (a reversal line carries the participant and
    funder of the line it cancels). A reversal cancels the whole payment it points into,
    0.00 lines included (ledger.md writes no reversal line for those), so a milestone's
    standing payment is its one payment (milestone, period) with no line reversed.
    """
    lines = [r for p in periods for r in read_ledger(claim_folder(ws, p) / "ledger.csv")]
    net: dict[str, Counter] = {col: Counter() for col in ("funder", "participant_id",
                                                          "milestone_id")}
    for r in lines:
        for col, sums in net.items():
            sums[r[col]] += r["amount"]
    total = sum(r["amount"] for r in lines)

    # caps in force at each claim: a backdated variation changes prices and shares, never caps
    c = state.contract
    for f in c["funders"]:
        if "cap" in f:
            assert net["funder"][f["id"]] <= pence_of(f["cap"]), (f, net["funder"])
    caps = c.get("caps", {})
    if "contract" in caps:
        assert total <= pence_of(caps["contract"]), (total, caps)
    if "participant" in caps:
        worst = max(net["participant_id"].values(), default=0)
        assert worst <= pence_of(caps["participant"]), (net["participant_id"], caps)

    cancelled = {r["reverses"] for r in lines if r["kind"] == "reversal"}
    payments: dict[tuple, list[dict]] = defaultdict(list)
    for r in lines:
        if r["kind"] == "payment":
            payments[(r["milestone_id"], r["period"])].append(r)
    standing: dict[str, list[dict]] = defaultdict(list)
    for (mid, _period), rs in payments.items():
        if not any(r["line_id"] in cancelled for r in rs):
            standing[mid].append(rs)
    for mid, amount in net["milestone_id"].items():
        held = standing.get(mid, [])
        assert len(held) <= 1, (mid, "holds payments from more than one claim", held)
        if held:
            rs = held[0]
            assert amount == sum(r["amount"] for r in rs), (mid, amount, rs)
            assert 0 <= amount <= rs[0]["price"], (mid, amount, rs)
        else:
            assert amount == 0, (mid, amount)
    # each payment line: 0 ≤ amount ≤ its uncapped part (amount + capped), and the uncapped
    # parts of one payment are the full price split to the penny (ledger.md, `capped`)
    this = read_ledger(claim_folder(ws, periods[-1]) / "ledger.csv")
    pays: dict[str, list[dict]] = defaultdict(list)
    for r in this:
        if r["kind"] == "payment":
            assert r["amount"] >= 0 and r["capped"] >= 0, r
            assert (r["cap"] == "") == (r["capped"] == 0), r
            pays[r["milestone_id"]].append(r)
    for mid, rs in pays.items():
        units = [r["share"] for r in rs]
        assert sum(units) == money.SHARE_UNITS, rs
        assert [r["amount"] + r["capped"] for r in rs] == money.split(rs[0]["price"], units), rs


def _row(mid: str, pid: str, on: date) -> dict:
    return {"milestone_id": mid, "participant_id": pid, "milestone": "t1", "achieved_on": on,
            "status": "verified", "verified_on": on, "evidence_ref": f"EV-{mid}",
            "evidence_type": "doc-a", "hours_per_week": "8"}


# Found by the `long` profile: a payment with a 0.00 line (funder f1's 0.0001% of £1.00),
# re-rated twice (a backdated price cut to £0.01, then a corrected participant). The 0.00
# line gets no reversal line, yet is cancelled with its payment.
ZERO_LINE_RERATED = Scenario(
    contract={
        "format": "sib-contract/1", "id": CONTRACT_ID, "name": "Zero line", "currency": "GBP",
        "claims": "quarter",
        "term": {"service_start": "2022-01-30", "enrolment_end": "2022-06-10",
                 "outcomes_end": "2022-06-10"},
        "caps": {"contract": "1.00"},
        "funders": [{"id": "f1", "name": "F1", "kind": "other"},
                    {"id": "f2", "name": "F2", "kind": "other", "cap": "1.00"}],
        "payers": [{"split": [{"funder": "f1", "share": "0.0001"},
                              {"funder": "f2", "share": "99.9999"}]}],
        "outcomes": [{"id": "o1", "name": "O1", "milestone": "t1",
                      "prices": {"2022-01-30": "1.00", "2022-01-31": "1.00"}}]},
    participants=[{"participant_id": p, "enrolled_on": date(2022, 1, 30), "borough": "north",
                   "age": "25"} for p in ("p1", "p2")],
    milestones=[_row("M1", "p1", date(2022, 1, 30)), _row("M3", "p1", date(2022, 1, 30))],
    repeats=[],
    steps=[[("price", 0, 0, "north", "", None)],              # £1.00 → £0.01, backdated
           [("participant", 0, 1, "north", "", None)]],        # M1 was p2's all along
    periods=["2022-Q1", "2022-Q2", "2022-Q3"])


@settings(max_examples=examples(1.5))
@given(s=scenarios(max_claims=4))
@example(s=ZERO_LINE_RERATED)
def test_no_cap_is_ever_exceeded(s):
    with workspaces(1) as (ws,):
        issue_all(ws, s, after_each=check_caps)


# --- 3. order of evidence rows -------------------------------------------------------------------

@settings(max_examples=examples(1))
@given(s=scenarios(max_claims=3), seed=st.integers(0, 2**32 - 1))
def test_shuffling_evidence_rows_changes_no_output_byte(s, seed):
    with workspaces(2) as (a, b):
        issue_all(a, s)
        issue_all(b, s, shuffle=random.Random(seed))
        for period in s.periods:
            for name in ("ledger.csv", "decisions.csv"):
                assert (claim_folder(a, period) / name).read_bytes() == \
                       (claim_folder(b, period) / name).read_bytes(), (period, name)


# --- 4. re-running ---------------------------------------------------------------------------------

@settings(max_examples=examples(0.75))
@given(s=scenarios(max_claims=3))
def test_rerunning_is_byte_identical_and_reissuing_is_unchanged(s):
    with workspaces(1) as (ws,), fixed_clock():
        states = issue_all(ws, s)
        # preparing the next claim twice gives the same bytes: every file it would write
        # (workbooks included) and its manifest (the clock is pinned)
        nxt = _next_label(s)
        if nxt is not None:
            one = prepare_claim(ws, CONTRACT_ID, nxt)
            two = prepare_claim(ws, CONTRACT_ID, nxt)
            assert not one.already_issued
            assert one.files == two.files
            assert manifest_bytes(one.manifest) == manifest_bytes(two.manifest)
        # re-issuing each issued period with its own inputs recomputes its ledger.csv and
        # decisions.csv byte for byte, says 'unchanged' and rewrites nothing in its folder
        issued = {p: claim_files(ws, p) for p in s.periods}
        for period, state in zip(s.periods, states):
            write_inputs(ws, state)
            prep, outcome = issue_claim(ws, CONTRACT_ID, period)
            assert outcome.outcome == "unchanged", period
            assert prep.already_issued
            for name in ("ledger.csv", "decisions.csv"):
                assert prep.files[name] == issued[period][name], (period, name)
            assert claim_files(ws, period) == issued[period], period


def _next_label(s: Scenario) -> str | None:
    kind = s.contract["claims"]
    nxt = parse_period(s.periods[-1], kind).next()
    end = s.contract["term"].get("claims_end")
    if end is not None and nxt.start.isoformat() > end:
        return None
    return nxt.label


# --- 5. one decision per row -------------------------------------------------------------------------

INVALID_ROWS = st.lists(st.sampled_from([
    "X{k},p1,t1,2022-02-31,verified,2022-03-05,EV-X{k},doc-a,16",    # impossible date
    "X{k},p1,t1,2022-02-10,maybe,2022-03-05,EV-X{k},doc-a,16",       # unknown status
    "X{k},p1,t1,2022-02-10,verified,,EV-X{k},doc-a,16",              # verified, no date
    "X{k},p1,t1,2022-02-10,verified,2022-03-05,EV-X{k},doc-a,lots",  # not a number
    "X{k},p1,t1,2022-02-10,verified,2022-02-01,EV-X{k},doc-a,16",    # verified before achieved
    "M1,p1,t1,2022-02-10,verified,2022-03-05,EV-M1,doc-a,16",        # M1 again, other content
    "P:p1,2022-01-05,north,30",  # p1 twice in participants: all p1's milestones are invalid
]), max_size=3)


def check_decisions(ws: Path, s: Scenario, periods: list[str], _state) -> None:
    """One decision per distinct milestone_id of the file read; the counts add up."""
    folder = claim_folder(ws, periods[-1])
    rows = read_csv(ws / "evidence" / CONTRACT_ID / "milestones.csv")
    ids = {r["milestone_id"] for r in rows}
    decisions = read_csv(folder / "decisions.csv")
    got = [d["milestone_id"] for d in decisions]
    assert sorted(got) == sorted(ids) and len(got) == len(set(got)), (got, ids)
    assert got == sorted(got)
    counts = Counter(d["decision"] for d in decisions)
    assert set(counts) <= set(DECISIONS), counts
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    assert manifest["rows_in"] == len(ids)
    assert manifest["decisions"] == {k: counts.get(k, 0) for k in DECISIONS}
    assert manifest["rows_in"] == sum(manifest["decisions"].values())
    # this claim's net money per milestone is what decisions.csv says
    net: Counter = Counter()
    for r in read_ledger(folder / "ledger.csv"):
        net[r["milestone_id"]] += r["amount"]
    for d in decisions:
        amount = pence_of(d["amount"])
        assert amount == net[d["milestone_id"]], d
        if d["decision"] == "paid":
            assert amount > 0, d
        elif d["decision"] == "reversed":
            assert amount < 0, d
        elif d["decision"] != "re-rated":  # a re-rating nets the new price less the old
            assert amount == 0, d


@settings(max_examples=examples(1.25))
@given(s=scenarios(max_claims=3), invalid=st.lists(INVALID_ROWS, min_size=3, max_size=3))
def test_every_row_gets_exactly_one_decision(s, invalid):
    s = copy.deepcopy(s)  # add the invalid rows to a copy; hypothesis owns the original
    for k, state_rows in enumerate(invalid):
        if k == 0:
            s.extra_rows = [t.format(k=j) for j, t in enumerate(state_rows)]
        elif k - 1 < len(s.steps):
            s.steps[k - 1].append(("extra", [t.format(k=j) for j, t in enumerate(state_rows)]))
    with workspaces(1) as (ws,):
        issue_all(ws, s, skip_invalid=True, after_each=check_decisions)


# --- regressions: engine bugs the properties found ------------------------------------------------

BUG_CONTRACT = """\
format: sib-contract/1
id: prop
name: Prerequisite with an empty pool
currency: GBP
claims: quarter
term: {service_start: '2022-01-01', enrolment_end: '2022-06-30', outcomes_end: '2022-06-30'}
funders:
  - {id: f1, name: Funder 1, kind: other}
payers:
  - split: [{funder: f1, share: 100}]
outcomes:
  - {id: engagement, name: Engagement, milestone: engagement, prices: {'2022-01-01': 100.00}}
  - id: job-start
    name: Job start
    milestone: job-start
    requires: [{outcome: engagement}]
    prices: {'2022-01-01': 500.00}
"""


def test_prerequisite_with_no_eligible_prerequisite_at_all(tmp_path):
    """A job start claimed before any engagement is verified: missing-prerequisite.

    Found by test_no_cap_is_ever_exceeded: with no eligible milestone of the required
    outcome among the rows looked at, reconcile.eligibility built the merge_asof pool from
    an empty object array (dtype object) against `me`'s str-typed participant_id, and
    pandas raised MergeError 'incompatible merge keys' instead of a decision.
    """
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "prop.yaml").write_text(BUG_CONTRACT, "utf-8")
    ev = tmp_path / "evidence" / "prop"
    ev.mkdir(parents=True)
    (ev / "participants.csv").write_text("participant_id,enrolled_on\np1,2022-01-10\n", "utf-8")
    (ev / "milestones.csv").write_text(
        "milestone_id,participant_id,milestone,achieved_on,status,verified_on,evidence_ref\n"
        "M1,p1,job-start,2022-02-01,verified,2022-02-15,EV-1\n", "utf-8")
    prep = prepare_claim(tmp_path, "prop", "2022-Q1")
    d = prep.claim.decisions
    assert d[["milestone_id", "decision", "reason"]].values.tolist() == \
        [["M1", "rejected", "missing-prerequisite"]]
