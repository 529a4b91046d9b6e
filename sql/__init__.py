"""The queries, one per ``.sql`` file; installed as the package ``dagster_project.queries``.

This file makes the folder a regular package, which the editable install needs to map it
(see ``package-dir`` in pyproject.toml); ``dagster_project.core.sql.load_sql`` reads the files.
"""
