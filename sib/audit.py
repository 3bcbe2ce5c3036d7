"""`sib audit`: verify every issued claim of a contract; and reading issued claims back.

After issue.py in the flow (explain.py, report.py and cli.py come after it). For each claim
folder under `ledgers/<id>/`, in period order, `audit` checks what ledger.md § Audit asks:

  sequence    claims go in order without gaps, each in its own folder  missing-claim, misplaced-claim
  chain       each manifest names the hash of the one before           chain-broken
  files       every file hash in the manifest; nothing added; each     file-hash, file-missing,
              compressed inputs/ copy decompresses to the size and     file-unlisted, bad-input
              SHA-256 the manifest's `compressed` records
  replay      the claim recomputed from its inputs/ and the earlier    replay-mismatch, replay-failed
              ledgers by the same engine (`claim_after`) gives
              ledger.csv and decisions.csv byte for byte
  totals      the manifest's totals and counts are the lines' and      totals-mismatch, decision-mismatch
              the decisions'; decisions agree with the lines
  invariants  claim-rules.md's invariants, each at the line that       funder-cap-exceeded, … (INVARIANT_CODES)
              breaks it, judged against a running state of the
              earlier claims' lines (`_Running`) carried from claim
              to claim, so the audit is linear in the number of claims
  workbooks   claim.xlsx and statements/*.xlsx, when the claim has     workbook-mismatch
              them, read back and compared with the ledger

Every finding is a `Problem` located as `ledgers/<id>/<period>/<file>[:line]`. Files that
cannot be parsed give `bad-manifest` / `bad-ledger`; a folder that is no claim gives
`stray-entry`. Evidence in inputs/ is read through `read_input`, which decompresses a
`.gz` copy (issue.py stores large CSV files so) and checks it against the manifest, so the
replay and explain.py see the bytes the claim read, compressed or not.

The replay and the workbook read-back of a claim depend only on what was read before them,
so they are pure jobs (`_replay_claim`, `_read_back`) run in forked processes (sib.forked)
while the next claims are read; a claim's report is made when its jobs have reported, and
the findings are sorted, so the report does not depend on how many processes ran. A claim
whose ledger.csv was changed after issue is replayed at once, in order: the next claim's
history is what that replay recovers. Must not write, print or read the clock; progress goes
to a callback.
"""

from __future__ import annotations

import difflib
import io
import json
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from pydantic import ValidationError

from sib import money
from sib.contract import Contract, LoadedContract, check_contract, limit_of
from sib.evidence import Source, validate_evidence
from sib.forked import Jobs, Pending, cpu_count
from sib.issue import COMPRESSED_SUFFIX, MAX_EXPANDED, expand_gzip, ledger_dir, \
    original_name, sha256
from sib.ledger import DECISION_COLUMNS, LEDGER_COLUMNS, MANIFEST_FORMAT, empty_lines, \
    parse_amounts, parse_ledger, render_decisions, render_ledger
from sib.period import KINDS, Period, PeriodError, parse_period, period_containing
from sib.problems import Problem, SibError, sort_problems
from sib.reconcile import DECISIONS, Cols, Earlier, Rows, claim_after, no_lines
from sib.workspace import contract_id_of, shown_path
from sib.yamlsafe import parse_yaml

# Every code `sib audit` reports, and what it means (README's table is made from this).
AUDIT_CODES = {
    "stray-entry": "something in ledgers/<id>/ that is not a claim folder",
    "bad-manifest": "manifest.json missing, not JSON, or without a required key",
    "missing-claim": "a period with no claim folder between issued claims (a removed claim)",
    "misplaced-claim": "a manifest whose contract, period, dates or claim number are not its folder's",
    "chain-broken": "previous_manifest_sha256 is not the hash of the previous claim's manifest",
    "file-missing": "a file the manifest lists is not there",
    "file-hash": "a file whose SHA-256 differs from the manifest's",
    "file-unlisted": "a file in the claim folder that the manifest does not list",
    "bad-input": "a compressed inputs/ copy that does not decompress to the size and SHA-256 "
                 "its manifest records (damaged, truncated or replaced)",
    "bad-ledger": "ledger.csv or decisions.csv that cannot be read as one",
    "replay-failed": "the claim cannot be recomputed from its inputs/",
    "replay-mismatch": "the recomputed ledger.csv or decisions.csv differs at this line",
    "totals-mismatch": "a manifest total or count that is not what the files add up to",
    "decision-mismatch": "a decision whose amount or kind does not match its ledger lines",
    "workbook-mismatch": "a figure in claim.xlsx or a funder statement that is not the ledger's",
}
INVARIANT_CODES = {
    "negative-payment": "a payment line with a negative amount or capped",
    "split-mismatch": "a payment's lines are not its price split to the penny (claim-rules §4)",
    "bad-reversal": "a reversal that does not cancel a standing line of an earlier claim exactly",
    "standing-over-price": "a milestone holding more than its price",
    "negative-standing": "a milestone whose net payments are below zero",
    "double-payment": "a milestone holding payments from more than one claim",
    "funder-cap-exceeded": "a line that takes a funder's cumulative total over its cap",
    "contract-cap-exceeded": "a line that takes the contract's cumulative total over its cap",
    "participant-cap-exceeded": "a line that takes a participant's total over the participant cap",
    "limit-exceeded": "a participant paid an outcome (or group) more often than its limit",
    "one-decision-per-row": "a milestone with no decision or more than one",
}
AUDIT_CODES.update(INVARIANT_CODES)

STEPS = ("sequence", "chain", "files", "replay", "totals", "invariants", "workbooks")
MANIFEST_KEYS = ("format", "contract", "period", "start", "end", "claim_number",
                 "previous_manifest_sha256", "files", "totals")
REQUIRED_FILES = ("ledger.csv", "decisions.csv", "inputs/contract.yaml")
# how an evidence table may be kept in inputs/, in the order looked for
INPUT_EXTS = (".csv", ".xlsx", ".csv" + COMPRESSED_SUFFIX, ".xlsx" + COMPRESSED_SUFFIX)
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_DIFFS = 3          # replay differences reported per file (then a count)
MAX_DIFF_LINES = 50_000  # above this, report only the first difference (difflib is quadratic)

Progress = Callable[[int, int, str], None]


# --- reading issued claims (also used by explain.py) ------------------------------------------

@dataclass(frozen=True)
class ClaimFolder:
    """One folder under ledgers/<id>/ named like a period, as found on disk.

    label / period: the folder name and the period it names.
    path / shown: where it is, and how users see it (`ledgers/<id>/<period>`).
    manifest_raw: manifest.json's exact bytes (None when absent or unreadable).
    manifest: the parsed manifest when it has every key of MANIFEST_KEYS, else None.
    manifest_problem: why `manifest` is None ('' when it is not).
    """

    label: str
    period: Period
    path: Path
    shown: str
    manifest_raw: bytes | None
    manifest: dict | None
    manifest_problem: str = ""

    def file(self, name: str) -> str:
        return f"{self.shown}/{name}"

    @property
    def manifest_sha256(self) -> str | None:
        return sha256(self.manifest_raw) if self.manifest_raw is not None else None

    def input_name(self, table: str) -> str | None:
        """inputs/<table>.csv or .xlsx, or a compressed copy of one (.csv.gz), as listed by
        the manifest (or found on disk): the name of the file on disk."""
        listed = (self.manifest or {}).get("files", {})
        for ext in INPUT_EXTS:
            name = f"inputs/{table}{ext}"
            if name in listed:
                return name
        for ext in INPUT_EXTS:
            if (self.path / f"inputs/{table}{ext}").is_file():
                return f"inputs/{table}{ext}"
        return None


def compressed_record(manifest: dict | None, name: str) -> tuple[tuple[int, str] | None, str]:
    """(size, sha256) of the file that compressed copy `name` holds, as the manifest's
    `compressed` records it; (None, why) when it records none that can be used."""
    table = (manifest or {}).get("compressed")
    rec = table.get(name) if isinstance(table, dict) else None
    size = rec.get("size") if isinstance(rec, dict) else None
    digest = rec.get("sha256") if isinstance(rec, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or not isinstance(digest, str) \
            or not _SHA256.fullmatch(digest):
        return None, (f"compressed does not record the size and sha256 of what {name} holds "
                      "(every compressed copy sib writes has them)")
    if not 0 <= size <= MAX_EXPANDED:
        return None, (f"compressed.{name}.size is {size:,}, outside 0 … {MAX_EXPANDED:,} bytes; "
                      "it is not decompressed")
    return (size, digest), ""


def read_input(folder: ClaimFolder, name: str, stored: bytes | None = None
               ) -> tuple[bytes | None, str]:
    """The evidence that inputs/ file `name` holds, as the claim read it: the file's bytes,
    or for a compressed copy (`.gz`) the bytes it decompresses to, which must be the size
    and SHA-256 the manifest's `compressed` records. (None, why) when they cannot be had.
    `stored`: the file's bytes when already read."""
    if stored is None:
        try:
            stored = (folder.path / name).read_bytes()
        except OSError as e:
            return None, f"cannot be read ({e.strerror or e})"
    if not name.endswith(COMPRESSED_SUFFIX):
        return stored, ""
    rec, why = compressed_record(folder.manifest, name)
    if rec is None:
        return None, f"cannot be checked: the manifest's {why}"
    size, digest = rec
    data, why = expand_gzip(stored, size)
    if data is None:
        return None, why
    if sha256(data) != digest:
        return None, (f"decompresses to bytes whose SHA-256 is {_short(sha256(data))}, but the "
                      f"manifest records {_short(digest)} for the file the claim read")
    return data, ""


def any_period(label: str) -> Period | None:
    """The period a label names, whatever the kind (the three kinds' labels never clash)."""
    for kind in KINDS:
        try:
            return parse_period(label, kind)
        except PeriodError:
            continue
    return None


def contract_ledgers(workspace: Path, contract_id: str | None) -> tuple[str, Path, str]:
    """(contract id, ledgers/<id> folder, its shown path); the id defaults to the only contract.

    Needs no valid contract file: the audit of issued claims works from their inputs/.
    """
    contract_id = contract_id_of(workspace, contract_id)
    root = ledger_dir(workspace, contract_id)
    shown = shown_path(root, workspace)
    if not root.is_dir() and not (workspace / "contracts" / f"{contract_id}.yaml").is_file():
        raise SibError(f"no contract '{contract_id}' in this workspace: neither "
                       f"contracts/{contract_id}.yaml nor {shown}/ exists")
    return contract_id, root, shown


def read_manifest_bytes(raw: bytes) -> tuple[dict | None, str]:
    """A manifest's bytes as a dict with every required key, or (None, why not)."""
    try:
        m = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return None, f"manifest.json is not JSON ({e}); it cannot be trusted or replayed"
    if not isinstance(m, dict):
        return None, "manifest.json is not a JSON object"
    missing = [k for k in MANIFEST_KEYS if k not in m]
    if missing:
        return None, f"manifest.json has no {', '.join(missing)}"
    if m["format"] != MANIFEST_FORMAT:
        return None, f"manifest.json format is {m['format']!r}, expected '{MANIFEST_FORMAT}'"
    if not isinstance(m["files"], dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in m["files"].items()):
        return None, "manifest.json files is not a mapping of file names to hashes"
    if not isinstance(m["totals"], dict):
        return None, "manifest.json totals is not a mapping"
    return m, ""


def claim_folders(root: Path, shown_root: str) -> tuple[list[ClaimFolder], list[Problem]]:
    """The claim folders under ledgers/<id>/ in period order, and stray entries there."""
    out: list[ClaimFolder] = []
    stray: list[Problem] = []
    if not root.is_dir():
        return out, stray
    for d in sorted(root.iterdir()):
        if d.name.startswith("."):  # .lock, and .tmp-* of a claim being written
            continue
        period = any_period(d.name)
        if period is None or not d.is_dir() or d.is_symlink():
            what = "a symbolic link" if d.is_symlink() else ("a file" if not d.is_dir()
                                                             else "a folder")
            stray.append(Problem(f"{shown_root}/{d.name}", None, None, "stray-entry",
                                 f"{what} that is not a claim: only folders named by period "
                                 "(e.g. 2022-Q1) belong in a contract's ledgers; move it out"))
            continue
        try:
            raw = (d / "manifest.json").read_bytes()
        except OSError as e:
            out.append(ClaimFolder(d.name, period, d, f"{shown_root}/{d.name}", None, None,
                                   f"manifest.json cannot be read ({e.strerror or e}): a claim "
                                   "folder without its manifest was never issued, or was damaged"))
            continue
        manifest, why = read_manifest_bytes(raw)
        out.append(ClaimFolder(d.name, period, d, f"{shown_root}/{d.name}", raw, manifest, why))
    out.sort(key=lambda f: f.period)
    return out, stray


def load_input_contract(folder: ClaimFolder, shown: str
                        ) -> tuple[LoadedContract | None, str]:
    """A claim's inputs/contract.yaml, validated as the claim read it; (contract, '') or
    (None, why). `shown` is how messages name it (the manifest's sources.contract for a
    replay, so that messages come out as they did when the claim was issued)."""
    path = folder.path / "inputs" / "contract.yaml"
    try:
        raw = path.read_bytes()
    except OSError as e:
        return None, f"inputs/contract.yaml cannot be read ({e.strerror or e})"
    doc = parse_yaml(raw, shown)
    if doc.problems or not isinstance(doc.data, dict):
        first = doc.problems[0] if doc.problems else None
        return None, f"inputs/contract.yaml is not a contract ({first.message if first else 'empty'})"
    try:
        contract = Contract.model_validate(doc.data)
    except ValidationError as err:
        e = err.errors(include_url=False)[0]
        return None, (f"inputs/contract.yaml is not a valid contract ({len(err.errors())} "
                      f"problem(s), e.g. {'.'.join(map(str, e['loc']))}: {e['msg']}); check a "
                      "copy of it with `sib check`")
    lc = LoadedContract(contract, path, shown, doc)
    problems = check_contract(lc, contract.id)
    if problems:
        return None, (f"inputs/contract.yaml is not a valid contract ({len(problems)} problem(s), "
                      f"e.g. line {problems[0].line}: {problems[0].message})")
    return lc, ""


def parse_decisions(text: str, shown: str) -> tuple[pd.DataFrame, list[Problem]]:
    """decisions.csv text as a frame (text columns; amount and capped in pence)."""
    try:
        raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        return _empty_decisions(), [Problem(shown, None, None, "bad-ledger",
                                            f"not a decisions CSV: {e}")]
    if tuple(raw.columns) != DECISION_COLUMNS:
        return _empty_decisions(), [Problem(shown, 1, None, "bad-ledger",
                                            "the header is not the decisions header: "
                                            + ",".join(DECISION_COLUMNS))]
    problems = []
    for c in ("amount", "capped"):
        vals, ok = parse_amounts(raw[c])
        for i in np.flatnonzero(~ok):
            problems.append(Problem(shown, int(i) + 2, DECISION_COLUMNS.index(c) + 1, "bad-ledger",
                                    f"{c} '{raw[c].iat[i]}' is not an amount like 1234.50"))
        raw[c] = vals
    return raw, problems


def _empty_decisions() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series([], dtype=object) for c in DECISION_COLUMNS})
    frame["amount"] = frame["capped"] = pd.Series([], dtype=np.int64)
    return frame


def json_line(text: str, path: tuple[str, ...]) -> int | None:
    """The line of key `path` in a manifest pretty-printed with indent=2 (None if absent)."""
    lines = text.split("\n")
    start, depth = 0, 0
    for key in path:
        depth += 1
        needle = " " * (2 * depth) + json.dumps(key, ensure_ascii=False) + ":"
        for i in range(start, len(lines)):
            line = lines[i]
            if line.startswith(needle):
                start = i
                break
            # left the enclosing object: a line indented less than the keys we look for
            stripped = line.lstrip(" ")
            if i > start and stripped and len(line) - len(stripped) < 2 * depth:
                return None
        else:
            return None
    return start + 1


# --- the report ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClaimAudit:
    """What the audit found for one claim folder.

    checks: step (STEPS) → 'ok', 'failed', 'skipped' (could not be run: see `notes`) or,
      for workbooks, 'absent' (the claim has none).
    """

    period: str
    folder: str
    claim_number: int | None
    manifest_sha256: str | None
    checks: dict[str, str]
    notes: tuple[str, ...] = ()

    def as_json(self) -> dict:
        return {"period": self.period, "folder": self.folder, "claim_number": self.claim_number,
                "manifest_sha256": self.manifest_sha256, "checks": dict(self.checks),
                "notes": list(self.notes)}


@dataclass(frozen=True)
class AuditReport:
    """Everything `sib audit` found: one ClaimAudit per claim folder, and every finding."""

    contract: str
    ledgers: str
    claims: tuple[ClaimAudit, ...]
    findings: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def head(self) -> ClaimAudit | None:
        """The latest claim: its manifest hash pins the whole chain."""
        return self.claims[-1] if self.claims else None

    def summary_lines(self) -> list[str]:
        """What the audit did, claim by claim, for people (findings are listed apart)."""
        if not self.claims:
            return [f"{self.ledgers}: no claims issued yet; nothing to audit"]
        first, last = self.claims[0].period, self.claims[-1].period
        out = [f"{self.ledgers}: {len(self.claims)} claim(s), {first} … {last}"]
        for c in self.claims:
            failed = [s for s in STEPS if c.checks[s] == "failed"]
            skipped = [s for s in STEPS if c.checks[s] == "skipped"]
            state = "ok" if not failed else "FAILED " + ", ".join(failed)
            if skipped:
                state += "; not checked: " + ", ".join(skipped)
            number = f"claim {c.claim_number}" if c.claim_number is not None else "claim ?"
            out.append(f"  {c.period:<10} {number:<10} {state}")
        books = {c.checks["workbooks"] for c in self.claims}
        out.append("Checked: claim sequence, hash chain, file hashes, replay from inputs/ "
                   "(ledger.csv and decisions.csv byte for byte), totals, invariants; "
                   + ("workbooks: none issued yet" if books == {"absent"}
                      else "workbooks where issued"))
        head = self.head
        if head.manifest_sha256:
            out.append(f"Chain head: {head.folder}/manifest.json sha256 {head.manifest_sha256}")
        out.append(f"All {len(self.claims)} claim(s) verified." if self.ok else
                   f"{len(self.findings)} finding(s): see below.")
        return out

    def as_json(self) -> dict:
        """`sib audit --json`: {"ok", "contract", "ledgers", "head": {"period",
        "manifest_sha256"} | null, "claims": [ClaimAudit.as_json()], "findings":
        [Problem.as_dict()]}; each claim {"period", "folder", "claim_number",
        "manifest_sha256", "checks": {step: "ok"|"failed"|"skipped"|"absent"}, "notes"}."""
        head = self.head
        return {
            "ok": self.ok,
            "contract": self.contract,
            "ledgers": self.ledgers,
            "head": ({"period": head.period, "manifest_sha256": head.manifest_sha256}
                     if head else None),
            "claims": [c.as_json() for c in self.claims],
            "findings": [p.as_dict() for p in self.findings],
        }


def audit(workspace: Path, contract_id: str | None = None,
          progress: Progress | None = None, workers: int | None = None) -> AuditReport:
    """Audit every issued claim of a contract; `progress(done, total, period)` after each.

    The replays and workbook read-backs of claims whose files are as issued run in up to
    `workers` forked processes (default: every CPU; 1 runs everything here, in order); the
    report is the same either way."""
    cid, root, shown_root = contract_ledgers(workspace, contract_id)
    folders, stray = claim_folders(root, shown_root)
    auditor = _Auditor(cid, workspace, Jobs(cpu_count() if workers is None else workers))
    auditor.findings += stray
    started: list[_Claim] = []
    claims: list[ClaimAudit] = []

    def report(cl: _Claim) -> None:  # in order, as each claim's jobs have reported
        claims.append(auditor.finish(cl))
        if progress is not None:
            progress(len(claims), len(folders), cl.f.label)

    for folder in folders:
        started.append(auditor.claim(folder))
        while started and all(p.ready() for p in started[0].pending):
            report(started.pop(0))
    for cl in started:
        report(cl)
    return AuditReport(cid, shown_root, tuple(claims), tuple(sort_problems(auditor.findings)))


# --- the checks, claim by claim ------------------------------------------------------------------

@dataclass
class _Claim:
    """Working state of one claim while it is audited."""

    f: ClaimFolder
    checks: dict[str, str] = field(default_factory=lambda: {s: "ok" for s in STEPS})
    notes: list[str] = field(default_factory=list)
    data: dict[str, bytes] = field(default_factory=dict)  # files read, by name
    inputs: dict[str, bytes] = field(default_factory=dict)  # compressed copies, decompressed
    bad_inputs: dict[str, str] = field(default_factory=dict)  # …or why they cannot be
    lines: pd.DataFrame | None = None                    # ledger.csv as on disk, typed
    decisions: pd.DataFrame | None = None                # decisions.csv as on disk
    lc: LoadedContract | None = None                     # inputs/contract.yaml
    manifest_text: str = ""
    pending: list[Pending] = field(default_factory=list)  # replay / read-back in a child

    def release(self) -> None:
        """Drop what was read once every check that needs it has it (a long audit keeps
        only each claim's verdicts until its last job reports)."""
        self.data, self.inputs, self.lines, self.decisions = {}, {}, None, None

    def skip(self, step: str, why: str) -> None:
        if self.checks[step] == "ok":
            self.checks[step] = "skipped"
            self.notes.append(f"{step}: {why}")


class _Auditor:
    """Walks the claims in order, carrying what later claims are checked against."""

    def __init__(self, contract_id: str, workspace: Path, jobs: Jobs | None = None):
        self.cid = contract_id
        self.workspace = workspace
        self.jobs = jobs or Jobs(1)
        self.findings: list[Problem] = []
        self.prev: ClaimFolder | None = None
        self.first: Period | None = None
        self.expected: Period | None = None
        self.history = Earlier.of(no_lines())   # issued lines as the next claim read them
        self.history_periods: list[str] = []
        self.run = _Running()                   # what the lines on disk now add up to
        self.broken = ""                        # why replays cannot go on ('' when they can)

    def add(self, cl: _Claim, step: str, path: str, line: int | None, code: str,
            message: str, col: int | None = None) -> None:
        self.findings.append(Problem(path, line, col, code, message))
        cl.checks[step] = "failed"

    def found(self, cl: _Claim, found: "_Found") -> None:
        """Add what a job found (see `_replay_claim`)."""
        for step, path, line, code, message, col in found:
            self.add(cl, step, path, line, code, message, col)

    def mline(self, cl: _Claim, *key: str) -> int | None:
        return json_line(cl.manifest_text, key) if cl.manifest_text else None

    def claim(self, f: ClaimFolder) -> _Claim:
        """Check one claim; its replay and read-back may still be running (`finish`)."""
        cl = _Claim(f)
        if f.manifest is None:
            self.add(cl, "files", f.file("manifest.json"), None, "bad-manifest",
                     f.manifest_problem)
            for step in ("chain", "files", "replay", "totals", "workbooks"):
                cl.skip(step, "no usable manifest")
        else:
            cl.manifest_text = f.manifest_raw.decode("utf-8")
        contract_shown = ((f.manifest or {}).get("sources") or {}).get(
            "contract", f"contracts/{self.cid}.yaml")
        cl.lc, why = load_input_contract(f, contract_shown)
        self._sequence(cl)
        if f.manifest is not None:
            self._chain(cl)
            self._files(cl)
        self._read_files(cl)
        if cl.lc is None and f.manifest is not None:
            self.add(cl, "replay", f.file("inputs/contract.yaml"), None, "replay-failed", why)
        replay = self._replay(cl)
        if f.manifest is not None and cl.lines is not None:
            self._totals(cl)
        else:
            cl.skip("totals", "no usable manifest or ledger.csv")
        # what the next claim read as history: the issued ledger, recovered by the replay
        # when the file on disk was changed after issue (so that replay runs now)
        disk = cl.lines if cl.lines is not None else empty_lines()
        hist = disk
        want = (f.manifest or {}).get("files", {}).get("ledger.csv")
        if replay is not None and want and sha256(cl.data.get("ledger.csv", b"")) != want:
            found, replayed = replay(keep_ledger=True)
            self.found(cl, found)
            replay = None
            if replayed is not None and sha256(replayed) == want:
                hist, _ = parse_ledger(replayed.decode("utf-8"), f.file("ledger.csv"))
        # the invariants judge the lines on disk (unreadable: the best known) and take them
        # into the running state that the next claim is judged against
        self._invariants(cl, disk if cl.lines is not None else hist)
        books = self._workbooks(cl) if f.manifest is not None else None
        work = [job for job in (replay, books) if job is not None]
        if work:  # the rest of the replay and the read-back: pure, in a child if it can
            cl.pending.append(self.jobs.submit(partial(_run_all, work)))
        if not self.broken:  # else no later claim is replayed: the history is not needed
            self.history = self.history.then(Cols.of(hist, LEDGER_COLUMNS))
        self.history_periods.append(f.label)
        self.prev = f
        self.expected = f.period.next()
        cl.release()
        return cl

    def finish(self, cl: _Claim) -> ClaimAudit:
        """The claim's report, once the jobs it started have reported."""
        for p in cl.pending:
            self.found(cl, p.result())
        cl.pending = []
        f = cl.f
        number = (f.manifest or {}).get("claim_number")
        return ClaimAudit(f.label, f.shown, number if isinstance(number, int) else None,
                          f.manifest_sha256, dict(cl.checks), tuple(cl.notes))

    # --- sequence and chain ---

    def _sequence(self, cl: _Claim) -> None:
        f = cl.f
        p = f.period
        if self.first is None:
            self.first = (period_containing(cl.lc.contract.term.service_start, cl.lc.contract.claims)
                          if cl.lc is not None else p)
            self.expected = self.first
        assert self.expected is not None
        if p.kind != self.expected.kind:
            self.add(cl, "sequence", f.shown, None, "misplaced-claim",
                     f"the folder names a {p.kind} period but this contract's claims are by "
                     f"{self.expected.kind} periods (e.g. {self.expected.label})")
            self.broken = self.broken or f"{f.label} is out of sequence"
        elif p < self.expected:
            self.add(cl, "sequence", f.shown, None, "misplaced-claim",
                     f"{p} is before the contract's first claim period {self.expected}; no "
                     "claim can be made for it")
            self.broken = self.broken or f"{f.label} is out of sequence"
        else:
            missing, q = [], self.expected
            while q < p and len(missing) <= 1000:
                missing.append(q)
                q = q.next()
            root = f.shown.rsplit("/", 1)[0]
            for q in missing:
                self.add(cl, "sequence", f"{root}/{q.label}", None, "missing-claim",
                         f"no claim folder for {q}, but {p} is issued: claims go in order "
                         f"without gaps, so {q} was removed (or {p} was issued out of order); "
                         "restore it from a backup")
            if missing:
                self.broken = self.broken or f"claim {missing[0]} is missing"
        m = f.manifest
        if m is None:
            return
        first = self.first
        months = 1 if p.kind == "month" else 3
        number = (p.index - first.index) // months + 1 if p.kind == first.kind else None
        says = {"contract": m.get("contract"), "period": m.get("period"),
                "start": m.get("start"), "end": m.get("end"),
                "claim_number": m.get("claim_number")}
        should = {"contract": self.cid, "period": p.label, "start": p.start.isoformat(),
                  "end": p.end.isoformat(), "claim_number": number}
        wrong = [k for k in says if says[k] != should[k] and should[k] is not None]
        if wrong:
            self.add(cl, "sequence", f.file("manifest.json"), self.mline(cl, wrong[0]),
                     "misplaced-claim",
                     "the manifest is not this folder's claim: " + "; ".join(
                         f"{k} is {json.dumps(says[k])}, expected {json.dumps(should[k])}"
                         for k in wrong)
                     + " (claims moved, swapped or renamed?)")
            self.broken = self.broken or f"{f.label} holds another claim"

    def _chain(self, cl: _Claim) -> None:
        f, m = cl.f, cl.f.manifest
        got = m.get("previous_manifest_sha256")
        line = self.mline(cl, "previous_manifest_sha256")
        if f.period == self.first:
            if got is not None:
                self.add(cl, "chain", f.file("manifest.json"), line, "chain-broken",
                         f"the first claim's previous_manifest_sha256 is {got}, expected null: "
                         "a claim before it was removed, or this manifest was edited")
            return
        prev = self.prev
        if prev is None or prev.period.next() != f.period:
            if prev is not None and prev.manifest_raw is not None and got != prev.manifest_sha256:
                self.add(cl, "chain", f.file("manifest.json"), line, "chain-broken",
                         f"previous_manifest_sha256 is {_short(got)}, which is not "
                         f"{prev.shown}/manifest.json ({_short(prev.manifest_sha256)}): the "
                         "claim it followed is missing")
            elif prev is None:
                cl.skip("chain", "the claim before it is missing")
            return
        want = prev.manifest_sha256
        if want is None:
            cl.skip("chain", f"{prev.label} has no manifest")
            return
        if got != want:
            self.add(cl, "chain", f.file("manifest.json"), line, "chain-broken",
                     f"previous_manifest_sha256 is {_short(got)} but {prev.shown}/manifest.json "
                     f"hashes to {_short(want)}: {prev.label}'s manifest was changed after "
                     f"{f.label} was issued (or this one was edited, or claims were swapped)")

    # --- files ---

    def _files(self, cl: _Claim) -> None:
        f = cl.f
        listed: dict[str, str] = f.manifest["files"]
        for name, digest in sorted(listed.items()):
            parts = name.split("/")
            if name.startswith("/") or ".." in parts or "" in parts or name == "manifest.json":
                self.add(cl, "files", f.file("manifest.json"), self.mline(cl, "files", name),
                         "bad-manifest", f"files lists '{name}', which is not a file inside "
                         "the claim folder")
                continue
            path = f.path / name
            try:
                data = path.read_bytes()
            except OSError as e:
                self.add(cl, "files", f.file(name), None, "file-missing",
                         f"the manifest lists this file but it cannot be read "
                         f"({e.strerror or e}); restore it from a backup")
                continue
            cl.data[name] = data
            if sha256(data) != digest:
                self.add(cl, "files", f.file(name), None, "file-hash",
                         f"SHA-256 is {_short(sha256(data))} but the manifest says "
                         f"{_short(digest)}: the file was changed after the claim was issued")
        for name in REQUIRED_FILES:
            if name not in listed:
                self.add(cl, "files", f.file("manifest.json"), self.mline(cl, "files"),
                         "bad-manifest", f"files does not list {name}, which every claim has")
        for table in ("participants", "milestones"):
            if not any(f"inputs/{table}{ext}" in listed for ext in INPUT_EXTS):
                self.add(cl, "files", f.file("manifest.json"), self.mline(cl, "files"),
                         "bad-manifest", f"files does not list inputs/{table}.csv (or .xlsx, "
                         "or a compressed .csv.gz), the evidence the claim read")
        self._compressed(cl)
        for path in sorted(f.path.rglob("*")):
            rel = path.relative_to(f.path).as_posix()
            if (path.is_file() or path.is_symlink()) and rel != "manifest.json" \
                    and rel not in listed:
                self.add(cl, "files", f.file(rel), None, "file-unlisted",
                         "the manifest does not list this file: it was added after the claim "
                         "was issued; move it out of the ledgers")

    def _compressed(self, cl: _Claim) -> None:
        """Each compressed copy decompresses to what the manifest's `compressed` records."""
        f = cl.f
        listed: dict[str, str] = f.manifest["files"]
        table = f.manifest.get("compressed", {})
        if not isinstance(table, dict):
            self.add(cl, "files", f.file("manifest.json"), self.mline(cl, "compressed"),
                     "bad-manifest", "compressed is not a mapping of compressed copies to the "
                     "size and sha256 of what they hold")
            table = {}
        copies = sorted(n for n in listed if n.startswith("inputs/")
                        and n.endswith(COMPRESSED_SUFFIX))
        for name in sorted(set(table) - set(copies)):
            self.add(cl, "files", f.file("manifest.json"), self.mline(cl, "compressed", name),
                     "bad-manifest", f"compressed names {name}, which files does not list as "
                     f"a compressed copy in inputs/ (inputs/<name>{COMPRESSED_SUFFIX})")
        for name in copies:
            rec, why = compressed_record(f.manifest, name)
            if rec is None:
                cl.bad_inputs[name] = f"cannot be checked: the manifest's {why}"
                self.add(cl, "files", f.file("manifest.json"),
                         self.mline(cl, "compressed", name) or self.mline(cl, "files", name),
                         "bad-manifest", why)
                continue
            if name not in cl.data:
                cl.bad_inputs[name] = "cannot be read"
                continue  # file-missing says so
            data, why = read_input(f, name, cl.data[name])
            if data is None:
                cl.bad_inputs[name] = why
                self.add(cl, "files", f.file(name), None, "bad-input",
                         f"this compressed copy of {original_name(name)} {why}; restore the "
                         "claim folder from a backup")
            else:
                cl.inputs[name] = data

    def _read_files(self, cl: _Claim) -> None:
        """ledger.csv and decisions.csv as they are on disk, typed."""
        f = cl.f
        for name in ("ledger.csv", "decisions.csv"):
            if name not in cl.data:
                try:
                    cl.data[name] = (f.path / name).read_bytes()
                except OSError as e:
                    if f.manifest is None:  # otherwise file-missing says so already
                        self.add(cl, "files", f.file(name), None, "file-missing",
                                 f"cannot be read ({e.strerror or e})")
                    continue
            try:
                text = cl.data[name].decode("utf-8")
            except UnicodeDecodeError as e:
                self.add(cl, "totals", f.file(name), cl.data[name][:e.start].count(b"\n") + 1,
                         "bad-ledger", "the file is not UTF-8 text")
                continue
            parse = parse_ledger if name == "ledger.csv" else parse_decisions
            frame, problems = parse(text, f.file(name))
            if not any(p.line in (None, 1) for p in problems):  # else not the file at all
                if name == "ledger.csv":
                    cl.lines = frame
                else:
                    cl.decisions = frame
            for p in problems:
                self.add(cl, "totals", p.path, p.line, p.code, p.message, p.col)

    # --- replay ---

    def _replay(self, cl: _Claim) -> "Callable[..., tuple[_Found, bytes | None]] | None":
        """What the replay needs, checked here (a reason is recorded when it cannot run),
        as a job that recomputes the claim and compares (`_replay_claim`); None if none."""
        f, m = cl.f, cl.f.manifest
        if m is None or cl.lc is None:
            cl.skip("replay", "no usable manifest or contract")
            return None
        if self.broken:
            cl.skip("replay", f"{self.broken}, so the earlier ledgers it read are not known")
            return None
        lc = cl.lc
        sources = m.get("sources") or {}
        srcs = {}
        for table in ("participants", "milestones"):
            name = f.input_name(table)
            if name is None:
                self.add(cl, "replay", f.file(f"inputs/{table}.csv"), None, "replay-failed",
                         f"the {table} file the claim read is not in inputs/")
                return None
            if name in cl.bad_inputs:  # the files step reported why
                cl.skip("replay", f"{f.file(name)} {cl.bad_inputs[name]}")
                return None
            raw = cl.inputs.get(name)
            if raw is None:
                raw, why = read_input(f, name, cl.data.get(name))
                if raw is None:
                    self.add(cl, "replay", f.file(name), None, "replay-failed", why)
                    return None
            logical = original_name(name)  # .csv or .xlsx: how the evidence is read
            shown = sources.get(table, f"evidence/{self.cid}/{Path(logical).name}")
            srcs[table] = Source(f.path / logical, shown, raw)
        skip_invalid = bool((m.get("options") or {}).get("skip_invalid", False))
        where = {srcs[t].shown: f.file(f.input_name(t)) for t in srcs}
        files = ("ledger.csv", "decisions.csv")
        return partial(_replay_claim, lc.contract, lc, srcs, where, skip_invalid,
                       self.history, len(self.history_periods) + 1, f.period,
                       {n: cl.data.get(n) for n in files}, {n: f.file(n) for n in files},
                       len(cl.decisions) if cl.decisions is not None else None)

    # --- totals ---

    def _totals(self, cl: _Claim) -> None:
        f, m, lines = cl.f, cl.f.manifest, cl.lines
        t = m["totals"]
        by_f = {k: int(v) for k, v in lines.groupby("funder")["amount"].sum().items()}
        have: dict[tuple, str] = {("amount",): money.fmt_amount(int(lines["amount"].sum())),
                                  ("capped",): money.fmt_amount(int(lines["capped"].sum()))}
        for k, v in by_f.items():
            have[("by_funder", k)] = money.fmt_amount(v)
        if cl.lc is not None:
            kinds: dict[str, int] = {}
            kind_of = {fu.id: fu.kind for fu in cl.lc.contract.funders}
            for k, v in by_f.items():
                kinds[kind_of.get(k, "unknown")] = kinds.get(kind_of.get(k, "unknown"), 0) + v
            for k, v in kinds.items():
                have[("by_kind", k)] = money.fmt_amount(v)
        said: dict[tuple, object] = {("amount",): t.get("amount"), ("capped",): t.get("capped")}
        for group in ("by_funder", "by_kind"):
            if group == "by_kind" and cl.lc is None:
                continue
            for k, v in (t.get(group) or {}).items():
                said[(group, k)] = v
        for key in sorted(set(have) | set(said)):
            if key[0] == "by_kind" and cl.lc is None:
                continue
            a, b = said.get(key), have.get(key)
            if a != b:
                line = self.mline(cl, "totals", *key) or self.mline(cl, "totals", key[0])
                self.add(cl, "totals", f.file("manifest.json"), line, "totals-mismatch",
                         f"totals.{'.'.join(key)} is {a if a is not None else 'absent'} in the "
                         f"manifest, but the lines of ledger.csv add up to "
                         f"{b if b is not None else 'nothing'}")
        d = cl.decisions
        if d is None:
            return
        counts = d["decision"].value_counts()
        said_counts = m.get("decisions") or {}
        for k in sorted(set(DECISIONS) | set(said_counts)):
            n = int(counts.get(k, 0))
            if said_counts.get(k, 0 if k not in DECISIONS else None) != n:
                self.add(cl, "totals", f.file("manifest.json"), self.mline(cl, "decisions", k)
                         or self.mline(cl, "decisions"), "totals-mismatch",
                         f"decisions.{k} is {said_counts.get(k, 'absent')} in the manifest, but "
                         f"decisions.csv has {n}")
        if "rows_in" in m and m["rows_in"] != len(d):
            self.add(cl, "totals", f.file("manifest.json"), self.mline(cl, "rows_in"),
                     "totals-mismatch", f"rows_in is {m['rows_in']} in the manifest, but "
                     f"decisions.csv has {len(d)} rows")
        # each decision's money is its milestone's lines, and only paid decisions pay
        net = lines.groupby("milestone_id")[["amount", "capped"]].sum()
        amount = d["milestone_id"].map(net["amount"]).fillna(0).astype(np.int64).to_numpy()
        capped = d["milestone_id"].map(net["capped"]).fillna(0).astype(np.int64).to_numpy()
        bad = (amount != d["amount"].to_numpy(dtype=np.int64)) | \
              (capped != d["capped"].to_numpy(dtype=np.int64))
        for i in np.flatnonzero(bad)[:MAX_DIFFS * 3]:
            self.add(cl, "totals", f.file("decisions.csv"), int(i) + 2, "decision-mismatch",
                     f"milestone {d['milestone_id'].iat[i]}: amount "
                     f"{money.fmt_amount(int(d['amount'].iat[i]))}, capped "
                     f"{money.fmt_amount(int(d['capped'].iat[i]))}, but its lines in ledger.csv "
                     f"net {money.fmt_amount(int(amount[i]))}, capped "
                     f"{money.fmt_amount(int(capped[i]))}")
        paying = set(lines.loc[lines["kind"] == "payment", "milestone_id"])
        paid = d["decision"].isin(["paid", "re-rated"]).to_numpy()
        has_pay = d["milestone_id"].isin(paying).to_numpy()
        for i in np.flatnonzero(paid != has_pay)[:MAX_DIFFS * 3]:
            self.add(cl, "totals", f.file("decisions.csv"), int(i) + 2, "decision-mismatch",
                     f"milestone {d['milestone_id'].iat[i]} is decided "
                     f"{d['decision'].iat[i]} but ledger.csv has "
                     f"{'a' if has_pay[i] else 'no'} payment line for it")
        # (as a list: iterating a str column goes through pandas element by element)
        decided = set(d["milestone_id"].to_numpy(dtype=object).tolist())
        for mid in sorted(paying - decided)[:MAX_DIFFS]:
            self.add(cl, "totals", f.file("ledger.csv"), _first_line(lines, mid),
                     "decision-mismatch", f"milestone {mid} is paid here but has no row in "
                     "decisions.csv")
        dup = d["milestone_id"].duplicated().to_numpy()
        for i in np.flatnonzero(dup)[:MAX_DIFFS]:
            self.add(cl, "invariants", f.file("decisions.csv"), int(i) + 2,
                     "one-decision-per-row", f"milestone {d['milestone_id'].iat[i]} has a second "
                     "decision; each milestone row has exactly one")

    # --- invariants ---

    def _invariants(self, cl: _Claim, on_disk: pd.DataFrame) -> None:
        """Check the claim's lines against the earlier claims' (`self.run`), and advance
        `self.run` by `on_disk`: its lines, or the best known when they cannot be read."""
        f, lines = cl.f, cl.lines
        if lines is None or cl.lc is None:
            cl.skip("invariants", "no readable ledger.csv or contract")
            self.run.add(on_disk)
            return
        c = cl.lc.contract
        shown = f.file("ledger.csv")
        for line, code, message in invariant_violations(c, self.run, lines,
                                                        check_reversals=not self.broken):
            self.add(cl, "invariants", shown, line, code, message)

    # --- workbooks ---

    def _workbooks(self, cl: _Claim) -> "Callable[..., tuple[_Found, None]] | None":
        """The claim's workbooks, as a job that reads them back (`_read_back`); None if
        there is nothing to read back (the reason recorded)."""
        f = cl.f
        books = [n for n in sorted(f.manifest["files"])
                 if n == "claim.xlsx" or (n.startswith("statements/") and n.endswith(".xlsx"))]
        if not books:
            cl.checks["workbooks"] = "absent"
            return None
        if cl.lines is None:
            cl.skip("workbooks", "no readable ledger.csv to compare with")
            return None
        # (a book that cannot be read is not here: file-missing says so)
        return partial(_read_back, [(n, cl.data[n], f.file(n)) for n in books if n in cl.data],
                       cl.lines)


# What a job found: (step, path, line, code, message, col), each a finding of `step`.
_Found = list[tuple[str, str, "int | None", str, str, "int | None"]]


def _run_all(jobs: list) -> _Found:
    """Run a claim's jobs one after the other; everything they found."""
    return [x for job in jobs for x in job()[0]]


def _replay_claim(c: Contract, lc: LoadedContract, srcs: dict[str, Source],
                  where: dict[str, str], skip_invalid: bool, earlier: Earlier, number: int,
                  period: Period,
                  old: dict[str, bytes | None], shown: dict[str, str], n_decisions: int | None,
                  keep_ledger: bool = False) -> tuple[_Found, bytes | None]:
    """Recompute a claim (claim `number`) from the evidence it read and the earlier ledgers
    (`earlier`: as the engine codes them, kept from claim to claim), and compare
    with its ledger.csv and decisions.csv (`old`, as on disk): what differs, and the
    recomputed ledger.csv (when `keep_ledger`; None if it could not be recomputed).
    Pure: it may run in another process (sib.forked)."""
    out: _Found = []
    ev = validate_evidence(lc, srcs["participants"], srcs["milestones"])
    if ev.problems and (ev.file_problems or not skip_invalid):
        for p in ev.problems[:20]:
            out.append(("replay", where.get(p.path, p.path), p.line, "replay-failed",
                        f"the evidence the claim read has a problem ({p.code}: {p.message})",
                        p.col))
        return out, None
    try:
        claim = claim_after(c, Rows.of(ev), earlier.lines, number, period, earlier=earlier)
    except SibError as e:
        out.append(("replay", shown["ledger.csv"], None, "replay-failed",
                    f"the engine refuses to recompute the claim: {e}", None))
        return out, None
    if claim.problems:
        for p in claim.problems:
            out.append(("replay", where.get(p.path, p.path), p.line, "replay-failed",
                        f"the engine refuses to recompute the claim ({p.code}: {p.message})",
                        None))
        return out, None
    new_ledger = render_ledger(claim.line_cols).encode("utf-8")
    new_dec = render_decisions(claim.decision_cols).encode("utf-8")
    for name, new in (("ledger.csv", new_ledger), ("decisions.csv", new_dec)):
        if old[name] is not None and old[name] != new:
            for line, message in _differences(old[name], new):
                out.append(("replay", shown[name], line, "replay-mismatch", message, None))
    if n_decisions is not None and n_decisions != claim.rows_in:
        out.append(("invariants", shown["decisions.csv"], None, "one-decision-per-row",
                    f"{n_decisions} decisions for the {claim.rows_in} milestone rows of the "
                    "evidence the claim read; each row has exactly one", None))
    return out, new_ledger if keep_ledger else None


def _read_back(books: list[tuple[str, bytes, str]], lines: pd.DataFrame) -> tuple[_Found, None]:
    """Each workbook (name, bytes, shown) read back against the claim's ledger lines."""
    ledger = _Ledger(lines)  # (prepared once for all of them)
    return [("workbooks", shown, line, "workbook-mismatch", message, None)
            for name, raw, shown in books
            for line, message in workbook_differences(name, raw, lines, ledger)], None


def _short(digest: str | None) -> str:
    return "null" if digest is None else (digest[:12] + "…" if len(digest) > 12 else digest)


def _quote(line: str) -> str:
    return "`" + (line if len(line) <= 200 else line[:200] + "…") + "`"


def _first_line(lines: pd.DataFrame, mid: str) -> int | None:
    hits = np.flatnonzero((lines["milestone_id"] == mid).to_numpy())
    return int(hits[0]) + 2 if len(hits) else None


def _differences(old: bytes, new: bytes) -> list[tuple[int, str]]:
    """Where an issued file differs from its replay: (line, message), at most MAX_DIFFS."""
    a = old.decode("utf-8", "replace").split("\n")
    b = new.decode("utf-8").split("\n")
    if len(a) + len(b) > MAX_DIFF_LINES:
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        ops = [("replace", k, len(a), k, len(b))]
    else:
        ops = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
               if op[0] != "equal"]
    out = []
    for tag, i1, i2, j1, j2 in ops[:MAX_DIFFS]:
        if tag == "replace":
            msg = f"the issued line is {_quote(a[i1])}; the replay gives {_quote(b[j1])}"
            if i2 - i1 > 1 or j2 - j1 > 1:
                msg += f" ({i2 - i1} issued line(s) here differ from {j2 - j1} replayed)"
        elif tag == "delete":
            msg = (f"the issued file has {i2 - i1} line(s) here that the replay does not give, "
                   f"from {_quote(a[i1])}")
        else:
            msg = f"the replay gives {j2 - j1} line(s) here that the issued file lacks, from " \
                  f"{_quote(b[j1])}"
        out.append((i1 + 1, msg))
    if len(ops) > MAX_DIFFS:
        line, msg = out[-1]
        out[-1] = (line, msg + f"; and {len(ops) - MAX_DIFFS} more difference(s) in this file")
    return out


# --- invariants, located (claim-rules.md § Invariants; reconcile.check_invariants refuses a
# claim that breaks one, this finds the line of an issued claim that does) --------------------
#
# A claim is judged against the lines of every earlier claim. They are not re-read for each
# claim: `_Running` keeps what the checks need from them — running totals, the standing
# payments, the limit counts — and is advanced by each claim's lines in turn, so a claim costs
# what its own lines cost however long the history (issue 7).

_NO_PRICE = np.iinfo(np.int64).min
# bounds within which the vectorised split check is exact in int64; a line outside them
# (only a hand-edited ledger has one) is checked by `money.split` in Python integers
_SAFE_PRICE = 2**40
_SAFE_AMOUNT = 2**61


def _room(a: np.ndarray, n: int, fill) -> np.ndarray:
    """`a`, or a copy of it at least `n` long (capacity doubles: appending stays linear),
    new entries set to `fill`."""
    if n <= len(a):
        return a
    b = np.full(max(n, 2 * len(a), 64), fill, dtype=a.dtype)
    b[:len(a)] = a
    return b


def _code(table: dict, values: np.ndarray) -> np.ndarray:
    """Each value's integer code in `table` (value → code), new values given the next codes."""
    codes, uniques = pd.factorize(values)
    if not len(uniques):
        return np.zeros(len(values), dtype=np.int64)
    known = np.fromiter((table.setdefault(v, len(table)) for v in uniques.tolist()),
                        dtype=np.int64, count=len(uniques))
    return known[codes]


@dataclass(frozen=True)
class _Coded:
    """One claim's lines as `_Running` codes them."""

    milestone: np.ndarray    # milestone code of each line
    participant: np.ndarray  # participant code of each line
    outcome: np.ndarray      # outcome code of each line


class _Running:
    """What the lines of every earlier claim (as they are on disk) add up to, for judging
    the next claim's invariants; `add` advances it by one claim's lines.

    totals      every line's amount per funder, per participant and in all (the caps count
                payments and reversals alike)
    groups      each (milestone, period) group of payment lines, which a reversal cancels
                as a whole, 0.00 lines included (reconcile.standing_mask): the sum, the
                highest price and the first line of its payments, and whether a reversal
                cancelled it; a milestone's standing lines are those of its groups not
                cancelled, one group per claim (period) that paid it
    milestones  each milestone's net amount over every line, its groups (a linked list:
                `m_head`, `g_next`) and `m_rep`, its group whose first line is the first
                of its standing lines: that line's participant and outcome are the ones
                its payment counts under in the per-participant limits
    counts      standing milestones per (participant, outcome), by their `m_rep` line
    lines       every line id → position (the first line with that id), and per claim the
                columns a reversal is checked against; `pending`: ids that reversals name
                but no line has yet (a line given that id later is cancelled then, as a
                re-scan of every line would find)
    Text values are held as integer codes (`mids`, `pids`, `outcomes`, `periods`,
    `funders`: value → code). Sums are int64, as the pandas sums they replace.
    """

    def __init__(self) -> None:
        self.mids: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.outcomes: dict[str, int] = {}
        self.periods: dict[str, int] = {}
        self.funders: dict[str, int] = {}
        i64 = lambda fill: np.full(0, fill, dtype=np.int64)  # noqa: E731
        self.f_total, self.p_total, self.total = i64(0), i64(0), np.zeros(1, dtype=np.int64)
        self.m_net, self.m_head, self.m_rep = i64(0), i64(-1), i64(-1)
        self.groups: dict[int, int] = {}  # milestone code << 32 | period code → group
        self.g_next, self.g_sum, self.g_price = i64(-1), i64(0), i64(_NO_PRICE)
        self.g_first, self.g_pid, self.g_out = i64(-1), i64(-1), i64(-1)
        self.g_cancelled = np.zeros(0, dtype=bool)
        self.counts = np.zeros((0, 0), dtype=np.int64)
        self.standing_milestones = 0
        self.line_at: dict[str, int] = {}
        self.pending: dict[str, list[int]] = {}
        self.starts: list[int] = []
        self.chunks: list[dict[str, np.ndarray]] = []
        self.n = 0

    # --- what the next claim is judged against ---

    def funder_total(self, funders: np.ndarray) -> np.ndarray:
        return self._totals(self.funders, self.f_total, funders)

    def participant_total(self, participants: np.ndarray) -> np.ndarray:
        return self._totals(self.pids, self.p_total, participants)

    @staticmethod
    def _totals(table: dict, totals: np.ndarray, values: np.ndarray) -> np.ndarray:
        codes, uniques = pd.factorize(values)
        if not len(uniques):
            return np.zeros(len(values), dtype=np.int64)
        have = np.array([totals[table[v]] if v in table else 0 for v in uniques.tolist()],
                        dtype=np.int64)
        return have[codes]

    def standing_line(self, line_id: str) -> dict | None:
        """The standing payment line with this id (the first line with it), else None."""
        pos = self.line_at.get(line_id)
        if pos is None:
            return None
        k = bisect_right(self.starts, pos) - 1
        chunk, i = self.chunks[k], pos - self.starts[k]
        g = chunk["group"][i]
        if g < 0 or self.g_cancelled[g]:
            return None
        return {name: a[i] for name, a in chunk.items()}

    def held(self, milestones: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For milestone codes: (amount, highest price, number of periods) of their standing
        lines; periods 0 for a milestone with none."""
        owner, g = self._standing_groups(milestones)
        amount = np.zeros(len(milestones), dtype=np.int64)
        price = np.full(len(milestones), _NO_PRICE, dtype=np.int64)
        np.add.at(amount, owner, self.g_sum[g])
        np.maximum.at(price, owner, self.g_price[g])
        return amount, price, np.bincount(owner, minlength=len(milestones))

    def limit_counts(self, participants: np.ndarray, outcome_keys: list[str],
                     keys: np.ndarray) -> np.ndarray:
        """Standing milestones of each participant (code) under limit key `keys` (index into
        `outcome_keys`, each outcome code's key)."""
        k = len(outcome_keys)
        if not len(participants) or not k:
            return np.zeros(len(participants), dtype=np.int64)
        _kc, ku = pd.factorize(np.asarray(outcome_keys, dtype=object))
        onehot = np.zeros((k, len(ku)), dtype=np.int64)
        onehot[np.arange(k), _kc] = 1
        per_key = self.counts[participants][:, :k] @ onehot
        col = pd.Index(ku).get_indexer(np.asarray(outcome_keys, dtype=object)[keys])
        return per_key[np.arange(len(participants)), col]

    # --- advancing by one claim ---

    def add(self, lines: pd.DataFrame) -> _Coded:
        """Take in one claim's lines (in file order)."""
        n, start = len(lines), self.n
        text = {c: lines[c].to_numpy(dtype=object) for c in
                ("line_id", "period", "kind", "milestone_id", "participant_id", "outcome",
                 "funder", "reverses")}
        amount = lines["amount"].to_numpy(dtype=np.int64)
        price = lines["price"].to_numpy(dtype=np.int64)
        pay = text["kind"] == "payment"
        mid = _code(self.mids, text["milestone_id"])
        per = _code(self.periods, text["period"])
        pid = _code(self.pids, text["participant_id"])
        out = _code(self.outcomes, text["outcome"])
        fid = _code(self.funders, text["funder"])
        self.m_net = _room(self.m_net, len(self.mids), 0)
        self.m_head = _room(self.m_head, len(self.mids), -1)
        self.m_rep = _room(self.m_rep, len(self.mids), -1)
        self.p_total = _room(self.p_total, len(self.pids), 0)
        self.f_total = _room(self.f_total, len(self.funders), 0)
        np.add.at(self.m_net, mid, amount)
        np.add.at(self.p_total, pid, amount)
        np.add.at(self.f_total, fid, amount)
        np.add.at(self.total, np.zeros(n, dtype=np.int64), amount)

        group = np.full(n, -1, dtype=np.int64)
        at = np.flatnonzero(pay)
        if len(at):
            g = self._groups(mid[at], per[at])
            group[at] = g
            np.add.at(self.g_sum, g, amount[at])
            np.maximum.at(self.g_price, g, price[at])
            ug, first = np.unique(g, return_index=True)
            fresh = self.g_first[ug] < 0
            ug, first = ug[fresh], at[first[fresh]]
            self.g_first[ug] = start + first
            self.g_pid[ug], self.g_out[ug] = pid[first], out[first]

        ids = text["line_id"].tolist()
        new = dict(zip(reversed(ids), range(start + n - 1, start - 1, -1)))  # first of each
        if not self.line_at.keys().isdisjoint(new):
            new = {k: v for k, v in new.items() if k not in self.line_at}
        self.line_at.update(new)
        self.starts.append(start)
        self.chunks.append({"group": group, "period": per, "milestone_id": text["milestone_id"],
                            "funder": text["funder"], "share": lines["share"].to_numpy(),
                            "price": price, "price_from": lines["price_from"].to_numpy(),
                            "amount": amount})
        self.n += n

        # what the reversals cancel: their milestone's lines of the period of the line named
        cancel_m: list[int] = []
        cancel_p: list[int] = []
        if self.pending:
            for lid in [k for k in new if k in self.pending]:
                for m in self.pending.pop(lid):
                    cancel_m.append(m)
                    cancel_p.append(int(per[new[lid] - start]))
        for i in np.flatnonzero(~pay).tolist():
            target = text["reverses"][i]
            pos = self.line_at.get(target)
            if pos is None:
                self.pending.setdefault(target, []).append(int(mid[i]))
                continue
            k = bisect_right(self.starts, pos) - 1
            cancel_m.append(int(mid[i]))
            cancel_p.append(int(self.chunks[k]["period"][pos - self.starts[k]]))
        cm = np.asarray(cancel_m, dtype=np.int64)
        if len(cm):
            self.g_cancelled[self._groups(cm, np.asarray(cancel_p, dtype=np.int64))] = True
        self._represent(np.unique(np.concatenate([mid, cm])))
        return _Coded(mid, pid, out)

    def _groups(self, mid: np.ndarray, per: np.ndarray) -> np.ndarray:
        """The group of each (milestone, period) code pair, new groups made as needed."""
        keys = (mid << 32) | per
        codes, uniques = pd.factorize(keys)
        before = len(self.groups)
        gids = np.fromiter((self.groups.setdefault(k, len(self.groups))
                            for k in uniques.tolist()), dtype=np.int64, count=len(uniques))
        made = gids >= before
        if made.any():
            total = len(self.groups)
            for name, fill in (("g_next", -1), ("g_sum", 0), ("g_price", _NO_PRICE),
                               ("g_first", -1), ("g_pid", -1), ("g_out", -1)):
                setattr(self, name, _room(getattr(self, name), total, fill))
            self.g_cancelled = _room(self.g_cancelled, total, False)
            # link each new group in front of its milestone's list
            new_g = gids[made]
            new_m = np.asarray(uniques)[made] >> 32
            order = np.argsort(new_m, kind="stable")
            new_g, new_m = new_g[order], new_m[order]
            last = np.append(new_m[1:] != new_m[:-1], True)   # last of each milestone's run
            nxt = np.append(new_g[1:], -1)
            self.g_next[new_g] = np.where(last, self.m_head[new_m], nxt)
            firsts = np.append(True, new_m[1:] != new_m[:-1])
            self.m_head[new_m[firsts]] = new_g[firsts]
        return gids[codes]

    def _standing_groups(self, milestones: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(owner, group): the standing groups of the given milestone codes, `owner` the
        position in `milestones` (walks the lists, all milestones a step at a time)."""
        owners, groups = [], []
        owner = np.arange(len(milestones))
        g = self.m_head[milestones]
        while True:
            keep = g >= 0
            owner, g = owner[keep], g[keep]
            if not len(g):
                break
            standing = (self.g_first[g] >= 0) & ~self.g_cancelled[g]
            owners.append(owner[standing])
            groups.append(g[standing])
            g = self.g_next[g]
        if not owners:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(owners), np.concatenate(groups)

    def _represent(self, milestones: np.ndarray) -> None:
        """Recount the limit counts of these milestones (whose standing may have changed)."""
        old = self.m_rep[milestones]
        old = old[old >= 0]
        np.subtract.at(self.counts, (self.g_pid[old], self.g_out[old]), 1)
        owner, g = self._standing_groups(milestones)
        rep = np.full(len(milestones), -1, dtype=np.int64)
        if len(g):
            order = np.lexsort((self.g_first[g], owner))
            owner, g = owner[order], g[order]
            first = np.append(True, owner[1:] != owner[:-1])
            rep[owner[first]] = g[first]
        self.m_rep[milestones] = rep
        new = rep[rep >= 0]
        rows, cols = max(len(self.pids), 1), max(len(self.outcomes), 1)
        if rows > self.counts.shape[0] or cols > self.counts.shape[1]:
            grown = np.zeros((max(rows, 2 * self.counts.shape[0]),
                              max(cols, 2 * self.counts.shape[1])), dtype=np.int64)
            grown[:self.counts.shape[0], :self.counts.shape[1]] = self.counts
            self.counts = grown
        np.add.at(self.counts, (self.g_pid[new], self.g_out[new]), 1)
        self.standing_milestones += len(new) - len(old)


def _split_suspects(lines: pd.DataFrame, pay: np.ndarray) -> list[np.ndarray]:
    """The payment lines of each milestone whose lines might not be its price split to the
    penny (claim-rules §4), as positions in `lines`, milestones in order of first line.

    Vectorised `money.split` (largest remainder, ties to the line listed first) of each
    milestone's price by its lines' shares; a milestone whose lines are all within the int64-
    safe bounds and all equal their part is certainly right and left out. The rest (in an
    issued claim: none) are checked line by line by the caller."""
    at = np.flatnonzero(pay)
    if not len(at):
        return []
    codes, uniques = pd.factorize(lines["milestone_id"].to_numpy(dtype=object)[at])
    k = len(uniques)
    units = lines["share"].to_numpy(dtype=np.int64)[at]
    price = lines["price"].to_numpy(dtype=np.int64)[at]
    whole_a = lines["amount"].to_numpy(dtype=np.int64)[at]
    whole_c = lines["capped"].to_numpy(dtype=np.int64)[at]
    safe = ((units >= 0) & (units <= money.SHARE_UNITS) & (np.abs(price) < _SAFE_PRICE)
            & (np.abs(whole_a) < _SAFE_AMOUNT) & (np.abs(whole_c) < _SAFE_AMOUNT))
    units_s = np.where(safe, units, 0)
    by_group = np.argsort(codes, kind="stable")           # lines grouped, in line order
    size = np.bincount(codes, minlength=k)
    begin = np.cumsum(size) - size
    first_price = np.where(safe, price, 0)[by_group[begin]][codes]
    prod = first_price * units_s
    floors, rems = prod // money.SHARE_UNITS, prod % money.SHARE_UNITS
    left = np.zeros(k, dtype=np.int64)
    np.add.at(left, codes, floors)
    left = np.where(safe, price, 0)[by_group[begin]] - left
    order = np.lexsort((np.arange(len(at)), -rems, codes))
    rank = np.empty(len(at), dtype=np.int64)
    rank[order] = np.arange(len(at)) - begin[codes[order]]
    full = floors + (rank < left[codes])
    line_ok = safe & (whole_a + whole_c == full) & (price == first_price)
    total_units = np.zeros(k, dtype=np.int64)
    np.add.at(total_units, codes, units_s)
    ok = (np.bincount(codes, weights=None, minlength=k) ==
          np.bincount(codes[line_ok], minlength=k)) & (total_units == money.SHARE_UNITS)
    return [at[by_group[begin[j]:begin[j] + size[j]]] for j in np.flatnonzero(~ok).tolist()]


def invariant_violations(c: Contract, run: _Running, lines: pd.DataFrame,
                         check_reversals: bool = True) -> list[tuple[int, str, str]]:
    """(line in ledger.csv, code, message) for each invariant the claim's `lines` break,
    given `run`, the running state of every earlier claim's lines, which this advances by
    `lines`. Only what this claim's lines cause is reported, so a breach is found once, in
    the claim that made it."""
    out: list[tuple[int, str, str]] = []
    row = lambda i: int(i) + 2  # noqa: E731 - ledger.csv line of lines' i-th row
    label = lines.index  # where the rows' labels, not positions, name the line
    fmt = money.fmt_gbp
    pay = (lines["kind"] == "payment").to_numpy()
    amt = lines["amount"].to_numpy(dtype=np.int64)
    capped = lines["capped"].to_numpy(dtype=np.int64)

    bad = np.flatnonzero(pay & ((amt < 0) | (capped < 0)))
    for i in bad[:MAX_DIFFS]:
        out.append((row(i), "negative-payment", f"a payment line of {fmt(int(amt[i]))} "
                    f"(capped {fmt(int(capped[i]))}); payments are never negative"))

    # §4: each payment's lines are its price split by its shares, to the penny
    share = lines["share"].to_numpy(dtype=np.int64)
    price_of = lines["price"].to_numpy(dtype=np.int64)
    funder = lines["funder"].to_numpy(dtype=object)
    mids = lines["milestone_id"].to_numpy(dtype=object)
    for g in _split_suspects(lines, pay):
        mid = mids[g[0]]
        units = share[g].tolist()
        price = int(price_of[g[0]])
        whole = [int(a) + int(k) for a, k in zip(amt[g].tolist(), capped[g].tolist())]
        if sum(units) != money.SHARE_UNITS:
            out.append((row(label[g[0]]), "split-mismatch",
                        f"milestone {mid}: the shares add up to "
                        f"{money.fmt_share(sum(units))}%, not 100%"))
            continue
        full = money.split(price, units)
        wrong = [k for k, (w, p) in enumerate(zip(whole, full)) if w != p]
        if wrong or len(set(price_of[g].tolist())) != 1:
            k = wrong[0] if wrong else 0
            out.append((row(label[g[k]]), "split-mismatch",
                        f"milestone {mid}: {funder[g[k]]}'s amount + capped is "
                        f"{fmt(whole[k])}, but its part of the price {fmt(price)} at "
                        f"{money.fmt_share(units[k])}% is {fmt(full[k])}"))

    if check_reversals:  # against the standing lines of the earlier claims
        reverses = lines["reverses"].to_numpy(dtype=object)
        mine = {"milestone_id": mids, "funder": funder, "share": share, "price": price_of,
                "price_from": lines["price_from"].to_numpy(), "amount": amt}
        seen: set[str] = set()
        for i in np.flatnonzero(~pay).tolist():
            target = reverses[i]
            why = ""
            o = run.standing_line(target) if target not in seen else None
            if target in seen:
                why = f"reverses {target} a second time"
            elif o is None:
                why = (f"reverses {target or '(blank)'}, which is no standing payment line of "
                       "an earlier claim")
            else:
                diff = [k for k in ("milestone_id", "funder", "share", "price", "price_from")
                        if o[k] != mine[k][i]]
                if diff:
                    why = f"its {', '.join(diff)} differ from {target}'s"
                elif int(amt[i]) != -int(o["amount"]):
                    why = (f"it is {fmt(int(amt[i]))} but {target} paid "
                           f"{fmt(int(o['amount']))}")
            seen.add(target)
            if why:
                out.append((row(i), "bad-reversal", f"reversal of milestone "
                            f"{mids[i]}: {why}"))

    # caps: the line whose payment takes a running total from within a cap to over it
    # (reversals come first in a claim, so the headroom they free counts). Only the crossing
    # is reported: a total already over its cap was reported where it crossed, and any later
    # payment to it is the replay's to judge
    def over(keys: np.ndarray | None, before: np.ndarray, cap: np.ndarray, code: str,
             what) -> None:
        if keys is None:
            cum = before + np.cumsum(amt)
        else:
            cum = before + pd.Series(amt).groupby(pd.factorize(keys)[0]).cumsum().to_numpy()
        has_cap = cap >= 0
        hits = np.flatnonzero((amt > 0) & has_cap & (cum > cap) & (cap >= cum - amt))
        reported = set()
        for i in hits.tolist():
            k = keys[i] if keys is not None else None
            if k not in reported:
                reported.add(k)
                out.append((row(i), code, f"{what(k)} reaches {fmt(int(cum[i]))} with this "
                            f"line, over its cap of {fmt(int(cap[i]))}"))

    fcap = {fu.id: money.pence(fu.cap) for fu in c.funders if fu.cap is not None}
    caps = np.array([fcap.get(f, -1) for f in funder.tolist()], dtype=np.int64)
    over(funder, run.funder_total(funder), caps, "funder-cap-exceeded",
         lambda k: f"funder {k}'s total")
    if c.caps and c.caps.contract is not None:
        ccap = money.pence(c.caps.contract)
        over(None, run.total, np.full(len(amt), ccap, dtype=np.int64), "contract-cap-exceeded",
             lambda k: "the contract's total")
    participants = lines["participant_id"].to_numpy(dtype=object)
    if c.caps and c.caps.participant is not None:
        pcap = money.pence(c.caps.participant)
        over(participants, run.participant_total(participants),
             np.full(len(amt), pcap, dtype=np.int64), "participant-cap-exceeded",
             lambda k: f"participant {k}'s total")

    coded = run.add(lines)

    # what each milestone this claim has a line for holds after it
    touched, first_at = np.unique(coded.milestone, return_index=True)
    names = mids[first_at]
    amount, price, periods = run.held(touched)
    standing = periods > 0
    ordered = lambda sel: sorted(np.flatnonzero(sel).tolist(), key=lambda j: names[j])  # noqa: E731
    for j in ordered(standing & (amount > price))[:MAX_DIFFS]:
        out.append((_first_line(lines, names[j]), "standing-over-price",
                    f"milestone {names[j]} holds {fmt(int(amount[j]))} after this claim, more "
                    f"than its price {fmt(int(price[j]))}"))
    paid_here = np.zeros(len(touched), dtype=bool)
    paid_here[np.searchsorted(touched, coded.milestone[pay])] = True
    for j in ordered((periods > 1) & paid_here)[:MAX_DIFFS]:
        out.append((_first_line(lines, names[j]), "double-payment",
                    f"milestone {names[j]} is paid here while a payment of an earlier claim "
                    "for it still stands; a milestone is paid once (reverse the earlier "
                    "payment first)"))
    net = run.m_net[touched]
    for j in ordered(net < 0)[:MAX_DIFFS]:
        out.append((_first_line(lines, names[j]), "negative-standing",
                    f"milestone {names[j]} nets {fmt(int(net[j]))} after this claim; a "
                    "reversal cancels no more than was paid"))

    # per-participant limits, counted over standing milestones
    if run.standing_milestones and pay.any():
        keys = {o.id: limit_of(c, o) for o in c.outcomes}
        key_of = [keys.get(o, (f"outcome:{o}", 1)) for o in run.outcomes]  # by outcome code
        outcome_keys = [k for k, _lim in key_of]
        at = np.flatnonzero(pay)
        p_here, o_here = coded.participant[at], coded.outcome[at]
        k_here = pd.factorize(np.asarray(outcome_keys, dtype=object)[o_here])[0]
        # each (participant, limit key) paid here, at its first payment line
        _u, first = np.unique(p_here * (int(k_here.max()) + 1) + k_here, return_index=True)
        counts = run.limit_counts(p_here[first], outcome_keys, o_here[first])
        lims = np.array([lim for _k, lim in key_of], dtype=np.int64)[o_here[first]]
        found = []
        for j in np.flatnonzero(counts > lims).tolist():
            i = at[first[j]]
            k, lim = key_of[o_here[first[j]]]
            found.append((participants[i], k, int(counts[j]), lim, i))
        for p, k, n, lim, i in sorted(found, key=lambda x: (x[0], x[1])):
            what = k.split(":", 1)[1] + (" (group)" if k.startswith("group:") else "")
            out.append((row(label[i]), "limit-exceeded",
                        f"participant {p} holds {n} payments of {what}, over its limit of "
                        f"{lim} per participant"))
    return out


# --- workbooks (claim-workbook.md): read back, compared with the ledger -------------------------

def _header_key(v: object) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(v if v is not None else "").strip().lower()).strip("_")


def _pence_of(v: object) -> int | None:
    """A money cell's value in pence; None unless it is a number with at most two decimals
    (a money figure is never text, claim-workbook.md)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        d = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
    except InvalidOperation:
        return None
    q = d * 100
    if q != q.to_integral_value():
        return None
    return int(q)


_LINES_SHEET = re.compile(r"^lines( \(\d+\))?$")


_AUDITED = ("line_id", "price", "amount", "capped", "funder", "milestone_id", "kind")
_MONEY_COLUMNS = ("price", "amount", "capped")
_TEXT_COLUMNS = ("funder", "milestone_id", "kind")


@lru_cache(maxsize=1024)
def _header_columns(values: tuple) -> dict[str, int] | None:
    """For a header row (one naming line_id and amount): where each audited column is (its
    first cell of that name); None for any other row. (Remembered: every statement has the
    same header row; the mapping returned must not be changed.)"""
    keys = [_header_key(v) for v in values]
    if "line_id" not in keys or "amount" not in keys:
        return None
    col = {k: i for i, k in reversed(list(enumerate(keys))) if k}
    return {k: col[k] for k in _AUDITED if k in col}


def workbook_differences(name: str, raw: bytes, lines: pd.DataFrame,
                         ledger: "_Ledger | None" = None) -> list[tuple[int | None, str]]:
    """Where a claim workbook or funder statement disagrees with the claim's ledger lines.

    Reads back every sheet whose header row (within its first 20 rows) names `line_id` and
    `amount` (Lines, Corrections): each of its rows must be a line of this claim (of that
    funder, for statements/<funder>.xlsx) with the ledger's money in number cells and the
    same funder, milestone and kind. The Lines sheets — `Lines`, `Lines (2)`, … as
    sib.workbook writes them (claim-workbook.md §4) — must hold every one of those lines.
    Formula cells are not evaluated (openpyxl cannot): the workbook's totals are formulas
    over the Lines sheets, so checking the lines checks what the totals add up.

    The cells are read by sib.xlsx_read, which gives the values openpyxl's read-only,
    data-only mode gives (so findings are those of reading them with openpyxl), as arrays:
    rows whose cells are plainly the ledger's are passed in bulk (`_Want.clean`), every
    other row is checked one by one as before (`_Want.row_differences`). `ledger`: `lines`
    prepared for comparing (`_Ledger(lines)`), when the caller reads several workbooks of
    one claim (`_read_back`).
    """
    from sib import xlsx_read  # reading workbooks back is xlsx_read's; writing, sib.workbook's

    statement = name.startswith("statements/")
    want = _Want(ledger or _Ledger(lines), Path(name).stem if statement else None)
    found = xlsx_read.read_tables(raw, _header_columns)
    if found.unreadable is not None:
        return [(None, f"cannot be read as a workbook ({found.unreadable}); it should be the "
                       "one sib wrote")]
    out: list[tuple[int | None, str]] = []
    lines_sheets = []
    for table in found.tables:
        is_lines = bool(_LINES_SHEET.match(table.title.strip().lower()))
        if is_lines:
            lines_sheets.append(table.title)
        clean = want.clean(table)
        if is_lines:
            want.on_lines[want.row_line[clean]] = True
        for i in np.flatnonzero(~clean).tolist():
            out += want.row_differences(table, i, is_lines)
    if not lines_sheets:
        return out + [(None, "no Lines sheet (a sheet named Lines with a header row naming "
                             "line_id and amount) to check the figures against")]
    missing = want.missing()
    where = ", ".join(lines_sheets)
    for lid in missing[:MAX_DIFFS]:
        out.append((None, f"ledger line {lid} is not on the sheet(s) {where}"))
    if len(missing) > MAX_DIFFS:
        out.append((None, f"and {len(missing) - MAX_DIFFS} more ledger lines are not on "
                          f"the sheet(s) {where}"))
    return out


class _Ledger:
    """A claim's ledger lines as the read-back compares them — its columns as arrays, each
    funder's lines, the text columns as bytes — worked out once for the claim workbook and
    all its statements (`_read_back` makes one and passes it to workbook_differences for
    each workbook)."""

    COLUMNS = ("line_id", *_TEXT_COLUMNS, *_MONEY_COLUMNS)

    def __init__(self, lines: pd.DataFrame):
        self.arrays = {k: lines[k].to_numpy() for k in self.COLUMNS}
        self._groups: dict | None = None
        self._encoded: dict[str, np.ndarray | None] = {}
        self._unique: bool | None = None
        self._by_id: dict | None = None
        self._index: pd.Index | None = None
        self._codes: dict[str, tuple] = {}

    def funder_lines(self, funder: str) -> np.ndarray:
        """The indices of the lines whose funder is `funder` (lines["funder"] == funder)."""
        f = self.arrays["funder"]
        if self._groups is None:
            self._groups = {}
            if pd.api.types.infer_dtype(f, skipna=False) == "string":
                codes, uniques = pd.factorize(f)
                order = np.argsort(codes, kind="stable")
                bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
                self._groups = {u: order[bounds[i]:bounds[i + 1]]
                                for i, u in enumerate(uniques.tolist())}
        if self._groups or not len(f):
            return self._groups.get(funder, np.zeros(0, dtype=np.intp))
        return np.flatnonzero(f == funder)

    def encoded(self, k: str) -> np.ndarray | None:
        """Column k as UTF-8 bytes; None unless all its values are strings."""
        if k not in self._encoded:
            v = self.arrays[k]
            out = None
            if not len(v):
                out = np.zeros(0, dtype="S1")
            elif pd.api.types.infer_dtype(v, skipna=False) == "string":
                try:
                    out = np.array(v.tolist(), dtype="S")
                except UnicodeEncodeError:
                    out = np.array([x.encode("utf-8") for x in v.tolist()], dtype="S")
            self._encoded[k] = out
        return self._encoded[k]

    def by_id(self) -> dict:
        if self._by_id is None:
            self._by_id = {x: j for j, x in enumerate(self.arrays["line_id"].tolist())}
        return self._by_id

    def index(self) -> pd.Index:
        """The line ids as an index (for finding many at once; they are unique)."""
        if self._index is None:
            self._index = pd.Index(self.arrays["line_id"])
        return self._index

    def codes(self, k: str) -> tuple[np.ndarray | None, dict]:
        """Column k as codes into its distinct values, and value (as UTF-8) → code; None
        unless all its values are strings."""
        if k not in self._codes:
            v = self.arrays[k]
            if len(v) and pd.api.types.infer_dtype(v, skipna=False) == "string":
                codes, uniques = pd.factorize(v)
                self._codes[k] = (np.asarray(codes, dtype=np.int64),
                                  {u.encode("utf-8"): i for i, u in enumerate(uniques.tolist())})
            else:
                self._codes[k] = (None, {})
        return self._codes[k]

    def unique(self) -> bool:
        """Whether no line id repeats."""
        if self._unique is None:
            ids = self.arrays["line_id"]
            self._unique = len(ids) < 2 or bool(pd.Index(ids).is_unique)
        return self._unique


class _Columns(dict):
    """The ledger's columns at some lines (`at`; None: all), each taken when first used."""

    def __init__(self, arrays: dict, at: np.ndarray | None):
        super().__init__()
        self.arrays, self.at = arrays, at

    def __missing__(self, k: str) -> np.ndarray:
        v = self.arrays[k]
        self[k] = v = v if self.at is None else v[self.at]
        return v


class _Want:
    """The ledger lines a workbook must show (a funder's, for its statement), held for
    comparing whole columns of a sheet at once.

    ids: their line ids, in ledger order; row_line: per row of the table last compared,
    its line's index (-1: none); on_lines: lines found on a Lines sheet (by index, or by
    id in `on_ids` when ids repeat, as the set of ids the check has always used)."""

    def __init__(self, ledger: "_Ledger", funder: str | None):
        self.ledger = ledger
        self.at = None if funder is None else self.ledger.funder_lines(funder)
        self.values = _Columns(self.ledger.arrays, self.at)
        self.funder = funder
        self.n = len(self.ledger.arrays["line_id"]) if self.at is None else len(self.at)
        self.on_lines = np.zeros(self.n + 1, dtype=bool)  # + a slot for "none" (-1)
        self.on_ids: set[str] = set()
        self.row_line = np.zeros(0, dtype=np.int64)
        self._by_id: dict | None = None
        self._encoded: dict[str, np.ndarray | None] = {}

    @property
    def ids(self) -> np.ndarray:
        return self.values["line_id"]

    # -- the bulk comparison --

    def clean(self, table) -> np.ndarray:
        """Per row of `table`: True where openpyxl's values would pass the row check
        without a message (a plain line id of these lines, every audited cell plainly the
        ledger's); sets `row_line` for those rows."""
        from sib.xlsx_read import NUMBER, TEXT
        n = len(table.rows)
        self.row_line = np.full(n, -1, dtype=np.int64)
        ids = self._encode("line_id")
        lid = table.columns["line_id"]
        if n == 0 or ids is None or not self.ledger.unique():
            return np.zeros(n, dtype=bool)
        ok = (lid.kind == TEXT) & _plain_ids(lid.raw)
        rows = np.flatnonzero(ok)
        line = self._lines_of(lid.raw[rows], ids)
        ok[rows] = line >= 0
        rows = rows[line >= 0]
        line = line[line >= 0]
        self.row_line[rows] = line
        for k in _MONEY_COLUMNS:
            if k in table.columns:
                c = table.columns[k]
                ledger = self.values[k]
                if ledger.dtype != np.int64:
                    ok[rows] = False
                    continue
                codes, uniques = c.distinct()  # a column holds few distinct amounts
                read = [_pence_of_text(u) for u in uniques]
                known = np.array([p is not None for p in read] + [False])
                pence = np.array([p or 0 for p in read] + [0], dtype=np.int64)
                at = codes[rows]
                ok[rows] &= (c.kind[rows] == NUMBER) & known[at] & (pence[at] == ledger[line])
        for k in _TEXT_COLUMNS:
            if k in table.columns:
                c = table.columns[k]
                ok[rows] &= (c.kind[rows] == TEXT) & self._same_text(k, c, rows, line)
        self.row_line[~ok] = -1
        return ok

    def _same_text(self, k: str, c, rows: np.ndarray, line: np.ndarray) -> np.ndarray:
        """Per row: whether column c's text is the ledger's value of k for `line`."""
        if k == "funder" and self.funder is not None:
            return c.raw[rows] == self.funder.encode("utf-8")
        if k in ("funder", "kind"):  # few distinct values: compared by their codes
            codes, uniques = c.distinct()
            ledger_codes, of_text = self.ledger.codes(k)
            if ledger_codes is None:
                return np.zeros(len(rows), dtype=bool)
            mine = np.array([of_text.get(u, -2) for u in uniques] + [-2], dtype=np.int64)
            theirs = ledger_codes if self.at is None else ledger_codes[self.at]
            return mine[codes[rows]] == theirs[line]
        ledger = self._encode(k)
        if ledger is None:
            return np.zeros(len(rows), dtype=bool)
        return c.raw[rows] == ledger[line]

    def _lines_of(self, raw: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The index of each id in `raw` among the lines, -1 if none: the rows of a Lines
        sheet follow the ledger, so first try them as one run of it."""
        m = len(raw)
        if m == 0:
            return np.zeros(0, dtype=np.int64)
        first = np.flatnonzero(ids == raw[0])
        if len(first) == 1 and int(first[0]) + m <= self.n:
            k0 = int(first[0])
            if (ids[k0:k0 + m] == raw).all():
                return np.arange(k0, k0 + m, dtype=np.int64)
        try:
            texts = [b.decode("utf-8") for b in raw.tolist()]
        except UnicodeDecodeError:
            return np.full(m, -1, dtype=np.int64)
        found = self.ledger.index().get_indexer(texts)  # (ids are unique here)
        if self.at is not None:
            inverse = np.full(len(self.ledger.arrays["line_id"]) + 1, -1, dtype=np.int64)
            inverse[self.at] = np.arange(self.n)
            found = inverse[found]
        return found

    def by_id(self) -> dict:
        """Line id → index among these lines (the last, when one repeats)."""
        if self._by_id is None:
            self._by_id = self.ledger.by_id() if self.at is None else \
                {x: j for j, x in enumerate(self.ids.tolist())}
        return self._by_id

    def _encode(self, k: str) -> np.ndarray | None:
        """Column k of the lines as UTF-8 bytes; None unless all are strings."""
        if k not in self._encoded:
            v = self.ledger.encoded(k)
            self._encoded[k] = v if v is None or self.at is None else v[self.at]
        return self._encoded[k]

    # -- one row at a time, as ever --

    def row_differences(self, table, i: int, is_lines: bool) -> list[tuple[int | None, str]]:
        """The findings of row i of `table`: the row check, as openpyxl's values give it."""
        r = int(table.rows[i])
        cols = table.columns
        lid = cols["line_id"].value(i)
        if lid is None or str(lid).strip() == "":
            return []
        lid = str(lid).strip()
        where = f"sheet {table.title} row {r}"
        j = self.by_id().get(lid)
        if j is None:
            return [(r, f"{where}: {lid} is not a ledger line of this "
                        f"{'funder' if self.funder is not None else 'claim'}")]
        if is_lines:
            self.on_ids.add(lid)
        out = []
        for k in (*_MONEY_COLUMNS, *_TEXT_COLUMNS):
            if k not in cols:
                continue
            v, want = cols[k].value(i), self.values[k][j]
            if k in _MONEY_COLUMNS:  # money: the cell's pence; text: the cell as text
                same, shown = _pence_of(v) == int(want), money.fmt_amount(int(want))
            else:
                same, shown = str(v) == str(want), repr(want)
            if not same:
                out.append((r, f"{where}: {k} of {lid} is {v!r}, the ledger's is {shown}"))
        return out

    def missing(self) -> list:
        """The lines on no Lines sheet, in ledger order."""
        if not self.on_ids and self.ledger.unique():
            off = np.flatnonzero(~self.on_lines[:self.n])
            return self.ledger.arrays["line_id"][off if self.at is None else self.at[off]].tolist()
        on = self.on_ids | set(self.ids[self.on_lines[:self.n]].tolist())
        return [x for x in self.ids.tolist() if x not in on]


def _plain_ids(raw: np.ndarray) -> np.ndarray:
    """Per bytes value: whether, as text, str(v).strip() is itself and not empty (ASCII,
    no white space at either end)."""
    if not len(raw):
        return np.zeros(0, dtype=bool)
    w = raw.dtype.itemsize
    b = raw.view(np.uint8).reshape(len(raw), w)
    n = np.char.str_len(raw)
    first = b[:, 0]
    last = b[np.arange(len(raw)), np.maximum(n - 1, 0)]
    space = lambda c: (c == 32) | ((c >= 9) & (c <= 13)) | ((c >= 28) & (c <= 31))  # noqa: E731
    ok = (n > 0) & ~space(first) & ~space(last)
    if b.max(initial=0) >= 128:
        ok &= (b < 128).all(axis=1)
    return ok


@lru_cache(maxsize=4096)
def _pence_of_text(u: bytes) -> int | None:
    """`_pence_of` of the value openpyxl reads from a NUMBER cell's text (an int, or a
    float if the text has '.', 'e' or 'E'); None if that is no amount of pence."""
    try:
        text = u.decode("ascii")
        p = _pence_of(int(text) if not any(c in text for c in ".eE") else float(text))
    except (UnicodeDecodeError, ValueError, OverflowError):
        return None
    return p if p is not None and abs(p) < 1 << 62 else None
