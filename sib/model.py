"""Bid modelling: simulated histories claimed through the real engine, and what they say.

After reconcile.py and model_format.py in the flow, before model_workbook.py and cli.py.
`run_model` takes loaded assumptions (model_format.py) and returns a `ModelResult`:

1. each run simulates participants and their milestone events from the assumptions with
   NumPy's generator, seeded per run from `SeedSequence(seed, spawn_key=(run,))`, so run
   k is the same history whatever the number of runs or of worker processes;
2. every claim period is then claimed in order by `reconcile.claim_after` — the engine
   of `sib claim` — from the evidence as it stood at the period's end (milestones
   verified by then; the whole participants table, which gives the same claims since no
   milestone is verified before its participant enrols), in memory, each claim's lines
   becoming the next one's history, kept as columns and coded as the engine reads them
   (`reconcile.Earlier`, which each claim hands on to the next: the same claims as coding
   the whole history again every period). The model therefore pays exactly what the
   contract would;
3. the runs' payments per period and funder, and per outcome, are summarised as mean, P10
   and P90 (nearest rank, so each is a figure some run really had), the caps as the share
   of runs reaching them and the median period when they did; with `costs`, the
   provider/investor cash flow, multiple, IRR, and the break-even of the most sensitive
   milestone probability.

Random draws are laid out so that changing a milestone's probability changes only who
reaches it (each participant's uniform, delay and values are drawn whatever the
probability): sweeps and the break-even search compare like with like.

Money stays integer pence; a mean is rounded to the penny once, half to even, from the
exact sum. Non-money ratios (probabilities, multiples, IRR) are floats. Must not read or
write files (model_format.py reads; model_workbook.py and cli.py write), print or look at
the clock. Worker processes (`workers` > 1) change only the speed, never the result.
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import numpy as np
import pandas as pd

from sib import money
from sib.contract import Contract
from sib.evidence import day_number
from sib.model_format import ENROLMENT, Z90, LoadedAssumptions
from sib.period import Period
from sib.reconcile import Cols, Earlier, Rows, claim_after, no_lines

KIND_ORDER = ("central", "local-authority", "health", "dwp", "other")
CAP_REJECTIONS = ("participant-cap", "contract-cap", "funder-cap", "volume-cap")
BREAKEVEN_RUNS = 100   # runs (the first ones, same seeds) per break-even evaluation
BREAKEVEN_STEPS = 4    # false-position steps narrowing the break-even bracket
SENSITIVITY = Fraction(9, 10)  # each probability × 0.9 to rank sensitivity
CHUNK = 4              # runs per task handed to a worker process

Progress = Callable[[int, int], None]


class VaryError(ValueError):
    """A `--vary` option that cannot be used; the message says how to fix it."""


# --- the plan: everything a run needs, in plain arrays ----------------------------------------

@dataclass(frozen=True)
class StepPlan:
    """One milestone event: who reaches it and when."""

    name: str
    milestone: str            # as written in the assumptions (the evidence's milestone type)
    parent: int               # index of the `after` step, -1 for enrolment
    probability: float
    median: float
    sigma: float              # 0 for a fixed delay
    values: tuple             # ((column, (value, ...), cumulative weights ndarray), ...)


@dataclass(frozen=True)
class Plan:
    """The simulation, ready to run (picklable, so worker processes get it once)."""

    contract: Contract
    periods: tuple[Period, ...]
    enrol: tuple[tuple[int, int, int], ...]   # (first day, last day, participants)
    columns: tuple[str, ...]                  # profile columns
    profiles: tuple[tuple[str, ...], ...]     # each profile's values, in `columns` order
    profile_cum: np.ndarray                   # cumulative profile weights, last = 1
    steps: tuple[StepPlan, ...]
    verify_median: float
    verify_sigma: float
    value_columns: tuple[str, ...]            # milestone columns given by some step

    def with_probability(self, step: str, p: float) -> "Plan":
        steps = tuple(StepPlan(s.name, s.milestone, s.parent, p if s.name == step else
                               s.probability, s.median, s.sigma, s.values) for s in self.steps)
        return Plan(self.contract, self.periods, self.enrol, self.columns, self.profiles,
                    self.profile_cum, steps, self.verify_median, self.verify_sigma,
                    self.value_columns)


def _sigma(delay) -> tuple[float, float]:
    med = float(delay.median)
    if delay.fixed or med <= 0:
        return med, 0.0
    return med, math.log(float(delay.p90) / med) / Z90


def _cumulative(weights) -> np.ndarray:
    w = np.array([float(x) for x in weights])
    cum = np.cumsum(w / w.sum())
    cum[-1] = 1.0
    return cum


def make_plan(la: LoadedAssumptions) -> Plan:
    a = la.assumptions
    c = la.contract.contract
    t = c.term
    start, enrol_end = day_number(t.service_start), day_number(t.enrolment_end)
    enrol = tuple((max(day_number(p.start), start), min(day_number(p.end), enrol_end), n)
                  for p, n in zip(la.enrol_periods, la.enrolments))
    columns = tuple(sorted({k for pr in la.profiles for k, _v in pr.values}))
    profiles = tuple(tuple(dict(pr.values).get(col, "") for col in columns)
                     for pr in la.profiles)
    names = [s.milestone.strip().lower() for s in a.milestones]
    steps = []
    value_columns: list[str] = []
    for s in a.milestones:
        after = s.after.strip().lower()
        parent = -1 if after == ENROLMENT else names.index(after)
        med, sigma = _sigma(s.days)
        values = []
        given = dict(s.values or {})
        if "evidence_type" not in given:
            # the evidence type the contract accepts (its first outcome for this milestone
            # type that lists any), so that a modelled milestone is not rejected for it
            accepted = next((o.evidence for o in c.outcomes if o.evidence and
                             o.milestone.strip().lower() == s.milestone.strip().lower()), None)
            if accepted:
                given["evidence_type"] = {accepted[0]: 1}
        for col in sorted(given):
            opts = given[col]
            values.append((col, tuple(str(k) for k in opts), _cumulative(opts.values())))
            if col not in value_columns:
                value_columns.append(col)
        steps.append(StepPlan(s.milestone.strip().lower(), s.milestone.strip(), parent,
                              float(s.probability), med, sigma, tuple(values)))
    vmed, vsigma = _sigma(a.verification_days)
    return Plan(c, la.periods, enrol, columns, profiles,
                _cumulative([pr.weight for pr in la.profiles]), tuple(steps), vmed, vsigma,
                tuple(value_columns))


# --- one simulated history -----------------------------------------------------------------

def _delays(median: float, sigma: float, z: np.ndarray) -> np.ndarray:
    if sigma == 0:
        return np.full(len(z), int(round(median)), dtype=np.int64)
    return np.rint(median * np.exp(sigma * z)).astype(np.int64)


def simulate(plan: Plan, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One history's evidence: (participants, milestones) in the engine's frame shapes,
    every milestone verified (on achieved + the verification delay).

    Draws, in this order, whatever the probabilities: each period's enrolment days; one
    uniform per participant for the profile; then per step one uniform (reached?), one
    normal (delay), one uniform per value column and one normal (verification) per
    participant. Columns are built as arrays and each frame made once (pandas costs per
    operation, and a model makes thousands of these).
    """
    days = [rng.integers(lo, hi + 1, size=n, dtype=np.int64) for lo, hi, n in plan.enrol]
    enrolled = np.concatenate(days) if days else np.zeros(0, dtype=np.int64)
    n = len(enrolled)
    prof = np.searchsorted(plan.profile_cum, rng.random(n), side="right")
    prof = np.minimum(prof, len(plan.profiles) - 1)
    pids = _numbered("P", 6, n)
    participants = {"participant_id": pids, "enrolled_on": enrolled,
                    "row": np.arange(2, n + 2, dtype=np.int64)}
    for j, col in enumerate(plan.columns):
        participants[col] = np.array([p[j] for p in plan.profiles], dtype=object)[prof]
    pf = pd.DataFrame(participants).astype({col: "str" for col in
                                            ("participant_id",) + plan.columns})

    reached: list[np.ndarray] = []
    on: list[np.ndarray] = []
    parts: list[dict] = []
    for s in plan.steps:
        u = rng.random(n)
        z = rng.standard_normal(n)
        draws = [rng.random(n) for _ in s.values]
        vz = rng.standard_normal(n)
        before = np.ones(n, dtype=bool) if s.parent < 0 else reached[s.parent]
        base = enrolled if s.parent < 0 else on[s.parent]
        ok = before & (u < s.probability)
        achieved = base + _delays(s.median, s.sigma, z)
        reached.append(ok)
        on.append(achieved)
        idx = np.flatnonzero(ok)
        rec = {"participant_id": pids[idx],
               "milestone": np.full(len(idx), s.milestone, dtype=object),
               "achieved_on": achieved[idx],
               "verified_on": achieved[idx] + _delays(plan.verify_median, plan.verify_sigma,
                                                      vz)[idx]}
        for (col, options, cum), d in zip(s.values, draws):
            pick = np.minimum(np.searchsorted(cum, d[idx], side="right"), len(options) - 1)
            rec[col] = np.array(options, dtype=object)[pick]
        parts.append(rec)

    def joined(col: str, dtype) -> np.ndarray:
        # a step without the column gives '' for it
        return np.concatenate([p[col] if col in p else np.full(len(p["achieved_on"]), "",
                                                                 dtype=object)
                               for p in parts] + [np.zeros(0, dtype=dtype)]).astype(dtype)

    k = sum(len(p["achieved_on"]) for p in parts)
    mids = _numbered("M", 7, k)
    mf = {"milestone_id": mids, "participant_id": joined("participant_id", object),
          "milestone": joined("milestone", object),
          "achieved_on": joined("achieved_on", np.int64),
          "status": np.full(k, "verified", dtype=object),
          "verified_on": joined("verified_on", np.int64),
          "evidence_ref": _numbered("EV-M", 7, k)}
    values = ("evidence_type", "hours_per_week") + tuple(
        c_ for c_ in plan.value_columns if c_ not in ("evidence_type", "hours_per_week"))
    for col in values:
        mf[col] = joined(col, object)
        if col == "hours_per_week":
            mf["row"] = np.arange(2, k + 2, dtype=np.int64)
    frame = pd.DataFrame(mf)
    return pf, frame.astype({col: "str" for col in frame.columns
                             if col not in ("achieved_on", "verified_on", "row")})


def _numbered(prefix: str, width: int, n: int) -> np.ndarray:
    """prefix + 1, 2, … n zero-padded to `width` digits (ids of participants, milestones and
    evidence), as an object array; the texts are made once per process."""
    texts = _NUMBERED.setdefault((prefix, width), [])
    while len(texts) < n:
        more = range(len(texts) + 1, max(n, 2 * len(texts)) + 1)
        texts.extend(f"{prefix}{k:0{width}d}" for k in more)
    return np.array(texts[:n] + [None], dtype=object)[:-1]


_NUMBERED: dict[tuple[str, int], list[str]] = {}


_INVALID = pd.DataFrame({"milestone_id": pd.Series([], dtype="str"),
                         "participant_id": pd.Series([], dtype="str"),
                         "milestone": pd.Series([], dtype="str"),
                         "row": pd.Series([], dtype=np.int64),
                         "detail": pd.Series([], dtype="str")})


@dataclass(frozen=True)
class RunResult:
    """What one history paid, in pence.

    pay: [period, funder] net amount of the lines of each claim.
    count / amount / withheld: per outcome (contract order): milestones paid, amount paid,
      and what caps withheld (`capped` on lines, plus the price of milestones still refused
      by a cap at the last claim).
    """

    pay: np.ndarray
    count: np.ndarray
    amount: np.ndarray
    withheld: np.ndarray


def claim_history(plan: Plan, participants: pd.DataFrame, milestones: pd.DataFrame
                  ) -> tuple[Cols, list]:
    """Claim every period in order through the engine; (all lines as columns, each period's
    Claim).

    The earlier lines are kept as columns from claim to claim (`reconcile.claim_after`, what
    `compute_claim` does after reading the ledgers), not rebuilt as a frame every period,
    and coded as the engine reads them (`reconcile.Earlier`, handed on by each claim as
    `Claim.after`): a claim codes only its own lines, not the whole history again."""
    earlier = Earlier.of(no_lines())
    claims = []
    # Every claim gets the whole participants table: no milestone verified by a period's end
    # belongs to someone enrolled after it (delays are never negative), so the claims are
    # the same as with the participants enrolled by then — and the engine works out what it
    # needs per participant once per history instead of once per claim.
    people, events = Cols.of(participants), Cols.of(milestones)
    verified = events["verified_on"]
    for number, period in enumerate(plan.periods, start=1):
        end = day_number(period.end)
        known = events.take(np.flatnonzero(verified <= end))
        ev = Rows(people, known, _INVALID, len(known))
        claim = claim_after(plan.contract, ev, earlier.lines, number, period, earlier=earlier)
        earlier = claim.after
        claims.append(claim)
    return earlier.lines, claims


def _price(plan: Plan, outcome_ix: int, basis_day: int) -> int:
    o = plan.contract.outcomes[outcome_ix]
    best = None
    for d, p in sorted(o.prices.items()):
        if day_number(d) <= basis_day:
            best = p
    return money.pence(best) if best is not None else 0


def run_one(plan: Plan, run: int, seed: int) -> RunResult:
    """History `run` of the model seeded `seed`, claimed period by period."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(run,)))
    pf, mf = simulate(plan, rng)
    lines, claims = claim_history(plan, pf, mf)
    c = plan.contract
    fids = [f.id for f in c.funders]
    labels = [p.label for p in plan.periods]
    oids = [o.id for o in c.outcomes]
    amount_of = lines["amount"].astype(np.int64)
    period_at = _positions(lines["period"], labels)
    funder_at = _positions(lines["funder"], fids)
    outcome_at = _positions(lines["outcome"], oids)
    pay = np.zeros((len(labels), len(fids)), dtype=np.int64)
    np.add.at(pay, (period_at, funder_at), amount_of)
    paid = lines["kind"] == "payment"
    count = np.zeros(len(oids), dtype=np.int64)  # milestones paid at least once, per outcome
    pairs = np.unique(pd.factorize(lines["milestone_id"][paid])[0].astype(np.int64) * len(oids)
                      + outcome_at[paid])  # each (milestone, outcome) once
    np.add.at(count, pairs % len(oids), 1)
    amount = np.zeros(len(oids), dtype=np.int64)
    np.add.at(amount, outcome_at, amount_of)
    withheld = np.zeros(len(oids), dtype=np.int64)
    np.add.at(withheld, outcome_at[paid], lines["capped"].astype(np.int64)[paid])
    if claims:
        d = claims[-1].decision_cols
        refused = np.flatnonzero((d["decision"] == "rejected")
                                 & np.isin(d["reason"], CAP_REJECTIONS))
        if len(refused):
            at = pd.Index(mf["milestone_id"].to_numpy(dtype=object)).get_indexer(
                d["milestone_id"][refused])
            if c.price_basis == "enrolled":
                enrolled = pf.set_index("participant_id")["enrolled_on"]
                days = mf["participant_id"].map(enrolled).to_numpy()[at]
            else:
                days = mf["achieved_on"].to_numpy()[at]
            oi = {o: i for i, o in enumerate(oids)}
            for o, day in zip(d["outcome"][refused].tolist(), days.tolist()):
                withheld[oi[o]] += _price(plan, oi[o], int(day))
    return RunResult(pay, count, amount, withheld)


def _positions(values: np.ndarray, names: list[str]) -> np.ndarray:
    """Each value's position in `names` (every value is one of them)."""
    codes, uniques = pd.factorize(values)
    where = {n: k for k, n in enumerate(names)}
    return np.array([where[u] for u in uniques] + [0], dtype=np.int64)[codes]


# --- running many: in process or on worker processes ------------------------------------------

_WORKER_PLAN: Plan | None = None


def _init_worker(plan: Plan) -> None:
    global _WORKER_PLAN
    _WORKER_PLAN = plan


def _run_chunk(overrides: tuple, runs: tuple[int, ...], seed: int) -> list[RunResult]:
    plan = _WORKER_PLAN
    for step, p in overrides:
        plan = plan.with_probability(step, p)
    return [run_one(plan, r, seed) for r in runs]


class Runner:
    """Runs histories, on `workers` processes when more than 1; results in run order."""

    def __init__(self, plan: Plan, seed: int, workers: int, progress: Progress | None):
        self.plan, self.seed, self.workers = plan, seed, max(1, workers)
        self.progress = progress
        self.done = 0
        self.total = 0
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "Runner":
        if self.workers > 1:
            import multiprocessing
            ctx = multiprocessing.get_context("fork") if "fork" in \
                multiprocessing.get_all_start_methods() else None
            self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx,
                                            initializer=_init_worker, initargs=(self.plan,))
        else:
            _init_worker(self.plan)
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def expect(self, n: int) -> None:
        """Announce `n` more histories to run (for the progress total)."""
        self.total += n

    def _tick(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, max(self.total, self.done))

    def finish(self) -> None:
        """Report the work as complete (a break-even search may stop early)."""
        if self.progress is not None and self.done:
            self.progress(self.done, self.done)

    def run(self, runs: int, overrides: tuple = ()) -> list[RunResult]:
        chunks = [tuple(range(i, min(i + CHUNK, runs))) for i in range(0, runs, CHUNK)]
        out: list[list[RunResult] | None] = [None] * len(chunks)
        if self.pool is None:
            for k, ch in enumerate(chunks):
                out[k] = _run_chunk(overrides, ch, self.seed)
                self._tick(len(ch))
        else:
            futures = {self.pool.submit(_run_chunk, overrides, ch, self.seed): k
                       for k, ch in enumerate(chunks)}
            for fut in as_completed(futures):
                k = futures[fut]
                out[k] = fut.result()
                self._tick(len(chunks[k]))
        return [r for ch in out for r in ch]


# --- statistics -------------------------------------------------------------------------------

def mean_pence(values: np.ndarray) -> int:
    """The mean of integer pence, rounded to the penny half to even from the exact sum."""
    n = len(values)
    return round(Fraction(int(np.asarray(values, dtype=np.int64).sum()), n)) if n else 0


def nearest_rank(values, q: int):
    """The q-th percentile by nearest rank: the ⌈q·n/100⌉-th smallest value (a value some
    run really had; P50 of an even count is the lower middle)."""
    s = np.sort(np.asarray(values), kind="stable")
    k = max(1, -(-q * len(s) // 100))
    return s[k - 1].item()


@dataclass(frozen=True)
class Stat:
    """Mean, P10 and P90 over the runs (pence for money)."""

    mean: int
    p10: int
    p90: int

    @staticmethod
    def of(values: np.ndarray) -> "Stat":
        return Stat(mean_pence(values), int(nearest_rank(values, 10)),
                    int(nearest_rank(values, 90)))

    def as_json(self) -> dict:
        return {"mean": money.fmt_amount(self.mean), "p10": money.fmt_amount(self.p10),
                "p90": money.fmt_amount(self.p90)}


@dataclass(frozen=True)
class FStat:
    """Mean, P10 and P90 of a ratio (not money)."""

    mean: float
    p10: float
    p90: float

    @staticmethod
    def of(values: np.ndarray, digits: int = 4) -> "FStat":
        v = np.asarray(values, dtype=float)
        return FStat(round(float(math.fsum(v.tolist()) / len(v)), digits),
                     round(float(nearest_rank(v, 10)), digits),
                     round(float(nearest_rank(v, 90)), digits))

    def as_json(self) -> dict:
        return {"mean": self.mean, "p10": self.p10, "p90": self.p90}


@dataclass(frozen=True)
class Series:
    """One payer (a funder, a kind of funder, or all) period by period."""

    key: str                  # 'total', 'kind:<kind>' or 'funder:<id>'
    label: str
    cap: int | None           # pence
    payments: tuple[Stat, ...]
    cumulative: tuple[Stat, ...]

    def as_json(self, periods: tuple[str, ...]) -> dict:
        return {"key": self.key, "label": self.label,
                "cap": None if self.cap is None else money.fmt_amount(self.cap),
                "periods": [{"period": p, "payments": a.as_json(), "cumulative": b.as_json()}
                            for p, a, b in zip(periods, self.payments, self.cumulative)]}


@dataclass(frozen=True)
class CapResult:
    """A cap: the share of runs that reached it and the median period when they did."""

    key: str                  # 'contract' or 'funder:<id>'
    label: str
    cap: int
    probability: float
    median_period: str | None
    final: Stat               # cumulative paid at the end

    def as_json(self) -> dict:
        return {"key": self.key, "label": self.label, "cap": money.fmt_amount(self.cap),
                "probability": self.probability, "median_period": self.median_period,
                "paid_at_end": self.final.as_json()}


@dataclass(frozen=True)
class OutcomeResult:
    """An outcome's expected count paid, amount paid and amount the caps withheld."""

    outcome: str
    name: str
    count: float
    count_p10: int
    count_p90: int
    amount: Stat
    withheld: Stat

    def as_json(self) -> dict:
        return {"outcome": self.outcome, "name": self.name,
                "count": {"mean": self.count, "p10": self.count_p10, "p90": self.count_p90},
                "amount": self.amount.as_json(), "withheld": self.withheld.as_json()}


@dataclass(frozen=True)
class Sensitivity:
    """A milestone probability's effect on the mean final net position."""

    milestone: str
    probability: float
    lowered: float            # probability × 0.9
    net: int                  # mean final net position at `probability` (pence)
    net_lowered: int          # ... at `lowered`

    def as_json(self) -> dict:
        return {"milestone": self.milestone, "probability": self.probability,
                "lowered": self.lowered, "net": money.fmt_amount(self.net),
                "net_lowered": money.fmt_amount(self.net_lowered)}


@dataclass(frozen=True)
class CostResult:
    """The provider/investor view.

    The investment is drawn at service start into the delivery vehicle; each period the
    vehicle pays delivery and receives the claim's outcome payments; should its cash run
    out, the shortfall is drawn from the investor then; after the last claim the cash is
    returned to the investor. Net position = outcome payments so far − delivery so far.
    Multiple = returned ÷ drawn; IRR is that flow's (per period, annualised), flows dated
    at period ends and the investment at the start of the first period.
    """

    investment: int
    delivery: tuple[int, ...]
    net: tuple[Stat, ...]               # per period, cumulative
    final_net: Stat
    multiple: FStat
    irr: FStat
    extra_draw_probability: float       # runs needing more than the investment
    sensitivities: tuple[Sensitivity, ...]
    breakeven: dict | None              # milestone, probability, breakeven, runs, note

    def as_json(self, periods: tuple[str, ...]) -> dict:
        return {"investment": money.fmt_amount(self.investment),
                "periods": [{"period": p, "delivery": money.fmt_amount(d),
                             "net_position": s.as_json()}
                            for p, d, s in zip(periods, self.delivery, self.net)],
                "net_position": self.final_net.as_json(), "multiple": self.multiple.as_json(),
                "irr": self.irr.as_json(), "extra_draw_probability": self.extra_draw_probability,
                "sensitivity": [s.as_json() for s in self.sensitivities],
                "breakeven": self.breakeven}


@dataclass(frozen=True)
class SweepRow:
    value: float
    total: Stat
    by_kind: dict
    contract_cap_probability: float | None
    net: Stat | None
    multiple: FStat | None
    irr: FStat | None

    def as_json(self) -> dict:
        return {"value": self.value, "total": self.total.as_json(),
                "by_kind": {k: money.fmt_amount(v) for k, v in self.by_kind.items()},
                "contract_cap_probability": self.contract_cap_probability,
                "net_position": self.net.as_json() if self.net else None,
                "multiple": self.multiple.as_json() if self.multiple else None,
                "irr": self.irr.as_json() if self.irr else None}


@dataclass(frozen=True)
class Sweep:
    name: str
    rows: tuple[SweepRow, ...]

    def as_json(self) -> dict:
        return {"name": self.name, "rows": [r.as_json() for r in self.rows]}


@dataclass(frozen=True)
class ModelResult:
    """Everything `sib model` reports (see `as_json` for the document's shape)."""

    assumptions: str
    contract_id: str
    contract_name: str
    contract_shown: str
    runs: int
    seed: int
    periods: tuple[str, ...]
    series: tuple[Series, ...]          # total, kinds, funders
    caps: tuple[CapResult, ...]
    outcomes: tuple[OutcomeResult, ...]
    costs: CostResult | None
    sweep: Sweep | None
    funders: tuple[tuple[str, str, str, int | None], ...] = field(default=())  # id, name, kind, cap

    def as_json(self) -> dict:
        return {
            "format": "sib-model-result/1",
            "assumptions": self.assumptions, "contract": self.contract_id,
            "contract_file": self.contract_shown, "runs": self.runs, "seed": self.seed,
            "periods": list(self.periods),
            "funders": [{"id": f, "name": n, "kind": k,
                         "cap": None if cap is None else money.fmt_amount(cap)}
                        for f, n, k, cap in self.funders],
            "series": [s.as_json(self.periods) for s in self.series],
            "caps": [c.as_json() for c in self.caps],
            "outcomes": [o.as_json() for o in self.outcomes],
            "costs": self.costs.as_json(self.periods) if self.costs else None,
            "sweep": self.sweep.as_json() if self.sweep else None,
        }

    def series_by_key(self, key: str) -> Series:
        return next(s for s in self.series if s.key == key)

    def summary_lines(self) -> list[str]:
        return summary_lines(self)


# --- from runs to results ---------------------------------------------------------------------

def _pay(results: list[RunResult]) -> np.ndarray:
    return np.stack([r.pay for r in results])  # [run, period, funder]


def _series(c: Contract, pay: np.ndarray) -> list[Series]:
    out = []

    def add(key: str, label: str, cap: int | None, per: np.ndarray) -> None:
        cum = np.cumsum(per, axis=1)
        out.append(Series(key, label, cap,
                          tuple(Stat.of(per[:, t]) for t in range(per.shape[1])),
                          tuple(Stat.of(cum[:, t]) for t in range(per.shape[1]))))

    ccap = money.pence(c.caps.contract) if c.caps and c.caps.contract is not None else None
    add("total", "All funders", ccap, pay.sum(axis=2))
    for kind in KIND_ORDER:
        ix = [j for j, f in enumerate(c.funders) if f.kind == kind]
        if ix:
            add(f"kind:{kind}", kind, None, pay[:, :, ix].sum(axis=2))
    for j, f in enumerate(c.funders):
        add(f"funder:{f.id}", f.name, None if f.cap is None else money.pence(f.cap),
            pay[:, :, j])
    return out


def _caps(c: Contract, pay: np.ndarray, labels: tuple[str, ...]) -> list[CapResult]:
    out = []

    def add(key: str, label: str, cap: int, per: np.ndarray) -> None:
        cum = np.cumsum(per, axis=1)
        hit = cum >= cap
        reached = hit.any(axis=1)
        first = np.argmax(hit, axis=1)[reached]
        median = labels[int(nearest_rank(first, 50))] if len(first) else None
        out.append(CapResult(key, label, cap, round(float(reached.mean()), 4), median,
                             Stat.of(cum[:, -1])))

    if c.caps and c.caps.contract is not None:
        add("contract", "Contract cap", money.pence(c.caps.contract), pay.sum(axis=2))
    for j, f in enumerate(c.funders):
        if f.cap is not None:
            add(f"funder:{f.id}", f.name, money.pence(f.cap), pay[:, :, j])
    return out


def _outcomes(c: Contract, results: list[RunResult]) -> list[OutcomeResult]:
    count = np.stack([r.count for r in results])
    amount = np.stack([r.amount for r in results])
    withheld = np.stack([r.withheld for r in results])
    return [OutcomeResult(o.id, o.name,
                          round(float(Fraction(int(count[:, k].sum()), len(results))), 2),
                          int(nearest_rank(count[:, k], 10)), int(nearest_rank(count[:, k], 90)),
                          Stat.of(amount[:, k]), Stat.of(withheld[:, k]))
            for k, o in enumerate(c.outcomes)]


def periods_per_year(kind: str) -> int:
    return 12 if kind == "month" else 4


def cash_flow(investment: int, delivery: tuple[int, ...], payments: np.ndarray, per_year: int):
    """One run's investor view: (net position per period, multiple, annual IRR, extra drawn).

    payments: pence per period. See `CostResult` for the flow.
    """
    cash = investment
    drawn = investment
    flows = [-investment] + [0] * len(delivery)   # index t: at the end of period t-1
    net = []
    cum = 0
    for t, (d, p) in enumerate(zip(delivery, payments.tolist())):
        cash += p - d
        cum += p - d
        if cash < 0:
            flows[t + 1] -= -cash
            drawn += -cash
            cash = 0
        net.append(cum)
    flows[-1] += cash
    multiple = cash / drawn if drawn else float("nan")
    return net, multiple, _irr(flows, per_year), drawn - investment


def _irr(flows: list[int], per_year: int) -> float:
    """Annualised IRR of flows at equal periods; every flow but the last is ≤ 0, so the rate
    is unique: found by bisection on the period rate. −1.0 when nothing comes back."""
    if flows[-1] <= 0:
        return -1.0
    if not any(f < 0 for f in flows):
        return float("inf")

    def npv(r: float) -> float:
        return math.fsum(f / (1 + r) ** t for t, f in enumerate(flows))

    lo, hi = -0.999999, 1.0
    while npv(hi) > 0 and hi < 1e6:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if npv(mid) > 0:
            lo = mid
        else:
            hi = mid
    return (1 + (lo + hi) / 2) ** per_year - 1


def _cost_stats(la: LoadedAssumptions, totals: np.ndarray):
    """(net per period [run, period], final net, multiples, irrs, extra drawn) of runs."""
    costs = la.assumptions.costs
    inv = money.pence(costs.investment)
    per_year = periods_per_year(la.contract.contract.claims)
    nets, mults, irrs, extra = [], [], [], []
    for row in totals:
        net, mult, irr, ex = cash_flow(inv, la.delivery, row, per_year)
        nets.append(net)
        mults.append(mult)
        irrs.append(irr)
        extra.append(ex)
    return (np.array(nets, dtype=np.int64), np.array(mults), np.array(irrs),
            np.array(extra, dtype=np.int64))


def _mean_final_net(la: LoadedAssumptions, results: list[RunResult]) -> int:
    totals = _pay(results).sum(axis=2)
    nets, *_ = _cost_stats(la, totals)
    return mean_pence(nets[:, -1])


# --- the model --------------------------------------------------------------------------------

def parse_vary(text: str, la: LoadedAssumptions) -> tuple[str, list[float]]:
    """`milestone.<name>.probability=LOW:HIGH:STEP` → (milestone name, values)."""
    example = "milestone.job-start.probability=0.25:0.35:0.05"
    if "=" not in text:
        raise VaryError(f"--vary '{text}' has no '='; write NAME=LOW:HIGH:STEP, e.g. {example}")
    name, rng = (x.strip() for x in text.split("=", 1))
    parts = name.split(".")
    steps = [s.milestone.strip().lower() for s in la.assumptions.milestones]
    if len(parts) != 3 or parts[0] != "milestone" or parts[2] != "probability":
        raise VaryError(f"--vary '{name}' is not a milestone probability; write "
                        f"milestone.<name>.probability, e.g. {example}")
    if parts[1].lower() not in steps:
        raise VaryError(f"--vary '{name}': milestone '{parts[1]}' is not in {la.shown} "
                        f"(milestones: {', '.join(steps)})")
    bits = rng.split(":")
    try:
        lo, hi, step = (Fraction(b.strip()) for b in bits) if len(bits) == 3 else (None,) * 3
    except (ValueError, ZeroDivisionError):
        lo = None
    if lo is None:
        raise VaryError(f"--vary '{text}': the range is not LOW:HIGH:STEP numbers, e.g. "
                        f"{example}")
    if not (0 <= lo <= hi <= 1) or step <= 0:
        raise VaryError(f"--vary '{text}': expected 0 ≤ LOW ≤ HIGH ≤ 1 and STEP above 0, "
                        f"e.g. {example}")
    count = int((hi - lo) / step) + 1
    if count > 101:
        raise VaryError(f"--vary '{text}' gives {count} values; at most 101 (use a larger STEP)")
    return parts[1].lower(), [float(lo + k * step) for k in range(count)]


def run_model(la: LoadedAssumptions, runs: int | None = None, vary: str | None = None,
              workers: int = 1, progress: Progress | None = None) -> ModelResult:
    """Simulate `runs` histories (default: the file's), claim each through the engine and
    summarise; with `vary`, also a sweep of one milestone probability. `progress(done,
    total)` is called as histories complete. VaryError for a bad `vary`."""
    plan = make_plan(la)
    a = la.assumptions
    runs = runs or a.runs
    c = la.contract.contract
    swept = parse_vary(vary, la) if vary else None
    labels = tuple(p.label for p in la.periods)
    sub = min(runs, BREAKEVEN_RUNS)
    with Runner(plan, a.seed, workers, progress) as runner:
        runner.expect(runs)
        if a.costs is not None:
            runner.expect(sub * (1 + len(plan.steps) + BREAKEVEN_STEPS))
        if swept:
            runner.expect(runs * len(swept[1]))
        results = runner.run(runs)
        pay = _pay(results)
        series = _series(c, pay)
        caps = _caps(c, pay, labels)
        outcomes = _outcomes(c, results)
        costs = _costs(la, plan, runner, pay, sub) if a.costs is not None else None
        sweep = None
        if swept:
            rows = []
            for value in swept[1]:
                res = runner.run(runs, ((swept[0], value),))
                rows.append(_sweep_row(la, value, res))
            sweep = Sweep(f"milestone.{swept[0]}.probability", tuple(rows))
        runner.finish()
    funders = tuple((f.id, f.name, f.kind, None if f.cap is None else money.pence(f.cap))
                    for f in c.funders)
    return ModelResult(la.shown, c.id, c.name, la.contract.shown, runs, a.seed, labels,
                       tuple(series), tuple(caps), tuple(outcomes), costs, sweep, funders)


def _sweep_row(la: LoadedAssumptions, value: float, results: list[RunResult]) -> SweepRow:
    c = la.contract.contract
    pay = _pay(results)
    totals = pay.sum(axis=2)
    by_kind = {}
    for kind in KIND_ORDER:
        ix = [j for j, f in enumerate(c.funders) if f.kind == kind]
        if ix:
            by_kind[kind] = mean_pence(pay[:, :, ix].sum(axis=(1, 2)))
    ccap = None
    if c.caps and c.caps.contract is not None:
        ccap = round(float((totals.sum(axis=1) >= money.pence(c.caps.contract)).mean()), 4)
    net = mult = irr = None
    if la.assumptions.costs is not None:
        nets, mults, irrs, _ = _cost_stats(la, totals)
        net, mult, irr = Stat.of(nets[:, -1]), FStat.of(mults), FStat.of(irrs)
    return SweepRow(value, Stat.of(totals.sum(axis=1)), by_kind, ccap, net, mult, irr)


def _costs(la: LoadedAssumptions, plan: Plan, runner: Runner, pay: np.ndarray,
           sub: int) -> CostResult:
    totals = pay.sum(axis=2)
    nets, mults, irrs, extra = _cost_stats(la, totals)
    net_stats = tuple(Stat.of(nets[:, t]) for t in range(nets.shape[1]))
    # sensitivity: each probability × 0.9 on the first `sub` runs (same seeds)
    base = _mean_final_net(la, runner.run(sub))
    sens = []
    for s in plan.steps:
        low = float(Fraction(s.probability) * SENSITIVITY)
        net_low = _mean_final_net(la, runner.run(sub, ((s.name, low),)))
        sens.append(Sensitivity(s.name, s.probability, round(low, 6), base, net_low))
    # the most sensitive: the largest fall in net position for a 10% fall in probability
    most = max(sens, key=lambda x: (x.net - x.net_lowered, -plan.steps.index(
        next(st for st in plan.steps if st.name == x.milestone))))
    breakeven = _breakeven(la, runner, most, sub)
    return CostResult(money.pence(la.assumptions.costs.investment), la.delivery, net_stats,
                      Stat.of(nets[:, -1]), FStat.of(mults), FStat.of(irrs),
                      round(float((extra > 0).mean()), 4), tuple(sens), breakeven)


def _breakeven(la: LoadedAssumptions, runner: Runner, s: Sensitivity, sub: int) -> dict:
    """The probability of milestone `s` at which the mean final net position (over the first
    `sub` runs, same seeds) crosses 0: a bracket from the two points the sensitivity gave
    (or an end of 0..1), narrowed by BREAKEVEN_STEPS steps of false position (Illinois),
    then interpolated linearly between the bracket's ends."""
    def net(p: float) -> int:
        return _mean_final_net(la, runner.run(sub, ((s.milestone, p),)))

    out = {"milestone": s.milestone, "probability": s.probability, "runs": sub,
           "breakeven": None, "bracket": None, "note": ""}
    if s.net == s.net_lowered:
        out["note"] = "the net position does not depend on this probability"
        return out
    # (lo, flo) with flo < 0 and (hi, fhi) with fhi ≥ 0
    if s.net >= 0 and s.net_lowered < 0:
        lo, flo, hi, fhi = s.lowered, s.net_lowered, s.probability, s.net
    elif s.net >= 0:
        hi, fhi = s.lowered, s.net_lowered
        runner.expect(sub)
        lo, flo = 0.0, net(0.0)
        if flo >= 0:
            out["breakeven"] = 0.0
            out["note"] = "the net position is not negative even with this probability at 0"
            return out
    else:
        lo, flo = s.probability, s.net
        runner.expect(sub)
        hi, fhi = 1.0, net(1.0)
        if fhi < 0:
            out["note"] = "the net position stays negative even with this probability at 1"
            return out
    wlo, whi, side = float(flo), float(fhi), 0   # Illinois: weights that halve a stuck end
    for _ in range(BREAKEVEN_STEPS):
        if hi - lo < 1e-4:
            break
        x = lo + (hi - lo) * (-wlo) / (whi - wlo)
        x = min(max(x, lo + (hi - lo) / 64), hi - (hi - lo) / 64)  # stay strictly inside
        fx = net(x)
        if fx >= 0:
            hi, fhi, whi = x, fx, float(fx)
            wlo = wlo / 2 if side == 1 else float(flo)
            side = 1
        else:
            lo, flo, wlo = x, fx, float(fx)
            whi = whi / 2 if side == -1 else float(fhi)
            side = -1
    estimate = lo + (hi - lo) * (-flo) / (fhi - flo)
    out["breakeven"] = round(estimate, 4)
    out["bracket"] = [{"probability": round(lo, 6), "net": money.fmt_amount(flo)},
                      {"probability": round(hi, 6), "net": money.fmt_amount(fhi)}]
    return out


# --- the printed summary ----------------------------------------------------------------------

def _gbp(p: int) -> str:
    return money.fmt_gbp(p)


def summary_lines(r: ModelResult) -> list[str]:
    out = [f"{r.contract_name} — model {r.assumptions}: {r.runs:,} runs, seed {r.seed}, "
           f"claims {r.periods[0]} … {r.periods[-1]} through the claim engine", ""]
    total = r.series_by_key("total")
    last = total.cumulative[-1]
    cap = f" of the {_gbp(total.cap)} contract cap" if total.cap else ""
    out.append(f"Total payments  mean {_gbp(last.mean)}   P10 {_gbp(last.p10)}   "
               f"P90 {_gbp(last.p90)}{cap}")
    out += ["", "By period (all funders)        mean         P10         P90   cumulative mean"]
    for p, a, b in zip(r.periods, total.payments, total.cumulative):
        out.append(f"  {p:<16}{_gbp(a.mean):>16}{_gbp(a.p10):>12}{_gbp(a.p90):>12}"
                   f"{_gbp(b.mean):>18}")
    out += ["", "By funder kind (whole contract)           mean            P10            P90"]
    for s in r.series:
        if s.key.startswith("kind:"):
            e = s.cumulative[-1]
            out.append(f"  {s.label:<30}{_gbp(e.mean):>16}{_gbp(e.p10):>15}{_gbp(e.p90):>15}")
    out += ["", "Caps                                        cap   P(reached)  median period"]
    for c in r.caps:
        out.append(f"  {c.key:<34}{_gbp(c.cap):>14}{c.probability * 100:>11.1f}%  "
                   f"{c.median_period or '—'}")
    out += ["", "Outcomes             count (P10–P90)        amount mean   withheld by caps"]
    for o in r.outcomes:
        out.append(f"  {o.outcome:<20}{o.count:>7.1f} ({o.count_p10}–{o.count_p90}){'':<4}"
                   f"{_gbp(o.amount.mean):>15}{_gbp(o.withheld.mean):>19}")
    if r.costs:
        k = r.costs
        n = k.final_net
        out += ["", f"Investor view (investment {_gbp(k.investment)}, delivery "
                f"{_gbp(sum(k.delivery))} in all)",
                f"  net position at the end  mean {_gbp(n.mean)}   P10 {_gbp(n.p10)}   "
                f"P90 {_gbp(n.p90)}",
                f"  money multiple           mean {k.multiple.mean:.2f}   P10 "
                f"{k.multiple.p10:.2f}   P90 {k.multiple.p90:.2f}",
                f"  IRR (a year)             mean {_pct(k.irr.mean)}   P10 {_pct(k.irr.p10)}   "
                f"P90 {_pct(k.irr.p90)}"]
        if k.extra_draw_probability:
            out.append(f"  runs needing more than the investment: "
                       f"{k.extra_draw_probability * 100:.1f}%")
        b = k.breakeven
        if b:
            if b["breakeven"] is not None:
                out.append(f"  break-even: {b['milestone']} probability {b['breakeven']:.3f} "
                           f"(assumed {b['probability']:.3f}; the most sensitive; mean of "
                           f"{b['runs']} runs)")
            else:
                out.append(f"  break-even: {b['milestone']}: {b['note']}")
    if r.sweep:
        out += ["", f"Sweep of {r.sweep.name}       total mean          P10          P90"
                + ("     net mean  multiple" if r.costs else "")]
        for row in r.sweep.rows:
            line = (f"  {row.value:<30.4g}{_gbp(row.total.mean):>13}{_gbp(row.total.p10):>13}"
                    f"{_gbp(row.total.p90):>13}")
            if row.net:
                line += f"{_gbp(row.net.mean):>13}{row.multiple.mean:>10.2f}"
            out.append(line)
    return out


def _pct(x: float) -> str:
    if x == float("inf"):
        return "∞"
    return f"{x * 100:.1f}%"
