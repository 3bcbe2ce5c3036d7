"""The bid model as a workbook: `sib model --output model.xlsx`, as the bytes of an .xlsx file.

After model.py in the flow, before cli.py; with workbook.py, the only modules that import
openpyxl. `model_workbook(result)` lays out a `ModelResult`:

- Summary: what was modelled, total payments, the caps (chance reached, median period),
  the outcomes (expected count, amount, withheld by caps) and, with costs, the investor
  view and the break-even;
- By period: every payer (all funders, each kind, each funder) period by period: mean, P10
  and P90 of payments and of cumulative payments, and its cap;
- Charts: for each cap (the contract's and each funder's), cumulative payments — the mean
  line inside the shaded P10–P90 band — against the cap line; the figures they draw are
  on the Chart data sheet;
- Cash flow (with costs): delivery, mean payments and the net position with its band;
- Sensitivity (with costs or --vary): each milestone probability's effect on the net
  position, and the sweep.

Money cells hold exact Decimal pounds formatted `£#,##0.00` (each figure from integer
pence, never a float). The same result gives the same bytes: the document's times and the
zip entries' timestamps are a fixed date, never the clock. Must not read or write files,
print, or compute anything but differences of the figures it lays out.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from datetime import datetime
from decimal import Decimal

from openpyxl import Workbook
from openpyxl.chart import AreaChart, LineChart, Reference
from openpyxl.chart.legend import LegendEntry
from openpyxl.chart.shapes import GraphicalProperties
from openpyxl.drawing.line import LineProperties
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.pagebreak import Break
from openpyxl.worksheet.properties import PageSetupProperties

from sib import money
from sib.model import ModelResult, Series

MONEY = "£#,##0.00"
PERCENT = "0.0%"
STAMP = datetime(2000, 1, 1)   # the workbook's fixed date: the result has none of its own
BOLD = Font(bold=True)
HEAD_FILL = PatternFill("solid", fgColor="DDEBF7")
BAND = "9DC3E6"     # the P10–P90 band
MEAN = "1F4E79"     # the mean line
CAP = "C00000"      # the cap line


def _gbp(p: int | None) -> Decimal | None:
    return None if p is None else money.pounds(p)


def _header(ws, row: int, names: list[str]) -> None:
    for j, n in enumerate(names, start=1):
        cell = ws.cell(row, j, n)
        cell.font = BOLD
        cell.fill = HEAD_FILL
        cell.alignment = Alignment(vertical="top")


def _money_row(ws, row: int, col: int, values) -> None:
    for j, v in enumerate(values):
        cell = ws.cell(row, col + j, _gbp(v))
        cell.number_format = MONEY


def _widths(ws, widths: dict[str, int]) -> None:
    for letter, w in widths.items():
        ws.column_dimensions[letter].width = w


def _page(ws, title: str) -> None:
    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = "9"  # A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
    ws.oddFooter.left.text = title.replace("&", "&&")
    ws.oddFooter.left.size = 8
    ws.oddFooter.center.text = "Page &P of &N"
    ws.oddFooter.center.size = 8
    ws.oddFooter.right.text = "&A"
    ws.oddFooter.right.size = 8


def model_workbook(r: ModelResult) -> bytes:
    """The .xlsx bytes of a model result."""
    wb = Workbook()
    title = f"{r.contract_name} — bid model ({r.runs:,} runs, seed {r.seed})"
    props = wb.properties
    props.created = props.modified = STAMP
    props.creator = props.lastModifiedBy = "sib"
    props.title = title
    _summary(wb.active, r, title)
    _by_period(wb.create_sheet("By period"), r, title)
    charts = wb.create_sheet("Charts")
    data = wb.create_sheet("Chart data")
    _charts(charts, data, r, title)
    if r.costs is not None:
        _cash_flow(wb.create_sheet("Cash flow"), r, title)
    if r.costs is not None or r.sweep is not None:
        _sensitivity(wb.create_sheet("Sensitivity"), r, title)
    return _save(wb)


def _summary(ws, r: ModelResult, title: str) -> None:
    ws.title = "Summary"
    _page(ws, title)
    ws["A1"] = title
    ws["A1"].font = Font(bold=True, size=14)
    facts = [("Assumptions", r.assumptions), ("Contract", f"{r.contract_id} ({r.contract_shown})"),
             ("Simulated histories", r.runs), ("Seed", r.seed),
             ("Claim periods", f"{r.periods[0]} … {r.periods[-1]} ({len(r.periods)})"),
             ("Method", "each history claimed period by period through the claim engine of "
                        "`sib claim`; P10/P90 by nearest rank")]
    row = 3
    for k, v in facts:
        ws.cell(row, 1, k).font = BOLD
        ws.cell(row, 2, v)
        row += 1
    row += 1
    _header(ws, row, ["Payments over the contract", "Mean", "P10", "P90", "Cap"])
    row += 1
    for s in r.series:
        if s.key == "total" or s.key.startswith("kind:"):
            e = s.cumulative[-1]
            ws.cell(row, 1, s.label if s.key == "total" else f"  {s.label}")
            _money_row(ws, row, 2, [e.mean, e.p10, e.p90, s.cap])
            row += 1
    row += 1
    _header(ws, row, ["Cap", "Amount", "Chance reached", "Median period reached",
                      "Paid at the end: mean", "P10", "P90"])
    row += 1
    for c in r.caps:
        ws.cell(row, 1, c.label)
        _money_row(ws, row, 2, [c.cap])
        ws.cell(row, 3, c.probability).number_format = PERCENT
        ws.cell(row, 4, c.median_period or "not reached")
        _money_row(ws, row, 5, [c.final.mean, c.final.p10, c.final.p90])
        row += 1
    row += 1
    _header(ws, row, ["Outcome", "Expected count paid", "Count P10", "Count P90",
                      "Amount: mean", "P10", "P90", "Withheld by caps: mean"])
    row += 1
    for o in r.outcomes:
        ws.cell(row, 1, o.outcome)
        ws.cell(row, 2, o.count).number_format = "#,##0.0"
        ws.cell(row, 3, o.count_p10)
        ws.cell(row, 4, o.count_p90)
        _money_row(ws, row, 5, [o.amount.mean, o.amount.p10, o.amount.p90, o.withheld.mean])
        row += 1
    if r.costs is not None:
        k = r.costs
        row += 1
        _header(ws, row, ["Investor view", "Mean", "P10", "P90"])
        row += 1
        ws.cell(row, 1, "Investment drawn at service start")
        _money_row(ws, row, 2, [k.investment])
        row += 1
        ws.cell(row, 1, "Delivery cost over the contract")
        _money_row(ws, row, 2, [sum(k.delivery)])
        row += 1
        ws.cell(row, 1, "Net position at the end")
        _money_row(ws, row, 2, [k.final_net.mean, k.final_net.p10, k.final_net.p90])
        row += 1
        ws.cell(row, 1, "Money multiple")
        for j, v in enumerate((k.multiple.mean, k.multiple.p10, k.multiple.p90)):
            ws.cell(row, 2 + j, v).number_format = "0.00"
        row += 1
        ws.cell(row, 1, "IRR (a year)")
        for j, v in enumerate((k.irr.mean, k.irr.p10, k.irr.p90)):
            ws.cell(row, 2 + j, v if v != float("inf") else None).number_format = PERCENT
        row += 1
        ws.cell(row, 1, "Chance of needing more than the investment")
        ws.cell(row, 2, k.extra_draw_probability).number_format = PERCENT
        row += 1
        b = k.breakeven
        if b:
            ws.cell(row, 1, f"Break-even {b['milestone']} probability")
            ws.cell(row, 2, b["breakeven"] if b["breakeven"] is not None else b["note"])
            if b["breakeven"] is not None:
                ws.cell(row, 2).number_format = "0.000"
            ws.cell(row, 3, f"assumed {b['probability']:.3f}; the most sensitive; mean of "
                            f"{b['runs']} runs")
            row += 1
    _widths(ws, {"A": 46, "B": 18, "C": 16, "D": 22, "E": 22, "F": 16, "G": 16, "H": 22})


def _by_period(ws, r: ModelResult, title: str) -> None:
    _page(ws, title)
    _header(ws, 1, ["Period", "Payer", "Name", "Payments: mean", "P10", "P90",
                    "Cumulative: mean", "P10", "P90", "Cap"])
    row = 2
    for s in r.series:
        for p, a, c in zip(r.periods, s.payments, s.cumulative):
            ws.cell(row, 1, p)
            ws.cell(row, 2, s.key)
            ws.cell(row, 3, s.label)
            _money_row(ws, row, 4, [a.mean, a.p10, a.p90, c.mean, c.p10, c.p90, s.cap])
            row += 1
    ws.freeze_panes = "D2"
    ws.auto_filter.ref = f"A1:J{row - 1}"
    ws.print_title_rows = "1:1"
    _widths(ws, {"A": 10, "B": 30, "C": 40, **{get_column_letter(j): 16 for j in range(4, 11)}})


def _band_chart(data, first_row: int, n: int, title: str, y_title: str, with_cap: bool):
    """A stacked area (P10 invisible, then P90 − P10 shaded) with the mean (and cap) lines,
    from a block of Chart data: period, P10, P10–P90, mean, cap."""
    area = AreaChart()
    area.grouping = "stacked"
    area.title = title
    area.y_axis.title = y_title
    area.y_axis.number_format = '£#,##0'
    area.y_axis.majorGridlines = None
    area.x_axis.number_format = "@"
    area.legend.position = "b"
    cats = Reference(data, min_col=1, min_row=first_row + 1, max_row=first_row + n)
    area.add_data(Reference(data, min_col=2, max_col=3, min_row=first_row,
                            max_row=first_row + n), titles_from_data=True)
    area.set_categories(cats)
    low, band = area.series
    low.graphicalProperties = GraphicalProperties(noFill=True)
    low.graphicalProperties.line = LineProperties(noFill=True)
    band.graphicalProperties = GraphicalProperties(solidFill=BAND)
    band.graphicalProperties.line = LineProperties(noFill=True)
    line = LineChart()
    line.add_data(Reference(data, min_col=4, max_col=5 if with_cap else 4, min_row=first_row,
                            max_row=first_row + n), titles_from_data=True)
    line.set_categories(cats)
    colours = [MEAN, CAP]
    for s, colour in zip(line.series, colours):
        s.graphicalProperties = GraphicalProperties()
        s.graphicalProperties.line = LineProperties(solidFill=colour, w=22000)
        s.smooth = False
        s.marker.symbol = "none"
    if with_cap:
        line.series[1].graphicalProperties.line.prstDash = "dash"
    area += line
    area.legend.legendEntry = [LegendEntry(idx=0, delete=True)]  # the invisible P10 base
    area.width, area.height = 16, 8
    # Excel and LibreOffice both draw the axis at the bottom and the band behind the lines
    area.x_axis.delete = False
    area.y_axis.delete = False
    return area


def _charts(ws, data, r: ModelResult, title: str) -> None:
    _page(ws, title)
    _page(data, title)
    ws["A1"] = ("Cumulative payments: the mean (line) inside the P10–P90 band (shaded), "
                "against the cap (dashed), per claim period")
    ws["A1"].font = BOLD
    row = 1
    blocks: list[tuple[Series, int]] = []
    for s in r.series:
        if s.cap is None or not (s.key == "total" or s.key.startswith("funder:")):
            continue
        name = "Contract cap: all funders" if s.key == "total" else s.label
        data.cell(row, 1, name).font = BOLD
        row += 1
        _header(data, row, ["Period", "P10", "P10–P90", "Mean", "Cap", "P90"])
        blocks.append((s, row))
        for k, (p, c) in enumerate(zip(r.periods, s.cumulative)):
            rr = row + 1 + k
            data.cell(rr, 1, p)
            _money_row(data, rr, 2, [c.p10, c.p90 - c.p10, c.mean, s.cap, c.p90])
        row += len(r.periods) + 2
    _widths(data, {"A": 34, "B": 16, "C": 16, "D": 16, "E": 16, "F": 16})
    for k, (s, head) in enumerate(blocks):
        name = "All funders against the contract cap" if s.key == "total" else s.label
        chart = _band_chart(data, head, len(r.periods), name, "cumulative", True)
        anchor_row = 3 + (k // 2) * 17
        anchor_col = "A" if k % 2 == 0 else "K"
        ws.add_chart(chart, f"{anchor_col}{anchor_row}")
        if k % 4 == 0 and k:  # two rows of charts a page: none cut by a page break
            ws.row_breaks.append(Break(id=anchor_row - 1))


def _cash_flow(ws, r: ModelResult, title: str) -> None:
    _page(ws, title)
    k = r.costs
    total = r.series_by_key("total")
    _header(ws, 1, ["Period", "Delivery cost", "Outcome payments: mean", "Net position: P10",
                    "P10–P90", "Net position: mean", "P90"])
    for t, (p, d, pay, n) in enumerate(zip(r.periods, k.delivery, total.payments, k.net)):
        ws.cell(t + 2, 1, p)
        _money_row(ws, t + 2, 2, [d, pay.mean, n.p10, n.p90 - n.p10, n.mean, n.p90])
    ws.freeze_panes = "B2"
    _widths(ws, {"A": 10, **{get_column_letter(j): 18 for j in range(2, 8)}})
    # the chart reads columns D (P10), E (band) and F (mean): same layout as a Chart data block
    area = AreaChart()
    area.grouping = "stacked"
    area.title = "Net position (outcome payments − delivery so far)"
    area.y_axis.number_format = '£#,##0'
    area.y_axis.majorGridlines = None
    area.legend.position = "b"
    n = len(r.periods)
    cats = Reference(ws, min_col=1, min_row=2, max_row=n + 1)
    area.add_data(Reference(ws, min_col=4, max_col=5, min_row=1, max_row=n + 1),
                  titles_from_data=True)
    area.set_categories(cats)
    low, band = area.series
    low.graphicalProperties = GraphicalProperties(noFill=True)
    low.graphicalProperties.line = LineProperties(noFill=True)
    band.graphicalProperties = GraphicalProperties(solidFill=BAND)
    band.graphicalProperties.line = LineProperties(noFill=True)
    line = LineChart()
    line.add_data(Reference(ws, min_col=6, max_col=6, min_row=1, max_row=n + 1),
                  titles_from_data=True)
    line.set_categories(cats)
    s = line.series[0]
    s.graphicalProperties = GraphicalProperties()
    s.graphicalProperties.line = LineProperties(solidFill=MEAN, w=22000)
    s.marker.symbol = "none"
    s.smooth = False
    area += line
    area.legend.legendEntry = [LegendEntry(idx=0, delete=True)]
    area.width, area.height = 20, 9
    area.x_axis.delete = False
    area.y_axis.delete = False
    ws.add_chart(area, f"A{n + 4}")


def _sensitivity(ws, r: ModelResult, title: str) -> None:
    _page(ws, title)
    row = 1
    if r.costs is not None:
        k = r.costs
        _header(ws, row, ["Milestone", "Probability", "Lowered ×0.9",
                          "Net position at the end: mean", "… with the lowered probability",
                          "Change"])
        row += 1
        for s in k.sensitivities:
            ws.cell(row, 1, s.milestone)
            ws.cell(row, 2, s.probability).number_format = "0.000"
            ws.cell(row, 3, s.lowered).number_format = "0.000"
            _money_row(ws, row, 4, [s.net, s.net_lowered, s.net_lowered - s.net])
            row += 1
        runs = k.breakeven["runs"] if k.breakeven else 0
        ws.cell(row, 1, f"(each on the first {runs} runs, with their seeds)")
        row += 2
    if r.sweep is not None:
        ws.cell(row, 1, f"Sweep of {r.sweep.name} ({r.runs:,} runs each)").font = BOLD
        row += 1
        kinds = list(r.sweep.rows[0].by_kind) if r.sweep.rows else []
        names = ["Value", "Total: mean", "P10", "P90"] + [f"{k_}: mean" for k_ in kinds] + [
            "Contract cap reached"]
        if r.costs is not None:
            names += ["Net position: mean", "P10", "P90", "Multiple: mean", "IRR: mean"]
        _header(ws, row, names)
        row += 1
        for sr in r.sweep.rows:
            ws.cell(row, 1, sr.value).number_format = "0.000"
            _money_row(ws, row, 2, [sr.total.mean, sr.total.p10, sr.total.p90]
                       + [sr.by_kind[k_] for k_ in kinds])
            col = 5 + len(kinds)
            ws.cell(row, col, sr.contract_cap_probability).number_format = PERCENT
            if sr.net is not None:
                _money_row(ws, row, col + 1, [sr.net.mean, sr.net.p10, sr.net.p90])
                ws.cell(row, col + 4, sr.multiple.mean).number_format = "0.00"
                irr = sr.irr.mean if sr.irr.mean != float("inf") else None
                ws.cell(row, col + 5, irr).number_format = PERCENT
            row += 1
    _widths(ws, {"A": 24, **{get_column_letter(j): 18 for j in range(2, 16)}})


def _save(wb: Workbook) -> bytes:
    raw = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from openpyxl.writer.excel import ExcelWriter
        archive = zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
        ExcelWriter(wb, archive).save()  # unlike wb.save, keeps properties.modified
    out = io.BytesIO()
    stamp = (STAMP.year, STAMP.month, STAMP.day, 0, 0, 0)
    with zipfile.ZipFile(io.BytesIO(raw.getvalue())) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            z = zipfile.ZipInfo(info.filename, date_time=stamp)
            z.compress_type = zipfile.ZIP_DEFLATED
            z.create_system = 0
            z.external_attr = 0
            dst.writestr(z, src.read(info.filename))
    return out.getvalue()
