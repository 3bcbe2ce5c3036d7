"""Benchmark one claim of a large workspace (run by hand; tests never time anything).

    python bench/claim.py [--participants 100000] [--workdir /tmp/sib-bench]

Builds (once, then reuses) a national-scale workspace with bench/generate.py — 40
quarterly claims, the first 39 issued — and measures claim 40:

  floor        pandas alone reading the claim's input files (both evidence files and every
               earlier ledger.csv) as text
  read         sib reading and validating the evidence and the earlier ledgers (wall and
               CPU time, as the floor; --profile-read N adds a cProfile top list of it)
  engine       reconcile.compute_claim (wall and CPU time)
  render       ledger.csv / decisions.csv as text
  whole claim  `sib claim` without the workbooks: issue.issue_claim(workbooks=False), which
               reads, computes, renders, hashes and writes the claim folder
  workbooks    claim.xlsx and a statement per funder: issue_claim as `sib claim` runs it,
               less the whole claim without them
  peak memory  the process's maximum resident set size
  disk         bytes per claim of the 39 issued claims, as found and with their inputs/
               stored as sib now stores them (CSV copies of issue.COMPRESS_FROM bytes or
               more gzip-compressed), and of claim 40 as just issued

and prints engine/floor and total/floor, then the engine alone at about 10k, 100k and 1M
milestones — one claim of the last quarter over the whole evidence with no history, so
that every milestone is judged and paid — to show how cost grows.
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


def _cpu() -> float:
    """This process's CPU time: steadier than the wall clock on a shared, loaded machine."""
    return time.process_time()


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
    c = _cpu()
    out = {"period": period.label, "floor": floor(ws, [p.label for p in issued])}
    out["floor_cpu"] = _cpu() - c
    t, c = _t(), _cpu()
    ev = read_evidence(ws, lc)
    history = read_history(root, issued, "ledgers")
    out["read"], out["read_cpu"] = _t() - t, _cpu() - c
    t, c = _t(), _cpu()
    claim = compute_claim(lc.contract, ev, history, period)
    out["engine"], out["engine_cpu"] = _t() - t, _cpu() - c
    t = _t()
    render_ledger(claim.lines)
    render_decisions(claim.decisions)
    out["render"] = _t() - t
    out["history"] = len(history.lines)
    del ev, history
    t, c = _t(), _cpu()
    issue_claim(ws, generate.CID, period.label, workbooks=False)
    out["issue"], out["issue_cpu"] = _t() - t, _cpu() - c
    shutil.rmtree(root / period.label)
    t, c = _t(), _cpu()
    prep, _done = issue_claim(ws, generate.CID, period.label)
    out["books"], out["books_cpu"] = _t() - t - out["issue"], _cpu() - c - out["issue_cpu"]
    out["statements"] = sum(1 for n in prep.files if n.startswith("statements/"))
    out["rows"], out["lines"] = claim.rows_in, len(claim.lines)
    out["claim_bytes"] = _bytes_under(root / period.label)
    out["claim_inputs"] = _bytes_under(root / period.label / "inputs")
    shutil.rmtree(root / period.label)
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _bytes_under(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def disk(root: Path) -> dict:
    """Bytes of the issued claims under ledgers/<id>/: in all, in inputs/ as found, and in
    inputs/ as sib stores them now (each plain copy put through issue.stored_input)."""
    from sib.issue import COMPRESS_FROM, stored_input

    out = {"claims": 0, "all": 0, "inputs": 0, "inputs_now": 0}
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        out["claims"] += 1
        out["all"] += _bytes_under(folder)
        for f in sorted((folder / "inputs").iterdir()):
            raw = f.read_bytes()
            out["inputs"] += len(raw)
            out["inputs_now"] += len(stored_input(f"inputs/{f.name}", raw, COMPRESS_FROM)[1])
    return out


def profile_read(ws: Path, top: int) -> str:
    """A cProfile top list (by own time) of the read phase: read_evidence + read_history,
    run once first so that imports and caches are warm."""
    import cProfile
    import io
    import pstats

    from sib.evidence import read_evidence
    from sib.ledger import issued_periods, read_history
    from sib.workspace import find_contract

    lc = find_contract(ws, generate.CID)
    root = ws / "ledgers" / generate.CID
    issued = issued_periods(root, "quarter")

    def read() -> None:
        read_evidence(ws, lc)
        read_history(root, issued, "ledgers")

    read()
    prof = cProfile.Profile()
    prof.runcall(read)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def scaling(participants: list[int]) -> list[tuple[int, int, int, float, float]]:
    """Engine time for one claim over the whole evidence (no history) at several sizes:
    (participants, milestone rows, lines, wall s, CPU s). The claim is of the last quarter,
    so that every milestone verified by then is judged and paid."""
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
            t, c = _t(), _cpu()
            claim = compute_claim(lc.contract, ev, History.empty(),
                                  parse_period("2025-Q2", "quarter"))
            rows.append((n, ev.rows_in, len(claim.lines), _t() - t, _cpu() - c))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", type=int, default=100_000)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "sib-bench")
    ap.add_argument("--scaling", default="2000,20000,200000",
                    help="participant counts for the scaling table (about 5 milestones each)")
    ap.add_argument("--profile-read", type=int, default=0, metavar="N",
                    help="also print the top N functions of a cProfile of the read phase")
    a = ap.parse_args()
    ws = a.workdir / f"national-{a.participants}"
    if not (ws / "ledgers" / generate.CID).is_dir():
        print(f"building {ws} (once) …", file=sys.stderr)
        generate.build(ws, participants=a.participants)
    r = measure(ws)
    total = r["issue"]  # issue_claim reads, computes, renders and writes the claim again
    print(f"claim {r['period']} of {ws}: {r['rows']:,} milestone rows, {r['history']:,} earlier "
          f"ledger lines, {r['lines']:,} new lines")
    print(f"  floor (pandas reads the input files)  {r['floor']:7.2f} s   (CPU {r['floor_cpu']:.2f} s)")
    print(f"  sib reads and validates them          {r['read']:7.2f} s   read/floor   "
          f"{r['read'] / r['floor']:.1f}×   (CPU {r['read_cpu']:.2f} s, "
          f"{r['read_cpu'] / r['floor_cpu']:.1f}×)")
    print(f"  engine                                {r['engine']:7.2f} s   engine/floor "
          f"{r['engine'] / r['floor']:.1f}×   (CPU {r['engine_cpu']:.2f} s, "
          f"{r['engine_cpu'] / r['floor_cpu']:.1f}×)")
    print(f"  render ledger.csv + decisions.csv     {r['render']:7.2f} s")
    print(f"  whole claim (sib claim, no workbook)  {total:7.2f} s   total/floor  "
          f"{total / r['floor']:.1f}×   (CPU {r['issue_cpu']:.2f} s, "
          f"{r['issue_cpu'] / r['floor_cpu']:.1f}×)")
    print(f"  workbooks (claim.xlsx + {r['statements']} statements) {r['books']:5.2f} s   "
          f"(CPU {r['books_cpu']:.2f} s; what `sib claim` adds)")
    print(f"  peak memory                           {r['peak_mib']:7.0f} MiB")
    d = disk(ws / "ledgers" / generate.CID)
    n, mib = max(d["claims"], 1), 2**20
    now = d["all"] - d["inputs"] + d["inputs_now"]
    print(f"  ledgers on disk, as issued            {d['all'] / mib:7.0f} MiB for {n} claims "
          f"({d['all'] / n / mib:.1f} MiB per claim, inputs/ {d['inputs'] / n / mib:.1f} MiB of it)")
    print(f"  … with inputs/ stored as sib now does {now / mib:7.0f} MiB for {n} claims "
          f"({now / n / mib:.1f} MiB per claim, inputs/ {d['inputs_now'] / n / mib:.2f} MiB of it)")
    print(f"  claim {r['period']} as issued now           {r['claim_bytes'] / mib:7.1f} MiB "
          f"(inputs/ {r['claim_inputs'] / mib:.2f} MiB; workbooks included)")
    if a.profile_read:
        print(f"read phase, cProfile top {a.profile_read} by own time:")
        print(profile_read(ws, a.profile_read))
    print("engine alone, one claim of 2025-Q2 over the whole evidence, no history:")
    for n, rows, lines, secs, cpu in scaling([int(x) for x in a.scaling.split(",")]):
        print(f"  {n:>8,} participants  {rows:>10,} milestones  {lines:>10,} lines  "
              f"{secs:7.2f} s (CPU {cpu:.2f} s, {cpu / rows * 1e6:.1f} µs per milestone)")


if __name__ == "__main__":
    main()
