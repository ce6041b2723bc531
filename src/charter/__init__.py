"""Charter: a toolkit for Constitutional AI (Bai et al. 2022)."""

__version__ = "0.1.0"
