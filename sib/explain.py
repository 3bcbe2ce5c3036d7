"""`sib explain` and `sib status`: one participant's or milestone's story, and where a contract stands.

After audit.py in the flow (it reads issued claims with audit's helpers), before report.py
and cli.py. Both read only what was issued — each claim's ledger.csv, decisions.csv,
manifest.json and inputs/ — never today's evidence: they say what was claimed and why. A
rule is cited in the contract that decided it, the claim's inputs/contract.yaml, named as
the workspace's contract file when that file is still byte-identical to it (else as the
inputs copy, whose line numbers are the ones that applied). Evidence rows are read from
inputs/ through audit.read_input, so a compressed copy (`.csv.gz`) is read as the file the
claim read, and one that is damaged gives no facts rather than an error (`sib audit` says
what is wrong with it). Returns data with `as_json()`
and `text_lines()`; must not print, write or compute money beyond adding ledger lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd

from sib import money
from sib.audit import ClaimFolder, claim_folders, contract_ledgers, load_input_contract, \
    parse_decisions, read_input
from sib.contract import Contract, LoadedContract, limit_of, rules_for
from sib.evidence import Source, read_table
from sib.issue import original_name
from sib.ledger import parse_ledger
from sib.period import period_containing
from sib.problems import SibError
from sib.reconcile import standing_lines
from sib.workspace import find_contract

_NO_RULE = ("withdrawn", "invalid-row", "status-pending", "verified-after-period",
            "pending-verification", "unknown-participant", "changed-participant")
_QUIET = ("paid-earlier",)  # unchanged since it was paid: the story cites the payment


@dataclass(frozen=True)
class IssuedClaim:
    """One issued claim read back: its folder, decisions, typed lines and contract."""

    folder: ClaimFolder
    decisions: pd.DataFrame
    lines: pd.DataFrame
    lc: LoadedContract | None

    @property
    def label(self) -> str:
        return self.folder.label

    @property
    def number(self) -> int | None:
        n = (self.folder.manifest or {}).get("claim_number")
        return n if isinstance(n, int) else None


def read_claims(workspace: Path, contract_id: str | None) -> tuple[str, str, list[IssuedClaim]]:
    """(contract id, shown ledgers folder, the issued claims in order), for reading only.

    A claim folder without a readable manifest, ledger or decisions file is an error that
    points to `sib audit` (explain and status report the record; audit judges it)."""
    cid, root, shown_root = contract_ledgers(workspace, contract_id)
    folders, _stray = claim_folders(root, shown_root)
    current = workspace / "contracts" / f"{cid}.yaml"
    try:
        current_raw = current.read_bytes()
    except OSError:
        current_raw = None
    out = []
    for f in folders:
        if f.manifest is None:
            raise SibError(f"{f.file('manifest.json')}: {f.manifest_problem}; run `sib audit`")
        frames = {}
        for name, parse in (("decisions.csv", parse_decisions), ("ledger.csv", parse_ledger)):
            try:
                text = (f.path / name).read_text("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise SibError(f"{f.file(name)} cannot be read ({e}); run `sib audit`") from None
            frame, problems = parse(text, f.file(name))
            if problems:
                raise SibError(f"{problems[0]}; run `sib audit`")
            frames[name] = frame
        try:
            same = current_raw is not None and \
                (f.path / "inputs" / "contract.yaml").read_bytes() == current_raw
        except OSError:
            same = False
        cite = (f.manifest.get("sources") or {}).get("contract", f"contracts/{cid}.yaml") \
            if same else f.file("inputs/contract.yaml")
        lc, _why = load_input_contract(f, cite)
        out.append(IssuedClaim(f, frames["decisions.csv"], frames["ledger.csv"], lc))
    return cid, shown_root, out


def _input_row(claim: IssuedClaim, table: str, key: str, value: str) -> dict | None:
    """The row of inputs/<table> with `key` == value, as text (None when not there, or
    when the copy cannot be read back as the claim read it)."""
    name = claim.folder.input_name(table)
    if name is None:
        return None
    raw, _why = read_input(claim.folder, name)
    if raw is None:
        return None
    frame = read_table(Source(claim.folder.path / original_name(name), claim.folder.file(name),
                              raw)).frame
    if frame is None or key not in frame.columns:
        return None
    hit = frame[frame[key] == value]
    if not len(hit):
        return None
    return {k: str(v) for k, v in hit.iloc[0].items() if str(v) != ""}


# --- rules: which clause of the contract decided ---------------------------------------------

def _rule(lc: LoadedContract, loc: tuple, text: str) -> dict:
    line = lc.line(*loc)
    return {"path": lc.shown, "line": line, "text": text,
            "cite": f"{lc.shown}:{line}: {text}" if line else f"{lc.shown}: {text}"}


def _when_text(cond: dict | None) -> str:
    return " and ".join(f"{col} {t.describe()}" for col, t in (cond or {}).items())


def _split_text(rule) -> str:
    parts = [f"{e.funder or 'route ' + e.route} {money.fmt_share_short(money.share_units(e.share))}"
             for e in rule.split]
    head = f"when {_when_text(rule.when)}: " if rule.when else ""
    return head + "split " + ", ".join(parts)


def _payer_rule(c: Contract, o, lines: pd.DataFrame):
    """(index, rule) of the payer rule whose fixed funders and shares the lines show."""
    _loc, rules = rules_for(c, o)
    paid = dict(zip(lines["funder"], lines["share"].astype(int)))
    for r, rule in enumerate(rules):
        fixed_ok = all(paid.get(e.funder) == money.share_units(e.share)
                       for e in rule.split if e.funder)
        if fixed_ok and len(rule.split) >= len(paid):
            return r, rule
    return None, None


def decision_rules(lc: LoadedContract | None, row: pd.Series, lines: pd.DataFrame) -> list[dict]:
    """The contract clauses behind one decision, each cited as `file:line: text`."""
    if lc is None:
        return []
    c = lc.contract
    reason, decision = row["reason"], row["decision"]
    by_id = {o.id: k for k, o in enumerate(c.outcomes)}
    k = by_id.get(row["outcome"])
    o = c.outcomes[k] if k is not None else None
    out: list[dict] = []
    pays = lines[lines["kind"] == "payment"]
    if decision in ("paid", "re-rated") and o is not None and len(pays):
        when = pays["price_from"].iat[0]
        day = _day(when)
        out.append(_rule(lc, ("outcomes", k, "prices", day),
                         f"{o.id} is priced {money.fmt_gbp(int(pays['price'].iat[0]))} from {day}"))
        r, rule = _payer_rule(c, o, pays)
        if rule is not None:
            base, _ = rules_for(c, o)
            out.append(_rule(lc, base + (r,), f"{'/'.join(map(str, base))}[{r}] "
                             + _split_text(rule)))
    if reason in _NO_RULE or not reason:
        pass
    elif reason == "enrolled-outside-term":
        t = c.term
        out.append(_rule(lc, ("term", "enrolment_end"), f"participants enrol from {t.service_start} "
                         f"to {t.enrolment_end}"))
    elif reason == "achieved-outside-term":
        t = c.term
        out.append(_rule(lc, ("term", "outcomes_end"), f"outcomes count from {t.service_start} "
                         f"to {t.outcomes_end}"))
    elif reason == "participant-ineligible":
        for col, test in (c.eligibility or {}).items():
            if f"'s {col} " in row["detail"]:
                out.append(_rule(lc, ("eligibility", col), f"eligibility: {col} {test.describe()}"))
    elif reason in ("unknown-milestone", "conditions-not-met", "changed-outcome"):
        mtype = str(row["milestone"]).strip().lower()
        for j, oo in enumerate(c.outcomes):
            if oo.milestone.strip().lower() == mtype:
                out.append(_rule(lc, ("outcomes", j, "when") if oo.when else ("outcomes", j),
                                 f"{oo.id} pays a {oo.milestone} milestone"
                                 + (f" when {_when_text(oo.when)}" if oo.when else "")))
        if not out:
            out.append(_rule(lc, ("outcomes",), "the outcomes pay milestone types "
                             + ", ".join(sorted({oo.milestone for oo in c.outcomes}))))
    elif o is None:
        pass
    elif reason == "evidence-not-accepted":
        out.append(_rule(lc, ("outcomes", k, "evidence"),
                         f"{o.id} accepts evidence {', '.join(o.evidence or [])}"))
    elif reason == "outside-enrolment-window":
        out.append(_rule(lc, ("outcomes", k, "within_days_of_enrolment"),
                         f"{o.id} must be achieved within {o.within_days_of_enrolment} days of "
                         "enrolment"))
    elif reason in ("missing-prerequisite", "prerequisite-too-old"):
        for j, req in enumerate(o.requires):
            if f" {req.outcome} " in f" {row['detail']} ":
                out.append(_rule(lc, ("outcomes", k, "requires", j),
                                 f"{o.id} requires {req.outcome}"
                                 + (f" within {req.within_days} days" if req.within_days
                                    is not None else "")))
                break
    elif reason == "no-price":
        out.append(_rule(lc, ("outcomes", k, "prices"),
                         f"{o.id} has prices from {min(o.prices).isoformat()}"))
    elif reason == "no-funder-for-route":
        base, _ = rules_for(c, o)
        out.append(_rule(lc, base, f"the payer rules for {o.id}"))
    elif reason == "limit-reached":
        key, limit = limit_of(c, o)
        if o.group is not None:
            out.append(_rule(lc, ("groups", o.group, "limit_per_participant"),
                             f"group {o.group} is paid at most {limit} time(s) per participant"))
        else:
            loc = ("outcomes", k, "limit_per_participant") if o.limit_per_participant \
                else ("outcomes", k)
            out.append(_rule(lc, loc, f"{o.id} is paid at most {limit} time(s) per participant"
                             + ("" if o.limit_per_participant else " (the default)")))
    elif reason == "volume-cap":
        out.append(_rule(lc, ("outcomes", k, "max_count"),
                         f"{o.id} is paid at most {o.max_count} times in all"))
    elif reason in ("participant-cap", "contract-cap"):
        what = reason.split("-")[0]
        cap = getattr(c.caps, what) if c.caps else None
        out.append(_rule(lc, ("caps", what), f"the {what} cap is "
                         f"{money.fmt_gbp(money.pence(cap)) if cap is not None else 'none'}"))
    elif reason == "changed-price":
        pass  # the new price is cited with the payment
    elif reason == "changed-split":
        pass  # the new split is cited with the payment
    capped_funders = set(lines.loc[lines["cap"] == "funder", "funder"])
    if reason == "funder-cap" and not capped_funders:
        capped_funders = {f.id for f in c.funders if f.id in row["detail"]}
    for j, fu in enumerate(c.funders):
        if fu.id in capped_funders and fu.cap is not None:
            out.append(_rule(lc, ("funders", j, "cap"),
                             f"{fu.id} pays at most {money.fmt_gbp(money.pence(fu.cap))} in all"))
    for what in ("participant", "contract"):
        if what in set(lines["cap"]) and reason != f"{what}-cap":
            cap = getattr(c.caps, what) if c.caps else None
            if cap is not None:
                out.append(_rule(lc, ("caps", what),
                                 f"the {what} cap is {money.fmt_gbp(money.pence(cap))}"))
    return out


def _day(n: int) -> str:
    from sib.evidence import day_text
    return day_text(int(n))


def _line_json(r: pd.Series) -> dict:
    return {"line_id": r["line_id"], "kind": r["kind"], "funder": r["funder"],
            "share": money.fmt_share(int(r["share"])), "price_from": _day(r["price_from"]),
            "price": money.fmt_amount(int(r["price"])), "amount": money.fmt_amount(int(r["amount"])),
            "capped": money.fmt_amount(int(r["capped"])), "cap": r["cap"] or None,
            "late": bool(r["late"]), "reverses": r["reverses"] or None}


# --- explain ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Explanation:
    """The story of one participant's (or one milestone's) milestones, claim by claim.

    data: the JSON document (see `as_json`); text_lines() renders it for people.
    """

    data: dict

    def as_json(self) -> dict:
        """`sib explain --json`: {"contract", "subject": {"participant"|"milestone": id},
        "period": str|null, "claims": [period], "participant": {"participant_id", "as_of",
        "fields"} | null, "milestones": [{"milestone_id", "participant_id", "milestone",
        "outcome", "facts", "facts_as_of", "claims": [{"period", "claim_number",
        "decision", "reason", "detail", "amount", "capped", "rules": [{"path", "line",
        "text", "cite"}], "lines": [{"line_id", "kind", "funder", "share", "price_from",
        "price", "amount", "capped", "cap", "late", "reverses"}]}], "standing": {"amount",
        "by_funder"}}]}; money as two-decimal strings (tests/test_explain.py)."""
        return self.data

    def text_lines(self) -> list[str]:
        d = self.data
        out = []
        subject = d["subject"]
        kind, ident = next(iter(subject.items()))
        span = d["claims"]
        out.append(f"{kind.capitalize()} {ident} — {d['contract']}, "
                   + (f"claim {span[0]}" if len(span) == 1 else f"claims {span[0]} … {span[-1]}"))
        p = d["participant"]
        if p is not None:
            facts = ", ".join(f"{k} {v}" for k, v in p["fields"].items() if k != "participant_id")
            out.append(f"  participant {p['participant_id']}: {facts or 'no details'} "
                       f"(inputs of {p['as_of']})")
        for m in d["milestones"]:
            out.append("")
            facts = m["facts"] or {}
            head = f"{m['milestone_id']}  {m['milestone']}"
            if m["outcome"]:
                head += f" → {m['outcome']}"
            head += f"  (participant {m['participant_id']})"
            out.append(head)
            bits = [f"{k} {facts[k]}" for k in ("achieved_on", "status", "verified_on",
                                                   "evidence_ref", "evidence_type",
                                                   "hours_per_week") if facts.get(k)]
            if bits:
                out.append("  " + " · ".join(bits) + f"  (inputs of {m['facts_as_of']})")
            for group in _collapse(m["claims"]):
                first, last = group[0], group[-1]
                when = first["period"] if len(group) == 1 else \
                    f"{first['period']} … {last['period']} ({len(group)} claims)"
                dec = first["decision"] + (f" ({first['reason']})" if first["reason"] else "")
                net = "net " if any(ln["kind"] == "reversal" for ln in first["lines"]) else ""
                money_txt = f"  {net}{money.fmt_gbp(_p(first['amount']))}" \
                    if first["lines"] or _p(first["amount"]) else ""
                out.append(f"  {when:<10}  {dec}{money_txt}")
                out.append(f"      {first['detail']}")
                for r in first["rules"]:
                    out.append(f"      rule  {r['cite']}")
                for ln in first["lines"]:
                    extra = ""
                    if _p(ln["capped"]):
                        extra += f"  capped {money.fmt_gbp(_p(ln['capped']))} ({ln['cap']} cap)"
                    if ln["reverses"]:
                        extra += f"  reverses {ln['reverses']}"
                    if ln["late"]:
                        extra += "  late"
                    out.append(f"      {ln['line_id']}  {ln['kind']:<8}  {ln['funder']:<20}"
                               f"{ln['share']:>8}% of {money.fmt_gbp(_p(ln['price']))} "
                               f"(from {ln['price_from']}){money.fmt_gbp(_p(ln['amount'])):>12}"
                               f"{extra}")
            st = m["standing"]
            parts = ", ".join(f"{k} {money.fmt_gbp(_p(v))}" for k, v in st["by_funder"].items())
            out.append(f"  holds {money.fmt_gbp(_p(st['amount']))} after {span[-1]}"
                       + (f": {parts}" if parts else ""))
        return out


def _p(text: str) -> int:
    return int(text.replace(".", "").replace("-", "")) * (-1 if text.startswith("-") else 1)


def _collapse(claims: list[dict]) -> list[list[dict]]:
    """Runs of consecutive claims that say the same quiet thing (paid-earlier, pending,
    rejected for the same reason) with no lines, shown as one entry."""
    groups: list[list[dict]] = []
    for c in claims:
        key = (c["decision"], c["reason"], c["detail"], bool(c["lines"]))
        if groups and not c["lines"] and groups[-1][-1]["_key"] == key:
            groups[-1].append(c)
        else:
            groups.append([c])
        c["_key"] = key
    for g in groups:
        for c in g:
            c.pop("_key", None)
    return groups


def explain(workspace: Path, contract_id: str | None = None, participant: str | None = None,
            milestone: str | None = None, period: str | None = None) -> Explanation:
    """The story of a participant's milestones (or of one milestone) through the claims."""
    if (participant is None) == (milestone is None):
        raise SibError("explain needs exactly one of --participant ID and --milestone ID")
    cid, shown_root, claims = read_claims(workspace, contract_id)
    if not claims:
        raise SibError(f"no claim of {cid} has been issued yet ({shown_root}/ has none); "
                       "issue one with `sib claim --period P`")
    if period is not None:
        chosen = [c for c in claims if c.label == period.strip()]
        if not chosen:
            raise SibError(f"{period} is not an issued claim of {cid} (issued: "
                           f"{claims[0].label} … {claims[-1].label})")
        upto = claims[: claims.index(chosen[0]) + 1]
    else:
        chosen, upto = claims, claims
    # which milestones: any the participant had in any claim (its participant may change)
    if milestone is not None:
        ids = {milestone}
    else:
        ids = set()
        for c in upto:
            d = c.decisions
            ids |= set(d.loc[d["participant_id"] == participant, "milestone_id"])
    known = [c for c in chosen if c.decisions["milestone_id"].isin(ids).any()]
    if not ids or not known:
        what = f"participant {participant}" if participant else f"milestone {milestone}"
        where = f"claim {period}" if period else f"any issued claim ({claims[0].label} … " \
                                                 f"{claims[-1].label})"
        raise SibError(f"{what} is not in the decisions of {where}; check the id (ids are "
                       "case-sensitive, e.g. WL00013 or WLM000005)")
    all_lines = pd.concat([c.lines for c in upto], ignore_index=True)
    milestones = []
    for mid in sorted(ids):
        entries, last = [], None
        for c in chosen:
            d = c.decisions
            rows = d[d["milestone_id"] == mid]
            if not len(rows):
                continue
            row = rows.iloc[0]
            lines = c.lines[c.lines["milestone_id"] == mid]
            entries.append({
                "period": c.label, "claim_number": c.number, "decision": row["decision"],
                "reason": row["reason"], "detail": row["detail"],
                "amount": money.fmt_amount(int(row["amount"])),
                "capped": money.fmt_amount(int(row["capped"])),
                "rules": [] if row["decision"] in _QUIET else decision_rules(c.lc, row, lines),
                "lines": [_line_json(r) for _, r in lines.iterrows()]})
            last = (c, row)
        if last is None:
            continue
        c, row = last
        facts = _input_row(c, "milestones", "milestone_id", mid)
        mine = standing_lines(all_lines[all_lines["milestone_id"] == mid])
        by_f = mine.groupby("funder", sort=False)["amount"].sum()
        milestones.append({
            "milestone_id": mid, "participant_id": row["participant_id"],
            "milestone": row["milestone"], "outcome": row["outcome"],
            "facts": facts, "facts_as_of": c.label,
            "claims": entries,
            "standing": {"amount": money.fmt_amount(int(mine["amount"].sum())),
                         "by_funder": {k: money.fmt_amount(int(v)) for k, v in by_f.items()
                                       if int(v) != 0}}})
    pid = participant or (milestones[0]["participant_id"] if milestones else None)
    pinfo = None
    if pid:
        for c in reversed(upto):
            fields = _input_row(c, "participants", "participant_id", pid)
            if fields is not None:
                pinfo = {"participant_id": pid, "as_of": c.label, "fields": fields}
                break
    return Explanation({
        "contract": cid,
        "subject": {"participant": participant} if participant else {"milestone": milestone},
        "period": period,
        "claims": [c.label for c in chosen],
        "participant": pinfo,
        "milestones": milestones,
    })


# --- status ----------------------------------------------------------------------------------

def _percent(part: int, whole: int) -> str | None:
    """part/whole as a percentage with one decimal, exactly rounded (no float)."""
    if not whole:
        return None
    q = (Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return f"{q}"


@dataclass(frozen=True)
class Status:
    """Where a contract stands: its issued claims, money against caps, what comes next."""

    data: dict

    def as_json(self) -> dict:
        """`sib status --json`: {"contract": {"id", "name", "claims", "file", "ledgers"},
        "claims": [{"claim_number", "period", "start", "end", "amount", "issued_at",
        "issued_on"}], "funders": [{"id", "name", "kind", "paid", "cap", "headroom",
        "percent_used"}], "by_kind", "contract_total": {"paid", "cap", "headroom",
        "percent_used"}, "central_top_up": {… , "funders"}, "next_period": {"period",
        "start", "end", "claim_number"} | null, "pending_verification": {"as_of", "count",
        "milestones": [{"milestone_id", "participant_id", "milestone", "reason", "detail"}]}};
        money as two-decimal strings, percent as "72.6" (tests/test_status.py)."""
        return self.data

    def text_lines(self) -> list[str]:
        d = self.data
        c = d["contract"]
        out = [f"{c['name']} — {c['id']}, claims by {c['claims']}", ""]
        if d["claims"]:
            out.append(f"Claims issued  {len(d['claims'])}")
            out.append(f"  {'no.':>4}  {'period':<10} {'amount':>15}   issued")
            for cl in d["claims"]:
                out.append(f"  {cl['claim_number']:>4}  {cl['period']:<10} "
                           f"{money.fmt_gbp(_p(cl['amount'])):>15}   {cl['issued_on']}")
        else:
            out.append("Claims issued  none yet")
        out.append("")

        def cap_text(x: dict) -> str:
            if x["cap"] is None:
                return "no cap"
            return f"of {money.fmt_gbp(_p(x['cap']))} ({x['percent_used']}%)  headroom " \
                   f"{money.fmt_gbp(_p(x['headroom']))}"

        out.append(f"Paid to date   {money.fmt_gbp(_p(d['contract_total']['paid']))}  "
                   f"{cap_text(d['contract_total'])}")
        ct = d["central_top_up"]
        out.append(f"Central top-up {money.fmt_gbp(_p(ct['paid']))}  {cap_text(ct)}"
                   + (f"  ({', '.join(ct['funders'])})" if ct["funders"] else ""))
        if d["by_kind"]:
            out.append("By kind        " + ", ".join(
                f"{k} {money.fmt_gbp(_p(v))}" for k, v in d["by_kind"].items()))
        out += ["", f"By funder{'':<31}{'paid to date':>16}   cap"]
        for f in d["funders"]:
            out.append(f"  {f['id']:<38}{money.fmt_gbp(_p(f['paid'])):>16}   {cap_text(f)}")
        out.append("")
        nxt = d["next_period"]
        if nxt is None:
            out.append("Next claim     none: the claims term has ended")
        else:
            out.append(f"Next claim     {nxt['period']} ({nxt['start']} to {nxt['end']}), "
                       f"claim {nxt['claim_number']}")
        pend = d["pending_verification"]
        if pend["as_of"] is None:
            out.append("Pending        nothing issued yet")
        else:
            out.append(f"Pending        {pend['count']} milestone(s) awaiting verification at "
                       f"{pend['as_of']}")
            for (mtype, reason), n in sorted(_count_by(pend["milestones"]).items()):
                out.append(f"  {mtype:<22}{reason:<24}{n:>5}")
        return out


def _count_by(rows: list[dict]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for r in rows:
        k = (r["milestone"], r["reason"])
        out[k] = out.get(k, 0) + 1
    return out


def status(workspace: Path, contract_id: str | None = None) -> Status:
    """Claims issued, cumulative paid per funder against its cap, the next period due and
    the milestones pending verification at the latest claim (caps from today's contract)."""
    lc = find_contract(workspace, contract_id)
    c = lc.contract
    cid, shown_root, claims = read_claims(workspace, c.id)
    issued = []
    for cl in claims:
        m = cl.folder.manifest
        issued.append({"claim_number": m.get("claim_number"), "period": cl.label,
                       "start": m.get("start"), "end": m.get("end"),
                       "amount": m["totals"].get("amount"),
                       "issued_at": m.get("issued_at"),
                       "issued_on": str(m.get("issued_at", ""))[:10] or None})
    lines = pd.concat([cl.lines for cl in claims], ignore_index=True) if claims else None
    by_f = ({k: int(v) for k, v in lines.groupby("funder")["amount"].sum().items()}
            if lines is not None else {})

    def against(paid: int, cap) -> dict:
        capp = money.pence(cap) if cap is not None else None
        return {"paid": money.fmt_amount(paid),
                "cap": money.fmt_amount(capp) if capp is not None else None,
                "headroom": money.fmt_amount(capp - paid) if capp is not None else None,
                "percent_used": _percent(paid, capp) if capp is not None else None}

    funders = [{"id": f.id, "name": f.name, "kind": f.kind, **against(by_f.get(f.id, 0), f.cap)}
               for f in c.funders]
    unknown = sorted(set(by_f) - {f.id for f in c.funders})
    funders += [{"id": k, "name": "(not in today's contract)", "kind": None,
                 **against(by_f[k], None)} for k in unknown]
    total = sum(by_f.values())
    central = [f for f in c.funders if f.kind == "central"]
    central_paid = sum(by_f.get(f.id, 0) for f in central)
    central_cap = (sum(money.pence(f.cap) for f in central)
                   if central and all(f.cap is not None for f in central) else None)
    by_kind: dict[str, int] = {}
    for f in c.funders:
        if f.id in by_f:
            by_kind[f.kind] = by_kind.get(f.kind, 0) + by_f[f.id]
    if claims:
        nxt = claims[-1].folder.period.next()
        number = (claims[-1].number or len(claims)) + 1
    else:
        nxt = period_containing(c.term.service_start, c.claims)
        number = 1
    ended = c.term.claims_end is not None and nxt.start > c.term.claims_end
    pending = []
    if claims:
        d = claims[-1].decisions
        rows = d[d["decision"] == "pending-verification"]
        pending = [{"milestone_id": r["milestone_id"], "participant_id": r["participant_id"],
                    "milestone": r["milestone"], "reason": r["reason"], "detail": r["detail"]}
                   for _, r in rows.iterrows()]
    return Status({
        "contract": {"id": c.id, "name": c.name, "claims": c.claims, "file": lc.shown,
                     "ledgers": shown_root},
        "claims": issued,
        "funders": funders,
        "by_kind": {k: money.fmt_amount(v) for k, v in by_kind.items()},
        "contract_total": against(total, c.caps.contract if c.caps else None),
        "central_top_up": {**against(central_paid, None if central_cap is None
                                     else money.pounds(central_cap)),
                           "funders": [f.id for f in central]},
        "next_period": None if ended else {"period": nxt.label, "start": nxt.start.isoformat(),
                                           "end": nxt.end.isoformat(), "claim_number": number},
        "pending_verification": {"as_of": claims[-1].label if claims else None,
                                 "count": len(pending), "milestones": pending},
    })
