"""What `sib claim` shows: the summary text and the `--json` document of a claim.

After issue.py, before cli.py in the flow. Turns a prepared claim into text for people and
a JSON-ready dict for scripts; money as `£1,234.50` in text and as two-decimal strings in
JSON (never a float). Must not compute money, read files or print.
"""

from __future__ import annotations

from sib import money
from sib.issue import Issued, Prepared
from sib.ledger import DECISION_COLUMNS, LEDGER_COLUMNS
from sib.evidence import days_text
from sib.reconcile import DECISIONS, totals

_KIND_ORDER = ("central", "local-authority", "health", "dwp", "other")


def reconciliation(counts: dict[str, int], rows_in: int) -> str:
    corrected = counts["reversed"] + counts["re-rated"]
    return (f"{rows_in} rows in = {counts['paid']} paid now + {counts['paid-earlier']} paid "
            f"earlier + {corrected} corrected + {counts['pending-verification']} pending + "
            f"{counts['rejected']} rejected")


def claim_summary(prep: Prepared, done: Issued) -> str:
    c = prep.lc.contract
    claim = prep.claim
    lines = claim.lines
    t = totals(lines, c)
    head = {"issued": "issued", "unchanged": "already issued, unchanged",
            "dry-run": "dry run, nothing written"}[done.outcome]
    out = [f"{c.name} — claim {claim.number}, {claim.period} "
           f"({claim.period.start.isoformat()} to {claim.period.end.isoformat()}): {head}", ""]
    pay = int(lines.loc[lines["kind"] == "payment", "amount"].sum())
    rev = int(lines.loc[lines["kind"] == "reversal", "amount"].sum())
    out.append(f"Total claimed  {money.fmt_gbp(t['amount'])}   (payments {money.fmt_gbp(pay)}, "
               f"reversals {money.fmt_gbp(rev)})")
    if t["capped"]:
        by_cap = lines.groupby("cap")["capped"].sum()
        parts = ", ".join(f"{k} {money.fmt_gbp(int(v))}" for k, v in by_cap.items() if k)
        out.append(f"Withheld by caps  {money.fmt_gbp(t['capped'])}   ({parts})")
    out += ["", "By funder kind"]
    for k in _KIND_ORDER:
        if k in t["by_kind"]:
            out.append(f"  {k:<18}{money.fmt_gbp(t['by_kind'][k]):>14}")
    out += ["", "By funder                                   this claim    paid to date   of cap"]
    to_date = prep.cumulative_by_funder
    for f in c.funders:
        if f.id not in t["by_funder"] and f.id not in to_date:
            continue
        cum = to_date.get(f.id, 0)
        cap = f"{money.fmt_gbp(money.pence(f.cap))} ({100 * cum / money.pence(f.cap):.1f}%)" \
            if f.cap is not None and money.pence(f.cap) else "no cap"
        out.append(f"  {f.id:<40}{money.fmt_gbp(t['by_funder'].get(f.id, 0)):>12}"
                   f"{money.fmt_gbp(cum):>16}   {cap}")
    counts = claim.counts()
    out += ["", "Decisions  " + " · ".join(f"{d} {counts[d]}" for d in DECISIONS)]
    late = lines.loc[lines["late"] & (lines["kind"] == "payment"), "milestone_id"].nunique()
    if late:
        out.append(f"Late       {late} milestone(s) achieved before {claim.period} paid for the "
                   "first time now")
    out.append(f"Reconciliation  {reconciliation(counts, claim.rows_in)}")
    if done.outcome == "issued":
        books = sum(1 for name in prep.files if name.startswith("statements/"))
        out += ["", f"Wrote {done.folder}/  (ledger.csv: {len(lines)} lines; decisions.csv: "
                f"{len(claim.decisions)} rows; claim.xlsx; {books} statement"
                f"{'s' if books != 1 else ''}; inputs/; manifest.json)"]
    elif done.outcome == "unchanged":
        out += ["", f"{claim.period} already issued, unchanged: {done.folder}/ recomputes byte "
                "for byte"]
    else:
        out += ["", f"Would write {done.folder}/ — run again without --dry-run to issue it"]
    return "\n".join(out)


def claim_json(prep: Prepared, done: Issued) -> dict:
    """The claim as data: manifest-like header, counts, and every line and decision."""
    claim = prep.claim
    lines = claim.lines
    dec = claim.decisions

    def rows(frame, columns, money_cols, day_cols):
        cols = {}
        for col in columns:
            if col in money_cols:
                cols[col] = [money.fmt_amount(v) for v in frame[col].tolist()]
            elif col in day_cols:
                cols[col] = list(days_text(frame[col].to_numpy()))
            elif col == "share":
                cols[col] = [money.fmt_share(v) for v in frame[col].tolist()]
            elif col == "late":
                cols[col] = [bool(v) for v in frame[col].tolist()]
            else:
                cols[col] = [str(v) for v in frame[col].tolist()]
        return [dict(zip(columns, vals)) for vals in zip(*(cols[c] for c in columns))]

    m = dict(prep.manifest)
    m.pop("issued_at", None)
    return {
        "outcome": done.outcome,
        "folder": done.folder,
        "claim": m,
        "reconciliation": reconciliation(claim.counts(), claim.rows_in),
        "lines": rows(lines, LEDGER_COLUMNS, ("price", "amount", "capped"),
                      ("achieved_on", "verified_on", "price_from")),
        "decisions": rows(dec, DECISION_COLUMNS, ("amount", "capped"), ()),
    }
