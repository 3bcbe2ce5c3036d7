"""Issuing a claim: the period checks, the lock, and the atomic write of a claim folder.

After reconcile in the flow (and before cli). `prepare_claim` reads the contract, evidence
and earlier ledgers of a workspace and computes claim P with the engine; `issue_claim`
writes it to `ledgers/<contract-id>/<P>/` exactly as ../shared/spec/ledger.md describes:
into a temporary folder beside the final one, manifest last, then renamed into place, all
under a workspace lock. Re-issuing a period compares instead of writing. The only clock
read in sib is here (`issued_at`, which honours SOURCE_DATE_EPOCH for reproducible
builds). Must not compute money (that is reconcile's) or print (that is the CLI's).

inputs/ keeps the evidence files the claim read. A CSV copy of COMPRESS_FROM bytes or more
is stored gzip-compressed as `inputs/<name>.csv.gz` (`gzip_bytes`: one gzip member with no
file name, mtime 0 and a fixed level, so the same bytes always give the same file), and
the manifest's `compressed` records the size and SHA-256 of the file as read, which audit
and explain check when they read the copy back (`expand_gzip`, audit.read_input). Smaller
files, the contract and .xlsx files (already zip archives) are copied as they are.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import struct
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from sib import __version__, money
from sib.contract import LoadedContract
from sib.evidence import Evidence, read_evidence
from sib.ledger import MANIFEST_FORMAT, History, issued_periods, read_history, \
    render_decisions, render_ledger
from sib.period import Period, PeriodError, parse_period, period_containing
from sib.problems import ProblemsFound, SibError
from sib.reconcile import Claim, compute_claim, totals
from sib.workspace import find_contract, shown_path
from sib.yamlsafe import quoted

LOCK_WAIT_SECONDS = 10.0
# an evidence CSV of at least this many bytes is kept compressed in inputs/ (read when a
# claim is prepared, so tests may lower it); the shipped example's files are far smaller
COMPRESS_FROM = 1 << 20
COMPRESSED_SUFFIX = ".gz"
GZIP_LEVEL = 6  # evidence CSV 7× smaller at ~15 ms per MB; level 9 gains 6% at 4× the time
MAX_EXPANDED = 1 << 30    # a compressed copy said to hold more than this is refused unread
# the gzip header (RFC 1952 §2.3): deflate, no flags (so no file name), mtime 0, no extra
# flags, OS 255 ("unknown") — fixed, so the file depends only on the bytes and the level
_GZIP_HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF])


@dataclass(frozen=True)
class Prepared:
    """A computed claim with everything needed to write it, and where it goes."""

    lc: LoadedContract
    claim: Claim
    evidence: Evidence
    folder: Path               # ledgers/<id>/<period>
    shown_folder: str
    files: dict[str, bytes]    # relative path → exact bytes (without manifest.json)
    manifest: dict
    already_issued: bool
    skipped_invalid: int = 0
    notices: tuple = field(default_factory=tuple)
    cumulative_by_funder: dict = field(default_factory=dict)  # pence paid to date, this claim included


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gzip_bytes(data: bytes) -> bytes:
    """`data` as one deterministic gzip member (see _GZIP_HEADER) that gunzip reads."""
    z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = z.compress(data) + z.flush()
    return _GZIP_HEADER + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def expand_gzip(data: bytes, size: int) -> tuple[bytes | None, str]:
    """The `size` bytes a gzip file holds; (None, why) when it is damaged, truncated, or
    holds anything but exactly one gzip member of `size` bytes. Never inflates more than
    size + 1 bytes, so a forged copy cannot exhaust memory."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # a gzip wrapper: checks its CRC-32 and length
    try:
        out = d.decompress(data, size + 1)
    except zlib.error as e:
        return None, f"is not a readable gzip file ({e})"
    if len(out) > size:
        return None, f"holds more than the {size:,} bytes the manifest records"
    if not d.eof:  # all input used (the limit was not reached) and no end of stream
        return None, (f"is truncated: its gzip stream has no end (it gives {len(out):,} of "
                      f"the {size:,} bytes the manifest records)")
    if d.unused_data:
        return None, f"has {len(d.unused_data):,} byte(s) after the end of its gzip stream"
    if len(out) != size:
        return None, f"holds {len(out):,} bytes, but the manifest records {size:,}"
    return out, ""


def original_name(name: str) -> str:
    """inputs/milestones.csv for inputs/milestones.csv.gz (any other name is itself)."""
    return name[: -len(COMPRESSED_SUFFIX)] if name.endswith(COMPRESSED_SUFFIX) else name


def stored_input(name: str, raw: bytes, compress_from: int) -> tuple[str, bytes, dict | None]:
    """How evidence file `name` (inputs/<table>.csv or .xlsx) is kept in the claim folder:
    (name, raw, None) as it is, or for a CSV of at least `compress_from` bytes
    (name + '.gz', its gzip_bytes, {"sha256", "size"} of raw) for the manifest."""
    if len(raw) < compress_from or not name.endswith(".csv"):
        return name, raw, None
    return name + COMPRESSED_SUFFIX, gzip_bytes(raw), {"sha256": sha256(raw), "size": len(raw)}


def _issued_at() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        t = datetime.fromtimestamp(int(epoch), tz=timezone.utc)
    else:
        t = datetime.now(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def ledger_dir(workspace: Path, contract_id: str) -> Path:
    """ledgers/<id>, refusing one that leads outside the workspace (a symlink)."""
    base = workspace / "ledgers"
    folder = base / contract_id
    for p in (base, folder):
        if p.is_symlink():
            raise SibError(f"{shown_path(p, workspace)} is a symbolic link; sib writes ledgers "
                           "only inside the workspace, so replace it with a real folder")
    return folder


def check_period(lc: LoadedContract, label: str, issued: list[Period]) -> Period:
    """The period to claim, checked against the term and the claims already issued."""
    c = lc.contract
    try:
        period = parse_period(label, c.claims)
    except PeriodError as e:  # the message quotes the label: keep it one printable line
        raise SibError(f"--period: {quoted(e, 300)[1:-1]}") from None
    first = period_containing(c.term.service_start, c.claims)
    if period < first:
        raise SibError(f"{period} is before the contract's first claim period {first} (the "
                       f"service starts on {c.term.service_start}); claims run from {first}")
    claims_end = c.term.claims_end
    if claims_end is not None and period.start > claims_end:
        raise SibError(f"{period} starts after term.claims_end {claims_end} "
                       f"({lc.where('term', 'claims_end')}); no claim can be made for it")
    expected = first
    for p in issued:
        if p != expected:
            raise SibError(f"the issued claims have a gap: {expected} is missing before {p}; "
                           "run `sib audit` (issued claims are never deleted)")
        expected = p.next()
    if period in issued:
        return period
    if period != expected:
        raise SibError(f"{period} cannot be claimed yet: claims go in order without gaps and "
                       f"the next one due is {expected}; claim {expected} first")
    return period


def prepare_claim(workspace: Path, contract_id: str | None, label: str,
                  participants: Path | None = None, milestones: Path | None = None,
                  skip_invalid: bool = False, workbooks: bool = True) -> Prepared:
    """Compute claim `label` from the workspace's files (reads only; writes nothing).

    workbooks: also build claim.xlsx and the funder statements (not for an issued period,
    whose re-run compares ledger.csv and decisions.csv only, nor for a dry run).
    """
    lc = find_contract(workspace, contract_id)
    c = lc.contract
    folder_root = ledger_dir(workspace, c.id)
    issued = issued_periods(folder_root, c.claims)
    period = check_period(lc, label, issued)
    evidence = read_evidence(workspace, lc, participants, milestones)
    if evidence.problems and (evidence.file_problems or not skip_invalid):
        raise ProblemsFound(evidence.problems)
    before = [p for p in issued if p < period]
    shown_root = shown_path(folder_root, workspace)
    history = read_history(folder_root, before, shown_root) if before else History.empty()
    claim = compute_claim(c, evidence, history, period)
    if claim.problems:
        raise ProblemsFound(claim.problems)

    contract_bytes = lc.doc.raw  # the bytes the contract was loaded from, not a second read
    files: dict[str, bytes] = {
        "ledger.csv": render_ledger(claim.lines).encode("utf-8"),
        "decisions.csv": render_decisions(claim.decisions).encode("utf-8"),
        "inputs/contract.yaml": contract_bytes,
    }
    compressed: dict[str, dict] = {}
    for name in ("participants", "milestones"):
        src = evidence.sources[name]
        stored, data, original = stored_input(f"inputs/{name}{src.suffix}", src.raw,
                                              COMPRESS_FROM)
        files[stored] = data
        if original is not None:
            compressed[stored] = original
    previous = None
    if before:
        prev_manifest = folder_root / before[-1].label / "manifest.json"
        try:
            previous = sha256(prev_manifest.read_bytes())
        except OSError as e:
            raise SibError(f"{shown_path(prev_manifest, workspace)} cannot be read: "
                           f"{e.strerror or e}; run `sib audit`") from None
    issued_at = _issued_at()
    if workbooks and period not in issued:
        from sib.workbook import Header, claim_workbooks

        given = {"participants": participants, "milestones": milestones}
        command = (f"sib claim --contract {c.id} --period {period.label}"
                   + (" --skip-invalid" if skip_invalid else "")
                   + "".join(f" --{n} {evidence.sources[n].shown}" for n in given if given[n]))
        header = Header(
            prepared_at=datetime.strptime(issued_at, "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=timezone.utc),
            ledger_sha256=sha256(files["ledger.csv"]),
            files_sha256={n: sha256(d) for n, d in sorted(files.items())},
            previous_manifest_sha256=previous, sib_version=__version__, command=command,
            sources={"contract": lc.shown,
                     **{n: evidence.sources[n].shown for n in ("participants", "milestones")}})
        files.update(claim_workbooks(c, claim, history, header))
    t = totals(claim.lines, c)
    manifest = {
        "format": MANIFEST_FORMAT,
        "contract": c.id,
        "period": period.label,
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
        "claim_number": claim.number,
        "issued_at": issued_at,
        "sib_version": __version__,
        "previous_manifest_sha256": previous,
        "files": {name: sha256(data) for name, data in sorted(files.items())},
        "totals": {
            "amount": money.fmt_amount(t["amount"]),
            "capped": money.fmt_amount(t["capped"]),
            "by_funder": {k: money.fmt_amount(v) for k, v in t["by_funder"].items()},
            "by_kind": {k: money.fmt_amount(v) for k, v in t["by_kind"].items()},
        },
        "decisions": claim.counts(),
        "rows_in": claim.rows_in,
        # how the claim was computed, so that `sib audit` can replay it from inputs/
        "options": {"skip_invalid": bool(skip_invalid)},
        "sources": {"contract": lc.shown,
                    **{name: evidence.sources[name].shown for name in ("participants", "milestones")}},
    }
    if compressed:  # only then, so that a claim with no compressed copy reads as before
        manifest["compressed"] = compressed
    folder = folder_root / period.label
    both = pd.concat([history.lines[["funder", "amount"]], claim.lines[["funder", "amount"]]])
    cumulative = {k: int(v) for k, v in both.groupby("funder")["amount"].sum().items()}
    return Prepared(lc, claim, evidence, folder, f"{shown_root}/{period.label}", files, manifest,
                    period in issued, skipped_invalid=len(evidence.invalid),
                    notices=tuple(evidence.notices), cumulative_by_funder=cumulative)


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def compare_issued(prep: Prepared) -> list[str]:
    """What differs between a recomputed claim and the one issued ([] when identical)."""
    out: list[str] = []
    for name in ("ledger.csv", "decisions.csv"):
        path = prep.folder / name
        try:
            old = path.read_bytes()
        except OSError as e:
            out.append(f"{prep.shown_folder}/{name} cannot be read ({e.strerror or e})")
            continue
        new = prep.files[name]
        if old == new:
            continue
        a, b = old.decode("utf-8", "replace").splitlines(), new.decode("utf-8").splitlines()
        first = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        out.append(f"{name}: {len(a) - 1} rows issued, {len(b) - 1} now; first difference at "
                   f"line {first + 1}:\n    issued: {a[first] if first < len(a) else '(none)'}\n"
                   f"    now:    {b[first] if first < len(b) else '(none)'}")
    return out


class _Lock:
    """An exclusive lock on a workspace's ledgers (released by the OS if the process dies)."""

    def __init__(self, folder: Path, shown: str, wait: float | None = None):
        self.path = folder / ".lock"
        self.shown = shown
        # read when locking, not when defining: LOCK_WAIT_SECONDS may be set (by tests)
        self.wait = LOCK_WAIT_SECONDS if wait is None else wait
        self.fd: int | None = None

    def __enter__(self) -> "_Lock":
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise SibError(f"cannot create the lock file {self.shown}/.lock: "
                           f"{e.strerror or e}") from None
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    raise SibError(f"another sib claim is writing to {self.shown} (it holds "
                                   f"{self.shown}/.lock); waited {self.wait:.0f} s — try again "
                                   "when it has finished") from None
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True)
class Issued:
    """What `issue_claim` did: 'issued', 'unchanged' or 'dry-run', and where."""

    outcome: str
    folder: str


def issue_claim(workspace: Path, contract_id: str | None, label: str,
                participants: Path | None = None, milestones: Path | None = None,
                skip_invalid: bool = False, dry_run: bool = False, workbooks: bool = True
                ) -> tuple[Prepared, Issued]:
    """Compute claim `label` and, unless `dry_run`, write it atomically under the lock.

    workbooks=False leaves out claim.xlsx and the statements (`sib claim` always writes
    them; bench/claim.py times a claim with and without them)."""
    if dry_run:
        prep = prepare_claim(workspace, contract_id, label, participants, milestones, skip_invalid,
                             workbooks=False)
        return prep, Issued("dry-run", prep.shown_folder)
    lc = find_contract(workspace, contract_id)
    root = ledger_dir(workspace, lc.contract.id)
    shown_root = shown_path(root, workspace)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SibError(f"cannot create {shown_root}: {e.strerror or e}") from None
    with _Lock(root, shown_root):
        for stale in root.glob(".tmp-*"):  # left by a claim that was killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
        prep = prepare_claim(workspace, contract_id, label, participants, milestones, skip_invalid,
                             workbooks)
        if prep.already_issued:
            diffs = compare_issued(prep)
            if diffs:
                raise SibError(
                    f"{prep.claim.period} is already issued and the evidence or contract now "
                    "gives a different claim. Issued claims are never rewritten; the "
                    "differences will flow into the next claim as corrections.\n  "
                    + "\n  ".join(diffs))
            return prep, Issued("unchanged", prep.shown_folder)
        tmp = root / f".tmp-{prep.claim.period.label}-{os.getpid()}"
        try:
            tmp.mkdir()
            for name, data in prep.files.items():
                path = tmp / name
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_file(path, data)
            _fsync_dir(tmp / "inputs")
            _fsync_dir(tmp / "statements")
            _write_file(tmp / "manifest.json", manifest_bytes(prep.manifest))
            _fsync_dir(tmp)
            os.rename(tmp, prep.folder)
            _fsync_dir(root)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SibError(f"cannot write the claim into {shown_root}: {e.strerror or e}; "
                           "nothing was issued (fix the folder and run the claim again)") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return prep, Issued("issued", prep.shown_folder)
