"""`sib export indigo`: the INDIGO project document (shared/spec/indigo-export.md).

The golden file (tests/test_indigo/) pins the shipped example's whole document. The other
tests check it against what it is built from, read independently of sib: each funder's
payments add up to its ledger total to the penny, the periods are the manifests', the
counts are the last claim's decisions; its structure against the spec's field list
(STRICT below: every object closed to unknown properties, every value wrapped as the
standard wraps it); determinism; INDIGO ids where the contract gives them and sib's ids
where it does not; and a tiny contract whose every expected entry is worked out by hand.
"""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
import textwrap
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st

from sib.cli import cli
from sib.contract import load_contract
from sib.indigo import dumps, missing_indigo_ids, project_document
from sib.ledger import History, parse_ledger

ROOT = Path(__file__).resolve().parent.parent
CID = "west-london-ips"
LEDGERS = ROOT / "ledgers" / CID

# --- the field list of indigo-export.md as a closed JSON Schema ------------------------------
# Each wrapper mirrors the definition the standard's schema/project.json uses at that place
# (object_with_value_string, …_and_status, object_with_value_number, object_with_value_date,
# object_with_value_organisation_reference, and the enum objects), with
# additionalProperties: false everywhere, as the spec's "Must hold" asks. `required` lists
# what sib always fills; the rest is filled where known.

_STATUS = {"type": "string", "enum": ["PUBLIC", "PRIVATE", "DISPUTED"]}
_DATE = {"type": "string",
         "pattern": "^[0-9]{4}$|^[0-9]{4}-[0-9]{2}$|^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}


def _obj(props: dict, required: tuple = ()) -> dict:
    return {"type": "object", "properties": props, "required": list(required),
            "additionalProperties": False}


def _wrapped(value: dict, status: bool = False) -> dict:
    return _obj({"value": value, **({"status": _STATUS} if status else {})}, ("value",))


def _enum(*values: str) -> dict:
    return _wrapped({"type": "string", "enum": list(values)})


TEXT = _wrapped({"type": "string"})                     # object_with_value_string
TEXT_S = _wrapped({"type": "string"}, status=True)      # object_with_value_string_and_status
NUMBER = _wrapped({"type": "number"})                   # object_with_value_number
DATE = _wrapped(_DATE)                                  # object_with_value_date
DATE_S = _wrapped(_DATE, status=True)                   # object_with_value_date_and_status
ORG = _wrapped({"type": "string"})                      # object_with_value_organisation_reference
PERIOD = _obj({"start_date": DATE, "end_date": DATE}, ("start_date", "end_date"))


def _array(item: dict, min_items: int = 0) -> dict:
    return {"type": "array", "items": item, "minItems": min_items}


STRICT = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    **_obj({
        "name": TEXT,
        "dates": _obj({"start_date_of_service_provision": DATE_S,
                       "anticipated_end_date_of_service_provision": DATE_S},
                      ("start_date_of_service_provision",
                       "anticipated_end_date_of_service_provision")),
        "outcome_metrics": _array(_obj({
            "id": {"type": "string"},                   # the one plain string
            "definition": TEXT,
            "outcome_validation_method": TEXT,
            "data_source_for_outcome_validation": TEXT}, ("id", "definition")), 1),
        "outcome_pricings": _array(_obj({
            "outcome_metric_id": TEXT,
            "currency": TEXT,
            "price_per_unit": _obj({"amount": NUMBER}, ("amount",)),
            "price_description": TEXT},
            ("outcome_metric_id", "currency", "price_per_unit", "price_description"))),
        "outcome_payment_commitments": _array(_obj({
            "organisation_id": ORG,
            "organisation_role_category": _enum(
                "Nonprofit/NGO", "Foundation/Philanthropist",
                "Government/Public Sector/Public Bank",
                "Multilateral/Bilateral/Intergovernmental Financial Institution",
                "Corporate Giving", "Investment Fund", "Other"),
            "maximum_potential_outcome_payment": _obj({"currency": TEXT_S, "amount": NUMBER},
                                                      ("currency", "amount")),
            "total_outcome_payments": _obj({"currency": TEXT_S, "amount": NUMBER},
                                           ("currency", "amount"))},
            ("organisation_id", "total_outcome_payments"))),
        "outcome_payments": _array(_obj({
            "outcome_metric_id": TEXT,
            "period": PERIOD,
            "payer_organisation_id": ORG,
            "recipient_organisation_id": ORG,
            "type": _enum("Planned", "Actual"),
            "money": _obj({"currency": TEXT, "amount": NUMBER}, ("currency", "amount"))},
            ("outcome_metric_id", "period", "payer_organisation_id", "type", "money"))),
        "results": _array(_obj({
            "outcome_metric_id": TEXT,
            "result_level": _enum("Project level", "Outcome level"),
            "result_type": _enum("Interim", "Final"),
            "period": PERIOD,
            "number_with_positive_social_outcomes": NUMBER},
            ("outcome_metric_id", "result_level", "result_type", "period",
             "number_with_positive_social_outcomes"))),
    }, ("name", "dates", "outcome_metrics", "outcome_pricings", "outcome_payment_commitments",
        "outcome_payments", "results")),
}
jsonschema.Draft7Validator.check_schema(STRICT)


def strict_errors(doc: dict) -> list[str]:
    v = jsonschema.Draft7Validator(STRICT)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]


# --- helpers -----------------------------------------------------------------------------------

def run(ws: Path, *args: str):
    result = CliRunner().invoke(cli, ["export", "indigo", *args, "-w", str(ws)],
                                catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def load(text: str) -> dict:
    return json.loads(text, parse_float=Decimal)  # the numbers as written, never a float


def copy_workspace(dest: Path, with_ledgers: bool = True) -> Path:
    for name in ("contracts", "evidence") + (("ledgers",) if with_ledgers else ()):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns(".lock", ".tmp-*"))
    return dest


@pytest.fixture(scope="module")
def shipped() -> str:
    """The shipped example's document, as `sib export indigo` prints it."""
    result = run(ROOT, "--contract", CID)
    assert result.exit_code == 0, result.output
    return result.stdout


def ledger_totals() -> dict[str, Decimal]:
    """Each funder's total over every issued ledger.csv, read with csv and Decimal only."""
    out: dict[str, Decimal] = defaultdict(Decimal)
    for path in sorted(LEDGERS.glob("*/ledger.csv")):
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                out[row["funder"]] += Decimal(row["amount"])
    return dict(out)


def manifests() -> list[dict]:
    return [json.loads(p.read_text("utf-8")) for p in sorted(LEDGERS.glob("*/manifest.json"))]


# --- the shipped example -------------------------------------------------------------------------

def test_the_shipped_example_document(shipped: str, file_regression) -> None:
    file_regression.check(shipped, basename=f"indigo-{CID}", extension=".json")


def test_each_funders_payments_add_up_to_its_ledger_total_to_the_penny(shipped: str) -> None:
    doc = load(shipped)
    totals = ledger_totals()
    assert len(totals) == 18 and sum(totals.values()) == Decimal("1490005.14")  # sib status
    paid: dict[str, Decimal] = defaultdict(Decimal)
    for p in doc["outcome_payments"]:
        assert p["money"]["currency"] == {"value": "GBP"}
        paid[p["payer_organisation_id"]["value"]] += p["money"]["amount"]["value"]
    assert dict(paid) == totals
    committed = {c["organisation_id"]["value"]: c["total_outcome_payments"]["amount"]["value"]
                 for c in doc["outcome_payment_commitments"]}
    assert committed == totals


def test_money_is_pounds_with_two_decimals(shipped: str) -> None:
    doc = load(shipped)
    amounts = [p["money"]["amount"]["value"] for p in doc["outcome_payments"]]
    amounts += [p["price_per_unit"]["amount"]["value"] for p in doc["outcome_pricings"]]
    for c in doc["outcome_payment_commitments"]:
        amounts += [c[k]["amount"]["value"] for k in ("maximum_potential_outcome_payment",
                                                      "total_outcome_payments")]
    assert len(amounts) > 600
    for a in amounts:
        assert isinstance(a, Decimal) and a.as_tuple().exponent == -2, a
    assert not re.search(r"\d[eE][-+]?\d", shipped)  # no exponent notation anywhere
    # net amounts can be negative: a reversal in a claim with no new payment to offset it
    assert any(a < 0 for a in amounts)
    assert all(p["money"]["amount"]["value"] != 0 for p in doc["outcome_payments"])


def test_the_structure_is_the_spec_field_list(shipped: str) -> None:
    doc = load(shipped)
    assert strict_errors(doc) == []
    assert len(doc["outcome_metrics"]) == 5 and len(doc["outcome_pricings"]) == 5
    assert len(doc["outcome_payment_commitments"]) == 18 and len(doc["results"]) == 5


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d.update(name="IPS Into Work"), "name"),                     # not wrapped
    (lambda d: d.update(reference={"value": "INDIGO-POJ-0190"}), ""),       # not the standard's
    (lambda d: d["outcome_metrics"][0].update(id={"value": "engagement"}),
     "outcome_metrics/0/id"),
    (lambda d: d["outcome_payments"][0]["money"]["amount"].update(value="882.57"),
     "outcome_payments/0/money/amount/value"),                             # money as text
    (lambda d: d["outcome_payments"][0]["type"].update(note="x"), "outcome_payments/0/type"),
    (lambda d: d["results"][0]["result_type"].update(value="Overall"),
     "results/0/result_type/value"),
    (lambda d: d["dates"]["start_date_of_service_provision"].update(value="02/01/2019"),
     "dates/start_date_of_service_provision/value"),
])
def test_the_structure_check_rejects_what_the_standard_does_not_define(shipped: str, mutate,
                                                                      where: str) -> None:
    doc = load(shipped)
    mutate(doc)
    errors = strict_errors(doc)
    assert errors and any(e.startswith(f"{where}: ") for e in errors), errors


def test_periods_are_the_issued_claims(shipped: str) -> None:
    doc = load(shipped)
    claims = [(m["start"], m["end"]) for m in manifests()]
    seen = [(p["period"]["start_date"]["value"], p["period"]["end_date"]["value"])
            for p in doc["outcome_payments"]]
    assert set(seen) == set(claims) and len(claims) == 12
    assert seen == sorted(seen)  # claims in order
    for r in doc["results"]:
        assert r["period"] == {"start_date": {"value": claims[0][0]},
                               "end_date": {"value": claims[-1][1]}}
        assert r["result_type"] == {"value": "Interim"}  # claims_end 2023-03-31 is to come


def test_results_are_the_milestones_holding_a_payment(shipped: str) -> None:
    # independently: the last claim's decisions that leave a milestone paid
    last = sorted(LEDGERS.glob("*/decisions.csv"))[-1]
    held: dict[str, int] = defaultdict(int)
    with last.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["decision"] in ("paid", "paid-earlier", "re-rated"):
                held[row["outcome"]] += 1
    doc = load(shipped)
    got = {r["outcome_metric_id"]["value"]: r["number_with_positive_social_outcomes"]["value"]
           for r in doc["results"]}
    assert got == dict(held)
    assert got["job-start"] == 179 and got["engagement"] == 759


def test_prices_caps_and_names_are_the_contracts(shipped: str) -> None:
    doc = load(shipped)
    assert doc["name"] == {"value": "IPS Into Work (West London Alliance)"}
    assert doc["dates"] == {"start_date_of_service_provision": {"value": "2019-01-02"},
                            "anticipated_end_date_of_service_provision": {"value": "2022-06-30"}}
    prices = {p["outcome_metric_id"]["value"]: p["price_per_unit"]["amount"]["value"]
              for p in doc["outcome_pricings"]}
    assert prices == {"engagement": Decimal("650.00"), "job-start": Decimal("2600.00"),
                      "sustainment-13w-ft": Decimal("3000.00"),
                      "sustainment-13w-pt": Decimal("2000.00"),
                      "health-improvement": Decimal("1000.00")}
    ft = doc["outcome_pricings"][2]["price_description"]["value"]
    assert "from 2019-01-02" in ft and "hours_per_week is at least 16" in ft
    assert "requires job-start achieved within 274 days before" in ft
    caps = {c["organisation_id"]["value"]: c["maximum_potential_outcome_payment"]["amount"]["value"]
            for c in doc["outcome_payment_commitments"]}
    assert caps["dcms"] == Decimal("1075000.00") and caps["barnet"] == Decimal("90000.00")
    assert sum(caps.values()) == Decimal("2375150.00")  # the published maximum
    assert {c["organisation_role_category"]["value"]
            for c in doc["outcome_payment_commitments"]} == {"Government/Public Sector/Public Bank"}


def test_without_indigo_ids_sibs_ids_are_used_and_a_note_says_so(shipped: str) -> None:
    doc = load(shipped)
    assert {p["recipient_organisation_id"]["value"] for p in doc["outcome_payments"]} == \
        {"Via (formerly WDP)"}  # the contract's `provider`: sib has no provider id
    assert "INDIGO-ORG" not in shipped
    result = run(ROOT)
    assert result.stderr.startswith("note: no INDIGO organisation id for provider, dcms, ")
    assert "(19 in all)" in result.stderr and len(result.stderr.splitlines()) == 1


def test_indigo_ids_are_used_where_the_contract_gives_them(tmp_path: Path) -> None:
    ws = copy_workspace(tmp_path)
    path = ws / "contracts" / f"{CID}.yaml"
    text = path.read_text("utf-8")
    # fictitious ids, for this test only (no INDIGO id is published in the spec)
    text = text.replace("kind: central, cap: 1075000.00}",
                        "kind: central, cap: 1075000.00, indigo_id: INDIGO-ORG-99990001}")
    text = text.replace("provider: Via (formerly WDP)\n",
                        "provider: Via (formerly WDP)\nprovider_indigo_id: INDIGO-ORG-99990002\n")
    path.write_text(text, "utf-8")
    result = run(ws)
    assert result.exit_code == 0, result.output
    doc = load(result.stdout)
    assert strict_errors(doc) == []
    orgs = [c["organisation_id"]["value"] for c in doc["outcome_payment_commitments"]]
    assert orgs[0] == "INDIGO-ORG-99990001" and "dcms" not in orgs and orgs[1] == "brent"
    payers = {p["payer_organisation_id"]["value"] for p in doc["outcome_payments"]}
    assert "INDIGO-ORG-99990001" in payers and "dcms" not in payers
    assert {p["recipient_organisation_id"]["value"] for p in doc["outcome_payments"]} == \
        {"INDIGO-ORG-99990002"}
    totals = ledger_totals()
    dcms = sum((p["money"]["amount"]["value"] for p in doc["outcome_payments"]
                if p["payer_organisation_id"]["value"] == "INDIGO-ORG-99990001"), Decimal(0))
    assert dcms == totals["dcms"]
    assert result.stderr.startswith("note: no INDIGO organisation id for brent, ealing, ")
    assert "(17 in all)" in result.stderr


# --- determinism --------------------------------------------------------------------------------

def test_same_ledgers_same_bytes(tmp_path: Path, shipped: str) -> None:
    again = run(ROOT, "--contract", CID)
    assert again.stdout == shipped
    out = tmp_path / "indigo.json"
    result = run(ROOT, "--output", str(out))
    assert result.exit_code == 0 and result.stdout == f"Wrote {out}\n"
    assert out.read_bytes() == shipped.encode("utf-8")
    assert b"\r" not in out.read_bytes() and shipped.endswith("}\n")


def test_the_order_of_ledger_lines_does_not_matter() -> None:
    lc, problems = load_contract(ROOT / "contracts" / f"{CID}.yaml", "contract")
    assert lc is not None and not problems
    frames, labels = [], []
    for path in sorted(LEDGERS.glob("*/ledger.csv")):
        lines, probs = parse_ledger(path.read_text("utf-8"), path.name)
        assert not probs
        frames.append(lines)
        labels.append(path.parent.name)
    lines = pd.concat(frames, ignore_index=True)
    first = dumps(project_document(lc.contract, History(tuple(labels), lines)))
    order = list(range(len(lines)))
    random.Random(7).shuffle(order)
    shuffled = lines.iloc[order].reset_index(drop=True)
    assert dumps(project_document(lc.contract, History(tuple(labels), shuffled))) == first


# --- a tiny contract, every entry worked out by hand ---------------------------------------------

TINY = textwrap.dedent("""\
    format: sib-contract/1
    id: tiny
    name: Tiny SIB
    currency: GBP
    claims: quarter
    term:
      service_start: 2022-01-01
      enrolment_end: 2022-03-31
      outcomes_end: 2022-06-30
      claims_end: 2022-06-30
    funders:
      - {id: council, name: A Council, kind: local-authority, cap: 1000.00,
         indigo_id: INDIGO-ORG-99990001}
      - {id: trust, name: A Trust, kind: other}
    payers:
      - split:
          - {funder: council, share: 60}
          - {funder: trust, share: 40}
    outcomes:
      - id: start
        name: Job start
        milestone: job-start
        prices:
          2022-01-01: 100.00
          2022-04-01: 110.00
      - id: sustain
        name: 13 weeks in work
        milestone: sustainment
        requires:
          - {outcome: start, within_days: 274}
        prices:
          2022-01-01: 50.00
    """)

_HEAD = ("line_id,period,kind,milestone_id,participant_id,outcome,achieved_on,verified_on,"
         "evidence_ref,price_from,price,funder,share,amount,capped,cap,late,reverses\n")


_SHARE = {"council": "60.0000", "trust": "40.0000", "gone": "40.0000"}


def _line(period: str, n: int, kind: str, mid: str, outcome: str, price: str, funder: str,
          amount: str, reverses: str = "") -> str:
    return (f"{period}-{n:05d},{period},{kind},{mid},P-{mid},{outcome},2022-02-01,2022-03-01,"
            f"E-{mid},2022-01-01,{price},{funder},{_SHARE[funder]},{amount},0.00,,false,"
            f"{reverses}\n")


TINY_LEDGERS = {
    "2022-Q1": [  # M1, M2 start at £100 (60/40); M4 sustain at £50 (30/20)
        _line("2022-Q1", 1, "payment", "M1", "start", "100.00", "council", "60.00"),
        _line("2022-Q1", 2, "payment", "M1", "start", "100.00", "trust", "40.00"),
        _line("2022-Q1", 3, "payment", "M2", "start", "100.00", "council", "60.00"),
        _line("2022-Q1", 4, "payment", "M2", "start", "100.00", "trust", "40.00"),
        _line("2022-Q1", 5, "payment", "M4", "sustain", "50.00", "council", "30.00"),
        _line("2022-Q1", 6, "payment", "M4", "sustain", "50.00", "trust", "20.00"),
    ],
    "2022-Q2": [  # M2 and M4 reversed; M3 (achieved in Q1, £100) paid late
        _line("2022-Q2", 1, "reversal", "M2", "start", "100.00", "council", "-60.00",
              "2022-Q1-00003"),
        _line("2022-Q2", 2, "reversal", "M2", "start", "100.00", "trust", "-40.00",
              "2022-Q1-00004"),
        _line("2022-Q2", 3, "reversal", "M4", "sustain", "50.00", "council", "-30.00",
              "2022-Q1-00005"),
        _line("2022-Q2", 4, "reversal", "M4", "sustain", "50.00", "trust", "-20.00",
              "2022-Q1-00006"),
        _line("2022-Q2", 5, "payment", "M3", "start", "100.00", "council", "60.00"),
        _line("2022-Q2", 6, "payment", "M3", "start", "100.00", "trust", "40.00"),
    ],
}


def tiny(tmp_path: Path, yaml_text: str = TINY, periods=("2022-Q1", "2022-Q2"),
         extra: str = "") -> dict:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml_text, "utf-8")
    lc, problems = load_contract(path, "tiny.yaml")
    assert lc is not None, problems
    text = _HEAD + "".join(line for p in periods for line in TINY_LEDGERS[p]) + extra
    lines, problems = parse_ledger(text, "ledger.csv")
    assert not problems
    doc = project_document(lc.contract, History(tuple(periods), lines))
    assert strict_errors(load(dumps(doc))) == []
    return load(dumps(doc))


def _pay(outcome, start, end, payer, amount):
    return {"outcome_metric_id": {"value": outcome},
            "period": {"start_date": {"value": start}, "end_date": {"value": end}},
            "payer_organisation_id": {"value": payer}, "type": {"value": "Actual"},
            "money": {"currency": {"value": "GBP"}, "amount": {"value": Decimal(amount)}}}


def test_tiny_payments_commitments_and_results(tmp_path: Path) -> None:
    doc = tiny(tmp_path)
    q1, q2 = ("2022-01-01", "2022-03-31"), ("2022-04-01", "2022-06-30")
    assert doc["outcome_payments"] == [
        _pay("start", *q1, "INDIGO-ORG-99990001", "120.00"),   # 60.00 + 60.00
        _pay("start", *q1, "trust", "80.00"),                  # 40.00 + 40.00
        _pay("sustain", *q1, "INDIGO-ORG-99990001", "30.00"),
        _pay("sustain", *q1, "trust", "20.00"),
        # Q2 start: -60.00 + 60.00 = 0 and -40.00 + 40.00 = 0: zero nets are left out
        _pay("sustain", *q2, "INDIGO-ORG-99990001", "-30.00"),  # reversal only: negative
        _pay("sustain", *q2, "trust", "-20.00"),
    ]  # no provider in the contract: recipient_organisation_id is left out
    assert doc["outcome_payment_commitments"] == [
        {"organisation_id": {"value": "INDIGO-ORG-99990001"},
         "organisation_role_category": {"value": "Government/Public Sector/Public Bank"},
         "maximum_potential_outcome_payment": {"currency": {"value": "GBP"},
                                               "amount": {"value": Decimal("1000.00")}},
         "total_outcome_payments": {"currency": {"value": "GBP"},          # 120 + 30 - 30
                                    "amount": {"value": Decimal("120.00")}}},
        {"organisation_id": {"value": "trust"},  # kind other: no role; no cap: no maximum
         "total_outcome_payments": {"currency": {"value": "GBP"},          # 80 + 20 - 20
                                    "amount": {"value": Decimal("80.00")}}},
    ]
    period = {"start_date": {"value": "2022-01-01"}, "end_date": {"value": "2022-06-30"}}
    assert doc["results"] == [  # start: M1 and M3 hold payments, M2 reversed; sustain: none
        {"outcome_metric_id": {"value": "start"}, "result_level": {"value": "Outcome level"},
         "result_type": {"value": "Final"}, "period": period,  # 2022-Q3 is after claims_end
         "number_with_positive_social_outcomes": {"value": 2}},
        {"outcome_metric_id": {"value": "sustain"}, "result_level": {"value": "Outcome level"},
         "result_type": {"value": "Final"}, "period": period,
         "number_with_positive_social_outcomes": {"value": 0}},
    ]
    assert [(p["outcome_metric_id"]["value"], p["price_per_unit"]["amount"]["value"])
            for p in doc["outcome_pricings"]] == [("start", Decimal("100.00")),
                                                  ("start", Decimal("110.00")),
                                                  ("sustain", Decimal("50.00"))]
    words = [p["price_description"]["value"] for p in doc["outcome_pricings"]]
    assert words[0].startswith("Price version 1 of 2, for milestones achieved from "
                               "2022-01-01 to 2022-03-31; ")
    assert words[1].startswith("Price version 2 of 2, for milestones achieved from 2022-04-01; ")
    assert "requires start achieved within 274 days before" in words[2]
    assert doc["outcome_metrics"][0] == {"id": "start", "definition": {"value": "Job start"},
                                         "outcome_validation_method":
                                             {"value": "Simple ex-post verification"}}


def test_tiny_interim_while_claims_remain_and_with_a_provider(tmp_path: Path) -> None:
    text = TINY.replace("currency: GBP\n", "currency: GBP\nprovider: A Provider\n")
    doc = tiny(tmp_path, text, periods=("2022-Q1",))
    assert {r["result_type"]["value"] for r in doc["results"]} == {"Interim"}  # 2022-Q2 to come
    assert {p["recipient_organisation_id"]["value"] for p in doc["outcome_payments"]} == \
        {"A Provider"}


def test_a_funder_no_longer_in_the_contract_is_still_counted(tmp_path: Path) -> None:
    # an earlier contract version had funder `gone` (a ledger line of 2022-Q1 says so)
    doc = tiny(tmp_path, extra=_line("2022-Q1", 7, "payment", "M9", "start", "100.00", "gone",
                                     "40.00"))
    assert doc["outcome_payments"][2] == _pay("start", "2022-01-01", "2022-03-31", "gone",
                                              "40.00")  # after the contract's funders
    assert doc["outcome_payment_commitments"][-1] == {
        "organisation_id": {"value": "gone"},
        "total_outcome_payments": {"currency": {"value": "GBP"},
                                   "amount": {"value": Decimal("40.00")}}}
    assert len(doc["outcome_payment_commitments"]) == 3


def test_missing_indigo_ids(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.replace("currency: GBP\n", "currency: GBP\nprovider: A Provider\n"),
                    "utf-8")
    lc, _ = load_contract(path, "tiny.yaml")
    assert missing_indigo_ids(lc.contract) == ["provider", "trust"]


# --- the CLI around it ---------------------------------------------------------------------------

def test_no_claims_issued_yet(tmp_path: Path) -> None:
    ws = copy_workspace(tmp_path, with_ledgers=False)
    result = run(ws)
    assert result.exit_code == 0, result.output
    doc = load(result.stdout)
    assert strict_errors(doc) == []
    assert doc["outcome_payments"] == [] and doc["results"] == []
    assert {c["total_outcome_payments"]["amount"]["value"]
            for c in doc["outcome_payment_commitments"]} == {Decimal("0.00")}


def test_an_unknown_contract_is_one_line_and_exit_1() -> None:
    result = run(ROOT, "--contract", "no-such-contract")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("sib: no contract 'no-such-contract'")
    assert len(result.stderr.splitlines()) == 1


def test_output_replaces_a_file_whole_and_leaves_nothing_else(tmp_path: Path,
                                                             shipped: str) -> None:
    out = tmp_path / "indigo.json"
    out.write_text("old\n", "utf-8")
    result = run(ROOT, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_text("utf-8") == shipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["indigo.json"]


def test_an_unwritable_output_is_one_line_and_exit_1(tmp_path: Path) -> None:
    out = tmp_path / "missing-folder" / "indigo.json"
    result = run(ROOT, "-o", str(out))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith(f"sib: cannot write {out}: ")
    assert len(result.stderr.splitlines()) == 1  # the note comes only after a document
    assert not (tmp_path / "missing-folder").exists()


# --- dumps: JSON text with Decimal numbers -------------------------------------------------------

def _containers(inner):
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.text(max_size=8),
    _containers, max_leaves=20)


@given(_JSON)
def test_dumps_lays_out_like_json_dumps_sorted_with_indent_2(value) -> None:
    assert dumps(value) == json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@given(st.lists(st.integers(-10**14, 10**14), max_size=5))
def test_dumps_writes_decimals_as_their_own_digits(pence: list[int]) -> None:
    amounts = [Decimal(p).scaleb(-2) for p in pence]  # exact: 12345 pence -> 123.45
    text = dumps({"amounts": amounts})
    assert load(text)["amounts"] == amounts
    assert [a.as_tuple().exponent for a in load(text)["amounts"]] == [-2] * len(amounts)
    assert dumps({"a": Decimal("2600.00")}) == '{\n  "a": 2600.00\n}\n'


def test_dumps_refuses_floats_and_other_objects() -> None:
    with pytest.raises(TypeError):
        dumps({"amount": 2600.0})
    with pytest.raises(TypeError):
        dumps({"when": object()})
    with pytest.raises(ValueError):
        dumps({"amount": Decimal("NaN")})
