"""The claim engine: one period's ledger lines and decisions, as a pure function.

After ledger.py in the flow. `compute_claim` takes a valid contract, typed evidence, the
lines of every claim issued before, and the period, and returns the claim's lines (in file
order, with line ids), one decision per milestone row, and any problem that refuses the
claim. It follows ../shared/spec/claim-rules.md section by section:

  §1 which rows are looked at  → `_status_of`
  §2 eligibility               → `eligibility` (whole-column checks, prerequisites in
                                  dependency order with `merge_asof`)
  §5 corrections               → `_corrections` (reversals before this period's payments)
  §3 limits and caps           → `_allocate` (the one ordered loop: first claimed, first served)
  §4 splitting to the penny    → sib.money.split / bounded_split
  §6 lateness, §7 decisions    → `_lines`, `_decisions`
  invariants                   → `check_invariants` (also used by audit)

Must not read or write files, print, look at the clock or use randomness: the same
inputs give the same frames, whatever the order of the evidence rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from sib import money
from sib.contract import Contract, Outcome, Test, limit_of, route_table, rules_for
from sib.evidence import NO_DAY, Evidence, day_number, day_text
from sib.ledger import LEDGER_COLUMNS, History, empty_lines
from sib.period import Period
from sib.problems import Problem, SibError

# Eligibility reason codes, in the order claim-rules.md §2 checks them.
ELIGIBILITY_CODES = (
    "unknown-participant", "unknown-milestone", "enrolled-outside-term",
    "participant-ineligible", "achieved-outside-term", "conditions-not-met",
    "evidence-not-accepted", "outside-enrolment-window", "missing-prerequisite",
    "prerequisite-too-old", "no-price", "no-funder-for-route",
)
CAP_CODES = ("participant-cap", "contract-cap", "funder-cap")
DECISIONS = ("paid", "re-rated", "reversed", "paid-earlier", "pending-verification", "rejected")
CHANGE_CODES = ("changed-participant", "changed-outcome", "changed-price", "changed-split")


class InvariantError(SibError):
    """A claim that would break an invariant of claim-rules.md (a bug in sib, never data)."""

    def __init__(self, violations: list[str]):
        self.violations = violations
        super().__init__("the claim is refused because it would break an invariant of the "
                         "claim rules — " + "; ".join(violations) + ". This is a bug in sib: "
                         "please report it with the workspace")


@dataclass(frozen=True)
class Split:
    """Who pays a milestone: funder ids and their shares (share units), in split order."""

    funders: tuple[str, ...]
    units: tuple[int, ...]

    def describe(self) -> str:
        return ", ".join(f"{f} {money.fmt_share_short(u)}" for f, u in zip(self.funders, self.units))

    @property
    def key(self) -> tuple:
        return tuple(sorted(zip(self.funders, self.units)))


@dataclass(frozen=True)
class Claim:
    """One computed claim.

    period / number: the claim period and its claim number (1 for the first period).
    lines: typed ledger lines in file order (columns of ledger.LEDGER_COLUMNS).
    decisions: one row per milestone row, sorted by milestone_id (ledger.DECISION_COLUMNS).
    rows_in: milestone rows looked at (exact repeats counted once).
    problems: problems that refuse the claim (a paid milestone missing from the evidence).
    """

    period: Period
    number: int
    lines: pd.DataFrame
    decisions: pd.DataFrame
    rows_in: int
    problems: tuple[Problem, ...] = ()

    def counts(self) -> dict[str, int]:
        vc = self.decisions["decision"].value_counts()
        return {d: int(vc.get(d, 0)) for d in DECISIONS}


# --- small vectorised helpers --------------------------------------------------------------

def _norm(values: pd.Series) -> np.ndarray:
    """Text as compared by conditions and routes: trimmed, lower-cased.

    Columns compared this way (types, areas, hours) have few distinct values: normalise
    those once and spread them back, instead of once per row.
    """
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=False)
    norm = np.array([str(u).strip().lower() for u in uniques], dtype=object)
    return norm[codes] if len(codes) else np.zeros(0, dtype=object)


def _numbers(values: pd.Series) -> np.ndarray:
    """Numbers of a validated condition column (NaN where blank), parsed once per value."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=False)
    nums = pd.to_numeric(pd.Series(uniques, dtype=object).replace("", None), errors="coerce")
    out = nums.to_numpy(dtype=float)
    return out[codes] if len(codes) else np.zeros(0, dtype=float)


def _test_holds(test: Test, column: pd.Series | None) -> np.ndarray:
    """Whether each value passes `test` (a blank or missing value fails every test)."""
    if column is None:
        return np.zeros(0, dtype=bool)
    if test.is_range:
        nums = _numbers(column)
        out = ~np.isnan(nums)
        if test.low is not None:
            out &= nums >= float(test.low)
        if test.below is not None:
            out &= nums < float(test.below)
        return out
    text = _norm(column)
    texts = {str(v).strip().lower() for v in test.values if not hasattr(v, "as_tuple")}
    out = np.isin(text, list(texts)) if texts else np.zeros(len(text), dtype=bool)
    numbers = [float(v) for v in test.values if hasattr(v, "as_tuple")]
    if numbers:
        out |= np.isin(_numbers(column), numbers)
    return out & (text != "")


def _holds(cond: dict | None, frame: pd.DataFrame) -> np.ndarray:
    out = np.ones(len(frame), dtype=bool)
    for col, test in (cond or {}).items():
        if col not in frame.columns:
            return np.zeros(len(frame), dtype=bool)
        out &= _test_holds(test, frame[col])
    return out


def _first_failing(cond: dict, frame: pd.DataFrame) -> np.ndarray:
    """For each row, the first column of `cond` whose test fails ('' when all hold)."""
    out = np.full(len(frame), "", dtype=object)
    for col, test in cond.items():
        ok = _test_holds(test, frame[col]) if col in frame.columns else np.zeros(len(frame), bool)
        out[(out == "") & ~ok] = col
    return out


def _topo(c: Contract) -> list[Outcome]:
    """Outcomes with every prerequisite before the outcomes that require it."""
    by_id = {o.id: o for o in c.outcomes}
    done: dict[str, bool] = {}
    order: list[Outcome] = []

    def visit(o: Outcome) -> None:
        if o.id in done:
            return
        done[o.id] = True
        for r in o.requires:
            visit(by_id[r.outcome])
        order.append(o)

    for o in c.outcomes:
        visit(o)
    return order


def _dates(lo: date, hi: date) -> str:
    return f"{lo.isoformat()} to {hi.isoformat()}"


# --- §2 eligibility ---------------------------------------------------------------------------

@dataclass
class Judged:
    """Eligibility of the looked-at rows (aligned with the frame passed to `eligibility`).

    reason: '' when eligible, else an ELIGIBILITY_CODES code; detail: why, one sentence.
    outcome: the outcome id matched ('' when none); price_from/price: day and pence of the
    price in force; split: index into `splits` (-1 when none).
    """

    reason: np.ndarray
    detail: np.ndarray
    outcome: np.ndarray
    price_from: np.ndarray
    price: np.ndarray
    split: np.ndarray
    splits: list[Split] = field(default_factory=list)


def eligibility(c: Contract, rows: pd.DataFrame, participants: pd.DataFrame) -> Judged:
    """Judge every row (milestones verified by the period's end) against §2, in its order."""
    n = len(rows)
    t = c.term
    start, enrol_end, out_end = (day_number(t.service_start), day_number(t.enrolment_end),
                                 day_number(t.outcomes_end))
    reason = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)

    def fail(mask: np.ndarray, code: str, sentence) -> None:
        sel = np.flatnonzero(mask & (reason == ""))
        reason[sel] = code
        for i in sel:
            detail[i] = sentence(i)

    pa = rows[["participant_id"]].merge(participants, how="left", on="participant_id",
                                        validate="many_to_one")
    known = pa["enrolled_on"].notna().to_numpy()
    enrolled = np.where(known, pa["enrolled_on"].fillna(NO_DAY).to_numpy(), NO_DAY).astype(np.int64)
    pa = pa.drop(columns=["enrolled_on", "row"], errors="ignore").fillna("")
    pid = rows["participant_id"].to_numpy(dtype=object)
    mtype = _norm(rows["milestone"])
    achieved = rows["achieved_on"].to_numpy(dtype=np.int64)

    fail(~known, "unknown-participant",
         lambda i: f"participant '{pid[i]}' is not in the participants file")
    types = sorted({o.milestone.strip().lower() for o in c.outcomes})
    fail(~np.isin(mtype, types), "unknown-milestone",
         lambda i: f"milestone type '{rows['milestone'].iat[i]}' is not paid by any outcome "
                   f"(the contract pays: {', '.join(types)})")
    fail((enrolled < start) | (enrolled > enrol_end), "enrolled-outside-term",
         lambda i: f"the participant enrolled on {day_text(enrolled[i])}, outside the "
                   f"enrolment term {_dates(t.service_start, t.enrolment_end)}")
    if c.eligibility:
        failing = _first_failing(c.eligibility, pa)
        fail(failing != "", "participant-ineligible",
             lambda i: f"the participant's {failing[i]} '{pa[failing[i]].iat[i]}' is not "
                       f"{c.eligibility[failing[i]].describe()}, as eligibility requires")
    fail((achieved < start) | (achieved > out_end), "achieved-outside-term",
         lambda i: f"achieved on {day_text(achieved[i])}, outside the outcomes term "
                   f"{_dates(t.service_start, t.outcomes_end)}")

    # which outcome pays it: exactly one whose milestone type and `when` match
    outcome_ix = np.full(n, -1, dtype=np.int64)
    matches = np.zeros(n, dtype=np.int64)
    for k, o in enumerate(c.outcomes):
        m = (mtype == o.milestone.strip().lower()) & _holds(o.when, rows)
        outcome_ix[m & (outcome_ix < 0)] = k
        matches += m
    by_type = {ty: [o for o in c.outcomes if o.milestone.strip().lower() == ty] for ty in types}

    def unmatched(i: int) -> str:
        options = "; ".join(
            f"{o.id} needs " + (", ".join(f"{col} {tst.describe()}" for col, tst in o.when.items())
                                if o.when else "nothing more")
            for o in by_type.get(mtype[i], []))
        vals = sorted({col for o in by_type.get(mtype[i], []) for col in (o.when or {})})
        found = ", ".join(f"{col} '{rows[col].iat[i]}'" if col in rows.columns
                          else f"no {col}" for col in vals)
        return f"its {found or 'values'} meet no outcome's conditions ({options})"

    fail(matches != 1, "conditions-not-met", unmatched)
    outcome = np.array([c.outcomes[k].id if k >= 0 else "" for k in outcome_ix.tolist()],
                       dtype=object)
    etype = _norm(rows["evidence_type"]) if "evidence_type" in rows.columns else np.full(n, "")
    ok_evidence = np.ones(n, dtype=bool)
    windows = np.full(n, NO_DAY, dtype=np.int64)
    for k, o in enumerate(c.outcomes):
        mine = outcome_ix == k
        if o.evidence:
            ok_evidence[mine] = np.isin(etype[mine], [e.strip().lower() for e in o.evidence])
        if o.within_days_of_enrolment is not None:
            windows[mine] = o.within_days_of_enrolment
    fail(~ok_evidence, "evidence-not-accepted",
         lambda i: f"evidence_type '{etype[i]}' is not accepted for {outcome[i]} (accepted: "
                   f"{', '.join(c.outcomes[outcome_ix[i]].evidence)})")
    after_enrol = achieved - enrolled
    fail((windows < NO_DAY) & (after_enrol > windows), "outside-enrolment-window",
         lambda i: f"achieved {after_enrol[i]} days after enrolment; {outcome[i]} must be "
                   f"achieved within {windows[i]} days of enrolment")
    base = reason.copy()  # failures before the prerequisite checks

    # price in force on the basis date (claim-rules §3.3), and who pays (the payer rule)
    basis = enrolled if c.price_basis == "enrolled" else achieved
    price_from = np.full(n, NO_DAY, dtype=np.int64)
    price = np.zeros(n, dtype=np.int64)
    no_price = np.zeros(n, dtype=bool)
    split_ix = np.full(n, -1, dtype=np.int64)
    no_funder = np.zeros(n, dtype=bool)
    funder_why = np.full(n, "", dtype=object)
    splits: list[Split] = []
    split_index: dict[tuple, int] = {}
    routes = route_table(c)
    for k, o in enumerate(c.outcomes):
        mine = np.flatnonzero(outcome_ix == k)
        if not len(mine):
            continue
        eff = sorted(o.prices)
        eff_days = np.array([day_number(d) for d in eff], dtype=np.int64)
        eff_pence = np.array([money.pence(o.prices[d]) for d in eff], dtype=np.int64)
        j = np.searchsorted(eff_days, basis[mine], side="right") - 1
        no_price[mine] = j < 0
        jj = np.maximum(j, 0)
        price_from[mine] = np.where(j >= 0, eff_days[jj], NO_DAY)
        price[mine] = np.where(j >= 0, eff_pence[jj], 0)

        _loc, rules = rules_for(c, o)
        sub = pa.iloc[mine].reset_index(drop=True)
        rule_of = np.full(len(mine), -1, dtype=np.int64)
        for r, rule in enumerate(rules):
            rule_of[(rule_of < 0) & _holds(rule.when, sub)] = r
        nothing = rule_of < 0
        no_funder[mine[nothing]] = True
        funder_why[mine[nothing]] = "no payer rule's conditions hold for the participant"
        for r, rule in enumerate(rules):
            sel = np.flatnonzero(rule_of == r)
            if not len(sel):
                continue
            resolved = []
            for e in rule.split:
                if e.funder is not None:
                    resolved.append(np.full(len(sel), e.funder, dtype=object))
                else:
                    vals = _norm(sub[e.route].iloc[sel]) if e.route in sub.columns else \
                        np.full(len(sel), "", dtype=object)
                    table = routes.get(e.route, {})
                    resolved.append(np.array([table.get(v, "") for v in vals], dtype=object))
            combos = pd.DataFrame({f"f{q}": col for q, col in enumerate(resolved)})
            combos["i"] = sel
            for key, group in combos.groupby([f"f{q}" for q in range(len(rule.split))], sort=True):
                key = key if isinstance(key, tuple) else (key,)
                rows_here = mine[group["i"].to_numpy()]
                missing = [q for q, f in enumerate(key) if f == ""]
                if missing:
                    col = rule.split[missing[0]].route
                    no_funder[rows_here] = True
                    for i in rows_here:
                        funder_why[i] = (f"no funder serves {col} '{pa[col].iat[i] if col in pa else ''}'"
                                         f" (the route in the payer rule for {o.id})")
                    continue
                merged: dict[str, int] = {}
                for f, e in zip(key, rule.split):
                    merged[f] = merged.get(f, 0) + money.share_units(e.share)
                sp = Split(tuple(merged), tuple(merged.values()))
                if sp not in split_index:
                    split_index[sp] = len(splits)
                    splits.append(sp)
                split_ix[rows_here] = split_index[sp]

    # prerequisites, outcome by outcome so that each is judged by eligible milestones only
    final = reason.copy()
    oid_ix = {o.id: k for k, o in enumerate(c.outcomes)}
    for o in _topo(c):
        k = oid_ix[o.id]
        mine = np.flatnonzero((outcome_ix == k) & (base == ""))
        pre_reason = np.full(len(mine), "", dtype=object)
        pre_detail = np.full(len(mine), "", dtype=object)
        if len(mine) and o.requires:
            me = pd.DataFrame({"participant_id": pid[mine].astype(object),
                               "achieved_on": achieved[mine],
                               "i": np.arange(len(mine))}).sort_values("achieved_on", kind="stable")
            found_all = []
            for req in o.requires:
                q = oid_ix[req.outcome]
                pool_ix = np.flatnonzero((outcome_ix == q) & (final == ""))
                if len(pool_ix):
                    pool = pd.DataFrame({"participant_id": pid[pool_ix].astype(object),
                                         "prior": achieved[pool_ix]}).sort_values("prior",
                                                                                  kind="stable")
                    found = pd.merge_asof(me, pool, left_on="achieved_on", right_on="prior",
                                          by="participant_id", direction="backward",
                                          allow_exact_matches=True).sort_values("i")
                    prior = found["prior"].to_numpy(dtype=float)
                else:  # no eligible milestone of the required outcome at all
                    prior = np.full(len(mine), np.nan)
                has = ~np.isnan(prior)
                gap = achieved[mine] - np.where(has, prior, 0).astype(np.int64)
                found_all.append((req, has, gap))
            # §2's order: a missing prerequisite before one too old, whatever `requires` order
            for req, has, gap in found_all:
                for i in np.flatnonzero(~has & (pre_reason == "")):
                    pre_reason[i] = "missing-prerequisite"
                    pre_detail[i] = (f"{o.id} needs an eligible {req.outcome} on or before "
                                     f"{day_text(achieved[mine[i]])}; none was found")
            for req, has, gap in found_all:
                if req.within_days is None:
                    continue
                for i in np.flatnonzero(has & (gap > req.within_days) & (pre_reason == "")):
                    pre_reason[i] = "prerequisite-too-old"
                    pre_detail[i] = (f"{o.id} needs {req.outcome} within {req.within_days} "
                                     f"days; the {req.outcome} was {gap[i]} days earlier")
        rows_o = np.flatnonzero(outcome_ix == k)
        for idx, i in enumerate(mine):
            if pre_reason[idx]:
                final[i], detail[i] = pre_reason[idx], pre_detail[idx]
        for i in rows_o:
            if final[i]:
                continue
            if no_price[i]:
                final[i] = "no-price"
                first = min(o.prices)
                detail[i] = (f"no price for {o.id} is in force on {day_text(basis[i])} (the "
                             f"first price is from {first.isoformat()})")
            elif no_funder[i]:
                final[i] = "no-funder-for-route"
                detail[i] = funder_why[i]
    # rows that failed before an outcome was known keep their first reason
    final[base != ""] = base[base != ""]
    return Judged(final, detail, outcome, price_from, price, split_ix, splits)


# --- history ----------------------------------------------------------------------------------

def standing_lines(lines: pd.DataFrame) -> pd.DataFrame:
    """Payment lines of earlier claims not yet reversed: what each milestone currently holds."""
    # A reversal cancels the whole payment it belongs to — also its 0.00 lines (a funder
    # at its cap), which it writes no line for (ledger.md).
    kind = lines["kind"].to_numpy(dtype=object)
    pay = kind == "payment"
    is_rev = ~pay
    if not is_rev.any():
        return lines[pay]
    # key each line by (milestone, period) as one integer
    mcode, _ = pd.factorize(lines["milestone_id"].to_numpy(dtype=object))
    pcode, periods = pd.factorize(lines["period"].to_numpy(dtype=object))
    key = mcode.astype(np.int64) * (len(periods) + 1) + pcode
    line_ids = lines["line_id"].to_numpy(dtype=object)
    where = pd.Index(line_ids).get_indexer(lines["reverses"].to_numpy(dtype=object)[is_rev])
    ok = where >= 0
    cancelled = mcode[is_rev][ok].astype(np.int64) * (len(periods) + 1) + pcode[where[ok]]
    return lines[pay & ~np.isin(key, cancelled)]


@dataclass
class Ledger:
    """Running totals that limits and caps are judged against (all in pence / counts)."""

    contract: Contract
    funder_paid: dict[str, int]
    participant_paid: dict[str, int]
    limit_count: dict[tuple[str, str], int]
    outcome_count: dict[str, int]
    total: int = 0

    @staticmethod
    def of(c: Contract, standing: pd.DataFrame) -> "Ledger":
        fp = {k: int(v) for k, v in standing.groupby("funder")["amount"].sum().items()}
        pp = {k: int(v) for k, v in standing.groupby("participant_id")["amount"].sum().items()}
        per_m = standing.drop_duplicates("milestone_id")
        keys = {o.id: limit_of(c, o)[0] for o in c.outcomes}
        lk = per_m["outcome"].map(keys).fillna("outcome:" + per_m["outcome"].astype(str))
        limits = {k: int(v) for k, v in per_m.groupby([per_m["participant_id"], lk]).size().items()}
        outcomes = {k: int(v) for k, v in per_m.groupby("outcome").size().items()}
        return Ledger(c, fp, pp, limits, outcomes, int(standing["amount"].sum()))


# --- the claim ----------------------------------------------------------------------------------

def _fmt(p: int) -> str:
    return money.fmt_gbp(p)


def compute_claim(c: Contract, ev: Evidence, history: History, period: Period) -> Claim:
    """Claim `period` of contract `c` from the evidence and the earlier claims' lines."""
    end, first = day_number(period.end), day_number(period.start)
    m = ev.milestones.sort_values("milestone_id", kind="stable").reset_index(drop=True)
    n = len(m)
    hist = history.lines
    standing = standing_lines(hist)
    problems: list[Problem] = []

    # a paid milestone must stay in the evidence (withdrawn, not deleted)
    present = set(m["milestone_id"]) | set(ev.invalid["milestone_id"])
    gone = sorted(set(standing["milestone_id"]) - present)
    msrc = ev.sources.get("milestones")
    shown = msrc.shown if msrc is not None else "milestones"
    for g in gone:
        first_line = standing.loc[standing["milestone_id"] == g].iloc[0]
        problems.append(Problem(shown, None, None, "missing-paid-milestone",
                                f"milestone '{g}' was paid in {first_line['period']} (ledger line "
                                f"{first_line['line_id']}) but is no longer in this file; keep its "
                                "row and mark it withdrawn instead of deleting it"))

    status = m["status"].to_numpy(dtype=object)
    verified_on = m["verified_on"].to_numpy(dtype=np.int64)
    verified = (status == "verified") & (verified_on <= end)
    looked = np.flatnonzero(verified)
    judged = eligibility(c, m.iloc[looked].reset_index(drop=True), ev.participants)

    reason = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)
    outcome = np.full(n, "", dtype=object)
    price_from = np.full(n, NO_DAY, dtype=np.int64)
    price = np.zeros(n, dtype=np.int64)
    split_ix = np.full(n, -1, dtype=np.int64)
    reason[looked] = judged.reason
    detail[looked] = judged.detail
    outcome[looked] = judged.outcome
    price_from[looked] = judged.price_from
    price[looked] = judged.price
    split_ix[looked] = judged.split
    eligible = verified & (reason == "")

    # what each milestone holds from earlier claims
    held = set(standing["milestone_id"])
    has_standing = m["milestone_id"].isin(held).to_numpy()
    ever_paid = m["milestone_id"].isin(set(hist.loc[hist["kind"] == "payment", "milestone_id"])).to_numpy()

    decision = np.full(n, "", dtype=object)
    dreason = np.full(n, "", dtype=object)
    ddetail = np.full(n, "", dtype=object)
    pending_status = status == "pending"
    after = (status == "verified") & (verified_on > end)
    withdrawn = status == "withdrawn"

    # §5 corrections of milestones that hold a payment
    reverse = np.zeros(n, dtype=bool)
    rerate = np.zeros(n, dtype=bool)
    if has_standing.any():
        # what each holding milestone was paid on: its first standing line (one payment each)
        sig = standing.drop_duplicates("milestone_id").set_index("milestone_id")[
            ["participant_id", "outcome", "price_from", "price", "period"]].rename(
            columns={"participant_id": "participant"})
        # the common case, vectorised: verified, eligible and on the same terms → paid-earlier
        ids = m["milestone_id"].to_numpy(dtype=object)
        hs = np.flatnonzero(has_standing)
        sh = sig.iloc[sig.index.get_indexer(ids[hs])]
        same = (verified[hs] & (reason[hs] == "")
                & (sh["participant"].to_numpy(dtype=object) == m["participant_id"].to_numpy(dtype=object)[hs])
                & (sh["outcome"].to_numpy(dtype=object) == outcome[hs])
                & (sh["price_from"].to_numpy(dtype=np.int64) == price_from[hs])
                & (sh["price"].to_numpy(dtype=np.int64) == price[hs]))
        same &= _same_split(standing, ids[hs], split_ix[hs], judged.splits)
        quiet = hs[same]
        decision[quiet] = "paid-earlier"
        ddetail[quiet] = "paid in " + sh["period"].to_numpy(dtype=object)[same] + "; unchanged"
        looked_again = hs[~same]
        shares = {mid_: tuple(zip(g["funder"].tolist(), g["share"].astype(int).tolist()))
                  for mid_, g in standing[standing["milestone_id"].isin(set(ids[looked_again]))]
                  .groupby("milestone_id", sort=False)}
        for i in looked_again:
            mid = m["milestone_id"].iat[i]
            s = sig.loc[mid]
            paid_in = s["period"]
            if withdrawn[i]:
                reverse[i] = True
                dreason[i] = "withdrawn"
                ddetail[i] = f"withdrawn after it was paid in {paid_in}; the payment is reversed"
            elif pending_status[i] or after[i]:
                reverse[i] = True
                dreason[i] = "pending-verification"
                ddetail[i] = (f"paid in {paid_in} but no longer verified by {period.end.isoformat()}"
                              f" (status {status[i]}, verified_on {day_text(verified_on[i])}); "
                              "the payment is reversed until it is verified again")
            elif reason[i]:
                reverse[i] = True
                dreason[i] = reason[i]
                ddetail[i] = f"paid in {paid_in} but no longer eligible: {detail[i]}"
            else:
                new_split = judged.splits[split_ix[i]]
                change = ""
                if s["participant"] != m["participant_id"].iat[i]:
                    change = "changed-participant"
                    what = f"its participant changed from {s['participant']} to {m['participant_id'].iat[i]}"
                elif s["outcome"] != outcome[i]:
                    change = "changed-outcome"
                    what = f"its outcome changed from {s['outcome']} to {outcome[i]}"
                elif int(s["price_from"]) != price_from[i] or int(s["price"]) != price[i]:
                    change = "changed-price"
                    what = (f"its price changed from {_fmt(int(s['price']))} (from "
                            f"{day_text(int(s['price_from']))}) to {_fmt(int(price[i]))} (from "
                            f"{day_text(price_from[i])})")
                elif tuple(sorted(shares[mid])) != new_split.key:
                    change = "changed-split"
                    old = ", ".join(f"{f} {money.fmt_share_short(u)}" for f, u in shares[mid])
                    what = f"its split changed from {old} to {new_split.describe()}"
                if change:
                    rerate[i] = True
                    dreason[i] = change
                    ddetail[i] = f"paid in {paid_in}, re-rated: {what}"
                else:
                    decision[i] = "paid-earlier"
                    ddetail[i] = f"paid in {paid_in}; unchanged"
    if has_standing.any():
        plain = np.flatnonzero(reverse & ~rerate)
        outcome[plain] = sig.loc[m["milestone_id"].to_numpy(dtype=object)[plain], "outcome"].to_numpy()
    reverse |= rerate  # a re-rating starts with a reversal
    rev_ids = set(m.loc[reverse, "milestone_id"])
    keep_standing = standing[~standing["milestone_id"].isin(rev_ids)]
    totals = Ledger.of(c, keep_standing)

    # unpaid rows that are not candidates
    idle = ~has_standing
    sel = idle & withdrawn
    decision[sel], dreason[sel] = "rejected", "withdrawn"
    ddetail[sel] = "withdrawn by the provider; not payable"
    sel = idle & pending_status
    decision[sel], dreason[sel] = "pending-verification", "status-pending"
    ddetail[sel] = "status is pending; it will be looked at again once verified"
    sel = idle & after
    decision[sel], dreason[sel] = "pending-verification", "verified-after-period"
    for i in np.flatnonzero(sel):
        ddetail[i] = (f"verified on {day_text(verified_on[i])}, after this period ends "
                      f"({period.end.isoformat()}); it will be claimed then")
    sel = idle & verified & ~eligible
    decision[sel], dreason[sel], ddetail[sel] = "rejected", reason[sel], detail[sel]

    # §3 candidates, first claimed first served
    cand = np.flatnonzero((idle & eligible) | rerate)
    order = cand[np.lexsort((m["milestone_id"].to_numpy(dtype=object)[cand].astype(str),
                             m["achieved_on"].to_numpy(dtype=np.int64)[cand]))]
    pay = _allocate(c, m, order, outcome, price, split_ix, judged.splits, totals, price_from)
    pay_rows, pay_amounts, pay_capped, pay_caps, fail_code, fail_detail = pay

    for i, code in fail_code.items():
        if rerate[i]:
            decision[i] = "reversed"
            dreason[i] = code
            ddetail[i] = ddetail[i] + f"; not paid again: {fail_detail[i]}"
        else:
            decision[i], dreason[i], ddetail[i] = "rejected", code, fail_detail[i]
    achieved_on = m["achieved_on"].to_numpy(dtype=np.int64)
    for i in pay_rows:
        amt = sum(pay_amounts[i])
        full = price[i]
        bit = next((cp for cp in pay_caps[i] if cp), "")
        late = achieved_on[i] < first and not ever_paid[i]
        text = f"paid {_fmt(amt)} for {outcome[i]}"
        if amt < full:
            text += f" of its price {_fmt(full)}; the {bit} cap withheld {_fmt(full - amt)}"
        else:
            text += f" at the price from {day_text(price_from[i])}"
        if late:
            text += f" (late: achieved {day_text(achieved_on[i])})"
        if rerate[i]:
            decision[i] = "re-rated"
            ddetail[i] = ddetail[i] + "; " + text
        else:
            decision[i] = "paid"
            dreason[i] = f"{bit}-cap" if bit else ""
            ddetail[i] = text[0].upper() + text[1:]
    sel = reverse & ~rerate
    decision[sel] = "reversed"

    lines = _lines(c, m, period, standing, rev_ids, pay_rows, pay_amounts, pay_capped, pay_caps,
                   outcome, price_from, price, split_ix, judged.splits, ever_paid, first)
    decisions = _decisions(m, ev.invalid, decision, dreason, ddetail, outcome, lines, held)
    claim = Claim(period, len(history.periods) + 1, lines, decisions, ev.rows_in, tuple(problems))
    cols = ["line_id", "period", "kind", "milestone_id", "participant_id", "outcome", "funder",
            "price", "amount", "reverses"]
    violations = check_invariants(c, pd.concat([hist[cols], lines[cols]], ignore_index=True),
                                  claim)
    if violations:
        raise InvariantError(violations)
    return claim


def _same_split(standing: pd.DataFrame, ids: np.ndarray, split_of: np.ndarray,
                splits: list[Split]) -> np.ndarray:
    """Whether each milestone's standing lines have exactly the (funder, share) set of its
    new split — compared exactly, as sorted integer codes, milestone by milestone."""
    n = len(ids)
    if not n:
        return np.zeros(0, dtype=bool)
    funders = pd.Index(sorted({f for sp in splits for f in sp.funders}
                              | set(standing["funder"].unique())))
    pos = pd.Index(ids).get_indexer(standing["milestone_id"].to_numpy(dtype=object))
    held = pos >= 0
    s_pos = pos[held]
    s_code = (funders.get_indexer(standing["funder"].to_numpy(dtype=object)[held]).astype(np.int64)
              * 2_000_000 + standing["share"].to_numpy(dtype=np.int64)[held])
    s_count = np.bincount(s_pos, minlength=n)
    sp_codes = [np.sort(funders.get_indexer(list(sp.funders)).astype(np.int64) * 2_000_000
                        + np.asarray(sp.units, dtype=np.int64)) for sp in splits] + [np.zeros(0, np.int64)]
    e_count = np.array([len(sp_codes[k]) for k in split_of], dtype=np.int64)
    ok = s_count == e_count
    # expected codes, row by row, in the same (row, code) order as the sorted standing codes
    e_pos = np.repeat(np.arange(n), e_count)
    e_code = np.concatenate([sp_codes[k] for k in split_of]) if e_count.sum() else np.zeros(0, np.int64)
    o = np.lexsort((s_code, s_pos))
    s_pos, s_code = s_pos[o], s_code[o]
    sel = ok[s_pos]
    e_sel = ok[e_pos]
    differs = np.zeros(n, dtype=bool)
    if sel.any():
        bad = s_code[sel] != e_code[e_sel]
        differs[s_pos[sel][bad]] = True
    return ok & ~differs


def _allocate(c: Contract, m: pd.DataFrame, order: np.ndarray, outcome, price, split_ix,
              splits: list[Split], totals: Ledger, price_from=None):
    """§3: take candidates in order, each seeing the limits and caps left by those before it.

    The one ordered loop of the engine; it walks only this period's candidates, with plain
    integers. Returns per paid row its funders' amounts, capped amounts and the cap that
    bit each line, and per unpaid row its reason code and sentence.
    """
    by_id = {o.id: o for o in c.outcomes}
    limit_key = {o.id: limit_of(c, o) for o in c.outcomes}
    pcap = money.pence(c.caps.participant) if c.caps and c.caps.participant is not None else None
    ccap = money.pence(c.caps.contract) if c.caps and c.caps.contract is not None else None
    fcap = {f.id: money.pence(f.cap) for f in c.funders if f.cap is not None}
    pids = m["participant_id"].to_numpy(dtype=object)
    amounts: dict[int, list[int]] = {}
    capped: dict[int, list[int]] = {}
    caps: dict[int, list[str]] = {}
    rows: list[int] = []
    fail_code: dict[int, str] = {}
    fail_detail: dict[int, str] = {}
    for i in order.tolist():
        o = by_id[outcome[i]]
        p = pids[i]
        lk, limit = limit_key[o.id]
        used = totals.limit_count.get((p, lk), 0)
        if used >= limit:
            what = f"group {lk[6:]}" if lk.startswith("group:") else o.id
            fail_code[i] = "limit-reached"
            fail_detail[i] = (f"participant {p} has already been paid {what} {used} time"
                              f"{'s' if used != 1 else ''}, the limit per participant")
            continue
        if o.max_count is not None and totals.outcome_count.get(o.id, 0) >= o.max_count:
            fail_code[i] = "volume-cap"
            fail_detail[i] = f"{o.id} has reached its max_count of {o.max_count} payments"
            continue
        full_price = int(price[i])
        if full_price == 0:  # a price of 0.00 is in force: nothing to pay, and no cap to blame
            fail_code[i] = "no-price"
            fail_detail[i] = (f"the price of {o.id} in force from {day_text(price_from[i])} is "
                              "£0.00, so there is nothing to pay")
            continue
        payable, bit, emptied_by = full_price, "", ""
        if pcap is not None:
            room = max(pcap - totals.participant_paid.get(p, 0), 0)
            if room < payable:
                payable, bit = room, "participant"
                emptied_by = "participant" if payable == 0 else ""
        if ccap is not None:
            room = max(ccap - totals.total, 0)
            if room < payable:
                payable, bit = room, bit or "contract"
                emptied_by = emptied_by or ("contract" if payable == 0 else "")
        sp = splits[split_ix[i]]
        full = money.split(full_price, sp.units)
        parts = full if payable == full_price else money.bounded_split(payable, sp.units, full)
        got, line_caps = [], []
        for f, part, whole in zip(sp.funders, parts, full):
            room = fcap[f] - totals.funder_paid.get(f, 0) if f in fcap else part
            a = min(part, max(room, 0))
            got.append(a)
            line_caps.append(bit if part < whole else ("funder" if a < part else ""))
        total = sum(got)
        if total == 0:
            # the cap that left nothing: the participant or contract cap when it left nothing
            # payable, else the funders' caps took all of what was (a zero price included)
            code = emptied_by or "funder"
            fail_code[i] = f"{code}-cap"
            headroom = {"participant": f"participant {p} has reached the participant cap "
                                       f"of {_fmt(pcap or 0)}",
                        "contract": f"the contract cap of {_fmt(ccap or 0)} is reached",
                        "funder": "every funder in its split ("
                                  + ", ".join(sp.funders) + ") has reached its cap"}
            fail_detail[i] = headroom[code]
            continue
        rows.append(i)
        amounts[i] = got
        capped[i] = [w - a for w, a in zip(full, got)]
        caps[i] = line_caps
        totals.limit_count[(p, lk)] = used + 1
        totals.outcome_count[o.id] = totals.outcome_count.get(o.id, 0) + 1
        totals.participant_paid[p] = totals.participant_paid.get(p, 0) + total
        totals.total += total
        for f, a in zip(sp.funders, got):
            totals.funder_paid[f] = totals.funder_paid.get(f, 0) + a
    return rows, amounts, capped, caps, fail_code, fail_detail


def _lines(c, m, period, standing, rev_ids, pay_rows, pay_amounts, pay_capped, pay_caps,
           outcome, price_from, price, split_ix, splits, ever_paid, first) -> pd.DataFrame:
    """Reversal lines, then payment lines, in ledger.md's order, with line ids."""
    rev = standing[standing["milestone_id"].isin(rev_ids) & (standing["amount"] != 0)].copy()
    rev["pos"] = np.arange(len(rev))
    rev = rev.sort_values(["achieved_on", "milestone_id", "pos"], kind="stable")
    rev_out = pd.DataFrame({
        "period": period.label, "kind": "reversal",
        "milestone_id": rev["milestone_id"], "participant_id": rev["participant_id"],
        "outcome": rev["outcome"], "achieved_on": rev["achieved_on"],
        "verified_on": rev["verified_on"], "evidence_ref": rev["evidence_ref"],
        "price_from": rev["price_from"], "price": rev["price"], "funder": rev["funder"],
        "share": rev["share"], "amount": -rev["amount"], "capped": np.int64(0), "cap": "",
        "late": False, "reverses": rev["line_id"]})
    rows = np.asarray(pay_rows, dtype=np.int64)
    widths = np.array([len(splits[split_ix[i]].funders) for i in pay_rows], dtype=np.int64)
    at = np.repeat(rows, widths)
    pos = np.concatenate([np.arange(w) for w in widths]) if len(rows) else np.zeros(0, np.int64)
    ach = m["achieved_on"].to_numpy(dtype=np.int64)
    mids = m["milestone_id"].to_numpy(dtype=object)
    first_paid = ~np.asarray(ever_paid, dtype=bool)
    pay_out = pd.DataFrame({
        "period": period.label, "kind": "payment", "milestone_id": mids[at],
        "participant_id": m["participant_id"].to_numpy(dtype=object)[at],
        "outcome": outcome[at], "achieved_on": ach[at],
        "verified_on": m["verified_on"].to_numpy(dtype=np.int64)[at],
        "evidence_ref": m["evidence_ref"].to_numpy(dtype=object)[at],
        "price_from": price_from[at], "price": price[at],
        "funder": [f for i in pay_rows for f in splits[split_ix[i]].funders],
        "share": np.array([u for i in pay_rows for u in splits[split_ix[i]].units], dtype=np.int64),
        "amount": np.array([a for i in pay_rows for a in pay_amounts[i]], dtype=np.int64),
        "capped": np.array([a for i in pay_rows for a in pay_capped[i]], dtype=np.int64),
        "cap": [x for i in pay_rows for x in pay_caps[i]],
        "late": (ach[at] < first) & first_paid[at], "reverses": ""},
        columns=[c_ for c_ in LEDGER_COLUMNS if c_ != "line_id"])
    if len(pay_out):
        order = np.lexsort((pos, mids[at].astype(str), ach[at]))
        pay_out = pay_out.iloc[order].reset_index(drop=True)
    frames = [f for f in (rev_out, pay_out) if len(f)]
    out = pd.concat(frames, ignore_index=True) if frames else empty_lines().drop(columns="line_id")
    out.insert(0, "line_id", [f"{period.label}-{k:05d}" for k in range(1, len(out) + 1)])
    typed = empty_lines()
    result = pd.DataFrame({col: out[col].astype(typed[col].dtype) for col in LEDGER_COLUMNS})
    return result.reset_index(drop=True)


def _decisions(m, invalid, decision, dreason, ddetail, outcome, lines, held) -> pd.DataFrame:
    """One row per milestone row: decision, reason, sentence and this claim's net money."""
    net = lines.groupby("milestone_id")[["amount", "capped"]].sum()
    d = pd.DataFrame({
        "milestone_id": m["milestone_id"].to_numpy(dtype=object),
        "participant_id": m["participant_id"].to_numpy(dtype=object),
        "milestone": m["milestone"].to_numpy(dtype=object),
        "outcome": outcome, "decision": decision, "reason": dreason, "detail": ddetail})
    if len(invalid):
        inv = pd.DataFrame({
            "milestone_id": invalid["milestone_id"].to_numpy(dtype=object),
            "participant_id": invalid["participant_id"].to_numpy(dtype=object),
            "milestone": invalid["milestone"].to_numpy(dtype=object),
            "outcome": "", "decision": "rejected", "reason": "invalid-row",
            "detail": [t + ("; its earlier payment stands until the row is fixed"
                            if mid in held else "; it will be claimed once fixed")
                       for t, mid in zip(invalid["detail"], invalid["milestone_id"])]})
        d = pd.concat([d, inv], ignore_index=True)
    d = d.sort_values("milestone_id", kind="stable").reset_index(drop=True)
    d["amount"] = d["milestone_id"].map(net["amount"]).fillna(0).astype(np.int64)
    d["capped"] = d["milestone_id"].map(net["capped"]).fillna(0).astype(np.int64)
    return d


# --- invariants ---------------------------------------------------------------------------------

def check_invariants(c: Contract, all_lines: pd.DataFrame, claim: Claim | None = None) -> list[str]:
    """Every invariant of claim-rules.md that the lines so far must keep; [] when all hold."""
    out: list[str] = []
    st = standing_lines(all_lines)
    smid, _u = pd.factorize(st["milestone_id"].to_numpy(dtype=object))
    s_amount = st["amount"].to_numpy(dtype=np.int64)
    held = np.zeros(len(_u), dtype=np.int64)
    np.add.at(held, smid, s_amount)
    price = np.zeros(len(_u), dtype=np.int64)
    np.maximum.at(price, smid, st["price"].to_numpy(dtype=np.int64))
    for k in np.flatnonzero(held > price)[:3]:
        out.append(f"standing-over-price: milestone {_u[k]} holds {_fmt(int(held[k]))}, more "
                   f"than its price {_fmt(int(price[k]))}")
    amid, au = pd.factorize(all_lines["milestone_id"].to_numpy(dtype=object))
    net = np.zeros(len(au), dtype=np.int64)
    np.add.at(net, amid, all_lines["amount"].to_numpy(dtype=np.int64))
    for k in np.flatnonzero(net < 0)[:3]:
        out.append(f"negative-standing: milestone {au[k]} nets {_fmt(int(net[k]))}")
    pcode, _p = pd.factorize(st["period"].to_numpy(dtype=object))
    pairs = np.unique(smid.astype(np.int64) * (len(_p) + 1) + pcode)
    per_m = np.bincount(pairs // (len(_p) + 1), minlength=len(_u))
    for k in np.flatnonzero(per_m > 1)[:3]:
        out.append(f"double-payment: milestone {_u[k]} holds payments from more than one claim")
    if (s_amount < 0).any():
        out.append("negative-payment: a payment line has a negative amount")
    by_f = all_lines.groupby("funder")["amount"].sum()
    for f in c.funders:
        if f.cap is not None and int(by_f.get(f.id, 0)) > money.pence(f.cap):
            out.append(f"funder-cap-exceeded: {f.id} has been paid {_fmt(int(by_f[f.id]))}, over "
                       f"its cap {_fmt(money.pence(f.cap))}")
    total = int(all_lines["amount"].sum())
    if c.caps and c.caps.contract is not None and total > money.pence(c.caps.contract):
        out.append(f"contract-cap-exceeded: {_fmt(total)} paid, over the contract cap "
                   f"{_fmt(money.pence(c.caps.contract))}")
    if c.caps and c.caps.participant is not None:
        by_p = st.groupby("participant_id")["amount"].sum()
        for p, v in by_p[by_p > money.pence(c.caps.participant)].head(3).items():
            out.append(f"participant-cap-exceeded: participant {p} holds {_fmt(int(v))}")
    keys = {o.id: limit_of(c, o)[0] for o in c.outcomes}
    sizes = {o.id: limit_of(c, o)[1] for o in c.outcomes}
    ms = st.drop_duplicates("milestone_id")
    if len(ms):
        outc = ms["outcome"]
        lk = outc.map(keys).fillna("outcome:" + outc.astype(str)).to_numpy(dtype=object)
        lim = outc.map(sizes).fillna(1).to_numpy(dtype=np.int64)
        counts = pd.DataFrame({"p": ms["participant_id"].to_numpy(dtype=object), "lk": lk,
                               "lim": lim}).groupby(["p", "lk"]).agg(n=("lim", "size"),
                                                                      lim=("lim", "first"))
        for (p, k), r in counts[counts["n"] > counts["lim"]].head(3).iterrows():
            out.append(f"limit-exceeded: participant {p} is paid {k} {r['n']} times, over its "
                       f"limit {r['lim']}")
    if claim is not None:
        d = claim.decisions
        if len(d) != claim.rows_in or d["milestone_id"].duplicated().any():
            out.append(f"one-decision-per-row: {claim.rows_in} rows in but {len(d)} decisions "
                       f"({int(d['milestone_id'].duplicated().sum())} repeated)")
        if (d["decision"] == "").any():
            out.append("one-decision-per-row: a milestone was left without a decision")
        lines = claim.lines
        if int(d["amount"].sum()) != int(lines["amount"].sum()):
            out.append("totals-add-up: the decisions' amounts do not add up to the lines'")
        paid = set(d.loc[d["decision"].isin(["paid", "re-rated"]), "milestone_id"])
        if paid != set(lines.loc[lines["kind"] == "payment", "milestone_id"]):
            out.append("totals-add-up: the paid decisions and the payment lines differ")
    return out


def totals(lines: pd.DataFrame, c: Contract) -> dict:
    """Totals of a claim's lines in pence: overall, capped, by funder, by kind, by outcome."""
    by_f = lines.groupby("funder")["amount"].sum()
    # funders in contract order, then any the contract no longer has (a variation that
    # removed a funder still reverses its lines): kind "unknown", as `sib audit` totals them
    kind_of = {f.id: f.kind for f in c.funders}
    order = [f.id for f in c.funders if f.id in by_f.index] + sorted(
        k for k in by_f.index if k not in kind_of)
    by_k: dict[str, int] = {}
    for k in order:
        kind = kind_of.get(k, "unknown")
        by_k[kind] = by_k.get(kind, 0) + int(by_f[k])
    by_o = lines.groupby("outcome")["amount"].sum()
    return {"amount": int(lines["amount"].sum()), "capped": int(lines["capped"].sum()),
            "by_funder": {k: int(by_f[k]) for k in order},
            "by_kind": by_k,
            "by_outcome": {o.id: int(by_o[o.id]) for o in c.outcomes if o.id in by_o.index}}
