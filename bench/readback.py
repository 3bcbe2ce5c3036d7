"""Benchmark of `sib audit`'s workbook read-back (run by hand; tests never time anything).

    python bench/readback.py                              # /tmp/sib-bench/national-100000
    python bench/readback.py WORKSPACE [--contract ID] [--reference 2] [--claims 5]

For every issued claim of the workspace's contract (folders under ledgers/<id>/ holding a
ledger.csv), reads ledger.csv as `sib audit` does (sib.ledger.parse_ledger, untimed) and
times `sib.audit.workbook_differences` over claim.xlsx and each statements/<funder>.xlsx:
per claim and in total, wall time and CPU time (time.process_time: other load on the
machine does not inflate it), the rows read back (data rows of the sheets with a header)
and the findings. With `--reference N`, also times the openpyxl read-back it replaced
(tests/test_workbook_readback.py keeps it as the tests' oracle) on the first N claims and
checks that both give the same findings, workbook by workbook (exit status 1 if not).
The target (issue: the national audit's 120 s) is the whole read-back of the national
benchmark's 39 claims in at most 20 s on one core.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from sib import xlsx_read  # noqa: E402
from sib.audit import _header_columns, _Ledger, workbook_differences  # noqa: E402
from sib.ledger import parse_ledger  # noqa: E402

TARGET_S = 20.0
DEFAULT = Path("/tmp/sib-bench/national-100000")


def books_of(folder: Path) -> list[str]:
    names = ["claim.xlsx"] if (folder / "claim.xlsx").is_file() else []
    return names + sorted(f"statements/{p.name}" for p in (folder / "statements").glob("*.xlsx"))


def rows_read(raw: bytes) -> int:
    """Data rows of the sheets with a header row (read again, untimed, to count them)."""
    return sum(len(t.rows) for t in xlsx_read.read_tables(raw, _header_columns).tables)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--contract", help="contract id (default: the only one under ledgers/)")
    ap.add_argument("--reference", type=int, default=0, metavar="N",
                    help="also time the openpyxl read-back on the first N claims and compare")
    ap.add_argument("--claims", type=int, default=0, metavar="N", help="only the first N claims")
    args = ap.parse_args()
    ledgers = args.workspace / "ledgers"
    if not ledgers.is_dir():
        print(f"{ledgers} not found: generate the benchmark workspace first (bench/generate.py)")
        return 2
    cid = args.contract or next(p.name for p in sorted(ledgers.iterdir()) if p.is_dir())
    claims = sorted(p for p in (ledgers / cid).iterdir() if (p / "ledger.csv").is_file())
    if args.claims:
        claims = claims[:args.claims]
    print(f"{args.workspace} · contract {cid} · {len(claims)} claims · "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"{'claim':9} {'lines':>8} {'books':>5} {'MB read':>8} {'rows':>9} {'found':>5} "
          f"{'wall s':>7} {'cpu s':>7}")
    total_wall = total_cpu = 0.0
    total_rows = total_found = 0
    same = True
    reference = None
    if args.reference:
        from test_workbook_readback import reference_workbook_differences as reference
    ref_wall = ref_cpu = new_wall = new_cpu = 0.0
    for k, folder in enumerate(claims):
        lines, _problems = parse_ledger((folder / "ledger.csv").read_text("utf-8"),
                                        f"{folder.name}/ledger.csv")
        books = [(name, (folder / name).read_bytes()) for name in books_of(folder)]
        wall, cpu = time.perf_counter(), time.process_time()
        ledger = _Ledger(lines)  # prepared once per claim, as audit._read_back does
        found = [workbook_differences(name, raw, lines, ledger) for name, raw in books]
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows = sum(rows_read(raw) for _name, raw in books)
        n_found = sum(len(f) for f in found)
        size = sum(len(raw) for _name, raw in books) / 1e6
        total_wall, total_cpu = total_wall + wall, total_cpu + cpu
        total_rows, total_found = total_rows + rows, total_found + n_found
        print(f"{folder.name:9} {len(lines):8,} {len(books):5} {size:8.1f} {rows:9,} "
              f"{n_found:5} {wall:7.2f} {cpu:7.2f}", flush=True)
        if reference is not None and k < args.reference:
            rw, rc = time.perf_counter(), time.process_time()
            expected = [reference(name, raw, lines) for name, raw in books]
            rw, rc = time.perf_counter() - rw, time.process_time() - rc
            ref_wall, ref_cpu, new_wall, new_cpu = ref_wall + rw, ref_cpu + rc, \
                new_wall + wall, new_cpu + cpu
            diff = [name for (name, _raw), a, b in zip(books, found, expected) if a != b]
            same = same and not diff
            print(f"{'':9} openpyxl read-back {rw:7.2f} s wall {rc:7.2f} s cpu: "
                  f"{'the same findings' if not diff else 'DIFFERENT findings: ' + ', '.join(diff)}",
                  flush=True)
    print(f"{'total':9} {'':8} {'':5} {'':8} {total_rows:9,} {total_found:5} "
          f"{total_wall:7.2f} {total_cpu:7.2f}   (target ≤ {TARGET_S:.0f} s: "
          f"{'met' if total_cpu <= TARGET_S else 'NOT met'})")
    if reference is not None:
        n = min(args.reference, len(claims))
        print(f"first {n} claims: openpyxl {ref_wall:.2f} s wall / {ref_cpu:.2f} s cpu, "
              f"now {new_wall:.2f} s wall / {new_cpu:.2f} s cpu "
              f"({ref_cpu / max(new_cpu, 1e-9):.0f}× less CPU); findings "
              f"{'identical' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
