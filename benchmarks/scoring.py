"""Pool-scoring throughput and peak memory: the real strategy (``DynamicAL.score``, G_S included) and every engine
against a training step and the peers, on the paper's CNN and ResNet18 and on real model families (timm
resnet18, convnext_atto, vit_tiny; a Hugging Face BERT classifier fed dict batches with an attention mask), and
on the task models: the segmentation U-Net (1x64x64 tiles, the tile-mean pixel loss) and the NER tagger (32
tokens, the real-token-mean token loss).

For each model (random init, eval mode, random inputs: CIFAR-shaped 3x32x32 images, or 64 tokens with a
random-length attention mask; one batch size) it measures
plain inference, a batched forward+backward (a training step), each engine (``func``, ``auto`` = the fast
engine for all parameters, ``last_layer``), the naive loop of per-sample backward passes, and BackPACK's
``BatchGrad`` (full score) and ``BatchL2Grad`` (norm only) where BackPACK is installed
(``pip install -e .[bench]``). Those rows score one batch: ``||g_u||^2`` and ``g_u . v`` for a fixed direction
``v`` (the role of ``G_S``; its value does not change the cost).

G_S mode, the ``score`` row (default): ``DynamicAL(engine="auto").score(model, pool, labeled)`` end to end over a
pool of ``--pool`` samples in batches of ``--batch-size``, with ``G_S`` from one labeled batch of ``--batch-size``
samples with random targets of the model's task. Its ``x fwd+bwd`` is the time of a training step over the same
pool batches (the sum of the per-batch times) over the time of that ``score()`` call; the two are timed
interleaved in their own child, best of ``--rounds`` (default per model, :data:`DEFAULT_ROUNDS`) after a warm-up
pass over the first 2 batches.

Peak memory: each (model, method) runs once on the first batch (``score``: the first pool batch and ``G_S``) in a
fresh child process (forked on CPU, spawned on GPU); it is the growth of the maximum resident set size (CPU) or of
``torch.cuda.max_memory_allocated`` (GPU). The per-batch rows' first-batch scores are also checked against the
exact ``func`` engine.

Timing: the per-batch methods are timed in rounds, every method of a group processing the same batch in turn
after one warm-up batch each (each on its own copy of the model), so that a group sees the same machine load. The
light methods (inference, fwd+bwd, auto, last_layer) form one group; every slow peer is timed in its own group
with fwd+bwd, and its ratio is to that fwd+bwd. Throughput uses each method's fastest round (the most
reproducible figure on a shared machine); the JSON line also has the mean. On GPU, times are CUDA event pairs.
Every worker pins glibc's malloc thresholds first (``--malloc pinned``, :func:`pin_malloc`): by default they follow
the process's history of frees, and whether large temporaries page-fault on every use, in the training step and in the
scoring pass alike, changed from run to run; ``--malloc default`` leaves them as they are.
``--precision bf16-mixed`` runs every row under ``torch.autocast(dtype=torch.bfloat16)`` (CPU too).

The ``fast`` column is the fraction of parameters (by count of tensors) that the default engine scored on its
fast path (the rest go to an exact fallback).

``--profile``: per model, a child runs ``torch.profiler`` over 2 batches of fwd+bwd and 2 ``score()`` calls (one
pool batch each, ``G_S`` from one labeled batch) and prints the milliseconds per batch grouped by the profiler
ranges (the engine's ``lightning_dynamical/<phase>`` ranges, the benchmark's ``bench/forward`` and
``bench/backward``), each range exclusive of the ranges nested in it, with its top aten ops by self time.

    python benchmarks/scoring.py --threads 1    # G_S mode: fwd+bwd, score and auto on every family
    python benchmarks/scoring.py --models cifar_cnn --threads 1 --profile --pool 256
    python benchmarks/scoring.py --models cifar_cnn,resnet18 --methods fwd+bwd,func,auto,loop --device auto
    python benchmarks/scoring.py --models unet,tagger --methods inference,fwd+bwd,func,auto,score,loop --threads 1
    python benchmarks/scoring.py --device cuda --precision 32,bf16-mixed
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import ctypes.util
import functools
import json
import multiprocessing as mp
import os
import platform
import queue as queues
import resource
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent

from lightning_dynamical.data.wikiann import TAGS
from lightning_dynamical.models import CifarCNN, TokenTagger, UNet, resnet18
from lightning_dynamical.scoring import FuncEngine, LastLayerEngine, ParameterPath, make_engine, select_parameters
from lightning_dynamical.scoring.engine import FAST_PATHS, PHASE_PREFIX
from lightning_dynamical.strategies import DynamicAL
from lightning_dynamical.tasks import CLASSIFICATION, Segmentation, Task, TokenClassification
from lightning_dynamical.tasks.batches import LABEL_KEY, Inputs, batch_size, forward_logits, take


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    return make


def _bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=5000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512, max_position_embeddings=64, num_labels=4)  # type: ignore[call-arg]
    return BertForSequenceClassification(config)


def _images(b: int, device: torch.device) -> Inputs:
    return torch.randn(b, 3, 32, 32, device=device)


def _padded_ids(b: int, device: torch.device, length: int, shortest: int, first_id: int) -> Inputs:
    """``b`` random-length sequences of ids in ``[first_id, 5000)``, zero-padded to ``length``, with their mask."""
    lengths = torch.randint(shortest, length + 1, (b, 1), device=device)
    mask = (torch.arange(length, device=device) < lengths).long()
    return {"input_ids": torch.randint(first_id, 5000, (b, length), device=device) * mask, "attention_mask": mask}


def _tokens(b: int, device: torch.device) -> Inputs:
    return _padded_ids(b, device, 64, 8, 1)


def _tiles(b: int, device: torch.device) -> Inputs:
    return torch.randn(b, 1, 64, 64, device=device)


def _sentences(b: int, device: torch.device) -> Inputs:
    return _padded_ids(b, device, 32, 3, 2)


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
#: The default ``--models``: every model family (the task models stay available by name).
FAMILIES = ["cifar_cnn", "resnet18", "timm_resnet18", "vit_tiny", "convnext_atto", "bert"]
#: The task of each model whose task is not classification (its loss is what every method differentiates).
TASKS: dict[str, Task] = {"unet": Segmentation(), "tagger": TokenClassification(tags=TAGS)}
#: Timed batches of the per-batch rows per model unless ``--batches`` is given (1 otherwise; ResNet18's slow peers
#: take ~20 s a batch on CPU). The ``score`` row times ``--rounds`` passes over ``--pool`` instead.
DEFAULT_BATCHES = {"cifar_cnn": 10, "resnet18": 2}
#: Timed passes of the ``score`` row per model unless ``--rounds`` is given (3 otherwise): the models whose pass takes
#: a few seconds get more, since this VM's speed drifts by 10% and more between seconds-long passes.
DEFAULT_ROUNDS = {"cifar_cnn": 9, "timm_resnet18": 5, "convnext_atto": 5, "bert": 5, "tagger": 5}
SCORE = "score"
METHODS = ["inference", "fwd+bwd", SCORE, "func", "auto", "last_layer", "loop", "backpack_batchgrad", "backpack_l2"]
DEFAULT_METHODS = ["fwd+bwd", SCORE, "auto"]
NORM_ONLY = {"backpack_l2"}
#: Timed together, interleaved; every other method is timed interleaved with the reference alone.
LIGHT = {"inference", "fwd+bwd", "auto", "last_layer"}
REFERENCE = "fwd+bwd"
PRECISIONS = ("32", "bf16-mixed")
#: Profiler ranges the profile groups by: the engine's phases and the training step's.
RANGES = (PHASE_PREFIX, "bench/")
Runner = Callable[[Any], "tuple[Tensor, Tensor] | None"]


def backpack_available() -> bool:
    try:
        import backpack  # noqa: F401
    except ImportError:
        return False
    return True


def _task(model_name: str) -> Task:
    return TASKS.get(model_name, CLASSIFICATION)


def _loss(model: nn.Module, x: Inputs, task: Task) -> Tensor:
    """The task's summed loss at its pseudo targets (the training step a scoring pass is compared with)."""
    logits = forward_logits(model, x, task)
    return task.loss(logits, task.batch_pseudo_targets(logits, x))


def _training_step(model: nn.Module, task: Task) -> Runner:
    """Forward and backward in the profiler ranges ``bench/forward`` and ``bench/backward`` (no-ops unprofiled)."""
    def run(x: Inputs) -> None:
        with torch.profiler.record_function("bench/forward"):
            loss = _loss(model, x, task)
        with torch.profiler.record_function("bench/backward"):
            loss.backward()
        model.zero_grad(set_to_none=True)
    return run


def _inference(model: nn.Module, task: Task) -> Runner:
    def run(x: Inputs) -> None:
        with torch.no_grad():
            forward_logits(model, x, task)
    return run


def _fast_share(paths: dict[str, ParameterPath]) -> float:
    """The fraction of parameters an engine scored on a fast path (NaN before it scored)."""
    return sum(p.path.startswith(FAST_PATHS) for p in paths.values()) / len(paths) if paths else float("nan")


def _engine(model: nn.Module, name: str, direction: dict[str, Tensor], chunk_size: int, task: Task) -> Runner:
    params = select_parameters(model, "last_layer" if name == "last_layer" else None)
    engine = LastLayerEngine() if name == "last_layer" else FuncEngine(chunk_size) if name == "func" else \
        make_engine(name, chunk_size)
    directions = [{n: direction[n] for n in params}]

    def run(x: Inputs) -> tuple[Tensor, Tensor]:
        sq, dots, _ = engine.batch_statistics(model, x, params, directions, task)
        if name == "auto":
            FAST_FRACTION[0] = _fast_share(engine.paths)
        return sq, dots[:, 0]
    return run


#: The fraction of parameters the default engine scored on its fast path in the last ``auto`` or ``score`` call.
FAST_FRACTION = [float("nan")]
#: ``--malloc``: ``pinned`` (:func:`pin_malloc` in every worker) or ``default`` (the process's allocator as it is).
MALLOC = ["pinned"]


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
            sq, dots = sum(p.batch_l2 for p in params), torch.zeros(x.shape[0], device=x.device)
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
    if method == SCORE:
        raise ValueError("score runs over a pool (score_worker), not one batch")
    raise ValueError(f"Unknown method {method!r}; choose from {METHODS}")


def _precision(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to bfloat16 for ``bf16-mixed`` (CPU too), nothing for ``32``."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision != "32":
        raise ValueError(f"Unknown precision {precision!r}; choose from {PRECISIONS}")
    return contextlib.nullcontext()


def _autocast(run: Callable[[Any], Any], device: torch.device, precision: str) -> Callable[[Any], Any]:
    """``run`` under the row's precision."""
    def wrapped(x: Any) -> Any:
        with _precision(device, precision):
            return run(x)
    return wrapped


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` takes: a CUDA event pair on cuda (the device's timeline), ``perf_counter`` on CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3
    start_s = time.perf_counter()
    fn()
    return time.perf_counter() - start_s


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _model(model_name: str, device: torch.device) -> tuple[nn.Module, Callable[[int, torch.device], Inputs]]:
    """The model in eval mode after seeding (the same weights in every process) and its input maker."""
    torch.manual_seed(0)
    factory, make_inputs = MODELS[model_name]
    return factory().to(device).eval(), make_inputs


def _setup(model_name: str, batch_size: int, batches: int,
           device: torch.device) -> tuple[nn.Module, list[Inputs], dict[str, Tensor]]:
    """The same model, input batches and direction in every process (fixed seed)."""
    model, make_inputs = _model(model_name, device)
    inputs = [make_inputs(batch_size, device) for _ in range(batches)]
    direction = {n: 1e-2 * torch.randn_like(p) for n, p in model.named_parameters()}
    return model, inputs, direction


def _labeled_batch(model: nn.Module, inputs: Inputs, task: Task) -> Any:
    """``inputs`` as a labeled loader yields them, ``(x, y)`` or a dict with ``labels``: random targets of the
    task over the model's classes (one per sample, pixel or token; ``ignore_index`` at padding tokens)."""
    with torch.no_grad():
        logits = forward_logits(model, inputs, task)
    dim = getattr(task, "class_dim", 1)
    target = torch.randint(logits.shape[dim], (*logits.shape[:dim], *logits.shape[dim + 1:]), device=logits.device)
    if isinstance(task, TokenClassification):
        real = task.real_positions(logits, inputs)
        target = target if real is None else target.masked_fill(~real, task.ignore_index)
    return {**inputs, LABEL_KEY: target} if isinstance(inputs, dict) else (inputs, target)


def _score_setup(model_name: str, batch_size: int, pool: int,
                 device: torch.device) -> tuple[nn.Module, list[Inputs], Any]:
    """The model, the pool's batches (inputs only, as a pool loader yields them) and one labeled batch of
    ``batch_size`` (fixed seed)."""
    model, make_inputs = _model(model_name, device)
    batches = [make_inputs(min(batch_size, pool - i), device) for i in range(0, pool, batch_size)]
    return model, batches, _labeled_batch(model, make_inputs(batch_size, device), _task(model_name))


def _scorer(model: nn.Module, task: Task, labeled: Any, chunk_size: int, device: torch.device,
            precision: str) -> Callable[[list[Inputs]], Tensor]:
    """``DynamicAL(engine="auto").score`` of a pool (a list of batches) with ``G_S`` from ``labeled``."""
    strategy = DynamicAL(engine="auto", chunk_size=chunk_size, task=task)

    def run(pool: list[Inputs]) -> Tensor:
        with _precision(device, precision):
            scores = strategy.score(model, pool, [labeled])
        FAST_FRACTION[0] = _fast_share(strategy._engine.paths)
        return scores
    return run


def memory_worker(model_name: str, method: str, batch_size: int, device: torch.device, chunk_size: int,
                  precision: str = "32") -> dict[str, Any]:
    """Peak memory of one method on the first batch in this (fresh) process, and its scores there (``score``:
    the first pool batch and ``G_S``; no scores, its direction is ``G_S``)."""
    task = _task(model_name)
    if method == SCORE:
        model, pool, labeled = _score_setup(model_name, batch_size, batch_size, device)
        scorer = _scorer(model, task, labeled, chunk_size, device, precision)
        run: Callable[[], Any] = functools.partial(scorer, pool)
    else:
        model, inputs, direction = _setup(model_name, batch_size, 1, device)
        run = functools.partial(_autocast(make_runner(method, model, direction, chunk_size, task), device,
                                          precision), inputs[0])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = _peak_bytes(device)
    first = run()
    _sync(device)
    result = {"model": model_name, "method": method, "peak_mib": (_peak_bytes(device) - base) / 2**20,
              "fast_fraction": FAST_FRACTION[0] if method in ("auto", SCORE) else None}
    if first is not None and method != SCORE:
        result["sqnorm"], result["dots"] = (t.detach().double().cpu().tolist() for t in first)
    return result


def timing_worker(model_name: str, methods: list[str], batch_size: int, rounds: int, device: torch.device,
                  chunk_size: int, precision: str = "32") -> dict[str, Any]:
    """Per-batch times of every method, interleaved round by round so all see the same machine load.

    Each method gets its own copy of the model (BackPACK hooks the modules it extends) and one warm-up batch.
    """
    model, inputs, direction = _setup(model_name, batch_size, rounds + 1, device)
    runners, errors = {}, {}
    for method in methods:
        try:
            runners[method] = _autocast(make_runner(method, copy.deepcopy(model), direction, chunk_size,
                                                    _task(model_name)), device, precision)
            runners[method](inputs[0])
        except Exception as err:  # reported as a table row instead of aborting the benchmark
            errors[method] = f"{type(err).__name__}: {err}"
            runners.pop(method, None)
    times: dict[str, list[float]] = {m: [] for m in runners}
    for x in inputs[1:]:
        for method, run in runners.items():
            _sync(device)
            times[method].append(_timed(device, functools.partial(run, x)))
    return {"times": times, "errors": errors}


def score_worker(model_name: str, batch_size: int, pool: int, rounds: int, device: torch.device, chunk_size: int,
                 precision: str = "32") -> dict[str, Any]:
    """``score()`` of the pool (``G_S`` included) and a training step over the same pool batches (the sum of the
    per-batch times), interleaved round by round after a warm-up pass over the first 2 batches."""
    model, batches, labeled = _score_setup(model_name, batch_size, pool, device)
    step = _autocast(_training_step(copy.deepcopy(model), _task(model_name)), device, precision)
    scorer = _scorer(model, _task(model_name), labeled, chunk_size, device, precision)

    def steps(xs: list[Inputs]) -> float:
        _sync(device)
        return sum(_timed(device, functools.partial(step, x)) for x in xs)

    steps(batches[:2])
    scorer(batches[:2])
    times: dict[str, list[float]] = {SCORE: [], REFERENCE: []}
    for _ in range(rounds):
        times[REFERENCE].append(steps(batches))
        _sync(device)
        times[SCORE].append(_timed(device, functools.partial(scorer, batches)))
    return {"times": times, "errors": {}, "fast_fraction": FAST_FRACTION[0]}


def _range_of(event: FunctionEvent, ranges: list[FunctionEvent]) -> str | None:
    """The innermost profiler range holding ``event``: its nearest ancestor range on its thread, else (work the
    autograd engine runs on its device threads) the shortest range of another thread that spans its start."""
    parent: FunctionEvent | None = event
    while parent is not None:
        if parent.name.startswith(RANGES):
            return parent.name
        parent = parent.cpu_parent
    start = event.time_range.start
    return next((r.name for r in ranges if r.thread != event.thread and r.time_range.start <= start
                 < r.time_range.end), None)


def _phases(events: Sequence[FunctionEvent], batches: int, wall_s: float, cuda: bool) -> list[dict[str, Any]]:
    """Milliseconds per batch in each profiler range, exclusive of the ranges nested in it (the self time of the
    events it holds), with its top 3 aten ops by self time; ``other`` is the wall time outside every range."""
    events = [e for e in events if e.device_type == DeviceType.CPU and not e.is_async]  # kernels: via their ops
    ranges = sorted((e for e in events if e.name.startswith(RANGES)), key=lambda e: e.time_range.elapsed_us())
    names = list(dict.fromkeys(r.name for r in sorted(ranges, key=lambda e: e.time_range.start)))
    cpu: dict[str, float] = {}
    device: dict[str, float] = {}
    ops: dict[str, dict[str, float]] = {}
    for e in events:
        name = _range_of(e, ranges) or "other"
        cpu[name] = cpu.get(name, 0.0) + e.self_cpu_time_total
        device[name] = device.get(name, 0.0) + e.self_device_time_total
        if e.name.startswith("aten::"):
            ops.setdefault(name, {})[e.name] = ops.get(name, {}).get(e.name, 0.0) + e.self_cpu_time_total
    cpu["other"] = max(wall_s * 1e6 - sum(v for k, v in cpu.items() if k != "other"), 0.0)
    rows = []
    for name in [*names, "other"]:
        top = sorted(ops.get(name, {}).items(), key=lambda kv: -kv[1])[:3]
        rows.append({"phase": name.removeprefix(PHASE_PREFIX).removeprefix("bench/"),
                     "ms": cpu.get(name, 0.0) / 1e3 / batches,
                     "cuda_ms": device.get(name, 0.0) / 1e3 / batches if cuda else None,
                     "top": [[op, us / 1e3 / batches] for op, us in top]})
    rows.append({"phase": "total (wall)", "ms": wall_s * 1e3 / batches,
                 "cuda_ms": sum(device.values()) / 1e3 / batches if cuda else None, "top": []})
    return rows


def profile_worker(model_name: str, batch_size: int, device: torch.device, chunk_size: int,
                   precision: str = "32") -> dict[str, Any]:
    """``torch.profiler`` (CPU, and CUDA on cuda) over 2 batches of fwd+bwd and 2 ``score()`` calls of one pool
    batch each (``G_S`` from one labeled batch), each after one warm-up batch: :func:`_phases` of each."""
    model, batches, labeled = _score_setup(model_name, batch_size, 3 * batch_size, device)
    step = _autocast(_training_step(copy.deepcopy(model), _task(model_name)), device, precision)
    scorer = _scorer(model, _task(model_name), labeled, chunk_size, device, precision)
    runs: dict[str, Callable[[Inputs], Any]] = {REFERENCE: step, SCORE: lambda x: scorer([x])}
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    out = {}
    for name, run in runs.items():
        run(batches[0])
        _sync(device)
        with torch.profiler.profile(activities=activities) as prof:
            start = time.perf_counter()
            for x in batches[1:]:
                run(x)
            _sync(device)
            wall = time.perf_counter() - start
        out[name] = _phases(prof.events(), len(batches) - 1, wall, device.type == "cuda")
    return {"model": model_name, "precision": precision, "fast_fraction": FAST_FRACTION[0], "runs": out}


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


#: glibc ``mallopt`` parameters and the values ``--malloc pinned`` gives them in every worker.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
PINNED_MALLOC = {M_MMAP_THRESHOLD: 32 * 2**20, M_TRIM_THRESHOLD: 2**30}


def pin_malloc() -> bool:
    """Fix glibc's malloc thresholds in this process (``False`` where the C library has no ``mallopt``).

    By default glibc serves blocks above a *dynamic* threshold with fresh ``mmap`` pages and returns the heap's
    free top to the system above twice that threshold; the threshold rises to the size of the largest such block
    freed so far (up to 32 MiB). Whether a workload's temporaries of a few MiB page-fault on every use thus depends
    on the process's history (imports, earlier models), and a training step's and a scoring pass's fault counts
    moved from near 0 to 4,000 per batch between identical runs. Pinned: blocks below 32 MiB come from the heap,
    which is never trimmed below 1 GiB of free top, so both sides keep their memory from batch to batch (BERT's pool
    pass: 0-130 faults per batch, its training steps 0).
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return all([mallopt(param, value) == 1 for param, value in PINNED_MALLOC.items()])


def _mallopt() -> Callable[[int, int], int] | None:
    """The C library's ``mallopt`` (glibc), or ``None``."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def _child(queue: Any, threads: int, pinned: bool, target: Callable[..., Any], *args: Any) -> None:
    torch.set_num_threads(threads)  # a spawned child does not inherit it
    if pinned:
        pin_malloc()
    try:
        queue.put(target(*args))
    except Exception as err:
        traceback.print_exc()
        queue.put({"error": f"{type(err).__name__}: {err}"})


def in_child(device: str, target: Callable[..., Any], *args: Any) -> Any:
    """``target(*args)`` in a fresh child process (forked on CPU, spawned on GPU), so that its memory is its own,
    with glibc's malloc thresholds pinned unless ``--malloc default`` (:data:`MALLOC`); an error row if the child
    dies without an answer (killed, crashed)."""
    ctx = mp.get_context("fork") if device == "cpu" else mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue, torch.get_num_threads(), MALLOC[0] == "pinned", target,
                                                      *args))
    child.start()
    while True:
        try:
            result = queue.get(timeout=1.0)
            break
        except queues.Empty:
            if not child.is_alive():
                try:
                    result = queue.get(timeout=1.0)
                except queues.Empty:
                    result = {"error": f"the child process died (exit code {child.exitcode})"}
                break
    child.join()
    return result


def run_model(args: argparse.Namespace, model: str, methods: list[str], precision: str = "32") -> list[dict[str, Any]]:
    """Memory (one child per method), then timing: the light methods interleaved in one child, each slow peer
    interleaved with its own training-step reference (so that its large allocations do not disturb the others'
    timings), and ``score`` over the pool with the training step over the same batches."""
    device = torch.device(args.device)
    rows = []
    for method in methods:
        row = in_child(args.device, memory_worker, model, method, args.batch_size, device, args.chunk_size, precision)
        rows.append({"model": model, "method": method, "precision": precision,
                     "samples": args.pool if method == SCORE else args.batch_size, **row})
        print(f"{model} {precision} {method}: memory measured", file=sys.stderr, flush=True)
    rounds = args.batches or DEFAULT_BATCHES.get(model, 1)
    light = [m for m in methods if m in LIGHT]
    groups = ([light] if light else []) + [[m] for m in methods if m not in LIGHT]
    for group in groups:
        if group == [SCORE]:
            timing = in_child(args.device, score_worker, model, args.batch_size, args.pool,
                              args.rounds or DEFAULT_ROUNDS.get(model, 3), device, args.chunk_size, precision)
        else:
            timing = in_child(args.device, timing_worker, model, list(dict.fromkeys([REFERENCE, *group])),
                              args.batch_size, rounds, device, args.chunk_size, precision)
        print(f"{model} {precision} {group}: timed", file=sys.stderr, flush=True)
        for row in rows:
            if row["method"] not in group or "error" in row:
                continue
            if "error" in timing or row["method"] in timing["errors"] or REFERENCE in timing["errors"]:
                row["error"] = timing.get("error") or timing["errors"].get(row["method"]) \
                    or timing["errors"][REFERENCE]
                continue
            row["times"], row["reference_times"] = timing["times"][row["method"]], timing["times"][REFERENCE]
            row["fast_fraction"] = timing.get("fast_fraction", row["fast_fraction"])  # score: its last pool batch
    return rows


def table(results: list[dict[str, Any]], batch_size: int) -> str:
    """The results as a markdown table (throughput from the fastest timed round)."""
    lines = ["| model | precision | method | samples/s | x fwd+bwd | peak memory (MiB) | max rel. deviation from exact "
             "| fast |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        head = f"| {r['model']} | {r.get('precision', '32')} | {r['method']} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error']} | | | | |")
            continue
        rate = r.get("samples", batch_size) / min(r["times"])
        ratio = min(r["reference_times"]) / min(r["times"])
        dev = "-" if r.get("deviation") is None else f"{r['deviation']:.1e}"
        fast = "" if r.get("fast_fraction") is None else f"{r['fast_fraction']:.0%}"
        lines.append(f"{head} {rate:.1f} | {ratio:.2f} | {r['peak_mib']:.0f} | {dev} | {fast} |")
    return "\n".join(lines)


def profile_table(profile: dict[str, Any]) -> str:
    """One model's profile as a markdown table (ms per batch; the CUDA column on cuda)."""
    cuda = any(row["cuda_ms"] is not None for rows in profile["runs"].values() for row in rows)
    header = "| run | phase | ms/batch" + (" | CUDA ms/batch" if cuda else "") + " | top aten ops (self ms/batch) |"
    lines = [f"Profile of {profile['model']} ({profile['precision']}): ms per batch, each profiler range exclusive of "
             "the ranges nested in it; score = one score() call per pool batch with G_S from one labeled batch",
             "", header, "|---|---|---:" + ("|---:" if cuda else "") + "|---|"]
    for run, rows in profile["runs"].items():
        for row in rows:
            top = ", ".join(f"{op} {ms:.2f}" for op, ms in row["top"])
            device_ms = f" {row['cuda_ms']:.2f} |" if cuda else ""
            lines.append(f"| {run} | {row['phase']} | {row['ms']:.2f} |{device_ms} {top} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(FAMILIES), help=f"comma-separated, from {list(MODELS)}")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated, from {METHODS}")
    parser.add_argument("--batch-size", type=int, default=32, help="per-batch rows' batch, pool and labeled batches")
    parser.add_argument("--batches", type=int, default=None,
                        help=f"per-batch rows' timed rounds after one warm-up batch (default per model: "
                             f"{DEFAULT_BATCHES}, else 1)")
    parser.add_argument("--pool", type=int, default=1024, help="pool samples the score row scores")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"timed passes over the pool of the score row (default per model: {DEFAULT_ROUNDS}, "
                             f"else 3)")
    parser.add_argument("--precision", default="32", help=f"comma-separated, from {list(PRECISIONS)}")
    parser.add_argument("--profile", action="store_true",
                        help="per model, a torch.profiler breakdown of fwd+bwd and score() by profiler range")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--chunk-size", type=int, default=32, help="engines' chunk size")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 avoids OpenMP barrier stalls "
                             "that dominate when other processes compete for the cores")
    parser.add_argument("--malloc", choices=("pinned", "default"), default="pinned",
                        help="glibc's malloc thresholds in the workers: pinned (blocks below 32 MiB from a heap that "
                             "is not trimmed; the same in every run) or default (dynamic, set by each process's "
                             "history; rows moved by up to 0.1 between identical runs)")
    args = parser.parse_args(argv)
    MALLOC[0] = args.malloc
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    methods = [m for m in args.methods.split(",") if m]
    precisions = [p for p in args.precision.split(",") if p]
    for unknown in [m for m in methods if m not in METHODS] + [p for p in precisions if p not in PRECISIONS]:
        parser.error(f"unknown method or precision {unknown!r}")
    if not backpack_available():
        methods = [m for m in methods if not m.startswith("backpack")]
        print("BackPACK not installed: skipping its rows (pip install -e .[bench])", file=sys.stderr)
    results, profiles = [], []
    for model in args.models.split(","):  # the parent computes nothing before forking (OpenMP is not fork-safe)
        for precision in precisions:
            results += run_model(args, model, methods, precision)
        for precision in precisions if args.profile else []:
            profile = in_child(args.device, profile_worker, model, args.batch_size, torch.device(args.device),
                               args.chunk_size, precision)
            profiles.append(profile | {"model": model, "precision": precision})
            print(f"{model} {precision}: profiled", file=sys.stderr, flush=True)
    for r in results:
        reference = next((f for f in results if f["model"] == r["model"] and f["precision"] == r["precision"]
                          and f["method"] == "func" and "sqnorm" in f), None)
        r["deviation"] = _deviation(r, reference)
    machine = {"device": args.device, "cpu": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
               "batch_size": args.batch_size, "timed_batches": args.batches or DEFAULT_BATCHES,
               "pool": args.pool, "score_rounds": args.rounds or DEFAULT_ROUNDS,
               "malloc": "default (no mallopt)" if args.malloc == "pinned" and _mallopt() is None else args.malloc}
    if args.device == "cuda":
        machine["gpu"] = torch.cuda.get_device_name()
    print(f"Scoring benchmark: {machine}\n")
    if SCORE in methods:
        print(f"score row: DynamicAL(engine='auto').score over a pool of {args.pool} samples in batches of "
              f"{args.batch_size}, G_S included (one labeled batch of {args.batch_size}); its x fwd+bwd is a "
              f"training step over the same pool batches / score(), best of the score_rounds above. Other rows: "
              f"one batch of {args.batch_size}.\n")
    print(table(results, args.batch_size))
    for profile in profiles:
        print("\n" + (f"Profile of {profile['model']}: failed: {profile['error']}" if "error" in profile
                      else profile_table(profile)))
    summary = [{k: v for k, v in r.items() if k not in ("sqnorm", "dots")}
               | ({"samples_per_s": r["samples"] / min(r["times"]),
                   "mean_samples_per_s": r["samples"] * len(r["times"]) / sum(r["times"]),
                   "reference_samples_per_s": r["samples"] / min(r["reference_times"])}
                  if "times" in r else {}) for r in results]
    print(json.dumps({"machine": machine, "results": summary, "profile": profiles}))


if __name__ == "__main__":
    main()
