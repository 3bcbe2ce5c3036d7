"""Benchmark `sib audit` over a whole history (run by hand; tests never time anything).

    python bench/audit.py [WORKSPACE] [--workers N] [--no-workbooks]

WORKSPACE defaults to /tmp/sib-bench/national-100000-40: the national programme of
bench/generate.py with all 40 quarterly claims issued (with workbooks). Make it with

    python bench/generate.py /tmp/sib-bench/national-100000 --participants 100000
    cp -al /tmp/sib-bench/national-100000 /tmp/sib-bench/national-100000-40
    sib claim --period 2024-Q4 -w /tmp/sib-bench/national-100000-40

(`cp -al` links the 39 issued claims instead of copying them: issued files are never
edited, so the copy costs no disk.) Prints the machine, the claims and lines audited, the
wall time against the 120 s target, the CPU time of this process and of its worker
processes (steadier than the wall clock on a shared machine), and the peak memory of each.
`--no-workbooks` leaves the workbook read-back out, to see what it costs.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sib import audit as audit_mod  # noqa: E402

TARGET_S = 120.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workspace", nargs="?", type=Path,
                    default=Path("/tmp/sib-bench/national-100000-40"))
    ap.add_argument("--workers", type=int, default=None,
                    help="worker processes (default: one per CPU, as sib audit)")
    ap.add_argument("--no-workbooks", action="store_true",
                    help="leave the workbook read-back out")
    a = ap.parse_args()
    if not (a.workspace / "ledgers").is_dir():
        sys.exit(f"{a.workspace} is not a workspace: see this script's docstring")
    if a.no_workbooks:
        audit_mod.workbook_differences = lambda name, raw, lines: []
    load1, load5, _ = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPU(s), load average {load1:.1f} (1 min) "
          f"{load5:.1f} (5 min)")
    t = time.perf_counter()
    report = audit_mod.audit(a.workspace, workers=a.workers)
    wall = time.perf_counter() - t
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = 0
    for c in report.claims:
        path = a.workspace / c.folder / "ledger.csv"
        if path.exists():
            with open(path, "rb") as fh:
                lines += sum(1 for _ in fh) - 1
    workers = a.workers or audit_mod.cpu_count()
    print(f"audited: {len(report.claims)} claims, {lines:,} ledger lines, "
          f"{'no workbooks' if a.no_workbooks else 'workbooks read back'}, {workers} worker(s); "
          f"{len(report.findings)} finding(s)")
    print(f"wall: {wall:.1f} s ({'under' if wall < TARGET_S else 'OVER'} the {TARGET_S:.0f} s "
          "target)")
    print(f"CPU: {me.ru_utime + me.ru_stime:.1f} s this process, "
          f"{kids.ru_utime + kids.ru_stime:.1f} s its workers")
    print(f"peak memory: {me.ru_maxrss / 2**20:.2f} GiB this process, "
          f"{kids.ru_maxrss / 2**20:.2f} GiB the largest worker")


if __name__ == "__main__":
    main()
