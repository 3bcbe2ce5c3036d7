"""`sib export indigo`: a contract and its issued claims as an INDIGO project document.

The Government Outcomes Lab's INDIGO data standard (project schema, JSON Schema draft-07)
describes an impact bond as one JSON object in which almost every value is wrapped,
`{"value": ...}`. This module fills the sections of shared/spec/indigo-export.md — name,
dates, outcome metrics, pricings, payment commitments, actual outcome payments and results
— from the contract model and the typed ledger lines of the issued claims, and renders the
document as deterministic JSON text.

After explain.py / report.py, before cli.py in the flow. Pure: it takes loaded data
(Contract, History) and returns data (a dict whose money is `Decimal`) or text; it must not
read files, read a clock or print. Money is never a float: amounts are summed as integer
pence, turned into two-place `Decimal` pounds by money.pounds, and `dumps` writes each
`Decimal` as its own digits, so `2600.00` in the ledger is the JSON number `2600.00`.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

from sib import money
from sib.contract import Contract, Outcome, limit_of
from sib.ledger import History
from sib.period import Period, parse_period
from sib.reconcile import standing_lines

PUBLIC_KINDS = ("central", "local-authority", "health", "dwp")  # all public bodies
PUBLIC_ROLE = "Government/Public Sector/Public Bank"
# sib pays each milestone on its verified evidence: INDIGO's "Simple ex-post verification"
VALIDATION_METHOD = "Simple ex-post verification"


def _v(value) -> dict:
    return {"value": value}


def _amount(currency: str, pounds: Decimal) -> dict:
    return {"currency": _v(currency), "amount": _v(pounds)}


def _ordered(known: list[str], seen) -> list[str]:
    """`known` ids in their contract order, then any others `seen` (in earlier contract
    versions' ledgers only) sorted, so no ledger line is left out of the document."""
    extra = sorted(set(seen) - set(known))
    return list(known) + extra


def organisation_ids(c: Contract) -> tuple[dict[str, str], str | None]:
    """(funder id → organisation id, the provider's organisation id or None).

    The INDIGO id (`INDIGO-ORG-####`) where the contract gives one, else sib's own: the
    funder's id, and for the provider the contract's `provider` text (sib has no provider
    id); None when the contract names no provider."""
    funders = {f.id: f.indigo_id or f.id for f in c.funders}
    return funders, c.provider_indigo_id or c.provider


def missing_indigo_ids(c: Contract) -> list[str]:
    """Who is exported under sib's id for want of an INDIGO one: 'provider', then funder ids."""
    out = ["provider"] if c.provider is not None and c.provider_indigo_id is None else []
    return out + [f.id for f in c.funders if f.indigo_id is None]


# --- words for a price version ------------------------------------------------------------

def _conditions(c: Contract, o: Outcome) -> list[str]:
    words = [f"paid per milestone of type {o.milestone}"]
    if o.when:
        words[0] += " where " + " and ".join(f"{col} is {t.describe()}"
                                             for col, t in o.when.items())
    if o.evidence:
        words.append("evidence: " + ", ".join(o.evidence))
    for req in o.requires:
        words.append(f"requires {req.outcome}" + (f" achieved within {req.within_days} days "
                                                  "before" if req.within_days is not None else ""))
    if o.within_days_of_enrolment is not None:
        words.append(f"achieved within {o.within_days_of_enrolment} days of enrolment")
    _key, limit = limit_of(c, o)
    words.append(f"at most {limit} per participant"
                 + (f" across group {o.group}" if o.group is not None else ""))
    if o.max_count is not None:
        words.append(f"at most {o.max_count} in all")
    return words


def price_description(c: Contract, o: Outcome, i: int) -> str:
    """Version i of outcome o's prices, its dates and the outcome's conditions, in words."""
    dates = sorted(o.prices)
    start = dates[i]
    whom = ("participants enrolled" if c.price_basis == "enrolled" else "milestones achieved")
    span = f"from {start.isoformat()}"
    if i + 1 < len(dates):
        span += f" to {(dates[i + 1] - timedelta(days=1)).isoformat()}"
    text = f"Price version {i + 1} of {len(dates)}, for {whom} {span}; "
    return text + "; ".join(_conditions(c, o)) + "."


# --- the document -----------------------------------------------------------------------------

def _periods(c: Contract, history: History) -> list[Period]:
    return [parse_period(label, c.claims) for label in history.periods]


def _period(start, end) -> dict:
    return {"start_date": _v(start.isoformat()), "end_date": _v(end.isoformat())}


def project_document(c: Contract, history: History) -> dict:
    """The INDIGO project document of contract `c` and its issued claims `history`.

    Entries are in a fixed order: outcome metrics, pricings and results in the contract's
    outcome order (pricings by price date); commitments in the contract's funder order;
    outcome payments by claim period (in issue order), then outcome, then funder (contract
    orders). An outcome or funder found in the ledgers but no longer in the contract comes
    after the contract's, by id, so that every ledger line is counted. Money values are
    two-place `Decimal` pounds; render with `dumps`.
    """
    cur = c.currency
    lines = history.lines
    periods = _periods(c, history)
    outcome_ids = _ordered([o.id for o in c.outcomes], lines["outcome"])
    funder_ids = _ordered([f.id for f in c.funders], lines["funder"])
    org, provider = organisation_ids(c)

    metrics, pricings = [], []
    for o in c.outcomes:
        m = {"id": o.id, "definition": _v(o.name),
             "outcome_validation_method": _v(VALIDATION_METHOD)}
        if o.evidence:
            m["data_source_for_outcome_validation"] = _v(
                "Evidence accepted: " + ", ".join(o.evidence))
        metrics.append(m)
        for i, d in enumerate(sorted(o.prices)):
            pricings.append({"outcome_metric_id": _v(o.id), "currency": _v(cur),
                             "price_per_unit": {"amount": _v(o.prices[d])},
                             "price_description": _v(price_description(c, o, i))})

    paid = {k: int(v) for k, v in lines.groupby("funder")["amount"].sum().items()}
    funders = {f.id: f for f in c.funders}
    commitments = []
    for fid in funder_ids:  # a funder paid under an earlier contract version too
        f = funders.get(fid)
        item = {"organisation_id": _v(org.get(fid, fid)),
                "total_outcome_payments": _amount(cur, money.pounds(paid.get(fid, 0)))}
        if f is not None and f.kind in PUBLIC_KINDS:
            item["organisation_role_category"] = _v(PUBLIC_ROLE)
        if f is not None and f.cap is not None:
            item["maximum_potential_outcome_payment"] = _amount(cur, f.cap)
        commitments.append(item)

    # net amount per (claim, outcome, funder): payments less reversals
    net = lines.groupby(["period", "outcome", "funder"], sort=False)["amount"].sum()
    net = {k: int(v) for k, v in net.items() if int(v) != 0}
    payments = []
    for p in periods:
        for oid in outcome_ids:
            for fid in funder_ids:
                amount = net.get((p.label, oid, fid))
                if amount is None:
                    continue
                item = {"outcome_metric_id": _v(oid), "period": _period(p.start, p.end),
                        "payer_organisation_id": _v(org.get(fid, fid)),
                        "type": _v("Actual"), "money": _amount(cur, money.pounds(amount))}
                if provider is not None:
                    item["recipient_organisation_id"] = _v(provider)
                payments.append(item)

    results = []
    if periods:
        # milestones paid, net: those holding a payment not reversed since (a payment
        # always holds money: one left with nothing by caps writes no line, ledger.md)
        standing = standing_lines(lines)
        counts = {k: int(v) for k, v in
                  standing.groupby("outcome")["milestone_id"].nunique().items()}
        last = periods[-1]
        ended = c.term.claims_end is not None and last.next().start > c.term.claims_end
        for oid in outcome_ids:
            results.append({"outcome_metric_id": _v(oid), "result_level": _v("Outcome level"),
                            "result_type": _v("Final" if ended else "Interim"),
                            "period": _period(periods[0].start, last.end),
                            "number_with_positive_social_outcomes": _v(counts.get(oid, 0))})

    return {
        "name": _v(c.name),
        "dates": {"start_date_of_service_provision": _v(c.term.service_start.isoformat()),
                  "anticipated_end_date_of_service_provision":
                      _v(c.term.enrolment_end.isoformat())},
        "outcome_metrics": metrics,
        "outcome_pricings": pricings,
        "outcome_payment_commitments": commitments,
        "outcome_payments": payments,
        "results": results,
    }


# --- JSON text ---------------------------------------------------------------------------------

def _number(d: Decimal) -> str:
    if not d.is_finite():
        raise ValueError(f"{d} is not a finite amount")
    return f"{d:f}"  # the Decimal's own digits, never an exponent: 2600.00, -12.34


def _write(v, pad: str, out: list[str]) -> None:
    if isinstance(v, dict):
        if not v:
            out.append("{}")
            return
        inner = pad + "  "
        out.append("{\n")
        for i, k in enumerate(sorted(v)):
            if not isinstance(k, str):
                raise TypeError(f"key {k!r} is not text")
            out.append(",\n" if i else "")
            out.append(inner + json.dumps(k, ensure_ascii=False) + ": ")
            _write(v[k], inner, out)
        out.append("\n" + pad + "}")
    elif isinstance(v, (list, tuple)):
        if not v:
            out.append("[]")
            return
        inner = pad + "  "
        out.append("[\n")
        for i, x in enumerate(v):
            out.append(",\n" if i else "")
            out.append(inner)
            _write(x, inner, out)
        out.append("\n" + pad + "]")
    elif isinstance(v, Decimal):
        out.append(_number(v))
    elif isinstance(v, float):
        raise TypeError(f"{v!r} is a float; money and counts must be Decimal or int")
    elif v is None or isinstance(v, (str, int, bool)):
        out.append(json.dumps(v, ensure_ascii=False))
    else:
        raise TypeError(f"{type(v).__name__} cannot be written as JSON")


def dumps(doc: dict) -> str:
    """`doc` as JSON text: keys sorted, two-space indent, UTF-8 text, `\\n` at the end.

    The same layout as `json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False)`,
    except that a `Decimal` is written as the number it is (`2600.00`), not via a float.
    """
    out: list[str] = []
    _write(doc, "", out)
    return "".join(out) + "\n"
