"""The lake core: errors, the lake and its files, SQL, the data contracts and their checks."""
