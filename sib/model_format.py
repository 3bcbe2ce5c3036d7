"""The bid-modelling assumptions file, `sib-model/1`: its model, its loader and its checks.

After contract.py in the flow (it reads the contract the assumptions name), before
model.py. Like contract.py it validates yamlsafe's plain data with frozen pydantic models
(`extra="forbid"`: a misspelt key is an error) and turns every failure into a `Problem`
at `file:line` with a stable code, reusing contract.py's value types and its translation
of pydantic errors. It then checks what the models cannot: that the milestones form
chains, that they are milestone types the contract pays, and that every participant
profile and milestone gives the columns the contract reads, so that a simulated
participant can be paid at all.

It must not simulate, compute money or print.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from sib import money
from sib.contract import (MAX_DAYS, Column, Contract, LoadedContract, Money, Test, Text, _kind,
                          _loc_text, _money, _pydantic_problems, _typed, condition_columns,
                          load_contract, route_table, rules_for)
from sib.period import Period, period_containing
from sib.problems import Problem
from sib.yamlsafe import YamlDoc, read_yaml_file

FORMAT = "sib-model/1"
MAX_RUNS = 100_000
ENROLMENT = "enrolment"  # the event every chain starts from
# columns the simulation fills in itself: a profile or a milestone may not set them
RESERVED_PARTICIPANT = ("participant_id", "enrolled_on", "row")
RESERVED_MILESTONE = ("milestone_id", "participant_id", "milestone", "achieved_on", "status",
                      "verified_on", "evidence_ref", "row")
Z90 = 1.2815515655446004  # the standard normal's 90th percentile


# --- value types ----------------------------------------------------------------------------

def _number(v: Any, code: str, expected: str) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, (int, Decimal)):
        raise PydanticCustomError(code, "found {found}, expected {expected}",
                                  {"found": _kind(v), "expected": expected})
    return Decimal(v)


def _probability(v: Any) -> Decimal:
    d = _number(v, "bad-probability", "a probability from 0 to 1 (e.g. 0.30 for 30%)")
    if not 0 <= d <= 1:
        raise PydanticCustomError("bad-probability", "{v} is not from 0 to 1; write a "
                                  "probability as a fraction (0.30 for 30%)", {"v": str(v)})
    return d


def _weight(v: Any) -> Decimal:
    d = _number(v, "bad-weight", "a weight above 0 (e.g. 0.14)")
    if d <= 0:
        raise PydanticCustomError("bad-weight", "weight {v} is not above 0; remove the entry "
                                  "instead of giving it no weight", {"v": str(v)})
    return d


def _head_count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise PydanticCustomError("bad-count", "found {found}, expected a whole number of "
                                  "participants, 0 or more (e.g. 85)", {"found": _kind(v)})
    if v > 1_000_000:
        raise PydanticCustomError("bad-count", "{v} participants in one period is more than "
                                  "any contract enrols; check for a typo", {"v": v})
    return v


def _seed(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
        raise PydanticCustomError("wrong-type", "found {found}, expected a whole number, "
                                  "0 or more (e.g. 7)", {"found": _kind(v)})
    return v


def _runs(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise PydanticCustomError("wrong-type", "found {found}, expected a whole number of "
                                  "runs, 1 or more (e.g. 1000)", {"found": _kind(v)})
    if v > MAX_RUNS:
        raise PydanticCustomError("bad-value", "{v} runs is more than the {m:,} a model "
                                  "needs; 1000 gives P10 and P90 to within about 1%",
                                  {"v": v, "m": MAX_RUNS})
    return v


@dataclass(frozen=True)
class Delay:
    """Days between two events: fixed (median == p90) or log-normal through the median and
    the 90th percentile."""

    median: Decimal
    p90: Decimal

    @property
    def fixed(self) -> bool:
        return self.median == self.p90

    def describe(self) -> str:
        if self.fixed:
            return f"{self.median} days"
        return f"median {self.median} days, P90 {self.p90} days"


_DELAY_HINT = "a whole number of days (e.g. 91) or {{median: 30, p90: 90}}"


def _delay(v: Any) -> Delay:
    if isinstance(v, int) and not isinstance(v, bool):
        if not 0 <= v <= MAX_DAYS:
            raise PydanticCustomError("bad-delay", "{v} days is not from 0 to {m}; expected "
                                      + _DELAY_HINT, {"v": v, "m": MAX_DAYS})
        return Delay(Decimal(v), Decimal(v))
    if not isinstance(v, dict):
        raise PydanticCustomError("bad-delay", "found {found}, expected " + _DELAY_HINT,
                                  {"found": _kind(v)})
    unknown = sorted(set(v) - {"median", "p90"})
    missing = [k for k in ("median", "p90") if k not in v]
    if unknown or missing:
        raise PydanticCustomError(
            "bad-delay", "a delay mapping has exactly the keys median and p90 ({what}); "
            "expected " + _DELAY_HINT,
            {"what": "; ".join(filter(None, [
                ("unknown: " + ", ".join(unknown)) if unknown else "",
                ("missing: " + ", ".join(missing)) if missing else ""]))})
    med, p90 = v["median"], v["p90"]
    for name, x in (("median", med), ("p90", p90)):
        if isinstance(x, bool) or not isinstance(x, (int, Decimal)) or not 0 < x <= MAX_DAYS:
            raise PydanticCustomError("bad-delay", "{name} is {found}, expected a number of "
                                      "days above 0 and at most {m}",
                                      {"name": name, "found": _kind(x), "m": MAX_DAYS})
    if p90 < med:
        raise PydanticCustomError("bad-delay", "p90 {b} is below the median {a}; the 90th "
                                  "percentile is the longer delay (e.g. {{median: 30, p90: 90}})",
                                  {"a": med, "b": p90})
    return Delay(Decimal(med), Decimal(p90))


def _scalar(v: Any) -> str | Decimal:
    if isinstance(v, bool) or v is None or isinstance(v, (dict, list)):
        raise PydanticCustomError("wrong-type", "found {found}, expected a value (text or a "
                                  "number)", {"found": _kind(v)})
    if isinstance(v, (int, Decimal)):
        return Decimal(v)
    return str(v).strip()


def _figures(item, schema: dict):
    """One figure for every period, or a list with one figure per period."""
    def check(v: Any):
        if isinstance(v, list):
            if not v:
                raise PydanticCustomError("wrong-type", "an empty list gives no figures; give "
                                          "one figure per period, or a single figure", {})
            return tuple(item(x) for x in v)
        return item(v)
    return check, {"anyOf": [schema, {"type": "array", "items": schema, "minItems": 1}]}


_MONEY_SCHEMA = {"anyOf": [{"type": "number", "minimum": 0},
                           {"type": "string", "pattern": r"^\d+(\.\d{1,2})?$"}]}
_DELAY_SCHEMA = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_DAYS},
                           {"type": "object", "additionalProperties": False,
                            "required": ["median", "p90"],
                            "properties": {"median": {"type": "number", "exclusiveMinimum": 0},
                                           "p90": {"type": "number", "exclusiveMinimum": 0}}}]}

Probability = _typed(Decimal, _probability, {"type": "number", "minimum": 0, "maximum": 1})
Weight = _typed(Decimal, _weight, {"type": "number", "exclusiveMinimum": 0})
DelayDays = _typed(Delay, _delay, _DELAY_SCHEMA)
Seed = _typed(int, _seed, {"type": "integer", "minimum": 0})
Runs = _typed(int, _runs, {"type": "integer", "minimum": 1, "maximum": MAX_RUNS})
Scalar = _typed(Any, _scalar, {"type": ["string", "number"]})
_enrol_check, _enrol_schema = _figures(_head_count, {"type": "integer", "minimum": 0})
HeadCounts = _typed(Any, _enrol_check, _enrol_schema)


_money_check, _money_schema = _figures(_money, _MONEY_SCHEMA)
MoneyFigures = _typed(Any, _money_check, _money_schema)


# --- the models -----------------------------------------------------------------------------

class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Enrolments(_Record):
    """How many participants enrol."""

    per_period: HeadCounts = Field(
        description="participants enrolled per claim period: one figure for every period of "
                    "the enrolment term, or a list with one figure per period")


class Step(_Record):
    """One milestone event of a chain."""

    milestone: Text = Field(description="the milestone type, as the contract's outcomes name it")
    after: Text = Field(description="'enrolment' or an earlier milestone of this list")
    probability: Probability = Field(description="of participants who reach the `after` event")
    days: DelayDays = Field(description="delay after the `after` event")
    values: dict[Column, dict[Text, Weight]] = Field(
        None, description="milestone column → value → weight (e.g. hours_per_week)")


class Costs(_Record):
    """The provider/investor view (optional)."""

    investment: Money = Field(description="drawn from the investor at service start")
    delivery_per_period: MoneyFigures = Field(
        description="cost of delivery per claim period: one figure for every period of the "
                    "enrolment term, or a list with one figure per claim period")


class Assumptions(_Record):
    """A `sib-model/1` file."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="sib-model/1")

    format: Literal["sib-model/1"]
    contract: Text = Field(description="the contract file, relative to the workspace")
    runs: Runs = Field(description="simulated histories")
    seed: Seed = Field(description="the same seed gives the same answer")
    enrolments: Enrolments
    participants: list[dict[Column, Scalar]] = Field(
        min_length=1, description="participant profiles: a weight and a value per column")
    milestones: list[Step] = Field(min_length=1)
    verification_days: DelayDays = Field(
        Delay(Decimal(0), Decimal(0)), description="achieved → verified")
    costs: Costs = None


# --- loading --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Profile:
    """A participant profile: its weight and its column values (text, as in evidence)."""

    weight: Decimal
    values: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class LoadedAssumptions:
    """Valid assumptions, their contract, and the periods they imply.

    periods: the claim periods, from the one holding service_start to the last that starts
      on or before claims_end (without claims_end: a year of periods after outcomes_end).
    enrol_periods: the periods of the enrolment term (service_start..enrolment_end).
    enrolments: participants per enrolment period.
    delivery: delivery cost in pence per claim period (zeros without costs).
    profiles: participant profiles, in file order.
    """

    assumptions: Assumptions
    path: Path
    shown: str
    doc: YamlDoc
    contract: LoadedContract
    periods: tuple[Period, ...]
    enrol_periods: tuple[Period, ...]
    enrolments: tuple[int, ...]
    delivery: tuple[int, ...]
    profiles: tuple[Profile, ...]

    def line(self, *loc: Any) -> int | None:
        return self.doc.line_of(tuple(loc))


def claim_periods(c: Contract) -> tuple[Period, ...]:
    """Claim periods from the one holding service_start: to the last starting on or before
    claims_end or, without claims_end, through the period holding outcomes_end + 365 days."""
    t = c.term
    p = period_containing(t.service_start, c.claims)
    if t.claims_end is not None:
        last = period_containing(t.claims_end, c.claims)
    else:
        from datetime import timedelta
        last = period_containing(t.outcomes_end + timedelta(days=365), c.claims)
    out = []
    while p <= last:
        out.append(p)
        p = p.next()
    return tuple(out)


def enrolment_periods(c: Contract) -> tuple[Period, ...]:
    t = c.term
    p = period_containing(t.service_start, c.claims)
    last = period_containing(t.enrolment_end, c.claims)
    out = []
    while p <= last:
        out.append(p)
        p = p.next()
    return tuple(out)


def _validation_problems(err: ValidationError, doc: YamlDoc) -> list[Problem]:
    """contract.py's translation of pydantic errors (same codes, same lines) for this format."""
    return _pydantic_problems(err, doc, root=Assumptions, first_line=(
        f"the first line of an assumptions file is 'format: {FORMAT}'"))


def load_assumptions(path: Path, workspace: Path, shown: str | None = None
                     ) -> tuple[LoadedAssumptions | None, list[Problem]]:
    """Read, validate and check an assumptions file and its contract; (assumptions, []) or
    (None, every problem found, the contract's among them)."""
    shown = shown or str(path)
    doc = read_yaml_file(path, shown)
    problems = list(doc.problems)
    if doc.data is None and not problems:
        problems.append(Problem(shown, None, None, "not-mapping",
                                f"the file is empty; an assumptions file starts with "
                                f"'format: {FORMAT}'"))
    if doc.data is not None and not isinstance(doc.data, dict):
        problems.append(Problem(shown, doc.line_of(()), None, "not-mapping",
                                f"the file holds {_kind(doc.data)}, expected a mapping of "
                                f"keys starting with 'format: {FORMAT}'"))
        return None, problems
    if doc.data is None:
        return None, problems
    try:
        a = Assumptions.model_validate(doc.data)
    except ValidationError as err:
        return None, problems + _validation_problems(err, doc)
    add = _adder(doc, shown, problems)

    cpath = workspace / a.contract
    if not cpath.is_file():
        add(("contract",), "missing-contract",
            f"contract file '{a.contract}' is not found in the workspace ({workspace}); the "
            "path is relative to the workspace, e.g. contracts/west-london-ips.yaml")
        return None, problems
    lc, cproblems = load_contract(cpath, a.contract)
    if lc is None:
        add(("contract",), "contract-problems",
            f"the contract {a.contract} has {len(cproblems)} problem(s), listed with it; fix "
            "them (`sib check` lists them too), then model again")
        return None, problems + cproblems
    c = lc.contract
    periods = claim_periods(c)
    enrol = enrolment_periods(c)
    enrolments = _per_period(a.enrolments.per_period, enrol, ("enrolments", "per_period"),
                             "enrolment", add)
    delivery: tuple[int, ...] = tuple(0 for _ in periods)
    if a.costs is not None:
        d = a.costs.delivery_per_period
        if isinstance(d, tuple):
            got = _per_period(d, periods, ("costs", "delivery_per_period"), "claim", add)
            delivery = tuple(money.pence(x) for x in got)
        else:
            delivery = tuple(money.pence(d) if p in enrol else 0 for p in periods)
    profiles = _check_profiles(a, lc, add)
    _check_steps(a, lc, doc, add)
    if problems:
        return None, problems
    return LoadedAssumptions(a, path, shown, doc, lc, periods, enrol, enrolments, delivery,
                             profiles), []


def _adder(doc: YamlDoc, shown: str, problems: list[Problem]):
    def add(loc: tuple, code: str, msg: str) -> None:
        problems.append(Problem(shown, doc.line_of(loc), None, code, msg))
    return add


def _span(periods: tuple[Period, ...]) -> str:
    return f"{periods[0]} … {periods[-1]}" if len(periods) > 1 else str(periods[0])


def _per_period(v, periods: tuple[Period, ...], loc: tuple, what: str, add) -> tuple:
    if not isinstance(v, tuple):
        return tuple(v for _ in periods)
    if len(v) != len(periods):
        add(loc, "wrong-length",
            f"{_loc_text(loc)} has {len(v)} figures, expected {len(periods)}: one for each "
            f"{what} period of the contract, {_span(periods)} (or write one figure for all)")
    return tuple(v)  # with a wrong length, the problem stops the load


def test_passes(test: Test, value: str) -> bool:
    """Whether a profile's value passes a contract condition test, as the engine judges it:
    text trimmed and case-insensitive, numbers as numbers; blank fails."""
    text = value.strip()
    if not text:
        return False
    try:
        number = Decimal(text)
    except ArithmeticError:
        number = None
    if test.is_range:
        return number is not None and (test.low is None or number >= test.low) and (
            test.below is None or number < test.below)
    for x in test.values:
        if isinstance(x, Decimal):
            if number is not None and number == x:
                return True
        elif str(x).strip().lower() == text.lower():
            return True
    return False


def _text_of(v: Any) -> str:
    return f"{v.normalize():f}" if isinstance(v, Decimal) else str(v)


def _check_profiles(a: Assumptions, lc: LoadedContract, add) -> tuple[Profile, ...]:
    """Each profile has a weight, the columns the contract reads of a participant, passes
    eligibility and has a funder for each route of the payer rule that applies to it."""
    c = lc.contract
    part_cols, _ = condition_columns(c)
    routes = route_table(c)
    out = []
    for i, entry in enumerate(a.participants):
        loc = ("participants", i)
        w = entry.get("weight")
        weight = Decimal(0)
        if w is None:
            add(loc, "missing-key", f"participants[{i}] has no weight; add one, e.g. "
                "{weight: 0.14, borough: Brent}")
        elif not isinstance(w, Decimal) or w <= 0:
            add(loc + ("weight",), "bad-weight",
                f"participants[{i}].weight is '{w}', expected a number above 0 (e.g. 0.14)")
        else:
            weight = w
        values = {k: _text_of(v) for k, v in entry.items() if k != "weight"}
        for col in sorted(set(values) & set(RESERVED_PARTICIPANT)):
            add(loc + (col,), "reserved-column",
                f"participants[{i}] sets '{col}', which the simulation fills in itself; "
                "remove it (a profile gives the columns the contract reads, e.g. borough)")
        for col in sorted(set(part_cols) - set(values)):
            add(loc, "missing-column",
                f"participants[{i}] has no '{col}', which the contract reads "
                f"({lc.where(*part_cols[col])}); add '{col}: ...' to the profile")
        for col, test in (c.eligibility or {}).items():
            if col in values and not test_passes(test, values[col]):
                add(loc + (col,), "participant-ineligible",
                    f"participants[{i}].{col} '{values[col]}' is not {test.describe()}, as the "
                    f"contract's eligibility requires ({lc.where('eligibility', col)}), so such "
                    "a participant is never paid; model only eligible referrals")
        for o in c.outcomes:
            rloc, rules = rules_for(c, o)
            rule_ix = next((r for r, rule in enumerate(rules) if all(
                col in values and test_passes(t, values[col])
                for col, t in (rule.when or {}).items())), None)
            if rule_ix is None:
                add(loc, "no-funder-for-route",
                    f"participants[{i}]: no payer rule of outcome {o.id} holds for this "
                    f"profile ({lc.where(*rloc)}), so it is never paid")
                break
            bad = [e.route for e in rules[rule_ix].split if e.route and e.route in values
                   and values[e.route].strip().lower() not in routes.get(e.route, {})]
            if bad:
                add(loc + (bad[0],), "no-funder-for-route",
                    f"participants[{i}].{bad[0]} '{values[bad[0]]}' is served by no funder "
                    f"(the route in {lc.where(*rloc, rule_ix)}), so {o.id} is never paid for "
                    "such a participant; use a value a funder serves")
                break
        out.append(Profile(weight, tuple(sorted(values.items()))))
    return tuple(out)


def _check_steps(a: Assumptions, lc: LoadedContract, doc: YamlDoc, add) -> None:
    """Chains: unique names, `after` an earlier step (so no cycles), milestone types the
    contract pays, and values for every milestone column the outcomes' conditions read."""
    c = lc.contract
    types_ = {}
    for k, o in enumerate(c.outcomes):
        types_.setdefault(o.milestone.strip().lower(), []).append(k)
    seen: dict[str, int] = {}
    for i, s in enumerate(a.milestones):
        loc = ("milestones", i)
        name = s.milestone.strip().lower()
        for col in sorted(set(s.values or {}) & set(RESERVED_MILESTONE)):
            add(loc + ("values", col), "reserved-column",
                f"milestone '{s.milestone}' gives values for '{col}', which the simulation "
                "fills in itself; remove it (values are for columns such as hours_per_week)")
        if name in seen:
            add(loc + ("milestone",), "duplicate-milestone",
                f"milestone '{s.milestone}' is listed twice (first at line "
                f"{doc.line_of(('milestones', seen[name]))}); each milestone type is "
                "one event of the chain: keep one")
        if s.after.strip().lower() != ENROLMENT and s.after.strip().lower() not in seen:
            later = [x.milestone for x in a.milestones[i + 1:]
                     if x.milestone.strip().lower() == s.after.strip().lower()]
            why = ("it is listed later: list each milestone after the one it follows"
                   if later else "expected 'enrolment' or one of: "
                   + (", ".join(seen) or "(no earlier milestone)"))
            add(loc + ("after",), "unknown-after",
                f"milestone '{s.milestone}' comes after '{s.after}', which is not an earlier "
                f"milestone of this list; {why}")
        if name not in types_:
            guess = difflib.get_close_matches(name, list(types_), n=1)
            hint = f"did you mean '{guess[0]}'? " if guess else ""
            add(loc + ("milestone",), "unknown-milestone",
                f"milestone '{s.milestone}' is paid by no outcome of {lc.shown}; {hint}the "
                f"contract pays: {', '.join(sorted(types_))}")
        else:
            for k in types_[name]:
                o = c.outcomes[k]
                for col in (o.when or {}):
                    if col not in (s.values or {}):
                        add(loc, "missing-column",
                            f"milestone '{s.milestone}' gives no values for '{col}', which "
                            f"outcome {o.id} tests ({lc.where('outcomes', k, 'when', col)}); add "
                            f"e.g. values: {{{col}: {{20: 0.7, 12: 0.3}}}}")
                        break
        seen.setdefault(name, i)
