"""candlelake's Streamlit explorer (built in a later issue)."""
