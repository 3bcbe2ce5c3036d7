"""Generate the shipped West London example: evidence as it stood at each claim, and claims.

A seeded simulation of the IPS Into Work SIB (contracts/west-london-ips.yaml), calibrated to
the published results (../shared/spec/domain-facts.md): over the contract about 1,009
engagements, 276 job starts, 130 13-week sustainments and 536 health improvements, about
30% job entry, participants over the eight boroughs. It has the mess real exports have:
verification weeks or months after achievement, pending rows, milestones withdrawn after
payment, hours under 8, second job starts, an unknown participant, a missing
prerequisite, a borough corrected after payment, hours corrected after payment.

    python scripts/west_london_example.py            # rewrite evidence/ and ledgers/ in place
    python scripts/west_london_example.py --into DIR # write a fresh copy of the workspace

For each quarter 2019-Q1 … 2021-Q4 it exports the evidence as it stood on the claim date
(the 4th day after the quarter) and issues the claim with `sib` itself, with
SOURCE_DATE_EPOCH set to that date so the manifests are reproducible. It leaves the
evidence as it stood on 2022-04-04, so `sib claim --period 2022-Q1` issues claim 13.
Same seed, same bytes.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SEED = 20190102
CONTRACT = "west-london-ips"
FIRST, LAST_ISSUED, NEXT = "2019-Q1", "2021-Q4", "2022-Q1"

# borough → (CCG, JCP district), and the share of referrals (Westminster and Brent largest)
BOROUGHS = {
    "Barnet": ("Barnet", "Barnet", 0.12),
    "Brent": ("Brent", "West London", 0.15),
    "Ealing": ("Ealing", "West London", 0.14),
    "Harrow": ("Harrow", "West London", 0.10),
    "Hillingdon": ("Hillingdon", "West London", 0.12),
    "Hounslow": ("Hounslow", "West London", 0.12),
    "Kensington & Chelsea": ("West London", "West London", 0.10),
    "Westminster": ("Central London", "West London", 0.15),
}
SERVICE_START, ENROL_END, OUTCOMES_END = date(2019, 1, 2), date(2022, 6, 30), date(2022, 9, 30)


@dataclass
class Person:
    pid: str
    enrolled: date
    borough: str
    age: int
    corrected: tuple[date, str] | None = None  # (from, borough) after a correction

    def attrs(self, on: date) -> tuple[str, str, str]:
        b = self.corrected[1] if self.corrected and self.corrected[0] <= on else self.borough
        ccg, jcp, _w = BOROUGHS[b]
        return b, ccg, jcp


@dataclass
class Event:
    pid: str
    kind: str
    achieved: date
    reported: date
    verified: date | None          # None: stays pending
    evidence_type: str
    hours: float | None = None
    withdrawn: date | None = None
    hours_fix: tuple[date, float] | None = None
    mid: str = ""
    ref: str = field(default="")


def _d(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.integers(lo, hi + 1))


def simulate(seed: int = SEED) -> tuple[list[Person], list[Event]]:
    rng = np.random.default_rng(seed)
    names = list(BOROUGHS)
    weights = np.array([BOROUGHS[b][2] for b in names])
    weights /= weights.sum()
    days = (ENROL_END - SERVICE_START).days
    # enrolment ramps up over the first year, then steady
    n = 1215
    u = rng.random(n)
    offsets = np.sort((days * np.sqrt(u) * 0.35 + days * u * 0.65).astype(int))
    people: list[Person] = []
    events: list[Event] = []

    def delay() -> int:  # achievement → verification: usually weeks, sometimes months
        return int(min(5 + rng.lognormal(3.2, 0.7), 200))

    def add(pid, kind, achieved, etype, hours=None):
        if achieved > OUTCOMES_END:
            return None
        ev = Event(pid, kind, achieved, achieved + timedelta(days=_d(rng, 0, 14)),
                   achieved + timedelta(days=delay()), etype, hours)
        events.append(ev)
        return ev

    for k, off in enumerate(offsets.tolist()):
        pid = f"WL{k + 1:05d}"
        enrolled = SERVICE_START + timedelta(days=off)
        borough = names[int(rng.choice(len(names), p=weights))]
        age = int(np.clip(rng.normal(38, 11), 18, 66))
        p = Person(pid, enrolled, borough, age)
        people.append(p)
        if rng.random() > 0.845:
            continue
        eng_day = enrolled + timedelta(days=_d(rng, 5, 75))
        etype = "appointment-log" if rng.random() < 0.7 else "vocational-profile"
        eng = add(pid, "engagement", eng_day, etype)
        if eng is None:
            continue
        if rng.random() < 0.62:
            add(pid, "health-improvement", eng_day + timedelta(days=_d(rng, 180, 260)),
                "wellbeing-questionnaire")
        if rng.random() < 0.27:
            js_day = eng_day + timedelta(days=int(min(20 + rng.gamma(2.0, 55.0), 265)))
            hours = float(rng.choice([37.5, 30, 24, 20, 16, 15, 12, 10], p=[.3, .2, .12, .1, .06,
                                                                              .08, .08, .06]))
            js = add(pid, "job-start", js_day,
                     str(rng.choice(["payslip", "employer-letter", "contract-of-employment"])),
                     hours)
            if js is None:
                continue
            if rng.random() < 0.53:
                add(pid, "sustainment-13w", js_day + timedelta(days=91),
                    str(rng.choice(["payslip", "employer-letter"])), hours)
            if rng.random() < 0.06:  # a second job: reported, never paid twice
                add(pid, "job-start", js_day + timedelta(days=_d(rng, 100, 200)), "payslip",
                    float(rng.choice([20, 30])))
    _mess(rng, people, events)
    events.sort(key=lambda e: (e.achieved, e.pid, e.kind))
    for k, e in enumerate(events):
        e.mid = f"WLM{k + 1:06d}"
        e.ref = f"EV-{e.achieved:%y%m}-{k + 1:05d}"
    return people, events


def _mess(rng: np.random.Generator, people: list[Person], events: list[Event]) -> None:
    """The particular cases every real export has (each one named in a reason code)."""
    by_pid = {p.pid: p for p in people}
    early = [e for e in events if e.achieved < date(2021, 1, 1)]
    # withdrawn after payment: a payslip found to be for another job, months later
    for e in [early[i] for i in rng.choice(len(early), 8, replace=False)]:
        e.withdrawn = e.verified + timedelta(days=_d(rng, 100, 200))
    # pending for good: evidence never obtained
    for e in [events[i] for i in rng.choice(len(events), 14, replace=False)]:
        if e.withdrawn is None:
            e.verified = None
    # hours under 8 on a sustainment: no outcome's conditions hold
    sust = [e for e in events if e.kind == "sustainment-13w"]
    for e in sust[5:8]:
        e.hours = 6.0
    # hours corrected after payment: full-time becomes part-time (re-rated)
    ft = [e for e in sust[8:] if e.hours and e.hours >= 16 and e.verified is not None]
    ft[0].hours_fix = (ft[0].verified + timedelta(days=150), 12.0)
    # a borough corrected after payment (re-rated to the right funders)
    starts = [e for e in events if e.kind == "job-start" and e.achieved < date(2020, 9, 1)]
    for e in starts[3:5]:
        p = by_pid[e.pid]
        other = "Hounslow" if p.borough != "Hounslow" else "Ealing"
        p.corrected = (e.verified + timedelta(days=120), other)
    # a participant over the published age range, with milestones of theirs
    engaged = {e.pid for e in events if e.kind == "engagement"}
    next(pp for pp in people[40:] if pp.pid in engaged).age = 72
    # corrections that reach the 2022-Q1 claim: a withdrawal, a borough, hours
    paid = [e for e in events if e.verified is not None and e.withdrawn is None
            and e.verified < date(2021, 9, 1) and e.pid not in {p.pid for p in people if p.corrected}]
    paid[100].withdrawn = date(2022, 2, 14)
    movers = [e for e in paid if e.kind == "job-start" and by_pid[e.pid].borough == "Ealing"]
    by_pid[movers[0].pid].corrected = (date(2022, 3, 1), "Harrow")
    sfix = [e for e in paid if e.kind == "sustainment-13w" and e.hours and 8 <= e.hours < 16]
    sfix[0].hours_fix = (date(2022, 1, 20), 16.0)
    # an unknown participant: a case id mistyped in the milestone export
    events.append(Event("WL0O123", "engagement", date(2020, 2, 10), date(2020, 2, 12),
                        date(2020, 3, 2), "appointment-log"))
    # a missing prerequisite: a job start whose engagement was never recorded
    lone = next(pp for pp in people[100:] if not any(e.pid == pp.pid for e in events))
    events.append(Event(lone.pid, "job-start", lone.enrolled + timedelta(days=60),
                         lone.enrolled + timedelta(days=65), lone.enrolled + timedelta(days=90),
                         "payslip", 30.0))
    # evidence the contract does not accept
    eng = [e for e in events if e.kind == "engagement"]
    eng[300].evidence_type = "self-declaration"


def _uk(d: date | None) -> str:
    return "" if d is None else d.strftime("%d/%m/%Y")


def export(people: list[Person], events: list[Event], on: date) -> tuple[str, str]:
    """participants.csv and milestones.csv as the case-management system exported them `on`."""
    pbuf = io.StringIO()
    w = csv.writer(pbuf, lineterminator="\n")
    w.writerow(["participant_id", "enrolled_on", "borough", "ccg", "jcp_district", "age"])
    for p in people:
        if p.enrolled <= on:
            b, ccg, jcp = p.attrs(on)
            w.writerow([p.pid, p.enrolled.isoformat(), b, ccg, jcp, p.age])
    mbuf = io.StringIO()
    w = csv.writer(mbuf, lineterminator="\n")
    w.writerow(["milestone_id", "participant_id", "milestone", "achieved_on", "status",
                "verified_on", "evidence_ref", "evidence_type", "hours_per_week"])
    for e in sorted(events, key=lambda e: (e.pid, e.mid)):
        if e.reported > on:
            continue
        verified = e.verified is not None and e.verified <= on
        status = "verified" if verified else "pending"
        if e.withdrawn is not None and e.withdrawn <= on:
            status = "withdrawn"
        hours = e.hours
        if e.hours_fix and e.hours_fix[0] <= on:
            hours = e.hours_fix[1]
        w.writerow([e.mid, e.pid, e.kind, _uk(e.achieved), status,
                    _uk(e.verified) if verified else "", e.ref if verified else "",
                    e.evidence_type, "" if hours is None else f"{hours:g}"])
    return pbuf.getvalue(), mbuf.getvalue()


def claim_date(end: date) -> date:
    return end + timedelta(days=4)


def build(workspace: Path) -> None:
    from sib.contract import load_contract
    from sib.issue import issue_claim
    from sib.period import parse_period

    lc, problems = load_contract(workspace / "contracts" / f"{CONTRACT}.yaml")
    assert lc is not None and not problems, problems
    people, events = simulate()
    evidence = workspace / "evidence" / CONTRACT
    ledgers = workspace / "ledgers" / CONTRACT
    shutil.rmtree(ledgers, ignore_errors=True)
    evidence.mkdir(parents=True, exist_ok=True)
    period = parse_period(FIRST, "quarter")
    saved = os.environ.get("SOURCE_DATE_EPOCH")
    try:
        while True:
            on = claim_date(period.end)
            parts, miles = export(people, events, on)
            (evidence / "participants.csv").write_text(parts, "utf-8")
            (evidence / "milestones.csv").write_text(miles, "utf-8")
            if period.label == NEXT:
                break
            stamp = datetime.combine(on, time(9, 30), tzinfo=timezone.utc)
            os.environ["SOURCE_DATE_EPOCH"] = str(int(stamp.timestamp()))
            prep, done = issue_claim(workspace, CONTRACT, period.label)
            print(f"{period.label}: claim {prep.claim.number}, "
                  f"£{prep.manifest['totals']['amount']}, {done.outcome}", file=sys.stderr)
            period = period.next()
    finally:
        if saved is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = saved
    counts: dict[str, int] = {}
    for e in events:
        if e.verified is not None and e.withdrawn is None:
            counts[e.kind] = counts.get(e.kind, 0) + 1
    engaged = {e.pid for e in events if e.kind == "engagement"}
    starters = {e.pid for e in events if e.kind == "job-start"}
    print("over the contract (verified, not withdrawn): " +
          ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) +
          f"; job entry {len(starters & engaged) / len(engaged):.0%} of {len(engaged)} engaged",
          file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--into", type=Path, help="write a fresh workspace here instead")
    args = ap.parse_args()
    if args.into:
        target = args.into
        (target / "contracts").mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "contracts" / f"{CONTRACT}.yaml", target / "contracts")
    else:
        target = ROOT
    build(target)


if __name__ == "__main__":
    main()
