"""`sib schema`: the JSON Schema editors use to complete and check contract files.

The schema is checked the way an editor uses it: against contract data as a YAML 1.2
reader gives it to a JSON validator (dates as text, numbers as floats). The committed copy
in schema/ must equal what `sib schema` prints, and the example contract points at it.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st

from sib.cli import cli
from sib.yamlsafe import read_yaml_file

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "contracts" / "west-london-ips.yaml"
COMMITTED = ROOT / "schema" / "sib-contract-1.json"


def schema_output() -> str:
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0, result.output
    return result.stdout


SCHEMA = json.loads(schema_output())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def as_json_data(path: Path):
    """The contract as an editor's validator sees it: JSON types, numbers as floats."""
    doc = read_yaml_file(path)
    assert doc.problems == []
    return json.loads(json.dumps(doc.data, default=lambda d: float(d) if isinstance(
        d, Decimal) else str(d)))


def errors(data) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(data)]


EXAMPLE_DATA = as_json_data(EXAMPLE)


def test_schema_output_is_valid_json_of_a_valid_schema() -> None:
    schema = json.loads(schema_output())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["title"] == "sib-contract/1"
    assert schema["additionalProperties"] is False  # a misspelt key must be an error
    assert {"format", "id", "funders", "payers", "outcomes", "term"} <= set(schema["required"])


def test_schema_accepts_the_example_contract() -> None:
    assert errors(EXAMPLE_DATA) == []


# (where the key is, the right key, the misspelling)
MISSPELLINGS = {
    "funders": (lambda data: data, "funders", "funder"),
    "outcome-prices": (lambda data: data["outcomes"][0], "prices", "price"),
    "term-outcomes_end": (lambda data: data["term"], "outcomes_end", "outcome_end"),
}


@pytest.mark.parametrize("case", list(MISSPELLINGS))
def test_schema_rejects_the_example_with_one_key_misspelt(case: str) -> None:
    where, right, wrong = MISSPELLINGS[case]
    data = copy.deepcopy(EXAMPLE_DATA)
    mapping = where(data)
    mapping[wrong] = mapping.pop(right)
    found = errors(data)
    assert any(f"'{wrong}' was unexpected" in e for e in found), found
    assert any(f"'{right}' is a required property" in e for e in found), found


def test_schema_rejects_a_bad_slug_and_an_unknown_claims_kind() -> None:
    data = copy.deepcopy(EXAMPLE_DATA)
    data["id"] = "West London"
    data["claims"] = "weekly"
    paths = sorted(e.split(":")[0] for e in errors(data))
    assert paths == ["['claims']", "['id']"]


@given(st.integers(min_value=0, max_value=10**11))
def test_schema_accepts_every_amount_in_pence_as_an_editor_reads_it(pence: int) -> None:
    # an editor reads 0.07 as the float 0.07; a float-based multipleOf: 0.01 rejected it
    data = copy.deepcopy(EXAMPLE_DATA)
    data["caps"]["contract"] = pence / 100
    data["outcomes"][0]["prices"]["2019-01-02"] = pence / 100
    assert errors(data) == []


def test_committed_schema_is_exactly_what_sib_schema_prints() -> None:
    # If this fails after a change to the contract model, regenerate the copy with
    #   sib schema > schema/sib-contract-1.json
    # and review the diff like code.
    assert COMMITTED.read_text("utf-8") == schema_output()


def test_example_contract_first_line_points_editors_at_the_schema() -> None:
    first = EXAMPLE.read_text("utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schema/sib-contract-1.json"
    assert (EXAMPLE.parent / "../schema/sib-contract-1.json").resolve() == COMMITTED.resolve()


def test_template_written_by_sib_init_points_at_the_schema_it_writes(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    contract = tmp_path / "ws" / "contracts" / "my-contract.yaml"
    first = contract.read_text("utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schema/sib-contract-1.json"
    assert (tmp_path / "ws" / "schema" / "sib-contract-1.json").read_text("utf-8") == schema_output()
    assert errors(as_json_data(contract)) == []
