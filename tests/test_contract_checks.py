"""Every check `sib check` makes on a contract, one tiny bad file per check.

Each file in tests/contracts/bad/ starts with its expectations, as comments:

    # expect: <code> at line <N>        one line per problem the file must yield
    #   says: <text>                    words the message above must contain

and the test checks that exactly those (code, line) pairs are reported, through the real
check path (`sib.workspace.check_files`). Every file's contract `id` equals its file
name, so the only id-mismatch is the file that tests it.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from sib.cli import cli
from sib.workspace import check_files

BAD = Path(__file__).parent / "contracts" / "bad"
BAD_FILES = sorted(BAD.glob("*.yaml"))

_EXPECT = re.compile(r"^# expect: ([a-z][a-z0-9-]*) at line (\d+)$")
_SAYS = re.compile(r"^#\s+says: (.+)$")


def expectations(path: Path) -> list[tuple[str, int, list[str]]]:
    """The file's leading `# expect:` lines: (code, line, [words the message says])."""
    out: list[tuple[str, int, list[str]]] = []
    for text in path.read_text("utf-8").splitlines():
        if not text.startswith("#"):
            break
        if m := _EXPECT.match(text):
            out.append((m.group(1), int(m.group(2)), []))
        elif (m := _SAYS.match(text)) and out:
            out[-1][2].append(m.group(1))
    return out


# The checks listed under "Checks `sib check` must make" in contract-format.md, each with
# the bad file(s) that show it. A new check in the spec needs a line here and a file.
SPEC_CHECKS = {
    "not YAML": ["not-yaml", "tab-indent"],
    "duplicate key": ["duplicate-key"],
    "unknown key": ["unknown-key", "misspelt-required-key"],
    "missing key": ["missing-key", "empty-outcomes"],
    "wrong type": ["wrong-type", "blank-name", "bad-currency"],
    "bad format": ["bad-format"],
    "id not matching the file name": ["id-mismatch"],
    "bad slug": ["bad-slug"],
    "impossible date": ["bad-date", "bad-date-format", "bad-price-date"],
    "term dates out of order": ["term-order", "term-order-claims-end"],
    "money with more than two decimals": ["money-decimals"],
    "negative money": ["money-negative"],
    "share with more than four decimals": ["share-decimals"],
    "zero share": ["share-zero"],
    "split not summing to exactly 100": ["split-sum"],
    "unknown funder in a split": ["unknown-funder"],
    "route column no funder serves": ["unknown-route"],
    "two funders serving the same value": ["serves-overlap"],
    "outcome ids repeated": ["duplicate-outcome-id"],
    "funder ids repeated": ["duplicate-funder-id"],
    "unknown group": ["unknown-group"],
    "group together with limit_per_participant": ["group-and-limit"],
    "requires naming an unknown outcome": ["unknown-requires"],
    "requires forming a cycle": ["requires-cycle"],
    "overlapping when conditions on one milestone type": ["when-overlap", "when-overlap-no-when"],
    "price dated after term.outcomes_end": ["price-after-end"],
    "no price in force on term.service_start": ["no-price-at-start"],
}

# The reason code each spec check must be reported with.
SPEC_CODES = {
    "not-yaml", "duplicate-key", "unknown-key", "missing-key", "wrong-type", "bad-format",
    "id-mismatch", "bad-slug", "bad-date", "term-order", "bad-money", "bad-share",
    "split-sum", "unknown-funder", "unknown-route", "serves-overlap", "duplicate-id",
    "unknown-group", "group-and-limit", "unknown-requires", "requires-cycle",
    "when-overlap", "price-after-end", "no-price-at-start",
}


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.name for p in BAD_FILES])
def test_bad_contract_reports_expected_problems(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name} has no '# expect: <code> at line <N>' first line"

    report = check_files(BAD, [path])

    found = sorted((p.code, p.line) for p in report.problems)
    assert found == sorted((code, line) for code, line, _ in expected)
    assert all(p.path == path.name for p in report.problems)
    for code, line, words in expected:
        message = next(p.message for p in report.problems if (p.code, p.line) == (code, line))
        for w in words:
            assert w in message, f"{code} at line {line}: {w!r} not in {message!r}"


def test_every_bad_file_starts_with_an_expect_line() -> None:
    for path in BAD_FILES:
        first = path.read_text("utf-8").splitlines()[0]
        assert _EXPECT.match(first), f"{path.name}: first line is {first!r}"


def test_every_spec_check_has_a_bad_file_with_its_code() -> None:
    names = {p.stem for p in BAD_FILES}
    for check, files in SPEC_CHECKS.items():
        missing = [f for f in files if f not in names]
        assert not missing, f"no bad file for {check!r}: {missing}"
    codes = {code for p in BAD_FILES for code, _, _ in expectations(p)}
    assert SPEC_CODES <= codes, f"spec codes with no bad file: {sorted(SPEC_CODES - codes)}"


def test_the_skeleton_the_bad_files_share_is_valid(tmp_path: Path) -> None:
    # The bad files share one valid skeleton; if the skeleton itself had a problem, every
    # case would carry it. This is that skeleton, with the id of its file name.
    (tmp_path / "skeleton.yaml").write_text(SKELETON, "utf-8")
    report = check_files(tmp_path, [tmp_path / "skeleton.yaml"])
    assert report.problems == []
    assert report.checked[0][1] is not None


SKELETON = textwrap.dedent("""\
    format: sib-contract/1
    id: skeleton
    name: Test contract
    currency: GBP
    claims: quarter
    term:
      service_start: 2020-01-01
      enrolment_end: 2020-12-31
      outcomes_end: 2021-06-30
    funders:
      - {id: dcms, name: DCMS, kind: central}
      - {id: council, name: The council, kind: local-authority}
    payers:
      - split:
          - {funder: dcms, share: 40}
          - {funder: council, share: 60}
    outcomes:
      - id: engagement
        name: Engagement
        milestone: engagement
        prices: {2020-01-01: 500.00}
    """)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), "utf-8")
    return path


def test_several_model_problems_are_all_reported_in_one_run(tmp_path: Path) -> None:
    path = write(tmp_path, "many.yaml", """\
        format: sib-contract/1
        id: many
        name: Test contract
        currency: GBP
        claims: weekly
        term:
          service_start: 2020-01-01
          enrolment_end: 2020-02-30
          outcomes_end: 2021-06-30
        funders:
          - {id: dcms, name: DCMS, kind: central, cap: 10.001, colour: blue}
        payers:
          - split:
              - {funder: dcms, share: 0}
        outcomes:
          - id: engagement
            name: Engagement
            name: Engagement again
            milestone: engagement
            prices: {2020-01-01: -5}
        """)
    report = check_files(tmp_path, [path])
    assert sorted((p.code, p.line) for p in report.problems) == [
        ("bad-date", 8),       # 2020-02-30
        ("bad-money", 11),     # cap 10.001
        ("bad-money", 20),     # price -5
        ("bad-share", 14),     # share 0
        ("bad-value", 5),      # claims: weekly
        ("duplicate-key", 18),  # name twice
        ("unknown-key", 11),   # colour
    ]


def test_several_cross_reference_problems_are_all_reported_in_one_run(tmp_path: Path) -> None:
    path = write(tmp_path, "many-more.yaml", """\
        format: sib-contract/1
        id: not-the-file-name
        name: Test contract
        currency: GBP
        claims: quarter
        term:
          service_start: 2020-01-01
          enrolment_end: 2019-12-31
          outcomes_end: 2021-06-30
        funders:
          - {id: dcms, name: DCMS, kind: central}
        payers:
          - split:
              - {funder: dcms, share: 50}
              - {funder: council, share: 49}
        outcomes:
          - id: engagement
            name: Engagement
            milestone: engagement
            group: sustainment
            prices: {2020-06-01: 500.00, 2022-01-01: 550.00}
        """)
    report = check_files(tmp_path, [path])
    assert sorted((p.code, p.line) for p in report.problems) == [
        ("id-mismatch", 2),
        ("no-price-at-start", 21),
        ("price-after-end", 21),
        ("split-sum", 13),
        ("term-order", 8),
        ("unknown-funder", 15),
        ("unknown-group", 20),
    ]


def test_problems_in_several_files_are_all_reported_in_one_run() -> None:
    files = [BAD / "split-sum.yaml", BAD / "bad-date.yaml", BAD / "not-yaml.yaml"]
    report = check_files(BAD, files)
    assert sorted((p.path, p.code) for p in report.problems) == [
        ("bad-date.yaml", "bad-date"),
        ("not-yaml.yaml", "not-yaml"),
        ("split-sum.yaml", "split-sum"),
    ]


def test_cli_prints_each_problem_as_path_line_code_message() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["check", "--workspace", str(BAD),
                                 str(BAD / "split-sum.yaml"), str(BAD / "unknown-funder.yaml")])
    assert result.exit_code == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith(("split-sum", "unknown"))]
    assert len(lines) == 2
    for ln in lines:
        assert re.match(r"^[\w.-]+\.yaml:\d+: \[[a-z0-9-]+\] \S", ln), ln
    assert lines[0].startswith("split-sum.yaml:19: [split-sum] payers[0].split: shares add up "
                               "to 99.99, expected exactly 100")
    assert lines[1].startswith("unknown-funder.yaml:19: [unknown-funder] ")
    assert result.stderr.rstrip().endswith("2 problems found; nothing was written.")


def test_cli_names_the_file_as_the_user_gave_it_relative_to_the_workspace(tmp_path: Path) -> None:
    (tmp_path / "contracts").mkdir()
    path = write(tmp_path / "contracts", "split-sum.yaml", (BAD / "split-sum.yaml").read_text())
    result = CliRunner().invoke(cli, ["check", "--workspace", str(tmp_path)])
    assert result.exit_code == 1
    assert "contracts/split-sum.yaml:19: [split-sum] " in result.stderr
    assert str(path) not in result.stderr  # shown relative to the workspace, not absolute


def test_messages_say_what_was_found_what_was_expected_and_how_to_fix() -> None:
    # found / expected / fix, for a few codes whose messages people meet most
    cases = {
        "split-sum.yaml": ["99.99", "expected exactly 100", "council 59.99"],
        "unknown-key.yaml": ["'capp'", "expected one of", "did you mean 'cap'"],
        "bad-date.yaml": ["2020-02-30", "expected YYYY-MM-DD", "e.g. 2019-01-02"],
        "id-mismatch.yaml": ["id is 'west-london'", "'id-mismatch.yaml'", "rename the file"],
        "unknown-route.yaml": ["route 'borough'", "no funder serves", "add 'serves:"],
        "price-after-end.yaml": ["2021-07-01", "after term.outcomes_end", "remove it or fix"],
    }
    for name, words in cases.items():
        report = check_files(BAD, [BAD / name])
        [problem] = report.problems
        for w in words:
            assert w in problem.message, f"{name}: {w!r} not in {problem.message!r}"


def test_the_shipped_contract_has_no_problems() -> None:
    root = Path(__file__).parent.parent
    report = check_files(root, [root / "contracts" / "west-london-ips.yaml"])
    assert report.problems == []


def test_a_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    report = check_files(tmp_path, [tmp_path / "nope.yaml"])
    assert [(p.path, p.line, p.code) for p in report.problems] == [("nope.yaml", None, "unreadable")]
