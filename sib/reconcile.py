"""The claim engine: one period's ledger lines and decisions, as a pure function.

After ledger.py in the flow. `compute_claim` takes a valid contract, typed evidence, the
lines of every claim issued before, and the period, and returns the claim's lines (in file
order, with line ids), one decision per milestone row, and any problem that refuses the
claim. It follows ../shared/spec/claim-rules.md section by section:

  §1 which rows are looked at  → `claim_after` (verified by the period's end)
  §2 eligibility               → `eligibility` (whole-column checks; what depends only on
                                  the participant — eligibility columns, payer rules,
                                  routes — once per participant in `_People`;
                                  prerequisites in dependency order by sorted-key search)
  §5 corrections               → `claim_after` (reversals before this period's payments)
  §3 limits and caps           → `_allocate` (the one ordered loop: first claimed, first served)
  §4 splitting to the penny    → sib.money.split / bounded_split
  §6 lateness, §7 decisions    → `_lines`, `_decisions`
  invariants                   → `check_invariants` (every line; also used by audit) and,
                                  before a claim is returned, the same checks on the
                                  groups the claim touches

Inside, tables are `Cols` — named numpy columns — not pandas frames: a claim of the model
is small and is computed thousands of times, and pandas costs tens of microseconds per
operation whatever the size. `claim_after` is the entry for callers that keep columns
between claims (the model); `compute_claim` converts frames once.

Must not read or write files, print, look at the clock or use randomness: the same
inputs give the same frames, whatever the order of the evidence rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
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
    line_cols / decision_cols: the same as columns; `lines` and `decisions` are made from
    them when first asked for (the model keeps columns from claim to claim and needs
    neither frame).
    """

    period: Period
    number: int
    line_cols: "Cols"
    decision_cols: "Cols"
    rows_in: int
    problems: tuple[Problem, ...] = ()

    @cached_property
    def lines(self) -> pd.DataFrame:
        return self.line_cols.frame()

    @cached_property
    def decisions(self) -> pd.DataFrame:
        return self.decision_cols.frame()

    def counts(self) -> dict[str, int]:
        vc = self.decisions["decision"].value_counts()
        return {d: int(vc.get(d, 0)) for d in DECISIONS}


# --- the contract's figures, worked out once ------------------------------------------------

@dataclass(frozen=True)
class _Terms:
    """What the engine reads from a contract on every claim, in engine units: caps in pence
    (None when absent), each outcome's limit key and limit, and each outcome's prices as
    (effective days, pence) arrays in date order."""

    participant_cap: int | None
    contract_cap: int | None
    funder_caps: dict[str, int]
    limits: dict[str, tuple[str, int]]
    prices: dict[str, tuple[np.ndarray, np.ndarray]]

    @staticmethod
    def of(c: Contract) -> "_Terms":
        """The terms of `c`, computed once per contract object (the model claims thousands
        of times with one contract)."""
        hit = _TERMS.get(id(c))
        if hit is not None and hit[0] is c:
            return hit[1]
        caps = c.caps
        terms = _Terms(
            money.pence(caps.participant) if caps and caps.participant is not None else None,
            money.pence(caps.contract) if caps and caps.contract is not None else None,
            {f.id: money.pence(f.cap) for f in c.funders if f.cap is not None},
            {o.id: limit_of(c, o) for o in c.outcomes},
            {o.id: (np.array([day_number(d) for d in sorted(o.prices)], dtype=np.int64),
                    np.array([money.pence(o.prices[d]) for d in sorted(o.prices)],
                             dtype=np.int64)) for o in c.outcomes})
        if len(_TERMS) >= 16:
            _TERMS.pop(next(iter(_TERMS)))
        _TERMS[id(c)] = (c, terms)
        return terms


_TERMS: dict[int, tuple[Contract, _Terms]] = {}


# --- small vectorised helpers --------------------------------------------------------------

class Cols:
    """Named, aligned numpy columns: the few frame operations the engine needs, without
    pandas' cost per operation (a claim of the model is small and is computed thousands of
    times). `cols[name]` is an array; `take` selects rows.

    A column worked out row by row from others (`derived`: text normalised, numbers parsed)
    is worked out once on the table rows were taken from and gathered from there: the
    model takes each claim's rows from one table per history."""

    def __init__(self, arrays: dict[str, np.ndarray], n: int, parent: "Cols | None" = None,
                 ix: np.ndarray | None = None):
        self.arrays = arrays
        self.n = n
        self._parent, self._ix = parent, ix
        self._memo: dict[tuple, object] = {}

    def derived(self, key: tuple, make) -> np.ndarray:
        """make(table) for this table, where `make` works row by row (so that it may be
        made for the table these rows were taken from and gathered); once per key."""
        if key not in self._memo:
            if self._parent is not None:
                self._memo[key] = self._parent.derived(key, make)[self._ix]
            else:
                self._memo[key] = make(self)
        return self._memo[key]

    def norm(self, name: str) -> np.ndarray:
        """Column `name` as conditions and routes compare it (see `_norm`)."""
        return self.derived(("norm", name), lambda t: _norm(t[name]))

    def numbers(self, name: str) -> np.ndarray:
        """Column `name` as numbers (see `_numbers`)."""
        return self.derived(("numbers", name), lambda t: _numbers(t[name]))

    @staticmethod
    def of(frame: pd.DataFrame, columns=None) -> "Cols":
        return Cols({c: frame[c].to_numpy() for c in (columns or frame.columns)}, len(frame))

    def frame(self) -> pd.DataFrame:
        """A DataFrame of these columns, keeping their dtypes (text stays object)."""
        return pd.DataFrame({c: pd.Series(a, dtype=a.dtype) for c, a in self.arrays.items()})

    def then(self, other: "Cols") -> "Cols":
        """These rows followed by `other`'s (the same columns)."""
        return Cols({c: np.concatenate([a, other[c]]) for c, a in self.arrays.items()},
                    self.n + other.n)

    @property
    def columns(self):
        return self.arrays.keys()

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __len__(self) -> int:
        return self.n

    def take(self, ix: np.ndarray) -> "Cols":
        """The rows at `ix`; a column is gathered when first used."""
        return Cols(_Taken(self.arrays, ix), len(ix), self, ix)


class _Lazy(dict):
    """Named columns made on first use by `make`, then kept; `names` lists them all."""

    def __init__(self, names, make):
        super().__init__()
        self.names, self.make = names, make

    def __missing__(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise KeyError(name)
        out = self[name] = self.make(name)
        return out

    def __contains__(self, name) -> bool:
        return name in self.names

    def keys(self):
        return list(self.names)

    def items(self):
        return [(k, self[k]) for k in self.names]


def _Taken(source, ix: np.ndarray) -> _Lazy:
    """Columns of `source` at rows `ix`, each gathered on first use."""
    return _Lazy(source.keys(), lambda name: source[name][ix])


def _norm(values) -> np.ndarray:
    """Text as compared by conditions and routes: trimmed, lower-cased.

    Columns compared this way (types, areas, hours) have few distinct values: normalise
    those once and spread them back, instead of once per row.
    """
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=False)
    norm = np.array([str(u).strip().lower() for u in uniques], dtype=object)
    return norm[codes] if len(codes) else np.zeros(0, dtype=object)


_PLAIN_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)")


def _numbers(values) -> np.ndarray:
    """Numbers of a validated condition column (NaN where blank), parsed once per value."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=False)
    out = np.array([_number(u) for u in uniques], dtype=float)
    return out[codes] if len(codes) else np.zeros(0, dtype=float)


def _number(value) -> float:
    """A condition value as a number: NaN when blank or not a number (a condition test, not
    money). A plain decimal (what evidence checks allow) by `float`, else by pandas."""
    if isinstance(value, str) and _PLAIN_NUMBER.fullmatch(value):
        return float(value)
    if isinstance(value, str) and value == "":
        return float("nan")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    return float(pd.to_numeric(pd.Series([value], dtype=object).replace("", None),
                               errors="coerce").to_numpy(dtype=float)[0])


def _test_holds(test: Test, frame: Cols, col: str) -> np.ndarray:
    """Whether each value of `col` passes `test` (a blank value fails every test)."""
    if test.is_range:
        nums = frame.numbers(col)
        out = ~np.isnan(nums)
        if test.low is not None:
            out &= nums >= float(test.low)
        if test.below is not None:
            out &= nums < float(test.below)
        return out
    text = frame.norm(col)
    texts = {str(v).strip().lower() for v in test.values if not hasattr(v, "as_tuple")}
    out = _isin(text, list(texts)) if texts else np.zeros(len(text), dtype=bool)
    numbers = [float(v) for v in test.values if hasattr(v, "as_tuple")]
    if numbers:
        out |= np.isin(frame.numbers(col), numbers)
    return out & (text != "")


def _holds(cond: dict | None, frame: Cols) -> np.ndarray:
    out = np.ones(len(frame), dtype=bool)
    for col, test in (cond or {}).items():
        if col not in frame.columns:
            return np.zeros(len(frame), dtype=bool)
        out &= _test_holds(test, frame, col)
    return out


def _first_failing(cond: dict, frame: Cols) -> np.ndarray:
    """For each row, the first column of `cond` whose test fails ('' when all hold)."""
    out = np.full(len(frame), "", dtype=object)
    for col, test in cond.items():
        ok = _test_holds(test, frame, col) if col in frame.columns else np.zeros(len(frame), bool)
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


class _People:
    """What the engine works out per participant rather than per milestone row, once per
    participants table (the model claims every period of a history with one table): their
    columns (blank where missing; a last, wholly blank participant stands for an unknown
    one), enrolment days, the eligibility column that fails, and who pays under each list
    of payer rules."""

    def __init__(self, c: Contract, participants: Cols):
        self.contract = c
        ids = participants["participant_id"]
        self.index = pd.Index(ids)
        self.blank = len(ids)  # the position of the blank participant
        names = [k for k in participants.columns if k not in ("enrolled_on", "row")]
        self.cols = Cols(_blanked(participants, names), len(ids) + 1)
        self.enrolled = np.append(participants["enrolled_on"].astype(np.int64), NO_DAY)
        self.splits: list[Split] = []
        self.split_index: dict[Split, int] = {}
        self._failing: np.ndarray | None = None
        self._assigned: dict[int, tuple] = {}

    @staticmethod
    def of(c: Contract, participants: Cols) -> "_People":
        memo = participants._memo.get(("people", ""))
        if memo is None or memo.contract is not c:
            memo = participants._memo[("people", "")] = _People(c, participants)
        return memo

    def at(self, rows: Cols) -> np.ndarray:
        """The position of each row's participant; the blank participant's when unknown."""
        def positions(t: Cols) -> np.ndarray:
            pid = t["participant_id"]
            at = self.index.get_indexer(pid) if len(pid) else np.zeros(0, dtype=np.int64)
            return np.where(at >= 0, at, self.blank)

        return rows.derived(("participant-at", id(self)), positions)

    def failing(self) -> np.ndarray:
        """The first eligibility column whose test fails ('' when all hold)."""
        if self._failing is None:
            self._failing = _first_failing(self.contract.eligibility or {}, self.cols)
        return self._failing

    def assign(self, rules) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The payer rule that holds (-1: none), the index of the split in `splits` (-1:
        none), and the route column that found no funder ('' when none)."""
        if id(rules) not in self._assigned:
            self._assigned[id(rules)] = (rules, self._assign(rules))
        return self._assigned[id(rules)][1]

    def _assign(self, rules) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pa, n = self.cols, len(self.cols)
        routes = route_table(self.contract)
        rule_of = np.full(n, -1, dtype=np.int64)
        for r, rule in enumerate(rules):
            rule_of[(rule_of < 0) & _holds(rule.when, pa)] = r
        split_of = np.full(n, -1, dtype=np.int64)
        unserved = np.full(n, "", dtype=object)
        for r, rule in enumerate(rules):
            sel = np.flatnonzero(rule_of == r)
            if not len(sel):
                continue
            resolved = []
            for e in rule.split:
                if e.funder is not None:
                    resolved.append(np.full(len(sel), e.funder, dtype=object))
                elif e.route in pa:
                    resolved.append(_lookup(pa.norm(e.route)[sel], routes.get(e.route, {})))
                else:
                    resolved.append(np.full(len(sel), "", dtype=object))
            units = [money.share_units(e.share) for e in rule.split]
            for key, members in _group_rows(resolved):
                here = sel[members]
                missing = [q for q, f in enumerate(key) if f == ""]
                if missing:
                    unserved[here] = rule.split[missing[0]].route
                    continue
                merged: dict[str, int] = {}
                for f, u in zip(key, units):
                    merged[f] = merged.get(f, 0) + u
                sp = Split(tuple(merged), tuple(merged.values()))
                if sp not in self.split_index:
                    self.split_index[sp] = len(self.splits)
                    self.splits.append(sp)
                split_of[here] = self.split_index[sp]
        return rule_of, split_of, unserved


def _blanked(participants: Cols, names: list[str]) -> _Lazy:
    """Participant columns with a blank participant appended, '' for a missing value;
    each made on first use."""
    def make(name: str) -> np.ndarray:
        values = np.asarray(participants[name], dtype=object)
        values = np.where(pd.isna(values), "", values) if len(values) else values
        return np.append(values, "").astype(object)

    return _Lazy(names, make)


def _lookup(values: np.ndarray, table: dict[str, str]) -> np.ndarray:
    """table[value] for each value ('' when absent), looked up once per distinct value."""
    codes, uniques = pd.factorize(values)
    found = np.array([table.get(u, "") for u in uniques] + [""], dtype=object)
    return found[codes]


def _group_rows(columns: list[np.ndarray]) -> list[tuple[tuple, np.ndarray]]:
    """Rows grouped by their values in `columns`: (values, row positions) in sorted order."""
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for col in columns:
        codes, uniques = pd.factorize(col, sort=True)
        key = key * len(uniques) + codes
    _u, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(_u)))[:-1]
    return [(tuple(col[first[g]] for col in columns), members)
            for g, members in enumerate(np.split(order, bounds))]


def _latest_before(pc: np.ndarray, day: np.ndarray, pool_pc: np.ndarray, pool_day: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """For each (participant code, day): the latest pool day of the same participant on or
    before it; (found, that day)."""
    if not len(pool_pc):
        return np.zeros(len(pc), dtype=bool), np.zeros(len(pc), dtype=np.int64)
    both = np.concatenate([day, pool_day])
    low, high = int(both.min()), int(both.max())
    if high - low < 1_000_000:  # real days: one key per (participant, day) by arithmetic
        width, origin = high - low + 2, low

        def rank(d):
            return d - origin

        def unrank(r):
            return r + origin
    else:  # a day far out (no date): rank the days instead
        ranks = np.unique(both)
        width = len(ranks) + 1

        def rank(d):
            return np.searchsorted(ranks, d)

        def unrank(r):
            return ranks[r]
    pool_key = pool_pc * width + rank(pool_day)
    pool_key.sort()
    key = pc * width + rank(day)
    j = np.searchsorted(pool_key, key, side="right") - 1
    jj = np.maximum(j, 0)
    found = (j >= 0) & (pool_key[jj] // width == pc)
    return found, np.where(found, unrank(pool_key[jj] % width), 0)


def eligibility(c: Contract, rows: Cols, participants: Cols) -> Judged:
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

    people = _People.of(c, participants)
    terms = _Terms.of(c)
    pid = rows["participant_id"]
    at = people.at(rows)
    known = at != people.blank
    enrolled = people.enrolled[at]
    pa = people.cols.take(at)  # each row's participant, for the sentences
    mtype = rows.norm("milestone")
    achieved = rows["achieved_on"].astype(np.int64)

    fail(~known, "unknown-participant",
         lambda i: f"participant '{pid[i]}' is not in the participants file")
    types = sorted({o.milestone.strip().lower() for o in c.outcomes})
    fail(~_isin(mtype, types), "unknown-milestone",
         lambda i: f"milestone type '{rows['milestone'][i]}' is not paid by any outcome "
                   f"(the contract pays: {', '.join(types)})")
    fail((enrolled < start) | (enrolled > enrol_end), "enrolled-outside-term",
         lambda i: f"the participant enrolled on {day_text(enrolled[i])}, outside the "
                   f"enrolment term {_dates(t.service_start, t.enrolment_end)}")
    if c.eligibility:
        failing = people.failing()[at]
        fail(failing != "", "participant-ineligible",
             lambda i: f"the participant's {failing[i]} '{pa[failing[i]][i]}' is not "
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
        found = ", ".join(f"{col} '{rows[col][i]}'" if col in rows
                          else f"no {col}" for col in vals)
        return f"its {found or 'values'} meet no outcome's conditions ({options})"

    fail(matches != 1, "conditions-not-met", unmatched)
    outcome = np.array([o.id for o in c.outcomes] + [""], dtype=object)[outcome_ix]
    etype = rows.norm("evidence_type") if "evidence_type" in rows else np.full(n, "")
    ok_evidence = np.ones(n, dtype=bool)
    windows = np.full(n, NO_DAY, dtype=np.int64)
    for k, o in enumerate(c.outcomes):
        mine = outcome_ix == k
        if o.evidence:
            ok_evidence[mine] = _isin(etype[mine], [e.strip().lower() for e in o.evidence])
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
    for k, o in enumerate(c.outcomes):
        mine = np.flatnonzero(outcome_ix == k)
        if not len(mine):
            continue
        eff_days, eff_pence = terms.prices[o.id]
        j = np.searchsorted(eff_days, basis[mine], side="right") - 1
        no_price[mine] = j < 0
        jj = np.maximum(j, 0)
        price_from[mine] = np.where(j >= 0, eff_days[jj], NO_DAY)
        price[mine] = np.where(j >= 0, eff_pence[jj], 0)

        _loc, rules = rules_for(c, o)
        rule_of, split_of, unserved = (a[at[mine]] for a in people.assign(rules))
        nothing = mine[rule_of < 0]
        no_funder[nothing] = True
        funder_why[nothing] = "no payer rule's conditions hold for the participant"
        for i, col in zip(mine[(rule_of >= 0) & (unserved != "")].tolist(),
                          unserved[(rule_of >= 0) & (unserved != "")].tolist()):
            no_funder[i] = True
            funder_why[i] = (f"no funder serves {col} '{pa[col][i] if col in pa else ''}'"
                             f" (the route in the payer rule for {o.id})")
        split_ix[mine] = split_of

    # prerequisites, outcome by outcome so that each is judged by eligible milestones only
    final = reason.copy()
    oid_ix = {o.id: k for k, o in enumerate(c.outcomes)}
    pcode = at.astype(np.int64)  # participant codes (unknown ones failed already)
    for o in _topo(c):
        k = oid_ix[o.id]
        mine = np.flatnonzero((outcome_ix == k) & (base == ""))
        pre_reason = np.full(len(mine), "", dtype=object)
        pre_detail = np.full(len(mine), "", dtype=object)
        if len(mine) and o.requires:
            found_all = []
            for req in o.requires:
                q = oid_ix[req.outcome]
                pool_ix = np.flatnonzero((outcome_ix == q) & (final == ""))
                has, prior = _latest_before(pcode[mine], achieved[mine], pcode[pool_ix],
                                            achieved[pool_ix])
                found_all.append((req, has, achieved[mine] - prior))
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
        failed = pre_reason != ""
        final[mine[failed]], detail[mine[failed]] = pre_reason[failed], pre_detail[failed]
        rows_o = np.flatnonzero((outcome_ix == k) & (final == ""))
        for i in rows_o[no_price[rows_o]]:
            final[i] = "no-price"
            detail[i] = (f"no price for {o.id} is in force on {day_text(basis[i])} (the "
                         f"first price is from {min(o.prices).isoformat()})")
        nf = rows_o[~no_price[rows_o] & no_funder[rows_o]]
        final[nf], detail[nf] = "no-funder-for-route", funder_why[nf]
    # rows that failed before an outcome was known keep their first reason
    final[base != ""] = base[base != ""]
    return Judged(final, detail, outcome, price_from, price, split_ix, people.splits)


# --- history ----------------------------------------------------------------------------------

def standing_mask(kind: np.ndarray, milestone_id: np.ndarray, period: np.ndarray,
                  line_id: np.ndarray, reverses: np.ndarray) -> np.ndarray:
    """Which lines are payments of earlier claims not yet reversed (columns as arrays)."""
    # A reversal cancels the whole payment it belongs to — also its 0.00 lines (a funder
    # at its cap), which it writes no line for (ledger.md).
    pay = kind == "payment"
    is_rev = ~pay
    if not is_rev.any():
        return pay
    # key each line by (milestone, period) as one integer
    mcode, _ = pd.factorize(milestone_id)
    pcode, periods = pd.factorize(period)
    key = mcode.astype(np.int64) * (len(periods) + 1) + pcode
    ids = pd.Index(line_id)
    if ids.is_unique:
        where = ids.get_indexer(reverses[is_rev])
    else:  # a damaged ledger (sib never writes one): a reversal names the first such line
        first = np.flatnonzero(~ids.duplicated())
        where = pd.Index(line_id[first]).get_indexer(reverses[is_rev])
        where = np.where(where >= 0, first[np.maximum(where, 0)], -1)
    ok = where >= 0
    cancelled = mcode[is_rev][ok].astype(np.int64) * (len(periods) + 1) + pcode[where[ok]]
    return pay & ~np.isin(key, cancelled)


def standing_lines(lines: pd.DataFrame) -> pd.DataFrame:
    """Payment lines of earlier claims not yet reversed: what each milestone currently holds."""
    return lines[standing_mask(*(lines[c].to_numpy(dtype=object) for c in
                                 ("kind", "milestone_id", "period", "line_id", "reverses")))]


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
    def of(c: Contract, standing: Cols, milestone: np.ndarray, who: np.ndarray) -> "Ledger":
        """The totals of the `standing` lines (`milestone`: their milestones as integer
        codes); per participant only for those in `who` (the candidates: the only
        participants the allocation looks up)."""
        amount = standing["amount"].astype(np.int64)
        _m, first = np.unique(milestone, return_index=True)
        outcomes = standing["outcome"][first]
        mine = _isin(standing["participant_id"], who)
        pids = standing["participant_id"][first][mine[first]]
        lk, _lim = _limit_keys(c, outcomes[mine[first]])
        return Ledger(c, _sums(standing["funder"], amount),
                      _sums(standing["participant_id"][mine], amount[mine]),
                      _counts(list(zip(pids.tolist(), lk.tolist()))), _tally(outcomes),
                      int(amount.sum()))


def _limit_keys(c: Contract, outcomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each outcome's limit key ('outcome:<id>' or 'group:<id>') and its limit per participant
    (an outcome the contract no longer has: its own key, limit 1)."""
    codes, uniques = _factorize(outcomes)
    known = _Terms.of(c).limits
    pairs = [known.get(o, (f"outcome:{o}", 1)) for o in uniques]
    keys = np.array([k for k, _ in pairs] + [""], dtype=object)
    limits = np.array([n for _, n in pairs] + [0], dtype=np.int64)
    return keys[codes], limits[codes]


def _sums(keys: np.ndarray, amounts: np.ndarray) -> dict:
    """Exact integer sum of `amounts` per distinct key."""
    codes, uniques = _factorize(keys)
    out = np.zeros(len(uniques), dtype=np.int64)
    np.add.at(out, codes, amounts)
    return dict(zip(list(uniques), out.tolist()))


def _tally(values: np.ndarray) -> dict:
    """How many times each distinct value occurs."""
    codes, uniques = _factorize(values)
    return dict(zip(list(uniques), np.bincount(codes, minlength=len(uniques)).tolist()))


def _counts(keys: list) -> dict:
    out: dict = {}
    for k in keys:
        out[k] = out.get(k, 0) + 1
    return out


# --- the claim ----------------------------------------------------------------------------------

def _fmt(p: int) -> str:
    return money.fmt_gbp(p)


@dataclass(frozen=True)
class Rows:
    """The evidence as the engine reads it: valid participants and milestones as columns
    (as `Evidence` has them), the invalid milestone rows, the rows counted in, and the
    milestones file as problems name it."""

    participants: Cols
    milestones: Cols
    invalid: pd.DataFrame
    rows_in: int
    shown: str = "milestones"

    @staticmethod
    def of(ev: Evidence) -> "Rows":
        src = ev.sources.get("milestones")
        return Rows(Cols.of(ev.participants), Cols.of(ev.milestones), ev.invalid, ev.rows_in,
                    src.shown if src is not None else "milestones")


def compute_claim(c: Contract, ev: Evidence, history: History, period: Period) -> Claim:
    """Claim `period` of contract `c` from the evidence and the earlier claims' lines."""
    return claim_after(c, Rows.of(ev), Cols.of(history.lines, LEDGER_COLUMNS),
                       len(history.periods) + 1, period)


def no_lines() -> Cols:
    """No ledger lines, as typed columns."""
    return Cols({k: a[:0] for k, a in _NO_LINES.arrays.items()}, 0)


_NO_LINES = Cols.of(empty_lines(), LEDGER_COLUMNS)


def claim_after(c: Contract, ev: Rows, hist: Cols, number: int, period: Period) -> Claim:
    """`compute_claim` with the evidence and the earlier claims' lines as columns, and
    `number` the claim's number: how the model claims period after period in memory."""
    end, first = day_number(period.end), day_number(period.start)
    m = ev.milestones
    m = m.take(np.argsort(m["milestone_id"], kind="stable"))
    n = len(m)
    ids = m["milestone_id"]
    s_at = np.flatnonzero(standing_mask(
        *(hist[k] for k in ("kind", "milestone_id", "period", "line_id", "reverses"))))
    standing = hist.take(s_at)
    s_ids = standing["milestone_id"]
    # milestone ids as integer codes shared by the rows and the earlier lines: which rows
    # hold a payment, which lines belong to a row, by table look-up instead of hashing again
    codes, uniques = pd.factorize(np.concatenate([ids, hist["milestone_id"]]))
    cm, ch = codes[:n], codes[n:]
    cs = ch[s_at]

    def table(at: np.ndarray) -> np.ndarray:
        out = np.zeros(len(uniques), dtype=bool)
        out[at] = True
        return out

    problems: list[Problem] = []

    # a paid milestone must stay in the evidence (withdrawn, not deleted)
    unmatched = uniques[np.unique(cs[~table(cm)[cs]])]
    gone = sorted(set(unmatched.tolist()) - set(ev.invalid["milestone_id"]))
    shown = ev.shown
    for g in gone:
        k = int(np.flatnonzero(s_ids == g)[0])
        problems.append(Problem(shown, None, None, "missing-paid-milestone",
                                f"milestone '{g}' was paid in {standing['period'][k]} (ledger line "
                                f"{standing['line_id'][k]}) but is no longer in this file; keep its "
                                "row and mark it withdrawn instead of deleting it"))

    status = m["status"]
    verified_on = m["verified_on"].astype(np.int64)
    verified = (status == "verified") & (verified_on <= end)
    looked = np.flatnonzero(verified)
    judged = eligibility(c, m.take(looked), ev.participants)

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
    held = set(s_ids.tolist()) if len(ev.invalid) else set()  # only invalid rows ask
    has_standing = table(cs)[cm]
    ever_paid = table(ch[hist["kind"] == "payment"])[cm]

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
        hs = np.flatnonzero(has_standing)
        # sig_at[i]: row i's first standing line, what it was paid on (one payment each)
        held_codes, first_of = np.unique(cs, return_index=True)
        first_line = np.full(len(uniques), -1, dtype=np.int64)
        first_line[held_codes] = first_of
        sig_at = np.full(n, -1, dtype=np.int64)
        sig_at[hs] = first_line[cm[hs]]
        sh = sig_at[hs]
        # the common case, vectorised: verified, eligible and on the same terms → paid-earlier
        same = (verified[hs] & (reason[hs] == "")
                & (standing["participant_id"][sh] == m["participant_id"][hs])
                & (standing["outcome"][sh] == outcome[hs])
                & (standing["price_from"][sh] == price_from[hs])
                & (standing["price"][sh] == price[hs]))
        row_of = np.full(len(uniques), -1, dtype=np.int64)
        row_of[cm[hs]] = np.arange(len(hs))
        same &= _same_split(standing, row_of[cs], split_ix[hs], judged.splits)
        quiet = hs[same]
        decision[quiet] = "paid-earlier"
        ddetail[quiet] = "paid in " + standing["period"][sh[same]] + "; unchanged"
        looked_again = hs[~same]
        shares: dict[str, list] = {}
        for k in np.flatnonzero(table(cm[looked_again])[cs]).tolist():
            shares.setdefault(s_ids[k], []).append((standing["funder"][k],
                                                    int(standing["share"][k])))
        for i in looked_again:
            mid = ids[i]
            s = {c_: standing[c_][sig_at[i]] for c_ in ("participant_id", "outcome",
                                                        "price_from", "price", "period")}
            s["participant"] = s["participant_id"]
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
                if s["participant"] != m["participant_id"][i]:
                    change = "changed-participant"
                    what = f"its participant changed from {s['participant']} to {m['participant_id'][i]}"
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
        outcome[plain] = standing["outcome"][sig_at[plain]]
    reverse |= rerate  # a re-rating starts with a reversal
    reversed_lines = table(cm[reverse])[cs]

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
    order = cand[np.lexsort((ids[cand].astype(str), m["achieved_on"][cand]))]
    kept = np.flatnonzero(~reversed_lines)
    totals = Ledger.of(c, standing.take(kept), cs[kept], m["participant_id"][cand])
    pay = _allocate(c, m, order, outcome, price, split_ix, judged.splits, totals, price_from)
    pay_rows, pay_amounts, pay_capped, pay_caps, fail_code, fail_detail = pay

    for i, code in fail_code.items():
        if rerate[i]:
            decision[i] = "reversed"
            dreason[i] = code
            ddetail[i] = ddetail[i] + f"; not paid again: {fail_detail[i]}"
        else:
            decision[i], dreason[i], ddetail[i] = "rejected", code, fail_detail[i]
    achieved_on = m["achieved_on"].astype(np.int64)
    gbp: dict[int, str] = {}  # texts of amounts and days, made once each (they repeat)
    days: dict[int, str] = {}
    for i in pay_rows:
        amt = sum(pay_amounts[i])
        full = int(price[i])
        bit = next((cp for cp in pay_caps[i] if cp), "")
        late = achieved_on[i] < first and not ever_paid[i]
        text = f"paid {gbp.get(amt) or gbp.setdefault(amt, _fmt(amt))} for {outcome[i]}"
        if amt < full:
            text += f" of its price {_fmt(full)}; the {bit} cap withheld {_fmt(full - amt)}"
        else:
            d = int(price_from[i])
            text += f" at the price from {days.get(d) or days.setdefault(d, day_text(d))}"
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

    rev_at = np.flatnonzero(reversed_lines & (standing["amount"] != 0))
    new, new_codes = _lines(m, period, standing.take(rev_at), pay_rows, pay_amounts, pay_capped,
                            pay_caps, outcome, price_from, price, split_ix, judged.splits,
                            ever_paid, first, (cm, cs[rev_at]))
    net = np.zeros(len(uniques), dtype=np.int64)  # this claim's money per milestone
    np.add.at(net, new_codes, new["amount"])
    held_back = np.zeros(len(uniques), dtype=np.int64)
    np.add.at(held_back, new_codes, new["capped"])
    decisions = _decisions(m, ev.invalid, decision, dreason, ddetail, outcome, net[cm],
                           held_back[cm], held)
    claim = Claim(period, number, new, decisions, ev.rows_in, tuple(problems))
    both = Cols({k: np.concatenate([hist[k], new[k]]) for k in _INVARIANT_COLUMNS},
                len(hist) + len(new))
    # what this claim can break: the lines of the milestones and participants it has a line
    # for, with every line of each milestone among them
    all_codes = np.concatenate([ch, new_codes])
    touched = (table(new_codes)[all_codes]
               | _isin(both["participant_id"], new["participant_id"]))
    violations = _violations(c, both, claim, table(all_codes[touched])[all_codes])
    if violations:
        raise InvariantError(violations)
    return claim


def _same_split(standing: Cols, pos: np.ndarray, split_of: np.ndarray,
                splits: list[Split]) -> np.ndarray:
    """Whether each milestone's standing lines have exactly the (funder, share) set of its
    new split — compared exactly, as sorted integer codes, milestone by milestone.

    pos: for each standing line, the position of its milestone in `split_of` (-1: none)."""
    n = len(split_of)
    if not n:
        return np.zeros(0, dtype=bool)
    held = pos >= 0
    s_pos = pos[held]
    f_code, f_seen = _factorize(standing["funder"][held])
    s_code = f_code.astype(np.int64) * 2_000_000 + standing["share"].astype(np.int64)[held]
    s_count = np.bincount(s_pos, minlength=n)
    at = {f: k for k, f in enumerate(f_seen)}  # then the funders only a new split has
    for f in (f for sp in splits for f in sp.funders):
        at.setdefault(f, len(at))
    sp_codes = [np.sort(np.array([at[f] for f in sp.funders], dtype=np.int64) * 2_000_000
                        + np.asarray(sp.units, dtype=np.int64)) for sp in splits]
    sp_codes.append(np.zeros(0, np.int64))  # split -1: none
    lens = np.array([len(x) for x in sp_codes], dtype=np.int64)
    e_count = lens[split_of]
    ok = s_count == e_count
    # expected codes, row by row, in the same (row, code) order as the sorted standing codes
    e_pos = np.repeat(np.arange(n), e_count)
    starts = np.concatenate([[0], np.cumsum(lens)])[split_of]
    within = np.arange(len(e_pos)) - np.repeat(np.cumsum(e_count) - e_count, e_count)
    e_code = np.concatenate(sp_codes)[np.repeat(starts, e_count) + within]
    o = np.lexsort((s_code, s_pos))
    s_pos, s_code = s_pos[o], s_code[o]
    sel = ok[s_pos]
    e_sel = ok[e_pos]
    differs = np.zeros(n, dtype=bool)
    if sel.any():
        bad = s_code[sel] != e_code[e_sel]
        differs[s_pos[sel][bad]] = True
    return ok & ~differs


def _allocate(c: Contract, m: Cols, order: np.ndarray, outcome, price, split_ix,
              splits: list[Split], totals: Ledger, price_from=None):
    """§3: take candidates in order, each seeing the limits and caps left by those before it.

    The one ordered loop of the engine; it walks only this period's candidates, with plain
    integers. Returns per paid row its funders' amounts, capped amounts and the cap that
    bit each line, and per unpaid row its reason code and sentence.
    """
    by_id = {o.id: o for o in c.outcomes}
    terms = _Terms.of(c)
    limit_key, pcap, ccap, fcap = (terms.limits, terms.participant_cap, terms.contract_cap,
                                   terms.funder_caps)
    pids = m["participant_id"]
    amounts: dict[int, list[int]] = {}
    capped: dict[int, list[int]] = {}
    caps: dict[int, list[str]] = {}
    rows: list[int] = []
    fail_code: dict[int, str] = {}
    fail_detail: dict[int, str] = {}
    full_parts: dict[tuple[int, int], list[int]] = {}  # money.split of (price, split)
    limit_count, outcome_count = totals.limit_count, totals.outcome_count
    participant_paid, funder_paid = totals.participant_paid, totals.funder_paid
    about = {o.id: (o, *limit_key[o.id]) for o in c.outcomes}
    for i, oid, p, full_price, s in zip(order.tolist(), outcome[order].tolist(),
                                        pids[order].tolist(), price[order].tolist(),
                                        split_ix[order].tolist()):
        o, lk, limit = about[oid]
        used = limit_count.get((p, lk), 0)
        if used >= limit:
            what = f"group {lk[6:]}" if lk.startswith("group:") else o.id
            fail_code[i] = "limit-reached"
            fail_detail[i] = (f"participant {p} has already been paid {what} {used} time"
                              f"{'s' if used != 1 else ''}, the limit per participant")
            continue
        if o.max_count is not None and outcome_count.get(oid, 0) >= o.max_count:
            fail_code[i] = "volume-cap"
            fail_detail[i] = f"{o.id} has reached its max_count of {o.max_count} payments"
            continue
        if full_price == 0:  # a price of 0.00 is in force: nothing to pay, and no cap to blame
            fail_code[i] = "no-price"
            fail_detail[i] = (f"the price of {o.id} in force from {day_text(price_from[i])} is "
                              "£0.00, so there is nothing to pay")
            continue
        payable, bit, emptied_by = full_price, "", ""
        if pcap is not None:
            room = max(pcap - participant_paid.get(p, 0), 0)
            if room < payable:
                payable, bit = room, "participant"
                emptied_by = "participant" if payable == 0 else ""
        if ccap is not None:
            room = max(ccap - totals.total, 0)
            if room < payable:
                payable, bit = room, bit or "contract"
                emptied_by = emptied_by or ("contract" if payable == 0 else "")
        sp = splits[s]
        full = full_parts.get((full_price, s))
        if full is None:
            full = full_parts[(full_price, s)] = money.split(full_price, sp.units)
        parts = full if payable == full_price else money.bounded_split(payable, sp.units, full)
        got, line_caps, short = [], [], False
        for f, part, whole in zip(sp.funders, parts, full):
            cap = fcap.get(f)
            a = part if cap is None else min(part, max(cap - funder_paid.get(f, 0), 0))
            got.append(a)
            if part < whole:
                line_caps.append(bit)
                short = True
            elif a < part:
                line_caps.append("funder")
                short = True
            else:
                line_caps.append("")
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
        capped[i] = [w - a for w, a in zip(full, got)] if short else [0] * len(got)
        caps[i] = line_caps
        limit_count[(p, lk)] = used + 1
        outcome_count[oid] = outcome_count.get(oid, 0) + 1
        participant_paid[p] = participant_paid.get(p, 0) + total
        totals.total += total
        for f, a in zip(sp.funders, got):
            funder_paid[f] = funder_paid.get(f, 0) + a
    return rows, amounts, capped, caps, fail_code, fail_detail


def _lines(m: Cols, period: Period, rev: Cols, pay_rows, pay_amounts, pay_capped, pay_caps,
           outcome, price_from, price, split_ix, splits, ever_paid, first, codes
           ) -> tuple[Cols, np.ndarray]:
    """Reversal lines (of the standing lines `rev`), then payment lines, in ledger.md's
    order, with line ids: typed columns as `ledger.empty_lines()` has them; and the code of
    each line's milestone (`codes`: those of m's rows and of rev's lines)."""
    r = np.lexsort((np.arange(len(rev)), rev["milestone_id"].astype(str), rev["achieved_on"]))
    rows = np.asarray(pay_rows, dtype=np.int64)
    # the payment lines, row by row and funder by funder, then in ledger order
    funders: list[str] = []
    units: list[int] = []
    amounts: list[int] = []
    held_back: list[int] = []
    bits: list[str] = []
    for i in pay_rows:
        sp = splits[split_ix[i]]
        funders += sp.funders
        units += sp.units
        amounts += pay_amounts[i]
        held_back += pay_capped[i]
        bits += pay_caps[i]
    widths = np.array([len(splits[split_ix[i]].funders) for i in pay_rows], dtype=np.int64)
    at = np.repeat(rows, widths)
    pos = np.arange(len(at)) - np.repeat(np.cumsum(widths) - widths, widths)
    ach = m["achieved_on"].astype(np.int64)
    mids = m["milestone_id"]
    p = np.lexsort((pos, mids[at].astype(str), ach[at]))
    at, k = at[p], np.arange(len(at))[p]  # k: position in the flattened funder lists

    def flat(values: list) -> np.ndarray:
        return np.array(values, dtype=object)[k]

    def pair(rev_values, pay_values, dtype=object) -> np.ndarray:
        return np.concatenate([np.asarray(rev_values, dtype=dtype)[r],
                               np.asarray(pay_values, dtype=dtype)])

    nr, npay = len(rev), len(at)
    first_paid = ~np.asarray(ever_paid, dtype=bool)
    out = {
        "period": np.full(nr + npay, period.label, dtype=object),
        "kind": pair(np.full(nr, "reversal", dtype=object), np.full(npay, "payment", dtype=object)),
        "milestone_id": pair(rev["milestone_id"], mids[at]),
        "participant_id": pair(rev["participant_id"], m["participant_id"][at]),
        "outcome": pair(rev["outcome"], outcome[at]),
        "achieved_on": pair(rev["achieved_on"], ach[at], np.int64),
        "verified_on": pair(rev["verified_on"], m["verified_on"][at], np.int64),
        "evidence_ref": pair(rev["evidence_ref"], m["evidence_ref"][at]),
        "price_from": pair(rev["price_from"], price_from[at], np.int64),
        "price": pair(rev["price"], price[at], np.int64),
        "funder": pair(rev["funder"], flat(funders)),
        "share": pair(rev["share"], np.array(units, dtype=np.int64)[k], np.int64),
        "amount": pair(-rev["amount"].astype(np.int64), np.array(amounts, dtype=np.int64)[k],
                       np.int64),
        "capped": pair(np.zeros(nr, np.int64), np.array(held_back, dtype=np.int64)[k], np.int64),
        "cap": pair(np.full(nr, "", dtype=object), flat(bits)),
        "late": pair(np.zeros(nr, bool), (ach[at] < first) & first_paid[at], bool),
        "reverses": pair(rev["line_id"], np.full(npay, "", dtype=object)),
    }
    out["line_id"] = np.array([f"{period.label}-{j:05d}" for j in range(1, nr + npay + 1)],
                              dtype=object)
    return (Cols({k: out[k] for k in LEDGER_COLUMNS}, nr + npay),
            np.concatenate([codes[1][r], codes[0][at]]).astype(np.int64))


def _decisions(m: Cols, invalid, decision, dreason, ddetail, outcome, net: np.ndarray,
               held_back: np.ndarray, held) -> Cols:
    """One row per milestone row: decision, reason, sentence and this claim's net money
    (`net` and `held_back`: the amount and capped of m's rows' lines in this claim)."""
    cols = {"milestone_id": m["milestone_id"], "participant_id": m["participant_id"],
            "milestone": m["milestone"], "outcome": outcome, "decision": decision,
            "reason": dreason, "detail": ddetail, "amount": net, "capped": held_back}
    if len(invalid):  # an invalid row has no line in this claim
        n = len(invalid)
        extra = {
            "milestone_id": invalid["milestone_id"].to_numpy(dtype=object),
            "participant_id": invalid["participant_id"].to_numpy(dtype=object),
            "milestone": invalid["milestone"].to_numpy(dtype=object),
            "outcome": np.full(n, "", dtype=object), "decision": np.full(n, "rejected", dtype=object),
            "reason": np.full(n, "invalid-row", dtype=object),
            "detail": np.array([t + ("; its earlier payment stands until the row is fixed"
                                     if mid in held else "; it will be claimed once fixed")
                                for t, mid in zip(invalid["detail"], invalid["milestone_id"])],
                               dtype=object),
            "amount": np.zeros(n, dtype=np.int64), "capped": np.zeros(n, dtype=np.int64)}
        cols = {k: np.concatenate([np.asarray(v, dtype=extra[k].dtype), extra[k]])
                for k, v in cols.items()}
        order = np.argsort(cols["milestone_id"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
    cols = {k: np.asarray(v, dtype=np.int64 if k in ("amount", "capped") else object)
            for k, v in cols.items()}
    return Cols(cols, len(cols["milestone_id"]))


# --- invariants ---------------------------------------------------------------------------------

_INVARIANT_COLUMNS = ("line_id", "period", "kind", "milestone_id", "participant_id", "outcome",
                      "funder", "price", "amount", "reverses")


def check_invariants(c: Contract, all_lines: pd.DataFrame, claim: Claim | None = None) -> list[str]:
    """Every invariant of claim-rules.md that the lines so far must keep; [] when all hold."""
    return _violations(c, Cols({k: all_lines[k].to_numpy() for k in _INVARIANT_COLUMNS},
                               len(all_lines)), claim)


def _violations(c: Contract, every: Cols, claim: Claim | None, groups: np.ndarray | None = None
                ) -> list[str]:
    """The invariants broken by `every` line so far (and by `claim`, its last claim).

    groups: the lines to check milestone by milestone and participant by participant — all
    of them when None; `claim_after` passes the lines of the milestones and participants
    its claim has a line for, which are all an earlier-checked history can newly break.
    Funder and contract totals are always checked over every line."""
    out: list[str] = []
    terms = _Terms.of(c)
    lines = every if groups is None else every.take(np.flatnonzero(groups))
    mids = lines["milestone_id"]
    amount = lines["amount"].astype(np.int64)
    keep = standing_mask(*(lines[k] for k in ("kind", "milestone_id", "period", "line_id",
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


def _isin(values: np.ndarray, pool) -> np.ndarray:
    """Whether each of `values` is among `pool` (by hashing, not sorting)."""
    if not len(values):
        return np.zeros(0, dtype=bool)
    if len(values) + len(pool) <= _SMALL:
        among = set(pool.tolist() if isinstance(pool, np.ndarray) else pool)
        return np.fromiter((v in among for v in values.tolist()), dtype=bool, count=len(values))
    return pd.Index(values).isin(pool)


# Below this many values a Python dict or set beats pandas' hash tables, whose set-up costs
# tens of microseconds a call (the model's claims are small and many).
_SMALL = 400


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pd.factorize for text keys: codes in order of first appearance, and the uniques."""
    if len(values) > _SMALL:
        return pd.factorize(values)
    seen: dict = {}
    codes = np.fromiter((seen.setdefault(v, len(seen)) for v in values.tolist()),
                        dtype=np.intp, count=len(values))
    return codes, np.array(list(seen) + [None], dtype=object)[:-1]


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
