"""Scenario tests of the claim engine, as data: one story per tests/scenarios/*.yaml.

Each scenario is a tiny contract, the evidence of one or more claims, and what each claim
must issue — written from claim-rules.md and ledger.md with the arithmetic beside every
amount, never copied from sib's output. The runner builds a workspace in `tmp_path`,
issues the claims in order through the real CLI (`sib claim --period P -w DIR`), and
compares ledger.csv and decisions.csv with the expectation.

A scenario file:

    why: one sentence on why the case exists
    xfail: ...              # optional: a known engine bug (strict xfail), with the fix
    allow_contract_problems: [code, ...]   # optional: contract-check codes to let through,
                                           # for a rule a checked contract cannot reach
    contract: |             # a full sib-contract/1 text with `id: scenario`
    participants: |         # CSV text, used by every claim that gives none of its own
    claims:
      - period: 2022-Q1
        contract: |         # optional: the contract from this claim on (a variation)
        participants: |     # optional: from this claim on
        milestones: |       # CSV text (the first claim must give it; later ones inherit)
        skip_invalid: true  # optional: --skip-invalid
        expect:
          ledger: |         # every data row of ledger.csv, in order; `# ...` is a comment
          decisions:        # every milestone: [decision, reason, amount, capped]
            M1: [paid, "", "100.00"]
            M2: [paid, funder-cap, "60.00", "40.00"]   # paid in part: the cap's code
            M3: [rejected, withdrawn]      # amount and capped default to 0.00
      - period: 2022-Q3
        expect:
          refused: words    # sib must refuse this claim (exit 1, nothing written)

Every claim is also checked for what holds whatever the scenario: rows in = the six
decision counts (and one decision per distinct milestone of the evidence), the manifest's
totals equal the sum of the ledger lines (overall, capped, per funder, per funder kind),
each decision's amount is the net of its lines, and re-running the issued period with the
same inputs says it is unchanged. A reason "*" in a scenario is left unchecked.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import sib.contract
from sib.cli import cli

SCENARIOS = Path(__file__).parent / "scenarios"
FILES = sorted(SCENARIOS.glob("*.yaml"))
DECISIONS = ("paid", "re-rated", "reversed", "paid-earlier", "pending-verification", "rejected")
LEDGER_HEADER = ("line_id,period,kind,milestone_id,participant_id,outcome,achieved_on,"
                 "verified_on,evidence_ref,price_from,price,funder,share,amount,capped,cap,"
                 "late,reverses")
DECISIONS_HEADER = "milestone_id,participant_id,milestone,outcome,decision,reason,detail,amount,capped"
SCENARIO_KEYS = {"why", "xfail", "allow_contract_problems", "contract", "participants", "claims"}
CLAIM_KEYS = {"period", "contract", "participants", "milestones", "skip_invalid", "expect"}
_COMMENT = re.compile(r"(^|\s)#.*$")


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text("utf-8"))
    assert isinstance(data, dict), f"{path.name}: not a mapping"
    assert not set(data) - SCENARIO_KEYS, f"{path.name}: unknown keys {set(data) - SCENARIO_KEYS}"
    assert data.get("why"), f"{path.name}: say why the scenario exists"
    assert data.get("contract") and data.get("claims"), f"{path.name}: needs contract and claims"
    for claim in data["claims"]:
        assert not set(claim) - CLAIM_KEYS, f"{path.name}: unknown claim keys {set(claim) - CLAIM_KEYS}"
    return data


def _params():
    out = []
    for path in FILES:
        data = _load(path)
        marks = [pytest.mark.xfail(strict=True, reason=data["xfail"])] if data.get("xfail") else []
        out.append(pytest.param(path, id=path.stem, marks=marks))
    return out


def _expected_rows(text: str | None) -> list[str]:
    """The rows of an expected ledger block: comments and blank lines dropped."""
    rows = []
    for line in (text or "").splitlines():
        line = _COMMENT.sub("", line).strip()
        if line:
            rows.append(line)
    return rows


def _money(v) -> str:
    return f"{Decimal(str(v)):.2f}"


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _distinct_milestones(milestones_csv: str) -> int:
    """Milestone rows as sib counts them: one per distinct milestone_id (blank ids apart)."""
    reader = csv.reader(io.StringIO(milestones_csv.strip() + "\n"))
    header = [h.strip().lower() for h in next(reader)]
    at = header.index("milestone_id")
    ids = [row[at].strip() if at < len(row) else "" for row in reader if any(c.strip() for c in row)]
    return len({i for i in ids if i}) + sum(1 for i in ids if not i)


def _funder_kinds(contract_text: str) -> dict[str, str]:
    return {f["id"]: f["kind"] for f in yaml.safe_load(contract_text)["funders"]}


def _claim(runner: CliRunner, ws: Path, period: str, skip_invalid: bool):
    args = ["claim", "--period", period, "-w", str(ws)] + (["--skip-invalid"] if skip_invalid else [])
    return runner.invoke(cli, args, catch_exceptions=False)


@pytest.mark.parametrize("path", _params())
def test_scenario(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sc = _load(path)
    allowed = set(sc.get("allow_contract_problems") or ())
    if allowed:
        checks = sib.contract.check_contract
        monkeypatch.setattr(sib.contract, "check_contract",
                            lambda lc, stem: [p for p in checks(lc, stem) if p.code not in allowed])

    ws = tmp_path
    (ws / "contracts").mkdir()
    (ws / "evidence" / "scenario").mkdir(parents=True)
    (ws / "ledgers").mkdir()
    contract, participants, milestones = sc["contract"], sc.get("participants"), None
    runner = CliRunner()

    for n, claim in enumerate(sc["claims"], 1):
        period = claim["period"]
        where = f"{path.name}: claim {n} ({period})"
        contract = claim.get("contract", contract)
        participants = claim.get("participants", participants)
        milestones = claim.get("milestones", milestones)
        assert participants and milestones, f"{where}: no evidence"
        (ws / "contracts" / "scenario.yaml").write_text(contract, "utf-8")
        (ws / "evidence" / "scenario" / "participants.csv").write_text(participants, "utf-8")
        (ws / "evidence" / "scenario" / "milestones.csv").write_text(milestones, "utf-8")

        result = _claim(runner, ws, period, bool(claim.get("skip_invalid")))
        folder = ws / "ledgers" / "scenario" / period
        expect = claim["expect"]
        if "refused" in expect:  # a claim sib must refuse, writing nothing
            assert result.exit_code == 1, f"{where}: expected a refusal:\n{result.output}"
            assert expect["refused"] in result.output, f"{where}: {result.output}"
            assert not folder.exists(), f"{where}: a refused claim wrote {folder}"
            continue
        assert result.exit_code == 0, f"{where}: sib claim failed:\n{result.output}"

        ledger_text = (folder / "ledger.csv").read_text("utf-8")
        decisions_text = (folder / "decisions.csv").read_text("utf-8")
        manifest = json.loads((folder / "manifest.json").read_text("utf-8"))

        # ledger.csv: the whole file, row by row
        got_rows = ledger_text.splitlines()
        assert got_rows[0] == LEDGER_HEADER
        assert got_rows[1:] == _expected_rows(expect.get("ledger")), f"{where}: ledger.csv"

        # decisions.csv: every milestone, with its decision, reason and money
        assert decisions_text.splitlines()[0] == DECISIONS_HEADER
        got = {r["milestone_id"]: r for r in _csv_rows(decisions_text)}
        want = expect["decisions"]
        assert sorted(got) == sorted(want), f"{where}: decided milestones"
        for mid, spec in want.items():
            decision, reason, *amounts = spec
            assert decision in DECISIONS, f"{where}: {mid}: unknown decision {decision!r}"
            if not amounts:
                assert decision in ("rejected", "pending-verification", "paid-earlier"), \
                    f"{where}: {mid}: give the amount of a {decision} decision"
            amount = _money(amounts[0]) if amounts else "0.00"
            capped = _money(amounts[1]) if len(amounts) > 1 else "0.00"
            r = got[mid]
            actual = (r["decision"], r["reason"] if reason != "*" else "*", r["amount"], r["capped"])
            assert actual == (decision, reason or "", amount, capped), \
                f"{where}: {mid}: {r['detail']}"
            assert r["detail"].strip(), f"{where}: {mid}: a decision needs its sentence"

        # rows in = paid + paid-earlier + re-rated + reversed + pending + rejected
        rows_in = _distinct_milestones(milestones)
        counts = Counter(r["decision"] for r in got.values())
        assert sum(counts[d] for d in DECISIONS) == rows_in == len(got), f"{where}: rows in"
        assert manifest["rows_in"] == rows_in
        assert manifest["decisions"] == {d: counts[d] for d in DECISIONS}

        # the manifest's totals are the sums of the ledger lines
        lines = _csv_rows(ledger_text)
        kinds = _funder_kinds(contract)
        by_funder: dict[str, Decimal] = {}
        by_kind: dict[str, Decimal] = {}
        for ln in lines:
            a = Decimal(ln["amount"])
            by_funder[ln["funder"]] = by_funder.get(ln["funder"], Decimal(0)) + a
            by_kind[kinds[ln["funder"]]] = by_kind.get(kinds[ln["funder"]], Decimal(0)) + a
        totals = manifest["totals"]
        assert Decimal(totals["amount"]) == sum((Decimal(ln["amount"]) for ln in lines), Decimal(0))
        assert Decimal(totals["capped"]) == sum((Decimal(ln["capped"]) for ln in lines), Decimal(0))
        assert {k: Decimal(v) for k, v in totals["by_funder"].items()} == by_funder
        assert {k: Decimal(v) for k, v in totals["by_kind"].items()} == by_kind
        # and each decision's money is its lines' net
        for mid, r in got.items():
            net = sum((Decimal(ln["amount"]) for ln in lines if ln["milestone_id"] == mid), Decimal(0))
            assert Decimal(r["amount"]) == net, f"{where}: {mid}: decision amount vs its lines"

        # re-running the issued claim with the same inputs reproduces it
        again = _claim(runner, ws, period, bool(claim.get("skip_invalid")))
        assert again.exit_code == 0 and "unchanged" in again.output, f"{where}: re-run: {again.output}"


# What the scenarios must cover between them (claim-rules.md §2, §3, §5, §7 and the
# evidence rules): every decision and every reason code, each contract period kind and
# price basis. Only scenarios that pass count (an xfail shows a bug, not coverage).
REQUIRED_REASONS = {
    "unknown-participant", "unknown-milestone", "enrolled-outside-term",
    "participant-ineligible", "achieved-outside-term", "conditions-not-met",
    "evidence-not-accepted", "outside-enrolment-window", "missing-prerequisite",
    "prerequisite-too-old", "no-price", "no-funder-for-route",
    "limit-reached", "volume-cap", "participant-cap", "contract-cap", "funder-cap",
    "withdrawn", "invalid-row", "status-pending", "verified-after-period",
    "changed-split", "changed-outcome", "changed-price",
}


def test_the_scenarios_cover_every_decision_and_reason() -> None:
    decisions, reasons, kinds, bases = set(), set(), set(), set()
    for path in FILES:
        sc = _load(path)
        if sc.get("xfail"):
            continue
        for claim in sc["claims"]:
            for text in (sc["contract"], claim.get("contract") or sc["contract"]):
                c = yaml.safe_load(text)
                kinds.add(c["claims"])
                bases.add(c.get("price_basis", "achieved"))
            for spec in claim["expect"].get("decisions", {}).values():
                decisions.add(spec[0])
                reasons.add(spec[1])
    assert decisions == set(DECISIONS)
    assert REQUIRED_REASONS - reasons == set()
    assert kinds == {"quarter", "fiscal-quarter", "month"}
    assert bases == {"achieved", "enrolled"}
