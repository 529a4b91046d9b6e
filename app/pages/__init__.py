"""The explorer's pages, one script per page, run by st.navigation in app/main.py."""
