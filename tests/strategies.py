"""Hypothesis strategies and helpers for the claim-engine property tests.

Owned by tests/test_properties.py. Builds *scenarios*: a small random contract, random
evidence, and the changes made between consecutive claims (late verification, withdrawals,
corrected attributes, new rows, a backdated price or share variation). A scenario is plain
data; `write_workspace` / `write_inputs` put it on disk in the layout sib reads
(contracts/<id>.yaml, evidence/<id>/*.csv, ledgers/), and `read_ledger` / `read_csv` read
the issued files back with the csv module, not sib's parser, so the properties check the
files a funder would receive.

The distributions are tuned so that most scenarios pay something and every cap, reversal
and re-rating occurs in a fair share of them (rare features use `one_in` / `mostly`, since
hypothesis favours zero and small values).
"""

from __future__ import annotations

import copy
import csv
import io
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import yaml
from hypothesis import settings
from hypothesis import strategies as st

from sib import money
from sib.period import Period, period_containing

# --- example counts ------------------------------------------------------------------------------

# The profiles (`ci`, the default, and `long`, ten times the examples) are registered in
# tests/conftest.py and chosen with HYPOTHESIS_PROFILE. A property whose examples issue
# whole claims runs `examples(factor)`: factor × 20 under `ci`, factor × 200 under `long`.
BASE_SHARE = 5  # examples(1) is a fifth of the profile's max_examples (20 of ci's 100)


def examples(factor: float) -> int:
    """`factor` × 20 examples under the `ci` profile (× 200 under `long`)."""
    return max(1, round(settings.default.max_examples * factor / BASE_SHARE))


CONTRACT_ID = "prop"
BOROUGHS = ("north", "south", "east", "west")  # "west" is served by no funder
EVIDENCE_TYPES = ("doc-a", "doc-b", "doc-c", "")
PARTICIPANT_COLUMNS = ("participant_id", "enrolled_on", "borough", "age")
MILESTONE_COLUMNS = ("milestone_id", "participant_id", "milestone", "achieved_on", "status",
                     "verified_on", "evidence_ref", "evidence_type", "hours_per_week")


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in `n` draws; False is the simplest value (what shrinking aims at).

    Not `integers(0, n - 1) == 0`: hypothesis favours 0, so that would be true far more often.
    """
    return st.sampled_from([False] * (n - 1) + [True])


def mostly(usual: st.SearchStrategy, other: st.SearchStrategy, n: int = 4) -> st.SearchStrategy:
    """`other` about once in `n` draws, else `usual` (one_of(a, a, b) would be 50/50)."""
    return one_in(n).flatmap(lambda rare: other if rare else usual)


# --- share lists ------------------------------------------------------------------------------

@st.composite
def share_units(draw, min_size: int = 1, max_size: int = 20) -> list[int]:
    """Share units (1 = 0.0001 %), each ≥ 1, summing to exactly 1,000,000.

    Cut points of [0, 1,000,000]; a few "round" cuts make equal remainders (ties) likely.
    """
    n = draw(st.integers(min_size, max_size))
    cut = st.one_of(st.integers(1, money.SHARE_UNITS - 1),
                    st.integers(1, 99).map(lambda k: k * 10_000),       # whole percents
                    st.integers(1, 2).map(lambda k: k * 333_333))       # thirds: ties
    cuts = draw(st.lists(cut, min_size=n - 1, max_size=n - 1, unique=True))
    edges = [0] + sorted(cuts) + [money.SHARE_UNITS]
    return [b - a for a, b in zip(edges, edges[1:])]


# --- scenarios --------------------------------------------------------------------------------

@dataclass
class Scenario:
    """A contract (as the dict written to YAML), the first evidence, and later changes.

    Each step may change the evidence and the contract (a backdated variation).

    contract: the YAML document (strings for dates, money and shares; sib types them).
    participants / milestones: lists of row dicts (dates as `date`, None for blank).
    repeats: milestone indices whose row is written twice, exactly (counted once).
    steps: per claim after the first, the changes applied to the inputs before it.
    periods: the labels of the consecutive claims, from the contract's first period.
    uk_dates: write dates as 31/03/2022 rather than 2022-03-31 (both are valid input).
    extra_rows: raw CSV lines added to this state only (invalid rows, for --skip-invalid):
      milestone rows, or participant rows when prefixed "P:".
    """

    contract: dict
    participants: list[dict]
    milestones: list[dict]
    repeats: list[int]
    steps: list[list[tuple]]
    periods: list[str]
    uk_dates: bool = False
    extra_rows: list[str] = field(default_factory=list)  # raw invalid CSV lines (see below)

    def states(self) -> list["Scenario"]:
        """The inputs before each claim: the first as generated, then each step applied."""
        states = [self]
        cur = self
        for changes in self.steps:
            cur = copy.deepcopy(cur)
            cur.extra_rows = []
            for change in changes:
                apply_change(cur, change)
            states.append(cur)
        return states


def _iso(d: date) -> str:
    return d.isoformat()


def _pounds(pence: int) -> str:
    return money.fmt_amount(pence)


@st.composite
def _split_rule(draw, funders: list[str], route: bool) -> dict:
    """One payer rule's split: distinct fixed funders and, maybe, a route by borough."""
    use_route = route and draw(st.booleans())
    fixed = draw(st.lists(st.sampled_from(funders), unique=True,
                          min_size=0 if use_route else 1, max_size=len(funders)))
    targets = [{"funder": f} for f in fixed] + ([{"route": "borough"}] if use_route else [])
    targets = draw(st.permutations(targets))
    units = draw(share_units(min_size=len(targets), max_size=len(targets)))
    return {"split": [dict(t, share=money.fmt_share(u)) for t, u in zip(targets, units)]}


@st.composite
def _payers(draw, funders: list[str], route: bool) -> list[dict]:
    rules = []
    if route and draw(st.booleans()):  # a first rule for one borough, as West London's Barnet
        rule = draw(_split_rule(funders, route))
        rule = {"when": {"borough": [draw(st.sampled_from(BOROUGHS))]}, **rule}
        rules.append(rule)
    rules.append(draw(_split_rule(funders, route)))
    return rules


@st.composite
def _pence(draw, high: int) -> int:
    """An amount in pence: usually pounds-and-pence up to `high`, sometimes a few pence."""
    return draw(mostly(st.integers(100, high), st.integers(0, 99)))


@st.composite
def contracts(draw) -> tuple[dict, date, date, date, str]:
    """A small valid contract: (YAML dict, service_start, enrolment_end, outcomes_end, kind)."""
    kind = draw(st.sampled_from(["quarter", "quarter", "month", "fiscal-quarter"]))
    start = date(2022, 1, 1) + timedelta(days=draw(st.integers(0, 80)))
    enrol_end = start + timedelta(days=draw(st.integers(30, 250)))
    out_end = enrol_end + timedelta(days=draw(st.integers(0, 120)))
    n_f = draw(st.integers(1, 4))
    fids = [f"f{k}" for k in range(1, n_f + 1)]
    route = draw(st.booleans())
    funders = []
    for f in fids:
        entry: dict = {"id": f, "name": f"Funder {f}", "kind": "other"}
        if draw(st.booleans()):
            entry["cap"] = _pounds(draw(_pence(600_000)))
        funders.append(entry)
    if route:  # each borough (but 'west') to at most one funder; at least one served
        served = draw(st.lists(st.sampled_from(BOROUGHS[:3]), min_size=1, max_size=3, unique=True))
        for b in served:
            f = funders[draw(st.integers(0, n_f - 1))]
            f.setdefault("serves", {"borough": []})["borough"].append(b)
    doc: dict = {
        "format": "sib-contract/1", "id": CONTRACT_ID, "name": "Property contract",
        "currency": "GBP", "claims": kind,
        "term": {"service_start": _iso(start), "enrolment_end": _iso(enrol_end),
                 "outcomes_end": _iso(out_end)},
    }
    if draw(st.booleans()):
        doc["term"]["claims_end"] = _iso(out_end + timedelta(days=400))
    caps = {}
    if draw(st.booleans()):
        caps["contract"] = _pounds(draw(_pence(1_000_000)))
    if draw(st.booleans()):
        caps["participant"] = _pounds(draw(_pence(250_000)))
    if caps:
        doc["caps"] = caps
    doc["price_basis"] = draw(st.sampled_from(["achieved", "achieved", "enrolled"]))
    if draw(one_in(4)):
        doc["eligibility"] = {"age": {"min": 18}}
    doc["funders"] = funders
    doc["payers"] = draw(_payers(fids, route))

    n_o = draw(st.integers(1, 3))
    paired = n_o >= 2 and draw(st.booleans())  # o1, o2 pay one milestone type by hours
    grouped = n_o >= 2 and draw(st.booleans())  # o1, o2 share a per-participant limit
    if grouped:
        doc["groups"] = {"g": {"limit_per_participant": draw(st.integers(1, 2))}}
    outcomes = []
    for k in range(1, n_o + 1):
        o: dict = {"id": f"o{k}", "name": f"Outcome {k}",
                   "milestone": "t1" if paired and k == 2 else f"t{k}"}
        if paired and k == 1:
            o["when"] = {"hours_per_week": {"below": 16}}
        if paired and k == 2:
            o["when"] = {"hours_per_week": {"min": 16}}
        if draw(one_in(4)):
            o["evidence"] = ["doc-a", "doc-b"]
        if grouped and k <= 2:
            o["group"] = "g"
        elif draw(st.booleans()):
            o["limit_per_participant"] = draw(st.integers(1, 3))
        if draw(one_in(5)):
            o["within_days_of_enrolment"] = draw(st.integers(0, 200))
        if k >= 2 and draw(one_in(3)):
            req: dict = {"outcome": f"o{draw(st.integers(1, k - 1))}"}
            if draw(st.booleans()):
                req["within_days"] = draw(st.integers(0, 120))
            o["requires"] = [req]
        if draw(one_in(3)):
            o["max_count"] = draw(st.integers(1, 4))
        prices = {_iso(start): _pounds(draw(_pence(200_000)))}
        if draw(st.booleans()):
            later = start + timedelta(days=draw(st.integers(1, (out_end - start).days)))
            prices[_iso(later)] = _pounds(draw(_pence(200_000)))
        o["prices"] = prices
        if draw(one_in(5)):
            o["payers"] = draw(_payers(fids, route))
        outcomes.append(o)
    doc["outcomes"] = outcomes
    return doc, start, enrol_end, out_end, kind


def _types(doc: dict) -> list[str]:
    return sorted({o["milestone"] for o in doc["outcomes"]})


@dataclass(frozen=True)
class Window:
    """The dates a scenario's evidence is drawn from: mostly inside the claimed periods."""

    start: date          # term.service_start
    enrol_end: date      # term.enrolment_end
    out_end: date        # term.outcomes_end
    claimed_end: date    # last day of the last claimed period


@st.composite
def _participant(draw, k: int, w: Window) -> dict:
    hi = max(w.start, min(w.enrol_end, w.claimed_end))
    inside = st.dates(w.start, hi)
    enrolled = draw(mostly(inside, st.dates(w.start - timedelta(days=40),
                                            w.enrol_end + timedelta(days=20)), 6))
    return {"participant_id": f"p{k}", "enrolled_on": enrolled,
            "borough": draw(st.sampled_from(BOROUGHS)),
            "age": draw(st.sampled_from(["25", "64", "18", "17", ""]))}


@st.composite
def _milestone(draw, k: int, n_p: int, types: list[str], w: Window) -> dict:
    hi = max(w.start, min(w.out_end, w.claimed_end))
    inside = st.dates(w.start, hi)
    achieved = draw(mostly(inside, st.dates(w.start - timedelta(days=20),
                                            w.out_end + timedelta(days=20)), 5))
    status = draw(st.sampled_from(["verified"] * 6 + ["pending", "withdrawn"]))
    soon = st.integers(0, 30)
    delay = draw(mostly(soon, st.integers(31, 200), 5))
    verified = achieved + timedelta(days=delay)
    if status != "verified" and draw(st.booleans()):
        verified = None
    other = draw(one_in(15))
    unknown = draw(one_in(15))
    return {"milestone_id": f"M{k}",  # unpadded, so that text order (M10 < M2) matters
            "participant_id": f"p{n_p + 1 if unknown else draw(st.integers(1, n_p))}",
            "milestone": draw(st.sampled_from(types + ["other"] if other else types)),
            "achieved_on": achieved, "status": status, "verified_on": verified,
            "evidence_ref": f"EV-{k}",
            "evidence_type": draw(st.sampled_from(EVIDENCE_TYPES[:2] * 4 + EVIDENCE_TYPES[2:])),
            "hours_per_week": draw(st.sampled_from(["8", "12.5", "16", "30", "8", "40", ""]))}


# Changes between claims. Evidence: late verification, withdrawal and reinstatement, a
# status back to pending, corrected hours / borough / age / enrolment / achievement date /
# participant, a new row. Contract (a backdated variation): a price or the shares changed.
CHANGE_KINDS = ("verify", "verify", "withdraw", "withdraw", "reinstate", "pend", "hours",
                "borough", "age", "enrolled", "achieved", "participant", "add", "add",
                "price", "price", "shares", "shares")


@st.composite
def _change(draw, n_p: int, types: list[str], w: Window) -> tuple:
    kind = draw(st.sampled_from(CHANGE_KINDS))
    return (kind, draw(st.integers(0, 50)), draw(st.integers(0, 250)),
            draw(st.sampled_from(BOROUGHS)), draw(st.sampled_from(["", "8", "16", "40"])),
            draw(_milestone(0, n_p, types, w)) if kind == "add" else None)


def apply_change(s: Scenario, change: tuple) -> None:
    """Apply one change to a scenario, keeping every evidence row structurally valid
    (verified_on ≥ achieved_on, verified rows dated) and never deleting a row."""
    if change[0] == "extra":  # raw (invalid) rows for this state, for --skip-invalid runs
        s.extra_rows = list(change[1])
        return
    kind, ix, days, borough, hours, new = change
    ms, ps = s.milestones, s.participants
    if kind == "add":
        new = dict(new, milestone_id=f"M{len(ms) + 1}", evidence_ref=f"EV-{len(ms) + 1}")
        ms.append(new)
        return
    if kind == "price":  # a backdated variation of an outcome's first price
        o = s.contract["outcomes"][ix % len(s.contract["outcomes"])]
        first = min(o["prices"])
        o["prices"][first] = _pounds(max(1, pence_of(o["prices"][first]) + (days - 125) * 37))
        return
    if kind == "shares":  # the default payer rule's shares, rotated among its entries
        split = s.contract["payers"][-1]["split"]
        shares = [e["share"] for e in split]
        for e, sh in zip(split, shares[1:] + shares[:1]):
            e["share"] = sh
        return
    if kind in ("borough", "age", "enrolled"):
        p = ps[ix % len(ps)]
        if kind == "borough":
            p["borough"] = borough
        elif kind == "age":
            p["age"] = "17" if p["age"] == "25" else "25"
        else:
            p["enrolled_on"] = p["enrolled_on"] + timedelta(days=(days % 60) - 30)
        return
    # aim at rows likely to hold a payment (verified ones), except when verifying
    pool = [m for m in ms if (m["status"] == "verified") != (kind in ("verify", "reinstate"))]
    pool = pool or ms
    if not pool:
        return
    m = pool[ix % len(pool)]
    if kind == "verify":  # late verification, maybe dated after the next period too
        m["status"] = "verified"
        m["verified_on"] = m["achieved_on"] + timedelta(days=days % 40 if ix % 3 else days)
    elif kind == "withdraw":
        m["status"] = "withdrawn"
    elif kind == "reinstate":
        m["status"] = "verified"
        if m["verified_on"] is None:
            m["verified_on"] = m["achieved_on"] + timedelta(days=days % 40)
    elif kind == "pend":
        m["status"] = "pending"
    elif kind == "hours":
        m["hours_per_week"] = hours
    elif kind == "achieved":  # a corrected date, never after the verification
        m["achieved_on"] = m["achieved_on"] - timedelta(days=days % 60)
    elif kind == "participant":
        m["participant_id"] = f"p{days % (len(ps) + 1) + 1}"


@st.composite
def scenarios(draw, max_claims: int = 4) -> Scenario:
    doc, start, enrol_end, out_end, kind = draw(contracts())
    n_claims = draw(st.integers(1, max_claims))
    periods: list[Period] = [period_containing(start, kind)]
    while len(periods) < n_claims:
        periods.append(periods[-1].next())
    w = Window(start, enrol_end, out_end, periods[-1].end)
    types = _types(doc)
    n_p = draw(st.integers(1, 5))
    participants = [draw(_participant(k, w)) for k in range(1, n_p + 1)]
    n_m = draw(st.integers(1, 14))
    milestones = [draw(_milestone(k, n_p, types, w)) for k in range(1, n_m + 1)]
    repeats = draw(st.lists(st.integers(0, n_m - 1), max_size=2)) if n_m else []
    steps = [draw(st.lists(_change(n_p, types, w), min_size=1, max_size=6))
             for _ in range(n_claims - 1)]
    return Scenario(doc, participants, milestones, repeats, steps,
                    [p.label for p in periods], uk_dates=draw(st.booleans()))


# --- writing and reading files ---------------------------------------------------------------

def _date_text(d: date | None, uk: bool) -> str:
    if d is None:
        return ""
    return d.strftime("%d/%m/%Y") if uk else d.isoformat()


def _csv_text(header: tuple, rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def evidence_rows(s: Scenario) -> tuple[list[list[str]], list[list[str]]]:
    """(participant rows, milestone rows) as CSV cells, repeats included, in scenario order."""
    prows = [[p["participant_id"], _date_text(p["enrolled_on"], s.uk_dates), p["borough"],
              p["age"]] for p in s.participants]
    mrows = [[m["milestone_id"], m["participant_id"], m["milestone"],
              _date_text(m["achieved_on"], s.uk_dates), m["status"],
              _date_text(m["verified_on"], s.uk_dates), m["evidence_ref"], m["evidence_type"],
              m["hours_per_week"]] for m in s.milestones]
    mrows += [list(mrows[i]) for i in s.repeats if i < len(mrows)]
    for line in s.extra_rows:  # "P:..." is a participants row, the rest milestone rows
        if line.startswith("P:"):
            prows.append(next(csv.reader([line[2:]])))
        else:
            mrows.append(next(csv.reader([line])))
    return prows, mrows


def write_inputs(ws: Path, s: Scenario, shuffle=None) -> None:
    """contracts/<id>.yaml and evidence/<id>/participants.csv and milestones.csv; evidence
    rows shuffled by `shuffle` (a random.Random) when given, the header kept first."""
    text = yaml.safe_dump(s.contract, sort_keys=False, allow_unicode=True)
    (ws / "contracts" / f"{CONTRACT_ID}.yaml").write_text(text, "utf-8")
    prows, mrows = evidence_rows(s)
    if shuffle is not None:
        shuffle.shuffle(prows)
        shuffle.shuffle(mrows)
    folder = ws / "evidence" / CONTRACT_ID
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "participants.csv").write_text(_csv_text(PARTICIPANT_COLUMNS, prows), "utf-8")
    (folder / "milestones.csv").write_text(_csv_text(MILESTONE_COLUMNS, mrows), "utf-8")


def write_workspace(ws: Path, s: Scenario) -> Path:
    """A fresh workspace holding the scenario's contract and first evidence."""
    (ws / "contracts").mkdir(parents=True)
    (ws / "ledgers").mkdir()
    write_inputs(ws, s)
    return ws


def pence_of(text: str) -> int:
    d = Decimal(text)
    assert d == d.quantize(Decimal("0.01")), text
    return int(d * 100)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_ledger(path: Path) -> list[dict]:
    """ledger.csv rows with amount, capped and price in pence and share in units."""
    rows = read_csv(path)
    for r in rows:
        for col in ("amount", "capped", "price"):
            r[col] = pence_of(r[col])
        r["share"] = int(Decimal(r["share"]) * 10_000)
    return rows


def claim_folder(ws: Path, period: str) -> Path:
    return ws / "ledgers" / CONTRACT_ID / period
