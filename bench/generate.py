"""Seeded generator of large workspaces for the benchmarks (run by hand, never by tests).

    python bench/generate.py DIR [--participants 100000] [--quarters 40] [--issue 39]

writes a national-scale IPS programme into DIR: a contract with 60 funders (a central
top-up, 30 local authorities, 20 health bodies and 9 Jobcentre Plus districts, each routed
by the participant's area and capped), 100,000 participants and about 516,000
milestones over ten years (engagement, job start, 13-week sustainment, health improvement
and up to 24 monthly in-work payments: 5.2 per participant at IPS's published rates — the
issue's "about 1,000,000" would need twice the milestones per person; bench/claim.py's
scaling table runs the engine at 1,000,000 with 200,000 participants), with realistic
late verification, pending rows, withdrawals after payment and corrected areas. It then
issues the first `--issue` quarterly claims from the evidence as it stood on each claim
date, leaving the evidence of the next claim date in evidence/. Same seed, same bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

CID = "national-ips"
START = date(2015, 1, 1)
AREAS, HEALTH, JCP = 30, 20, 9


def contract_text(quarters: int, participants: int) -> str:
    end = date(START.year + quarters // 4, 1, 1) - timedelta(days=1)
    scale = participants / 100_000
    lines = [
        "format: sib-contract/1", f"id: {CID}", "name: National IPS programme (benchmark)",
        "currency: GBP", "claims: quarter", "term:", f"  service_start: {START}",
        f"  enrolment_end: {end - timedelta(days=365)}", f"  outcomes_end: {end}",
        "caps:", f"  contract: {int(260_000_000 * scale)}.00", "  participant: 9000.00",
        "eligibility:", "  age: {min: 16, below: 71}", "funders:",
        f"  - {{id: central, name: Central top-up, kind: central, cap: {int(95_000_000 * scale)}.00}}"]
    for k in range(AREAS):
        cap = int((2_400_000 if k % 7 else 1_700_000) * scale)
        lines.append(f"  - {{id: la-{k:02d}, name: Local authority {k:02d}, kind: local-authority, "
                     f"cap: {cap}.00, serves: {{area: A{k:02d}}}}}")
    for k in range(HEALTH):
        cap = int((2_900_000 if k % 5 else 2_000_000) * scale)
        areas = ", ".join(f"H{k:02d}" for _ in range(1))
        lines.append(f"  - {{id: nhs-{k:02d}, name: NHS body {k:02d}, kind: health, cap: {cap}.00, "
                     f"serves: {{health_area: [{areas}]}}}}")
    for k in range(JCP):
        lines.append(f"  - {{id: jcp-{k}, name: Jobcentre Plus district {k}, kind: dwp, "
                     f"cap: {int(2_300_000 * scale)}.00, serves: {{jcp_district: J{k}}}}}")
    lines += [
        "payers:", "  - split:", "      - {funder: central, share: 35.5}",
        "      - {route: area, share: 30.25}", "      - {route: health_area, share: 24.75}",
        "      - {route: jcp_district, share: 9.5}",
        "groups:", "  sustainment-13w: {limit_per_participant: 1}", "outcomes:",
        "  - {id: engagement, name: Engagement, milestone: engagement, prices: {%s: 500.00, %s: 520.00}}"
        % (START, START.replace(year=START.year + 5)),
        "  - id: job-start", "    name: Job start", "    milestone: job-start",
        "    requires: [{outcome: engagement, within_days: 274}]",
        f"    prices: {{{START}: 2000.00}}",
        "  - id: sustainment-13w-ft", "    name: 13 weeks, 16+ hours", "    milestone: sustainment-13w",
        "    group: sustainment-13w", "    when: {hours_per_week: {min: 16}}",
        "    requires: [{outcome: job-start, within_days: 274}]", f"    prices: {{{START}: 2500.00}}",
        "  - id: sustainment-13w-pt", "    name: 13 weeks, 8-16 hours", "    milestone: sustainment-13w",
        "    group: sustainment-13w", "    when: {hours_per_week: {min: 8, below: 16}}",
        "    requires: [{outcome: job-start, within_days: 274}]", f"    prices: {{{START}: 1500.00}}",
        "  - id: health-improvement", "    name: Health improvement", "    milestone: health-improvement",
        "    requires: [{outcome: engagement}]", f"    prices: {{{START}: 800.00}}",
        "  - id: in-work-month", "    name: A further month in work", "    milestone: in-work-month",
        "    limit_per_participant: 18", "    requires: [{outcome: job-start}]",
        f"    prices: {{{START}: 150.00}}",
    ]
    return "\n".join(lines) + "\n"


def simulate(participants: int, quarters: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Participants and milestones with their timelines (reported, verified, withdrawn)."""
    rng = np.random.default_rng(seed)
    days = (date(START.year + quarters // 4, 1, 1) - START).days - 365 - 120
    base = np.datetime64(START.isoformat(), "D").astype(np.int64)
    n = participants
    enrolled = base + np.sort(rng.integers(0, days, n))
    area = rng.integers(0, AREAS, n)
    p = pd.DataFrame({
        "participant_id": [f"N{k:07d}" for k in range(1, n + 1)],
        "enrolled_on": enrolled, "area": [f"A{a:02d}" for a in area],
        "health_area": [f"H{a % HEALTH:02d}" for a in area],
        "jcp_district": [f"J{a % JCP}" for a in area],
        "age": np.clip(rng.normal(38, 11, n), 16, 75).astype(int)})
    # a few areas corrected later (days after enrolment)
    p["corrected_after"] = np.where(rng.random(n) < 0.004, rng.integers(100, 600, n), -1)
    p["corrected_area"] = [f"A{a:02d}" for a in rng.integers(0, AREAS, n)]

    parts = []
    idx = np.arange(n)
    eng = idx[rng.random(n) < 0.85]
    eng_day = enrolled[eng] + rng.integers(5, 75, len(eng))
    parts.append(("engagement", eng, eng_day, np.full(len(eng), "")))
    hi = eng[rng.random(len(eng)) < 0.5]
    parts.append(("health-improvement", hi, eng_day[np.searchsorted(eng, hi)] +
                  rng.integers(180, 260, len(hi)), np.full(len(hi), "")))
    js = eng[rng.random(len(eng)) < 0.34]
    js_day = eng_day[np.searchsorted(eng, js)] + np.minimum(20 + rng.gamma(2, 55, len(js)), 290).astype(int)
    hours = rng.choice(np.array(["37.5", "30", "20", "16", "12", "9", "6"]), len(js),
                       p=[.3, .25, .15, .1, .1, .07, .03])
    parts.append(("job-start", js, js_day, hours))
    su = rng.random(len(js)) < 0.55
    parts.append(("sustainment-13w", js[su], js_day[su] + 91, hours[su]))
    months = rng.integers(0, 25, len(js))  # months in work after the start
    rep = np.repeat(np.arange(len(js)), months)
    k = np.concatenate([np.arange(1, m + 1) for m in months]) if months.sum() else np.zeros(0, int)
    parts.append(("in-work-month", js[rep], js_day[rep] + 30 * k, hours[rep]))
    kinds = np.concatenate([np.full(len(x[1]), x[0]) for x in parts])
    who = np.concatenate([x[1] for x in parts])
    achieved = np.concatenate([x[2] for x in parts]).astype(np.int64)
    hrs = np.concatenate([x[3] for x in parts])
    m = len(kinds)
    order = np.lexsort((kinds, who, achieved))
    kinds, who, achieved, hrs = kinds[order], who[order], achieved[order], hrs[order]
    delay = np.minimum(5 + rng.lognormal(3.0, 0.8, m), 400).astype(np.int64)
    verified = achieved + delay
    pending_forever = rng.random(m) < 0.01
    withdrawn = np.where(rng.random(m) < 0.004, verified + rng.integers(60, 400, m), -1)
    etype = np.where(np.isin(kinds, ["job-start", "sustainment-13w", "in-work-month"]), "payslip",
                     np.where(kinds == "health-improvement", "questionnaire", "appointment-log"))
    ms = pd.DataFrame({
        "milestone_id": [f"M{k:08d}" for k in range(1, m + 1)],
        "participant_id": p["participant_id"].to_numpy()[who], "milestone": kinds,
        "achieved_on": achieved, "reported_on": achieved + rng.integers(0, 15, m),
        "verified_on": np.where(pending_forever, -1, verified), "withdrawn_on": withdrawn,
        "evidence_ref": [f"E{k:08d}" for k in range(1, m + 1)], "evidence_type": etype,
        "hours_per_week": hrs})
    return p, ms


def _iso(days: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(days.astype("datetime64[D]"), unit="D")


def export(p: pd.DataFrame, ms: pd.DataFrame, on: date) -> tuple[str, str]:
    day = np.datetime64(on.isoformat(), "D").astype(np.int64)
    pp = p[p["enrolled_on"] <= day]
    fixed = (pp["corrected_after"] >= 0) & (pp["enrolled_on"] + pp["corrected_after"] <= day)
    area = np.where(fixed, pp["corrected_area"], pp["area"])
    pout = pd.DataFrame({"participant_id": pp["participant_id"], "enrolled_on": _iso(pp["enrolled_on"].to_numpy()),
                         "area": area, "health_area": pp["health_area"],
                         "jcp_district": pp["jcp_district"], "age": pp["age"]})
    mm = ms[ms["reported_on"] <= day]
    ver = (mm["verified_on"] >= 0) & (mm["verified_on"] <= day)
    status = np.where((mm["withdrawn_on"] >= 0) & (mm["withdrawn_on"] <= day), "withdrawn",
                      np.where(ver, "verified", "pending"))
    vtext = np.where(ver, _iso(np.maximum(mm["verified_on"].to_numpy(), 0)), "")
    mout = pd.DataFrame({"milestone_id": mm["milestone_id"], "participant_id": mm["participant_id"],
                         "milestone": mm["milestone"], "achieved_on": _iso(mm["achieved_on"].to_numpy()),
                         "status": status, "verified_on": vtext,
                         "evidence_ref": np.where(ver, mm["evidence_ref"], ""),
                         "evidence_type": mm["evidence_type"], "hours_per_week": mm["hours_per_week"]})
    return (pout.to_csv(index=False, lineterminator="\n"), mout.to_csv(index=False, lineterminator="\n"))


def build(ws: Path, participants: int = 100_000, quarters: int = 40, issue: int = 39,
          seed: int = 2015, verbose: bool = True) -> None:
    from sib.issue import issue_claim
    from sib.period import parse_period

    (ws / "contracts").mkdir(parents=True, exist_ok=True)
    (ws / "ledgers").mkdir(exist_ok=True)
    ev = ws / "evidence" / CID
    ev.mkdir(parents=True, exist_ok=True)
    (ws / "contracts" / f"{CID}.yaml").write_text(contract_text(quarters, participants))
    p, ms = simulate(participants, quarters, seed)
    if verbose:
        print(f"{len(p):,} participants, {len(ms):,} milestones", file=sys.stderr)
    period = parse_period(f"{START.year}-Q1", "quarter")
    for k in range(issue + 1):
        on = period.end + timedelta(days=4)
        parts, miles = export(p, ms, on)
        (ev / "participants.csv").write_text(parts)
        (ev / "milestones.csv").write_text(miles)
        if k == issue:
            break
        stamp = datetime(on.year, on.month, on.day, 9, 30, tzinfo=timezone.utc)
        os.environ["SOURCE_DATE_EPOCH"] = str(int(stamp.timestamp()))
        t = time.perf_counter()
        prep, _done = issue_claim(ws, CID, period.label)
        if verbose:
            print(f"{period.label}: {prep.claim.rows_in:>9,} rows, {len(prep.claim.lines):>7,} "
                  f"lines, £{prep.manifest['totals']['amount']:>14}  {time.perf_counter() - t:5.1f} s",
                  file=sys.stderr)
        period = period.next()
    os.environ.pop("SOURCE_DATE_EPOCH", None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--participants", type=int, default=100_000)
    ap.add_argument("--quarters", type=int, default=40)
    ap.add_argument("--issue", type=int, default=39, help="claims to issue (default 39)")
    ap.add_argument("--seed", type=int, default=2015)
    a = ap.parse_args()
    build(a.dir, a.participants, a.quarters, a.issue, a.seed)


if __name__ == "__main__":
    main()
