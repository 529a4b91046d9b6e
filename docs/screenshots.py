"""Screenshots of the explorer for the README: one PNG per page of the navigation, taken in headless
Chromium over a lake ``make run`` built, saved as ``docs/images/explorer_<page>.png``.

    DAGSTER_HOME=.dagster_home .venv/bin/python docs/screenshots.py lake
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the browser driver lives with the test that shares it

from tests.app.browser import (  # noqa: E402
    browser_page,
    chromium_path,
    open_leaderboard_row,
    run_query,
    served_app,
    show_every_page,
    take,
)

SQL_EXAMPLE = (
    "select symbol, interval, count(*) as bars, min(open_time) as first_open, "
    "max(open_time) as last_open from klines group by all order by all"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lake", type=Path, help="the lake (with its catalog) to show")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    chromium = chromium_path()
    if chromium is None:
        sys.exit("No Chromium at /usr/bin/chromium or $CHROMIUM: apt-get install chromium")
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or ROOT / ".dagster_home").absolute()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "streamlit.log"
        with (
            served_app(args.lake.absolute(), dagster_home, log) as url,
            browser_page(chromium) as page,
        ):
            shown = show_every_page(page, url, args.out, prefix="explorer_")
            sql_page = next(s for s in shown if s.title == "SQL")  # again, with a query's answer
            shown[shown.index(sql_page)] = run_query(
                page, sql_page.url, SQL_EXAMPLE, sql_page.screenshot
            )
            open_leaderboard_row(page, url, row=0)  # the best cell's detail
            page.get_by_role("heading", name="Learning curve").wait_for()
            shown.append(take(page, "Cell detail", url, args.out / "explorer_cell_detail.png"))
            for one in shown:
                problems = len(one.errors) + len(one.alerts)
                status = f"{problems} error box(es)" if problems else "ok"
                print(f"{one.screenshot}: {one.title}, {status}")


if __name__ == "__main__":
    main()
