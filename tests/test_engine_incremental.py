"""The earlier lines a claim hands on to the next, coded (reconcile.Earlier, `Claim.after`).

`sib model` claims each period of a history with the earlier lines already coded as the
previous claim left them (`claim_after(..., earlier=)`), instead of coding the whole
history again every claim; `sib claim` codes the ledgers it reads from scratch. These
tests hold the two paths to the same bytes and the same refusals:

- model histories of the West London example, claimed with the handed-on codes and from
  scratch (fresh tables every claim): every claim's ledger and decisions, byte for byte —
  a difference in what the codes say, in the rows judged once per history, or in the
  totals the caps are judged by would show as a changed line or decision;
- random contracts and evidence that changes between claims (tests/strategies.py:
  withdrawals, reinstatements, corrections — the reversals and re-ratings a model history
  never makes), the same; and after each claim the handed-on codes decode to the lines'
  own text, with the standing lines `standing_mask` finds and each reversal pointing at
  the line it names;
- the pre-issue check (`_violations`, on codes) says exactly what the check on text said
  (`reference_violations`: its code before the codes, kept here as the reference, as
  tests/test_audit_running.py keeps the audit's), on every claim of those histories and on
  damaged ledgers (repeated line ids, reversals of nothing, negative amounts, double
  payments, unknown funders and outcomes, caps and limits exceeded), all lines or a group;
- `_same_split` against a plain sort-and-compare, on random lines and splits.

The refusals on the handed-on path are in tests/test_engine_invariants.py.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

import sib.reconcile as rc
from sib import money
from sib.contract import load_contract
from sib.evidence import day_number, read_evidence
from sib.ledger import LEDGER_COLUMNS, History, render_decisions, render_ledger
from sib.model import _INVALID, claim_history, make_plan, simulate
from sib.model_format import load_assumptions
from sib.period import parse_period
from sib.workspace import find_contract
from strategies import CONTRACT_ID, examples, scenarios, write_inputs, write_workspace

ROOT = Path(__file__).resolve().parent.parent


# --- the reference: the invariant check on text, as it was before the codes --------------------

def _sums(keys: np.ndarray, amounts: np.ndarray) -> dict:
    codes, uniques = rc._factorize(keys)
    out = np.zeros(len(uniques), dtype=np.int64)
    np.add.at(out, codes, amounts)
    return dict(zip(list(uniques), out.tolist()))


def reference_violations(c, every: rc.Cols, claim, groups=None) -> list[str]:
    """reconcile._violations before it read codes (reconcile.py at 42c4441), verbatim."""
    out: list[str] = []
    terms = rc._Terms.of(c)
    _factorize, _fmt, _limit_keys = rc._factorize, rc._fmt, rc._limit_keys
    lines = every if groups is None else every.take(np.flatnonzero(groups))
    mids = lines["milestone_id"]
    amount = lines["amount"].astype(np.int64)
    keep = rc.standing_mask(*(lines[k] for k in ("kind", "milestone_id", "period", "line_id",
                                                 "reverses")))
    smid, _u = _factorize(mids[keep])
    s_amount = amount[keep]
    held = np.zeros(len(_u), dtype=np.int64)
    np.add.at(held, smid, s_amount)
    price = np.zeros(len(_u), dtype=np.int64)
    np.maximum.at(price, smid, lines["price"].astype(np.int64)[keep])
    for k in np.flatnonzero(held > price)[:3]:
        out.append(f"standing-over-price: milestone {_u[k]} holds {_fmt(int(held[k]))}, more "
                   f"than its price {_fmt(int(price[k]))}")
    amid, au = _factorize(mids)
    net = np.zeros(len(au), dtype=np.int64)
    np.add.at(net, amid, amount)
    for k in np.flatnonzero(net < 0)[:3]:
        out.append(f"negative-standing: milestone {au[k]} nets {_fmt(int(net[k]))}")
    pcode, _p = _factorize(lines["period"][keep])
    pairs = np.unique(smid.astype(np.int64) * (len(_p) + 1) + pcode)
    per_m = np.bincount(pairs // (len(_p) + 1), minlength=len(_u))
    for k in np.flatnonzero(per_m > 1)[:3]:
        out.append(f"double-payment: milestone {_u[k]} holds payments from more than one claim")
    if (s_amount < 0).any():
        out.append("negative-payment: a payment line has a negative amount")
    by_f = _sums(every["funder"], every["amount"].astype(np.int64))
    for f in c.funders:
        if f.id in terms.funder_caps and by_f.get(f.id, 0) > terms.funder_caps[f.id]:
            out.append(f"funder-cap-exceeded: {f.id} has been paid {_fmt(by_f[f.id])}, over "
                       f"its cap {_fmt(money.pence(f.cap))}")
    total = int(every["amount"].sum())
    if terms.contract_cap is not None and total > terms.contract_cap:
        out.append(f"contract-cap-exceeded: {_fmt(total)} paid, over the contract cap "
                   f"{_fmt(money.pence(c.caps.contract))}")
    if c.caps and c.caps.participant is not None:
        by_p = _sums(lines["participant_id"][keep], s_amount)
        most = terms.participant_cap
        over = sorted(p for p, v in by_p.items() if v > most)
        for p in over[:3]:
            out.append(f"participant-cap-exceeded: participant {p} holds {_fmt(by_p[p])}")
    _m, first = np.unique(smid, return_index=True)
    if len(first):
        pids = lines["participant_id"][keep][first]
        lk, lim = _limit_keys(c, lines["outcome"][keep][first])
        pc, pu = _factorize(pids)
        kc, ku = _factorize(lk)
        pair, at, n_paid = np.unique(pc.astype(np.int64) * len(ku) + kc, return_index=True,
                                     return_counts=True)
        over = sorted((pids[at[j]], lk[at[j]], int(n_paid[j]), int(lim[at[j]]))
                      for j in np.flatnonzero(n_paid > lim[at]))
        for p, k, times, most in over[:3]:
            out.append(f"limit-exceeded: participant {p} is paid {k} {times} times, over its "
                       f"limit {most}")
    if claim is not None:
        d = claim.decision_cols
        dmid = d["milestone_id"]
        repeated = len(dmid) - len(pd.unique(dmid))
        if len(d) != claim.rows_in or repeated:
            out.append(f"one-decision-per-row: {claim.rows_in} rows in but {len(d)} decisions "
                       f"({repeated} repeated)")
        decision = d["decision"]
        if (decision == "").any():
            out.append("one-decision-per-row: a milestone was left without a decision")
        new = claim.line_cols
        if int(d["amount"].sum()) != int(new["amount"].sum()):
            out.append("totals-add-up: the decisions' amounts do not add up to the lines'")
        paid = set(dmid[(decision == "paid") | (decision == "re-rated")].tolist())
        if paid != set(new["milestone_id"][new["kind"] == "payment"].tolist()):
            out.append("totals-add-up: the paid decisions and the payment lines differ")
    return out


def touched_groups(before: rc.Cols, new: rc.Cols) -> np.ndarray:
    """The lines claim_after checks group by group, worked out from the text, as it did
    before the codes: every line of a milestone or participant the claim has a line for."""
    both = before.then(new)
    mids, pids = both["milestone_id"], both["participant_id"]
    touched = np.isin(mids, new["milestone_id"]) | np.isin(pids, new["participant_id"])
    return np.isin(mids, mids[touched])


def same_check(c, every: rc.Cols, claim=None, groups=None) -> list[str]:
    got = rc._violations(c, every, claim, groups)
    assert got == reference_violations(c, every, claim, groups)
    return got


def decoded(e: rc.Earlier) -> None:
    """The handed-on codes say what the lines say."""
    lines, t = e.lines, e.tables
    for codes, table, column in ((e.milestone, t.milestone, "milestone_id"),
                                 (e.participant, t.participant, "participant_id"),
                                 (e.funder, t.funder, "funder"), (e.period, t.period, "period"),
                                 (e.outcome, t.outcome, "outcome")):
        assert table.values()[codes].tolist() == lines[column].tolist(), column
    assert e.payment.tolist() == (lines["kind"] == "payment").tolist()
    assert e.standing.tolist() == rc.standing_mask(*(lines[k] for k in (
        "kind", "milestone_id", "period", "line_id", "reverses"))).tolist()
    rev = np.flatnonzero(~e.payment & (e.target >= 0))
    assert lines["line_id"][e.target[rev]].tolist() == lines["reverses"][rev].tolist()
    assert e.unique_ids == pd.Index(lines["line_id"]).is_unique


# --- model histories ------------------------------------------------------------------------

@lru_cache(maxsize=1)
def west_london():
    la, problems = load_assumptions(ROOT / "models" / "west-london-ips.yaml", ROOT,
                                    "models/west-london-ips.yaml")
    assert la is not None, problems
    return la, make_plan(la)


def from_scratch(plan, pf: pd.DataFrame, mf: pd.DataFrame) -> list[rc.Claim]:
    """claim_history without anything handed on: every claim codes the earlier lines, and
    judges its rows, from new tables."""
    earlier, claims = rc.no_lines(), []
    for number, period in enumerate(plan.periods, start=1):
        events = rc.Cols.of(mf)
        known = events.take(np.flatnonzero(events["verified_on"] <= day_number(period.end)))
        ev = rc.Rows(rc.Cols.of(pf), known, _INVALID, len(known))
        claim = rc.claim_after(plan.contract, ev, earlier, number, period)
        earlier = earlier.then(claim.line_cols)
        claims.append(claim)
    return claims


@settings(max_examples=4, deadline=None)
@given(run=st.integers(0, 10_000), p=st.sampled_from([None, 0.3, 0.95]))
def test_a_model_history_claims_the_same_bytes_with_the_codes_handed_on(run, p):
    la, plan = west_london()
    if p is not None:  # fewer or more job starts: the caps bite earlier or not at all
        plan = plan.with_probability("job-start", p)
    rng = np.random.default_rng(np.random.SeedSequence(la.assumptions.seed, spawn_key=(run,)))
    pf, mf = simulate(plan, rng)
    lines, handed_on = claim_history(plan, pf, mf)
    scratch = from_scratch(plan, pf, mf)
    for a, b in zip(handed_on, scratch, strict=True):
        assert render_ledger(a.lines) == render_ledger(b.lines), a.period
        assert render_decisions(a.decisions) == render_decisions(b.decisions), a.period
    decoded(handed_on[-1].after)
    assert handed_on[-1].after.minted is not None  # the model's path: ids it wrote itself
    every = rc.Cols({k: lines[k] for k in LEDGER_COLUMNS}, len(lines))
    assert same_check(plan.contract, every) == []


# --- histories whose evidence changes between claims -----------------------------------------

@settings(max_examples=examples(1.5), deadline=None)
@given(s=scenarios(max_claims=4))
def test_changing_evidence_claims_the_same_bytes_with_the_codes_handed_on(s):
    with tempfile.TemporaryDirectory(prefix="sib-incremental-") as tmp:
        ws = write_workspace(Path(tmp) / "ws", s)
        earlier = rc.Earlier.of(rc.no_lines())
        frames: list[pd.DataFrame] = []
        for number, (state, label) in enumerate(zip(s.states(), s.periods), start=1):
            write_inputs(ws, state)
            lc = find_contract(ws, CONTRACT_ID)
            ev = read_evidence(ws, lc)
            if ev.problems:
                return
            c, period = lc.contract, parse_period(label, lc.contract.claims)
            lines = (pd.concat(frames, ignore_index=True) if frames
                     else History.empty().lines)
            history = History(tuple(s.periods[:number - 1]), lines)
            scratch = rc.compute_claim(c, ev, history, period)
            handed = rc.claim_after(c, rc.Rows.of(ev), earlier.lines, number, period,
                                    earlier=earlier)
            assert render_ledger(handed.lines) == render_ledger(scratch.lines), label
            assert render_decisions(handed.decisions) == render_decisions(scratch.decisions)
            assert handed.problems == scratch.problems
            if handed.problems:
                return
            earlier = handed.after
            decoded(earlier)
            before = rc.Cols.of(lines, LEDGER_COLUMNS)
            every = before.then(handed.line_cols)
            assert same_check(c, every, handed, touched_groups(before, handed.line_cols)) == []
            assert same_check(c, every) == []
            frames.append(handed.lines)


# --- the check on damaged ledgers --------------------------------------------------------------

CAPPED = """\
format: sib-contract/1
id: capped
name: Every cap
currency: GBP
claims: quarter
term:
  service_start: 2022-01-01
  enrolment_end: 2022-12-31
  outcomes_end: 2022-12-31
caps:
  participant: 250.00
  contract: 600.00
groups:
  work: {limit_per_participant: 1}
funders:
  - {id: dcms, name: DCMS, kind: central, cap: 300.00}
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
    group: work
    prices: {2022-01-01: 200.00}
  - id: sustained
    name: Sustained
    milestone: sustained
    group: work
    prices: {2022-01-01: 150.00}
"""


@lru_cache(maxsize=1)
def capped_contract():
    with tempfile.TemporaryDirectory(prefix="sib-capped-") as tmp:
        path = Path(tmp) / "capped.yaml"
        path.write_text(CAPPED, "utf-8")
        lc, problems = load_contract(path)
    assert lc is not None, problems
    return lc.contract


IDS = [f"2022-Q{q}-{j:05d}" for q in (1, 2, 3) for j in (1, 2, 3)]


@st.composite
def damaged_lines(draw) -> rc.Cols:
    """Ledger lines as a damaged or buggy history might hold them: few milestones,
    participants and periods so that they collide; ids that repeat, reversals of lines
    that are not there; amounts over prices, negative, over caps; unknown funders and
    outcomes."""
    n = draw(st.integers(0, 24))
    distinct = draw(st.booleans())  # ids as sib writes them (each once), or repeating
    ids = [f"L{k:05d}" for k in range(n + 2)] if distinct else IDS
    rows = []
    for k in range(n):
        kind = draw(st.sampled_from(["payment", "payment", "payment", "reversal"]))
        rows.append({
            "line_id": ids[k] if distinct else draw(st.sampled_from(IDS)),
            "period": draw(st.sampled_from(["2022-Q1", "2022-Q2", "2022-Q3"])),
            "kind": kind,
            "milestone_id": draw(st.sampled_from(["M1", "M2", "M3", "M4", "M5"])),
            "participant_id": draw(st.sampled_from(["P1", "P2", "P3"])),
            "outcome": draw(st.sampled_from(["engagement", "job-start", "sustained", "gone"])),
            "funder": draw(st.sampled_from(["dcms", "brent", "other"])),
            "price": draw(st.sampled_from([0, 10000, 15000, 20000])),
            "amount": draw(st.integers(-5000, 40000)),
            "reverses": (draw(st.sampled_from(ids + ["", "nothing"])) if kind == "reversal"
                         else ""),
        })
    cols = {k: np.array([r[k] for r in rows] + [None], dtype=object)[:-1]
            for k in rc._INVARIANT_COLUMNS}
    for k in ("price", "amount"):
        cols[k] = cols[k].astype(np.int64)
    return rc.Cols(cols, n)


@settings(max_examples=400, deadline=None)
@given(lines=damaged_lines(), data=st.data())
def test_the_check_on_codes_finds_what_the_check_on_text_found(lines, data):
    c = capped_contract()
    same_check(c, lines)  # every line, as check_invariants checks them
    groups = np.array(data.draw(st.lists(st.booleans(), min_size=len(lines),
                                         max_size=len(lines))), dtype=bool)
    same_check(c, lines, None, groups)  # a group of them, as claim_after checks its own


def test_the_check_on_codes_reports_each_kind_of_breach_as_the_check_on_text():
    # one damaged ledger that breaks every invariant at once, so that the messages (and
    # which three of each kind) are compared, not only an empty list
    c = capped_contract()
    # line_id, period, kind, milestone, participant, outcome, funder, price, amount, reverses
    rows = [
        ("a1", "2022-Q1", "payment", "M1", "P1", "engagement", "dcms", 10000, 30000, ""),
        ("a2", "2022-Q2", "payment", "M1", "P1", "engagement", "brent", 10000, 500, ""),
        ("a3", "2022-Q1", "payment", "M2", "P2", "job-start", "dcms", 20000, 20000, ""),
        ("a4", "2022-Q1", "payment", "M3", "P2", "sustained", "dcms", 15000, 15000, ""),
        ("a5", "2022-Q1", "payment", "M4", "P3", "gone", "other", 0, -700, ""),
        ("a5", "2022-Q2", "reversal", "M5", "P3", "gone", "other", 0, -900, "a5"),
        ("a6", "2022-Q2", "reversal", "M2", "P2", "job-start", "dcms", 20000, -100, "zz"),
    ]
    cols = {k: np.array([r[j] for r in rows], dtype=object)
            for j, k in enumerate(("line_id", "period", "kind", "milestone_id", "participant_id",
                                   "outcome", "funder", "price", "amount", "reverses"))}
    for k in ("price", "amount"):
        cols[k] = cols[k].astype(np.int64)
    found = same_check(c, rc.Cols(cols, len(rows)))
    assert {v.split(":")[0] for v in found} >= {
        "standing-over-price", "negative-standing", "double-payment", "negative-payment",
        "funder-cap-exceeded", "participant-cap-exceeded", "limit-exceeded"}


# --- _same_split ----------------------------------------------------------------------------------

def plain_same_split(funders, shares, pos, split_of, splits) -> list[bool]:
    have: dict[int, list] = {}
    for f, u, p in zip(funders, shares, pos):
        if p >= 0:
            have.setdefault(p, []).append((f, u))
    return [sorted(have.get(r, [])) == (sorted(zip(splits[s].funders, splits[s].units))
                                        if s >= 0 else [])
            for r, s in enumerate(split_of)]


FUNDERS = ["dcms", "brent", "ealing", "harrow"]


@st.composite
def splits_and_lines(draw):
    splits = []
    for _ in range(draw(st.integers(1, 4))):
        fs = draw(st.lists(st.sampled_from(FUNDERS), min_size=1, max_size=4, unique=True))
        splits.append(rc.Split(tuple(fs), tuple(draw(st.sampled_from([100_000, 250_000, 650_000]))
                                                for _ in fs)))
    n = draw(st.integers(1, 6))
    split_of = draw(st.lists(st.integers(-1, len(splits) - 1), min_size=n, max_size=n))
    lines = []
    for r in range(n):
        s = split_of[r]
        if s >= 0 and draw(st.booleans()):  # the lines of its split, maybe spoiled
            for f, u in zip(splits[s].funders, splits[s].units):
                lines.append((f, u, r))
            if draw(st.booleans()):
                k = draw(st.integers(0, len(lines) - 1))
                f, u, p = lines[k]
                lines[k] = draw(st.sampled_from([(f, u + 1, p), (FUNDERS[0], u, p), (f, u, p)]))
            if draw(st.booleans()):
                lines.append(draw(st.sampled_from(lines)))
        else:
            for _ in range(draw(st.integers(0, 3))):
                lines.append((draw(st.sampled_from(FUNDERS)),
                              draw(st.sampled_from([100_000, 250_000, 650_000])),
                              draw(st.integers(-1, n - 1))))
    order = draw(st.permutations(range(len(lines))))
    return splits, split_of, [lines[k] for k in order]


@settings(max_examples=300, deadline=None)
@given(case=splits_and_lines())
def test_same_split_is_a_plain_comparison_of_pairs(case):
    splits, split_of, lines = case
    tables = rc._Tables()
    funders = [f for f, _u, _p in lines]
    codes = tables.funder.of(np.array(funders + [None], dtype=object)[:-1])
    shares = np.array([u for _f, u, _p in lines], dtype=np.int64)
    pos = np.array([p for _f, _u, p in lines], dtype=np.int64)
    got = rc._same_split(codes, shares, pos, np.array(split_of, dtype=np.int64), splits, tables)
    assert got.tolist() == plain_same_split(funders, shares.tolist(), pos.tolist(), split_of,
                                            splits)


# --- line ids the handed-on path cannot vouch for -------------------------------------------------

def test_a_period_claimed_again_on_the_handed_on_path_reads_its_repeated_ids_as_sib_claim_does(
        tmp_path):
    # Claiming a period whose ids are already in the history (here 2022-Q1 twice) repeats
    # line ids: the handed-on codes must then find what standing_mask finds (a reversal
    # names the first line with its id), not assume every id is new.
    ws = tmp_path / "ws"
    (ws / "contracts").mkdir(parents=True)
    (ws / "evidence" / "capped").mkdir(parents=True)
    (ws / "contracts" / "capped.yaml").write_text(CAPPED, "utf-8")
    (ws / "evidence" / "capped" / "participants.csv").write_text(
        "participant_id,enrolled_on\nP1,2022-01-05\nP2,2022-01-05\n", "utf-8")
    rows = ("milestone_id,participant_id,milestone,achieved_on,status,verified_on,evidence_ref\n"
            "M1,P1,engagement,2022-01-10,verified,2022-03-25,E1\n"
            "M2,P2,engagement,2022-01-11,{status},2022-03-25,E2\n")
    period = parse_period("2022-Q1", "quarter")
    earlier = rc.Earlier.of(rc.no_lines())
    for number, status in enumerate(("verified", "withdrawn", "verified"), start=1):
        (ws / "evidence" / "capped" / "milestones.csv").write_text(rows.format(status=status),
                                                                   "utf-8")
        lc = find_contract(ws, "capped")
        ev = read_evidence(ws, lc)
        before = earlier.lines
        claim = rc.claim_after(lc.contract, rc.Rows.of(ev), before, number, period,
                               earlier=earlier)
        scratch = rc.claim_after(lc.contract, rc.Rows.of(ev), before, number, period)
        assert render_ledger(claim.lines) == render_ledger(scratch.lines)
        assert render_decisions(claim.decisions) == render_decisions(scratch.decisions)
        earlier = claim.after
        decoded(earlier)
    assert not earlier.unique_ids and earlier.minted is None


# --- what is kept between claims is kept per contract, per table, per state ----------------------

def _bytes(claim: rc.Claim) -> tuple[str, str]:
    return render_ledger(claim.lines), render_decisions(claim.decisions)


def test_rows_judged_for_one_contract_are_judged_again_for_another():
    # what §2 finds from a row alone is kept on the table the rows come from, per contract:
    # the same rows claimed under a contract whose prices differ get the new prices
    la, plan = west_london()
    rng = np.random.default_rng(np.random.SeedSequence(la.assumptions.seed, spawn_key=(0,)))
    pf, mf = simulate(plan, rng)
    c = plan.contract
    dearer = c.model_copy(update={"outcomes": [
        o.model_copy(update={"prices": {d: p * 2 for d, p in o.prices.items()}})
        for o in c.outcomes]})
    period = plan.periods[6]
    people, events = rc.Cols.of(pf), rc.Cols.of(mf)
    rows = rc.Rows(people, events, _INVALID, len(events))
    first = rc.claim_after(c, rows, rc.no_lines(), 1, period)
    again = rc.claim_after(dearer, rows, rc.no_lines(), 1, period)
    fresh = rc.claim_after(dearer, rc.Rows(rc.Cols.of(pf), rc.Cols.of(mf), _INVALID, len(mf)),
                           rc.no_lines(), 1, period)
    assert _bytes(again) == _bytes(fresh) != _bytes(first)


def test_two_claims_after_the_same_state_leave_each_other_alone():
    # an Earlier is a value: claiming twice after the same one (a dry run, then the real
    # claim) gives two histories, neither written into the other's lines
    la, plan = west_london()
    rng = np.random.default_rng(np.random.SeedSequence(la.assumptions.seed, spawn_key=(1,)))
    pf, mf = simulate(plan, rng)
    _lines, claims = claim_history(plan, pf, mf)
    base = claims[3].after
    kept = {k: base.lines[k].copy() for k in LEDGER_COLUMNS}
    one = base.then(claims[4].line_cols)
    two = base.then(claims[5].line_cols)
    n = len(base)
    for k in LEDGER_COLUMNS:
        assert base.lines[k].tolist() == kept[k].tolist(), k
        assert one.lines[k][n:].tolist() == claims[4].line_cols[k].tolist(), k
        assert two.lines[k][n:].tolist() == claims[5].line_cols[k].tolist(), k
    decoded(one)
    decoded(two)


# --- a history grown from empty, claim by claim, as `sib audit` grows it ---------------------

@settings(max_examples=300, deadline=None)
@given(lines=damaged_lines(), data=st.data())
def test_a_history_grown_claim_by_claim_codes_as_one_coded_at_once(lines, data):
    """`sib audit` adds each claim's lines as read from disk to an `Earlier` begun empty,
    which looks each reversal's line up by id (`_LineIds`) instead of indexing every line;
    whatever the lines (repeated ids, reversals of nothing or of a later line), every state
    says what coding its lines at once says."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(lines)), max_size=4)))
    state, start = rc.Earlier.of(lines.take(np.zeros(0, dtype=np.int64))), 0
    for stop in [*cuts, len(lines)]:
        state = state.then(lines.take(np.arange(start, stop)))
        start = stop
        whole = rc.Earlier.of(lines.take(np.arange(stop)))
        assert state.target.tolist() == whole.target.tolist()
        assert state.unique_ids == whole.unique_ids
        assert state.standing.tolist() == whole.standing.tolist()
        decoded(state)


def test_line_ids_are_looked_up_only_along_one_line_of_states():
    """Two claims added to one state: the second cannot use the first's id table."""
    one = rc.Cols({k: np.array(v, dtype=object) for k, v in {
        "line_id": ["A"], "period": ["2022-Q1"], "kind": ["payment"], "milestone_id": ["M1"],
        "participant_id": ["P1"], "outcome": ["engagement"], "funder": ["dcms"],
        "reverses": [""]}.items()} | {"price": np.array([100]), "amount": np.array([100])}, 1)
    rev = rc.Cols({**{k: one[k] for k in one.columns},
                   "line_id": np.array(["B"], dtype=object), "period": np.array(["2022-Q2"],
                                                                                dtype=object),
                   "kind": np.array(["reversal"], dtype=object),
                   "reverses": np.array(["A"], dtype=object),
                   "amount": np.array([-100])}, 1)
    base = rc.Earlier.of(one.take(np.zeros(0, dtype=np.int64))).then(one)
    first = base.then(rev)      # along the line: looked up
    second = base.then(rev)     # a branch: indexed from the lines
    assert first.ids is not None and second.ids is None
    assert first.target.tolist() == second.target.tolist() == [-1, 0]
    assert first.standing.tolist() == second.standing.tolist() == [False, False]
