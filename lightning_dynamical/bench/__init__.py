"""``lightning-dynamical-bench``: strategies x seeds under one protocol, written as CSV, learning curves and a
Markdown summary (entry point :func:`main`)."""

from lightning_dynamical.bench.command import main

__all__ = ["main"]
