"""`sib model`: the assumptions file, the simulation through the engine, and its outputs.

- a hand-computed model (probability 1, fixed delays) whose every payment is worked out
  below, figure by figure, and must come out of the engine exactly;
- caps: no run's (so no P90's) cumulative payment to a funder exceeds its cap;
- the same seed gives the same output, byte for byte, whatever the number of workers; the
  sweep's row at the assumed probability repeats the base result (the same seeds);
- the break-even bracket really straddles a zero net position;
- every check of the assumptions file: one tiny bad file per code, with its line;
- the shipped example is calibrated to the published rates (domain-facts.md);
- the workbook read back (golden cell values) and rendered by LibreOffice.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from click.testing import CliRunner

from sib.cli import cli
from sib.model import (VaryError, cash_flow, mean_pence, nearest_rank, parse_vary, run_model)
from sib.model_format import load_assumptions
from sib.model_workbook import model_workbook

ROOT = Path(__file__).resolve().parent.parent

# --- the hand-computed model ------------------------------------------------------------------

HAND_CONTRACT = """\
format: sib-contract/1
id: hand
name: Hand-computed model
currency: GBP
claims: quarter
term:
  service_start: 2024-01-01
  enrolment_end: 2024-03-31
  outcomes_end: 2024-12-31
  claims_end: 2024-12-31
funders:
  - {id: a, name: Funder A, kind: central, cap: 100000.00}
  - {id: b, name: Funder B, kind: local-authority, cap: 3000.00}
payers:
  - split:
      - {funder: a, share: 60}
      - {funder: b, share: 40}
outcomes:
  - id: engagement
    name: Engagement
    milestone: engagement
    prices: {2024-01-01: 1000.00}
  - id: job-start
    name: Job start
    milestone: job-start
    requires: [{outcome: engagement}]
    prices: {2024-01-01: 2000.00}
  - id: sustainment
    name: Sustainment
    milestone: sustainment
    requires: [{outcome: job-start}]
    prices: {2024-01-01: 3000.00}
"""

# Five participants enrol in 2024-Q1 (91 days, leap year). Every milestone happens with
# probability 1 and is verified the day it is achieved. Engagement on the enrolment day
# (Q1); the job start 91 days later, which maps Q1's day d onto Q2's day d (Q2 also has 91
# days); the sustainment 91 days after that, in Q3 (92 days). So whatever days the five
# enrol, every history pays the same, period by period:
HAND_MODEL = """\
format: sib-model/1
contract: contracts/hand.yaml
runs: 2
seed: 1
enrolments: {per_period: 5}
participants:
  - {weight: 1, borough: Anywhere}
milestones:
  - {milestone: engagement, after: enrolment, probability: 1, days: 0}
  - {milestone: job-start, after: engagement, probability: 1, days: 91}
  - {milestone: sustainment, after: job-start, probability: 1, days: 91}
costs:
  investment: 10000.00
  delivery_per_period: [6000.00, 6000.00, 6000.00, 0]
"""
P = 100  # pence per pound
HAND = {
    # 2024-Q1: 5 engagements × £1,000 = £5,000: A 60% = £3,000, B 40% = £2,000 (B: £2,000 of £3,000)
    "2024-Q1": {"a": 3000 * P, "b": 2000 * P},
    # 2024-Q2: 5 job starts × £2,000: A 5 × £1,200 = £6,000; B's parts are £800 each with
    #   £1,000 of headroom: £800 (B at £2,800), then min(£800, £200) = £200 (B at its cap,
    #   £600 withheld), then 3 × £0 (3 × £800 withheld): B £1,000; withheld £3,000
    "2024-Q2": {"a": 6000 * P, "b": 1000 * P},
    # 2024-Q3: 5 sustainments × £3,000: A 5 × £1,800 = £9,000; B at its cap: 5 × £1,200
    #   = £6,000 withheld
    "2024-Q3": {"a": 9000 * P, "b": 0},
    "2024-Q4": {"a": 0, "b": 0},
}


def workspace(tmp: Path, model: str, contract: str = HAND_CONTRACT, cid: str = "hand") -> Path:
    (tmp / "contracts").mkdir(parents=True, exist_ok=True)
    (tmp / "models").mkdir(exist_ok=True)
    (tmp / "contracts" / f"{cid}.yaml").write_text(contract, "utf-8")
    (tmp / "models" / "m.yaml").write_text(model, "utf-8")
    return tmp


def load(ws: Path):
    la, problems = load_assumptions(ws / "models" / "m.yaml", ws, "models/m.yaml")
    assert la is not None, [str(p) for p in problems]
    return la


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    ws = workspace(tmp_path_factory.mktemp("hand"), HAND_MODEL)
    return ws, run_model(load(ws), workers=1)


def pounds(p: int) -> Decimal:
    return Decimal(p) / 100


def test_hand_computed_payments_per_period_and_funder(hand) -> None:
    _ws, r = hand
    assert r.periods == ("2024-Q1", "2024-Q2", "2024-Q3", "2024-Q4")
    for fid in ("a", "b"):
        s = r.series_by_key(f"funder:{fid}")
        for period, stat in zip(r.periods, s.payments):
            want = HAND[period][fid]
            assert (stat.mean, stat.p10, stat.p90) == (want, want, want), (fid, period)
    total = r.series_by_key("total")
    # cumulative: £5,000; + £7,000 = £12,000; + £9,000 = £21,000; £21,000
    assert [pounds(c.mean) for c in total.cumulative] == [5000, 12000, 21000, 21000]
    assert [pounds(c.mean) for c in r.series_by_key("kind:local-authority").cumulative] == \
        [2000, 3000, 3000, 3000]


def test_hand_computed_caps_and_outcomes(hand) -> None:
    _ws, r = hand
    caps = {c.key: c for c in r.caps}
    assert (caps["funder:b"].probability, caps["funder:b"].median_period) == (1.0, "2024-Q2")
    assert (caps["funder:a"].probability, caps["funder:a"].median_period) == (0.0, None)
    got = {o.outcome: (o.count, pounds(o.amount.mean), pounds(o.withheld.mean))
           for o in r.outcomes}
    assert got == {
        "engagement": (5.0, 5000, 0),        # 5 × £1,000, nothing withheld
        "job-start": (5.0, 7000, 3000),      # £10,000 − B's withheld £600 + 3 × £800
        "sustainment": (5.0, 9000, 6000),    # £15,000 − B's 5 × £1,200
    }


def test_hand_computed_investor_view(hand) -> None:
    _ws, r = hand
    k = r.costs
    # cash: £10,000 + £5,000 − £6,000 = £9,000; + £7,000 − £6,000 = £10,000; + £9,000 −
    # £6,000 = £13,000; + £0 − £0 = £13,000, returned after the last claim. Net position =
    # payments − delivery so far: −£1,000, £0, £3,000, £3,000.
    assert [pounds(s.mean) for s in k.net] == [-1000, 0, 3000, 3000]
    assert pounds(k.final_net.mean) == 3000
    # multiple = £13,000 returned ÷ £10,000 drawn = 1.3; over 4 quarters, so the IRR is
    # 1.3 ^ (4/4) − 1 = 30% a year
    assert k.multiple.mean == 1.3
    assert k.irr.mean == pytest.approx(0.30, abs=1e-6)
    assert k.extra_draw_probability == 0.0


def test_cash_flow_draws_a_shortfall_when_it_happens_and_dates_it() -> None:
    # investment £100; delivery £150 in period 1: cash −£50 → £50 drawn then; then £200 in
    # → returned £200 at the end of period 2: flows −100, −50, +200 over two quarters
    net, multiple, irr, extra = cash_flow(10000, (15000, 0), np.array([0, 20000]), 4)
    assert net == [-15000, 5000]
    assert extra == 5000
    assert multiple == pytest.approx(200 / 150)
    # −100 − 50x + 200x² = 0 with x = 1/(1+r): x = (50 + √(50² + 4·200·100)) / (2·200)
    r = 400 / (50 + (50 ** 2 + 4 * 200 * 100) ** 0.5) - 1   # 18.6% a quarter
    assert irr == pytest.approx((1 + r) ** 4 - 1, rel=1e-9)


def test_progress_is_reported_history_by_history_to_the_end(hand) -> None:
    ws, _r = hand
    calls = []
    run_model(load(ws), runs=1, workers=1, progress=lambda done, total: calls.append((done, total)))
    dones = [d for d, _t in calls]
    assert dones == sorted(dones) and dones[0] >= 1
    assert all(d <= t for d, t in calls)
    assert calls[-1][0] == calls[-1][1] > 1   # the base run, then the break-even's runs


def test_statistics_are_exact_and_nearest_rank() -> None:
    assert mean_pence(np.array([1, 2])) == 2            # 1.5 → 2 (half to even)
    assert mean_pence(np.array([1, 2, 2, 0])) == 1      # 1.25 → 1
    assert mean_pence(np.array([0, 5])) == 2            # 2.5 → 2 (half to even)
    values = np.arange(1, 1001)
    assert (nearest_rank(values, 10), nearest_rank(values, 50), nearest_rank(values, 90)) == \
        (100, 500, 900)
    assert nearest_rank(np.array([7]), 10) == 7


# --- a stochastic model: caps, determinism, sweeps ----------------------------------------------

STOCH_CONTRACT = HAND_CONTRACT.replace("enrolment_end: 2024-03-31", "enrolment_end: 2024-09-30") \
    .replace("cap: 100000.00", "cap: 20000.00").replace(
        "claims_end: 2024-12-31", "claims_end: 2025-06-30")
STOCH_MODEL = """\
format: sib-model/1
contract: contracts/hand.yaml
runs: 8
seed: 11
enrolments: {per_period: [4, 6, 6]}
participants:
  - {weight: 3, borough: North}
  - {weight: 1, borough: South}
milestones:
  - {milestone: engagement, after: enrolment, probability: 0.8, days: {median: 20, p90: 60}}
  - {milestone: job-start, after: engagement, probability: 0.6, days: {median: 60, p90: 150}}
  - {milestone: sustainment, after: job-start, probability: 0.5, days: 91}
verification_days: {median: 20, p90: 50}
"""


@pytest.fixture(scope="module")
def stoch(tmp_path_factory):
    ws = workspace(tmp_path_factory.mktemp("stoch"), STOCH_MODEL, STOCH_CONTRACT)
    la = load(ws)
    return ws, la, run_model(la, vary="milestone.job-start.probability=0.4:0.6:0.2", workers=1)


def test_no_funder_is_ever_paid_over_its_cap(stoch) -> None:
    _ws, la, r = stoch
    capped = [s for s in r.series if s.cap is not None and s.key.startswith("funder:")]
    assert {s.key for s in capped} == {"funder:a", "funder:b"}
    for s in capped:
        for c in s.cumulative:
            assert c.p90 <= s.cap and c.mean <= s.cap, s.key
    # the caps bind in this model (else the test would prove nothing): B is reached in
    # some runs; its final P90 is its cap exactly
    b = next(c for c in r.caps if c.key == "funder:b")
    assert 0 < b.probability
    assert r.series_by_key("funder:b").cumulative[-1].p90 == 3000 * P


def test_the_same_seed_gives_the_same_bytes_whatever_the_workers(stoch, tmp_path) -> None:
    ws, _la, _r = stoch
    outs = []
    for workers in ("1", "2"):
        book = tmp_path / f"m{workers}.xlsx"
        res = CliRunner().invoke(cli, ["model", str(ws / "models" / "m.yaml"), "--json",
                                       "--workers", workers, "--output", str(book),
                                       "-w", str(ws), "--runs", "6"], prog_name="sib")
        outs.append((res.exit_code, res.stdout, book.read_bytes()))
    assert outs[0][0] == 0
    assert outs[0][1] == outs[1][1]
    assert outs[0][2] == outs[1][2]
    # and a different seed gives another answer (so the comparison can fail)
    other = run_model(load_with_seed(ws, 12), runs=6, workers=1)
    assert other.as_json()["series"] != json.loads(outs[0][1])["series"]


def load_with_seed(ws: Path, seed: int):
    text = (ws / "models" / "m.yaml").read_text("utf-8").replace("seed: 11", f"seed: {seed}")
    (ws / "models" / "seeded.yaml").write_text(text, "utf-8")
    la, problems = load_assumptions(ws / "models" / "seeded.yaml", ws)
    assert la is not None, problems
    return la


def test_sweep_at_the_assumed_probability_repeats_the_base_result(stoch) -> None:
    _ws, _la, r = stoch
    assert r.sweep.name == "milestone.job-start.probability"
    assert [row.value for row in r.sweep.rows] == [0.4, 0.6]
    at_base = r.sweep.rows[1]   # 0.6 is the file's probability: the same histories
    total = r.series_by_key("total").cumulative[-1]
    assert at_base.total == total
    # fewer job starts, never more paid (the draws are common to both)
    assert r.sweep.rows[0].total.mean < at_base.total.mean


def test_json_document_shape(stoch) -> None:
    _ws, _la, r = stoch
    doc = json.loads(json.dumps(r.as_json()))
    assert doc["format"] == "sib-model-result/1"
    assert doc["runs"] == 8 and doc["seed"] == 11
    assert [s["key"] for s in doc["series"]] == [
        "total", "kind:central", "kind:local-authority", "funder:a", "funder:b"]
    first = doc["series"][0]["periods"][0]
    assert set(first) == {"period", "payments", "cumulative"}
    assert set(first["payments"]) == {"mean", "p10", "p90"}
    assert all(isinstance(v, str) and v.count(".") == 1 for v in first["payments"].values())
    assert {c["key"] for c in doc["caps"]} == {"funder:a", "funder:b"}
    assert doc["costs"] is None
    assert [row["value"] for row in doc["sweep"]["rows"]] == [0.4, 0.6]


@pytest.mark.parametrize("text, says", [
    ("milestone.job-start.price=1:2:1", "not a milestone probability"),
    ("outcome.job-start.price=1:2:1", "not a milestone probability"),
    ("milestone.job-stat.probability=0.1:0.2:0.1", "is not in"),
    ("milestone.job-start.probability=0.5:0.2:0.1", "LOW ≤ HIGH"),
    ("milestone.job-start.probability=0.1:0.2", "LOW:HIGH:STEP"),
    ("milestone.job-start.probability", "no '='"),
])
def test_bad_vary_options_say_how_to_fix_them(stoch, text: str, says: str) -> None:
    _ws, la, _r = stoch
    with pytest.raises(VaryError, match=says):
        parse_vary(text, la)


def test_bad_vary_is_a_usage_error_at_the_cli(stoch) -> None:
    ws, _la, _r = stoch
    res = CliRunner().invoke(cli, ["model", str(ws / "models" / "m.yaml"), "-w", str(ws),
                                   "--vary", "funder.a.cap=1:2:1"], prog_name="sib")
    assert res.exit_code == 2
    assert "--vary" in res.stderr and "milestone.<name>.probability" in res.stderr


# --- break-even ---------------------------------------------------------------------------------

BREAKEVEN_MODEL = STOCH_MODEL.replace("runs: 8", "runs: 3") + """\
costs:
  investment: 5000.00
  delivery_per_period: 7000.00
"""


def test_breakeven_bracket_straddles_a_zero_net_position(tmp_path) -> None:
    ws = workspace(tmp_path, BREAKEVEN_MODEL, STOCH_CONTRACT)
    r = run_model(load(ws), workers=1)
    b = r.costs.breakeven
    assert b["breakeven"] is not None, b
    lo, hi = b["bracket"]
    assert Decimal(lo["net"]) < 0 <= Decimal(hi["net"])
    assert lo["probability"] <= b["breakeven"] <= hi["probability"]
    # re-run the model at the bracket's ends from a file saying so: the same nets
    for end in (lo, hi):
        text = BREAKEVEN_MODEL
        for s in r.costs.sensitivities:
            if s.milestone == b["milestone"]:
                old = f"milestone: {s.milestone}, after: "
                line = next(x for x in text.splitlines() if old in x)
                new = line.replace(f"probability: {s.probability:g}",
                                   f"probability: {end['probability']}")
                text = text.replace(line, new)
        ws2 = workspace(tmp_path / str(end["probability"]), text, STOCH_CONTRACT)
        again = run_model(load(ws2), runs=b["runs"], workers=1)
        # the mean over those runs is the bracket's net exactly (same seeds, same engine)
        nets = again.costs.final_net
        assert Decimal(end["net"]) == pounds(nets.mean)
    # the most sensitive milestone is the one whose 10% fall loses the most
    falls = {s.milestone: s.net - s.net_lowered for s in r.costs.sensitivities}
    assert falls[b["milestone"]] == max(falls.values())


# --- the assumptions file: one tiny bad file per check ------------------------------------------

def _bad(model: str, contract: str = HAND_CONTRACT) -> tuple[str, str]:
    return model, contract


BASE = HAND_MODEL
HOURS_CONTRACT = HAND_CONTRACT.replace(
    "    milestone: sustainment\n",
    "    milestone: sustainment\n    when: {hours_per_week: {min: 16}}\n")
ELIGIBLE_CONTRACT = HAND_CONTRACT.replace(
    "funders:\n", "eligibility:\n  age: {min: 16, below: 71}\nfunders:\n")
ROUTED_CONTRACT = HAND_CONTRACT.replace(
    "  - {id: b, name: Funder B, kind: local-authority, cap: 3000.00}",
    "  - {id: b, name: Funder B, kind: local-authority, cap: 3000.00, serves: {borough: Anywhere}}"
).replace("      - {funder: b, share: 40}", "      - {route: borough, share: 40}")

BAD = {
    # code: (assumptions, contract, [(code, line), ...], words the first message says)
    "bad-format": (BASE.replace("sib-model/1", "sib-model/2"), HAND_CONTRACT,
                   [("bad-format", 1)], "format: sib-model/1"),
    "unknown-key": (BASE.replace("seed: 1", "sed: 1"), HAND_CONTRACT,
                    [("missing-key", 1), ("unknown-key", 4)], "did you mean 'seed'"),
    "unknown-key-nested": (BASE.replace("probability: 1, days: 0", "probabilty: 1, days: 0"),
                           HAND_CONTRACT, [("missing-key", 9), ("unknown-key", 9)],
                           "probability"),
    "wrong-type": (BASE.replace("runs: 2", "runs: many"), HAND_CONTRACT, [("wrong-type", 3)],
                   "whole number"),
    "bad-probability": (BASE.replace("probability: 1, days: 91}\n  - {milestone: sust",
                                     "probability: 1.2, days: 91}\n  - {milestone: sust"),
                        HAND_CONTRACT, [("bad-probability", 10)], "from 0 to 1"),
    "bad-weight": (BASE.replace("weight: 1,", "weight: 0,"), HAND_CONTRACT,
                   [("bad-weight", 7)], "above 0"),
    "bad-delay": (BASE.replace("days: 0}", "days: {median: 30, p90: 10}}"), HAND_CONTRACT,
                  [("bad-delay", 9)], "below the median"),
    "bad-delay-keys": (BASE.replace("days: 0}", "days: {mean: 30}}"), HAND_CONTRACT,
                       [("bad-delay", 9)], "median and p90"),
    "bad-count": (BASE.replace("per_period: 5", "per_period: -5"), HAND_CONTRACT,
                  [("bad-count", 5)], "whole number of participants"),
    "bad-money": (BASE.replace("investment: 10000.00", "investment: 10000.001"), HAND_CONTRACT,
                  [("bad-money", 13)], "two decimal places"),
    "wrong-length": (BASE.replace("per_period: 5", "per_period: [5, 5]"), HAND_CONTRACT,
                     [("wrong-length", 5)], "one for each enrolment period"),
    "wrong-length-delivery": (BASE.replace("[6000.00, 6000.00, 6000.00, 0]", "[6000.00]"),
                              HAND_CONTRACT, [("wrong-length", 14)], "2024-Q1 … 2024-Q4"),
    "missing-key": (BASE.replace("runs: 2\n", ""), HAND_CONTRACT, [("missing-key", 1)],
                    "runs is missing"),
    "duplicate-key": (BASE.replace("seed: 1\n", "seed: 1\nseed: 2\n"), HAND_CONTRACT,
                      [("duplicate-key", 5)], "appears twice"),
    "not-mapping": ("- format: sib-model/1\n", HAND_CONTRACT, [("not-mapping", 1)],
                    "expected a mapping"),
    "missing-contract": (BASE.replace("contracts/hand.yaml", "contracts/nope.yaml"),
                         HAND_CONTRACT, [("missing-contract", 2)], "relative to the workspace"),
    "duplicate-milestone": (BASE.replace("{milestone: sustainment, after: job-start",
                                         "{milestone: job-start, after: job-start"),
                            HAND_CONTRACT, [("duplicate-milestone", 11)], "listed twice"),
    "unknown-after": (BASE.replace("after: job-start", "after: job-strat"), HAND_CONTRACT,
                      [("unknown-after", 11)], "not an earlier milestone"),
    "unknown-after-order": (BASE.replace("after: engagement", "after: sustainment"),
                            HAND_CONTRACT, [("unknown-after", 10)], "listed later"),
    "unknown-milestone": (BASE.replace("{milestone: engagement,", "{milestone: engagment,")
                          .replace("after: engagement", "after: engagment"),
                          HAND_CONTRACT, [("unknown-milestone", 9)], "did you mean 'engagement'"),
    "missing-column-step": (BASE, HOURS_CONTRACT, [("missing-column", 11)], "hours_per_week"),
    "missing-column-profile": (BASE, ELIGIBLE_CONTRACT, [("missing-column", 7)], "'age'"),
    "participant-ineligible": (BASE.replace("borough: Anywhere}", "borough: Anywhere, age: 80}"),
                               ELIGIBLE_CONTRACT, [("participant-ineligible", 7)],
                               "is not at least 16 and below 71"),
    "reserved-column": (BASE.replace("borough: Anywhere}", "borough: Anywhere, row: 3}"),
                        HAND_CONTRACT, [("reserved-column", 7)], "fills in itself"),
    "reserved-column-step": (BASE.replace("days: 0}", "days: 0, values: {status: {x: 1}}}"),
                             HAND_CONTRACT, [("reserved-column", 9)], "fills in itself"),
    "no-funder-for-route": (BASE.replace("borough: Anywhere", "borough: Nowhere"),
                            ROUTED_CONTRACT, [("no-funder-for-route", 7)], "served by no funder"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_assumptions_file_is_reported_with_its_code_and_line(case, tmp_path) -> None:
    model, contract, want, says = BAD[case]
    ws = workspace(tmp_path, model, contract)
    la, problems = load_assumptions(ws / "models" / "m.yaml", ws, "models/m.yaml")
    assert la is None
    got = sorted((p.code, p.line) for p in problems if p.path == "models/m.yaml")
    assert got == sorted(want), [str(p) for p in problems]
    first = next(p for p in problems if (p.code, p.line) == want[-1])
    assert says in first.message, first.message


def test_a_contract_with_problems_is_reported_with_them(tmp_path) -> None:
    broken = HAND_CONTRACT.replace("{funder: b, share: 40}", "{funder: b, share: 39}")
    ws = workspace(tmp_path, BASE, broken)
    la, problems = load_assumptions(ws / "models" / "m.yaml", ws, "models/m.yaml")
    assert la is None
    got = {(p.path, p.code, p.line) for p in problems}
    assert ("models/m.yaml", "contract-problems", 2) in got
    assert ("contracts/hand.yaml", "split-sum", 15) in got


def test_problems_reach_the_cli_as_file_line_code(tmp_path) -> None:
    ws = workspace(tmp_path, BASE.replace("probability: 1, days: 0", "probability: 2, days: 0"))
    res = CliRunner().invoke(cli, ["model", str(ws / "models" / "m.yaml"), "-w", str(ws)],
                             prog_name="sib")
    assert res.exit_code == 1
    assert res.stdout == ""
    assert "m.yaml:9: [bad-probability]" in res.stderr


# --- the shipped example --------------------------------------------------------------------------

def test_the_shipped_example_is_calibrated_to_the_published_rates() -> None:
    la, problems = load_assumptions(ROOT / "models" / "west-london-ips.yaml", ROOT)
    assert problems == []
    a = la.assumptions
    assert la.contract.contract.id == "west-london-ips"
    steps = {s.milestone: s for s in a.milestones}
    eng, js, sus = steps["engagement"], steps["job-start"], steps["sustainment-13w"]
    assert js.after == "engagement" and sus.after == "job-start"
    assert Decimal("0.27") <= js.probability <= Decimal("0.35")      # of engaged clients
    assert Decimal("0.46") <= sus.probability <= Decimal("0.67")     # of job starts
    hours = sus.values["hours_per_week"]
    full_time = sum(w for h, w in hours.items() if Decimal(h) >= 16) / sum(hours.values())
    assert Decimal("0.51") <= full_time <= Decimal("0.77")           # most jobs 16+ hours
    engaged = sum(la.enrolments) * eng.probability                  # published: 1,009
    assert abs(engaged - 1009) / 1009 < Decimal("0.03")
    assert a.costs.investment == Decimal("400000.00")                # Big Issue Invest
    assert la.periods[0].label == "2019-Q1" and la.periods[-1].label == "2023-Q1"


def test_the_shipped_example_runs_through_the_engine(tmp_path) -> None:
    """Two histories of the example (without its costs, so no break-even search): its
    engagements are paid at about the published rate, and the caps hold."""
    text = (ROOT / "models" / "west-london-ips.yaml").read_text("utf-8")
    text = text[: text.index("costs:")]
    (tmp_path / "contracts").mkdir()
    shutil.copy(ROOT / "contracts" / "west-london-ips.yaml", tmp_path / "contracts")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.yaml").write_text(text, "utf-8")
    r = run_model(load(tmp_path), runs=2, workers=1)
    counts = {o.outcome: o.count for o in r.outcomes}
    assert 900 < counts["engagement"] < 1100
    assert 230 < counts["job-start"] < 320
    for s in r.series:
        if s.cap is not None:
            assert s.cumulative[-1].p90 <= s.cap


# --- the command and the workbook ---------------------------------------------------------------

def test_model_command_prints_the_summary_and_writes_the_workbook(hand, tmp_path) -> None:
    ws, _r = hand
    book = tmp_path / "model.xlsx"
    res = CliRunner().invoke(cli, ["model", str(ws / "models" / "m.yaml"), "-w", str(ws),
                                   "--workers", "1", "--output", str(book)], prog_name="sib")
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "Total payments  mean £21,000.00   P10 £21,000.00   P90 £21,000.00" in out
    assert "funder:b" in out and "100.0%  2024-Q2" in out
    assert "money multiple           mean 1.30" in out
    assert f"Wrote {book}" in out
    assert book.read_bytes()[:2] == b"PK"


def cells(data: bytes) -> dict:
    """Each sheet as rows of cell text (money as £1,234.50, other numbers with their format,
    trailing blanks dropped), and its number of charts."""
    wb = openpyxl.load_workbook(io.BytesIO(data))
    out = {}
    for ws in wb.worksheets:
        rows = []
        for row in ws.iter_rows():
            texts = []
            for c in row:
                v, fmt = c.value, c.number_format
                if v is None:
                    texts.append("")
                elif isinstance(v, (int, float, Decimal)) and fmt == "£#,##0.00":
                    texts.append(f"-£{-Decimal(str(v)):,.2f}" if v < 0 else f"£{Decimal(str(v)):,.2f}")
                elif isinstance(v, (int, float, Decimal)) and fmt != "General":
                    texts.append(f"{v} [{fmt}]")
                else:
                    texts.append(str(v))
            while texts and texts[-1] == "":
                texts.pop()
            rows.append(" | ".join(texts))
        out[ws.title] = {"rows": rows, "charts": len(ws._charts)}
    return out


def test_workbook_cell_values(hand, data_regression) -> None:
    _ws, r = hand
    got = cells(model_workbook(r))
    assert list(got) == ["Summary", "By period", "Charts", "Chart data", "Cash flow",
                         "Sensitivity"]
    assert got["Charts"]["charts"] == 2          # funders A and B (no contract cap)
    assert got["Cash flow"]["charts"] == 1
    data_regression.check(got)


def test_workbook_bytes_do_not_depend_on_the_clock(hand) -> None:
    _ws, r = hand
    assert model_workbook(r) == model_workbook(r)


SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")


@pytest.mark.skipif(SOFFICE is None or shutil.which("pdftotext") is None,
                    reason="LibreOffice or pdftotext is not installed: the workbook is not "
                    "rendered; install libreoffice-calc-nogui and poppler-utils")
def test_libreoffice_opens_and_renders_the_workbook(hand, tmp_path) -> None:
    _ws, r = hand
    src = tmp_path / "model.xlsx"
    src.write_bytes(model_workbook(r))
    run = subprocess.run([SOFFICE, f"-env:UserInstallation={(tmp_path / 'lo').as_uri()}",
                          "--headless", "--convert-to", "pdf", "--outdir", str(tmp_path),
                          str(src)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    pdf = tmp_path / "model.pdf"
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout
    pages = text.split("\f")
    assert "Hand-computed model — bid model (2 runs, seed 1)" in pages[0]
    assert "£21,000.00" in pages[0] and "1.30" in pages[0]
    charts = next(p for p in pages if "Cumulative payments: the mean" in p)
    # the two charts were drawn: their titles, axis money and legend are on the page
    for want in ("Funder A", "Funder B", "£3,000", "P10–P90", "Mean", "Cap"):
        assert want in charts, want
