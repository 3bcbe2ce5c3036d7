"""`sib audit`'s invariants, judged claim by claim against a running state of the earlier
claims' lines (`audit._Running`, issue 7), find exactly what a re-scan of every earlier line
finds: the same codes, lines and messages, in the same order.

The re-scan is kept here as the reference (`rescan_violations`: the audit's code before the
running state, which concatenated every earlier line for each claim). Each case tampers with
the example's ledgers in memory — amounts, shares, prices, reversals pointing anywhere
(earlier, later, at themselves, at nothing), periods, milestones, participants, outcomes,
lines added, copied and removed — judges every claim both ways under the contract or a
variant with tighter caps and limits, and compares. Two small hand-made histories pin the
subtle rules: a reversal cancels its whole payment (0.00 lines too), and limits count only
standing milestones.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sib import money
from sib.audit import MAX_DIFFS, _first_line, _Running, invariant_violations
from sib.contract import Contract, limit_of, load_contract
from sib.ledger import LEDGER_COLUMNS, empty_lines, parse_ledger
from sib.reconcile import standing_lines

ROOT = Path(__file__).resolve().parent.parent
CID = "west-london-ips"
UPTO = "2020-Q4"  # eight claims, with reversals and re-ratings in five of them


def rescan_violations(c: Contract, before: pd.DataFrame, lines: pd.DataFrame,
                      check_reversals: bool = True) -> list[tuple[int, str, str]]:
    """The reference: `audit.invariant_violations` as it was before issue 7, re-scanning
    `before` (every earlier claim's lines) for each claim. Kept verbatim."""
    out: list[tuple[int, str, str]] = []
    n0 = len(before)
    both = pd.concat([before, lines], ignore_index=True)
    row = lambda i: int(i) + 2  # noqa: E731 - ledger.csv line of lines' i-th row
    fmt = money.fmt_gbp
    pay = (lines["kind"] == "payment").to_numpy()
    amt = lines["amount"].to_numpy(dtype=np.int64)

    bad = np.flatnonzero(pay & ((amt < 0) | (lines["capped"].to_numpy(dtype=np.int64) < 0)))
    for i in bad[:MAX_DIFFS]:
        out.append((row(i), "negative-payment", f"a payment line of {fmt(int(amt[i]))} "
                    f"(capped {fmt(int(lines['capped'].iat[i]))}); payments are never negative"))

    pays = lines[pay]
    for mid, g in pays.groupby("milestone_id", sort=False):
        units = g["share"].astype(np.int64).tolist()
        price = int(g["price"].iat[0])
        whole = [int(a) + int(k) for a, k in zip(g["amount"], g["capped"])]
        if sum(units) != money.SHARE_UNITS:
            out.append((row(g.index[0]), "split-mismatch",
                        f"milestone {mid}: the shares add up to "
                        f"{money.fmt_share(sum(units))}%, not 100%"))
            continue
        full = money.split(price, units)
        wrong = [k for k, (w, p) in enumerate(zip(whole, full)) if w != p]
        if wrong or g["price"].nunique() != 1:
            k = wrong[0] if wrong else 0
            out.append((row(g.index[k]), "split-mismatch",
                        f"milestone {mid}: {g['funder'].iat[k]}'s amount + capped is "
                        f"{fmt(whole[k])}, but its part of the price {fmt(price)} at "
                        f"{money.fmt_share(units[k])}% is {fmt(full[k])}"))

    if check_reversals:
        standing_before = standing_lines(before).set_index("line_id")
        seen: set[str] = set()
        for i in np.flatnonzero(~pay):
            r = lines.iloc[i]
            target = r["reverses"]
            why = ""
            if target in seen:
                why = f"reverses {target} a second time"
            elif target not in standing_before.index:
                why = f"reverses {target or '(blank)'}, which is no standing payment line of an earlier claim"
            else:
                o = standing_before.loc[target]
                diff = [k for k in ("milestone_id", "funder", "share", "price", "price_from")
                        if o[k] != r[k]]
                if diff:
                    why = f"its {', '.join(diff)} differ from {target}'s"
                elif int(r["amount"]) != -int(o["amount"]):
                    why = (f"it is {fmt(int(r['amount']))} but {target} paid "
                           f"{fmt(int(o['amount']))}")
            seen.add(target)
            if why:
                out.append((row(i), "bad-reversal", f"reversal of milestone "
                            f"{r['milestone_id']}: {why}"))

    def over(keys: pd.Series | None, cap_of, code: str, what) -> None:
        amounts = both["amount"]
        cum = amounts.groupby(keys).cumsum() if keys is not None else amounts.cumsum()
        cum = cum.to_numpy(dtype=np.int64)[n0:]
        key_vals = keys.to_numpy(dtype=object)[n0:] if keys is not None else [None] * len(lines)
        reported = set()
        for i in np.flatnonzero(amt > 0):
            k = key_vals[i]
            cap = cap_of(k)
            if cap is not None and cum[i] > cap >= cum[i] - amt[i] and k not in reported:
                reported.add(k)
                out.append((row(i), code, f"{what(k)} reaches {fmt(int(cum[i]))} with this "
                            f"line, over its cap of {fmt(cap)}"))

    fcap = {fu.id: money.pence(fu.cap) for fu in c.funders if fu.cap is not None}
    over(both["funder"], fcap.get, "funder-cap-exceeded", lambda k: f"funder {k}'s total")
    if c.caps and c.caps.contract is not None:
        ccap = money.pence(c.caps.contract)
        over(None, lambda k: ccap, "contract-cap-exceeded", lambda k: "the contract's total")
    if c.caps and c.caps.participant is not None:
        pcap = money.pence(c.caps.participant)
        over(both["participant_id"], lambda k: pcap, "participant-cap-exceeded",
             lambda k: f"participant {k}'s total")

    st = standing_lines(both)
    touched = set(lines["milestone_id"])
    mine = st[st["milestone_id"].isin(touched)]
    per_m = mine.groupby("milestone_id").agg(amount=("amount", "sum"), price=("price", "max"),
                                             periods=("period", "nunique"))
    for mid, r in per_m[per_m["amount"] > per_m["price"]].head(MAX_DIFFS).iterrows():
        out.append((_first_line(lines, mid), "standing-over-price",
                    f"milestone {mid} holds {fmt(int(r['amount']))} after this claim, more than "
                    f"its price {fmt(int(r['price']))}"))
    paid_here = set(lines.loc[pay, "milestone_id"])
    for mid in [m_ for m_ in per_m.index[per_m["periods"] > 1] if m_ in paid_here][:MAX_DIFFS]:
        out.append((_first_line(lines, mid), "double-payment",
                    f"milestone {mid} is paid here while a payment of an earlier claim for it "
                    "still stands; a milestone is paid once (reverse the earlier payment first)"))
    net = both[both["milestone_id"].isin(touched)].groupby("milestone_id")["amount"].sum()
    for mid, v in net[net < 0].head(MAX_DIFFS).items():
        out.append((_first_line(lines, mid), "negative-standing",
                    f"milestone {mid} nets {fmt(int(v))} after this claim; a reversal cancels "
                    "no more than was paid"))

    keys = {o.id: limit_of(c, o) for o in c.outcomes}
    ms = st.drop_duplicates("milestone_id")
    if len(ms) and pay.any():
        lk = ms["outcome"].map(lambda o: keys.get(o, (f"outcome:{o}", 1))[0])
        lim = ms["outcome"].map(lambda o: keys.get(o, (f"outcome:{o}", 1))[1])
        counts = ms.assign(lk=lk, lim=lim).groupby(["participant_id", "lk"]).agg(
            n=("milestone_id", "size"), lim=("lim", "first"))
        here = lines[pay].assign(lk=lines.loc[pay, "outcome"].map(
            lambda o: keys.get(o, (f"outcome:{o}", 1))[0]))
        here_keys = set(zip(here["participant_id"], here["lk"]))
        for (p, k), r in counts[counts["n"] > counts["lim"]].iterrows():
            if (p, k) not in here_keys:
                continue
            hit = here[(here["participant_id"] == p) & (here["lk"] == k)]
            what = k.split(":", 1)[1] + (" (group)" if k.startswith("group:") else "")
            out.append((row(hit.index[0]), "limit-exceeded",
                        f"participant {p} holds {r['n']} payments of {what}, over its limit of "
                        f"{r['lim']} per participant"))
    return out


# --- the example's ledgers and contracts ------------------------------------------------------

def _contract(text: str, folder: Path) -> Contract:
    folder.mkdir()
    path = folder / f"{CID}.yaml"
    path.write_text(text, "utf-8")
    lc, problems = load_contract(path)
    assert lc is not None and not problems, problems
    return lc.contract


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> tuple[list[pd.DataFrame], list[Contract]]:
    """The example's claims to UPTO (typed lines), and the contract with variants that
    tighten its caps (adding a participant cap) or loosen and regroup its limits."""
    tmp = tmp_path_factory.mktemp("contracts")
    claims = []
    for folder in sorted((ROOT / "ledgers" / CID).glob("20*")):
        if folder.name <= UPTO:
            lines, problems = parse_ledger((folder / "ledger.csv").read_text("utf-8"), "x")
            assert not problems
            claims.append(lines)
    text = (ROOT / "contracts" / f"{CID}.yaml").read_text("utf-8")
    tight = (text.replace("cap: 1075000.00", "cap: 150000.00")
             .replace("cap: 76950.00", "cap: 9000.00")
             .replace("  contract: 2375150.00", "  contract: 250000.00\n  participant: 4000.00"))
    assert tight != text
    loose = text.replace("sustainment-13w: {limit_per_participant: 1}",
                         "sustainment-13w: {limit_per_participant: 2}")
    regrouped = text.replace("    group: sustainment-13w\n", "", 1)
    assert len({text, tight, loose, regrouped}) == 4
    contracts = [_contract(t, tmp / str(k)) for k, t in enumerate((text, tight, loose, regrouped))]
    return claims, contracts


# --- tampering, in memory ----------------------------------------------------------------------

AMOUNTS = ("0.00", "-5.00", "1.00", "99999.99", "1075000.00", "76950.00", "3000.00")
OUTCOMES = ("engagement", "job-start", "sustainment-13w-ft", "sustainment-13w-pt",
            "health-improvement", "no-such-outcome")


def tamper(claims: list[pd.DataFrame], rng: random.Random) -> list[pd.DataFrame]:
    claims = [c.copy() for c in claims]
    ids = [x for c in claims for x in c["line_id"]]
    mids = sorted({x for c in claims for x in c["milestone_id"]})
    pids = sorted({x for c in claims for x in c["participant_id"]})
    periods = [c["period"].iat[0] for c in claims if len(c)]
    fresh = iter(f"x-{n:05d}" for n in range(10**6))  # line ids no claim has
    for _ in range(rng.randint(1, 6)):
        k = rng.randrange(len(claims))
        lines = claims[k]
        if not len(lines):
            continue
        i = rng.randrange(len(lines))
        at = lambda col: lines.columns.get_loc(col)  # noqa: E731
        what = rng.choice(("amount", "amount", "capped", "share", "price", "price_from",
                           "kind", "reverses", "reverses", "period", "milestone", "milestone",
                           "participant", "outcome", "outcome", "delete", "add", "copy-reversal",
                           "line-id", "swap"))
        if what == "amount":
            lines.iat[i, at("amount")] = int(money.to_decimal(rng.choice(AMOUNTS)) * 100)
        elif what == "capped":
            lines.iat[i, at("capped")] = rng.choice((0, -100, 1000))
        elif what == "share":
            lines.iat[i, at("share")] = rng.choice((452600, 500000, 0, 1_000_000))
        elif what == "price":
            lines.iat[i, at("price")] = rng.choice((65000, 260000, 1, 9_999_999_999_900))
        elif what == "price_from":
            lines.iat[i, at("price_from")] = int(lines["price_from"].iat[i]) + rng.choice((-1, 1))
        elif what == "kind":
            lines.iat[i, at("kind")] = rng.choice(("payment", "reversal", "other"))
        elif what == "reverses":
            lines.iat[i, at("reverses")] = rng.choice(
                ids + ["", "nonsense", lines["line_id"].iat[i]])
            if rng.random() < 0.6:
                lines.iat[i, at("kind")] = "reversal"
        elif what == "period":
            lines.iat[i, at("period")] = rng.choice(periods + ["2030-Q1"])
        elif what == "milestone":  # the lines of one milestone, or one of them, become another's
            old, new = lines["milestone_id"].iat[i], rng.choice(mids)
            sel = (lines["milestone_id"] == old) if rng.random() < 0.7 else (lines.index == i)
            lines.loc[sel, "milestone_id"] = new
        elif what == "participant":
            sel = lines["milestone_id"] == lines["milestone_id"].iat[i]
            lines.loc[sel, "participant_id"] = rng.choice(pids)
        elif what == "outcome":
            sel = lines["milestone_id"] == lines["milestone_id"].iat[i]
            lines.loc[sel, "outcome"] = rng.choice(OUTCOMES)
        elif what == "delete":
            claims[k] = lines.drop(index=i).reset_index(drop=True)
        elif what == "add":  # a line of another claim, or this one, again
            src = claims[rng.randrange(len(claims))]
            if len(src):
                extra = src.iloc[[rng.randrange(len(src))]].copy()
                extra["line_id"] = next(fresh)
                extra["period"] = rng.choice([lines["period"].iat[0], extra["period"].iat[0]])
                claims[k] = pd.concat([lines, extra], ignore_index=True)
        elif what == "copy-reversal":  # a reversal made again in this claim
            revs = [c[c["kind"] == "reversal"] for c in claims]
            revs = pd.concat(revs, ignore_index=True)
            if len(revs):
                extra = revs.iloc[[rng.randrange(len(revs))]].copy()
                extra["line_id"] = next(fresh)
                claims[k] = pd.concat([extra, lines], ignore_index=True)
        elif what == "line-id":  # a line renamed: reversals naming it now name nothing
            lines.iat[i, at("line_id")] = next(fresh)
        elif what == "swap":
            j = rng.randrange(len(lines))
            lines.iloc[[i, j]] = lines.iloc[[j, i]].to_numpy()
    return claims


@pytest.mark.parametrize("seed", range(40))
def test_the_running_state_finds_what_a_rescan_finds(example, seed: int) -> None:
    claims, contracts = example
    rng = random.Random(seed)
    claims = tamper(claims, rng) if seed else claims  # seed 0: the example as issued
    assert all(len(set(c["line_id"])) == len(c) for c in claims)  # (the re-scan needs it)
    run = _Running()
    before = empty_lines()
    broken_from = rng.randrange(len(claims) + 1) if seed else len(claims)
    found_any = set()
    for k, lines in enumerate(claims):
        c = rng.choice(contracts) if seed else contracts[0]
        check_reversals = k < broken_from
        if seed and rng.random() < 0.1:  # a claim whose invariants are skipped counts after it
            run.add(lines)
        else:
            want = rescan_violations(c, before, lines, check_reversals)
            got = invariant_violations(c, run, lines, check_reversals)
            assert got == want, f"claim {k + 1}"
            found_any |= {code for _line, code, _m in got}
        before = pd.concat([before, lines], ignore_index=True)
    if seed == 0:
        assert not found_any


def test_the_cases_break_every_kind_of_invariant(example) -> None:
    """The cases above are not vacuous: together they break every invariant checked."""
    claims, contracts = example
    every = {"negative-payment", "split-mismatch", "bad-reversal", "funder-cap-exceeded",
             "contract-cap-exceeded", "participant-cap-exceeded", "standing-over-price",
             "double-payment", "negative-standing", "limit-exceeded"}
    codes: set[str] = set()
    for seed in range(1, 40):
        rng = random.Random(seed)
        tampered = tamper(claims, rng)
        before = empty_lines()
        for lines in tampered:
            c = rng.choice(contracts)
            codes |= {code for _l, code, _m in rescan_violations(c, before, lines)}
            before = pd.concat([before, lines], ignore_index=True)
        if codes >= every:
            break
    assert codes >= every, every - codes


# --- the subtle rules, on small hand-made histories --------------------------------------------

HEADER = ",".join(LEDGER_COLUMNS)


def _lines(*rows: str) -> pd.DataFrame:
    lines, problems = parse_ledger("\n".join([HEADER, *rows, ""]), "x")
    assert not problems, problems
    return lines


def _pay(lid: str, mid: str, pid: str, outcome: str, funder: str, share: str, amount: str,
         capped: str = "0.00", price: str = "650.00") -> str:
    period = lid.rsplit("-", 1)[0]
    return (f"{lid},{period},payment,{mid},{pid},{outcome},2019-03-30,2019-07-06,EV-1,"
            f"2019-01-02,{price},{funder},{share},{amount},{capped},"
            f"{'funder' if capped != '0.00' else ''},false,")


def _rev(lid: str, target: str, mid: str, pid: str, outcome: str, funder: str, share: str,
         amount: str, price: str = "650.00") -> str:
    period = lid.rsplit("-", 1)[0]
    return (f"{lid},{period},reversal,{mid},{pid},{outcome},2019-03-30,2019-07-06,EV-1,"
            f"2019-01-02,{price},{funder},{share},{amount},0.00,,false,{target}")


def _judge(c: Contract, claims: list[pd.DataFrame]) -> list[list[tuple[int, str, str]]]:
    run, before, out = _Running(), empty_lines(), []
    for lines in claims:
        got = invariant_violations(c, run, lines)
        assert got == rescan_violations(c, before, lines)
        out.append(got)
        before = pd.concat([before, lines], ignore_index=True)
    return out


def test_a_reversal_cancels_its_whole_payment_zero_lines_too(example) -> None:
    """2019-Q2 pays M1 with jcp-west-london at its cap (0.00); 2019-Q3 reverses the lines
    that paid (a reversal writes none for a 0.00 line). The 0.00 line went with them: 2019-Q4
    cannot reverse it, and pays M1 again without a double payment."""
    c = example[1][0]
    m1 = ("M1", "P1", "engagement")
    paid = [("dcms", "45.2600", "294.19"), ("harrow", "26.4700", "172.06"),
            ("harrow-ccg", "21.6600", "140.79")]
    q2 = _lines(*[_pay(f"2019-Q2-{k:05d}", *m1, f, s, a) for k, (f, s, a) in enumerate(paid, 1)],
                _pay("2019-Q2-00004", *m1, "jcp-west-london", "6.6100", "0.00", "42.96"))
    q3 = _lines(*[_rev(f"2019-Q3-{k:05d}", f"2019-Q2-{k:05d}", *m1, f, s, f"-{a}")
                  for k, (f, s, a) in enumerate(paid, 1)])
    q4 = _lines(_rev("2019-Q4-00001", "2019-Q2-00004", *m1, "jcp-west-london", "6.6100", "0.00"),
                *[_pay(f"2019-Q4-{k:05d}", *m1, f, s, a) for k, (f, s, a) in enumerate(paid, 2)],
                _pay("2019-Q4-00005", *m1, "jcp-west-london", "6.6100", "0.00", "42.96"))
    assert _judge(c, [q2, q3, q4]) == [[], [], [
        (2, "bad-reversal", "reversal of milestone M1: reverses 2019-Q2-00004, which is no "
                            "standing payment line of an earlier claim")]]


def test_limits_count_only_standing_milestones(example) -> None:
    """P1's 13-week sustainment S1 is reversed in 2019-Q3; S2 paid in 2019-Q4 is then P1's
    only one, and S3 paid in 2020-Q1 is one too many (the group's limit is one)."""
    c = example[1][0]
    split = [("dcms", "45.2600", "1357.80"), ("harrow", "26.4700", "794.10"),
             ("harrow-ccg", "21.6600", "649.80"), ("jcp-west-london", "6.6100", "198.30")]
    pays = lambda p, mid: [  # noqa: E731
        _pay(f"{p}-{k:05d}", mid, "P1", "sustainment-13w-ft", f, s, a, price="3000.00")
        for k, (f, s, a) in enumerate(split, 1)]
    q2 = _lines(*pays("2019-Q2", "S1"))
    q3 = _lines(*[_rev(f"2019-Q3-{k:05d}", f"2019-Q2-{k:05d}", "S1", "P1", "sustainment-13w-ft",
                       f, s, f"-{a}", price="3000.00") for k, (f, s, a) in enumerate(split, 1)])
    q4 = _lines(*pays("2019-Q4", "S2"))
    q1 = _lines(*pays("2020-Q1", "S3"))
    assert _judge(c, [q2, q3, q4, q1]) == [[], [], [], [
        (2, "limit-exceeded", "participant P1 holds 2 payments of sustainment-13w (group), "
                              "over its limit of 1 per participant")]]


def test_a_reversal_naming_a_line_that_comes_later_cancels_it_when_it_comes(example) -> None:
    """2019-Q3 reverses 2019-Q4-00001, which no line has yet: a bad reversal. When 2019-Q4
    then pays M1 again with a line of that id, the reversal cancels that payment (its
    milestone's lines of the period of the line it names), so it is no double payment."""
    c = example[1][0]
    m1 = ("M1", "P1", "engagement")
    split = [("dcms", "45.2600", "294.19"), ("harrow", "26.4700", "172.06"),
             ("harrow-ccg", "21.6600", "140.79"), ("jcp-west-london", "6.6100", "42.96")]
    pays = lambda p: [_pay(f"{p}-{k:05d}", *m1, f, s, a)  # noqa: E731
                      for k, (f, s, a) in enumerate(split, 1)]
    q3 = _lines(_rev("2019-Q3-00001", "2019-Q4-00001", *m1, "dcms", "45.2600", "-294.19"))
    assert _judge(c, [_lines(*pays("2019-Q2")), q3, _lines(*pays("2019-Q4"))]) == [[], [
        (2, "bad-reversal", "reversal of milestone M1: reverses 2019-Q4-00001, which is no "
                            "standing payment line of an earlier claim")], []]
    # without that reversal, the second payment is a double payment
    again = _judge(c, [_lines(*pays("2019-Q2")), _lines(*pays("2019-Q4"))])[1]
    assert [code for _l, code, _m in again] == ["standing-over-price", "double-payment"]


def test_a_milestone_counts_towards_the_limits_of_its_first_standing_line(example) -> None:
    """S1 is paid for P1, then again (wrongly) for P2: its first standing line is P1's, so
    it is P1's sustainment, and S2 paid for P1 is one too many — not for P2."""
    c = example[1][0]
    split = [("dcms", "45.2600", "1357.80"), ("harrow", "26.4700", "794.10"),
             ("harrow-ccg", "21.6600", "649.80"), ("jcp-west-london", "6.6100", "198.30")]
    pays = lambda p, mid, pid: [  # noqa: E731
        _pay(f"{p}-{k:05d}", mid, pid, "sustainment-13w-ft", f, s, a, price="3000.00")
        for k, (f, s, a) in enumerate(split, 1)]
    got = _judge(c, [_lines(*pays("2019-Q2", "S1", "P1")), _lines(*pays("2019-Q3", "S1", "P2")),
                     _lines(*pays("2019-Q4", "S2", "P1"))])
    assert [code for _l, code, _m in got[1]] == ["standing-over-price", "double-payment"]
    assert got[2] == [(2, "limit-exceeded", "participant P1 holds 2 payments of sustainment-13w "
                                            "(group), over its limit of 1 per participant")]
