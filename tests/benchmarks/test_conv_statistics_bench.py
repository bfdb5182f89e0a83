"""``benchmarks/conv_statistics.py``: a row per convolution of the model, the cost model's pick as the engine makes
it, every algorithm agreeing, and the ceilings computed from the rows."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

from lightning_dynamical.models import CifarCNN
from lightning_dynamical.scoring.layers.conv import ConvGeometry, estimates

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "conv_statistics.py"


def test_rows_picks_agreement_and_ceilings(capsys, one_thread):
    spec = importlib.util.spec_from_file_location("conv_statistics_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--models", "cifar_cnn", "--batch-size", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
             if line.startswith("| features")]
    model = CifarCNN()
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert [c[0] for c in cells] == list(convs)
    sides = {"features.0.0": 32, "features.2.0": 16, "features.4.0": 8}
    for name, shape, wgrad, picked, fastest, extra, deviation in cells:
        conv, side = convs[name], sides[name]
        assert shape == f"{conv.in_channels}->{conv.out_channels} 3x3 on {side}x{side}"
        costs = estimates(ConvGeometry(conv, torch.zeros(2, conv.in_channels, side, side)), 1)
        assert picked.split()[0] == min(costs, key=costs.__getitem__)
        assert fastest.split()[0] in costs
        assert abs(float(fastest.split()[1]) - float(wgrad) - float(extra)) < 2e-3
        assert float(deviation) < 1e-4  # every algorithm is exact: float32 rounding apart
    step = float(re.search(r"training step \(fwd\+bwd\) ([\d.]+) ms", out).group(1))
    wgrads = sum(float(c[2]) for c in cells)
    for label, column in (("picked", 3), ("fastest", 4)):
        stats = sum(float(c[column].split()[1]) for c in cells)
        line = re.search(rf"{label}: statistics ([\d.]+) ms against weight gradients ([\d.]+) ms \(([-+][\d.]+)\); "
                         r"ceiling ([\d.]+)", out)
        assert abs(float(line.group(1)) - stats) < 0.02 and abs(float(line.group(2)) - wgrads) < 0.02
        assert abs(float(line.group(4)) - step / (step + stats - wgrads)) < 0.01
