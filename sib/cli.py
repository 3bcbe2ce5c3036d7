"""The `sib` command line: a thin click layer over the library.

Last in the flow. Each command parses its options, calls one library function and prints
the result: results on stdout, problems and progress on stderr. Only this module imports
click, prints or exits. No Python traceback ever reaches a user: `main` turns operational
errors into one line (exit 1) and anything unexpected into a one-line bug report (exit 3).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sib import __version__
from sib.problems import Problem, ProblemsFound, SibError, sort_problems

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _emit_problems(problems: list[Problem]) -> None:
    for p in sort_problems(problems):
        click.echo(str(p), err=True)
    n = len(problems)
    click.echo(f"{n} problem{'s' if n != 1 else ''} found; nothing was written.", err=True)


def _workspace_option(f):
    return click.option(
        "--workspace", "-w", type=click.Path(file_okay=False, path_type=Path), default=".",
        envvar="SIB_WORKSPACE", show_default=True,
        help="The workspace folder holding contracts/, evidence/ and ledgers/.")(f)


class _SibGroup(click.Group):
    """A group that turns problems and operational errors into messages and exit codes."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except ProblemsFound as e:
            _emit_problems(e.problems)
            ctx.exit(EXIT_PROBLEMS)
        except SibError as e:
            click.echo(f"sib: {e}", err=True)
            ctx.exit(EXIT_PROBLEMS)
        except KeyboardInterrupt:
            click.echo("Interrupted; nothing half-written is left (claims are written "
                       "atomically).", err=True)
            ctx.exit(130)
        except Exception as e:  # noqa: BLE001 - the last line of defence
            click.echo(f"sib: internal error ({type(e).__name__}: {e}); this is a bug in sib "
                       f"{__version__}: please report it with the command you ran.", err=True)
            ctx.exit(EXIT_BUG)


@click.group(cls=_SibGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="sib")
def cli() -> None:
    """sib — outcomes payments for social impact bonds, exact to the penny.

    \b
    Run from a workspace folder holding contracts/, evidence/ and ledgers/:
      sib check                      validate the contract files
      sib claim --period 2022-Q1     issue a quarter's claim
    Every command has -h/--help with an example.
    """


@cli.command(context_settings=CONTEXT)
@click.argument("contract_files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--evidence", is_flag=True,
              help="Also check each contract's evidence files (evidence/<id>/).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@_workspace_option
def check(contract_files: tuple[Path, ...], evidence: bool, as_json: bool, workspace: Path) -> None:
    """Validate contract files and report every problem at file:line.

    With no CONTRACT_FILES, checks every contracts/*.yaml in the workspace.

    \b
    Example:
      sib check
      sib check contracts/west-london-ips.yaml --json
    """
    from sib.workspace import check_files

    report = check_files(workspace, list(contract_files), with_evidence=evidence)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2, sort_keys=True))
    else:
        for line in report.summary_lines():
            click.echo(line)
        if report.problems:
            _emit_problems(report.problems)
    sys.exit(EXIT_PROBLEMS if report.problems else EXIT_OK)


@cli.command(context_settings=CONTEXT)
def schema() -> None:
    """Print the JSON Schema of the contract format (sib-contract/1).

    Editors use it to complete and check contract files as you type; point them at it with
    a first line like `# yaml-language-server: $schema=../schema/sib-contract-1.json`.

    \b
    Example:
      sib schema > schema/sib-contract-1.json
    """
    from sib.contract import json_schema

    click.echo(json.dumps(json_schema(), indent=2, sort_keys=True))


@cli.command(context_settings=CONTEXT)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Create a workspace in DIRECTORY with a commented contract template.

    Writes contracts/my-contract.yaml (which passes `sib check`), empty evidence files
    with their headers, ledgers/, and the contract JSON Schema. Never overwrites a file.

    \b
    Example:
      sib init my-sib && cd my-sib && sib check
    """
    from sib.workspace import init_workspace

    for written in init_workspace(directory):
        click.echo(f"wrote {written}")
    click.echo(f"Next: edit {directory / 'contracts' / 'my-contract.yaml'}, then run "
               f"`sib check` in {directory}.")


@cli.command(context_settings=CONTEXT)
@click.option("--period", "-p", required=True, metavar="P",
              help="The claim period, in the contract's kind: 2022-Q1, 2022-23-Q1 or 2022-03.")
@click.option("--contract", "contract_id", metavar="ID",
              help="The contract id (may be left out when the workspace has one contract).")
@click.option("--dry-run", is_flag=True, help="Compute and show everything; write nothing.")
@click.option("--skip-invalid", is_flag=True,
              help="Record invalid evidence rows as invalid-row decisions and claim the rest.")
@click.option("--participants", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Participants file (default evidence/<id>/participants.csv or .xlsx).")
@click.option("--milestones", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Milestones file (default evidence/<id>/milestones.csv or .xlsx).")
@click.option("--json", "as_json", is_flag=True,
              help="With --dry-run: print the claim (totals, decisions, lines) as JSON.")
@_workspace_option
def claim(period: str, contract_id: str | None, dry_run: bool, skip_invalid: bool,
          participants: Path | None, milestones: Path | None, as_json: bool,
          workspace: Path) -> None:
    """Issue claim P: compute it from the contract, evidence and earlier claims, and write it.

    Writes ledgers/<id>/<P>/ (ledger.csv, decisions.csv, inputs/, manifest.json) atomically,
    and prints the totals by funder kind and funder, the decisions, and the reconciliation
    line. Claims go in order without gaps. Running an issued period again checks it: it
    says "unchanged", or explains what changed (the change flows into the next claim).

    \b
    Example:
      sib claim --period 2022-Q1
      sib claim --period 2022-Q2 --dry-run --json > claim.json
    """
    from sib.issue import issue_claim
    from sib.report import claim_json, claim_summary

    if as_json and not dry_run:
        raise click.UsageError("--json needs --dry-run (an issued claim's files are its record)")
    prep, done = issue_claim(workspace, contract_id, period, participants, milestones,
                             skip_invalid, dry_run)
    for n in prep.notices:
        click.echo(str(n), err=True)
    if prep.evidence.problems:
        for p in sort_problems(prep.evidence.problems):
            click.echo(str(p), err=True)
        click.echo(f"--skip-invalid: {prep.skipped_invalid} invalid row(s) recorded as "
                   "invalid-row decisions; fix them and they are claimed next time", err=True)
    if as_json:
        click.echo(json.dumps(claim_json(prep, done), indent=2, sort_keys=True))
        return
    click.echo(claim_summary(prep, done))


@cli.command(context_settings=CONTEXT)
@click.option("--contract", "contract_id", metavar="ID",
              help="The contract id (may be left out when the workspace has one contract).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result (each claim's checks and every finding) as JSON.")
@click.option("--workers", type=click.IntRange(1, 64), metavar="N",
              help="Processes to replay claims on (default: one per CPU); the findings are "
                   "the same whatever N.")
@_workspace_option
def audit(contract_id: str | None, as_json: bool, workers: int | None,
          workspace: Path) -> None:
    """Verify every issued claim: hash chain, file hashes, replay, invariants, totals.

    Each claim is recomputed from its inputs/ and the earlier ledgers and must reproduce
    ledger.csv and decisions.csv byte for byte. Findings go to stderr as
    ledgers/<id>/<period>/<file>[:line]: [code] message (with --json, into the document);
    exit 1 if there is any.

    \b
    Example:
      sib audit
      sib audit --contract west-london-ips --json > audit.json
    """
    from contextlib import ExitStack

    from sib.audit import audit as run_audit

    with ExitStack() as stack:
        bar = []

        def progress(done: int, total: int, label: str) -> None:
            if not sys.stderr.isatty():
                return
            if not bar:
                bar.append(stack.enter_context(click.progressbar(
                    length=total, label="Auditing claims", file=sys.stderr, show_pos=True,
                    item_show_func=lambda item: item)))
            bar[0].update(1, label)

        report = run_audit(workspace, contract_id, progress, workers)
    if as_json:  # the findings are in the document
        click.echo(json.dumps(report.as_json(), indent=2, sort_keys=True, ensure_ascii=False))
        sys.exit(EXIT_PROBLEMS if report.findings else EXIT_OK)
    for line in report.summary_lines():
        click.echo(line)
    for p in report.findings:
        click.echo(str(p), err=True)
    if report.findings:
        n, k = len(report.findings), sum(1 for c in report.claims if "failed" in c.checks.values())
        click.echo(f"{n} finding{'s' if n != 1 else ''} in {k} of {len(report.claims)} "
                   "claim(s): the ledgers are not as issued (see ledger.md § Audit)", err=True)
    sys.exit(EXIT_PROBLEMS if report.findings else EXIT_OK)


@cli.command(context_settings=CONTEXT)
@click.option("--participant", metavar="ID", help="A participant id (e.g. WL00013).")
@click.option("--milestone", metavar="ID", help="A milestone id (e.g. WLM000491).")
@click.option("--period", "-p", metavar="P", help="Only this issued claim (e.g. 2021-Q4).")
@click.option("--contract", "contract_id", metavar="ID",
              help="The contract id (may be left out when the workspace has one contract).")
@click.option("--json", "as_json", is_flag=True, help="Print the story as JSON.")
@_workspace_option
def explain(participant: str | None, milestone: str | None, period: str | None,
            contract_id: str | None, as_json: bool, workspace: Path) -> None:
    """The story of a participant or a milestone, claim by claim.

    For each milestone: each claim's decision and reason, the contract rule that decided it
    as file:line, the price version, the split with each funder's pennies, what any cap
    withheld, and reversals and re-ratings. Reads the issued claims only.

    \b
    Example:
      sib explain --participant WL00013
      sib explain --milestone WLM000491 --period 2021-Q4 --json
    """
    from sib.explain import explain as run_explain

    if (participant is None) == (milestone is None):
        raise click.UsageError("give exactly one of --participant ID and --milestone ID")
    story = run_explain(workspace, contract_id, participant, milestone, period)
    if as_json:
        click.echo(json.dumps(story.as_json(), indent=2, sort_keys=True, ensure_ascii=False))
    else:
        click.echo("\n".join(story.text_lines()))


@cli.command(context_settings=CONTEXT)
@click.option("--contract", "contract_id", metavar="ID",
              help="The contract id (may be left out when the workspace has one contract).")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@_workspace_option
def status(contract_id: str | None, as_json: bool, workspace: Path) -> None:
    """Where a contract stands: claims issued, paid per funder against caps, what is next.

    Shows each issued claim (number, period, amount, date), the cumulative paid per funder
    against its cap, the contract and central top-up totals, the next period due and the
    milestones pending verification at the latest claim.

    \b
    Example:
      sib status
      sib status --contract west-london-ips --json
    """
    from sib.explain import status as run_status

    st = run_status(workspace, contract_id)
    if as_json:
        click.echo(json.dumps(st.as_json(), indent=2, sort_keys=True, ensure_ascii=False))
    else:
        click.echo("\n".join(st.text_lines()))


@cli.command(context_settings=CONTEXT)
@click.argument("assumptions", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--runs", type=click.IntRange(1, 100_000), metavar="N",
              help="Simulated histories (default: the file's `runs`).")
@click.option("--vary", metavar="NAME=LOW:HIGH:STEP",
              help="Also sweep a milestone probability, e.g. "
                   "milestone.job-start.probability=0.25:0.35:0.05.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE.xlsx", help="Also write the tables and charts to a workbook.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@click.option("--workers", type=click.IntRange(1, 64), metavar="N",
              help="Processes to run histories on (default: one per CPU); the results are "
                   "the same whatever N.")
@_workspace_option
def model(assumptions: Path, runs: int | None, vary: str | None, output: Path | None,
          as_json: bool, workers: int | None, workspace: Path) -> None:
    """Model a bid: simulate histories and claim each through the real claim engine.

    ASSUMPTIONS is a sib-model/1 file (enrolments, participant profiles, milestone chains
    with probabilities and delays, optional costs); its `contract` is relative to the
    workspace. Prints, per claim period and funder, the mean, P10 and P90 of payments and
    cumulative payments, how likely each cap is to be reached and when, per outcome the
    expected count, amount and what caps withheld, and with costs the investor's net
    position, multiple, IRR and break-even. The same seed gives the same output.

    \b
    Example:
      sib model models/west-london-ips.yaml
      sib model models/west-london-ips.yaml --runs 200 --output model.xlsx
      sib model models/west-london-ips.yaml --vary milestone.job-start.probability=0.25:0.35:0.05 --json
    """
    import os
    from contextlib import ExitStack

    from sib.model import VaryError, parse_vary, run_model
    from sib.model_format import load_assumptions

    la, problems = load_assumptions(assumptions, workspace, str(assumptions))
    if la is None:
        raise ProblemsFound(problems)
    if vary is not None:
        try:
            parse_vary(vary, la)
        except VaryError as e:
            raise click.BadParameter(str(e), param_hint="--vary") from None
    with ExitStack() as stack:
        bar = []

        def progress(done: int, total: int) -> None:
            if not sys.stderr.isatty():
                return
            if not bar:
                bar.append(stack.enter_context(click.progressbar(
                    length=total, label="Simulating histories", file=sys.stderr,
                    show_pos=True, show_eta=True)))
            bar[0].length = total
            bar[0].update(done - bar[0].pos)

        result = run_model(la, runs, vary, workers or os.cpu_count() or 1, progress)
    if output is not None:
        from sib.model_workbook import model_workbook

        try:
            output.write_bytes(model_workbook(result))
        except OSError as e:
            raise SibError(f"cannot write {output}: {e.strerror or e}") from None
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2, sort_keys=True, ensure_ascii=False))
    else:
        click.echo("\n".join(result.summary_lines()))
    if output is not None:
        click.echo(f"Wrote {output}", err=as_json)


@cli.group(context_settings=CONTEXT)
def export() -> None:
    """Export a contract and its issued claims for others to read.

    \b
    Example:
      sib export indigo --contract west-london-ips --output indigo.json
    """


@export.command(context_settings=CONTEXT)
@click.option("--contract", "contract_id", metavar="ID",
              help="The contract id (may be left out when the workspace has one contract).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the document to FILE (replaced whole, never half-written) instead "
                   "of stdout.")
@_workspace_option
def indigo(contract_id: str | None, output: Path | None, workspace: Path) -> None:
    """The contract as an INDIGO impact bond project document (GO Lab data standard).

    Writes one JSON object: the name and service dates, each outcome and its prices, each
    funder's cap and total paid, the net actual payment per claim period, outcome and
    funder, and the milestones paid per outcome — from the contract and the issued claims
    in ledgers/<id>/ only, never today's evidence. Money is in pounds with two decimals,
    exactly as in the ledgers; the same ledgers always give the same bytes. Organisations
    are named by the INDIGO ids the contract gives (`indigo_id` on a funder,
    `provider_indigo_id`), else by sib's funder ids and the contract's `provider`.

    \b
    Example:
      sib export indigo --contract west-london-ips --output indigo.json
      sib export indigo > indigo.json
    """
    import os
    import secrets

    from sib.indigo import dumps, missing_indigo_ids, project_document
    from sib.issue import ledger_dir
    from sib.ledger import issued_periods, read_history
    from sib.workspace import find_contract, shown_path

    lc = find_contract(workspace, contract_id)
    c = lc.contract
    root = ledger_dir(workspace, c.id)
    history = read_history(root, issued_periods(root, c.claims), shown_path(root, workspace))
    text = dumps(project_document(c, history))
    if output is None:
        click.echo(text, nl=False)
    else:
        # a temporary file beside FILE, renamed over it: readers see the old file or the new
        # one, whole; os.open with 0o666 gives it the permissions the umask allows
        tmp = output.parent / f".{output.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(text.encode("utf-8"))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, output)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except OSError as e:
            raise SibError(f"cannot write {output}: {e.strerror or e}") from None
        click.echo(f"Wrote {output}")
    missing = missing_indigo_ids(c)
    if missing:  # after the document: a failed write stays the last line
        shown = ", ".join(missing[:4]) + (f", … ({len(missing)} in all)" if len(missing) > 4
                                          else "")
        click.echo(f"note: no INDIGO organisation id for {shown}; the document names them by "
                   "sib's ids (add `indigo_id: INDIGO-ORG-####` to a funder, "
                   "`provider_indigo_id:` to the contract)", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point for the `sib` console script."""
    cli.main(args=argv, prog_name="sib")
