"""The claim engine: one period's ledger lines and decisions, as a pure function.

After ledger.py in the flow. `compute_claim` takes a valid contract, typed evidence, the
lines of every claim issued before, and the period, and returns the claim's lines (in file
order, with line ids), one decision per milestone row, and any problem that refuses the
claim. It follows ../shared/spec/claim-rules.md section by section:

  §1 which rows are looked at  → `claim_after` (verified by the period's end)
  §2 eligibility               → `eligibility` (whole-column checks; what depends only on
                                  the participant — eligibility columns, payer rules,
                                  routes — once per participant in `_People`, what depends
                                  only on the row once per row in `_RowFacts`;
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

What a claim reads from the earlier lines it reads as integer codes (`Earlier`: each
line's milestone, participant, funder, period and outcome, and the line each reversal
names), so that the standing lines, the totals caps and limits are judged by and the
invariant check are whole-array sums. `compute_claim` codes the lines it is given; the
model hands each claim's codes on to the next (`Claim.after`), so that a claim codes only
its own lines — the same codes, so the same claim, and nothing carried over is a running
total: each claim sums afresh, and is checked against every earlier line of the groups it
touches. Likewise what §2 finds from a row alone is worked out once per row of the table
the rows are taken from (`_RowFacts`); the prerequisites are judged every claim.

Must not read or write files, print, look at the clock or use randomness: the same
inputs give the same frames, whatever the order of the evidence rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
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
    after: the earlier lines and this claim's, coded (`Earlier`): what the next claim of a
    history takes as `claim_after(..., earlier=)`.
    """

    period: Period
    number: int
    line_cols: "Cols"
    decision_cols: "Cols"
    rows_in: int
    problems: tuple[Problem, ...] = ()
    after: "Earlier | None" = field(default=None, repr=False, compare=False)

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
        """The rows at `ix`; a column is gathered when first used — from the table these
        rows were taken from, when they were (one gather, not one per `take`)."""
        if self._parent is not None:
            return self._parent.take(self._ix[ix])
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


# reason codes as small integers inside the engine: 0 eligible, k the k-th ELIGIBILITY_CODES
_REASON_TEXT = np.array([""] + list(ELIGIBILITY_CODES), dtype=object)
_REASON = {code: k for k, code in enumerate(_REASON_TEXT.tolist())}


def _root(rows: Cols) -> tuple[Cols, np.ndarray]:
    """The table `rows` were taken from (through every `take`), and their positions in it."""
    ix = np.arange(len(rows))
    while rows._parent is not None:
        ix = rows._ix[ix]
        rows = rows._parent
    return rows, ix


class _RowFacts:
    """What §2 finds from a milestone row alone — with its participant and the contract —
    for the rows of one table, each row worked out once however many claims look at it
    (the model judges every row again in each later claim of its history; only the
    prerequisites depend on the other rows, and `eligibility` judges those every time).
    The first rows asked for are worked out with every verified row of their table.

    Columns (`NAMES`): reason, the first failing check before the prerequisites (an index
    into _REASON_TEXT, 0 when none) and detail, its sentence; outcome, the index of the
    outcome that pays the row in c.outcomes (-1: none); price_from / price in force;
    no_price and its sentence; split, the index into the participants' splits (-1: none);
    no_funder and its sentence (funder_why); achieved, the day; person, the participant's
    position (the blank participant's when unknown)."""

    NAMES = ("reason", "detail", "outcome", "price_from", "price", "no_price",
             "no_price_detail", "split", "no_funder", "funder_why", "achieved", "person")

    def __init__(self, c: Contract, table: Cols, participants: Cols, people: "_People"):
        self.contract, self.table, self.participants, self.people = c, table, participants, people
        self.done = np.zeros(len(table), dtype=bool)
        self.cols: dict[str, np.ndarray] | None = None

    @staticmethod
    def of(c: Contract, rows: Cols, participants: Cols) -> dict[str, np.ndarray]:
        """The facts of `rows`, worked out for those of their table not yet judged."""
        table, ix = _root(rows)
        people = _People.of(c, participants)
        key = ("row-facts", id(c), id(participants))
        memo = table._memo.get(key)
        if (memo is None or memo.contract is not c or memo.participants is not participants
                or memo.people is not people):
            memo = table._memo[key] = _RowFacts(c, table, participants, people)
        return memo._at(ix)

    def _at(self, ix: np.ndarray) -> dict[str, np.ndarray]:
        need = ix[~self.done[ix]]
        if len(need):
            # with them, every verified row of the table: the rows later claims look at
            # (the model's claims look at more of one table each period), in one pass
            if "status" in self.table:
                need = np.concatenate([need, np.flatnonzero(
                    (self.table["status"] == "verified") & ~self.done)])
            need = np.unique(need)
            found = _row_facts(self.contract, self.table.take(need), self.participants)
            if self.cols is None:
                self.cols = {k: np.zeros(len(self.table), dtype=found[k].dtype)
                             for k in self.NAMES}
            for k in self.NAMES:
                self.cols[k][need] = found[k]
            self.done[need] = True
        if self.cols is None:  # no row at all
            return _row_facts(self.contract, self.table.take(ix), self.participants)
        return {k: a[ix] for k, a in self.cols.items()}


def _row_facts(c: Contract, rows: Cols, participants: Cols) -> dict[str, np.ndarray]:
    """§2 for each row on its own, in its order: every check but the prerequisites, and
    the price and the split (see `_RowFacts`)."""
    n = len(rows)
    t = c.term
    start, enrol_end, out_end = (day_number(t.service_start), day_number(t.enrolment_end),
                                 day_number(t.outcomes_end))
    reason = np.zeros(n, dtype=np.int64)
    detail = np.full(n, "", dtype=object)

    def fail(mask: np.ndarray, code: str, sentence) -> None:
        sel = np.flatnonzero(mask & (reason == 0))
        reason[sel] = _REASON[code]
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

    # price in force on the basis date (claim-rules §3.3), and who pays (the payer rule)
    basis = enrolled if c.price_basis == "enrolled" else achieved
    price_from = np.full(n, NO_DAY, dtype=np.int64)
    price = np.zeros(n, dtype=np.int64)
    no_price = np.zeros(n, dtype=bool)
    no_price_detail = np.full(n, "", dtype=object)
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
        for i in mine[j < 0].tolist():
            no_price_detail[i] = (f"no price for {o.id} is in force on {day_text(basis[i])} "
                                  f"(the first price is from {min(o.prices).isoformat()})")

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
    return {"reason": reason, "detail": detail, "outcome": outcome_ix,
            "price_from": price_from, "price": price, "no_price": no_price,
            "no_price_detail": no_price_detail, "split": split_ix, "no_funder": no_funder,
            "funder_why": funder_why, "achieved": achieved, "person": at.astype(np.int64)}


def eligibility(c: Contract, rows: Cols, participants: Cols) -> Judged:
    """Judge every row (milestones verified by the period's end) against §2, in its order:
    what each row shows alone (`_RowFacts`, once per row), then the prerequisites, outcome
    by outcome in dependency order, each judged by eligible milestones only."""
    f = _RowFacts.of(c, rows, participants)
    base, outcome_ix, achieved, pcode = f["reason"], f["outcome"], f["achieved"], f["person"]
    no_price, no_funder = f["no_price"], f["no_funder"]
    detail = f["detail"]  # a new array (gathered): written below
    final = base.copy()
    missing, too_old = _REASON["missing-prerequisite"], _REASON["prerequisite-too-old"]
    oid_ix = {o.id: k for k, o in enumerate(c.outcomes)}
    for o in _topo(c):
        k = oid_ix[o.id]
        of_k = outcome_ix == k
        mine = np.flatnonzero(of_k & (base == 0))
        if len(mine) and o.requires:
            pre_reason = np.zeros(len(mine), dtype=np.int64)
            pre_detail = np.full(len(mine), "", dtype=object)
            found_all = []
            for req in o.requires:
                q = oid_ix[req.outcome]
                pool_ix = np.flatnonzero((outcome_ix == q) & (final == 0))
                has, prior = _latest_before(pcode[mine], achieved[mine], pcode[pool_ix],
                                            achieved[pool_ix])
                found_all.append((req, has, achieved[mine] - prior))
            # §2's order: a missing prerequisite before one too old, whatever `requires` order
            for req, has, gap in found_all:
                for i in np.flatnonzero(~has & (pre_reason == 0)):
                    pre_reason[i] = missing
                    pre_detail[i] = (f"{o.id} needs an eligible {req.outcome} on or before "
                                     f"{day_text(achieved[mine[i]])}; none was found")
            for req, has, gap in found_all:
                if req.within_days is None:
                    continue
                for i in np.flatnonzero(has & (gap > req.within_days) & (pre_reason == 0)):
                    pre_reason[i] = too_old
                    pre_detail[i] = (f"{o.id} needs {req.outcome} within {req.within_days} "
                                     f"days; the {req.outcome} was {gap[i]} days earlier")
            failed = pre_reason != 0
            final[mine[failed]], detail[mine[failed]] = pre_reason[failed], pre_detail[failed]
        rows_o = np.flatnonzero(of_k & (final == 0))
        priceless = rows_o[no_price[rows_o]]
        final[priceless] = _REASON["no-price"]
        detail[priceless] = f["no_price_detail"][priceless]
        nf = rows_o[~no_price[rows_o] & no_funder[rows_o]]
        final[nf], detail[nf] = _REASON["no-funder-for-route"], f["funder_why"][nf]
    # rows that failed before an outcome was known keep their first reason
    final[base != 0] = base[base != 0]
    outcome = np.array([o.id for o in c.outcomes] + [""], dtype=object)[outcome_ix]
    return Judged(_REASON_TEXT[final], detail, outcome, f["price_from"], f["price"],
                  f["split"], _People.of(c, participants).splits)


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


class _Codes:
    """Text values as integer codes, in order of first sight.

    Append-only: a code, once given, always means the same value, so the successive
    `Earlier` of one history (and the rows claimed against them) share one table, and a
    claim codes only what is new to it. A table coded first from many values (a history
    read from the ledgers) keeps those as a pandas index (hashed in C); values coded after
    go in a dict."""

    def __init__(self) -> None:
        self.base: pd.Index | None = None  # the values coded in bulk: code = position
        self.extra: dict = {}              # values coded since: code = len(base) + order
        self._values: np.ndarray | None = None

    def __len__(self) -> int:
        return (0 if self.base is None else len(self.base)) + len(self.extra)

    def of(self, values: np.ndarray) -> np.ndarray:
        """The code of each value (new values get the next codes, in order)."""
        values = np.asarray(values, dtype=object)
        if not len(self) and len(values) > _BULK:
            at, distinct = pd.factorize(values)
            if (at >= 0).all():  # (no missing value: those are for the dict)
                self.base = pd.Index(distinct, dtype=object)
                return at.astype(np.int64)
        if self.base is None or not len(values):
            codes = np.full(len(values), -1, dtype=np.int64)
        else:
            codes = self.base.get_indexer(values).astype(np.int64)
        miss = np.flatnonzero(codes < 0)
        if len(miss):
            extra, nb = self.extra, len(self) - len(self.extra)
            codes[miss] = np.fromiter((nb + extra.setdefault(v, len(extra))
                                       for v in values[miss].tolist()),
                                      dtype=np.int64, count=len(miss))
        return codes

    def find(self, values: list) -> list[int | None]:
        """The code of each value; None for a value without one (none is given)."""
        nb = len(self) - len(self.extra)
        found = ([-1] * len(values) if self.base is None or not values
                 else self.base.get_indexer(np.array(values + [None], dtype=object)[:-1]).tolist())
        return [k if k >= 0 else (None if v not in self.extra else nb + self.extra[v])
                for k, v in zip(found, values)]

    def values(self) -> np.ndarray:
        """The values, by code."""
        if self._values is None or len(self._values) != len(self):
            base = [] if self.base is None else self.base.tolist()
            self._values = np.array(base + list(self.extra) + [None], dtype=object)[:-1]
        return self._values


class _Tables:
    """The code tables of one history: milestones, participants, funders, periods and
    outcomes; and each split's funders' codes."""

    def __init__(self) -> None:
        self.milestone, self.participant, self.funder = _Codes(), _Codes(), _Codes()
        self.period, self.outcome = _Codes(), _Codes()
        self.funders_of: dict[Split, np.ndarray] = {}

    def rows(self, rows: Cols, column: str) -> np.ndarray:
        """The codes of a milestone column of `rows` (worked out once on the table the rows
        were taken from: the model takes every claim's rows from one table)."""
        return rows.derived(("codes", column, self), lambda t: (
            self.milestone if column == "milestone_id" else self.participant).of(t[column]))

    def split_funders(self, sp: Split) -> np.ndarray:
        """A split's funders' codes, in split order."""
        out = self.funders_of.get(sp)
        if out is None:
            out = self.funders_of[sp] = self.funder.of(np.array(sp.funders, dtype=object))
        return out


_BULK = 20_000  # values at least: a table's first values are coded by pandas, not a dict


@dataclass(frozen=True)
class Earlier:
    """The lines of the claims before this one, with what the engine reads from each line
    as integer codes — so that a claim codes only its own lines, and every total it judges
    caps, limits and the invariants by is a whole-array sum over codes, not a pass over
    text. `claim_after` makes it from the earlier lines (`Earlier.of`), or takes the one the
    previous claim of a history handed on (`Claim.after`): the same codes either way, so
    the same claim (a test compares the two, byte for byte).

    lines: every earlier line, in order (ledger.LEDGER_COLUMNS; `of` needs only those
    check_invariants reads). tables: the code tables (`_Tables`), shared along a history.
    milestone / participant / funder / period / outcome: each line's codes. payment:
    whether a line is a payment. target: for a reversal, the position of the line it names
    — the first line with that id, as `standing_mask` reads it (-1: none, or a payment).
    standing: the lines `standing_mask` keeps. unique_ids: no line id repeats (what sib
    writes). minted: when every line was written by `claim_after` from an empty history
    (ids `<period>-00001`, …), the periods whose ids it wrote; else None. store: where
    `lines` are kept (`_Store`).

    Immutable: `then` returns a new one. Nothing here is a running total — each claim sums
    afresh from these per-line facts.
    """

    lines: Cols
    tables: _Tables
    milestone: np.ndarray
    participant: np.ndarray
    funder: np.ndarray
    period: np.ndarray
    outcome: np.ndarray
    payment: np.ndarray
    target: np.ndarray
    standing: np.ndarray
    unique_ids: bool
    minted: frozenset | None
    store: "_Store | None" = field(default=None, repr=False, compare=False)
    ids: "_LineIds | None" = field(default=None, repr=False, compare=False)

    @staticmethod
    def of(lines: Cols) -> "Earlier":
        """`lines` coded from scratch (its `lines` are these)."""
        empty = np.zeros(0, dtype=np.int64)
        start = Earlier(lines, _Tables(), empty, empty, empty, empty, empty,
                        np.zeros(0, dtype=bool), empty, np.zeros(0, dtype=bool), True,
                        frozenset())
        # a history begun empty keeps its line ids as it grows (`_LineIds`), so that the
        # reversals of each claim added are resolved without indexing the history again
        return start._with(lines, {}, whole=True, ids=_LineIds() if not len(lines) else None)

    def then(self, new: Cols, known: dict | None = None) -> "Earlier":
        """These lines followed by `new`.

        known: what the claim that wrote `new` knows of it — some of its codes (milestone,
        participant, funder, period, outcome), and with `minted` (its period label: new's
        ids are `<label>-00001`, …) the `target` of its reversals; the rest is worked out
        from the lines."""
        return self._with(new, known or {})

    def _with(self, new: Cols, known: dict, whole: bool = False,
              ids: "_LineIds | None" = None) -> "Earlier":
        t = self.tables
        payment = np.asarray(new["kind"] == "payment", dtype=bool)
        column = {"milestone": "milestone_id", "participant": "participant_id",
                  "funder": "funder", "period": "period", "outcome": "outcome"}
        codes = {k: known[k] if k in known else getattr(t, k).of(new[name])
                 for k, name in column.items()}
        codes["payment"] = payment
        joined = codes if whole else {k: np.concatenate([getattr(self, k), v])
                                      for k, v in codes.items()}
        store = _Store.of(new) if whole else self.store.then(len(self), new)
        lines = new if whole else store.rows(len(self) + len(new))
        label = known.get("minted")
        if (label is not None and self.minted is not None and label not in self.minted
                and self.unique_ids and "target" in known):
            # ids of a period never written before: none repeats, and each reversal names
            # the one line with its id
            minted, unique = self.minted | {label}, True
            target = np.concatenate([self.target, known["target"]])
        else:
            minted = frozenset() if whole and not len(new) else None
            found = None
            if not whole and self.ids is not None:
                found = self.ids.then(self, new, codes["payment"])
            if found is not None:
                target, unique, ids = found
            else:
                target, unique = _targets(lines["line_id"], lines["reverses"], joined["payment"])
        standing = _standing(joined["payment"], joined["milestone"], joined["period"], target,
                             len(t.period))
        return Earlier(lines, t, joined["milestone"], joined["participant"], joined["funder"],
                       joined["period"], joined["outcome"], joined["payment"], target,
                       standing, unique, minted, store, ids)

    def __len__(self) -> int:
        return len(self.milestone)


def _targets(line_id: np.ndarray, reverses: np.ndarray, payment: np.ndarray
             ) -> tuple[np.ndarray, bool]:
    """The position of the line each reversal names (-1: none; for a payment, -1), the first
    line with that id, as `standing_mask` reads it; and whether no id repeats."""
    target = np.full(len(line_id), -1, dtype=np.int64)
    ids = pd.Index(line_id)
    unique = bool(ids.is_unique)
    rev = np.flatnonzero(~payment)
    if len(rev):
        if unique:
            target[rev] = ids.get_indexer(reverses[rev])
        else:  # a damaged ledger: a reversal names the first line with the id
            first = np.flatnonzero(~ids.duplicated())
            where = pd.Index(line_id[first]).get_indexer(reverses[rev])
            target[rev] = np.where(where >= 0, first[np.maximum(where, 0)], -1)
    return target, unique


class _LineIds:
    """The position of the first line with each id, of a history grown claim by claim from
    empty: the reversals of a claim added are resolved by looking up their ids, not by
    indexing every line again (what `_targets` does).

    It is kept for one line of states: `then` extends it in place for the state holding its
    `n` lines, and gives None — work it out from the lines — for any other state (a second
    claim added to the same state), once an id repeats (for good: n = -1), and when an
    earlier reversal named no line (a later line might be the one it names)."""

    def __init__(self) -> None:
        self.first: dict[str, int] = {}
        self.n = 0

    def then(self, state: "Earlier", new: Cols, payment: np.ndarray
             ) -> tuple[np.ndarray, bool, "_LineIds"] | None:
        """(target, unique, self) for `state` followed by `new`, as `_targets` gives them
        over all the lines; None when that must be worked out from the lines."""
        n = len(state)
        if self.n != n or not state.unique_ids or bool(
                (state.target[~state.payment] < 0).any()):
            return None
        first = self.first
        k = len(first)
        ids = new["line_id"].tolist()
        first.update(zip(ids, range(n, n + len(ids))))
        if len(first) != k + len(ids):  # an id repeats: from now on, index the lines
            self.n = -1                  # (the table no longer says where first lines are)
            return None
        target = np.full(len(ids), -1, dtype=np.int64)
        rev = np.flatnonzero(~payment)
        if len(rev):
            target[rev] = [first.get(x, -1) for x in new["reverses"][rev].tolist()]
        self.n = n + len(ids)
        return np.concatenate([state.target, target]), True, self


class _Store:
    """The columns of a history's lines, kept so that adding a claim's lines costs what
    they are, not what the history is: a column is joined into one array, with room to
    grow, when first read, and a claim's lines are then written after it in place. A
    state of the history reads its own first `n` rows, which later writes never touch; a
    second claim added to the same state (another branch) gets a copy."""

    def __init__(self, names, pieces: dict[str, list[np.ndarray]], n: int):
        self.names = list(names)
        self.pieces = pieces                   # a column not yet read: its arrays in order
        self.grown: dict[str, np.ndarray] = {}  # a column read: its rows, then spare room
        self.n = n

    @staticmethod
    def of(lines: Cols) -> "_Store":
        return _Store(lines.columns, {k: [lines[k]] for k in lines.columns}, len(lines))

    def rows(self, n: int) -> Cols:
        """The first `n` rows, as columns read when first used."""
        return Cols(_Lazy(self.names, lambda name: self.column(name, n)), n)

    def column(self, name: str, n: int) -> np.ndarray:
        if name not in self.grown:
            parts = self.pieces.pop(name)
            if len(parts) == 1:  # as given, not copied: `then` makes room when lines come
                self.grown[name] = parts[0]
            else:
                whole = np.concatenate(parts)
                room = np.empty(_roomy(len(whole)), dtype=whole.dtype)
                room[:len(whole)] = whole
                self.grown[name] = room
        rows = self.grown[name][:n]
        rows.flags.writeable = False  # what a state reads is never written, by it or others
        return rows

    def then(self, n: int, new: Cols) -> "_Store":
        """A store whose first n + len(new) rows are this one's first n, then new's."""
        m = len(new)
        if self.n != n or any(new[k].dtype != a.dtype for k, a in self.grown.items()):
            out = _Store(self.names, {k: [self.column(k, n) if k in self.grown else
                                          np.concatenate(self.pieces[k])[:n], new[k]]
                                      for k in self.names}, n + m)
            return out
        for name, a in list(self.grown.items()):
            if len(a) < n + m:
                bigger = np.empty(_roomy(n + m), dtype=a.dtype)
                bigger[:n] = a[:n]
                a = self.grown[name] = bigger
            a[n:n + m] = new[name]
        for name, parts in self.pieces.items():
            parts.append(new[name])
        self.n = n + m
        return self


def _roomy(n: int) -> int:
    """Rows to allocate for n lines and more to come: a quarter more (appending stays
    linear overall, and a national history of millions of lines is not held twice)."""
    return n + max(n // 4, 64)


def _standing(payment: np.ndarray, milestone: np.ndarray, period: np.ndarray,
              target: np.ndarray, n_periods: int) -> np.ndarray:
    """`standing_mask` over codes: the payments whose (milestone, period) no reversal
    cancels — a reversal cancels, for its milestone, the period of the line it names
    (`target`, -1: none)."""
    rev = ~payment
    if not rev.any():
        return payment
    t = target[rev]
    ok = t >= 0
    cancelled = milestone[rev][ok] * n_periods + period[t[ok]]
    return payment & ~np.isin(milestone * n_periods + period, cancelled)


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
    def of(c: Contract, e: Earlier, kept: np.ndarray, who: np.ndarray) -> "Ledger":
        """The totals of the earlier lines at `kept` (standing ones); per participant only
        for the participant codes in `who` (the candidates: the only participants the
        allocation looks up)."""
        t = e.tables
        amount = e.lines["amount"][kept].astype(np.int64)
        f, p, m, o = e.funder[kept], e.participant[kept], e.milestone[kept], e.outcome[kept]
        first = _first_lines(m, len(t.milestone))
        fo, fp = o[first], p[first]
        whom = np.zeros(len(t.participant), dtype=bool)
        whom[who] = True
        mine = whom[p]
        by_f = _coded_sums(f, amount, t.funder)
        by_p = _coded_sums(p[mine], amount[mine], t.participant)
        counted = whom[fp]
        lk = _limit_keys(c, t.outcome.values())[0]
        pairs = zip(t.participant.values()[fp[counted]].tolist(), lk[fo[counted]].tolist())
        n_o = np.bincount(fo, minlength=len(t.outcome))
        by_o = dict(zip(t.outcome.values()[n_o > 0].tolist(), n_o[n_o > 0].tolist()))
        return Ledger(c, by_f, by_p, _counts(list(pairs)), by_o, int(amount.sum()))


def _coded_sums(codes: np.ndarray, amounts: np.ndarray, table: _Codes) -> dict:
    """Exact integer sum of `amounts` per value present in `codes`."""
    out = np.zeros(len(table), dtype=np.int64)
    np.add.at(out, codes, amounts)
    there = np.bincount(codes, minlength=len(table)) > 0
    return dict(zip(table.values()[there].tolist(), out[there].tolist()))


def _limit_keys(c: Contract, outcomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each outcome's limit key ('outcome:<id>' or 'group:<id>') and its limit per participant
    (an outcome the contract no longer has: its own key, limit 1)."""
    codes, uniques = _factorize(outcomes)
    known = _Terms.of(c).limits
    pairs = [known.get(o, (f"outcome:{o}", 1)) for o in uniques]
    keys = np.array([k for k, _ in pairs] + [""], dtype=object)
    limits = np.array([n for _, n in pairs] + [0], dtype=np.int64)
    return keys[codes], limits[codes]


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


def claim_after(c: Contract, ev: Rows, hist: Cols, number: int, period: Period, *,
                earlier: Earlier | None = None) -> Claim:
    """`compute_claim` with the evidence and the earlier claims' lines as columns, and
    `number` the claim's number: how the model claims period after period in memory.

    earlier: `hist` coded (`Earlier`), as the previous claim handed it on (`Claim.after`);
    worked out from `hist` when not given (or not for `hist`). The claim is the same either
    way; what it saves is coding the whole history again every claim."""
    if earlier is None or earlier.lines is not hist:
        earlier = Earlier.of(hist)
    tables = earlier.tables
    end, first = day_number(period.end), day_number(period.start)
    m = ev.milestones
    m = m.take(np.argsort(m["milestone_id"], kind="stable"))
    n = len(m)
    ids = m["milestone_id"]
    s_at = np.flatnonzero(earlier.standing)
    standing = hist.take(s_at)
    s_ids = standing["milestone_id"]
    # milestone ids as integer codes shared by the rows and the earlier lines: which rows
    # hold a payment, which lines belong to a row, by table look-up instead of hashing again
    cm, ch = tables.rows(m, "milestone_id"), earlier.milestone
    cs = ch[s_at]

    def table(at: np.ndarray) -> np.ndarray:
        out = np.zeros(len(tables.milestone), dtype=bool)
        out[at] = True
        return out

    problems: list[Problem] = []

    # a paid milestone must stay in the evidence (withdrawn, not deleted)
    lost = cs[~table(cm)[cs]]
    unmatched = tables.milestone.values()[np.unique(lost)] if len(lost) else lost
    gone = (sorted(set(unmatched.tolist()) - set(ev.invalid["milestone_id"])) if len(lost)
            else [])
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
    ever_paid = table(ch[earlier.payment])[cm]

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
        first_line = np.full(len(tables.milestone), len(cs), dtype=np.int64)
        np.minimum.at(first_line, cs, np.arange(len(cs)))
        sig_at = np.full(n, -1, dtype=np.int64)
        sig_at[hs] = first_line[cm[hs]]
        sh = sig_at[hs]
        # the common case, vectorised: verified, eligible and on the same terms → paid-earlier
        same = (verified[hs] & (reason[hs] == "")
                & (standing["participant_id"][sh] == m["participant_id"][hs])
                & (standing["outcome"][sh] == outcome[hs])
                & (standing["price_from"][sh] == price_from[hs])
                & (standing["price"][sh] == price[hs]))
        row_of = np.full(len(tables.milestone), -1, dtype=np.int64)
        row_of[cm[hs]] = np.arange(len(hs))
        same &= _same_split(earlier.funder[s_at], standing["share"], row_of[cs], split_ix[hs],
                            judged.splits, tables)
        quiet = hs[same]
        decision[quiet] = "paid-earlier"
        # the sentence per period paid in, spread to the rows (periods are few, rows many)
        said = np.array([f"paid in {p}; unchanged" for p in tables.period.values().tolist()]
                        + [None], dtype=object)[:-1]
        ddetail[quiet] = said[earlier.period[s_at[sh[same]]]]
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
    totals = Ledger.of(c, earlier, s_at[~reversed_lines], tables.rows(m, "participant_id")[cand])
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

    def money_text(p: int) -> str:
        return gbp.get(p) or gbp.setdefault(p, _fmt(p))

    def day(d: int) -> str:
        return days.get(d) or days.setdefault(d, day_text(d))

    at = np.asarray(pay_rows, dtype=np.int64)
    plain: list[int] = []  # rows paid (not re-rated): their reasons and sentences
    plain_reason: list[str] = []
    plain_text: list[str] = []
    for i, full, since, got_on, was_paid, oid, again in zip(
            pay_rows, price[at].tolist(), price_from[at].tolist(), achieved_on[at].tolist(),
            ever_paid[at].tolist(), outcome[at].tolist(), rerate[at].tolist()):
        amt = sum(pay_amounts[i])
        bit = next(filter(None, pay_caps[i]), "")
        text = f"paid {money_text(amt)} for {oid}"
        if amt < full:
            text += (f" of its price {money_text(full)}; the {bit} cap withheld "
                     f"{money_text(full - amt)}")
        else:
            text += f" at the price from {day(since)}"
        if got_on < first and not was_paid:
            text += f" (late: achieved {day(got_on)})"
        if again:
            decision[i] = "re-rated"
            ddetail[i] = ddetail[i] + "; " + text
        else:
            plain.append(i)
            plain_reason.append(f"{bit}-cap" if bit else "")
            plain_text.append(text[0].upper() + text[1:])
    decision[plain] = "paid"
    dreason[plain] = np.array(plain_reason + [None], dtype=object)[:-1]
    ddetail[plain] = np.array(plain_text + [None], dtype=object)[:-1]
    sel = reverse & ~rerate
    decision[sel] = "reversed"

    rev_at = np.flatnonzero(reversed_lines & (standing["amount"] != 0))
    row_codes = {"milestone": cm, "participant": tables.rows(m, "participant_id"),
                 "outcome": np.full(n, -1, dtype=np.int64)}
    row_codes["outcome"][pay_rows] = tables.outcome.of(outcome[pay_rows])
    held_at = s_at[rev_at]
    rev_codes = {"milestone": cs[rev_at], "participant": earlier.participant[held_at],
                 "outcome": earlier.outcome[held_at], "funder": earlier.funder[held_at],
                 "target": held_at}
    new, coded = _lines(m, period, standing.take(rev_at), pay_rows, pay_amounts, pay_capped,
                        pay_caps, outcome, price_from, price, split_ix, judged.splits,
                        ever_paid, first,
                        (row_codes, rev_codes, [tables.split_funders(sp) for sp in judged.splits]))
    new_codes = coded["milestone"]
    coded["period"] = np.full(len(new),
                              tables.period.of(np.array([period.label], dtype=object))[0])
    coded["minted"] = period.label
    net = np.zeros(len(tables.milestone), dtype=np.int64)  # this claim's money per milestone
    np.add.at(net, new_codes, new["amount"])
    held_back = np.zeros(len(tables.milestone), dtype=np.int64)
    np.add.at(held_back, new_codes, new["capped"])
    decisions = _decisions(m, ev.invalid, decision, dreason, ddetail, outcome, net[cm],
                           held_back[cm], held)
    after = earlier.then(new, coded)
    claim = Claim(period, number, new, decisions, ev.rows_in, tuple(problems), after)
    # what this claim can break: the lines of the milestones and participants it has a line
    # for, with every line of each milestone among them
    all_m, all_p = after.milestone, after.participant
    whose = np.zeros(len(tables.participant), dtype=bool)
    whose[all_p[len(hist):]] = True
    touched = table(new_codes)[all_m] | whose[all_p]
    violations = _violations(c, after.lines, claim, table(all_m[touched])[all_m], after)
    if violations:
        raise InvariantError(violations)
    return claim


def _same_split(funder: np.ndarray, share: np.ndarray, pos: np.ndarray, split_of: np.ndarray,
                splits: list[Split], tables: _Tables) -> np.ndarray:
    """Whether each milestone's standing lines have exactly the (funder, share) set of its
    new split — compared exactly, milestone by milestone.

    funder / share: the standing lines' funder codes and shares; pos: for each standing
    line, the position of its milestone in `split_of` (-1: none). A split names each funder
    once, so the lines match it when there are as many as it has funders, each line is one
    of its (funder, share) pairs, and no pair is matched twice — a bit per pair, the bits
    of a milestone's lines adding up to all of them."""
    n = len(split_of)
    if not n:
        return np.zeros(0, dtype=bool)
    held = pos >= 0
    s_pos, s_funder, s_share = pos[held], funder[held], share.astype(np.int64)[held]
    s_count = np.bincount(s_pos, minlength=n)
    codes = [tables.split_funders(sp) for sp in splits]
    widths = np.array([len(f) for f in codes] + [0], dtype=np.int64)
    wide = int(widths.max())
    if wide > 60:  # a bit per pair needs ≤ 62 (no real split comes near): pair by pair
        have: dict[int, list] = {}
        for p, f, u in zip(s_pos.tolist(), s_funder.tolist(), s_share.tolist()):
            have.setdefault(p, []).append((f, u))
        want = [sorted(zip(f.tolist(), sp.units)) for f, sp in zip(codes, splits)] + [[]]
        return np.array([sorted(have.get(p, [])) == want[s]
                         for p, s in enumerate(split_of.tolist())], dtype=bool)
    slot = np.full((len(splits) + 1, len(tables.funder)), -1, dtype=np.int64)
    units = np.zeros((len(splits) + 1, max(wide, 1)), dtype=np.int64)
    for s, (f, sp) in enumerate(zip(codes, splits)):
        slot[s, f] = np.arange(len(f))
        units[s, :len(f)] = sp.units
    line_split = split_of[s_pos]  # -1: the last row of the tables, no pair
    j = slot[line_split, s_funder]
    fits = (j >= 0) & (units[line_split, np.maximum(j, 0)] == s_share)
    misfit = np.zeros(n, dtype=bool)
    misfit[s_pos[~fits]] = True
    bits = np.zeros(n, dtype=np.int64)
    np.add.at(bits, s_pos[fits], np.left_shift(1, j[fits]))
    e_count = widths[split_of]
    return (s_count == e_count) & ~misfit & (bits == np.left_shift(1, e_count) - 1)


def _allocate(c: Contract, m: Cols, order: np.ndarray, outcome, price, split_ix,
              splits: list[Split], totals: Ledger, price_from=None):
    """§3: take candidates in order, each seeing the limits and caps left by those before it.

    The one ordered loop of the engine; it walks only this period's candidates, with plain
    integers. Returns per paid row its funders' amounts, capped amounts and the cap that
    bit each line, and per unpaid row its reason code and sentence.
    """
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
    limit_count, outcome_count = totals.limit_count, totals.outcome_count
    participant_paid, funder_paid = totals.participant_paid, totals.funder_paid
    about = {o.id: (o, *limit_key[o.id], o.max_count) for o in c.outcomes}
    split_caps = [[fcap.get(f) for f in sp.funders] for sp in splits]  # None: no cap
    paid_get = funder_paid.get
    grand = totals.total
    for i, oid, p, full_price, s in zip(order.tolist(), outcome[order].tolist(),
                                        pids[order].tolist(), price[order].tolist(),
                                        split_ix[order].tolist()):
        o, lk, limit, most = about[oid]
        used = limit_count.get((p, lk), 0)
        if used >= limit:
            what = f"group {lk[6:]}" if lk.startswith("group:") else o.id
            fail_code[i] = "limit-reached"
            fail_detail[i] = (f"participant {p} has already been paid {what} {used} time"
                              f"{'s' if used != 1 else ''}, the limit per participant")
            continue
        if most is not None and outcome_count.get(oid, 0) >= most:
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
            room = max(ccap - grand, 0)
            if room < payable:
                payable, bit = room, bit or "contract"
                emptied_by = emptied_by or ("contract" if payable == 0 else "")
        sp = splits[s]
        full = _full_split(full_price, sp.units)
        if payable == full_price:  # each funder's part is its full part: only its cap cuts it
            # each funder's part, or what its cap has left (none when nothing is): the
            # least of the part and the room, never below zero
            got = [w if cap is None or (left := cap - paid_get(f, 0)) >= w else
                   left if left > 0 else 0
                   for f, w, cap in zip(sp.funders, full, split_caps[s])]
            if got == full:
                line_caps, held = [""] * len(got), [0] * len(got)
            else:
                line_caps = ["" if a == w else "funder" for a, w in zip(got, full)]
                held = [w - a for w, a in zip(full, got)]
        else:
            parts = money.bounded_split(payable, sp.units, full)
            got, line_caps, short = [], [], False
            for f, part, whole, cap in zip(sp.funders, parts, full, split_caps[s]):
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
            held = [w - a for w, a in zip(full, got)] if short else [0] * len(got)
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
        capped[i] = held
        caps[i] = line_caps
        limit_count[(p, lk)] = used + 1
        outcome_count[oid] = outcome_count.get(oid, 0) + 1
        participant_paid[p] = participant_paid.get(p, 0) + total
        grand += total
        for f, a in zip(sp.funders, got):
            funder_paid[f] = funder_paid.get(f, 0) + a
    totals.total = grand
    return rows, amounts, capped, caps, fail_code, fail_detail


def _full_split(price: int, units: tuple[int, ...]) -> list[int]:
    """money.split(price, units), worked out once per price and shares (they repeat across
    the claims of a history, and of a model's many histories)."""
    out = _FULL_SPLITS.get((price, units))
    if out is None:
        if len(_FULL_SPLITS) >= 4096:
            _FULL_SPLITS.clear()
        out = _FULL_SPLITS[(price, units)] = money.split(price, units)
    return out


_FULL_SPLITS: dict[tuple[int, tuple[int, ...]], list[int]] = {}


def _lines(m: Cols, period: Period, rev: Cols, pay_rows, pay_amounts, pay_capped, pay_caps,
           outcome, price_from, price, split_ix, splits, ever_paid, first, codes
           ) -> tuple[Cols, dict[str, np.ndarray]]:
    """Reversal lines (of the standing lines `rev`), then payment lines, in ledger.md's
    order, with line ids: typed columns as `ledger.empty_lines()` has them; and the lines'
    codes (`Earlier`'s milestone, participant, outcome, funder, and the position of the
    line each reversal names), from `codes`: (m's rows' codes, rev's lines' codes and
    positions, each split's funder codes)."""
    r = np.lexsort((np.arange(len(rev)), rev["milestone_id"].astype(str), rev["achieved_on"]))
    rows = np.asarray(pay_rows, dtype=np.int64)
    # the payment lines, row by row and funder by funder, then in ledger order
    paid_by = [splits[s] for s in split_ix[rows].tolist()]
    funders = list(chain.from_iterable(sp.funders for sp in paid_by))
    units = list(chain.from_iterable(sp.units for sp in paid_by))
    amounts = list(chain.from_iterable(map(pay_amounts.__getitem__, pay_rows)))
    held_back = list(chain.from_iterable(map(pay_capped.__getitem__, pay_rows)))
    bits = list(chain.from_iterable(map(pay_caps.__getitem__, pay_rows)))
    widths = np.array([len(sp.funders) for sp in paid_by], dtype=np.int64)
    at = np.repeat(rows, widths)
    pos = np.arange(len(at)) - np.repeat(np.cumsum(widths) - widths, widths)
    ach = m["achieved_on"].astype(np.int64)
    mids = m["milestone_id"]
    # m's rows are in milestone_id order (claim_after sorts them): a row's place among the
    # paid rows' distinct ids orders them as their ids do
    paid = np.unique(rows)
    named = mids[paid]
    place = np.concatenate([[0], np.cumsum(named[1:] != named[:-1])]).astype(np.int64)
    p = np.lexsort((pos, place[np.searchsorted(paid, at)], ach[at]))
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
    out["line_id"] = np.array([period.label + j for j in _line_numbers(nr + npay)],
                              dtype=object)
    row_codes, rev_codes, split_funders = codes
    payer = (np.concatenate([split_funders[s] for s in split_ix[rows].tolist()])[k] if npay
             else np.zeros(0, dtype=np.int64))
    coded = {name: np.concatenate([rev_codes[name][r], row_codes[name][at]]).astype(np.int64)
             for name in ("milestone", "participant", "outcome")}
    coded["funder"] = np.concatenate([rev_codes["funder"][r], payer]).astype(np.int64)
    coded["target"] = np.concatenate([rev_codes["target"][r],
                                      np.full(npay, -1, dtype=np.int64)]).astype(np.int64)
    return Cols({k: out[k] for k in LEDGER_COLUMNS}, nr + npay), coded


def _line_numbers(n: int) -> list[str]:
    """'-00001', '-00002', … '-n' (zero-padded to 5 digits, as line ids end)."""
    while len(_LINE_NUMBERS) < n:
        _LINE_NUMBERS.append(f"-{len(_LINE_NUMBERS) + 1:05d}")
    return _LINE_NUMBERS[:n]


_LINE_NUMBERS: list[str] = []


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


def _violations(c: Contract, every: Cols, claim: Claim | None, groups: np.ndarray | None = None,
                coded: Earlier | None = None) -> list[str]:
    """The invariants broken by `every` line so far (and by `claim`, its last claim).

    groups: the lines to check milestone by milestone and participant by participant — all
    of them when None; `claim_after` passes the lines of the milestones and participants
    its claim has a line for, which are all an earlier-checked history can newly break.
    Funder and contract totals are always checked over every line. coded: `every` coded
    (worked out here when not given): each total below is summed afresh from the lines'
    codes — standing lines included, worked out again for the lines checked."""
    out: list[str] = []
    terms = _Terms.of(c)
    e = coded if coded is not None and coded.lines is every else Earlier.of(every)
    t = e.tables
    sel = np.arange(len(every)) if groups is None else np.flatnonzero(groups)
    mids = e.milestone[sel]
    amount = every["amount"].astype(np.int64)[sel]
    if e.unique_ids:  # a reversal names a line by its id: the one line with it, if checked
        inside = np.full(len(every) + 1, -1, dtype=np.int64)
        inside[sel] = np.arange(len(sel))
        keep = _standing(e.payment[sel], mids, e.period[sel], inside[e.target[sel]],
                         len(t.period))
    else:  # a repeated id: the first line with it among those checked, as standing_mask has it
        lines = every.take(sel)
        keep = standing_mask(*(lines[k] for k in ("kind", "milestone_id", "period", "line_id",
                                                  "reverses")))
    smid = mids[keep]
    s_amount = amount[keep]
    name = t.milestone.values  # (called only to say what is broken)
    held = np.zeros(len(t.milestone), dtype=np.int64)
    np.add.at(held, smid, s_amount)
    price = np.zeros(len(t.milestone), dtype=np.int64)
    np.maximum.at(price, smid, every["price"].astype(np.int64)[sel][keep])
    for k in _as_seen(smid, np.flatnonzero(held > price))[:3]:
        out.append(f"standing-over-price: milestone {name()[k]} holds {_fmt(int(held[k]))}, more "
                   f"than its price {_fmt(int(price[k]))}")
    net = np.zeros(len(t.milestone), dtype=np.int64)
    np.add.at(net, mids, amount)
    for k in _as_seen(mids, np.flatnonzero(net < 0))[:3]:
        out.append(f"negative-standing: milestone {name()[k]} nets {_fmt(int(net[k]))}")
    n_t = len(t.period)
    pairs = np.unique(smid * n_t + e.period[sel][keep])
    per_m = np.bincount(pairs // n_t, minlength=len(t.milestone))
    for k in _as_seen(smid, np.flatnonzero(per_m > 1))[:3]:
        out.append(f"double-payment: milestone {name()[k]} holds payments from more than one claim")
    if (s_amount < 0).any():
        out.append("negative-payment: a payment line has a negative amount")
    by_f = np.zeros(len(t.funder), dtype=np.int64)
    np.add.at(by_f, e.funder, every["amount"].astype(np.int64))
    for f, k in zip(c.funders, t.funder.find([f.id for f in c.funders])):
        paid = int(by_f[k]) if k is not None and k < len(by_f) else 0
        if f.id in terms.funder_caps and paid > terms.funder_caps[f.id]:
            out.append(f"funder-cap-exceeded: {f.id} has been paid {_fmt(paid)}, over "
                       f"its cap {_fmt(money.pence(f.cap))}")
    total = int(every["amount"].sum())
    if terms.contract_cap is not None and total > terms.contract_cap:
        out.append(f"contract-cap-exceeded: {_fmt(total)} paid, over the contract cap "
                   f"{_fmt(money.pence(c.caps.contract))}")
    spid = e.participant[sel][keep]
    who = t.participant.values
    if c.caps and c.caps.participant is not None:
        by_p = np.zeros(len(t.participant), dtype=np.int64)
        np.add.at(by_p, spid, s_amount)
        there = np.bincount(spid, minlength=len(t.participant)) > 0
        most = terms.participant_cap
        over = sorted((who()[k], int(by_p[k])) for k in np.flatnonzero(there & (by_p > most)))
        for p, v in over[:3]:
            out.append(f"participant-cap-exceeded: participant {p} holds {_fmt(v)}")
    first = _first_lines(smid, len(t.milestone))
    if len(first):
        key, limit = _limit_keys(c, t.outcome.values())
        kc, ku = _factorize(key)  # limit keys as codes (outcomes of one group share one)
        pc, oc = spid[first], e.outcome[sel][keep][first]
        pair, at, n_paid = np.unique(pc * max(len(ku), 1) + kc[oc], return_index=True,
                                     return_counts=True)
        over = sorted((who()[pc[at[j]]], key[oc[at[j]]], int(n_paid[j]), int(limit[oc[at[j]]]))
                      for j in np.flatnonzero(n_paid > limit[oc[at]]))
        for p, k, times, most in over[:3]:
            out.append(f"limit-exceeded: participant {p} is paid {k} {times} times, over its "
                       f"limit {most}")
    if claim is not None:
        d = claim.decision_cols
        dmid = d["milestone_id"]
        repeated = len(dmid) - len(set(dmid.tolist()))
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


def _first_lines(codes: np.ndarray, size: int) -> np.ndarray:
    """The position of the first of `codes` (< size) with each value they have, in the
    order of those values."""
    first = np.full(size, len(codes), dtype=np.int64)
    np.minimum.at(first, codes, np.arange(len(codes)))
    return first[first < len(codes)]


def _as_seen(codes: np.ndarray, found: np.ndarray) -> np.ndarray:
    """`found` (some of `codes`' values) in the order `codes` first shows them."""
    if len(found) < 2:
        return found
    values, first = np.unique(codes, return_index=True)
    return found[np.argsort(first[np.searchsorted(values, found)], kind="stable")]


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
