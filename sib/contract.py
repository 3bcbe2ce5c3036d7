"""The contract file, `sib-contract/1`: its model, its loader and every check `sib check` makes.

Sits after yamlsafe in the flow: yamlsafe gives plain data with line numbers; this module
validates it with frozen pydantic models (`extra="forbid"`, so a misspelt key is an
error), then checks what the models cannot (cross references, sums, overlaps, cycles) and
returns every problem at its line. It also offers the small derived views the engine needs
(routes, limits, price tables). It must not read evidence, compute money or print.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, PlainValidator, ValidationError,
                      WithJsonSchema, model_validator)
from pydantic_core import PydanticCustomError

from sib import money
from sib.period import KINDS
from sib.problems import Problem
from sib.yamlsafe import YamlDoc, quoted, read_yaml_file

FORMAT = "sib-contract/1"
SLUG = r"^[a-z0-9][a-z0-9-]{0,63}$"
_SLUG = re.compile(SLUG)
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INDIGO_ORG = re.compile(r"^INDIGO-ORG-\d{4,}$")


# --- value types: each validates itself and fails with a stable code --------------------

def _kind(v: Any) -> str:
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "nothing (a blank value)"
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, (int, Decimal)):
        return f"the number {quoted(v)[1:-1]}"
    return f"the text {quoted(v)}"


def _slug(v: Any) -> str:
    # fullmatch: with match, '$' also matches before a final line break ('tiny\n')
    if not isinstance(v, str) or not _SLUG.fullmatch(v):
        raise PydanticCustomError(
            "bad-slug",
            "found {found}, expected a slug: lower-case letters, digits and '-', starting "
            "with a letter or digit, at most 64 characters (e.g. west-london-ips)",
            {"found": _kind(v)})
    return v


def _text(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int, Decimal)):
        raise PydanticCustomError("wrong-type", "found {found}, expected text",
                                  {"found": _kind(v)})
    s = str(v).strip()
    if not s:
        raise PydanticCustomError("wrong-type", "found blank text, expected some text", {})
    return s


def _column(v: Any) -> str:
    return _text(v).lower()


def parse_iso_date(v: Any) -> date:
    """A `YYYY-MM-DD` string as a date; PydanticCustomError('bad-date') otherwise."""
    if not isinstance(v, str) or not _ISO.match(v.strip()):
        raise PydanticCustomError(
            "bad-date", "found {found}, expected a date written YYYY-MM-DD (e.g. 2019-01-02)",
            {"found": _kind(v)})
    try:
        return date.fromisoformat(v.strip())
    except ValueError:
        raise PydanticCustomError(
            "bad-date", "{v} is not a real date (check the day and month), expected "
            "YYYY-MM-DD (e.g. 2019-01-02)", {"v": quoted(v)[1:-1]}) from None


def _money(v: Any) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, (int, Decimal, str)):
        raise PydanticCustomError("bad-money", "found {found}, expected an amount like 2600.00",
                                  {"found": _kind(v)})
    try:
        d = money.to_decimal(v)
    except money.MoneyError:
        raise PydanticCustomError("bad-money", "found {found}, expected an amount like 2600.00",
                                  {"found": _kind(v)}) from None
    if money.decimal_places(d) > 2:
        raise PydanticCustomError("bad-money", "{v} has more than two decimal places; money "
                                  "is in pounds and pence, e.g. 2600.00", {"v": quoted(v)[1:-1]})
    if d < 0:
        raise PydanticCustomError("bad-money", "{v} is negative; amounts are 0 or more",
                                  {"v": quoted(v)[1:-1]})
    if d >= money.MAX_AMOUNT:  # also keeps quantize() below within the context's precision
        raise PydanticCustomError("bad-money", "{v} is too large; amounts are below "
                                  "£1,000,000,000,000: check for a typo", {"v": quoted(v)[1:-1]})
    return d.quantize(Decimal("0.01"))


def _share(v: Any) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, (int, Decimal, str)):
        raise PydanticCustomError("bad-share", "found {found}, expected a percentage like 45.26",
                                  {"found": _kind(v)})
    try:
        d = money.to_decimal(v)
    except money.MoneyError:
        raise PydanticCustomError("bad-share", "found {found}, expected a percentage like 45.26",
                                  {"found": _kind(v)}) from None
    if money.decimal_places(d) > 4:
        raise PydanticCustomError("bad-share", "{v} has more than four decimal places; write "
                                  "shares like 45.2613", {"v": quoted(v)[1:-1]})
    if d <= 0:
        raise PydanticCustomError("bad-share", "share {v} is not above zero; remove the entry "
                                  "instead of giving it a zero share", {"v": quoted(v)[1:-1]})
    if d > 100:  # also keeps the split's sum within the Decimal context
        raise PydanticCustomError("bad-share", "share {v} is above 100; a share is a "
                                  "percentage, e.g. 45.26", {"v": quoted(v)[1:-1]})
    return d


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise PydanticCustomError("wrong-type", "found {found}, expected a whole number of 1 "
                                  "or more", {"found": _kind(v)})
    return v


MAX_DAYS = 36_600  # a century: longer than any contract, and safe for day arithmetic


def _days(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise PydanticCustomError("wrong-type", "found {found}, expected a whole number of "
                                  "days, 0 or more (e.g. 274)", {"found": _kind(v)})
    if v > MAX_DAYS:
        raise PydanticCustomError("bad-value", "{v} days is longer than any contract; expected "
                                  "at most {m} (e.g. 274 for nine months)",
                                  {"v": quoted(v)[1:-1], "m": MAX_DAYS})
    return v


def _currency(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[A-Z]{3}", v):
        raise PydanticCustomError("wrong-type", "found {found}, expected an ISO 4217 currency "
                                  "code such as GBP", {"found": _kind(v)})
    return v


def _indigo_org(v: Any) -> str:
    if not isinstance(v, str) or not _INDIGO_ORG.match(v):
        raise PydanticCustomError("wrong-type", "found {found}, expected an INDIGO organisation "
                                  "id like INDIGO-ORG-0123", {"found": _kind(v)})
    return v


@dataclass(frozen=True)
class Test:
    """One condition test on a column.

    low/below: the half-open numeric range low ≤ value < below (either may be None);
    values: the accepted values (text, trimmed; numbers compared as numbers) when not a range.
    """

    low: Decimal | None = None
    below: Decimal | None = None
    values: tuple | None = None

    @property
    def is_range(self) -> bool:
        return self.values is None

    def describe(self) -> str:
        if self.is_range:
            parts = []
            if self.low is not None:
                parts.append(f"at least {self.low}")
            if self.below is not None:
                parts.append(f"below {self.below}")
            return " and ".join(parts)
        if len(self.values) == 1:
            return f"equal to {self.values[0]}"
        return "one of " + ", ".join(str(x) for x in self.values)


def _scalar_value(x: Any) -> str | Decimal:
    if isinstance(x, bool) or x is None or isinstance(x, (dict, list)):
        raise PydanticCustomError("bad-condition", "found {found} in a condition; write text or "
                                  "numbers (put true/false in quotes)", {"found": _kind(x)})
    if isinstance(x, (int, Decimal)):
        return Decimal(x)
    return str(x).strip()


def _test(v: Any) -> Test:
    if isinstance(v, dict):
        unknown = sorted(set(v) - {"min", "below"})
        if unknown or not v:
            raise PydanticCustomError(
                "bad-condition", "a range test takes 'min' and/or 'below' (e.g. {{min: 8, below: "
                "16}}), found {found}",
                {"found": ", ".join(quoted(u)[1:-1] for u in unknown) or "nothing"})
        bounds = {}
        for k in ("min", "below"):
            if k in v:
                x = v[k]
                if isinstance(x, bool) or not isinstance(x, (int, Decimal)):
                    raise PydanticCustomError("bad-condition", "'{k}' must be a number, found "
                                              "{found}", {"k": k, "found": _kind(x)})
                bounds[k] = Decimal(x)
        if "min" in bounds and "below" in bounds and bounds["min"] >= bounds["below"]:
            raise PydanticCustomError("bad-condition", "min {a} is not below 'below' {b}, so "
                                      "nothing can match",
                                      {"a": quoted(bounds["min"])[1:-1],
                                       "b": quoted(bounds["below"])[1:-1]})
        return Test(low=bounds.get("min"), below=bounds.get("below"))
    if isinstance(v, list):
        if not v:
            raise PydanticCustomError("bad-condition", "an empty list matches nothing; list the "
                                      "accepted values", {})
        return Test(values=tuple(_scalar_value(x) for x in v))
    return Test(values=(_scalar_value(v),))


def _typed(py: Any, fn: Any, schema: dict) -> Any:
    return Annotated[py, PlainValidator(fn), WithJsonSchema(schema)]


_SLUG_SCHEMA = {"type": "string", "pattern": SLUG}
_DATE_SCHEMA = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$", "format": "date"}
# No "multipleOf": 0.01: validators test it in binary floating point, so they reject good
# amounts such as 0.07 (0.07 / 0.01 = 7.000000000000001); `sib check` enforces the pence.
_MONEY_SCHEMA = {"anyOf": [{"type": "number", "minimum": 0},
                           {"type": "string", "pattern": r"^\d+(\.\d{1,2})?$"}]}
_SHARE_SCHEMA = {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 100},
                           {"type": "string", "pattern": r"^\d+(\.\d{1,4})?$"}]}
_SCALAR_SCHEMA = {"type": ["string", "number"]}
_TEST_SCHEMA = {"anyOf": [
    {"type": "object", "additionalProperties": False, "minProperties": 1,
     "properties": {"min": {"type": "number"}, "below": {"type": "number"}}},
    {"type": "array", "items": _SCALAR_SCHEMA, "minItems": 1},
    _SCALAR_SCHEMA]}

Slug = _typed(str, _slug, _SLUG_SCHEMA)
Text = _typed(str, _text, {"type": "string", "minLength": 1})
Column = _typed(str, _column, {"type": "string", "minLength": 1})
IsoDate = _typed(date, parse_iso_date, _DATE_SCHEMA)
Money = _typed(Decimal, _money, _MONEY_SCHEMA)
Share = _typed(Decimal, _share, _SHARE_SCHEMA)
Count = _typed(int, _count, {"type": "integer", "minimum": 1})
Days = _typed(int, _days, {"type": "integer", "minimum": 0, "maximum": MAX_DAYS})
Currency = _typed(str, _currency, {"type": "string", "pattern": "^[A-Z]{3}$"})
IndigoOrg = _typed(str, _indigo_org, {"type": "string", "pattern": r"^INDIGO-ORG-\d{4,}$"})
CondTest = _typed(Test, _test, _TEST_SCHEMA)
Condition = dict[Column, CondTest]
ServeValues = _typed(tuple, lambda v: tuple(_text(x) for x in (v if isinstance(v, list) else [v])),
                     {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                                     "minItems": 1}]})


# --- the models ----------------------------------------------------------------------------

class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Term(_Record):
    """The contract's dates."""

    service_start: IsoDate = Field(description="first day a participant may be enrolled or an outcome achieved")
    enrolment_end: IsoDate = Field(description="last day a participant may be enrolled")
    outcomes_end: IsoDate = Field(description="last day an outcome may be achieved")
    claims_end: IsoDate = Field(None, description="no claim period may start after this day")


class Caps(_Record):
    """Money caps across funders."""

    contract: Money = Field(None, description="the most all funders together will pay")
    participant: Money = Field(None, description="the most paid for one participant, all outcomes together")


class Funder(_Record):
    """A public body that pays a share of outcomes."""

    id: Slug
    name: Text
    kind: Literal["central", "local-authority", "health", "dwp", "other"]
    cap: Money = Field(None, description="the most this funder will ever pay under the contract")
    indigo_id: IndigoOrg = Field(None, description="INDIGO organisation id, for sib export indigo")
    serves: dict[Column, ServeValues] = Field(
        None, description="participant column → value(s): `route: <column>` shares go to this funder")


class SplitEntry(_Record):
    """One share of a split: a fixed funder, or a route by a participant column."""

    funder: Slug = Field(None, description="a funder id")
    route: Column = Field(None, description="a participant column; the funder that serves its value pays")
    share: Share = Field(description="percentage, at most four decimals")

    @model_validator(mode="after")
    def _one_target(self) -> "SplitEntry":
        if (self.funder is None) == (self.route is None):
            raise PydanticCustomError(
                "bad-split-entry", "a split entry names either a funder or a route, not {what} "
                "(e.g. {{funder: dcms, share: 45.26}} or {{route: borough, share: 26.47}})",
                {"what": "both" if self.funder else "neither"})
        return self


class PayerRule(_Record):
    """Who pays: the first rule whose `when` holds for the participant is used."""

    when: Condition = Field(None, description="conditions on participant columns")
    split: list[SplitEntry] = Field(min_length=1)


class Group(_Record):
    """Outcomes sharing one per-participant limit."""

    limit_per_participant: Count


class Requirement(_Record):
    """A prerequisite outcome, optionally within N days before."""

    outcome: Slug
    within_days: Days = None


class Outcome(_Record):
    """A payable outcome and its price versions."""

    id: Slug
    name: Text
    milestone: Text = Field(description="the milestone type in the evidence file")
    when: Condition = Field(None, description="conditions on milestone columns")
    evidence: list[Text] = Field(None, min_length=1, description="accepted evidence types")
    limit_per_participant: Count = Field(None, description="default 1")
    group: Slug = None
    within_days_of_enrolment: Days = None
    requires: list[Requirement] = ()
    max_count: Count = None
    prices: dict[IsoDate, Money] = Field(min_length=1, description="effective date → price")
    payers: list[PayerRule] = Field(None, min_length=1)


class Contract(_Record):
    """A `sib-contract/1` file."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="sib-contract/1")

    format: Literal["sib-contract/1"]
    id: Slug
    name: Text
    fund: Text = None
    reference: Text = None
    provider: Text = None
    provider_indigo_id: IndigoOrg = None
    currency: Currency
    claims: Literal["quarter", "fiscal-quarter", "month"]
    term: Term
    caps: Caps = None
    price_basis: Literal["achieved", "enrolled"] = "achieved"
    eligibility: Condition = None
    funders: list[Funder] = Field(min_length=1)
    payers: list[PayerRule] = Field(min_length=1)
    groups: dict[Slug, Group] = None
    outcomes: list[Outcome] = Field(min_length=1)


assert KINDS == ("quarter", "fiscal-quarter", "month")


# --- loading ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadedContract:
    """A valid contract with where each part was written (for messages and `sib explain`)."""

    contract: Contract
    path: Path
    shown: str
    doc: YamlDoc

    def line(self, *loc: Any) -> int | None:
        return self.doc.line_of(tuple(loc))

    def where(self, *loc: Any) -> str:
        line = self.line(*loc)
        return f"{self.shown}:{line}" if line else self.shown


def _loc_text(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # a key from the file: shortened, control characters escaped (one line)
            out += ("." if out else "") + quoted(part)[1:-1]
    return out


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _model_at(loc: tuple, root: Any = None) -> Any:
    """The model class (or container type) found at `loc` inside `root` (the Contract)."""
    tp: Any = Contract if root is None else root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            f = tp.model_fields.get(part) if isinstance(part, str) else None
            if f is None:
                return None
            tp = f.annotation
            continue
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is list and isinstance(part, int):
            tp = args[0]
        elif origin is dict and isinstance(part, str):
            tp = args[1]
        elif origin in (typing.Union, types.UnionType):
            tp = next((a for a in args if a is not type(None)), None)
        else:
            return None
    return _unwrap(tp)


_WRONG_TYPE = {
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
    "list_type": "a list (lines starting with '- ')",
    "tuple_type": "a list",
}


def _pydantic_problems(err: ValidationError, doc: YamlDoc, root: Any = None,
                       first_line: str = f"the first line of a contract is 'format: {FORMAT}'"
                       ) -> list[Problem]:
    """Pydantic's errors as problems at their lines, for a file of model `root` (Contract)."""
    out: list[Problem] = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        is_key = bool(loc) and loc[-1] == "[key]"
        if is_key:
            loc = loc[:-1]
        kind = e["type"]
        where = _loc_text(loc)
        line = doc.line_of(loc)
        inp = e.get("input")
        if kind == "missing":
            code = "missing-key"
            msg = f"{where} is missing; add it (it is required here)"
        elif kind == "extra_forbidden":
            code = "unknown-key"
            parent = _model_at(loc[:-1], root)
            known = sorted(parent.model_fields) if isinstance(parent, type) and issubclass(
                parent, BaseModel) else []
            guess = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean '{guess[0]}'? " if guess else ""
            msg = (f"unknown key {quoted(loc[-1])} in {_loc_text(loc[:-1]) or 'the top level'}; "
                   f"{hint}expected one of: {', '.join(known)}")
        elif kind in _WRONG_TYPE:
            code = "wrong-type"
            msg = f"{where}: found {_kind(inp)}, expected {_WRONG_TYPE[kind]}"
        elif kind == "literal_error":
            expected = e.get("ctx", {}).get("expected", "")
            code = "bad-format" if loc == ("format",) else "bad-value"
            msg = f"{where}: found {_kind(inp)}, expected {expected}"
            if loc == ("format",):
                msg += f"; {first_line}"
        elif kind == "too_short":
            code = "missing-key"
            msg = f"{where} is empty; it needs at least one entry"
        elif "-" in kind:  # our own codes (bad-slug, bad-date, bad-money, ...)
            code = kind
            msg = f"{where}{' (a key)' if is_key else ''}: {e['msg']}"
        else:
            code = "wrong-type"
            msg = f"{where}: {e['msg']}"
        out.append(Problem(doc.path, line, None, code, msg))
    return out


def load_contract(path: Path, shown: str | None = None) -> tuple[LoadedContract | None, list[Problem]]:
    """Read, validate and check one contract file; (contract, []) or (None, problems)."""
    shown = shown or str(path)
    doc = read_yaml_file(path, shown)
    problems = list(doc.problems)
    if doc.data is None and not problems:
        problems.append(Problem(shown, None, None, "not-mapping",
                                f"the file is empty; a contract starts with 'format: {FORMAT}'"))
    if doc.data is not None and not isinstance(doc.data, dict):
        problems.append(Problem(
            shown, doc.line_of(()), None, "not-mapping",
            f"the file holds {_kind(doc.data)}, expected a mapping of contract keys "
            f"starting with 'format: {FORMAT}'"))
        return None, problems
    if doc.data is None:
        return None, problems
    try:
        contract = Contract.model_validate(doc.data)
    except ValidationError as err:
        return None, problems + _pydantic_problems(err, doc)
    loaded = LoadedContract(contract, path, shown, doc)
    problems += check_contract(loaded, path.stem)
    return (None if problems else loaded), problems


# --- checks the models cannot make ----------------------------------------------------------

def _fmt_share(d: Decimal) -> str:
    return f"{d.normalize():f}"


def _tests_disjoint(a: Test, b: Test) -> bool:
    def in_range(r: Test, x: Any) -> bool:
        return isinstance(x, Decimal) and (r.low is None or x >= r.low) and (
            r.below is None or x < r.below)
    if a.is_range and b.is_range:
        lo = max([x for x in (a.low, b.low) if x is not None], default=None)
        hi = min([x for x in (a.below, b.below) if x is not None], default=None)
        return lo is not None and hi is not None and lo >= hi
    if a.is_range or b.is_range:
        r, v = (a, b) if a.is_range else (b, a)
        return not any(in_range(r, x) for x in v.values)
    return not (set(a.values) & set(b.values))


def conditions_overlap(a: dict | None, b: dict | None) -> bool:
    """Whether some row could satisfy both conditions (both are conjunctions of tests)."""
    a, b = a or {}, b or {}
    return not any(_tests_disjoint(a[c], b[c]) for c in set(a) & set(b))


def _rule_lists(c: Contract):
    yield ("payers",), c.payers
    for i, o in enumerate(c.outcomes):
        if o.payers is not None:
            yield ("outcomes", i, "payers"), o.payers


def check_contract(lc: LoadedContract, stem: str) -> list[Problem]:
    """Every check the models cannot make, each a problem at its line."""
    c, doc, shown = lc.contract, lc.doc, lc.shown
    out: list[Problem] = []

    def add(loc: tuple, code: str, msg: str) -> None:
        out.append(Problem(shown, doc.line_of(loc), None, code, msg))

    if c.id != stem:
        add(("id",), "id-mismatch", f"id is '{c.id}' but the file is named '{stem}.yaml'; the "
            f"id names the ledgers and evidence folders, so rename the file to '{c.id}.yaml' "
            f"or set id: {stem}")
    t = c.term
    order = [("service_start", t.service_start), ("enrolment_end", t.enrolment_end),
             ("outcomes_end", t.outcomes_end)]
    for (an, a), (bn, b) in zip(order, order[1:]):
        if b < a:
            add(("term", bn), "term-order", f"term.{bn} {b} is before term.{an} {a}; expected "
                "service_start ≤ enrolment_end ≤ outcomes_end")
    if t.claims_end is not None and t.claims_end < t.outcomes_end:
        add(("term", "claims_end"), "term-order", f"term.claims_end {t.claims_end} is before "
            f"term.outcomes_end {t.outcomes_end}; claims must be possible for every outcome")

    funders: dict[str, int] = {}
    for i, f in enumerate(c.funders):
        if f.id in funders:
            add(("funders", i, "id"), "duplicate-id", f"funder id '{f.id}' is used twice (first "
                f"at line {doc.line_of(('funders', funders[f.id], 'id'))}); give each funder its own id")
        else:
            funders[f.id] = i
    served: dict[tuple[str, str], str] = {}
    for i, f in enumerate(c.funders):
        for col, values in (f.serves or {}).items():
            for v in values:
                key = (col, v.lower())
                if key in served and served[key] != f.id:
                    add(("funders", i, "serves", col), "serves-overlap",
                        f"funders '{served[key]}' and '{f.id}' both serve {col} '{v}'; a route "
                        "must lead to exactly one funder, so remove it from one of them")
                else:
                    served[key] = f.id
    route_cols = {col for (col, _v) in served}

    for base, rules in _rule_lists(c):
        for r, rule in enumerate(rules):
            loc = base + (r,)
            if rule.when is None and r < len(rules) - 1:
                add(loc, "unreachable-rule", f"{_loc_text(loc)} has no 'when', so it always "
                    "applies and the rules after it never do; move it to the end")
            total = sum((e.share for e in rule.split), Decimal(0))
            if total != 100:
                terms = " + ".join(f"{e.funder or e.route} {_fmt_share(e.share)}" for e in rule.split)
                add(loc + ("split",), "split-sum", f"{_loc_text(loc + ('split',))}: shares add up "
                    f"to {_fmt_share(total)}, expected exactly 100 ({terms})")
            seen: set[str] = set()
            for j, e in enumerate(rule.split):
                eloc = loc + ("split", j)
                if e.funder is not None:
                    if e.funder not in funders:
                        guess = difflib.get_close_matches(e.funder, list(funders), n=1)
                        hint = f" (did you mean '{guess[0]}'?)" if guess else ""
                        add(eloc, "unknown-funder", f"{_loc_text(eloc)}: funder '{e.funder}' is "
                            f"not in funders{hint}; add it to funders or fix the id")
                    elif e.funder in seen:
                        add(eloc, "duplicate-funder", f"{_loc_text(eloc)}: funder '{e.funder}' "
                            "appears twice in one split; combine the two shares into one entry")
                    seen.add(e.funder or "")
                elif e.route not in route_cols:
                    add(eloc, "unknown-route", f"{_loc_text(eloc)}: route '{e.route}' but no "
                        f"funder serves a {e.route}; add 'serves: {{{e.route}: ...}}' to the "
                        "funders it should reach")

    outcomes: dict[str, int] = {}
    for i, o in enumerate(c.outcomes):
        if o.id in outcomes:
            add(("outcomes", i, "id"), "duplicate-id", f"outcome id '{o.id}' is used twice "
                f"(first at line {doc.line_of(('outcomes', outcomes[o.id], 'id'))}); give each "
                "outcome its own id")
        else:
            outcomes[o.id] = i
    groups = c.groups or {}
    for i, o in enumerate(c.outcomes):
        if o.group is not None:
            if o.group not in groups:
                add(("outcomes", i, "group"), "unknown-group", f"outcome '{o.id}' is in group "
                    f"'{o.group}', which is not under groups; add 'groups: {{{o.group}: "
                    "{limit_per_participant: 1}}' or fix the name")
            if o.limit_per_participant is not None:
                add(("outcomes", i, "limit_per_participant"), "group-and-limit",
                    f"outcome '{o.id}' has both group and limit_per_participant; the group's "
                    "limit applies, so remove limit_per_participant")
        for j, req in enumerate(o.requires):
            if req.outcome not in outcomes and req.outcome not in {x.id for x in c.outcomes}:
                add(("outcomes", i, "requires", j, "outcome"), "unknown-requires",
                    f"outcome '{o.id}' requires '{req.outcome}', which is not an outcome id; "
                    f"expected one of: {', '.join(x.id for x in c.outcomes)}")
        for d in o.prices:
            if d > t.outcomes_end:
                add(("outcomes", i, "prices", d.isoformat()), "price-after-end",
                    f"outcome '{o.id}' has a price from {d}, after term.outcomes_end "
                    f"{t.outcomes_end}; no outcome can be achieved then, so remove it or fix the date")
        if o.prices and min(o.prices) > t.service_start:
            first = min(o.prices)
            add(("outcomes", i, "prices"), "no-price-at-start",
                f"outcome '{o.id}' has no price in force on term.service_start {t.service_start} "
                f"(its first price is from {first}); add a price dated {t.service_start}")

    # prerequisite cycles, reported once per cycle at the first outcome on it
    graph = {o.id: [r.outcome for r in o.requires if r.outcome in outcomes] for o in c.outcomes}
    state: dict[str, int] = {}
    reported: set[frozenset] = set()
    for start in graph:
        if state.get(start):
            continue
        stack = [(start, iter(graph[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            if state.get(nxt) == 1:
                cyc = path[path.index(nxt):] + [nxt]
                key = frozenset(cyc)
                if key not in reported:
                    reported.add(key)
                    i = outcomes[cyc[0]]
                    add(("outcomes", i, "requires"), "requires-cycle",
                        "prerequisites form a cycle: " + " requires ".join(cyc) +
                        "; no milestone could ever be paid, so remove one requirement")
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(graph[nxt])))

    by_type: dict[str, list[int]] = {}
    for i, o in enumerate(c.outcomes):
        by_type.setdefault(o.milestone, []).append(i)
    for mtype, idx in by_type.items():
        # one problem per outcome, naming the first earlier one it overlaps: n outcomes
        # with no `when` are n-1 problems, not n(n-1)/2 (which ran out of memory)
        for b_i, b in enumerate(idx):
            ob = c.outcomes[b]
            for a in idx[:b_i]:
                oa = c.outcomes[a]
                if conditions_overlap(oa.when, ob.when):
                    add(("outcomes", b, "when") if ob.when else ("outcomes", b, "milestone"),
                        "when-overlap",
                        f"outcomes '{oa.id}' and '{ob.id}' both pay milestone '{mtype}' and "
                        "their 'when' conditions overlap, so one milestone could match both; "
                        "make them disjoint (ranges are half-open: {min: 8, below: 16} and "
                        "{min: 16})")
                    break
    return out


# --- derived views for the engine -----------------------------------------------------------

def limit_of(c: Contract, o: Outcome) -> tuple[str, int]:
    """The key and size of the per-participant limit that outcome `o` counts towards."""
    if o.group is not None:
        return f"group:{o.group}", (c.groups or {})[o.group].limit_per_participant
    return f"outcome:{o.id}", o.limit_per_participant or 1


def route_table(c: Contract) -> dict[str, dict[str, str]]:
    """column → lower-cased value → funder id, from funders' `serves`."""
    out: dict[str, dict[str, str]] = {}
    for f in c.funders:
        for col, values in (f.serves or {}).items():
            for v in values:
                out.setdefault(col, {})[v.strip().lower()] = f.id
    return out


def rules_for(c: Contract, o: Outcome) -> tuple[tuple, list[PayerRule]]:
    """(location, rules) of the payer rules that apply to outcome `o`."""
    if o.payers is not None:
        return ("outcomes", c.outcomes.index(o), "payers"), o.payers
    return ("payers",), c.payers


def condition_columns(c: Contract) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """Columns the contract reads: (participant columns, milestone columns) → first location."""
    part: dict[str, tuple] = {}
    mile: dict[str, tuple] = {}
    for col in (c.eligibility or {}):
        part.setdefault(col, ("eligibility", col))
    for base, rules in _rule_lists(c):
        for r, rule in enumerate(rules):
            for col in (rule.when or {}):
                part.setdefault(col, base + (r, "when", col))
            for j, e in enumerate(rule.split):
                if e.route:
                    part.setdefault(e.route, base + (r, "split", j))
    for i, o in enumerate(c.outcomes):
        for col in (o.when or {}):
            mile.setdefault(col, ("outcomes", i, "when", col))
    return part, mile


def json_schema() -> dict:
    """The JSON Schema of `sib-contract/1`, generated from the models."""
    schema = Contract.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://sib.invalid/schema/sib-contract-1.json"
    return schema
