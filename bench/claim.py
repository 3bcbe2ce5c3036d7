"""Benchmark one claim of a large workspace (run by hand; tests never time anything).

    python bench/claim.py [--participants 100000] [--workdir /tmp/sib-bench]

Builds (once, then reuses) a national-scale workspace with bench/generate.py — 40
quarterly claims, the first 39 issued — and measures claim 40:

  floor        pandas alone reading the claim's input files (both evidence files and every
               earlier ledger.csv) as text
  read         sib reading and validating the evidence and the earlier ledgers
  engine       reconcile.compute_claim
  write        rendering ledger.csv / decisions.csv and writing the claim folder
  peak memory  the process's maximum resident set size

and prints engine/floor and total/floor, then the engine alone at 10k, 100k and 1M
milestones (one claim over the whole evidence, no history) to show how cost grows.
"""

from __future__ import annotations

import argparse
import glob
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate  # noqa: E402  (bench/generate.py)


def _t() -> float:
    return time.perf_counter()


def floor(ws: Path, before: list[str]) -> float:
    t = _t()
    for f in sorted(glob.glob(str(ws / "evidence" / generate.CID / "*.csv"))):
        pd.read_csv(f, dtype=str, keep_default_na=False)
    for p in before:
        pd.read_csv(ws / "ledgers" / generate.CID / p / "ledger.csv", dtype=str,
                    keep_default_na=False)
    return _t() - t


def measure(ws: Path) -> dict:
    from sib.evidence import read_evidence
    from sib.issue import issue_claim
    from sib.ledger import issued_periods, read_history, render_decisions, render_ledger
    from sib.reconcile import compute_claim
    from sib.workspace import find_contract

    lc = find_contract(ws, generate.CID)
    root = ws / "ledgers" / generate.CID
    issued = issued_periods(root, "quarter")
    period = issued[-1].next()
    out = {"period": period.label, "floor": floor(ws, [p.label for p in issued])}
    t = _t()
    ev = read_evidence(ws, lc)
    history = read_history(root, issued, "ledgers")
    out["read"] = _t() - t
    t = _t()
    claim = compute_claim(lc.contract, ev, history, period)
    out["engine"] = _t() - t
    t = _t()
    render_ledger(claim.lines)
    render_decisions(claim.decisions)
    out["render"] = _t() - t
    t = _t()
    prep, _done = issue_claim(ws, generate.CID, period.label)
    out["issue"] = _t() - t
    out["rows"], out["lines"], out["history"] = claim.rows_in, len(claim.lines), len(history.lines)
    shutil.rmtree(root / period.label)
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def scaling(participants: list[int]) -> list[tuple[int, int, float]]:
    """Engine time for one claim over the whole evidence (no history) at several sizes."""
    from sib.evidence import read_evidence
    from sib.ledger import History
    from sib.period import parse_period
    from sib.reconcile import compute_claim
    from sib.workspace import find_contract

    rows = []
    for n in participants:
        with tempfile.TemporaryDirectory() as d:
            ws = Path(d)
            generate.build(ws, participants=n, quarters=40, issue=0, verbose=False)
            # evidence as it stands at the end of the programme: everything reported
            p, ms = generate.simulate(n, 40, 2015)
            parts, miles = generate.export(p, ms, generate.date(2025, 6, 30))
            (ws / "evidence" / generate.CID / "participants.csv").write_text(parts)
            (ws / "evidence" / generate.CID / "milestones.csv").write_text(miles)
            lc = find_contract(ws, generate.CID)
            ev = read_evidence(ws, lc)
            t = _t()
            compute_claim(lc.contract, ev, History.empty(), parse_period("2015-Q1", "quarter"))
            rows.append((n, ev.rows_in, _t() - t))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", type=int, default=100_000)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "sib-bench")
    ap.add_argument("--scaling", default="1000,10000,100000",
                    help="participant counts for the scaling table (about 10 milestones each)")
    a = ap.parse_args()
    ws = a.workdir / f"national-{a.participants}"
    if not (ws / "ledgers" / generate.CID).is_dir():
        print(f"building {ws} (once) …", file=sys.stderr)
        generate.build(ws, participants=a.participants)
    r = measure(ws)
    total = r["issue"]  # issue_claim reads, computes, renders and writes the claim again
    print(f"claim {r['period']} of {ws}: {r['rows']:,} milestone rows, {r['history']:,} earlier "
          f"ledger lines, {r['lines']:,} new lines")
    print(f"  floor (pandas reads the input files)  {r['floor']:7.2f} s")
    print(f"  sib reads and validates them          {r['read']:7.2f} s")
    print(f"  engine                                {r['engine']:7.2f} s   engine/floor {r['engine'] / r['floor']:.1f}×")
    print(f"  render ledger.csv + decisions.csv     {r['render']:7.2f} s")
    print(f"  whole claim (sib claim, no workbook)  {total:7.2f} s   total/floor  {total / r['floor']:.1f}×")
    print(f"  peak memory                           {r['peak_mib']:7.0f} MiB")
    du = sum(f.stat().st_size for f in (ws / "ledgers").rglob("*") if f.is_file())
    print(f"  ledgers on disk                       {du / 2**20:7.0f} MiB for 39 claims "
          f"({du / 39 / 2**20:.1f} MiB per claim)")
    print("engine alone, one claim over the whole evidence, no history:")
    for n, rows, secs in scaling([int(x) for x in a.scaling.split(",")]):
        print(f"  {n:>8,} participants  {rows:>10,} milestones  {secs:7.2f} s  "
              f"({secs / rows * 1e6:.1f} µs per milestone)")


if __name__ == "__main__":
    main()
