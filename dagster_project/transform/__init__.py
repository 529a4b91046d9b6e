"""Domain code over the lake: curated klines, features, labels, windows and the days of each."""
