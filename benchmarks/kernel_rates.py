"""Single-thread throughput of the kernels scoring and a training step are made of, side by side, in one run.

A training step of a convolutional network spends its backward in the framework's convolution kernels (oneDNN on a
CPU); the statistics that replace its weight gradient are per-sample matmuls (``torch.bmm``: BLAS) and forward
convolutions. Where the two libraries reach different rates on a machine, so do scoring and training; this script
prints both in multiply-adds per second and their ratio, for the shapes of the paper's CNN (3x3 convolutions at
32x32, 16x16 and 8x8 over a batch of 32) and square matmuls.

    python benchmarks/kernel_rates.py --threads 1
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

#: (batch, input channels, output channels, map side) of the 3x3 convolutions timed.
CONVOLUTIONS = ((32, 3, 32, 32), (32, 32, 64, 16), (32, 64, 128, 8))


def best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest of ``repeats`` calls after three warm-up calls."""
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def rows(repeats: int) -> list[tuple[str, float]]:
    """``(kernel, G multiply-adds per second)`` for each kernel timed."""
    out = []
    for n in (256, 1024):
        a, b = torch.randn(n, n), torch.randn(n, n)
        out.append((f"mm {n}x{n}x{n}", n**3 / best_seconds(functools.partial(torch.mm, a, b), repeats) / 1e9))
    x, y = torch.randn(32, 256, 256), torch.randn(32, 256, 256)
    out.append(("bmm 32 x 256x256x256", 32 * 256**3 / best_seconds(functools.partial(torch.bmm, x, y), repeats) / 1e9))
    for batch, cin, cout, side in CONVOLUTIONS:
        inp, w = torch.randn(batch, cin, side, side), torch.randn(cout, cin, 3, 3)
        grad = torch.randn(batch, cout, side, side)
        macs = batch * side * side * cout * cin * 9
        name = f"{cin}->{cout} 3x3 on {side}x{side}"
        forward = functools.partial(F.conv2d, inp, w, padding=1)
        weight_gradient = functools.partial(torch.ops.aten.convolution_backward, grad, inp, w, None, (1, 1), (1, 1),
                                            (1, 1), False, (0, 0), 1, (False, True, False))
        out.append((f"conv forward {name}", macs / best_seconds(forward, repeats) / 1e9))
        out.append((f"conv weight gradient {name}", macs / best_seconds(weight_gradient, repeats) / 1e9))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per kernel, fastest kept (default 20)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    results = rows(args.repeats)
    matmul = max(rate for name, rate in results if name.startswith("mm "))
    print("| kernel | G multiply-adds/s | / best mm |\n|---|---:|---:|")
    for name, rate in results:
        print(f"| {name} | {rate:.1f} | {rate / matmul:.2f} |")


if __name__ == "__main__":
    main()
