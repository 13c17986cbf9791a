"""The replay's HTML page as a user opens it: a real recorded history replayed under another
policy, rendered, and loaded from a file in headless Chromium with no network. The DOM the
browser built must hold a plot of each tier for each side, with the report's data drawn in
it, and the differences with their examples."""
from __future__ import annotations

import copy
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from agents.replay.render import html_page
from agents.replay.run import Policy, ReplayRequest, replay
from storage.history import HistoryStore
from support.recorded_history import HOST, T0, record, settings_for

pytestmark = pytest.mark.integration

BROWSER_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The recorded configuration against power-save over a recorded history: the two
    differ in placement, so there are moves to plot and differences to list."""
    tmp = tmp_path_factory.mktemp("replay-page")
    settings = settings_for(tmp)
    with HistoryStore(record(tmp / "h.duckdb", settings)) as store:
        req = ReplayRequest(t_from=T0 + 60, t_to=T0 + 240,
                            policy=Policy("power-save", settings_for(tmp, mode="power_save")))
        out = replay(store.cursor, settings, req, now=T0 + 300)
    assert out["difference_count"] > 0, "the two policies should differ in this window"
    return out


@pytest.fixture(scope="module")
def page(report: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay-html") / "replay.html"
    path.write_text(html_page(report), encoding="utf-8")
    return path


@dataclass
class Dumped:
    """What Chromium made of the page, or why it could not. A problem fails each test that
    needs the browser (a failure, not a setup error, and never a skip)."""
    markup: str = ""
    problem: str = ""

    def reader(self) -> PageReader:
        if self.problem:
            pytest.fail(self.problem, pytrace=False)
        return read(self.markup)


def chromium_command(page: Path, profile: Path) -> list[str] | None:
    browser = shutil.which("chromium")
    if browser is None:
        return None
    return [browser, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={profile}",
            "--dump-dom", page.resolve().as_uri()]


@pytest.fixture(scope="module")
def dom(page: Path, tmp_path_factory: pytest.TempPathFactory) -> Dumped:
    """The page's DOM once Chromium has loaded and parsed it: one browser start for all."""
    command = chromium_command(page, tmp_path_factory.mktemp("chromium-profile"))
    if command is None:
        return Dumped(problem="chromium is not installed: the replay page is checked in a "
                              "real headless browser; run `make setup` to install it")
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Dumped(problem=f"chromium did not dump the page within {BROWSER_TIMEOUT_S} s: "
                              f"{' '.join(command)}")
    if done.returncode != 0 or "<html" not in done.stdout:
        return Dumped(problem=f"chromium exited {done.returncode} without the page's DOM: "
                              f"{' '.join(command)}\nstderr:\n{done.stderr[-2000:]}")
    return Dumped(markup=done.stdout)


@dataclass
class Plot:
    kind: str
    tier: str
    side: str
    shapes: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def series(self, tag: str, cls: str) -> list[dict[str, str]]:
        return [a for t, a in self.shapes if t == tag and cls in a.get("class", "").split()]


class PageReader(HTMLParser):
    """What the tests look at: the title, the plots and their shapes, the example rows of
    the differences section, and every attribute that could make the page fetch something."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.plots: list[Plot] = []
        self.examples: list[dict[str, object]] = []
        self.references: list[tuple[str, str, str]] = []    # tag, attribute, value
        self.scripts: list[dict[str, str]] = []
        self.links: list[dict[str, str]] = []
        self.styles = ""
        self._in = {"head": False, "title": False, "style": False, "differences": False}
        self._plot: Plot | None = None
        self._row: dict[str, object] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for name, value in a.items():
            if name in ("src", "href", "xlink:href", "srcset", "action", "data", "poster"):
                self.references.append((tag, name, value))
        if tag == "script":
            self.scripts.append(a)
        elif tag == "link":
            self.links.append(a)
        elif tag in ("head", "style"):
            self._in[tag] = True
        elif tag == "title" and self._in["head"]:
            self._in["title"] = True
        elif tag == "section":
            self._in["differences"] = a.get("id") == "differences"
        elif tag == "svg" and "plot" in a.get("class", "").split():
            kind = next(c for c in a["class"].split() if c != "plot")
            self._plot = Plot(kind, a.get("data-tier", ""), a.get("data-side", ""))
            self.plots.append(self._plot)
        elif self._plot is not None:
            self._plot.shapes.append((tag, a))
        elif tag == "tr" and self._in["differences"] and "example" in a.get("class", ""):
            self._row = {"class": a["class"].split(), "cells": []}
            self.examples.append(self._row)
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("head", "title", "style"):
            self._in[tag] = False
        elif tag == "section":
            self._in["differences"] = False
        elif tag == "svg":
            self._plot = None
        elif tag == "tr":
            self._row = None
        elif tag == "td" and self._row is not None and self._cell is not None:
            self._row["cells"].append(" ".join("".join(self._cell).split()))   # type: ignore
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._in["title"]:
            self.title += data
        if self._in["style"]:
            self.styles += data
        if self._cell is not None:
            self._cell.append(data)


def read(markup: str) -> PageReader:
    reader = PageReader()
    reader.feed(markup)
    reader.close()
    return reader


def sides_of(report: dict) -> list[str]:
    return [report["base"], report["other"]]


def tiers_of(report: dict) -> list[str]:
    return sorted({t for side in report["sides"].values() for t in side["tiers"]})


def timeline(report: dict, side: str, tier: str) -> list[list]:
    return report["sides"][side]["tiers"].get(tier, {}).get("timeline", [])


# --- without a browser --------------------------------------------------------------------

def test_the_page_makes_no_network_reference(page: Path) -> None:
    markup = page.read_text(encoding="utf-8")
    reader = read(markup)
    remote = [r for r in reader.references
              if r[2].strip().lower().startswith(("http://", "https://", "//"))]
    assert not remote, f"the page refers to the network: {remote}"
    assert not [s for s in reader.scripts if "src" in s], "a script loaded from elsewhere"
    linked = [ln for ln in reader.links
              if "stylesheet" in ln.get("rel", "").lower() or "href" in ln]
    assert not linked, f"a stylesheet or resource linked from elsewhere: {linked}"
    assert "@import" not in reader.styles and "url(" not in reader.styles
    # The browser is told to fetch nothing at all.
    assert "default-src 'none'" in markup


def test_the_page_is_the_same_bytes_for_the_same_report(report: dict, page: Path) -> None:
    written = page.read_text(encoding="utf-8")
    assert html_page(report) == html_page(copy.deepcopy(report)) == written


# --- in the browser -----------------------------------------------------------------------

def test_the_browser_loads_the_page_with_its_title(dom: Dumped, report: dict) -> None:
    reader = dom.reader()
    assert reader.title.startswith("corelane replay"), reader.title
    assert HOST in reader.title and report["from"] in reader.title


def test_every_tier_has_a_demand_and_a_changes_plot_for_each_side(dom: Dumped,
                                                                  report: dict) -> None:
    reader = dom.reader()
    drawn = {(p.kind, p.tier, p.side) for p in reader.plots}
    tiers = tiers_of(report)
    assert tiers, "the report should have tiers"
    wanted = {(kind, tier, side) for kind in ("demand", "changes") for tier in tiers
              for side in sides_of(report)}
    assert wanted - drawn == set(), f"plots missing: {sorted(wanted - drawn)}"
    assert len(reader.plots) == len(wanted), "one plot of each kind per tier and side"


def test_the_demand_plots_draw_every_minute_of_the_timelines(dom: Dumped,
                                                            report: dict) -> None:
    plots = [p for p in dom.reader().plots if p.kind == "demand"]
    assert plots
    for plot in plots:
        minutes = timeline(report, plot.side, plot.tier)
        assert minutes, f"{plot.tier}/{plot.side}: the replayed window has samples"
        for series in ("demand", "pool"):
            lines = plot.series("polyline", series)
            points = [pt for line in lines for pt in line.get("points", "").split()]
            assert len(points) == len(minutes), (plot.tier, plot.side, series, points)
            assert all(len(pt.split(",")) == 2 for pt in points)
        # Axes and a legend, so the lines can be read.
        labels = [a for t, a in plot.shapes if t == "text"]
        assert len(labels) > 6 and plot.series("line", "grid")


def test_the_changes_plots_draw_a_bar_for_every_move_and_class_change(dom: Dumped,
                                                                      report: dict) -> None:
    plots = [p for p in dom.reader().plots if p.kind == "changes"]
    assert plots
    bars_in_all = 0
    for plot in plots:
        minutes = timeline(report, plot.side, plot.tier)
        moves = plot.series("rect", "moves")
        changes = plot.series("rect", "class-changes")
        assert len(moves) == sum(1 for row in minutes if row[4] > 0), (plot.tier, plot.side)
        assert len(changes) == sum(1 for row in minutes if row[5] > 0), (plot.tier, plot.side)
        assert all(float(b["height"]) > 0 for b in moves + changes)
        bars_in_all += len(moves) + len(changes)
    # Power-save moves processes where the recorded configuration left them.
    other = report["other"]
    assert any(plot.series("rect", "moves") for plot in plots if plot.side == other)
    assert bars_in_all > 0


def test_the_differences_section_lists_examples_with_both_sides(dom: Dumped,
                                                                report: dict) -> None:
    rows = dom.reader().examples
    expected = [ex for tier in report["differences"].values() for kind in tier.values()
                for ex in kind["examples"]]
    assert rows and len(rows) == len(expected)
    first = expected[0]
    cells = rows[0]["cells"]
    assert cells[:2] == [first["target"], first["at"]]
    assert float(cells[2].replace(",", "")) == first["seconds"]
    assert cells[3] == first["base"] and cells[4] == first["other"]
    assert first["reason"] in cells[5]
    assert ("unexplained" in rows[0]["class"]) == (not first["explained"])
