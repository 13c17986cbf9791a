"""A replay's report as bytes: deterministic JSON, and one self-contained HTML page."""
from __future__ import annotations

import math
from datetime import datetime
from html import escape
from typing import Any

import msgspec


def to_json(report: dict[str, Any]) -> bytes:
    """Sorted keys, no run-time facts: two replays of one window give the same bytes."""
    return msgspec.json.format(msgspec.json.encode(report, order="sorted"), indent=2) + b"\n"


# --- the HTML page ------------------------------------------------------------------------
#
# One file that opens anywhere, offline: styles inline, plots drawn here as inline SVG, no
# script at all. The Content-Security-Policy tells the browser to fetch nothing, so a
# reference that slipped in would show as broken rather than quietly go to the network.
# Every figure is formatted with fixed precision and every mapping walked in sorted order,
# so one report always gives the same bytes.

# Timeline columns (see report.Comparison.tier_report).
_MINUTE, _DEMAND, _POOL, _OVER, _MOVES, _CLASS = range(6)

_DEMAND_COLOUR = "#c0392b"
_POOL_COLOUR = "#2471a3"
_OVER_COLOUR = "#f5b7b1"
_MOVES_COLOUR = "#e67e22"
_CLASS_COLOUR = "#7d3c98"

# Plot geometry, in SVG user units (the SVG scales to its box).
_W, _H = 460, 230
_LEFT, _RIGHT, _TOP, _BOTTOM = 46, 12, 30, 38
_MARKERS_UP_TO = 90            # past this many minutes, markers only clutter the line

_STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       margin: 0 auto; max-width: 1180px; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 0 0 8px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ccc; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; }
dl.facts dt { color: #555; }
dl.facts dd { margin: 0; }
.totals { display: flex; gap: 12px; margin: 12px 0 0; flex-wrap: wrap; }
.total { border: 1px solid #ccc; border-radius: 4px; padding: 6px 12px; min-width: 120px; }
.total b { display: block; font-size: 20px; }
.total.bad { border-color: #c0392b; background: #fdedec; }
.tiers { display: flex; flex-wrap: wrap; gap: 16px; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f6f7; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.up { color: #a04000; }
td.down { color: #1e8449; }
.pair { display: flex; flex-wrap: wrap; gap: 12px; }
.pair figure { margin: 0; flex: 1 1 420px; max-width: 560px; }
.pair figcaption { font-weight: 600; margin-bottom: 2px; }
svg.plot { width: 100%; height: auto; background: #fff; border: 1px solid #e5e5e5; }
svg.plot text { font: 11px system-ui, sans-serif; fill: #444; }
svg.plot .grid { stroke: #eee; }
svg.plot .axis { stroke: #888; }
svg.plot .note { font-style: italic; fill: #888; }
table.examples { width: 100%; table-layout: fixed; }
table.examples td { word-wrap: break-word; overflow-wrap: anywhere; }
tr.unexplained td { background: #fdedec; }
tr.unexplained td:first-child { border-left: 4px solid #c0392b; }
.badge { display: inline-block; font-size: 11px; font-weight: 700; padding: 0 6px;
         border-radius: 3px; color: #fff; background: #c0392b; }
.badge.ok { background: #7f8c8d; }
.muted { color: #777; }
"""


def html_page(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page: header, per-tier tables, plots of demand
    against pool cores and of decision changes with the two policies beside each other, and
    the differences with their examples. Same report, same bytes."""
    names = _side_names(report)
    sides = report.get("sides") or {}
    tiers = sorted({t for s in sides.values() for t in (s.get("tiers") or {})}
                   | set(report.get("differences") or {}))
    span = _span_minutes(report)
    title = f"corelane replay: {report.get('host', '?')}, {report.get('from', '?')} to " \
            f"{report.get('to', '?')}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        _header(report, names, span),
        _summary(report, names, tiers),
        _plots(report, names, tiers, span, "demand"),
        _plots(report, names, tiers, span, "changes"),
        _differences(report, names, tiers),
        "</body>",
        "</html>",
    ]
    # Character references for anything past ASCII: the page reads the same whatever
    # encoding the file is written in.
    return "\n".join(parts).encode("ascii", "xmlcharrefreplace").decode("ascii") + "\n"


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _num(x: Any, digits: int = 3) -> str:
    """A figure for a table: integers as integers, others without trailing zeros."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return _e("" if x is None else x)
    if isinstance(x, int) or float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.{digits}f}".rstrip("0").rstrip(".")


def _side_names(report: dict[str, Any]) -> list[str]:
    """Base first, then the other; whatever else the report holds after them."""
    sides = report.get("sides") or {}
    names = [n for n in (report.get("base"), report.get("other")) if isinstance(n, str)]
    names = list(dict.fromkeys(names))
    return names + sorted(n for n in sides if n not in names)


def _span_minutes(report: dict[str, Any]) -> int:
    """The window's length in whole minutes, and never shorter than its timelines."""
    span = 0
    try:
        t0 = datetime.fromisoformat(str(report["from"]).replace("Z", "+00:00"))
        t1 = datetime.fromisoformat(str(report["to"]).replace("Z", "+00:00"))
        span = math.ceil((t1 - t0).total_seconds() / 60)
    except (KeyError, ValueError, TypeError):
        pass
    for side in (report.get("sides") or {}).values():
        for figures in (side.get("tiers") or {}).values():
            for row in figures.get("timeline") or ():
                span = max(span, int(row[_MINUTE]) + 1)
    return max(span, 1)


def _tier_figures(report: dict[str, Any], side: str, tier: str) -> dict[str, Any] | None:
    return ((report.get("sides") or {}).get(side) or {}).get("tiers", {}).get(tier)


# --- header and tables --------------------------------------------------------------------

def _header(report: dict[str, Any], names: list[str], span: int) -> str:
    facts = [
        ("host", report.get("host", "?")),
        ("window", f"{report.get('from', '?')} to {report.get('to', '?')} ({span} min)"),
        ("compared", report.get("compared", " against ".join(names))),
        ("configuration", report.get("configuration", "")),
        ("model", report.get("model", "")
         + (" (fresh: learns as it goes)" if report.get("fresh_model") else "")),
        ("sweeps", f"{_num(report.get('sweeps', 0))} sweeps, "
                   f"{_num(report.get('samples', 0))} process samples"),
        ("tolerance", f"runs of disagreement up to {_num(report.get('tolerance_s', 0))} s "
                      "count as timing only"),
    ]
    for side in names:
        s = (report.get("sides") or {}).get(side) or {}
        facts.append((f"side {side}", f"mode {s.get('mode', '?')}, {_num(s.get('plans', 0))} "
                      f"plans, {_num(s.get('moves', 0))} moves "
                      f"({_num(s.get('moves_per_minute', 0))}/min)"))
    gaps = report.get("gaps") or []
    facts.append(("gaps", "none" if not gaps else
                  "; ".join(f"{a} to {b}" for a, b in gaps)))
    timing = report.get("timing_only") or {}
    timing_total = sum(v for v in timing.values() if isinstance(v, (int, float)))
    timing_note = ", ".join(f"{_num(v)} {k}" for k, v in sorted(timing.items())) or "none"
    unexplained = report.get("unexplained", 0)
    totals = [
        ("differences", report.get("difference_count", 0), ""),
        ("unexplained", unexplained, " bad" if unexplained else ""),
        ("timing only", timing_total, ""),
    ]
    out = [f"<header><h1>Replay of {_e(report.get('host', '?'))}</h1>",
           '<dl class="facts">']
    out += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts]
    out.append("</dl>")
    out.append('<div class="totals">')
    out += [f'<div class="total{cls}" data-total="{_e(k)}"><b>{_num(v)}</b>{_e(k)}</div>'
            for k, v, cls in totals]
    out.append(f'<div class="total muted">timing only: {_e(timing_note)}</div>')
    out.append("</div></header>")
    return "\n".join(out)


_SUMMARY_ROWS = [
    ("processes", "processes"),
    ("containers", "containers"),
    ("class_changes", "class changes"),
    ("moves", "moves"),
    ("moves_per_minute", "moves per minute"),
    ("demand_cores_avg", "demand, cores (avg)"),
    ("pool_cores_avg", "pool, cores (avg)"),
    ("overcommitted_s", "overcommitted, s"),
    ("run_delay_ms_s", "run-queue delay, ms/s"),
]


def _summary(report: dict[str, Any], names: list[str], tiers: list[str]) -> str:
    out = ['<section id="summary"><h2>Per tier</h2>']
    if not tiers:
        out.append('<p class="muted">No tier had members in this window.</p></section>')
        return "\n".join(out)
    out.append('<div class="tiers">')
    two = len(names) == 2
    for tier in tiers:
        figs = [_tier_figures(report, side, tier) for side in names]
        head = "".join(f"<th>{_e(n)}</th>" for n in names) + ("<th>change</th>" if two else "")
        rows = []
        for key, label in _SUMMARY_ROWS:
            cells = [f'<td class="num">{_num(f.get(key)) if f else "&ndash;"}</td>'
                     for f in figs]
            if two:
                cells.append(_change_cell(figs[0], figs[1], key))
            rows.append(f"<tr><th>{_e(label)}</th>{''.join(cells)}</tr>")
        out.append(f'<table class="summary" data-tier="{_e(tier)}"><caption><h3>'
                   f'{_e(tier)}</h3></caption><tr><th></th>{head}</tr>{"".join(rows)}'
                   "</table>")
    out.append("</div></section>")
    return "\n".join(out)


def _change_cell(base: dict[str, Any] | None, other: dict[str, Any] | None, key: str) -> str:
    a = base.get(key) if base else None
    b = other.get(key) if other else None
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return '<td class="num muted">&ndash;</td>'
    d = round(b - a, 3) + 0.0
    if d == 0:
        return '<td class="num muted">0</td>'
    sign = "+" if d > 0 else "&minus;"
    return f'<td class="num {"up" if d > 0 else "down"}">{sign}{_num(abs(d))}</td>'


# --- plots --------------------------------------------------------------------------------

def _nice_step(top: float, ticks: int = 5) -> float:
    """A 1-2-5 step that splits 0..top into about `ticks` parts."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _f(x: float) -> str:
    return f"{x:.1f}"


class _Frame:
    """Scales and axes of one plot: x in minutes from the window's start, y from zero."""

    def __init__(self, span: int, y_top: float, integral: bool) -> None:
        self.span = span
        y_top *= 1.05                   # headroom: the highest point clear of the frame
        step = _nice_step(y_top)
        if integral:
            step = max(1.0, math.ceil(step))
        self.y_step = step
        self.y_max = max(step, math.ceil(y_top / step - 1e-9) * step)
        self.x_step = max(1, int(_nice_step(span, 6)))
        self.pw = _W - _LEFT - _RIGHT
        self.ph = _H - _TOP - _BOTTOM

    def x(self, minute: float) -> float:
        return _LEFT + self.pw * minute / self.span

    def y(self, value: float) -> float:
        return _TOP + self.ph * (1 - min(value, self.y_max) / self.y_max)

    def axes(self, y_label: str) -> list[str]:
        out = []
        n = int(round(self.y_max / self.y_step))
        for i in range(n + 1):
            v = i * self.y_step
            y = _f(self.y(v))
            out.append(f'<line class="grid" x1="{_LEFT}" y1="{y}" x2="{_W - _RIGHT}" '
                       f'y2="{y}"/>')
            out.append(f'<text x="{_LEFT - 5}" y="{y}" text-anchor="end" '
                       f'dominant-baseline="middle">{_num(round(v, 6))}</text>')
        base = _f(self.y(0))
        for m in range(0, self.span + 1, self.x_step):
            x = _f(self.x(m))
            out.append(f'<line class="axis" x1="{x}" y1="{base}" x2="{x}" '
                       f'y2="{_f(self.y(0) + 4)}"/>')
            out.append(f'<text x="{x}" y="{_f(self.y(0) + 15)}" '
                       f'text-anchor="middle">{m}</text>')
        out.append(f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{base}"/>')
        out.append(f'<line class="axis" x1="{_LEFT}" y1="{base}" x2="{_W - _RIGHT}" '
                   f'y2="{base}"/>')
        out.append(f'<text x="{_LEFT + self.pw / 2:.1f}" y="{_H - 4}" '
                   'text-anchor="middle">minutes from window start</text>')
        out.append(f'<text x="11" y="{_TOP + self.ph / 2:.1f}" text-anchor="middle" '
                   f'transform="rotate(-90 11 {_TOP + self.ph / 2:.1f})">{_e(y_label)}</text>')
        return out


def _legend(items: list[tuple[str, str, str]]) -> list[str]:
    """Swatches along the top: (colour, shape, label), shape "line", "dash" or "box"."""
    out, x = [], _LEFT
    for colour, shape, label in items:
        if shape == "box":
            out.append(f'<rect x="{_f(x)}" y="8" width="14" height="10" fill="{colour}"/>')
        else:
            dash = ' stroke-dasharray="5 3"' if shape == "dash" else ""
            out.append(f'<line x1="{_f(x)}" y1="13" x2="{_f(x + 14)}" y2="13" '
                       f'stroke="{colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{_f(x + 18)}" y="13" dominant-baseline="middle">'
                   f'{_e(label)}</text>')
        x += 34 + 6.2 * len(label)
    return out


def _runs(rows: list[list[Any]]) -> list[list[list[Any]]]:
    """Consecutive minutes together: a minute without data breaks the line, not bridges it."""
    runs: list[list[list[Any]]] = []
    for row in rows:
        if runs and int(row[_MINUTE]) == int(runs[-1][-1][_MINUTE]) + 1:
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


def _line(frame: _Frame, rows: list[list[Any]], col: int, colour: str, series: str,
          dash: bool = False) -> list[str]:
    out = []
    extra = ' stroke-dasharray="5 3"' if dash else ""
    for run in _runs(rows):
        # A minute's figures are its averages: drawn at the minute's middle.
        pts = " ".join(f"{_f(frame.x(r[_MINUTE] + 0.5))},{_f(frame.y(r[col]))}" for r in run)
        out.append(f'<polyline class="series {series}" points="{pts}" fill="none" '
                   f'stroke="{colour}" stroke-width="2"{extra}/>')
    if len(rows) <= _MARKERS_UP_TO:
        out += [f'<circle class="point {series}" cx="{_f(frame.x(r[_MINUTE] + 0.5))}" '
                f'cy="{_f(frame.y(r[col]))}" r="2.2" fill="{colour}"/>' for r in rows]
    return out


def _svg(kind: str, tier: str, side: str, body: list[str], label: str) -> str:
    return (f'<svg class="plot {kind}" data-tier="{_e(tier)}" data-side="{_e(side)}" '
            f'xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" '
            f'role="img" aria-label="{_e(label)}"><title>{_e(label)}</title>'
            + "".join(body) + "</svg>")


def _note(text: str) -> str:
    return (f'<text class="note" x="{_LEFT + (_W - _LEFT - _RIGHT) / 2:.1f}" '
            f'y="{_TOP + (_H - _TOP - _BOTTOM) / 2:.1f}" text-anchor="middle">'
            f'{_e(text)}</text>')


def _timeline(report: dict[str, Any], side: str, tier: str) -> list[list[Any]]:
    figures = _tier_figures(report, side, tier)
    rows = (figures or {}).get("timeline") or []
    return sorted((r for r in rows if len(r) >= 6), key=lambda r: r[_MINUTE])


def _demand_plot(report: dict[str, Any], side: str, tier: str, span: int,
                 y_top: float) -> str:
    rows = _timeline(report, side, tier)
    frame = _Frame(span, y_top, integral=False)
    body: list[str] = []
    # Minutes in which demand was above the pool, shaded behind the lines.
    for r in rows:
        if r[_OVER] > 0:
            body.append(f'<rect class="overcommitted" x="{_f(frame.x(r[_MINUTE]))}" '
                        f'y="{_TOP}" width="{_f(frame.pw / span)}" height="{_f(frame.ph)}" '
                        f'fill="{_OVER_COLOUR}" fill-opacity="0.6"><title>minute '
                        f'{int(r[_MINUTE])}: {_num(r[_OVER])} s overcommitted</title></rect>')
    body += frame.axes("cores")
    if rows:
        body += _line(frame, rows, _POOL, _POOL_COLOUR, "pool", dash=True)
        body += _line(frame, rows, _DEMAND, _DEMAND_COLOUR, "demand")
    else:
        body.append(_note(_missing(report, side, tier)))
    body += _legend([(_DEMAND_COLOUR, "line", "demand"), (_POOL_COLOUR, "dash", "pool cores"),
                     (_OVER_COLOUR, "box", "overcommitted")])
    return _svg("demand", tier, side, body, f"{tier}: demand against pool cores, {side}")


def _changes_plot(report: dict[str, Any], side: str, tier: str, span: int,
                  y_top: float) -> str:
    rows = _timeline(report, side, tier)
    frame = _Frame(span, y_top, integral=True)
    body = frame.axes("per minute")
    # Two bars a minute, side by side: moves, then class changes.
    width = frame.pw / span
    bar = width * 0.4
    drawn = 0
    for r in rows:
        x0 = frame.x(r[_MINUTE]) + width * 0.1
        for offset, col, colour, series, label in (
                (0.0, _MOVES, _MOVES_COLOUR, "moves", "moves"),
                (bar, _CLASS, _CLASS_COLOUR, "class-changes", "class changes")):
            value = r[col]
            if value <= 0:
                continue
            drawn += 1
            top = frame.y(value)
            body.append(f'<rect class="bar {series}" x="{_f(x0 + offset)}" y="{_f(top)}" '
                        f'width="{_f(bar)}" height="{_f(frame.y(0) - top)}" fill="{colour}">'
                        f'<title>minute {int(r[_MINUTE])}: {_num(value)} {label}</title>'
                        '</rect>')
    if not rows:
        body.append(_note(_missing(report, side, tier)))
    elif not drawn:
        body.append(_note("no moves or class changes"))
    body += _legend([(_MOVES_COLOUR, "box", "moves"), (_CLASS_COLOUR, "box", "class changes")])
    return _svg("changes", tier, side, body, f"{tier}: moves and class changes, {side}")


def _missing(report: dict[str, Any], side: str, tier: str) -> str:
    if _tier_figures(report, side, tier) is None:
        return f"no members in this tier under {side}"
    return "no samples in this window"


def _plots(report: dict[str, Any], names: list[str], tiers: list[str], span: int,
           kind: str) -> str:
    if kind == "demand":
        heading, section = "Demand against pool cores", "demand"
        intro = ("Per minute: the members' measured demand (CPU share plus run-queue delay, "
                 "in cores) and the cores of the pool each policy gave the tier; shaded "
                 "minutes had demand above the pool.")
        cols, draw = (_DEMAND, _POOL), _demand_plot
    else:
        heading, section = "Decision changes", "changes"
        intro = "Per minute: targets whose cpus changed (moves) and class changes."
        cols, draw = (_MOVES, _CLASS), _changes_plot
    out = [f'<section id="{section}"><h2>{heading}</h2><p class="muted">{_e(intro)}</p>']
    for tier in tiers:
        # One y scale for both sides of a tier, so the two plots compare at a glance.
        y_top = max([float(r[c]) for side in names for r in _timeline(report, side, tier)
                     for c in cols] or [0.0])
        out.append(f"<h3>{_e(tier)}</h3>")
        out.append('<div class="pair">')
        for side in names:
            out.append(f"<figure><figcaption>{_e(side)}</figcaption>"
                       f"{draw(report, side, tier, span, y_top)}</figure>")
        out.append("</div>")
    if not tiers:
        out.append('<p class="muted">Nothing to plot: no tier had members.</p>')
    out.append("</section>")
    return "\n".join(out)


# --- differences --------------------------------------------------------------------------

def _differences(report: dict[str, Any], names: list[str], tiers: list[str]) -> str:
    base = report.get("base") or (names[0] if names else "base")
    other = report.get("other") or (names[1] if len(names) > 1 else "other")
    diffs = report.get("differences") or {}
    out = ['<section id="differences"><h2>Differences</h2>',
           f'<p class="muted">Runs of disagreement longer than '
           f'{_num(report.get("tolerance_s", 0))} s; the first few of each tier as '
           "examples.</p>"]
    if not diffs:
        out.append('<p class="none">No differences: both sides agreed throughout.</p>')
    for tier in tiers:
        for kind, d in sorted((diffs.get(tier) or {}).items()):
            unexplained = d.get("unexplained", 0)
            flag = (f' <span class="badge">{_num(unexplained)} unexplained</span>'
                    if unexplained else "")
            out.append(f'<h3>{_e(tier)}: {_e(kind)} &mdash; {_num(d.get("count", 0))} '
                       f'differences, {_num(d.get("seconds", 0))} s{flag}</h3>')
            examples = d.get("examples") or []
            if not examples:
                out.append('<p class="muted">No examples kept.</p>')
                continue
            out.append(f'<table class="examples" data-tier="{_e(tier)}" '
                       f'data-kind="{_e(kind)}">'
                       '<colgroup><col style="width:13%"><col style="width:12%">'
                       '<col style="width:6%"><col style="width:17%"><col style="width:17%">'
                       '<col style="width:35%"></colgroup>'
                       f"<tr><th>target</th><th>when</th><th>seconds</th><th>{_e(base)}</th>"
                       f"<th>{_e(other)}</th><th>reason</th></tr>")
            for ex in examples:
                explained = ex.get("explained", True)
                cls = "example" if explained else "example unexplained"
                badge = ('<span class="badge ok">explained</span>' if explained
                         else '<span class="badge">unexplained</span>')
                out.append(f'<tr class="{cls}"><td>{_e(ex.get("target", ""))}</td>'
                           f'<td>{_e(ex.get("at", ""))}</td>'
                           f'<td class="num">{_num(ex.get("seconds", 0))}</td>'
                           f'<td>{_e(ex.get("base", ""))}</td>'
                           f'<td>{_e(ex.get("other", ""))}</td>'
                           f'<td>{badge} {_e(ex.get("reason", ""))}</td></tr>')
            out.append("</table>")
    out.append("</section>")
    return "\n".join(out)
