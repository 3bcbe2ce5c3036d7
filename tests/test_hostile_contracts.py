"""Hostile and broken files given to `sib check`: each is one located problem, never a crash.

Every case is written into tmp_path and run through the real command with click's
CliRunner. Each must exit 1, print `path[:line[:col]]: [code] message` on stderr, and let
no Python traceback reach the user. Nothing here is timed (tests never time things); the
time each case takes was measured by hand and is well under a second, because the reader
refuses files over 1 MiB before parsing, refuses aliases at the first one, and stops
building at 32 levels of nesting.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sib.cli import cli
from sib.yamlsafe import MAX_BYTES

TEMPLATE = (Path(__file__).parent.parent / "sib" / "templates" / "contract.yaml").read_text("utf-8")


def billion_laughs() -> bytes:
    # nine levels of nine aliases each: 9**9 (387 million) 'lol's if expanded
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    return text.encode()


def block_mapping(depth: int) -> bytes:
    # each level indented one space deeper than the last: the smallest block nesting
    return "".join(" " * i + "a:\n" for i in range(depth)).encode()


# name → (file bytes, expected code(s), expected line (None: the problem is the whole file))
CASES = {
    "empty": (b"", {"not-mapping"}, None),
    "only-comments": (b"# nothing here yet\n\n", {"not-mapping"}, None),
    "binary-bytes": (bytes(range(256)) * 64, {"not-text"}, 1),
    "not-utf8": ("format: sib-contract/1\nname: Caf\u00e9\n".encode("latin-1"), {"not-utf8"}, 2),
    # over the size limit: refused by size before it is read
    "single-line-10mb": (b"name: " + b"x" * 10_000_000 + b"\n", {"too-large"}, None),
    # just under the size limit, so the parser does meet one very long line
    "single-line-1mb": (b"name: " + b"x" * (MAX_BYTES - 100) + b"\n", {"missing-key"}, 1),
    # libyaml stops at its own limit of 1,000 flow levels while scanning ahead (not-yaml);
    # without libyaml, PyYAML's pure parser hands the events over and our limit of 32 stops
    # the build (too-deep). Either way: one located problem.
    "flow-lists-10000-deep": (b"[" * 10_000 + b"]" * 10_000 + b"\n", {"not-yaml", "too-deep"}, 1),
    "flow-mappings-10000-deep": (b"{a: " * 10_000 + b"}" * 10_000 + b"\n", {"too-deep"}, 1),
    "block-lists-10000-deep": (b"- " * 10_000 + b"x\n", {"too-deep"}, 1),
    # 10,000 levels of block mappings take 50 MB of indentation: refused by size
    "block-mappings-10000-deep": (block_mapping(10_000), {"too-large"}, None),
    # 1,000 levels fit under the size limit: stopped at the 33rd level, on line 33
    "block-mappings-1000-deep": (block_mapping(1_000), {"too-deep"}, 33),
    "billion-laughs": (billion_laughs(), {"yaml-alias"}, 2),
    "list-at-top-level": (b"- format: sib-contract/1\n- id: x\n", {"not-mapping"}, 1),
    "tab-indentation": (b"format: sib-contract/1\nterm:\n\tservice_start: 2020-01-01\n",
                        {"not-yaml"}, 3),
    "file-50mb": ((b"# " + b"x" * 97 + b"\n") * 500_000, {"too-large"}, None),
    "several-documents": (b"format: sib-contract/1\n---\nformat: sib-contract/1\n",
                          {"multiple-documents"}, 2),
}


def run_check(path: Path):
    return CliRunner().invoke(cli, ["check", "--workspace", str(path.parent), str(path)])


def assert_one_located_problem(result, name: str, codes: set[str], line: int | None) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception)
    assert "Traceback" not in result.output
    assert "internal error" not in result.output
    problems = re.findall(rf"^{re.escape(name)}(?::(\d+))?(?::\d+)?: \[([a-z0-9-]+)\] \S",
                          result.stderr, flags=re.M)
    assert problems, result.stderr[:500]
    found_line, code = problems[0]
    assert code in codes
    assert (int(found_line) if found_line else None) == line


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_file_is_one_located_problem(tmp_path: Path, case: str) -> None:
    data, codes, line = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(data)
    result = run_check(path)
    path.unlink()  # pytest keeps recent tmp_paths; do not leave 50 MB files behind
    assert_one_located_problem(result, path.name, codes, line)
    assert len(result.stderr) < 10_000  # no echo of the hostile content


def test_the_billion_laughs_file_really_is_a_bomb() -> None:
    # guards the case above: the file must hold the aliases that would expand it
    text = billion_laughs().decode()
    assert text.count("*") == 8 * 9 and text.count("&") == 9


def test_the_50mb_file_is_over_the_limit_and_the_1mb_line_under() -> None:
    assert len(CASES["file-50mb"][0]) >= 50_000_000 > MAX_BYTES
    assert len(CASES["single-line-1mb"][0]) <= MAX_BYTES
    assert len(CASES["block-mappings-10000-deep"][0]) > MAX_BYTES


# Values that are valid YAML but absurd as money or shares: each once reached Decimal
# arithmetic outside its context (an internal error) or was silently rounded away.
# (replace, with, expected code, line in the template)
HOSTILE_VALUES = {
    "integer-5000-digits": ("cap: 200000.00", "cap: " + "1" * 5000, "bad-money", 25),
    "exponent-huge": ("2024-04-01: 500.00", "2024-04-01: 1e999999999", "bad-money", 41),
    "exponent-30": ("cap: 200000.00", "cap: 1e30", "bad-money", 25),
    "price-1e-999999999": ("2024-04-01: 500.00", "2024-04-01: 1e-999999999", "bad-money", 41),
    "share-huge": ("share: 40}", "share: 1e999999999}", "bad-share", 33),
    "share-1e-999999999": ("share: 40}", "share: 1e-999999999}", "bad-share", 33),
    "days-5000-digits": ("within_days: 274", "within_days: " + "9" * 5000, "wrong-type", 46),
}


@pytest.mark.parametrize("case", list(HOSTILE_VALUES))
def test_hostile_value_is_one_located_problem(tmp_path: Path, case: str) -> None:
    old, new, code, line = HOSTILE_VALUES[case]
    assert TEMPLATE.count(old) >= 1
    text = TEMPLATE.replace("id: my-contract", f"id: {case}").replace(old, new, 1)
    assert new in text.splitlines()[line - 1]  # the line the problem must be reported at
    path = tmp_path / f"{case}.yaml"
    path.write_text(text, "utf-8")
    assert_one_located_problem(run_check(path), path.name, {code}, line)


def test_a_hostile_file_does_not_hide_problems_in_the_others(tmp_path: Path) -> None:
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "bomb.yaml").write_bytes(billion_laughs())
    (tmp_path / "contracts" / "my-contract.yaml").write_text(TEMPLATE, "utf-8")
    result = CliRunner().invoke(cli, ["check", "--workspace", str(tmp_path)])
    assert result.exit_code == 1
    assert "contracts/bomb.yaml:2:" in result.stderr
    assert "contracts/my-contract.yaml: ok" in result.stdout
