"""`sib audit`: verify every issued claim of a contract; and reading issued claims back.

After issue.py in the flow (explain.py, report.py and cli.py come after it). For each claim
folder under `ledgers/<id>/`, in period order, `audit` checks what ledger.md § Audit asks:

  sequence    claims go in order without gaps, each in its own folder  missing-claim, misplaced-claim
  chain       each manifest names the hash of the one before           chain-broken
  files       every file hash in the manifest; nothing added; each     file-hash, file-missing,
              compressed inputs/ copy decompresses to the size and     file-unlisted, bad-input
              SHA-256 the manifest's `compressed` records
  replay      the claim recomputed from its inputs/ and the earlier    replay-mismatch, replay-failed
              ledgers by the same engine (`compute_claim`) gives
              ledger.csv and decisions.csv byte for byte
  totals      the manifest's totals and counts are the lines' and      totals-mismatch, decision-mismatch
              the decisions'; decisions agree with the lines
  invariants  claim-rules.md's invariants, each at the line that       funder-cap-exceeded, … (INVARIANT_CODES)
              breaks it
  workbooks   claim.xlsx and statements/*.xlsx, when the claim has     workbook-mismatch
              them, read back and compared with the ledger

Every finding is a `Problem` located as `ledgers/<id>/<period>/<file>[:line]`. Files that
cannot be parsed give `bad-manifest` / `bad-ledger`; a folder that is no claim gives
`stray-entry`. Evidence in inputs/ is read through `read_input`, which decompresses a
`.gz` copy (issue.py stores large CSV files so) and checks it against the manifest, so the
replay and explain.py see the bytes the claim read, compressed or not. Must not write,
print or read the clock; progress goes to a callback.
"""

from __future__ import annotations

import difflib
import io
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from pydantic import ValidationError

from sib import money
from sib.contract import Contract, LoadedContract, check_contract, limit_of
from sib.evidence import Source, validate_evidence
from sib.issue import COMPRESSED_SUFFIX, MAX_EXPANDED, expand_gzip, ledger_dir, \
    original_name, sha256
from sib.ledger import DECISION_COLUMNS, MANIFEST_FORMAT, History, empty_lines, parse_amounts, \
    parse_ledger, render_decisions, render_ledger
from sib.period import KINDS, Period, PeriodError, parse_period, period_containing
from sib.problems import Problem, SibError, sort_problems
from sib.reconcile import DECISIONS, compute_claim, standing_lines
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
          progress: Progress | None = None) -> AuditReport:
    """Audit every issued claim of a contract; `progress(done, total, period)` after each."""
    cid, root, shown_root = contract_ledgers(workspace, contract_id)
    folders, stray = claim_folders(root, shown_root)
    auditor = _Auditor(cid, workspace)
    auditor.findings += stray
    claims = []
    for k, folder in enumerate(folders):
        claims.append(auditor.claim(folder))
        if progress is not None:
            progress(k + 1, len(folders), folder.label)
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

    def skip(self, step: str, why: str) -> None:
        if self.checks[step] == "ok":
            self.checks[step] = "skipped"
            self.notes.append(f"{step}: {why}")


class _Auditor:
    """Walks the claims in order, carrying what later claims are checked against."""

    def __init__(self, contract_id: str, workspace: Path):
        self.cid = contract_id
        self.workspace = workspace
        self.findings: list[Problem] = []
        self.prev: ClaimFolder | None = None
        self.first: Period | None = None
        self.expected: Period | None = None
        self.history: list[pd.DataFrame] = []   # issued lines as the next claim read them
        self.history_periods: list[str] = []
        self.disk: list[pd.DataFrame] = []      # lines as they are on disk now
        self.broken = ""                        # why replays cannot go on ('' when they can)

    def add(self, cl: _Claim, step: str, path: str, line: int | None, code: str,
            message: str, col: int | None = None) -> None:
        self.findings.append(Problem(path, line, col, code, message))
        cl.checks[step] = "failed"

    def mline(self, cl: _Claim, *key: str) -> int | None:
        return json_line(cl.manifest_text, key) if cl.manifest_text else None

    def claim(self, f: ClaimFolder) -> ClaimAudit:
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
        replayed = self._replay(cl)
        if f.manifest is not None and cl.lines is not None:
            self._totals(cl)
        else:
            cl.skip("totals", "no usable manifest or ledger.csv")
        self._invariants(cl)
        if f.manifest is not None:
            self._workbooks(cl)
        # what the next claim read as history: the issued ledger, recovered by the replay
        # when the file on disk was changed after issue
        disk = cl.lines if cl.lines is not None else empty_lines()
        hist = disk
        want = (f.manifest or {}).get("files", {}).get("ledger.csv")
        if want and sha256(cl.data.get("ledger.csv", b"")) != want and replayed is not None \
                and sha256(replayed) == want:
            hist, _ = parse_ledger(replayed.decode("utf-8"), f.file("ledger.csv"))
        self.history.append(hist)
        self.history_periods.append(f.label)
        self.disk.append(disk if cl.lines is not None else hist)  # unreadable: best known
        self.prev = f
        self.expected = f.period.next()
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

    def _replay(self, cl: _Claim) -> bytes | None:
        """Recompute the claim and compare; the replayed ledger.csv bytes (None if not run)."""
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
        ev = validate_evidence(lc, srcs["participants"], srcs["milestones"])
        skip_invalid = bool((m.get("options") or {}).get("skip_invalid", False))
        where = {srcs[t].shown: f.file(f.input_name(t)) for t in srcs}
        if ev.problems and (ev.file_problems or not skip_invalid):
            for p in ev.problems[:20]:
                self.add(cl, "replay", where.get(p.path, p.path), p.line, "replay-failed",
                         f"the evidence the claim read has a problem ({p.code}: {p.message})",
                         p.col)
            return None
        hist = History(tuple(self.history_periods),
                       pd.concat(self.history, ignore_index=True) if self.history else empty_lines())
        try:
            claim = compute_claim(lc.contract, ev, hist, f.period)
        except SibError as e:
            self.add(cl, "replay", f.file("ledger.csv"), None, "replay-failed",
                     f"the engine refuses to recompute the claim: {e}")
            return None
        if claim.problems:
            for p in claim.problems:
                self.add(cl, "replay", where.get(p.path, p.path), p.line, "replay-failed",
                         f"the engine refuses to recompute the claim ({p.code}: {p.message})")
            return None
        new_ledger = render_ledger(claim.lines).encode("utf-8")
        new_dec = render_decisions(claim.decisions).encode("utf-8")
        for name, new in (("ledger.csv", new_ledger), ("decisions.csv", new_dec)):
            old = cl.data.get(name)
            if old is not None and old != new:
                for line, message in _differences(old, new):
                    self.add(cl, "replay", f.file(name), line, "replay-mismatch", message)
        if cl.decisions is not None and len(cl.decisions) != claim.rows_in:
            self.add(cl, "invariants", f.file("decisions.csv"), None, "one-decision-per-row",
                     f"{len(cl.decisions)} decisions for the {claim.rows_in} milestone rows of "
                     "the evidence the claim read; each row has exactly one")
        return new_ledger

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
        for mid in sorted(paying - set(d["milestone_id"]))[:MAX_DIFFS]:
            self.add(cl, "totals", f.file("ledger.csv"), _first_line(lines, mid),
                     "decision-mismatch", f"milestone {mid} is paid here but has no row in "
                     "decisions.csv")
        dup = d["milestone_id"].duplicated().to_numpy()
        for i in np.flatnonzero(dup)[:MAX_DIFFS]:
            self.add(cl, "invariants", f.file("decisions.csv"), int(i) + 2,
                     "one-decision-per-row", f"milestone {d['milestone_id'].iat[i]} has a second "
                     "decision; each milestone row has exactly one")

    # --- invariants ---

    def _invariants(self, cl: _Claim) -> None:
        f, lines = cl.f, cl.lines
        if lines is None or cl.lc is None:
            cl.skip("invariants", "no readable ledger.csv or contract")
            return
        c = cl.lc.contract
        shown = f.file("ledger.csv")
        before = pd.concat(self.disk, ignore_index=True) if self.disk else empty_lines()
        for line, code, message in invariant_violations(c, before, lines,
                                                        check_reversals=not self.broken):
            self.add(cl, "invariants", shown, line, code, message)

    # --- workbooks ---

    def _workbooks(self, cl: _Claim) -> None:
        f = cl.f
        books = [n for n in sorted(f.manifest["files"])
                 if n == "claim.xlsx" or (n.startswith("statements/") and n.endswith(".xlsx"))]
        if not books:
            cl.checks["workbooks"] = "absent"
            return
        if cl.lines is None:
            cl.skip("workbooks", "no readable ledger.csv to compare with")
            return
        for name in books:
            raw = cl.data.get(name)
            if raw is None:
                continue  # file-missing says so
            for line, message in workbook_differences(name, raw, cl.lines):
                self.add(cl, "workbooks", f.file(name), line, "workbook-mismatch", message)


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

def invariant_violations(c: Contract, before: pd.DataFrame, lines: pd.DataFrame,
                         check_reversals: bool = True) -> list[tuple[int, str, str]]:
    """(line in ledger.csv, code, message) for each invariant the claim's `lines` break,
    given the lines of every earlier claim (`before`). Only what this claim's lines cause is
    reported, so a breach is found once, in the claim that made it."""
    out: list[tuple[int, str, str]] = []
    n0 = len(before)
    both = pd.concat([before, lines], ignore_index=True)
    row = lambda i: int(i) + 2  # noqa: E731 - ledger.csv line of lines' i-th row
    fmt = money.fmt_gbp
    pay = (lines["kind"] == "payment").to_numpy()
    amt = lines["amount"].to_numpy(dtype=np.int64)

    bad = np.flatnonzero(pay & ((amt < 0) | (lines["capped"].to_numpy(dtype=np.int64) < 0)))
    for i in bad[:MAX_DIFFS]:
        out.append((row(i), "negative-payment", f"a payment line of {fmt(int(amt[i]))} "
                    f"(capped {fmt(int(lines['capped'].iat[i]))}); payments are never negative"))

    # §4: each payment's lines are its price split by its shares, to the penny
    pays = lines[pay]
    for mid, g in pays.groupby("milestone_id", sort=False):
        units = g["share"].astype(np.int64).tolist()
        price = int(g["price"].iat[0])
        whole = [int(a) + int(k) for a, k in zip(g["amount"], g["capped"])]
        if sum(units) != money.SHARE_UNITS:
            out.append((row(g.index[0]), "split-mismatch",
                        f"milestone {mid}: the shares add up to "
                        f"{money.fmt_share(sum(units))}%, not 100%"))
            continue
        full = money.split(price, units)
        wrong = [k for k, (w, p) in enumerate(zip(whole, full)) if w != p]
        if wrong or g["price"].nunique() != 1:
            k = wrong[0] if wrong else 0
            out.append((row(g.index[k]), "split-mismatch",
                        f"milestone {mid}: {g['funder'].iat[k]}'s amount + capped is "
                        f"{fmt(whole[k])}, but its part of the price {fmt(price)} at "
                        f"{money.fmt_share(units[k])}% is {fmt(full[k])}"))

    if check_reversals:
        standing_before = standing_lines(before).set_index("line_id")
        seen: set[str] = set()
        for i in np.flatnonzero(~pay):
            r = lines.iloc[i]
            target = r["reverses"]
            why = ""
            if target in seen:
                why = f"reverses {target} a second time"
            elif target not in standing_before.index:
                why = f"reverses {target or '(blank)'}, which is no standing payment line of an earlier claim"
            else:
                o = standing_before.loc[target]
                diff = [k for k in ("milestone_id", "funder", "share", "price", "price_from")
                        if o[k] != r[k]]
                if diff:
                    why = f"its {', '.join(diff)} differ from {target}'s"
                elif int(r["amount"]) != -int(o["amount"]):
                    why = (f"it is {fmt(int(r['amount']))} but {target} paid "
                           f"{fmt(int(o['amount']))}")
            seen.add(target)
            if why:
                out.append((row(i), "bad-reversal", f"reversal of milestone "
                            f"{r['milestone_id']}: {why}"))

    # caps: the line whose payment takes a running total from within a cap to over it
    # (reversals come first in a claim, so the headroom they free counts). Only the crossing
    # is reported: a total already over its cap was reported where it crossed, and any later
    # payment to it is the replay's to judge
    def over(keys: pd.Series | None, cap_of, code: str, what) -> None:
        amounts = both["amount"]
        cum = amounts.groupby(keys).cumsum() if keys is not None else amounts.cumsum()
        cum = cum.to_numpy(dtype=np.int64)[n0:]
        key_vals = keys.to_numpy(dtype=object)[n0:] if keys is not None else [None] * len(lines)
        reported = set()
        for i in np.flatnonzero(amt > 0):
            k = key_vals[i]
            cap = cap_of(k)
            if cap is not None and cum[i] > cap >= cum[i] - amt[i] and k not in reported:
                reported.add(k)
                out.append((row(i), code, f"{what(k)} reaches {fmt(int(cum[i]))} with this "
                            f"line, over its cap of {fmt(cap)}"))

    fcap = {fu.id: money.pence(fu.cap) for fu in c.funders if fu.cap is not None}
    over(both["funder"], fcap.get, "funder-cap-exceeded", lambda k: f"funder {k}'s total")
    if c.caps and c.caps.contract is not None:
        ccap = money.pence(c.caps.contract)
        over(None, lambda k: ccap, "contract-cap-exceeded", lambda k: "the contract's total")
    if c.caps and c.caps.participant is not None:
        pcap = money.pence(c.caps.participant)
        over(both["participant_id"], lambda k: pcap, "participant-cap-exceeded",
             lambda k: f"participant {k}'s total")

    # what each milestone holds after this claim
    st = standing_lines(both)
    touched = set(lines["milestone_id"])
    mine = st[st["milestone_id"].isin(touched)]
    per_m = mine.groupby("milestone_id").agg(amount=("amount", "sum"), price=("price", "max"),
                                             periods=("period", "nunique"))
    for mid, r in per_m[per_m["amount"] > per_m["price"]].head(MAX_DIFFS).iterrows():
        out.append((_first_line(lines, mid), "standing-over-price",
                    f"milestone {mid} holds {fmt(int(r['amount']))} after this claim, more than "
                    f"its price {fmt(int(r['price']))}"))
    paid_here = set(lines.loc[pay, "milestone_id"])
    for mid in [m_ for m_ in per_m.index[per_m["periods"] > 1] if m_ in paid_here][:MAX_DIFFS]:
        out.append((_first_line(lines, mid), "double-payment",
                    f"milestone {mid} is paid here while a payment of an earlier claim for it "
                    "still stands; a milestone is paid once (reverse the earlier payment first)"))
    net = both[both["milestone_id"].isin(touched)].groupby("milestone_id")["amount"].sum()
    for mid, v in net[net < 0].head(MAX_DIFFS).items():
        out.append((_first_line(lines, mid), "negative-standing",
                    f"milestone {mid} nets {fmt(int(v))} after this claim; a reversal cancels "
                    "no more than was paid"))

    # per-participant limits, counted over standing milestones
    keys = {o.id: limit_of(c, o) for o in c.outcomes}
    ms = st.drop_duplicates("milestone_id")
    if len(ms) and pay.any():
        lk = ms["outcome"].map(lambda o: keys.get(o, (f"outcome:{o}", 1))[0])
        lim = ms["outcome"].map(lambda o: keys.get(o, (f"outcome:{o}", 1))[1])
        counts = ms.assign(lk=lk, lim=lim).groupby(["participant_id", "lk"]).agg(
            n=("milestone_id", "size"), lim=("lim", "first"))
        here = lines[pay].assign(lk=lines.loc[pay, "outcome"].map(
            lambda o: keys.get(o, (f"outcome:{o}", 1))[0]))
        here_keys = set(zip(here["participant_id"], here["lk"]))
        for (p, k), r in counts[counts["n"] > counts["lim"]].iterrows():
            if (p, k) not in here_keys:
                continue
            hit = here[(here["participant_id"] == p) & (here["lk"] == k)]
            what = k.split(":", 1)[1] + (" (group)" if k.startswith("group:") else "")
            out.append((row(hit.index[0]), "limit-exceeded",
                        f"participant {p} holds {r['n']} payments of {what}, over its limit of "
                        f"{r['lim']} per participant"))
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


def workbook_differences(name: str, raw: bytes, lines: pd.DataFrame) -> list[tuple[int | None, str]]:
    """Where a claim workbook or funder statement disagrees with the claim's ledger lines.

    Reads back every sheet whose header row (within its first 20 rows) names `line_id` and
    `amount` (Lines, Corrections): each of its rows must be a line of this claim (of that
    funder, for statements/<funder>.xlsx) with the ledger's money in number cells and the
    same funder, milestone and kind. The Lines sheets — `Lines`, `Lines (2)`, … as
    sib.workbook writes them (claim-workbook.md §4) — must hold every one of those lines.
    Formula cells are not evaluated (openpyxl cannot): the workbook's totals are formulas
    over the Lines sheets, so checking the lines checks what the totals add up.
    """
    import openpyxl  # read back only; writing workbooks is sib.workbook's

    statement = name.startswith("statements/")
    want = lines[lines["funder"] == Path(name).stem] if statement else lines
    by_id = {lid: i for i, lid in enumerate(want["line_id"].tolist())}
    try:
        wb = openpyxl.load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged or hostile file
        return [(None, f"cannot be read as a workbook ({type(e).__name__}); it should be the "
                       "one sib wrote")]
    out: list[tuple[int | None, str]] = []
    on_lines: set[str] = set()
    lines_sheets = []
    try:
        for ws in wb.worksheets:
            rows = ws.iter_rows(values_only=True)
            header, start = None, 0
            for r, values in enumerate(rows, start=1):
                keys = [_header_key(v) for v in values]
                if "line_id" in keys and "amount" in keys:
                    header, start = keys, r
                    break
                if r >= 20:
                    break
            if header is None:
                continue
            is_lines = bool(_LINES_SHEET.match(ws.title.strip().lower()))
            if is_lines:
                lines_sheets.append(ws.title)
            col = {k: i for i, k in reversed(list(enumerate(header))) if k}
            for r, values in enumerate(rows, start=start + 1):
                cell = lambda k: values[col[k]] if k in col and col[k] < len(values) else None  # noqa: E731
                lid = cell("line_id")
                if lid is None or str(lid).strip() == "":
                    continue
                lid = str(lid).strip()
                where = f"sheet {ws.title} row {r}"
                if lid not in by_id:
                    out.append((r, f"{where}: {lid} is not a ledger line of this "
                                   f"{'funder' if statement else 'claim'}"))
                    continue
                if is_lines:
                    on_lines.add(lid)
                line = want.iloc[by_id[lid]]
                for k in ("price", "amount", "capped"):
                    if k in col and _pence_of(cell(k)) != int(line[k]):
                        out.append((r, f"{where}: {k} of {lid} is {cell(k)!r}, the ledger's is "
                                       f"{money.fmt_amount(int(line[k]))}"))
                for k in ("funder", "milestone_id", "kind"):
                    if k in col and str(cell(k)) != str(line[k]):
                        out.append((r, f"{where}: {k} of {lid} is {cell(k)!r}, the ledger's is "
                                       f"{line[k]!r}"))
    finally:
        wb.close()
    if not lines_sheets:
        return out + [(None, "no Lines sheet (a sheet named Lines with a header row naming "
                             "line_id and amount) to check the figures against")]
    missing = [x for x in want["line_id"] if x not in on_lines]
    where = ", ".join(lines_sheets)
    for lid in missing[:MAX_DIFFS]:
        out.append((None, f"ledger line {lid} is not on the sheet(s) {where}"))
    if len(missing) > MAX_DIFFS:
        out.append((None, f"and {len(missing) - MAX_DIFFS} more ledger lines are not on "
                          f"the sheet(s) {where}"))
    return out
