"""RL-CAI in one place (the paper's §4): AI feedback labels, the preference model, RL, labeler evaluation.

Modules: data (feedback principles and few-shot loaders), labels (`charter label`: soft AI labels),
pm (`charter train pm`: a reward model on soft labels), rl (`charter train rl`: RLOO against the
PM), labeler_eval (`charter eval-labeler`: accuracy and calibration of a feedback model or a PM),
cli (the commands). Nothing heavy is imported here.
"""
