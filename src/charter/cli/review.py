"""`charter review`: a local web page to mark a run's revisions and label pairs. The web server
(Starlette, uvicorn) is imported only when it runs; $USER is read here, at the edge."""
from __future__ import annotations

import argparse

from charter.cli.common import add_config, add_settings, given
from charter.review.serve import ReviewConfig


def register(sub) -> None:
    p = sub.add_parser("review", help="a local web page to mark revisions better/worse/same and pick the better "
                       "answer of label pairs; marks saved as you make them")
    add_config(p, "review")
    add_settings(p, ReviewConfig)
    p.set_defaults(func=cmd_review)


def cmd_review(a: argparse.Namespace) -> int:
    import os

    from charter.review.serve import review

    cfg = ReviewConfig.load(a.config, given(a, ReviewConfig))
    cfg.reviewer = cfg.reviewer or os.environ.get("USER") or os.environ.get("USERNAME") or ""

    def ready(url: str) -> None:
        print(f"reviewing {cfg.run} as {cfg.reviewer} at {url} (Ctrl-C to stop)", flush=True)
        if cfg.open:
            import webbrowser

            webbrowser.open(url)

    result = review(cfg, ready)
    print(f"stopped; {result.marks} marks by {cfg.reviewer} are in {result.file}")
    return 0
