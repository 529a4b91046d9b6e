"""Drive the explorer in a real browser: serve ``app/main.py`` with ``streamlit run`` on a free
port, open every page of its navigation in headless Chromium (Debian's, through Playwright: its
own browser download is not reachable here), wait until the script and the charts are done, and
save a full-page screenshot. Shared by ``tests/app/test_browser.py`` and ``docs/screenshots.py``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dagster_project.core.lake import LAKE_ENV_VAR

ROOT = Path(__file__).resolve().parents[2]
STREAMLIT = Path(sys.executable).with_name("streamlit")
APP_MAIN = ROOT / "app" / "main.py"
CHROMIUM_ENV_VAR = "CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVE_TIMEOUT_S = 120
RUN_TIMEOUT_MS = 180_000  # a page's first run imports torch and the ml stack on a busy machine
VIEWPORT = {"width": 1400, "height": 900}
MAX_SCREENSHOT_PX = 12_000
ERROR_BOX = '[data-testid="stException"]'
ALERT_BOX = '[data-testid="stAlertContentError"]'  # st.error: a refusal, a missing catalog
TABLE = '[data-testid="stDataFrame"]'
GRID_ROW_PX = 35  # the height of a row (and of the header) of Streamlit's table grid
CHART_MARKS = ".vega-embed .marks"  # vega's canvas or svg (the actions menu has svgs of its own)


@dataclass(frozen=True)
class Shown:
    """One page as the browser showed it, once its script and its charts were done."""

    title: str
    url: str
    text: str  # the page's visible text (sidebar included)
    errors: tuple[str, ...]  # the text of every exception box
    alerts: tuple[str, ...]  # the text of every st.error box
    tables: int
    charts: int
    images: int
    screenshot: Path


def chromium_path() -> Path | None:
    """The Chromium to drive (``$CHROMIUM``, else Debian's), or None when it is not installed."""
    path = Path(os.environ.get(CHROMIUM_ENV_VAR) or DEFAULT_CHROMIUM)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served_app(lake: Path, dagster_home: Path, log: Path, script: Path = APP_MAIN) -> Iterator[str]:
    """``streamlit run <script>`` (the explorer) over ``lake`` on a free local port; yields its
    base URL and always stops the server (its output goes to ``log``)."""
    port = free_port()
    env = {**os.environ, LAKE_ENV_VAR: str(lake), "DAGSTER_HOME": str(dagster_home)}
    command = [
        str(STREAMLIT), "run", str(script),
        "--server.address", "127.0.0.1", "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_serving(server, url, log)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def wait_until_serving(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not serve {url} in {SERVE_TIMEOUT_S}s:\n{log.read_text()}")


@contextmanager
def browser_page(chromium: Path) -> Iterator:
    """A Playwright page of headless Chromium at ``chromium``."""
    from playwright.sync_api import sync_playwright  # a test dependency, not the app's

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(RUN_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def show_every_page(page, base_url: str, out_dir: Path, prefix: str = "") -> list[Shown]:
    """Open every page the sidebar navigation lists and screenshot each to
    ``out_dir/<prefix><url path>.png`` (the default page's path is its title's)."""
    page.goto(base_url)
    wait_settled(page)
    shown = []
    for title, url in navigation_links(page, base_url):
        name = url.removeprefix(base_url).strip("/") or title.lower().replace(" ", "_")
        shown.append(show_page(page, title, url, out_dir / f"{prefix}{name}.png"))
    return shown


def navigation_links(page, base_url: str) -> list[tuple[str, str]]:
    """(title, absolute URL) of every page the sidebar of the open page lists."""
    links = page.locator('[data-testid="stSidebarNav"] a')
    links.first.wait_for()
    found = []
    for i in range(links.count()):
        title = links.nth(i).inner_text().strip().splitlines()[-1].strip()  # after the icon's name
        href = links.nth(i).get_attribute("href")
        found.append((title, href if href.startswith("http") else f"{base_url}/{href.lstrip('/')}"))
    return found


def show_page(page, title: str, url: str, screenshot: Path) -> Shown:
    page.set_viewport_size(VIEWPORT)
    page.goto(url)
    page.get_by_role("heading", name=title).first.wait_for()
    return take(page, title, url, screenshot)


def run_query(page, sql_url: str, sql: str, screenshot: Path) -> Shown:
    """Type ``sql`` into the SQL page at ``sql_url``, press Run and take what it shows."""
    page.set_viewport_size(VIEWPORT)
    page.goto(sql_url)
    page.get_by_role("heading", name="SQL").first.wait_for()
    wait_settled(page)
    page.get_by_label("Query").fill(sql)
    page.get_by_role("button", name="Run").click()
    page.locator(f"{TABLE}, {ALERT_BOX}").first.wait_for()
    return take(page, "SQL", sql_url, screenshot)


def open_leaderboard_row(page, base_url: str, row: int) -> None:
    """Open the Leaderboard and click row ``row`` of its table."""
    page.set_viewport_size(VIEWPORT)
    page.goto(base_url)
    page.get_by_role("heading", name="Leaderboard").first.wait_for()
    wait_settled(page)
    click_table_row(page, row)


def click_table_row(page, row: int) -> None:
    """Click row ``row`` of the page's first table (the grid is a canvas: the click lands on the
    row's selection box, one header and ``row`` rows below the table's top)."""
    table = page.locator(TABLE).first
    table.scroll_into_view_if_needed()
    box = table.bounding_box()
    page.mouse.click(box["x"] + GRID_ROW_PX / 2, box["y"] + GRID_ROW_PX * (row + 1.5))


def take(page, title: str, url: str, screenshot: Path) -> Shown:
    """What ``page`` shows once settled, with a full-page screenshot saved to ``screenshot``."""
    wait_settled(page)
    height = page.evaluate(
        'Math.max(...[...document.querySelectorAll(\'[data-testid="stMain"], '
        '[data-testid="stMainBlockContainer"], [data-testid="stSidebar"]\')]'
        ".map(e => e.scrollHeight), document.body.scrollHeight)"
    )  # Streamlit scrolls inside its main block: grow the viewport so the shot holds it all
    page.set_viewport_size({**VIEWPORT, "height": min(int(height) + 80, MAX_SCREENSHOT_PX)})
    wait_settled(page)
    page.screenshot(path=str(screenshot), full_page=True)
    return Shown(
        title=title,
        url=url,
        text=page.locator("body").inner_text(),
        errors=texts(page.locator(ERROR_BOX)),
        alerts=texts(page.locator(ALERT_BOX)),
        tables=page.locator(TABLE).count(),
        charts=page.locator(".vega-embed").count(),
        images=page.locator('[data-testid="stImage"] img').count(),
        screenshot=screenshot,
    )


def texts(boxes) -> tuple[str, ...]:
    return tuple(boxes.nth(i).inner_text() for i in range(boxes.count()))


def wait_settled(page, layout_pause_ms: int = 500) -> None:
    """Wait until the script run is over, no spinner is left, every vega chart has drawn its
    marks and every image has loaded."""
    page.locator('[data-test-script-state="notRunning"]').wait_for(state="attached")
    page.locator('[data-testid="stSpinner"]').first.wait_for(state="detached")
    for i in range(page.locator(".vega-embed").count()):
        page.locator(".vega-embed").nth(i).locator(".marks").first.wait_for(state="attached")
    page.wait_for_function(
        "[...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )
    page.wait_for_timeout(layout_pause_ms)  # let vega finish its layout before a screenshot
