"""candlelake: a crypto machine-learning research lake (Dagster assets over a Parquet lake)."""
