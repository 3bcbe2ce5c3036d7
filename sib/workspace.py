"""The workspace on disk: where contracts, evidence and ledgers live; `sib check` and `sib init`.

After contract and evidence in the flow. Knows the folder layout
(`contracts/<id>.yaml`, `evidence/<id>/`, `ledgers/<id>/`) and how paths are shown to
users (relative to the workspace). Must not compute money.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sib.contract import LoadedContract, json_schema, load_contract, SLUG
from sib.problems import Problem, ProblemsFound, SibError
import re

_SLUG = re.compile(SLUG)


def shown_path(path: Path, workspace: Path) -> str:
    """A path as users see it: relative to the workspace when inside it."""
    try:
        return str(path.resolve().relative_to(workspace.resolve()))
    except ValueError:
        return str(path)


def contract_paths(workspace: Path) -> list[Path]:
    folder = workspace / "contracts"
    if not folder.is_dir():
        raise SibError(f"{workspace} has no contracts/ folder; run sib in a workspace "
                       "(or pass --workspace DIR, or create one with `sib init DIR`)")
    return sorted(p for p in folder.glob("*.yaml") if p.is_file())


def contract_id_of(workspace: Path, contract_id: str | None) -> str:
    """`contract_id` checked as a slug, or the workspace's only contract's id."""
    if contract_id is None:
        paths = contract_paths(workspace)
        if len(paths) != 1:
            names = ", ".join(p.stem for p in paths) or "none"
            raise SibError(f"the workspace has {len(paths)} contracts ({names}); choose one "
                           "with --contract ID")
        return paths[0].stem
    # fullmatch: with match, '$' also matches before a final line break ('tiny\n')
    if not _SLUG.fullmatch(contract_id):
        raise SibError(f"{contract_id!r} is not a contract id (lower-case letters, digits "
                       "and '-', e.g. west-london-ips)")
    return contract_id


def find_contract(workspace: Path, contract_id: str | None) -> LoadedContract:
    """Load the workspace's contract `contract_id` (or its only contract); problems raise."""
    contract_id = contract_id_of(workspace, contract_id)
    path = workspace / "contracts" / f"{contract_id}.yaml"
    if not path.is_file():
        have = ", ".join(p.stem for p in contract_paths(workspace)) or "none"
        raise SibError(f"no contract '{contract_id}' in {workspace / 'contracts'} "
                       f"(contracts here: {have})")
    lc, problems = load_contract(path, shown_path(path, workspace))
    if problems:
        raise ProblemsFound(problems)
    assert lc is not None
    return lc


@dataclass
class CheckReport:
    """What `sib check` found: each file checked and every problem."""

    checked: list[tuple[str, LoadedContract | None]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        out = []
        bad = {p.path for p in self.problems}
        for shown, lc in self.checked:
            if lc is not None and shown not in bad:
                c = lc.contract
                out.append(f"{shown}: ok — {c.name}: {len(c.funders)} funders, "
                           f"{len(c.outcomes)} outcomes, claims by {c.claims}")
        return out

    def as_json(self) -> dict:
        return {
            "ok": not self.problems,
            "files": [{"path": shown, "ok": lc is not None and not any(
                p.path == shown for p in self.problems)} for shown, lc in self.checked],
            "problems": [p.as_dict() for p in self.problems],
        }


def check_files(workspace: Path, files: list[Path], with_evidence: bool = False) -> CheckReport:
    """Check contract files (default: all in the workspace) and, optionally, their evidence."""
    report = CheckReport()
    if not files:
        files = contract_paths(workspace)
        if not files:
            raise SibError(f"no contract files in {workspace / 'contracts'}; write one "
                           "(`sib init DIR` gives a template)")
    for path in files:
        shown = shown_path(path, workspace)
        if not path.is_file():
            report.problems.append(Problem(shown, None, None, "unreadable",
                                           "no such file; check the path"))
            report.checked.append((shown, None))
            continue
        lc, problems = load_contract(path, shown)
        report.checked.append((shown, lc))
        report.problems += problems
        if with_evidence and lc is not None:
            from sib.evidence import read_evidence
            ev = read_evidence(workspace, lc)
            report.problems += ev.problems
    return report


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def init_workspace(directory: Path) -> list[Path]:
    """Scaffold a workspace; refuses to overwrite anything that exists."""
    targets = {
        directory / "contracts" / "my-contract.yaml":
            resources.files("sib").joinpath("templates/contract.yaml").read_text("utf-8"),
        directory / "schema" / "sib-contract-1.json": schema_text(),
        directory / "evidence" / "my-contract" / "participants.csv":
            "participant_id,enrolled_on\n",
        directory / "evidence" / "my-contract" / "milestones.csv":
            "milestone_id,participant_id,milestone,achieved_on,status,verified_on,"
            "evidence_ref,evidence_type,hours_per_week\n",
    }
    existing = [p for p in targets if p.exists()]
    if existing:
        raise SibError(f"{existing[0]} already exists; `sib init` never overwrites files — "
                       "choose an empty folder")
    written = []
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8", newline="\n") as f:
            f.write(text)
        written.append(path)
    (directory / "ledgers").mkdir(parents=True, exist_ok=True)
    return written
