"""The `sib` command line: help on every command, exit codes, `check --json`, `init`.

Commands are found by walking the click group, so a new command is covered by the help
and README tests without editing this file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sib.cli import cli

ROOT = Path(__file__).parent.parent
BAD = Path(__file__).parent / "contracts" / "bad"


def all_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under `group`, e.g. ('check',), ('export', 'indigo')."""
    out = []
    for name, command in sorted(group.commands.items()):
        out.append(prefix + (name,))
        if isinstance(command, click.Group):
            out += all_commands(command, prefix + (name,))
    return out


COMMANDS = all_commands()


def run(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="sib")


def test_the_known_commands_are_found() -> None:
    # guards the walk above: if it found nothing, the per-command tests would all vanish
    assert {("check",), ("schema",), ("init",)} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_command_has_help_with_an_example(command: tuple[str, ...], flag: str) -> None:
    result = run(*command, flag)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: sib {' '.join(command)} ")
    assert "Example" in result.stdout
    # the example really runs this command
    example = result.stdout[result.stdout.index("Example"):]
    assert f"sib {' '.join(command)}" in example


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_the_group_has_help(flag: str) -> None:
    result = run(flag)
    assert result.exit_code == 0
    for command in COMMANDS:
        if len(command) == 1:
            assert command[0] in result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_appears_in_the_readme(command: tuple[str, ...]) -> None:
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md is not written yet (another engineer is writing it)")
    text = readme.read_text("utf-8")
    assert re.search(rf"\bsib {re.escape(' '.join(command))}\b", text), \
        f"`sib {' '.join(command)}` is not mentioned in README.md"


# --- exit codes ------------------------------------------------------------------------------

def test_check_on_the_shipped_workspace_exits_0() -> None:
    result = run("check", "--workspace", str(ROOT))
    assert result.exit_code == 0, result.output
    assert "contracts/west-london-ips.yaml: ok" in result.stdout
    assert result.stderr == ""


def test_check_on_a_bad_file_exits_1_with_problems_on_stderr() -> None:
    result = run("check", "--workspace", str(BAD), str(BAD / "split-sum.yaml"))
    assert result.exit_code == 1
    assert result.stdout == ""  # results on stdout, problems on stderr
    assert "split-sum.yaml:19: [split-sum]" in result.stderr


def test_check_in_a_folder_without_contracts_exits_1_in_one_line(tmp_path: Path) -> None:
    result = run("check", "--workspace", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.startswith("sib: ") and "contracts/" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [
    ("check", "--no-such-option"),
    ("--no-such-option",),
    ("no-such-command",),
    ("init",),  # DIRECTORY is required
])
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "Usage:" in result.stderr


# --- check --json --------------------------------------------------------------------------
# Shape of `sib check --json` (stdout):
#   {"ok": bool,                                    # true when there are no problems
#    "files": [{"path": str, "ok": bool}, ...],     # each file checked, as shown to users
#    "problems": [{"path": str, "line": int|null, "col": int|null,
#                  "code": str, "message": str}, ...]}

def test_check_json_for_a_good_contract() -> None:
    result = run("check", "--json", "--workspace", str(ROOT))
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data == {"ok": True, "problems": [],
                    "files": [{"path": "contracts/west-london-ips.yaml", "ok": True}]}


def test_check_json_for_bad_contracts() -> None:
    result = run("check", "--json", "--workspace", str(BAD),
                 str(BAD / "split-sum.yaml"), str(BAD / "misspelt-required-key.yaml"))
    assert result.exit_code == 1
    assert result.stderr == ""  # with --json everything is in the JSON
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["files"] == [{"path": "split-sum.yaml", "ok": False},
                             {"path": "misspelt-required-key.yaml", "ok": False}]
    for p in data["problems"]:
        assert set(p) == {"path", "line", "col", "code", "message"}
        assert isinstance(p["line"], int) and p["col"] is None and p["message"]
    assert sorted((p["path"], p["line"], p["code"]) for p in data["problems"]) == [
        ("misspelt-required-key.yaml", 22, "missing-key"),
        ("misspelt-required-key.yaml", 25, "unknown-key"),
        ("split-sum.yaml", 19, "split-sum"),
    ]


def test_check_json_gives_col_for_yaml_problems() -> None:
    result = run("check", "--json", "--workspace", str(BAD), str(BAD / "yaml-alias.yaml"))
    [problem] = json.loads(result.stdout)["problems"]
    assert (problem["line"], problem["col"], problem["code"]) == (10, 5, "yaml-alias")


# --- init ------------------------------------------------------------------------------------

def test_init_makes_a_workspace_whose_template_passes_check(tmp_path: Path, monkeypatch) -> None:
    ws = tmp_path / "my-sib"
    result = run("init", str(ws))
    assert result.exit_code == 0, result.output
    for folder in ("contracts", "evidence", "ledgers"):
        assert (ws / folder).is_dir()
    assert (ws / "contracts" / "my-contract.yaml").is_file()
    monkeypatch.chdir(ws)  # `sib check` run in the workspace, as the help says
    result = run("check")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("contracts/my-contract.yaml: ok")


def test_init_into_an_existing_empty_folder_works(tmp_path: Path) -> None:
    result = run("init", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "contracts" / "my-contract.yaml").is_file()


def test_init_twice_overwrites_nothing(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run("init", str(ws)).exit_code == 0
    contract = ws / "contracts" / "my-contract.yaml"
    contract.write_text("# my own work\n", "utf-8")
    result = run("init", str(ws))
    assert result.exit_code == 1
    assert "already exists" in result.stderr and "never overwrites" in result.stderr
    assert contract.read_text("utf-8") == "# my own work\n"


@pytest.mark.parametrize("existing", [
    "contracts/my-contract.yaml",
    "schema/sib-contract-1.json",
    "evidence/my-contract/participants.csv",
    "evidence/my-contract/milestones.csv",
])
def test_init_writes_nothing_when_any_file_it_would_write_exists(tmp_path: Path,
                                                                existing: str) -> None:
    (tmp_path / existing).parent.mkdir(parents=True)
    (tmp_path / existing).write_text("mine\n", "utf-8")
    result = run("init", str(tmp_path))
    assert result.exit_code == 1
    assert (tmp_path / existing).read_text("utf-8") == "mine\n"
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [existing]  # all or nothing: no half-made workspace
