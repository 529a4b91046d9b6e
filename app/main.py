"""The explorer's entry point (``streamlit run app/main.py``): the page router and nothing else."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES_DIR = Path(__file__).resolve().parent / "pages"
# (file in app/pages/, title, icon), in the order the sidebar lists them
PAGES = (
    ("leaderboard.py", "Leaderboard", ":material/leaderboard:"),
    ("market.py", "Market", ":material/candlestick_chart:"),
    ("images.py", "Images", ":material/image:"),
    ("lake_health.py", "Lake health", ":material/monitor_heart:"),
    ("sql_console.py", "SQL", ":material/terminal:"),
)


def pages() -> list[st.Page]:
    return [st.Page(PAGES_DIR / name, title=title, icon=icon) for name, title, icon in PAGES]


def main() -> None:
    st.set_page_config(page_title="candlelake explorer", layout="wide")
    st.navigation(pages()).run()


if __name__ == "__main__":  # streamlit runs this file as __main__; importing it runs nothing
    main()
