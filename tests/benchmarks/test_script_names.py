"""A script's folder comes first on ``sys.path`` when it runs, so a benchmark named like an installed module shadows it
for everything the script imports (a ``kernels.py`` here broke ``transformers``, which imports Hugging Face's
``kernels`` package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_no_benchmark_script_is_named_like_an_installed_module() -> None:
    scripts = sorted(p.stem for p in BENCHMARKS.glob("*.py"))
    assert "scoring" in scripts
    assert [name for name in scripts if importlib.util.find_spec(name) is not None] == []
