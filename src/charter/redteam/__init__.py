"""Red-team prompts from a constitution (`charter redteam`): topics and a few examples in, a prompt
file for `generate --prompts` and its card out.

    from charter.redteam import RedteamConfig, redteam
    summary = redteam(RedteamConfig(per_topic=5, styles=["plain", "role-play"], out="runs/redteam"))

job.py (the config and the run), steps.py (the program per topic, the store's layout), parse.py
(prompts out of free text; duplicates), seeds.py (topics, examples, templates), output.py (the
prompt file and its card).
"""
from charter.redteam.job import RedteamConfig, RedteamSummary, redteam

__all__ = ["RedteamConfig", "RedteamSummary", "redteam"]
