"""`sib status`: issued claims, money against caps, the next period and what is pending.

The golden files (tests/test_status/) pin the shipped example's status; the other tests
check its figures against the ledgers and decisions read independently, and follow it
through a new claim and an empty workspace.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from sib.cli import cli

ROOT = Path(__file__).resolve().parent.parent
CID = "west-london-ips"


def copy_workspace(dest: Path) -> Path:
    for name in ("contracts", "evidence", "ledgers"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns(".lock", ".tmp-*"))
    return dest


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return copy_workspace(tmp_path)


def run(ws: Path, *args: str):
    result = CliRunner().invoke(cli, [*args, "-w", str(ws)], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def status_json(ws: Path) -> dict:
    result = run(ws, "status", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def pence(text: str) -> int:
    return int(text.replace(".", ""))


def test_status_of_the_shipped_example(ws: Path, file_regression) -> None:
    result = run(ws, "status")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = result.stdout
    assert "  jcp-west-london" in out and "of £78,500.00 (100.0%)  headroom £0.00" in out
    assert "Next claim     2022-Q1 (2022-01-01 to 2022-03-31), claim 13" in out
    file_regression.check(out, basename="status-west-london-ips", extension=".txt")


# Shape of `sib status --json` (stdout); money as two-decimal strings, percent as "72.6":
#   {"contract": {"id", "name", "claims", "file", "ledgers": str},
#    "claims": [{"claim_number": int, "period", "start", "end": str, "amount": "0.00",
#                "issued_at": "2022-01-04T09:30:00Z", "issued_on": "2022-01-04"}],
#    "funders": [{"id", "name", "kind": str, "paid": "0.00", "cap": str|null,
#                 "headroom": str|null, "percent_used": str|null}],   # in the contract's order
#    "by_kind": {kind: "0.00"},
#    "contract_total": {"paid", "cap", "headroom", "percent_used"},  # against caps.contract
#    "central_top_up": {"paid", "cap", "headroom", "percent_used", "funders": [id]},
#    "next_period": {"period", "start", "end": str, "claim_number": int} | null,  # null: ended
#    "pending_verification": {"as_of": str|null, "count": int,
#                             "milestones": [{"milestone_id", "participant_id", "milestone",
#                                             "reason", "detail": str}]}}

def test_json_golden_and_figures_agree_with_the_ledgers(ws: Path, data_regression) -> None:
    doc = status_json(ws)
    assert set(doc) == {"contract", "claims", "funders", "by_kind", "contract_total",
                        "central_top_up", "next_period", "pending_verification"}
    root = ws / "ledgers" / CID
    lines = pd.concat(pd.read_csv(p, dtype=str, keep_default_na=False)
                      for p in sorted(root.glob("*/ledger.csv")))
    amounts = lines["amount"].map(pence)
    # cumulative per funder, in total, and per claim: what the ledgers add up to
    by_funder = amounts.groupby(lines["funder"]).sum()
    assert {f["id"]: pence(f["paid"]) for f in doc["funders"] if pence(f["paid"])} == \
        {k: int(v) for k, v in by_funder.items() if v}
    assert pence(doc["contract_total"]["paid"]) == int(amounts.sum())
    assert sum(pence(c["amount"]) for c in doc["claims"]) == int(amounts.sum())
    assert pence(doc["central_top_up"]["paid"]) == int(by_funder["dcms"])
    assert doc["central_top_up"]["funders"] == ["dcms"]
    for f in doc["funders"]:
        assert pence(f["paid"]) + pence(f["headroom"]) == pence(f["cap"])
    jcp = next(f for f in doc["funders"] if f["id"] == "jcp-west-london")
    assert (jcp["paid"], jcp["cap"], jcp["percent_used"]) == ("78500.00", "78500.00", "100.0")
    assert [c["claim_number"] for c in doc["claims"]] == list(range(1, 13))
    assert doc["claims"][-1] == {"claim_number": 12, "period": "2021-Q4", "start": "2021-10-01",
                                 "end": "2021-12-31", "amount": "188905.14",
                                 "issued_at": "2022-01-04T09:30:00Z", "issued_on": "2022-01-04"}
    assert doc["next_period"] == {"period": "2022-Q1", "start": "2022-01-01",
                                  "end": "2022-03-31", "claim_number": 13}
    decisions = pd.read_csv(root / "2021-Q4" / "decisions.csv", dtype=str, keep_default_na=False)
    pending = decisions[decisions["decision"] == "pending-verification"]
    p = doc["pending_verification"]
    assert p["as_of"] == "2021-Q4" and p["count"] == len(pending) == len(p["milestones"])
    assert [m["milestone_id"] for m in p["milestones"]] == pending["milestone_id"].tolist()
    data_regression.check(doc, basename="status-west-london-ips")


def test_status_moves_on_with_a_new_claim(ws: Path) -> None:
    before = status_json(ws)
    assert run(ws, "claim", "--period", "2022-Q1").exit_code == 0
    after = status_json(ws)
    assert [c["period"] for c in after["claims"]][-1] == "2022-Q1"
    assert after["next_period"]["period"] == "2022-Q2"
    assert after["pending_verification"]["as_of"] == "2022-Q1"
    manifest = json.loads((ws / "ledgers" / CID / "2022-Q1" / "manifest.json").read_text())
    added = pence(after["contract_total"]["paid"]) - pence(before["contract_total"]["paid"])
    assert added == pence(manifest["totals"]["amount"])
    assert after["pending_verification"]["count"] == manifest["decisions"]["pending-verification"]


def test_status_with_no_claims_yet(ws: Path) -> None:
    shutil.rmtree(ws / "ledgers" / CID)
    doc = status_json(ws)
    assert doc["claims"] == []
    assert doc["next_period"] == {"period": "2019-Q1", "start": "2019-01-01",
                                  "end": "2019-03-31", "claim_number": 1}
    assert doc["contract_total"]["paid"] == "0.00"
    assert doc["pending_verification"] == {"as_of": None, "count": 0, "milestones": []}
    text = run(ws, "status").stdout
    assert "Claims issued  none yet" in text


def test_status_after_the_claims_term_is_none(ws: Path) -> None:
    path = ws / "contracts" / f"{CID}.yaml"
    text = path.read_text("utf-8")
    for old, new in (("enrolment_end: 2022-06-30", "enrolment_end: 2021-06-30"),
                     ("outcomes_end: 2022-09-30", "outcomes_end: 2021-09-30"),
                     ("claims_end: 2023-03-31", "claims_end: 2021-12-31")):
        text = text.replace(old, new)
    path.write_text(text, "utf-8")
    doc = status_json(ws)
    assert doc["next_period"] is None
    assert "Next claim     none: the claims term has ended" in run(ws, "status").stdout
