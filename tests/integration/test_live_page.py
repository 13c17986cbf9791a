"""The live page at / as an operator opens it: a real `corelane up --dry-run` on the test
broker, a process of the test's own, and the page loaded in headless Chromium through
WebDriver. What the page builds from the API must show: the header with the plan's mode and
strategy, a heatmap row for every CPU of this host with data drawn in it, the tiers with
the test's process among their members, the decisions, and the stream followed, so that a
command given while the page is open shows without a reload; with the stream refused, the
same by polling. A screenshot is kept."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.corelane_instance import ROOT, Instance
from support.waiting import wait_for as wait

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:          # reported by the test, as a failure that says what to do
    webdriver = None         # type: ignore[assignment]

pytestmark = pytest.mark.integration

ARTIFACT = ROOT / ".artifacts" / "live-page.png"
PAGE_TIMEOUT_S = 60
WIDTH = 1400
# The test's own process is named like markup: the page must show the name, not make it.
SLEEPER_NAME = "<img src=x>"

# What the test reads off the page: the heatmap's size and whether anything is drawn in
# it, each tier's members, the event lists, and the state the header shows.
PAGE_STATE = """
const canvas = document.getElementById("heatmap");
let painted = 0;
if (canvas.width && canvas.height) {
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i] !== 11 || pixels[i + 1] !== 16 || pixels[i + 2] !== 21) painted++;
  }
}
const members = {};
for (const tier of document.querySelectorAll("#tier-list [data-tier]")) {
  members[tier.dataset.tier] = [...tier.querySelectorAll(".member[data-pid]")]
    .map((m) => [Number(m.dataset.pid), m.querySelector(".name").textContent]);
}
const text = (id) => document.getElementById(id).textContent;
return {
  cores: Number(canvas.dataset.cores), columns: Number(canvas.dataset.columns), painted,
  labels: document.querySelectorAll("#core-labels li[data-cpu]").length,
  made_from_data: document.querySelectorAll("#tier-list img, #decision-rows img").length,
  members,
  decisions: [...document.querySelectorAll("#decision-rows tr")].map((r) => r.dataset.plan),
  decisions_empty: !document.getElementById("decisions-empty").hidden,
  alerts_waiting: text("alerts-open-empty").startsWith("waiting"),
  host: text("host"), mode: text("mode"), strategy: text("strategy"),
  liveness: document.getElementById("liveness").dataset.state,
  stream: document.getElementById("liveness").dataset.stream,
  problem: text("problem"),
};
"""


def browser(profile: Path) -> Any:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if webdriver is None or chromium is None or driver is None:
        pytest.fail("the live page is checked in a real headless Chromium through WebDriver: "
                    "chromium, chromium-driver or selenium is missing; run `make setup` to "
                    "install them", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", f"--user-data-dir={profile}", f"--window-size={WIDTH},1200"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver named here: selenium then looks nothing up on the network.
    return webdriver.Chrome(service=webdriver.ChromeService(driver), options=options)


def page_until(driver: Any, what: str, check: Any) -> dict:
    """The page's state once ``check(state)`` holds; fails with the last state seen."""
    seen: dict = {}

    def ready(d: Any) -> bool:
        seen.clear()
        seen.update(d.execute_script(PAGE_STATE))
        return bool(check(seen))
    try:
        WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.25).until(ready)
    except TimeoutException:
        raise AssertionError(f"the page did not show {what} within {PAGE_TIMEOUT_S} s; it "
                             f"showed {seen}") from None
    return seen


def tier_of(state: dict, pid: int) -> str | None:
    return next((tier for tier, members in state["members"].items()
                 if any(p == pid for p, _ in members)), None)


def keep_screenshot(driver: Any, tmp_path: Path) -> Path:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, max(800, int(height) + 40))
    shot = tmp_path / "live-page.png"
    assert driver.save_screenshot(str(shot)), "chromium took no screenshot"
    ARTIFACT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACT)
    print(f"\nlive page screenshot: {ARTIFACT} (and {shot})")
    return ARTIFACT


def test_the_live_page_shows_cores_tiers_and_decisions_and_follows_changes(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    corelane = Instance(tmp_path, kafka_bootstrap, f"e2e-page-{os.getpid()}.",
                        collector="{interval_s: 0.5}",
                        allocator="{interval_s: 0.5, heartbeat_s: 30}",
                        closed_loop="{enabled: false}")
    named = tmp_path / SLEEPER_NAME     # the kernel names a process after what it ran
    named.symlink_to(sys.executable)
    sleeper = subprocess.Popen([str(named), "-c", "import time; time.sleep(600)"])
    driver = None
    corelane.start()
    try:
        corelane.wait_recording()
        api = httpx.Client(base_url=f"http://{corelane.api}/api/v1", timeout=20,
                           trust_env=False)

        def read(path: str) -> Any:
            response = api.get(path)
            assert response.status_code == 200, (path, response.text)
            return response.json()

        wait("the sleeper placed in a tier", lambda: [
            p for p in read("/processes?name=time.sleep&limit=1000")["items"]
            if p["pid"] == sleeper.pid and p["tier"]])
        wait("decisions in the history", lambda: read("/decisions?limit=1")["items"])
        wait("core samples in the history",
             lambda: read("/core-utilization?from=-5m&step=5")["series"])
        plan = read("/tiers")

        driver = browser(tmp_path / "chromium-profile")
        driver.get(f"http://{corelane.api}/")
        cpus = os.cpu_count()
        state = page_until(driver, "cores, tiers with the sleeper, decisions and the stream",
                           lambda s: s["cores"] == cpus and s["columns"] >= 1 and s["painted"]
                           and tier_of(s, sleeper.pid) and s["decisions"]
                           and not s["alerts_waiting"] and s["stream"] == "open"
                           and s["liveness"] == "live")

        assert state["labels"] == cpus, state
        assert (state["host"], state["mode"], state["strategy"]) == (
            plan["host"], plan["mode"], plan["strategy"])
        names = dict(state["members"][tier_of(state, sleeper.pid)])
        assert names[sleeper.pid] == SLEEPER_NAME and not state["made_from_data"], state
        assert all(seq and seq.isdigit() for seq in state["decisions"]), state["decisions"]
        assert not state["decisions_empty"] and not state["problem"], state

        # A command given while the page is open shows without a reload.
        token = (tmp_path / "api-token").read_text().strip()

        def move_sleeper(tier: str) -> None:
            moved = api.post("/register-process", json={"tier": tier, "pid": sleeper.pid},
                             headers={"Authorization": f"Bearer {token}"})
            assert moved.status_code == 202, moved.text
            page_until(driver, f"the sleeper moved to the {tier} tier",
                       lambda s: tier_of(s, sleeper.pid) == tier)
        move_sleeper("critical")

        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"the page logged errors: {errors}"
        assert keep_screenshot(driver, tmp_path).stat().st_size > 10_000

        # Without the stream (the browser refuses it) the page polls, and says so.
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/api/v1/stream*"]})
        driver.refresh()
        page_until(driver, "its data, polled, with the stream down",
                   lambda s: s["stream"] == "down" and s["liveness"] == "live"
                   and s["columns"] >= 1 and tier_of(s, sleeper.pid) == "critical"
                   and s["decisions"])
        move_sleeper("high")
    finally:
        if driver is not None:
            driver.quit()
        sleeper.kill()
        sleeper.wait()
        if corelane.proc is not None and corelane.proc.poll() is None:
            corelane.terminate()
