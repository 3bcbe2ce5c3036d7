"""Benchmark of the claim workbook and funder statements (run by hand; tests never time anything).

    python bench/workbook.py                         # 100,000 lines (issue 7: Lines < 20 s)
    python bench/workbook.py --lines 1000000 --history 500000
    python bench/workbook.py --profile lines         # cProfile top list of one part instead
                                                     # (lines | claim | statements)

Builds a synthetic, seeded, typed claim as the engine would hand it to sib/workbook.py —
`--lines` ledger lines (default 100,000) of a national-scale contract (bench/generate.py's
60 funders: a central top-up, 30 local authorities, 20 health bodies, 9 Jobcentre Plus
districts; ten outcomes), each milestone paid by four funders, about 3% of milestones
reversed (half of them re-rated: reversed and paid again), some lines capped or late, a
few evidence references that look like formulas; the decisions behind them (paid,
re-rated, reversed, paid earlier, pending, rejected, with their details) and `--history`
earlier lines (default 200,000, the reversed payments among them) — and times:

  prepare       sib.workbook's preparation of the claim's figures (shared by every book)
  Lines         the Lines sheet alone (`sib.workbook.lines_workbook`: a workbook of it only)
  claim.xlsx    the whole claim workbook (eight sheets)
  statements    every funder's statement (statements/<funder>.xlsx)

each as wall time and CPU time (time.process_time: other load on the machine does not
inflate it) with lines per second, and the sizes of the files. Prints the machine's CPU
count and load first: read wall times on a loaded machine as upper bounds.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import hashlib
import os
import pstats
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import generate  # noqa: E402  (bench/generate.py: the national contract's funders)
from sib import money  # noqa: E402
from sib import workbook as wb  # noqa: E402
from sib.contract import Contract  # noqa: E402
from sib.evidence import day_number  # noqa: E402
from sib.ledger import LEDGER_COLUMNS, History  # noqa: E402
from sib.period import parse_period  # noqa: E402
from sib.reconcile import Claim  # noqa: E402
from sib.workspace import find_contract  # noqa: E402

TARGET_S = 20.0  # issue 7: the Lines sheet of a 100,000-line claim
PERIOD = "2025-Q1"
EARLIER = 8  # earlier claims in the history

EXTRA_OUTCOMES = """\
  - id: qualification
    name: Qualification gained
    milestone: qualification
    requires: [{outcome: engagement}]
    prices: {2015-01-01: 400.00}
  - id: volunteering
    name: Volunteering placement
    milestone: volunteering
    prices: {2015-01-01: 250.00}
  - id: sustainment-26w
    name: 26 weeks in work
    milestone: sustainment-26w
    requires: [{outcome: job-start}]
    prices: {2015-01-01: 1750.00, 2022-04-01: 1800.00}
  - id: self-employment
    name: Self-employment started
    milestone: self-employment
    requires: [{outcome: engagement}]
    prices: {2015-01-01: 1200.00}
"""

REJECTED = (
    ("missing-prerequisite", "job-start needs an eligible engagement on or before {d}; none "
                             "was found"),
    ("prerequisite-too-old", "job-start needs engagement within 274 days; the engagement was "
                             "301 days earlier"),
    ("participant-ineligible", "the participant's age '72' is not at least 16 and below 71, as "
                               "eligibility requires"),
    ("conditions-not-met", "its hours_per_week '6' meet no outcome's conditions "
                           "(sustainment-13w-ft needs hours_per_week at least 16; "
                           "sustainment-13w-pt needs hours_per_week at least 8 and below 16)"),
    ("limit-reached", "in-work-month is paid at most 18 times per participant; this would be "
                      "the 19th"),
    ("withdrawn", "withdrawn by the provider; not payable"),
)


def machine() -> str:
    load1, load5, _ = os.getloadavg()
    return f"{os.cpu_count()} CPU(s), load average {load1:.1f} (1 min) {load5:.1f} (5 min)"


def peak_mib() -> float:
    """The process's peak resident memory so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def contract(tmp: Path) -> Contract:
    """bench/generate.py's national contract with four more outcomes (ten in all)."""
    (tmp / "contracts").mkdir(parents=True, exist_ok=True)
    text = generate.contract_text(44, 100_000) + EXTRA_OUTCOMES
    (tmp / "contracts" / f"{generate.CID}.yaml").write_text(text, "utf-8")
    return find_contract(tmp, generate.CID).contract


def _ids(prefix: str, nums: np.ndarray, width: int) -> np.ndarray:
    return np.array([f"{prefix}{k:0{width}d}" for k in nums.tolist()], dtype=object)


def synthetic(c: Contract, n_lines: int, n_history: int, seed: int) -> tuple[Claim, History]:
    """A typed claim of `n_lines` lines (and its decisions) and `n_history` earlier lines."""
    rng = np.random.default_rng(seed)
    period = parse_period(PERIOD, c.claims)
    earlier = [period]
    for _ in range(EARLIER):
        earlier.insert(0, earlier[0].previous())
    earlier = earlier[:-1]
    outcomes = c.outcomes
    weights = np.array([30, 12, 8, 5, 9, 20, 4, 3, 6, 3], dtype=float)[:len(outcomes)]
    weights /= weights.sum()
    units = [355_000, 302_500, 247_500, 95_000]  # the payer split, as share units

    def price_of(o, day: int) -> tuple[int, int]:
        eff = max(d for d in o.prices if day_number(d) <= day)
        return day_number(eff), money.pence(o.prices[eff])

    def milestones(m: int, lo: int, hi: int, first_id: int) -> pd.DataFrame:
        """m milestones achieved between day lo and hi, with their four funders' parts."""
        oi = rng.choice(len(outcomes), m, p=weights)
        achieved = rng.integers(lo, hi, m)
        verified = achieved + np.minimum(5 + rng.lognormal(3.0, 0.8, m), 200).astype(np.int64)
        area = rng.integers(0, generate.AREAS, m)
        pf, price = zip(*(price_of(outcomes[i], a) for i, a in zip(oi.tolist(), achieved.tolist())))
        return pd.DataFrame({
            "milestone_id": _ids("M", first_id + np.arange(m), 8),
            "participant_id": _ids("N", rng.integers(1, 100_001, m), 7),
            "outcome": np.array([outcomes[i].id for i in oi.tolist()], dtype=object),
            "achieved_on": achieved, "verified_on": verified,
            "price_from": np.array(pf, dtype=np.int64), "price": np.array(price, dtype=np.int64),
            "area": area})

    def lines_of(ms: pd.DataFrame, label: str, kind: str, first_line: int,
                 reverses: np.ndarray | None = None) -> pd.DataFrame:
        """Four lines per milestone (central, its area's local authority, health body, JCP)."""
        m = len(ms)
        parts = money.split_array(ms["price"].to_numpy(), units)           # (m, 4)
        capped = np.zeros_like(parts)
        hit = rng.random(m) < 0.04  # a local authority near its cap: part of its share withheld
        capped[hit, 1] = parts[hit, 1] // 3
        area = ms["area"].to_numpy()
        funders = np.stack([np.full(m, "central", dtype=object),
                            np.array([f"la-{a:02d}" for a in area.tolist()], dtype=object),
                            np.array([f"nhs-{a % generate.HEALTH:02d}" for a in area.tolist()],
                                     dtype=object),
                            np.array([f"jcp-{a % generate.JCP}" for a in area.tolist()],
                                     dtype=object)], axis=1)
        rep = lambda col: np.repeat(ms[col].to_numpy(), 4)  # noqa: E731
        amount = (parts - capped).ravel()
        cap = np.where(capped.ravel() > 0, "funder", "").astype(object)
        sign = -1 if kind == "reversal" else 1
        ref = rep("milestone_id").astype(object)
        refs = np.array(["E" + x[1:] for x in ref.tolist()], dtype=object)
        odd = rng.random(len(refs)) < 0.001  # evidence references that look like formulas
        refs[odd] = np.array(["=HYPERLINK(\"http://x\",\"y\")", "+44 20 7946 0000", "-1",
                              "@SUM(A1)"], dtype=object)[rng.integers(0, 4, int(odd.sum()))]
        k = 4 * m
        return pd.DataFrame({
            "line_id": _ids(f"{label}-", first_line + np.arange(k), 6),
            "period": np.full(k, label, dtype=object), "kind": np.full(k, kind, dtype=object),
            "milestone_id": ref, "participant_id": rep("participant_id"),
            "outcome": rep("outcome"), "achieved_on": rep("achieved_on"),
            "verified_on": rep("verified_on"),
            "evidence_ref": refs, "price_from": rep("price_from"), "price": rep("price"),
            "funder": funders.ravel(), "share": np.tile(np.array(units, dtype=np.int64), m),
            "amount": sign * amount, "capped": capped.ravel() if sign > 0 else 0 * amount,
            "cap": cap if sign > 0 else np.full(k, "", dtype=object),
            "late": np.repeat(rng.random(m) < 0.1, 4),
            "reverses": reverses if reverses is not None else np.full(k, "", dtype=object)})

    # earlier claims: payments only, spread over EARLIER periods
    per = max(n_history // 4 // len(earlier), 1) if n_history else 0
    frames, next_id = [], 1
    for p in earlier:
        if not per:
            break
        ms = milestones(per, day_number(p.start) - 200, day_number(p.end) - 10, next_id)
        next_id += per
        frames.append(lines_of(ms, p.label, "payment", 1))
    hist = (pd.concat(frames, ignore_index=True)[list(LEDGER_COLUMNS)] if frames
            else History.empty().lines)
    history = History(tuple(p.label for p in earlier), hist)

    # this claim: about 3% of its milestones reverse an earlier payment, half of those re-rated
    m_total = max(n_lines // 4, 1)
    hist_ms = hist.drop_duplicates("milestone_id")
    n_rev = min(int(m_total * 0.03), len(hist_ms))
    rev_ms = hist_ms.iloc[np.sort(rng.choice(len(hist_ms), n_rev, replace=False))] if n_rev \
        else hist_ms.iloc[0:0]
    n_rerated = n_rev // 2
    rerated = set(rev_ms["milestone_id"].iloc[:n_rerated])
    n_new = max(m_total - n_rev - n_rerated, 0)
    new = milestones(n_new, day_number(period.start) - 250, day_number(period.end) - 5, next_id)
    # reversal lines: the earlier lines, negated, pointing at them
    old = hist[hist["milestone_id"].isin(set(rev_ms["milestone_id"]))]
    blocks = []
    for mid, g in old.groupby("milestone_id", sort=True):
        r = g.copy()
        r["kind"], r["period"], r["reverses"] = "reversal", PERIOD, g["line_id"].to_numpy()
        r["amount"], r["capped"], r["cap"] = -g["amount"], 0, ""
        blocks.append(r)
        if mid in rerated:  # paid again on new terms (a changed split: the same parts here)
            p = g.copy()
            p["period"], p["reverses"] = PERIOD, ""
            blocks.append(p)
    corrections = pd.concat(blocks, ignore_index=True) if blocks else hist.iloc[0:0]
    pay = lines_of(new, PERIOD, "payment", 1)
    lines = pd.concat([corrections, pay], ignore_index=True)
    lines = lines.sort_values(["milestone_id", "kind"], ascending=[True, False], kind="stable")
    lines = lines.iloc[:n_lines].reset_index(drop=True)
    lines["line_id"] = _ids(f"{PERIOD}-", np.arange(1, len(lines) + 1), 6)
    lines["period"] = PERIOD
    for col in ("achieved_on", "verified_on", "price_from", "price", "share", "amount", "capped"):
        lines[col] = lines[col].astype(np.int64)
    lines["late"] = lines["late"].astype(bool)
    lines = lines[list(LEDGER_COLUMNS)]

    # decisions: one per milestone row looked at
    by_ms = lines.groupby("milestone_id", sort=True).agg(
        participant_id=("participant_id", "first"), outcome=("outcome", "first"),
        amount=("amount", "sum"), capped=("capped", "sum"),
        reversal=("kind", lambda k: (k == "reversal").any()),
        payment=("kind", lambda k: (k == "payment").any()))
    dec = pd.DataFrame({"milestone_id": by_ms.index.to_numpy(dtype=object),
                        "participant_id": by_ms["participant_id"].to_numpy(),
                        "outcome": by_ms["outcome"].to_numpy()})
    dec["decision"] = np.where(by_ms["reversal"] & by_ms["payment"], "re-rated",
                               np.where(by_ms["reversal"], "reversed", "paid"))
    dec["reason"] = np.where(dec["decision"] == "re-rated", "changed-split",
                             np.where(dec["decision"] == "reversed", "withdrawn",
                                      np.where(by_ms["capped"].to_numpy() > 0, "funder-cap", "")))
    dec["detail"] = np.where(dec["decision"] == "paid", "",
                             np.where(dec["decision"] == "re-rated",
                                      "the split changed; the earlier payment is reversed and "
                                      "paid again on the new terms",
                                      "withdrawn by the provider; the earlier payment is "
                                      "reversed"))
    dec["amount"], dec["capped"] = by_ms["amount"].to_numpy(), by_ms["capped"].to_numpy()
    earlier_ms = hist_ms[~hist_ms["milestone_id"].isin(set(rev_ms["milestone_id"]))]
    paid_earlier = pd.DataFrame({
        "milestone_id": earlier_ms["milestone_id"].to_numpy(),
        "participant_id": earlier_ms["participant_id"].to_numpy(),
        "outcome": earlier_ms["outcome"].to_numpy(), "decision": "paid-earlier", "reason": "",
        "detail": ["paid in " + p + "; unchanged" for p in earlier_ms["period"].tolist()],
        "amount": 0, "capped": 0})
    n_pending, n_rejected = max(n_lines // 40, 1), max(n_lines // 60, 1)
    waiting = milestones(n_pending + n_rejected, day_number(period.start) - 200,
                         day_number(period.end), next_id + n_new + 1)
    kinds = rng.integers(0, len(REJECTED), n_rejected)
    late = rng.random(n_pending) < 0.2
    unpaid = pd.DataFrame({
        "milestone_id": waiting["milestone_id"].to_numpy(),
        "participant_id": waiting["participant_id"].to_numpy(),
        "outcome": waiting["outcome"].to_numpy(),
        "decision": ["pending-verification"] * n_pending + ["rejected"] * n_rejected,
        "reason": [("verified-after-period" if x else "status-pending") for x in late]
        + [REJECTED[k][0] for k in kinds.tolist()],
        "detail": [("verified on 2025-04-09, after the period" if x else
                    "status is pending, not verified") for x in late]
        + [REJECTED[k][1].format(d=period.end) for k in kinds.tolist()],
        "amount": 0, "capped": 0})
    decisions = pd.concat([dec, paid_earlier, unpaid], ignore_index=True)
    decisions.insert(2, "milestone", decisions["outcome"].map(
        {o.id: o.milestone for o in outcomes}))
    decisions = decisions.sort_values("milestone_id", kind="stable").reset_index(drop=True)
    for col in ("amount", "capped"):
        decisions[col] = decisions[col].astype(np.int64)
    return make_claim(period, len(earlier) + 1, lines, decisions), history


def make_claim(period, number: int, lines: pd.DataFrame, decisions: pd.DataFrame) -> Claim:
    """A `Claim` of these frames (the engine keeps them as frames or as `Cols` columns)."""
    if "line_cols" in {f.name for f in dataclasses.fields(Claim)}:
        from sib.reconcile import Cols
        return Claim(period, number, Cols.of(lines), Cols.of(decisions), len(decisions))
    return Claim(period, number, lines, decisions, len(decisions))


def header(claim: Claim) -> wb.Header:
    return wb.Header(prepared_at=datetime(2025, 4, 7, 9, 30, tzinfo=timezone.utc),
                     ledger_sha256=hashlib.sha256(b"bench").hexdigest(),
                     files_sha256={"decisions.csv": "0" * 64,
                                   "inputs/contract.yaml": "1" * 64},
                     previous_manifest_sha256="2" * 64, sib_version="bench",
                     command=f"sib claim --contract {generate.CID} --period {claim.period}",
                     sources={"contract": f"contracts/{generate.CID}.yaml"})


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def parts(c: Contract, claim: Claim, history: History, h: wb.Header) -> dict:
    """The parts of the workbooks, as zero-argument functions (private entry points of
    sib/workbook.py for claim.xlsx and the statements, which claim_workbooks calls in turn)."""
    state = {}

    def prepare():
        state["d"] = wb._ClaimData.of(c, claim, history, h)

    def claim_book():
        return {"claim.xlsx": wb._claim_book(state["d"], wb.LINES_PER_SHEET)}

    def statements():
        present = set(claim.lines["funder"])
        return {f"statements/{f.id}.xlsx": wb._statement_book(state["d"], f.id,
                                                              wb.LINES_PER_SHEET)
                for f in c.funders if f.id in present}

    return {"prepare": prepare,
            "Lines": lambda: {"lines.xlsx": wb.lines_workbook(c, claim, history, h)},
            "claim.xlsx": claim_book, "statements": statements}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--history", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--profile", choices=("lines", "claim", "statements"),
                    help="print the cProfile top list of that part instead of timing all")
    ap.add_argument("--top", type=int, default=25, help="rows of the profile (default 25)")
    ap.add_argument("--save", type=Path, help="also write the workbooks into this folder")
    a = ap.parse_args()

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        c = contract(Path(tmp))
    t = time.perf_counter()
    claim, history = synthetic(c, a.lines, a.history, a.seed)
    h = header(claim)
    n = len(claim.lines)
    counts = claim.decisions["decision"].value_counts().to_dict()
    print(f"synthetic claim {claim.number}, {claim.period}: {n:,} lines "
          f"({int((claim.lines['kind'] == 'reversal').sum()):,} reversals), "
          f"{claim.lines['funder'].nunique()} funders, {len(c.outcomes)} outcomes, "
          f"{len(claim.decisions):,} decisions {counts}, {len(history.lines):,} earlier lines "
          f"({time.perf_counter() - t:.1f} s to make; peak memory so far {peak_mib():.0f} MiB)")
    steps = parts(c, claim, history, h)
    if a.profile:
        steps["prepare"]()
        fn = {"lines": steps["Lines"], "claim": steps["claim.xlsx"],
              "statements": steps["statements"]}[a.profile]
        prof = cProfile.Profile()
        prof.enable()
        fn()
        prof.disable()
        st = pstats.Stats(prof)
        st.sort_stats("tottime").print_stats(a.top)
        st.sort_stats("cumulative").print_stats(a.top)
        return

    print(f"{'part':<12}{'wall s':>9}{'CPU s':>9}{'lines/s (CPU)':>16}{'files':>7}{'MiB':>8}")
    total_w = total_c = 0.0
    for name, fn in steps.items():
        out, wall, cpu = timed(fn)
        out = out or {}
        size = sum(len(b) for b in out.values()) / 2**20
        rate = f"{n / cpu:,.0f}" if name != "prepare" and cpu else ""
        print(f"{name:<12}{wall:9.2f}{cpu:9.2f}{rate:>16}{len(out):>7}{size:8.1f}")
        if name != "Lines":
            total_w, total_c = total_w + wall, total_c + cpu
        if a.save:
            for k, data in out.items():
                p = a.save / k
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
    print(f"{'all books':<12}{total_w:9.2f}{total_c:9.2f}{n / total_c:16,.0f}"
          "   (prepare + claim.xlsx + statements: what `sib claim` adds)")
    print(f"peak memory {peak_mib():.0f} MiB")
    _, wall, cpu = timed(steps["Lines"])
    verdict = "meets" if max(wall, cpu) < TARGET_S else "misses"
    print(f"Lines sheet of {n:,} lines: {wall:.2f} s wall, {cpu:.2f} s CPU (second run) — "
          f"{verdict} the {TARGET_S:.0f} s target")


if __name__ == "__main__":
    main()
