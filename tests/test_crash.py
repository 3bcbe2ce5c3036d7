"""Crash safety: `sib claim` killed with SIGKILL at every moment of its run, and disks that
are read-only or full (issue: hardening, items 3 and 5).

After every kill the period is either absent or complete (byte for byte the claim an
uninterrupted run writes), `sib audit` finds nothing, the earlier claim is untouched, and
the next `sib claim` succeeds and writes exactly that claim. After every disk failure the
message is one clear line, nothing is half-written, and the claim succeeds once the disk is
fixed.

How the kills are placed, without timing anything in an assertion:

- `write-K`: the child process (a real `sib claim`, run through `sib.cli:main` like the
  console script) carries a Python audit hook that sends itself SIGKILL just before its
  K-th filesystem change inside the workspace (mkdir, open for writing, flock, rename,
  rmtree). The tiny claim makes 23 changes (lock, temporary folder, ledger.csv,
  decisions.csv, claim.xlsx, two statements, inputs/, manifest.json, rename, unlock):
  each is a trial, plus one run to the end (24; were there more changes, 24 spread over
  them, both sides of the rename always among them). Deterministic, and each trial knows
  exactly what it must find: nothing before the rename, the whole claim after it.
- `event-F`: the same hook kills at fraction F of all the audit events the run raises
  (imports, reading the contract and evidence, computing), so the kills are spread over
  the whole run, not only its end.
- `delay-F`: the test sends SIGKILL from outside after F times the duration of a
  calibration run (measured once, used only to place the kills, never asserted on).
- `twice-K`: killed at change K, then the next run killed while it removes the leftover
  temporary folder, then a run that completes.

50 kill trials in all (24 + 12 + 10 + 4), each a real process.

The disk failures: a real read-only bind mount and a real full tmpfs when the tests run as
root (in CI they may not be, so those skip), and, always, an in-process simulation that
fails each write of the claim in turn with ENOSPC or EROFS. (chmod cannot make a folder
read-only for root, which ignores permissions: hence the mount or the simulation.)
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

import sib.issue
from sib.audit import audit
from sib.cli import cli
from test_fuzz import CID, PERIOD, build_base

EPOCH = "1650000000"  # pins manifest.json's issued_at, so every run writes the same bytes
ENV = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, PYTHONHASHSEED="0")
SIB = Path(sys.executable).parent / "sib"  # the console script, sib = sib.cli:main

# A real `sib claim`, with an audit hook that kills it with SIGKILL before its KILL_AT-th
# audit event or its KILL_AT_WRITE-th filesystem change, or (EVENT_LOG) lists the changes.
CHILD = textwrap.dedent("""\
    import os, signal, sys
    KILL_AT = int(os.environ.get("KILL_AT", "0"))
    KILL_AT_WRITE = int(os.environ.get("KILL_AT_WRITE", "0"))
    LOG = os.environ.get("EVENT_LOG")
    WS = os.environ["WORKSPACE"]  # changes elsewhere (a library's temporary files) are not counted
    CHANGES = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.unlink", "os.rmdir",
               "shutil.rmtree", "os.truncate", "fcntl.flock", "os.chmod", "os.symlink"}
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT
    events = 0
    changes = []

    def is_change(event, args):
        if event == "fcntl.flock":
            return True
        if not str(args[0]).startswith(WS):
            return False
        if event in CHANGES:
            return True
        if event == "open":
            mode, flags = args[1], args[2]
            return (isinstance(flags, int) and bool(flags & WRITE)) or (
                isinstance(mode, str) and bool(set(mode) & set("wxa+")))
        return False

    def hook(event, args):
        global events
        events += 1
        if events == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        if is_change(event, args):
            changes.append(f"{event} {args[0]}")
            if len(changes) == KILL_AT_WRITE:
                os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)
    from sib.cli import main
    try:
        main()
    finally:
        if LOG:
            with open(LOG, "w") as f:
                f.write("\\n".join([str(events)] + changes) + "\\n")
    """)


def child(ws: Path, **env: str) -> subprocess.CompletedProcess:
    ws = ws.resolve()
    return subprocess.run([sys.executable, "-c", CHILD, "claim", "--period", PERIOD,
                           "-w", str(ws)], env=dict(ENV, WORKSPACE=str(ws), **env),
                          capture_output=True, text=True)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@dataclass(frozen=True)
class Plan:
    """What an uninterrupted claim does: the base to copy, its audit events and changes
    (in order), where the rename is, how long it took, and the files it wrote."""

    base: Path
    events: int
    changes: tuple[str, ...]
    rename: int          # 1-based position of the rename among the changes
    first_tmp: int       # 1-based position of the first change inside the temporary folder
    seconds: float
    claim: dict[str, bytes]
    earlier: dict[str, bytes]


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> Plan:
    root = tmp_path_factory.mktemp("crash")
    base = build_base(root / "base")
    ws = root / "calibration"
    shutil.copytree(base, ws)
    log = root / "events.txt"
    started = time.perf_counter()
    done = child(ws, EVENT_LOG=str(log))
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    events, *changes = log.read_text().splitlines()
    rename = next(i for i, c in enumerate(changes, 1) if c.startswith("os.rename"))
    first_tmp = next(i for i, c in enumerate(changes, 1) if "/.tmp-" in c)
    claim = files(ws / "ledgers" / CID / PERIOD)
    assert not audit(ws, CID).findings  # the claim every interrupted run must end up with
    return Plan(base, int(events), tuple(changes), rename, first_tmp, seconds, claim,
                files(base / "ledgers" / CID / "2022-Q1"))


def fresh(plan: Plan, tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(plan.base, ws)
    return ws


def check_after_kill(plan: Plan, ws: Path) -> str:
    """The state a kill left must be consistent; then the next claim must complete it.
    Returns what the kill left: 'absent' or 'complete'."""
    root = ws / "ledgers" / CID
    folder = root / PERIOD
    state = "complete" if folder.exists() else "absent"
    if folder.exists():
        assert files(folder) == plan.claim  # the whole claim, exactly, or nothing
    assert files(root / "2022-Q1") == plan.earlier
    report = audit(ws, CID)
    assert not report.findings, [str(p) for p in report.findings]
    assert len(report.claims) == (2 if state == "complete" else 1)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        mp.setattr(sib.issue, "LOCK_WAIT_SECONDS", 0.0)  # the OS released the dead lock
        result = CliRunner().invoke(cli, ["claim", "--period", PERIOD, "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert ("already issued, unchanged" in result.output) == (state == "complete")
    # exactly the claim an uninterrupted run writes (which passes audit: the plan's guard)
    assert files(folder) == plan.claim
    assert files(root / "2022-Q1") == plan.earlier
    assert not list(root.glob(".tmp-*"))  # the killed run's leftovers are gone
    return state


# --- kills at every filesystem change ----------------------------------------------------------

WRITE_TRIALS = 24  # the tiny claim makes 23 changes: each is a trial, and one runs to the end


def write_points(plan: Plan) -> list[int]:
    """WRITE_TRIALS kill points over changes 1 … n+1 (n+1: no kill): all of them while
    there are few enough, else spread evenly, always with both sides of the rename."""
    n = len(plan.changes)
    if n + 1 <= WRITE_TRIALS:
        points = list(range(1, n + 2))
    else:
        must = {1, plan.first_tmp, plan.first_tmp + 1, plan.rename, plan.rename + 1, n + 1}
        spread = {1 + round(i * n / (WRITE_TRIALS - len(must) - 1))
                  for i in range(WRITE_TRIALS - len(must))}
        points = sorted(must | spread)
    return (points * WRITE_TRIALS)[:WRITE_TRIALS] if points else []


def test_the_plan_sees_the_whole_write(plan: Plan) -> None:
    """Guards the trials below: the hook sees the lock, every file and the rename."""
    joined = "\n".join(plan.changes)
    assert "fcntl.flock" in joined and "/.lock" in joined
    required = {"ledger.csv", "decisions.csv", "manifest.json", "inputs/contract.yaml",
                "inputs/participants.csv", "inputs/milestones.csv"}
    assert required <= set(plan.claim)
    for name in plan.claim:
        assert f"/{name}" in joined, name
    assert plan.first_tmp < plan.rename < len(plan.changes)
    points = write_points(plan)
    assert {plan.first_tmp, plan.rename, plan.rename + 1, len(plan.changes) + 1} <= set(points)


@pytest.mark.parametrize("i", range(WRITE_TRIALS), ids=lambda i: f"write-{i + 1}")
def test_killed_before_a_filesystem_change(plan: Plan, tmp_path: Path, i: int) -> None:
    k = write_points(plan)[i]
    ws = fresh(plan, tmp_path)
    run = child(ws, KILL_AT_WRITE=str(k))
    if k <= len(plan.changes):
        assert run.returncode == -signal.SIGKILL, run.stderr
        # before the rename nothing is issued; from the rename on, all of it
        expected = "complete" if k > plan.rename else "absent"
        leftovers = list((ws / "ledgers" / CID).glob(".tmp-*"))
        assert bool(leftovers) == (plan.first_tmp < k <= plan.rename)
    else:
        assert run.returncode == 0, run.stderr
        expected = "complete"
    assert check_after_kill(plan, ws) == expected


# --- kills spread over the whole run -------------------------------------------------------------

FRACTIONS = [i / 12 for i in range(1, 12)] + [0.995]


@pytest.mark.parametrize("f", FRACTIONS, ids=lambda f: f"event-{f:.3f}")
def test_killed_at_a_fraction_of_the_run(plan: Plan, tmp_path: Path, f: float) -> None:
    ws = fresh(plan, tmp_path)
    run = child(ws, KILL_AT=str(max(1, int(plan.events * f))))
    assert run.returncode in (-signal.SIGKILL, 0), run.stderr
    check_after_kill(plan, ws)


DELAYS = [i / 8 for i in range(0, 10)]  # 0 … 1.125 times a whole run


@pytest.mark.parametrize("f", DELAYS, ids=lambda f: f"delay-{f:.3f}")
def test_killed_from_outside_after_a_delay(plan: Plan, tmp_path: Path, f: float) -> None:
    ws = fresh(plan, tmp_path)
    command = [str(SIB)] if SIB.exists() else [sys.executable, "-c",
                                               "from sib.cli import main; main()"]
    proc = subprocess.Popen([*command, "claim", "--period", PERIOD, "-w", str(ws)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=plan.seconds * f)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode in (-signal.SIGKILL, 0), err
    assert b"Traceback" not in err
    check_after_kill(plan, ws)


# --- killed twice: the second run dies while it cleans up after the first ------------------------

@pytest.mark.parametrize("k", [0, 1, 2, 3], ids=lambda k: f"twice-{k}")
def test_killed_twice(plan: Plan, tmp_path: Path, k: int) -> None:
    ws = fresh(plan, tmp_path)
    # first kill: inside the temporary folder, at its first, middle or last change
    inside = list(range(plan.first_tmp + 1, plan.rename + 1))
    first = inside[min(k * len(inside) // 3, len(inside) - 1)]
    assert child(ws, KILL_AT_WRITE=str(first)).returncode == -signal.SIGKILL
    assert list((ws / "ledgers" / CID).glob(".tmp-*"))
    # second run: find where it removes the leftover, and kill it just there
    log = tmp_path / "second.txt"
    probe = tmp_path / "probe"
    shutil.copytree(ws, probe)
    assert child(probe, EVENT_LOG=str(log)).returncode == 0
    _, *changes = log.read_text().splitlines()
    rmtree = next(i for i, c in enumerate(changes, 1) if c.startswith("shutil.rmtree"))
    assert child(ws, KILL_AT_WRITE=str(rmtree + 1)).returncode == -signal.SIGKILL
    assert check_after_kill(plan, ws) == "absent"


# --- disks that are read-only or full: simulated in-process (always) -----------------------------

def claim_in_process(ws: Path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        return CliRunner().invoke(cli, ["claim", "--period", PERIOD, "-w", str(ws)])


class FailingDisk:
    """Makes the `n`-th file write, folder creation or rename of sib.issue fail with `err`."""

    def __init__(self, mp: pytest.MonkeyPatch, n: int, err: int):
        self.n, self.err, self.calls = n, err, 0
        write, mkdir, rename = sib.issue._write_file, Path.mkdir, os.rename

        def step(name):
            self.calls += 1
            if self.calls == self.n:
                raise OSError(self.err, os.strerror(self.err), str(name))

        def failing_write(path, data):
            step(path)
            write(path, data)

        def failing_mkdir(path, *a, **k):
            if ".tmp-" in str(path):
                step(path)
            return mkdir(path, *a, **k)

        def failing_rename(src, dst, *a, **k):
            if ".tmp-" in str(src):
                step(dst)
            return rename(src, dst, *a, **k)

        mp.setattr(sib.issue, "_write_file", failing_write)
        mp.setattr(Path, "mkdir", failing_mkdir)
        mp.setattr(os, "rename", failing_rename)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO],
                         ids=errno.errorcode.get)
def test_a_disk_failing_at_every_write_leaves_nothing_half_written(plan: Plan, tmp_path: Path,
                                                                    err: int) -> None:
    """A full disk (ENOSPC) fails each step of the write in turn; the other errors, which
    take the same path, fail every third step (the first and the rename included)."""
    ws = fresh(plan, tmp_path)
    root = ws / "ledgers" / CID
    before = files(ws)
    n, failed = 1, 0
    while True:
        with pytest.MonkeyPatch.context() as mp:
            disk = FailingDisk(mp, n, err)
            result = claim_in_process(ws)
        if disk.calls < n:  # every step has failed once: this run had nothing left to fail
            assert result.exit_code == 0, result.output
            break
        steps = disk.calls
        if err != errno.ENOSPC and n % 3 != 1 and n != steps:
            n += 1
            continue
        failed += 1
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert result.stderr.count("\n") == 1  # one line
        assert f"sib: cannot write the claim into ledgers/{CID}: {os.strerror(err)}; nothing " \
               "was issued" in result.stderr
        assert not (root / PERIOD).exists() and not list(root.glob(".tmp-*"))
        assert files(ws) == before
        n += 1
    assert n >= 9 and failed >= 4  # folders, files and the rename, each failed in turn
    assert files(root / PERIOD) == plan.claim
    assert not audit(ws, CID).findings


# --- real read-only and full file systems (root only) --------------------------------------------

def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _can_mount(tmp_path: Path) -> bool:
    probe = tmp_path / "probe-mount"
    probe.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe))
    except (OSError, subprocess.CalledProcessError):
        return False
    subprocess.run(["umount", str(probe)], check=True)
    return True


@pytest.fixture
def mounts(tmp_path: Path):
    if os.geteuid() != 0 or not _can_mount(tmp_path):
        pytest.skip("needs root and mount(8) to make a real read-only or full file system")
    made: list[Path] = []
    yield made
    for m in reversed(made):
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


def test_a_read_only_ledgers_folder(plan: Plan, tmp_path: Path, mounts: list) -> None:
    ws = fresh(plan, tmp_path)
    ledgers = ws / "ledgers"
    _mount("--bind", str(ledgers), str(ledgers))
    mounts.append(ledgers)
    _mount("-o", "remount,bind,ro", str(ledgers))
    before = files(ws)
    result = claim_in_process(ws)
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1
    assert "Read-only file system" in result.stderr and "Traceback" not in result.output
    assert files(ws) == before
    subprocess.run(["umount", str(ledgers)], check=True)
    mounts.remove(ledgers)
    assert claim_in_process(ws).exit_code == 0
    assert files(ledgers / CID / PERIOD) == plan.claim
    assert not audit(ws, CID).findings


def test_a_full_ledgers_disk(plan: Plan, tmp_path: Path, mounts: list) -> None:
    """A real tmpfs of 1 MiB holding the ledgers, filled so that only `room` bytes are
    free, for room from nothing to more than the claim needs."""
    need = sum(len(b) for b in plan.claim.values())
    results = []
    for room in [0, 1024, 4096, 8192, 12288, 16384, 24576, 32768, 65536, 262144]:
        ws = tmp_path / f"ws-{room}"
        shutil.copytree(plan.base, ws)
        ledgers = ws / "ledgers"
        saved = tmp_path / f"saved-{room}"
        shutil.move(str(ledgers), saved)
        ledgers.mkdir()
        _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(ledgers))
        mounts.append(ledgers)
        shutil.copytree(saved, ledgers, dirs_exist_ok=True)
        (ledgers / CID / ".lock").touch()  # as after the earlier claim
        filler = ledgers / "filler"
        try:  # fill the disk, then give `room` bytes back
            with open(filler, "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
        with open(filler, "r+b") as f:
            f.truncate(max(0, filler.stat().st_size - room))
        before = files(ws)
        result = claim_in_process(ws)
        results.append(result.exit_code)
        assert "Traceback" not in result.output
        if result.exit_code == 1:
            assert result.stderr.count("\n") == 1, result.stderr
            assert "No space left on device" in result.stderr, result.stderr
            assert files(ws) == before  # nothing half-written
            filler.unlink()  # the disk is fixed: the same claim now succeeds
            assert claim_in_process(ws).exit_code == 0
        assert files(ledgers / CID / PERIOD) == plan.claim
        assert not audit(ws, CID).findings
    assert 1 in results and 0 in results, (results, need)  # both sides of the edge were met
