"""candlelake's model zoo, training and evaluation (built in later issues)."""
