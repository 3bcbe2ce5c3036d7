"""`sib explain`: a participant's or a milestone's story on the shipped example, claim by claim.

Golden files (tests/test_explain/) pin whole stories; the other tests check that what the
story cites is true: the cited line of the contract holds the rule quoted, the pennies
are the ledger's, and a contract changed since is cited in the copy that decided.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from sib.cli import cli

ROOT = Path(__file__).resolve().parent.parent
CID = "west-london-ips"
CONTRACT = f"contracts/{CID}.yaml"


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """One read-only copy of the shipped example for the module (explain writes nothing)."""
    dest = tmp_path_factory.mktemp("ws")
    for name in ("contracts", "evidence", "ledgers"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns(".lock", ".tmp-*"))
    return dest


def run(ws: Path, *args: str):
    result = CliRunner().invoke(cli, [*args, "-w", str(ws)], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def story(ws: Path, *args: str) -> str:
    result = run(ws, "explain", *args)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout


def explain_json(ws: Path, *args: str) -> dict:
    result = run(ws, "explain", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def contract_line(ws: Path, path: str, n: int) -> str:
    return (ws / path).read_text("utf-8").split("\n")[n - 1]


# --- golden stories --------------------------------------------------------------------------

def test_a_participant_with_re_ratings(ws: Path, file_regression) -> None:
    """WL00013 moved from Harrow to Hounslow after being paid: both payments re-rated."""
    out = story(ws, "--participant", "WL00013")
    assert "re-rated (changed-split)" in out
    file_regression.check(out, basename="participant-WL00013", extension=".txt")


def test_a_rejection_cites_the_rule_that_decided_it(ws: Path, file_regression) -> None:
    out = story(ws, "--milestone", "WLM000491")
    cite = f"{CONTRACT}:80: job-start requires engagement within 274 days"
    assert f"rule  {cite}" in out
    # the cited line really is that rule, inside job-start
    assert contract_line(ws, CONTRACT, 80).strip() == \
        "- {outcome: engagement, within_days: 274}   # published: within nine months of engagement"
    assert contract_line(ws, CONTRACT, 75).strip() == "- id: job-start"
    file_regression.check(out, basename="milestone-WLM000491", extension=".txt")


def test_a_payment_cut_by_a_funder_cap_in_one_period(ws: Path, file_regression) -> None:
    out = story(ws, "--milestone", "WLM001219", "--period", "2021-Q4")
    assert "claim 2021-Q4" in out and "2021-Q3" not in out
    assert re.search(r"2021-Q4-00078 +payment +jcp-west-london +6\.6100% of £1,000\.00 .*"
                     r"£12\.58  capped £53\.52 \(funder cap\)", out), out
    assert f"rule  {CONTRACT}:47: jcp-west-london pays at most £78,500.00 in all" in out
    file_regression.check(out, basename="milestone-WLM001219-2021-Q4", extension=".txt")


# --- JSON ------------------------------------------------------------------------------------
# Shape of `sib explain --json` (stdout):
#   {"contract": str, "subject": {"participant": str} | {"milestone": str},
#    "period": str|null,                       # --period, or null for every issued claim
#    "claims": [str],                          # the claims told, in order
#    "participant": {"participant_id": str, "as_of": str, "fields": {column: str}} | null,
#    "milestones": [{
#      "milestone_id", "participant_id", "milestone", "outcome": str,
#      "facts": {column: str} | null, "facts_as_of": str,   # its evidence row, latest claim
#      "claims": [{"period": str, "claim_number": int, "decision": str, "reason": str,
#                  "detail": str, "amount": "0.00", "capped": "0.00",   # net, this claim
#                  "rules": [{"path": str, "line": int|null, "text": str, "cite": str}],
#                  "lines": [{"line_id", "kind", "funder", "share": "45.2600",
#                             "price_from": "2019-01-02", "price", "amount", "capped": "0.00",
#                             "cap": str|null, "late": bool, "reverses": str|null}]}],
#      "standing": {"amount": "0.00", "by_funder": {funder: "0.00"}}}]}   # what it holds now

def test_json_of_a_re_rated_milestone(ws: Path, data_regression) -> None:
    """WLM000261: paid as full-time, its hours corrected to part-time, re-rated."""
    doc = explain_json(ws, "--milestone", "WLM000261")
    assert set(doc) == {"contract", "subject", "period", "claims", "participant", "milestones"}
    assert doc["subject"] == {"milestone": "WLM000261"} and doc["period"] is None
    (m,) = doc["milestones"]
    assert set(m) == {"milestone_id", "participant_id", "milestone", "outcome", "facts",
                      "facts_as_of", "claims", "standing"}
    rerated = next(c for c in m["claims"] if c["decision"] == "re-rated")
    assert rerated["reason"] == "changed-outcome" and rerated["amount"] == "-1000.00"
    kinds = [ln["kind"] for ln in rerated["lines"]]
    assert kinds == ["reversal"] * 4 + ["payment"] * 4
    assert m["standing"]["amount"] == "2000.00"
    data_regression.check(doc, basename="milestone-WLM000261")


def test_the_pennies_are_the_ledgers(ws: Path) -> None:
    doc = explain_json(ws, "--participant", "WL00090")
    ledgers = pd.concat(pd.read_csv(p, dtype=str, keep_default_na=False)
                        for p in sorted((ws / "ledgers" / CID).glob("*/ledger.csv")))
    mine = ledgers[ledgers["participant_id"] == "WL00090"].set_index("line_id")
    told = [ln for m in doc["milestones"] for c in m["claims"] for ln in c["lines"]]
    assert sorted(ln["line_id"] for ln in told) == sorted(mine.index)
    for ln in told:
        row = mine.loc[ln["line_id"]]
        assert (ln["funder"], ln["share"], ln["amount"], ln["capped"]) == \
            (row["funder"], row["share"], row["amount"], row["capped"])
    for m in doc["milestones"]:
        net = ledgers.loc[ledgers["milestone_id"] == m["milestone_id"], "amount"]
        assert m["standing"]["amount"] == f"{sum(int(a.replace('.', '')) for a in net) / 100:.2f}"


def test_every_cited_line_holds_its_rule(ws: Path) -> None:
    doc = explain_json(ws, "--participant", "WL00090")
    rules = [r for m in doc["milestones"] for c in m["claims"] for r in c["rules"]]
    assert rules
    for r in rules:
        line = contract_line(ws, r["path"], r["line"])
        assert r["cite"] == f"{r['path']}:{r['line']}: {r['text']}"
        price = re.search(r"is priced £([\d,]+\.\d\d) from (\S+)$", r["text"])
        if price:
            assert line.strip().startswith(f"{price.group(2)}: {price.group(1).replace(',', '')}")
        elif "split" in r["text"]:
            assert line.strip() in ("- split:", "- when: {borough: [Barnet]}       # no Barnet "
                                    "CCG: the borough takes the health share too")
        elif " pays a sustainment-13w milestone when hours_per_week" in r["text"]:
            assert line.strip().startswith("when: {hours_per_week:")
        else:
            raise AssertionError(f"a rule this test does not know: {r}")


def test_a_contract_changed_since_is_cited_in_the_copy_that_decided(tmp_path: Path) -> None:
    for name in ("contracts", "ledgers"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns(".lock"))
    path = tmp_path / CONTRACT
    path.write_text("# a comment moves every line down by one\n" + path.read_text("utf-8"))
    out = story(tmp_path, "--milestone", "WLM000491", "--period", "2021-Q4")
    cite = f"ledgers/{CID}/2021-Q4/inputs/contract.yaml:80: job-start requires engagement"
    assert cite in out
    assert "within_days: 274" in contract_line(tmp_path, f"ledgers/{CID}/2021-Q4/inputs/contract.yaml", 80)


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (("--participant", "WL99999"), "participant WL99999 is not in the decisions of any issued claim"),
    (("--milestone", "WLM000491", "--period", "2022-Q1"), "2022-Q1 is not an issued claim"),
    (("--milestone", "WLM001219", "--period", "2019-Q1"), "milestone WLM001219 is not in the "
                                                          "decisions of claim 2019-Q1"),
])
def test_not_found_is_one_line(ws: Path, args: tuple[str, ...], expected: str) -> None:
    result = run(ws, "explain", *args)
    assert result.exit_code == 1
    assert result.stderr.startswith("sib: ") and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [(), ("--participant", "WL00013", "--milestone", "WLM000005")])
def test_exactly_one_subject_is_a_usage_error(ws: Path, args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, ["explain", *args, "-w", str(ws)])
    assert result.exit_code == 2
    assert "exactly one of --participant ID and --milestone ID" in result.stderr
