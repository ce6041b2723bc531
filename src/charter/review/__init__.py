"""The review page: a person browses a run's chains and `label` pairs in a local web page, marks
each revision better, worse or the same as the answer before it, and picks the better answer of
each pair. Marks are saved as they are made, one file per reviewer (charter.runs.reviews).

    from charter.review import read_marks
    marks = read_marks("runs/demo")          # every reviewer under runs/demo/reviews/
    worse = [m for m in marks.revisions if m.mark == "worse"]

`review(ReviewConfig)` serves the page (Starlette on uvicorn, imported only then); `read_marks`
is all a reader of the marks needs (export --drop-reviewed-worse, eval-labeler --reviews).
"""
from __future__ import annotations

from typing import Any

from charter.runs.reviews import Marks, PairMark, RevisionMark, marks_file, read_marks

_LAZY = {"ReviewConfig": "charter.review.serve", "review": "charter.review.serve",
         "ReviewResult": "charter.review.serve", "review_app": "charter.review.app"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'charter.review' has no attribute {name!r}")


__all__ = ["Marks", "PairMark", "RevisionMark", "read_marks", "marks_file", *_LAZY]
