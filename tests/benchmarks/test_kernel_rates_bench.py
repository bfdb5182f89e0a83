"""``benchmarks/kernel_rates.py``: a row per kernel, rates positive, the ratio column relative to the fastest matmul."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernel_rates.py"


def test_kernel_table_has_every_kernel_with_its_ratio_to_the_best_matmul(capsys, one_thread):
    spec = importlib.util.spec_from_file_location("kernel_rates_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--repeats", "1"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]
    names = [c[0] for c in cells]
    assert len(names) == 3 + 2 * len(module.CONVOLUTIONS)
    assert sum(n.startswith("conv weight gradient") for n in names) == len(module.CONVOLUTIONS)
    rates = {c[0]: (float(c[1]), float(c[2])) for c in cells}
    best = max(rate for name, (rate, _) in rates.items() if name.startswith("mm "))
    for rate, ratio in rates.values():
        assert rate > 0
        assert abs(ratio - rate / best) < 0.01
