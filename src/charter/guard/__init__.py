"""Guard classifiers in use: a trained classifier loaded as a scorer (`model`: `load_guard`) and
the screen `generate --guard` applies to prompts and answers (`screen`: `Guard`).

Training data, training and evaluation live in `charter.classifier`; this package sits below the
pipeline so `generate` can use a guard without importing the trainers.
"""
