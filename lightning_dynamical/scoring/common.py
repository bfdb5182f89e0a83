"""Pieces every scoring engine shares: the module scoring runs, parameter selection, eval mode, summed gradients."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch._dynamo.eval_frame import OptimizedModule
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_dynamical.scoring.engine import phase
from lightning_dynamical.scoring.exact import buffers_kept, parameter_gradients
from lightning_dynamical.scoring.norm_gradients import DenseNormGradients
from lightning_dynamical.scoring.trace import samples_independent
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import (
    LABEL_KEY,
    Inputs,
    batch_inputs,
    batch_size,
    batch_targets,
    forward_logits,
    take,
    to_model,
)
from lightning_dynamical.tasks.classification import CLASSIFICATION

ParamSpec = str | Sequence[str] | None
"""Which parameters form theta: ``None`` (all trainable), ``"last_layer"``, or a list of names."""


HALF_DTYPES = (torch.float16, torch.bfloat16)
"""Parameter dtypes scoring upcasts to float32 (see :func:`scoring_model`)."""


@contextlib.contextmanager
def scoring_model(model: nn.Module) -> Iterator[nn.Module]:
    """The module every scoring entry point runs: ``model`` as built, run eagerly and in at least float32.

    - ``torch.compile``: a compiled model is unwrapped (``_orig_mod``), compiled submodules are swapped for their
      originals, and compiled forwards (``trainer.fit(torch.compile(module))``) run eagerly (the ``force_eager``
      stance). Parameter names are the original ones (no ``_orig_mod.``), and the scoring's many batch shapes
      (per-sample, probe and chunked forwards) never trace or recompile.
    - half precision (``precision="bf16-true"``/``"16-true"``): float16/bfloat16 parameters and buffers are swapped
      for float32 copies (tied ones stay tied), so that the forward, the backward and every product run in float32:
      scores are those of the stored half-precision weights up to float32 rounding (a half-precision forward alone
      is off by about 1e-2 relative). Costs float32 copies of those tensors while scoring. float32 and float64
      models run in their own dtype.

    Yields the module to score; on exit every swapped module, parameter and buffer is put back (the same objects,
    so optimizers, DDP and hooks keep theirs).
    """
    while isinstance(model, OptimizedModule):
        model = model._orig_mod
    with torch.compiler.set_stance("force_eager"), _uncompiled_submodules(model), _float32(model):
        yield model


@contextlib.contextmanager
def _uncompiled_submodules(model: nn.Module) -> Iterator[None]:
    """Swap every compiled submodule (``OptimizedModule``, nested too) for its original module until exit."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for parent in list(model.modules()):
            for name, child in list(parent._modules.items()):
                if isinstance(child, OptimizedModule):
                    original: nn.Module = child
                    while isinstance(original, OptimizedModule):
                        original = original._orig_mod
                    parent._modules[name] = original
                    swapped.append((parent, name, child))
        yield
    finally:
        for parent, name, child in reversed(swapped):
            parent._modules[name] = child


@contextlib.contextmanager
def _float32(model: nn.Module) -> Iterator[None]:
    """Swap float16/bfloat16 parameters and buffers for float32 copies until exit (the same copy for a shared one).

    Set as attributes, so that modules which keep their own references (``nn.LSTM``'s flat weights) follow; a
    parameter's gradient hooks are registered on its copy."""
    copies: dict[int, Tensor] = {}
    swapped: list[tuple[nn.Module, str, Tensor]] = []
    try:
        for module in list(model.modules()):
            for table, parameter in ((module._parameters, True), (module._buffers, False)):
                for name, t in list(table.items()):
                    if t is None or t.dtype not in HALF_DTYPES:
                        continue
                    if id(t) not in copies:
                        copy = t.detach().float()
                        copy = nn.Parameter(copy, requires_grad=t.requires_grad) if parameter else copy
                        for hook in (getattr(t, "_backward_hooks", None) or {}).values():
                            copy.register_hook(hook)
                        copies[id(t)] = copy
                    swapped.append((module, name, t))
                    setattr(module, name, copies[id(t)])
        yield
    finally:
        for module, name, t in reversed(swapped):
            setattr(module, name, t)


def last_linear_name(model: nn.Module) -> str:
    """Qualified name of the last ``nn.Linear`` registered in the model (the classifier head)."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError("params='last_layer' needs an nn.Linear classifier head; the model has none")
    return names[-1]


def select_parameters(model: nn.Module, params: ParamSpec = None, head: str | None = None) -> dict[str, nn.Parameter]:
    """The named trainable parameters that form theta (shared parameters appear once); ``"last_layer"`` takes the
    module named ``head`` (found by :func:`~lightning_dynamical.scoring.features.head_call`), else the last
    registered ``nn.Linear``."""
    named = dict(model.named_parameters())
    if params is None:
        chosen = [n for n, p in named.items() if p.requires_grad]
    elif params == "last_layer":
        prefix = (head or last_linear_name(model)) + "."
        chosen = [n for n in named if n.startswith(prefix) and named[n].requires_grad]
    else:
        if isinstance(params, str):
            raise ValueError(f"params must be None, 'last_layer' or a list of names, got {params!r}")
        unknown = [n for n in params if n not in named]
        if unknown:
            raise ValueError(f"Unknown parameter names {unknown}; the model has {sorted(named)}")
        chosen = list(dict.fromkeys(params))
    if not chosen:
        raise ValueError(f"No trainable parameters selected by params={params!r}")
    return {n: named[n] for n in chosen}


def summed_gradient(
    model: nn.Module,
    loader: Iterable[Any],
    params: Mapping[str, nn.Parameter],
    pseudo_labels: bool = False,
    label_key: str = LABEL_KEY,
    task: Task = CLASSIFICATION,
) -> dict[str, Tensor]:
    """Sum over a loader of grad_theta of the task's loss summed over each batch (``CE_sum(model(x), y)`` for
    classification), one batched backward per batch; one backward per sample where the model couples the samples of
    a batch (:func:`coupled_samples`, or a forward of some of them alone gives other logits), so that ``G_S`` sums the
    gradients of samples taken alone, as the pool's are scored.

    With ``pseudo_labels`` the targets are the task's pseudo targets of each batch (``argmax model(x)`` for
    classification, at the real tokens only for token classification; for a set of queried pool samples), else the
    batches' targets, checked by the task.
    The caller sets the model's mode (eval for scoring); parameters' ``.grad`` is left untouched.
    """
    names = list(params)
    tensors = [params[n] for n in names]
    total = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in tensors]
    coupled = coupled_samples(model) is not None
    for batch in loader:
        with phase("labeled_gradient"):
            inputs = to_model(batch_inputs(batch, label_key), model)
            targets = None if pseudo_labels else batch_targets(batch, label_key)
            several = batch_size(inputs) > 1
            logits = None if coupled and several else _differentiable_logits(model, inputs, task)
            alone = logits is None or several and not samples_independent(model, inputs, logits, task)
            with buffers_kept(model) if alone else contextlib.nullcontext():
                for part, part_targets in _parts(inputs, targets, alone):
                    out = _differentiable_logits(model, part, task) if alone or logits is None else logits
                    with torch.enable_grad():
                        y = (task.batch_pseudo_targets(out, part) if part_targets is None
                             else task.prepare_targets(part_targets, out))
                        grads = parameter_gradients(task.loss(out, y), tensors)
                    for acc, g in zip(total, grads):
                        if g is not None:
                            acc.add_(g)
    return dict(zip(names, total))


def _differentiable_logits(model: nn.Module, inputs: Inputs, task: Task) -> Tensor:
    """The forward under autograd; over one sample, normalisations get dense output gradients (``norm_gradients``)."""
    with torch.enable_grad(), DenseNormGradients() if batch_size(inputs) == 1 else contextlib.nullcontext():
        return forward_logits(model, inputs, task)


def uses_batch_statistics(model: nn.Module) -> bool:
    """Whether some BatchNorm normalises with the batch's statistics (samples are then not independent)."""
    return any(isinstance(m, _BatchNorm) and (m.training or m.running_mean is None) for m in model.modules())


def coupled_samples(model: nn.Module) -> str | None:
    """Why a batch's gradient is not the sum of its samples' gradients, each sample alone, or ``None``: a BatchNorm
    that normalises with the batch's statistics, an embedding that scales its gradient by the batch's counts."""
    if uses_batch_statistics(model):
        return "a BatchNorm normalises with batch statistics"
    if any(isinstance(m, nn.Embedding) and m.scale_grad_by_freq for m in model.modules()):
        return "an embedding scales its gradient by the batch's token counts (scale_grad_by_freq)"
    return None


def alone_pseudo_targets(model: nn.Module, inputs: Inputs, task: Task) -> Tensor:
    """Each sample's pseudo targets from a forward of that sample alone: where a batch's forward couples its
    samples, the exact paths score each sample as a batch of its own, and its pseudo label is that forward's."""
    parts = []
    with torch.no_grad(), buffers_kept(model):
        for i in range(batch_size(inputs)):
            one = take(inputs, [i])
            parts.append(task.batch_pseudo_targets(forward_logits(model, one, task), one))
    return task.concat_targets(parts)


def _parts(inputs: Inputs, targets: Tensor | None, alone: bool) -> Iterator[tuple[Inputs, Tensor | None]]:
    """The batch whole, or one sample at a time (its targets too) where the model couples samples."""
    if not alone:
        yield inputs, targets
        return
    for i in range(batch_size(inputs)):
        yield take(inputs, [i]), None if targets is None else targets[i: i + 1]
