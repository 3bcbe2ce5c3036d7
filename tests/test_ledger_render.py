"""ledger.csv / decisions.csv rendering (sib.ledger): the fast writer gives exactly the bytes
pandas' to_csv gave before (the reference below), for any text, including the characters
that need quoting, and for frames and engine columns alike."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from sib import ledger
from sib.ledger import DECISION_COLUMNS, render_decisions


def reference_csv(columns: dict[str, list]) -> str:
    """How sib wrote its CSV files before: pandas' to_csv of the text columns."""
    buf = io.StringIO()
    pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in columns.items()}).to_csv(
        buf, index=False, lineterminator="\n")
    return buf.getvalue()


text = st.text(alphabet=st.sampled_from(list('ab ,"\r\n\t;\'£é') + ["x"]), max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4).flatmap(lambda w: st.lists(
    st.lists(text, min_size=w, max_size=w), min_size=0, max_size=8)), st.integers(1, 4))
def test_csv_matches_pandas_for_any_text(rows: list[list[str]], width: int) -> None:
    width = len(rows[0]) if rows else width
    columns = {f"c{j}": [r[j] for r in rows] for j in range(width)}
    arrays = {k: np.array(v, dtype=object) for k, v in columns.items()}
    assert ledger._csv(arrays) == reference_csv(columns)


def test_fields_needing_quotes_are_quoted_once_per_value() -> None:
    cols = {"a": np.array(['x,y', 'say "hi"', "two\nlines", "cr\ronly", "plain", "x,y"],
                          dtype=object),
            "b": np.array(["", "", "", "", "", ""], dtype=object)}
    out = ledger._csv(cols)
    assert out == ('a,b\n"x,y",\n"say ""hi""",\n"two\nlines",\ncr\ronly,\nplain,\n'
                   '"x,y",\n')
    assert out == reference_csv({k: v.tolist() for k, v in cols.items()})


def test_decisions_render_the_same_from_a_frame_and_from_columns() -> None:
    frame = pd.DataFrame({
        "milestone_id": ["M1", "M2", "M3"], "participant_id": ["P1", "P1", None],
        "milestone": ["engage", "job_start", "engage"],
        "outcome": ["engagement", "job_start", ""], "decision": ["paid", "not-paid", "invalid"],
        "reason": ["", "cap-reached", "bad-row"], "detail": ["", 'cap "A", reached', "x\ny"],
        "amount": np.array([12345, 0, -5], dtype=np.int64),
        "capped": np.array([0, 99900, 0], dtype=np.int64)})
    want = ('milestone_id,participant_id,milestone,outcome,decision,reason,detail,amount,'
            'capped\n'
            'M1,P1,engage,engagement,paid,,,123.45,0.00\n'
            'M2,P1,job_start,job_start,not-paid,cap-reached,"cap ""A"", reached",0.00,999.00\n'
            'M3,,engage,,invalid,bad-row,"x\ny",-0.05,0.00\n')
    assert render_decisions(frame) == want
    assert render_decisions({c: frame[c].to_numpy() for c in DECISION_COLUMNS}) == want
