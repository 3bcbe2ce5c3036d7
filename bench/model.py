"""Benchmark of `sib model`: simulated histories of the West London example through the engine.

    python bench/model.py                      # 1,000 histories on every CPU (the target: < 60 s)
    python bench/model.py --runs 100 --workers 1
    python bench/model.py --full               # also time the whole `run_model` (with the
                                               # break-even search the example's costs ask for)
    python bench/model.py --profile 3          # where the engine spends its time (cProfile
                                               # of 3 histories, in process), and its cost per
                                               # claim against the claim's size

Prints the machine (CPUs, load), the histories, the claims, the wall time, the time per
history and per claim, whether 1,000 histories would take under 60 seconds, and the CPU
time (this process and its workers), which other load on the machine does not inflate. The
histories are exactly those `sib model models/west-london-ips.yaml` claims (same seeds).
Not a test: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from sib import model as model_mod  # noqa: E402
from sib.model import Runner, make_plan, run_model, simulate  # noqa: E402
from sib.model_format import load_assumptions  # noqa: E402

TARGET_S = 60.0
TARGET_RUNS = 1000


def load():
    la, problems = load_assumptions(ROOT / "models" / "west-london-ips.yaml", ROOT,
                                    "models/west-london-ips.yaml")
    if la is None:
        sys.exit("\n".join(map(str, problems)))
    return la


def machine() -> str:
    load1, load5, _ = os.getloadavg()
    return f"{os.cpu_count()} CPU(s), load average {load1:.1f} (1 min) {load5:.1f} (5 min)"


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the worker processes)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def histories(la, runs: int, workers: int) -> None:
    plan = make_plan(la)
    claims = len(plan.periods)
    print(f"machine: {machine()}")
    print(f"West London example: {runs} histories × {claims} claims on {workers} worker(s)")
    t0 = time.perf_counter()
    cpu0 = cpu_seconds()
    with Runner(plan, la.assumptions.seed, workers, None) as runner:
        results = runner.run(runs)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    per = wall / runs
    total = np.stack([r.pay for r in results]).sum(axis=(1, 2))
    print(f"wall {wall:.1f} s: {per * 1000:.0f} ms per history, "
          f"{per * 1000 / claims * workers:.1f} ms per claim per worker")
    print(f"mean total paid £{int(total.sum()) / len(total) / 100:,.2f} (a check that the "
          "work was done)")
    print(f"CPU {cpu:.1f} s in all: {cpu / runs * 1000:.0f} ms of CPU per history, "
          f"{cpu / runs / claims * 1000:.1f} ms per claim")
    at = per * TARGET_RUNS
    verdict = "meets" if at < TARGET_S else "misses"
    print(f"1,000 histories at this rate: {at:.0f} s — {verdict} the {TARGET_S:.0f} s target")
    idle = cpu / runs * TARGET_RUNS / min(workers, os.cpu_count() or 1)
    print(f"1,000 histories on an otherwise idle machine (CPU ÷ {min(workers, os.cpu_count() or 1)}"
          f" worker(s)): about {idle:.0f} s")


def full(la, runs: int, workers: int) -> None:
    t0 = time.perf_counter()
    r = run_model(la, runs, None, workers)
    wall = time.perf_counter() - t0
    extra = ""
    if r.costs is not None and r.costs.breakeven:
        b = r.costs.breakeven
        extra = f" (with sensitivity and break-even on {b['runs']} runs each)"
    print(f"run_model, {runs} runs{extra}: {wall:.1f} s")


def profile(la, n: int) -> None:
    """cProfile of n histories in process; claim_after's callees; cost against size."""
    from sib import reconcile

    plan = make_plan(la)
    sizes = []
    real = reconcile.claim_after

    def timed(c, ev, hist, number, period, **kw):
        t = time.perf_counter()
        out = real(c, ev, hist, number, period, **kw)
        sizes.append((len(ev.milestones), len(hist), time.perf_counter() - t))
        return out

    model_mod.claim_after = timed
    try:
        for k in range(n):  # untimed pass first: cost against size, without the profiler
            rng = np.random.default_rng(np.random.SeedSequence(la.assumptions.seed,
                                                               spawn_key=(k,)))
            pf, mf = simulate(plan, rng)
            model_mod.claim_history(plan, pf, mf)
    finally:
        model_mod.claim_after = real
    arr = np.array(sizes)
    print(f"claim_after (the engine) without the profiler: {len(arr)} claims, mean "
          f"{arr[:, 2].mean() * 1000:.1f} ms")
    print("  milestone rows   history lines   claims   mean ms")
    edges = [0, 1, 200, 500, 1000, 1500, 2000, 10**9]
    for lo, hi in zip(edges, edges[1:]):
        sel = (arr[:, 0] >= lo) & (arr[:, 0] < hi)
        if sel.any():
            print(f"  {lo:>5}–{min(hi, 99999) - 1:<8}{int(arr[sel, 1].mean()):>14}"
                  f"{int(sel.sum()):>9}{arr[sel, 2].mean() * 1000:>10.1f}")

    prof = cProfile.Profile()
    prof.enable()
    for k in range(n):
        model_mod.run_one(plan, k, la.assumptions.seed)
    prof.disable()
    st = pstats.Stats(prof)
    cc = next(f for f in st.stats if f[2] == "claim_after")
    total = st.stats[cc][3]
    print(f"\ncProfile of {n} histories: claim_after {total:.2f} s cumulative "
          f"(profiler overhead included; shares are what matter)")
    for name in ("claim_after", "eligibility"):
        fn = next(f for f in st.stats if f[2] == name and "reconcile" in f[0])
        own = st.stats[fn][2]
        print(f"  inside {name} ({st.stats[fn][3] / total * 100:.0f}% of claim_after; "
              f"{own / total * 100:.0f}% in its own lines):")
        rows = []
        for callee, (_cc, _nc, _tt, _ct, callers) in st.stats.items():
            if fn in callers:
                c_cc, c_nc, c_tt, c_ct = callers[fn]
                rows.append((c_ct, c_nc, callee))
        for ct, ncalls, callee in sorted(rows, reverse=True)[:12]:
            where = f"{Path(callee[0]).name}:{callee[1]}({callee[2]})"
            print(f"    {ct / total * 100:5.1f}%  {ncalls:>6} calls  {where}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=TARGET_RUNS)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--full", action="store_true", help="also time run_model as a whole")
    ap.add_argument("--profile", type=int, metavar="N", help="profile N histories instead")
    args = ap.parse_args()
    la = load()
    if args.profile:
        profile(la, args.profile)
        return
    histories(la, args.runs, args.workers)
    if args.full:
        full(la, args.runs, args.workers)


if __name__ == "__main__":
    main()
