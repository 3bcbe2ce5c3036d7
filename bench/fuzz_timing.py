"""How long the fuzzed and hostile inputs take (run by hand, never by tests).

    .venv/bin/python bench/fuzz_timing.py [--profile long|ci] [--top 10] [-- PYTEST_ARGS]

Runs tests/test_fuzz.py and tests/test_attacks.py under pytest with the chosen hypothesis
profile (default `long`: the 10,000 fuzz cases), timing every `sib` command they run
through click's CliRunner (`sib claim`, `sib check`, `sib audit`: the command's own work
in this process, without Python's start-up of about half a second). It prints, per test,
the commands run and the slowest, then the slowest commands overall and how many took
over the 5-second limit the hardening issue sets. The tests themselves never time
anything (house rule); this script is where the limit is measured.

Exit status: 0 when every command finished within the limit and pytest passed, else 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 5.0


class Timer:
    """A pytest plugin: times every CliRunner.invoke, keyed by the running test."""

    def __init__(self) -> None:
        self.current = "(outside a test)"
        self.runs: dict[str, list[tuple[float, str]]] = defaultdict(list)

    def pytest_configure(self, config) -> None:
        from click.testing import CliRunner

        original = CliRunner.invoke
        timer = self

        def timed(runner, cli, args=None, *a, **k):
            started = time.perf_counter()
            try:
                return original(runner, cli, args, *a, **k)
            finally:
                took = time.perf_counter() - started
                command = " ".join(str(x) for x in (args or [])[:1])
                timer.runs[timer.current].append((took, command))

        CliRunner.invoke = timed

    def pytest_runtest_setup(self, item) -> None:
        self.current = item.nodeid

    def pytest_runtest_teardown(self, item) -> None:
        self.current = "(outside a test)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="long", choices=["ci", "long"])
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    os.environ["HYPOTHESIS_PROFILE"] = args.profile  # before the tests import hypothesis
    os.chdir(ROOT)
    import pytest

    timer = Timer()
    started = time.perf_counter()
    code = pytest.main(["tests/test_fuzz.py", "tests/test_attacks.py", "-q",
                        "-p", "no:cacheprovider", *args.pytest_args], plugins=[timer])
    wall = time.perf_counter() - started

    print(f"\nprofile {args.profile}: {wall:.0f} s in all; pytest exit {int(code)}\n")
    print(f"{'test':<86} {'claims':>7} {'cmds':>6} {'slowest':>8}")
    every = []
    for test, runs in sorted(timer.runs.items()):
        claims = sum(1 for _, c in runs if c == "claim")
        slowest = max(t for t, _ in runs)
        every += [(t, c, test) for t, c in runs]
        print(f"{test[-86:]:<86} {claims:>7} {len(runs):>6} {slowest:>7.2f}s")
    fuzz = [r for t, r in timer.runs.items() if t.startswith("tests/test_fuzz.py")]
    fuzz_claims = sum(1 for runs in fuzz for _, c in runs if c == "claim")
    print(f"\nfuzz cases (claims run by tests/test_fuzz.py): {fuzz_claims}")
    print(f"commands timed: {len(every)}; over {LIMIT:.0f} s: "
          f"{sum(1 for t, _, _ in every if t > LIMIT)}")
    print(f"\nslowest {args.top}:")
    for t, c, test in sorted(every, reverse=True)[: args.top]:
        print(f"  {t:6.2f} s  sib {c:<6} {test}")
    over = any(t > LIMIT for t, _, _ in every)
    return 0 if code == 0 and not over else 1


if __name__ == "__main__":
    sys.exit(main())
