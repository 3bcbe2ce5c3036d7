"""Pure jobs run in forked child processes, so that independent work uses every core.

A helper of audit.py (the replays of a contract's claims are independent once the earlier
ledgers are read): `Jobs.submit(job)` starts `job()` in a child forked from this process,
which therefore sees everything this process holds at that moment without copying it, and
`Pending.result()` is its return value. At most `workers` children run at once; with one
worker, or where the system cannot fork (Windows), a job simply runs when submitted.

A job must be a pure function of what it can see: it must not print, write files or change
state this process relies on (a child's changes are lost with it). Its result is pickled
back through a pipe. If the child fails in any way (an exception, a crash, a result that
cannot be pickled), the job is run again here, so that the caller sees exactly what running
it inline would give — including the same exception. Must not decide anything itself.
"""

from __future__ import annotations

import os
import pickle
import select
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def can_fork() -> bool:
    return hasattr(os, "fork")


class Pending(Generic[T]):
    """A submitted job: its result when asked for (waiting for its child if need be)."""

    def __init__(self, job: Callable[[], T], pid: int | None = None, fd: int | None = None):
        self._job, self._pid, self._fd = job, pid, fd
        self._done = pid is None
        self._value: T | None = None
        if pid is None:  # run inline, now
            self._value = job()
            self._job = None  # (what it read may be large: let it go)

    @property
    def running(self) -> bool:
        return not self._done

    def ready(self) -> bool:
        """Whether `result()` would not wait for the child to work (it has sent its result
        or ended)."""
        if self._done:
            return True
        return bool(select.select([self._fd], [], [], 0)[0])

    def result(self) -> T:
        if not self._done:
            self._done = True
            outcome = _collect(self._pid, self._fd)
            if outcome is not None and outcome[0] == "ok":
                self._value = outcome[1]
            else:  # the child failed: do it here, as inline would (same result or error)
                self._value = self._job()
            self._job = None
        return self._value  # type: ignore[return-value]


def _collect(pid: int, fd: int) -> tuple | None:
    """What child `pid` sent through `fd` (then reaped); None if it sent nothing usable."""
    try:
        with os.fdopen(fd, "rb") as fh:
            data = fh.read()
    finally:
        os.waitpid(pid, 0)
    try:
        outcome = pickle.loads(data)
    except Exception:  # noqa: BLE001 - a child that died mid-write
        return None
    return outcome if isinstance(outcome, tuple) and len(outcome) == 2 else None


class Jobs:
    """Submit jobs; at most `workers` forked children run at once."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers)) if can_fork() else 1
        self._running: list[Pending] = []

    def submit(self, job: Callable[[], T]) -> Pending[T]:
        if self.workers <= 1:
            return Pending(job)
        self._running = [p for p in self._running if p.running]
        while len(self._running) >= self.workers:
            self._running.pop(0).result()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: run, send, and leave without running this process's exits
            code = 0
            try:
                os.close(r)
                try:
                    data = pickle.dumps(("ok", job()), protocol=pickle.HIGHEST_PROTOCOL)
                except BaseException as e:  # noqa: BLE001 - reported; the parent reruns it
                    data = pickle.dumps(("error", f"{type(e).__name__}: {e}"))
                with os.fdopen(w, "wb") as fh:
                    fh.write(data)
            except BaseException:  # noqa: BLE001 - the parent reruns the job
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        p = Pending(job, pid, r)
        self._running.append(p)
        return p
