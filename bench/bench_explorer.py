"""How long the explorer's pages take in a real browser, against a one-line Streamlit page.

    python bench/bench_explorer.py [--lake lake] [--dagster-home .dagster_home]

Serves ``app/main.py`` with ``streamlit run`` over a lake ``make run`` built (built into a temp
folder with ``candlelake run`` when ``--lake`` has no catalog), opens it in headless Chromium
through Playwright (Debian's ``chromium``), and times each page of the navigation from
``page.goto`` until its script has finished, no spinner is left, every chart has drawn and every
image has loaded: once cold (the server's first visit: empty caches, and the first page imports
the ml stack) and then warm (the median of 3 further visits, from the query cache). Then the
Leaderboard's cell detail: a click on its first row until the detail's six charts are drawn.

Reference, same run and browser: a Streamlit script with one ``st.title`` served the same way,
the floor any page costs (websocket, session, script run, render). Goal: a warm page within 2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.app.browser import (  # noqa: E402
    browser_page,
    chromium_path,
    click_table_row,
    navigation_links,
    served_app,
    wait_settled,
)

WARM_VISITS = 3
WARM_GOAL_S = 2.0
REFERENCE_SCRIPT = 'import streamlit as st\n\nst.title("Reference")\n'
DETAIL_CHARTS = 6  # the AUROC chart, the learning curve, confusion, calibration, ROC and PR


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, default=REPO / "lake")
    parser.add_argument("--dagster-home", type=Path, default=REPO / ".dagster_home")
    args = parser.parse_args()
    chromium = chromium_path()
    if chromium is None:
        print("No Chromium at /usr/bin/chromium or $CHROMIUM: apt-get install chromium")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lake, home = args.lake.absolute(), args.dagster_home.absolute()
        if not (lake / "candlelake.duckdb").is_file():
            lake, home = build_default_lake(work)
        reference = work / "reference.py"
        reference.write_text(REFERENCE_SCRIPT)
        with browser_page(chromium) as page:
            with served_app(lake, home, work / "reference.log", script=reference) as url:
                floor = [visit(page, url, "Reference") for _ in range(1 + WARM_VISITS)]
            with served_app(lake, home, work / "explorer.log") as url:
                pages = [(title, [visit(page, href, title) for _ in range(1 + WARM_VISITS)])
                         for title, href in links(page, url)]  # fmt: skip
                detail = [open_detail(page, url) for _ in range(1 + WARM_VISITS)]
    report(lake, floor, pages, detail)
    return 0


def build_default_lake(work: Path) -> tuple[Path, Path]:
    lake, home = work / "lake", work / "dagster_home"
    home.mkdir()
    print(f"No catalog at --lake: building the default lake into {lake} (candlelake run)…")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    candlelake = Path(sys.executable).with_name("candlelake")
    subprocess.run([str(candlelake), "--lake", str(lake), "run"], check=True, env=env, cwd=work)
    return lake, home


def links(page, url: str) -> list[tuple[str, str]]:
    page.goto(url)
    return navigation_links(page, url)


def visit(page, url: str, title: str) -> float:
    """Seconds from navigating to ``url`` until its page has settled."""
    started = time.perf_counter()
    page.goto(url)
    page.get_by_role("heading", name=title).first.wait_for()
    wait_settled(page, layout_pause_ms=0)
    return time.perf_counter() - started


def open_detail(page, url: str) -> float:
    """Seconds from a click on the Leaderboard's first row until the cell's detail has drawn."""
    visit(page, url, "Leaderboard")
    started = time.perf_counter()
    click_table_row(page, 0)
    page.get_by_role("heading", name="Learning curve").wait_for()
    page.locator(".vega-embed").nth(DETAIL_CHARTS - 1).wait_for()
    wait_settled(page, layout_pause_ms=0)
    return time.perf_counter() - started


def report(lake: Path, floor: list[float], pages, detail: list[float]) -> None:
    reference = statistics.median(floor[1:])
    print(f"lake: {lake}")
    print(f"reference (one st.title): cold {floor[0]:.2f} s, warm {reference:.2f} s\n")
    print("| page | cold | warm (median of 3) | warm / reference | goal | met |")
    print("|---|---:|---:|---:|---|---|")
    rows = [*pages, ("Leaderboard: click a row → cell detail", detail)]
    for title, times in rows:
        warm = statistics.median(times[1:])
        met = "yes" if warm <= WARM_GOAL_S else "**no**"
        print(
            f"| {title} | {times[0]:.2f} s | {warm:.2f} s | {warm / reference:.1f}× "
            f"| warm ≤ {WARM_GOAL_S:.0f} s | {met} |"
        )


if __name__ == "__main__":
    sys.exit(main())
