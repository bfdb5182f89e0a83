"""Per convolution of a model: the training step's weight-gradient kernel against every exact algorithm of the
statistics that replace it in scoring, side by side in one run.

Scoring skips a training step's weight gradients and pays for each covered call's statistics ``(||g_i||^2,
g_i . G_S)`` instead (:mod:`lightning_dynamical.scoring.layers.conv`); everything else (the forward, the backward to
the calls' outputs) a training step pays too. So the sum over the convolutions of ``statistics - weight gradient``
is what the convolutions add to scoring's time over a step's, and

    ceiling = step / (step + sum over convolutions of (statistics - weight gradient))

is the ``score`` row's ``x fwd+bwd`` (``benchmarks/scoring.py``) if nothing else in scoring cost more than in the
step: with the fastest algorithm measured, and with the one the cost model picks (what the engine runs). Each
layer's input and output gradient come from one forward+backward of the model in eval mode on random CIFAR-shaped
inputs with random targets; the step is that forward+backward (cross-entropy, batched), timed in the same run.

    python benchmarks/conv_statistics.py --threads 1
    python benchmarks/conv_statistics.py --models cifar_cnn --repeats 30
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_dynamical.models import CifarCNN, resnet18
from lightning_dynamical.scoring.layers.conv import ConvGeometry, ConvRule, estimates

#: A call slower than this many times the weight gradient is timed once (ghost forms on 32x32 maps take seconds).
SLOW = 20.0


def _timm(name: str) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10)
    return make


MODELS: dict[str, Callable[[], nn.Module]] = {
    "cifar_cnn": CifarCNN,
    "resnet18": resnet18,
    "timm_resnet18": _timm("resnet18"),
    "convnext_atto": _timm("convnext_atto"),
}


def best_ms(fn: Callable[[], Any], repeats: int, limit: float = float("inf")) -> float:
    """Fastest of ``repeats`` calls in milliseconds after one warm-up call; a single call when that one takes
    longer than ``limit`` milliseconds."""
    start = time.perf_counter()
    fn()
    first = (time.perf_counter() - start) * 1e3
    if first > limit:
        return first
    best = first
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - start) * 1e3)
    return best


def captured(model: nn.Module, x: Tensor) -> list[tuple[str, nn.Conv2d, Tensor, Tensor]]:
    """``(name, layer, input, output gradient)`` of every ``nn.Conv2d`` in one forward+backward."""
    seen: list[tuple[str, nn.Conv2d, Tensor, list[Tensor]]] = []

    def keep(name: str, module: nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
        grads: list[Tensor] = []
        out.register_hook(grads.append)
        seen.append((name, module, args[0].detach(), grads))  # type: ignore[arg-type]

    handles = [m.register_forward_hook(functools.partial(keep, n)) for n, m in model.named_modules()
               if isinstance(m, nn.Conv2d)]
    logits = model(x)
    F.cross_entropy(logits, torch.randint(0, logits.shape[1], (x.shape[0],)), reduction="sum").backward()
    for h in handles:
        h.remove()
    return [(name, m, a, grads[0]) for name, m, a, grads in seen if grads]


def statistics(rule: ConvRule, conv: nn.Conv2d, a: Tensor, d: Tensor, direction: Tensor) -> Tensor:
    """``||g_i||^2`` and ``g_i . direction`` of the layer's weight by ``rule``, as one ``(B, 2)`` tensor."""
    sq, dots = rule.weight_statistics(conv, a, d, [direction])
    return torch.cat([sq.unsqueeze(1), dots], 1)


def layer_rows(model: nn.Module, x: Tensor, repeats: int) -> list[dict[str, Any]]:
    """Per convolution: the weight gradient's time, each algorithm's, the cost model's pick."""
    out = []
    for name, conv, a, d in captured(model, x):
        w = conv.weight.detach()
        direction = torch.randn_like(w)
        wgrad = functools.partial(torch.ops.aten.convolution_backward, d, a, w, None, conv.stride, conv.padding,
                                  conv.dilation, False, (0, 0), conv.groups, (False, True, False))
        wgrad_ms = best_ms(wgrad, repeats)
        geo = ConvGeometry(conv, a)
        live = geo.live()
        costs = estimates(live[0] if live else geo, 1)
        times = {algo: best_ms(functools.partial(ConvRule(algo).weight_statistics, conv, a, d, [direction]),
                               repeats, SLOW * wgrad_ms) for algo in sorted(costs)}
        picked = min(costs, key=costs.__getitem__)  # as ConvRule picks
        values = {algo: statistics(ConvRule(algo), conv, a, d, direction) for algo in costs}
        deviation = max(float((v - values[picked]).abs().max() / values[picked].abs().max()) for v in values.values())
        fastest = min(times, key=times.__getitem__)
        shape = f"{conv.in_channels}->{conv.out_channels} {'x'.join(map(str, conv.kernel_size))}"
        if conv.groups > 1:
            shape += f" g{conv.groups}"
        out.append({"layer": name, "shape": f"{shape} on {a.shape[2]}x{a.shape[3]}", "wgrad": wgrad_ms,
                    "picked": picked, "pick_ms": times[picked], "fastest": fastest, "fastest_ms": times[fastest],
                    "times": times, "deviation": deviation})
    return out


def step_ms(model: nn.Module, x: Tensor, repeats: int) -> float:
    """A batched cross-entropy forward+backward (the ``fwd+bwd`` row of ``benchmarks/scoring.py``)."""
    target = torch.randint(0, 10, (x.shape[0],))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
    return best_ms(step, repeats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per kernel, fastest kept (default 20)")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch_size}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; milliseconds per batch, fastest of {args.repeats}")
    for key in models:
        torch.manual_seed(0)
        model = MODELS[key]().eval()
        x = torch.randn(args.batch_size, 3, 32, 32)
        rows = layer_rows(model, x, args.repeats)
        step = step_ms(model, x, args.repeats)
        print(f"\n{key}: training step (fwd+bwd) {step:.2f} ms\n")
        print("| layer | convolution | weight gradient | picked | fastest | fastest - weight gradient "
              "| algorithms' max rel. difference |\n|---|---|---:|---|---|---:|---:|")
        for r in rows:
            print(f"| {r['layer']} | {r['shape']} | {r['wgrad']:.3f} | {r['picked']} {r['pick_ms']:.3f} "
                  f"| {r['fastest']} {r['fastest_ms']:.3f} | {r['fastest_ms'] - r['wgrad']:+.3f} "
                  f"| {r['deviation']:.1e} |")
        wgrad = sum(r["wgrad"] for r in rows)
        for label, key_ms in (("picked", "pick_ms"), ("fastest", "fastest_ms")):
            extra = sum(r[key_ms] for r in rows) - wgrad
            print(f"{label}: statistics {wgrad + extra:.2f} ms against weight gradients {wgrad:.2f} ms "
                  f"({extra:+.2f}); ceiling {step / (step + extra):.2f}")


if __name__ == "__main__":
    main()
