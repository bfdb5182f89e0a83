"""Pool-scoring throughput and peak memory: every engine against the peers, on the paper's CNN and ResNet18
and on real model families (timm resnet18, convnext_atto, vit_tiny; a Hugging Face BERT classifier fed
dict batches with an attention mask), and on the task models: the segmentation U-Net (1x64x64 tiles, the
tile-mean pixel loss) and the NER tagger (32 tokens, the real-token-mean token loss).

For each model (random init, eval mode, random inputs: CIFAR-shaped 3x32x32 images, or 64 tokens with a
random-length attention mask; one batch size) it measures
plain inference, a batched forward+backward (a training step), each engine (``func``, ``auto`` = the fast
engine for all parameters, ``last_layer``), the naive loop of per-sample backward passes, and BackPACK's
``BatchGrad`` (full score) and ``BatchL2Grad`` (norm only) where BackPACK is installed
(``pip install -e .[bench]``). Scoring methods compute ``||g_u||^2`` and ``g_u . v`` for a fixed direction
``v`` (the role of ``G_S``; its value does not change the cost).

Peak memory: each (model, method) runs once on the first batch in a fresh child process (forked on CPU,
spawned on GPU); it is the growth of the maximum resident set size (CPU; for the fast engine it includes
the one-off measurement of its convolution algorithms) or of ``torch.cuda.max_memory_allocated`` (GPU).
Those first-batch scores are also checked against the exact ``func`` engine.

Timing: methods are timed in rounds, every method of a group processing the same batch in turn after one
warm-up batch each (each on its own copy of the model), so that a group sees the same machine load. The
light methods (inference, fwd+bwd, auto, last_layer) form one group; every slow peer is timed in its own
group with fwd+bwd, and its ratio is to that fwd+bwd. Throughput uses each method's fastest round (the most
reproducible figure on a shared machine); the JSON line also has the mean.

The ``fast`` column is the fraction of parameters (by count of tensors) that the default engine scored on its
fast path on the first batch (the rest go to an exact fallback).

    python benchmarks/scoring.py --models cifar_cnn,resnet18 --batch-size 32 --device auto [--threads 1]
    python benchmarks/scoring.py --models timm_resnet18,convnext_atto,vit_tiny,bert --methods inference,fwd+bwd,auto
    python benchmarks/scoring.py --models unet,tagger --methods inference,fwd+bwd,func,auto,loop --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamical.data.wikiann import TAGS
from lightning_dynamical.models import CifarCNN, TokenTagger, UNet, resnet18
from lightning_dynamical.scoring import FuncEngine, LastLayerEngine, make_engine, select_parameters
from lightning_dynamical.scoring.engine import FAST_PATHS
from lightning_dynamical.tasks import CLASSIFICATION, Segmentation, Task, TokenClassification
from lightning_dynamical.tasks.batches import Inputs, batch_size, forward_logits, take


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    return make


def _bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=5000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512, max_position_embeddings=64, num_labels=4)
    return BertForSequenceClassification(config)


def _images(b: int, device: torch.device) -> Inputs:
    return torch.randn(b, 3, 32, 32, device=device)


def _tokens(b: int, device: torch.device) -> Inputs:
    lengths = torch.randint(8, 65, (b, 1), device=device)
    mask = (torch.arange(64, device=device) < lengths).long()
    return {"input_ids": torch.randint(1, 5000, (b, 64), device=device) * mask, "attention_mask": mask}


def _tiles(b: int, device: torch.device) -> Inputs:
    return torch.randn(b, 1, 64, 64, device=device)


def _sentences(b: int, device: torch.device) -> Inputs:
    lengths = torch.randint(3, 33, (b, 1), device=device)
    mask = (torch.arange(32, device=device) < lengths).long()
    return {"input_ids": torch.randint(2, 5000, (b, 32), device=device) * mask, "attention_mask": mask}


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[int, torch.device], Inputs]]] = {
    "cifar_cnn": (CifarCNN, _images),
    "resnet18": (resnet18, _images),
    "timm_resnet18": (_timm("resnet18"), _images),
    "convnext_atto": (_timm("convnext_atto"), _images),
    "vit_tiny": (_timm("vit_tiny_patch16_224", img_size=32, patch_size=4), _images),
    "bert": (_bert, _tokens),
    "unet": (lambda: UNet(1, 2, width=16, depth=3), _tiles),
    "tagger": (lambda: TokenTagger(5000, len(TAGS), max_length=32), _sentences),
}
#: The task of each model whose task is not classification (its loss is what every method differentiates).
TASKS: dict[str, Task] = {"unet": Segmentation(), "tagger": TokenClassification(tags=TAGS)}
#: Timed rounds per model unless ``--batches`` is given (ResNet18's slow peers take ~20 s a batch on CPU).
DEFAULT_BATCHES = {"cifar_cnn": 10, "resnet18": 2}
METHODS = ["inference", "fwd+bwd", "func", "auto", "last_layer", "loop", "backpack_batchgrad", "backpack_l2"]
NORM_ONLY = {"backpack_l2"}
#: Timed together, interleaved; every other method is timed interleaved with the reference alone.
LIGHT = {"inference", "fwd+bwd", "auto", "last_layer"}
REFERENCE = "fwd+bwd"
Runner = Callable[[Tensor], "tuple[Tensor, Tensor] | None"]


def backpack_available() -> bool:
    try:
        import backpack  # noqa: F401
    except ImportError:
        return False
    return True


def _loss(model: nn.Module, x: Inputs, task: Task) -> Tensor:
    """The task's summed loss at its pseudo targets (the training step a scoring pass is compared with)."""
    logits = forward_logits(model, x, task)
    return task.loss(logits, task.batch_pseudo_targets(logits, x))


def _training_step(model: nn.Module, task: Task) -> Runner:
    def run(x: Inputs) -> None:
        _loss(model, x, task).backward()
        model.zero_grad(set_to_none=True)
    return run


def _inference(model: nn.Module, task: Task) -> Runner:
    def run(x: Inputs) -> None:
        with torch.no_grad():
            forward_logits(model, x, task)
    return run


def _engine(model: nn.Module, name: str, direction: dict[str, Tensor], chunk_size: int, task: Task) -> Runner:
    params = select_parameters(model, "last_layer" if name == "last_layer" else None)
    engine = LastLayerEngine() if name == "last_layer" else FuncEngine(chunk_size) if name == "func" else \
        make_engine(name, chunk_size)
    directions = [{n: direction[n] for n in params}]

    def run(x: Inputs) -> tuple[Tensor, Tensor]:
        sq, dots, _ = engine.batch_statistics(model, x, params, directions, task)
        if name == "auto":
            FAST_FRACTION[0] = sum(p.path.startswith(FAST_PATHS)
                                   for p in engine.paths.values()) / max(len(engine.paths), 1)
        return sq, dots[:, 0]
    return run


#: The fraction of parameters the default engine scored on its fast path in the last ``auto`` call.
FAST_FRACTION = [float("nan")]


def _loop(model: nn.Module, direction: dict[str, Tensor], task: Task) -> Runner:
    params = select_parameters(model, None)
    tensors, flat_v = list(params.values()), torch.cat([direction[n].reshape(-1) for n in params])

    def run(x: Inputs) -> tuple[Tensor, Tensor]:
        sq, dots = [], []
        for i in range(batch_size(x)):
            loss = _loss(model, take(x, [i]), task)
            g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, tensors)])
            sq.append(g.pow(2).sum())
            dots.append(g @ flat_v)
        return torch.stack(sq), torch.stack(dots)
    return run


def _backpack(model: nn.Module, direction: dict[str, Tensor], norm_only: bool) -> Runner:
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad, BatchL2Grad

    names = {id(p): n for n, p in model.named_parameters()}
    extended = extend(model, use_converter=True)
    loss_fn = extend(nn.CrossEntropyLoss(reduction="sum"))
    params = [p for p in extended.parameters() if p.requires_grad]
    if any(id(p) not in names for p in params):
        raise RuntimeError("BackPACK's converter replaced parameters; cannot align the direction")
    flat_v = [direction[names[id(p)]].reshape(-1) for p in params]

    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        logits = extended(x)
        with backpack(BatchL2Grad() if norm_only else BatchGrad()):
            loss_fn(logits, logits.argmax(1)).backward()
        if norm_only:
            sq, dots = sum(p.batch_l2 for p in params), torch.zeros(x.shape[0])
        else:
            grads = [p.grad_batch.reshape(x.shape[0], -1) for p in params]
            sq = sum(g.pow(2).sum(1) for g in grads)
            dots = sum(g @ v for g, v in zip(grads, flat_v))
        extended.zero_grad(set_to_none=True)
        return sq, dots
    return run


def make_runner(method: str, model: nn.Module, direction: dict[str, Tensor], chunk_size: int,
                task: Task = CLASSIFICATION) -> Runner:
    """A callable scoring (or, for the baselines, processing) one input batch with ``task``'s loss."""
    if method == "inference":
        return _inference(model, task)
    if method == "fwd+bwd":
        return _training_step(model, task)
    if method in ("func", "auto", "last_layer"):
        return _engine(model, method, direction, chunk_size, task)
    if method == "loop":
        return _loop(model, direction, task)
    if method.startswith("backpack"):
        if task is not CLASSIFICATION:
            raise ValueError(f"BackPACK rows use cross-entropy over (batch, classes); this model's task is {task.name}")
        return _backpack(model, direction, norm_only=method == "backpack_l2")
    raise ValueError(f"Unknown method {method!r}; choose from {METHODS}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _setup(model_name: str, batch_size: int, batches: int,
           device: torch.device) -> tuple[nn.Module, list[Tensor], dict[str, Tensor]]:
    """The same model, input batches and direction in every process (fixed seed)."""
    torch.manual_seed(0)
    factory, make_inputs = MODELS[model_name]
    model = factory().to(device).eval()
    inputs = [make_inputs(batch_size, device) for _ in range(batches)]
    direction = {n: 1e-2 * torch.randn_like(p) for n, p in model.named_parameters()}
    return model, inputs, direction


def memory_worker(model_name: str, method: str, batch_size: int, device: torch.device,
                  chunk_size: int) -> dict[str, Any]:
    """Peak memory of one method on the first batch in this (fresh) process, and its scores there."""
    model, inputs, direction = _setup(model_name, batch_size, 1, device)
    runner = make_runner(method, model, direction, chunk_size, TASKS.get(model_name, CLASSIFICATION))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = _peak_bytes(device)
    first = runner(inputs[0])
    _sync(device)
    result = {"model": model_name, "method": method, "peak_mib": (_peak_bytes(device) - base) / 2**20,
              "fast_fraction": FAST_FRACTION[0] if method == "auto" else None}
    if first is not None:
        result["sqnorm"], result["dots"] = (t.detach().double().cpu().tolist() for t in first)
    return result


def timing_worker(model_name: str, methods: list[str], batch_size: int, rounds: int, device: torch.device,
                  chunk_size: int) -> dict[str, Any]:
    """Per-batch times of every method, interleaved round by round so all see the same machine load.

    Each method gets its own copy of the model (BackPACK hooks the modules it extends) and one warm-up batch.
    """
    model, inputs, direction = _setup(model_name, batch_size, rounds + 1, device)
    runners, errors = {}, {}
    for method in methods:
        try:
            runners[method] = make_runner(method, copy.deepcopy(model), direction, chunk_size,
                                          TASKS.get(model_name, CLASSIFICATION))
            runners[method](inputs[0])
        except Exception as err:  # reported as a table row instead of aborting the benchmark
            errors[method] = f"{type(err).__name__}: {err}"
            runners.pop(method, None)
    times: dict[str, list[float]] = {m: [] for m in runners}
    for x in inputs[1:]:
        for method, run in runners.items():
            _sync(device)
            start = time.perf_counter()
            run(x)
            _sync(device)
            times[method].append(time.perf_counter() - start)
    return {"times": times, "errors": errors}


def _deviation(result: dict[str, Any], reference: dict[str, Any] | None) -> float | None:
    """Max |score - exact| / max |exact| on the first batch (score = ||g||^2 + 2 g.v, or the norm alone)."""
    if reference is None or "sqnorm" not in result or result["method"] == "last_layer":
        return None
    sq, ref_sq = torch.tensor(result["sqnorm"]), torch.tensor(reference["sqnorm"])
    if result["method"] in NORM_ONLY:
        return float((sq - ref_sq).abs().max() / ref_sq.abs().max())
    score = sq + 2 * torch.tensor(result["dots"])
    ref = ref_sq + 2 * torch.tensor(reference["dots"])
    return float((score - ref).abs().max() / ref.abs().max())


def _child(queue: Any, target: Callable[..., Any], *args: Any) -> None:
    try:
        queue.put(target(*args))
    except Exception as err:
        traceback.print_exc()
        queue.put({"error": f"{type(err).__name__}: {err}"})


def in_child(device: str, target: Callable[..., Any], *args: Any) -> Any:
    """``target(*args)`` in a fresh child process (forked on CPU, spawned on GPU), so that its memory is its own."""
    ctx = mp.get_context("fork" if device == "cpu" else "spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue, target, *args))
    child.start()
    result = queue.get()
    child.join()
    return result


def run_model(args: argparse.Namespace, model: str, methods: list[str]) -> list[dict[str, Any]]:
    """Memory (one child per method), then timing: the light methods interleaved in one child, and each
    slow peer interleaved with its own training-step reference (so that its large allocations do not
    disturb the others' timings)."""
    device = torch.device(args.device)
    rows = []
    for method in methods:
        row = in_child(args.device, memory_worker, model, method, args.batch_size, device, args.chunk_size)
        rows.append({"model": model, "method": method, **row})
        print(f"{model} {method}: memory measured", file=sys.stderr, flush=True)
    rounds = args.batches or DEFAULT_BATCHES.get(model, 1)
    light = [m for m in methods if m in LIGHT]
    groups = ([light] if light else []) + [[m] for m in methods if m not in LIGHT]
    for group in groups:
        timing = in_child(args.device, timing_worker, model, list(dict.fromkeys([REFERENCE, *group])),
                          args.batch_size, rounds, device, args.chunk_size)
        print(f"{model} {group}: timed", file=sys.stderr, flush=True)
        for row in rows:
            if row["method"] not in group or "error" in row:
                continue
            if "error" in timing or row["method"] in timing["errors"] or REFERENCE in timing["errors"]:
                row["error"] = timing.get("error") or timing["errors"].get(row["method"]) \
                    or timing["errors"][REFERENCE]
                continue
            row["times"], row["reference_times"] = timing["times"][row["method"]], timing["times"][REFERENCE]
    return rows


def table(results: list[dict[str, Any]], batch_size: int) -> str:
    """The results as a markdown table (throughput from the fastest timed round)."""
    lines = ["| model | method | samples/s | x fwd+bwd | peak memory (MiB) | max rel. deviation from exact | fast |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['method']} | failed: {r['error']} | | | | |")
            continue
        rate = batch_size / min(r["times"])
        ratio = min(r["reference_times"]) / min(r["times"])
        dev = "-" if r.get("deviation") is None else f"{r['deviation']:.1e}"
        fast = "" if r.get("fast_fraction") is None else f"{r['fast_fraction']:.0%}"
        lines.append(f"| {r['model']} | {r['method']} | {rate:.1f} | {ratio:.2f} | {r['peak_mib']:.0f} | {dev} "
                     f"| {fast} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cifar_cnn,resnet18", help=f"comma-separated, from {list(MODELS)}")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of the methods")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=None,
                        help=f"timed rounds after one warm-up batch (default per model: {DEFAULT_BATCHES})")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--chunk-size", type=int, default=32, help="engines' chunk size")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 avoids OpenMP barrier stalls "
                             "that dominate when other processes compete for the cores")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    methods = [m for m in args.methods.split(",") if m]
    if not backpack_available():
        methods = [m for m in methods if not m.startswith("backpack")]
        print("BackPACK not installed: skipping its rows (pip install -e .[bench])", file=sys.stderr)
    results = []
    for model in args.models.split(","):  # the parent computes nothing before forking (OpenMP is not fork-safe)
        results += run_model(args, model, methods)
    for r in results:
        reference = next((f for f in results if f["model"] == r["model"] and f["method"] == "func"
                          and "sqnorm" in f), None)
        r["deviation"] = _deviation(r, reference)
    machine = {"device": args.device, "cpu": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
               "batch_size": args.batch_size, "timed_batches": args.batches or DEFAULT_BATCHES}
    if args.device == "cuda":
        machine["gpu"] = torch.cuda.get_device_name()
    print(f"Scoring benchmark: {machine}\n")
    print(table(results, args.batch_size))
    summary = [{k: v for k, v in r.items() if k not in ("sqnorm", "dots")}
               | ({"samples_per_s": args.batch_size / min(r["times"]),
                   "mean_samples_per_s": args.batch_size * len(r["times"]) / sum(r["times"]),
                   "reference_samples_per_s": args.batch_size / min(r["reference_times"])}
                  if "times" in r else {}) for r in results]
    print(json.dumps({"machine": machine, "results": summary}))


if __name__ == "__main__":
    main()
