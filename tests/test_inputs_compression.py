"""Compressed evidence copies in inputs/: written above the threshold, read back by
`sib audit` and `sib explain` as the bytes the claim read, damage found and located.

Each test issues claim 2020-Q1 onto a copy of the example cut to 2019-Q4, with
`issue.COMPRESS_FROM` lowered to 100,000 bytes so that the example's milestones.csv
(156 kB) is stored compressed and its participants.csv (59 kB) is not — the shipped
example itself is far below the real 1 MiB threshold and stays exactly as it is.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import sib.issue as issue
from sib.audit import audit
from sib.cli import cli
from sib.issue import gzip_bytes, manifest_bytes, sha256, stored_input

ROOT = Path(__file__).resolve().parent.parent
CID = "west-london-ips"
PERIOD = "2020-Q1"
FOLDER = f"ledgers/{CID}/{PERIOD}"
GZ = "inputs/milestones.csv.gz"
THRESHOLD = 100_000


def run(ws: Path, *args: str):
    result = CliRunner().invoke(cli, [*args, "-w", str(ws)], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def example_upto_2019_q4(dest: Path) -> Path:
    for name in ("contracts", "evidence", "ledgers"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns(".lock", ".tmp-*"))
    for d in (dest / "ledgers" / CID).iterdir():
        if d.name > "2019-Q4":
            shutil.rmtree(d)
    return dest


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(issue, "COMPRESS_FROM", THRESHOLD)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1586338200")  # same bytes every run


@pytest.fixture
def ws(tmp_path: Path, small_threshold) -> Path:
    """The example to 2019-Q4 with claim 2020-Q1 issued, its milestones compressed."""
    ws = example_upto_2019_q4(tmp_path / "ws")
    result = run(ws, "claim", "--period", PERIOD)
    assert result.exit_code == 0, result.output
    return ws


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def manifest(ws: Path) -> dict:
    return json.loads((ws / FOLDER / "manifest.json").read_text("utf-8"))


def reseal(ws: Path, compressed: bool = True) -> None:
    """Recompute 2020-Q1's file hashes (and, with `compressed`, what its compressed copy
    holds) for the files as they are now: a careful forger. It is the last claim, so no
    later manifest names its hash."""
    m = manifest(ws)
    folder = ws / FOLDER
    m["files"] = {name: sha256((folder / name).read_bytes()) for name in m["files"]}
    if compressed:
        raw = gzip.decompress((folder / GZ).read_bytes())
        m["compressed"][GZ] = {"sha256": sha256(raw), "size": len(raw)}
    (folder / "manifest.json").write_bytes(manifest_bytes(m))


def findings(ws: Path) -> set[tuple[str, str]]:
    return {(p.location, p.code) for p in audit(ws).findings}


# --- writing ---------------------------------------------------------------------------------

def test_a_large_csv_is_stored_compressed_and_a_small_one_as_it_is(ws: Path) -> None:
    evidence = ws / "evidence" / CID
    folder = ws / FOLDER
    assert sorted(files_under(folder / "inputs")) == [
        "contract.yaml", "milestones.csv.gz", "participants.csv"]
    raw = (evidence / "milestones.csv").read_bytes()
    assert len(raw) >= THRESHOLD > len((evidence / "participants.csv").read_bytes())
    stored = (folder / GZ).read_bytes()
    assert gzip.decompress(stored) == raw
    assert len(stored) < len(raw) / 4
    assert (folder / "inputs/participants.csv").read_bytes() == \
        (evidence / "participants.csv").read_bytes()
    m = manifest(ws)
    # files: the bytes on disk, as for every file; compressed: the evidence as read
    assert m["files"][GZ] == sha256(stored)
    assert "inputs/milestones.csv" not in m["files"]
    assert m["compressed"] == {GZ: {"sha256": sha256(raw), "size": len(raw)}}


def test_below_the_threshold_nothing_changes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(issue, "COMPRESS_FROM", 200_000)  # above both evidence files
    ws = example_upto_2019_q4(tmp_path)
    assert run(ws, "claim", "--period", PERIOD).exit_code == 0
    assert sorted(files_under(ws / FOLDER / "inputs")) == [
        "contract.yaml", "milestones.csv", "participants.csv"]
    assert "compressed" not in manifest(ws)


def test_only_csv_is_compressed() -> None:
    big = b"participant_id\n" + b"P1\n" * 1000
    assert stored_input("inputs/participants.csv", big, 100)[0] == "inputs/participants.csv.gz"
    assert stored_input("inputs/participants.csv", big, len(big) + 1) == \
        ("inputs/participants.csv", big, None)
    # an .xlsx is already a zip archive: gzip would save nothing
    assert stored_input("inputs/milestones.xlsx", big, 100) == ("inputs/milestones.xlsx", big, None)


def test_issuing_twice_gives_identical_bytes(ws: Path, tmp_path: Path) -> None:
    other = example_upto_2019_q4(tmp_path / "other")
    assert run(other, "claim", "--period", PERIOD).exit_code == 0
    assert files_under(other / FOLDER) == files_under(ws / FOLDER)
    # the gzip header has no file name and no time (RFC 1952: FLG 0, MTIME 0)
    head = (ws / FOLDER / GZ).read_bytes()[:10]
    assert head == bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF])
    assert gzip_bytes(b"x" * 5000) == gzip_bytes(b"x" * 5000)


def test_rerunning_the_period_is_unchanged(ws: Path) -> None:
    result = run(ws, "claim", "--period", PERIOD)
    assert result.exit_code == 0, result.output
    assert "already issued, unchanged" in result.output


# --- audit -----------------------------------------------------------------------------------

def test_audit_replays_a_claim_whose_inputs_are_compressed(ws: Path) -> None:
    report = audit(ws)
    assert report.ok, [str(p) for p in report.findings]
    assert report.claims[-1].period == PERIOD
    assert report.claims[-1].checks["replay"] == "ok"


def test_the_replay_reads_the_compressed_evidence(ws: Path) -> None:
    """A forger who recompresses edited evidence and recomputes every hash is caught by
    the replay, which therefore reads what the .gz holds."""
    folder = ws / FOLDER
    paid = pd.read_csv(folder / "ledger.csv", dtype=str)
    pays = paid[paid["kind"] == "payment"]
    fresh = pays[~pays["milestone_id"].isin(paid.loc[paid["kind"] == "reversal", "milestone_id"])]
    first, line = fresh["milestone_id"].iloc[0], int(fresh.index[0]) + 2  # line 1: the header
    text = gzip.decompress((folder / GZ).read_bytes()).decode("utf-8").split("\n")
    n = next(k for k, line in enumerate(text) if line.startswith(first + ","))
    assert ",verified," in text[n]
    text[n] = text[n].replace(",verified,", ",pending,")
    (folder / GZ).write_bytes(gzip_bytes("\n".join(text).encode("utf-8")))
    reseal(ws)
    got = findings(ws)
    assert (f"{FOLDER}/ledger.csv:{line}", "replay-mismatch") in got
    assert not any(code in ("file-hash", "bad-input") for _, code in got), got


def test_a_changed_compressed_copy_is_found_with_its_location(ws: Path) -> None:
    folder = ws / FOLDER
    raw = gzip.decompress((folder / GZ).read_bytes())
    (folder / GZ).write_bytes(gzip_bytes(raw.replace(b",verified,", b",pending,", 1)))
    got = findings(ws)
    assert (f"{FOLDER}/{GZ}", "file-hash") in got
    assert (f"{FOLDER}/{GZ}", "bad-input") in got  # not the evidence the claim read
    # with only the file hash recomputed, the recorded content hash still catches it
    reseal(ws, compressed=False)
    assert findings(ws) == {(f"{FOLDER}/{GZ}", "bad-input")}


@pytest.mark.parametrize("damage, expected", [
    (lambda b: b[: len(b) // 2], "is truncated"),
    (lambda b: b[:-4], "is truncated"),  # the length field of the trailer cut off
    (lambda b: b[:5000] + bytes([b[5000] ^ 0xFF]) + b[5001:], "is not a readable gzip file"),
    (lambda b: b"not gzip at all", "is not a readable gzip file"),
    (lambda b: b + b"\0", "after the end of its gzip stream"),
])
def test_a_damaged_gzip_is_reported_not_raised(ws: Path, damage, expected: str) -> None:
    path = ws / FOLDER / GZ
    path.write_bytes(damage(path.read_bytes()))
    reseal(ws, compressed=False)  # so that only the decompression can tell
    result = run(ws, "audit")
    assert result.exit_code == 1
    assert f"{FOLDER}/{GZ}: [bad-input] this compressed copy of inputs/milestones.csv " \
        in result.stderr and expected in result.stderr, result.stderr
    report = audit(ws)
    assert {(p.location, p.code) for p in report.findings} == {(f"{FOLDER}/{GZ}", "bad-input")}
    last = report.claims[-1]
    assert last.checks["files"] == "failed" and last.checks["replay"] == "skipped"
    assert any(expected in note for note in last.notes), last.notes


def test_a_compressed_copy_the_manifest_does_not_describe(ws: Path) -> None:
    m = manifest(ws)
    del m["compressed"]
    (ws / FOLDER / "manifest.json").write_bytes(manifest_bytes(m))
    report = audit(ws)
    assert [(p.path, p.code) for p in report.findings] == [
        (f"{FOLDER}/manifest.json", "bad-manifest")]
    assert "compressed does not record the size and sha256" in report.findings[0].message
    assert report.claims[-1].checks["replay"] == "skipped"


# --- explain ---------------------------------------------------------------------------------

def _a_milestone(ws: Path) -> dict:
    folder = ws / FOLDER
    mid = pd.read_csv(folder / "ledger.csv", dtype=str)["milestone_id"].iloc[0]
    rows = pd.read_csv(ws / "evidence" / CID / "milestones.csv", dtype=str, keep_default_na=False)
    return rows[rows["milestone_id"] == mid].iloc[0].to_dict()


def test_explain_cites_a_row_of_a_compressed_input(ws: Path) -> None:
    row = _a_milestone(ws)
    result = run(ws, "explain", "--milestone", row["milestone_id"], "--period", PERIOD, "--json")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)["milestones"][0]
    assert m["facts_as_of"] == PERIOD
    assert m["facts"] == {k: v for k, v in row.items() if v != ""}
    text = run(ws, "explain", "--milestone", row["milestone_id"], "--period", PERIOD).stdout
    assert f"evidence_ref {row['evidence_ref']}" in text and f"(inputs of {PERIOD})" in text


def test_explain_does_not_crash_on_a_truncated_copy(ws: Path) -> None:
    row = _a_milestone(ws)
    path = ws / FOLDER / GZ
    path.write_bytes(path.read_bytes()[:1000])
    result = run(ws, "explain", "--milestone", row["milestone_id"], "--period", PERIOD)
    assert result.exit_code == 0, result.output
    assert f"{row['milestone_id']}" in result.stdout
    assert f"evidence_ref {row['evidence_ref']}" not in result.stdout  # no facts, no error


def test_the_shipped_example_is_far_below_the_threshold() -> None:
    """So its inputs/ and manifests stay byte for byte what they were."""
    for path in (ROOT / "evidence" / CID).iterdir():
        assert path.stat().st_size < issue.COMPRESS_FROM / 4, path
    for m in (ROOT / "ledgers" / CID).glob("*/manifest.json"):
        assert "compressed" not in json.loads(m.read_text("utf-8"))
