"""Static one-file HTML report of runs (and their eval.json): html (page), plots (matplotlib PNGs)."""
