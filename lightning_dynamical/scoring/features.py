"""The classifier head, found by what it computes: the ``nn.Linear`` whose output is the model's logits; and the
penultimate features (its input) with the logits in one forward."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from lightning_dynamical.scoring.common import ParamSpec, last_linear_name, select_parameters
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import Inputs, batch_inputs, forward_logits, to_model
from lightning_dynamical.tasks.classification import CLASSIFICATION
from lightning_dynamical.tasks.segmentation import Segmentation


def head_of(model: nn.Module) -> nn.Linear:
    """The model's last registered ``nn.Linear`` (a guess at its head, checked by the callers against the logits)."""
    return cast(nn.Linear, model.get_submodule(last_linear_name(model)))


def head_call(model: nn.Module, inputs: Inputs, task: Task = CLASSIFICATION) -> tuple[str, nn.Linear, Tensor, Tensor]:
    """``(name, head, its input, logits)`` of one forward, where the head is the ``nn.Linear`` whose output is the
    logits (not the last one registered: a head defined before the body, or a layer after the head, would make that
    another layer). A ``ValueError`` when no ``nn.Linear`` called once computes the logits (a cosine classifier, a
    scaled head): the head's gradient and input are then not what last-layer methods and penultimate features
    assume."""
    calls: list[tuple[str, nn.Linear, Tensor, Tensor]] = []
    handles = [m.register_forward_hook(lambda mod, args, out, name=name: calls.append((name, mod, args[0], out)))
               for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        logits = forward_logits(model, inputs, task)
    finally:
        for handle in handles:
            handle.remove()
    heads = [c for c in calls if c[3] is logits or (c[3].shape == logits.shape and torch.equal(c[3], logits))]
    runs = sum(c[1] is heads[0][1] for c in calls) if heads else 0
    if len(heads) != 1 or runs != 1:
        why = ("no nn.Linear's output is them" if not heads
               else f"the head {heads[0][0]!r} runs {runs} times per forward"
               if len(heads) == 1 else f"{len(heads)} nn.Linear outputs equal them")
        raise ValueError(f"The logits {tuple(logits.shape)} must be the output of one nn.Linear head, run once per "
                         f"forward with nothing after it (last-layer gradients and features assume it); {why}")
    name, head, h, _ = heads[0]
    return name, head, h, logits


def features_and_logits(model: nn.Module, inputs: Inputs) -> tuple[Tensor, Tensor, nn.Linear]:
    """``(h, logits, head)`` where ``h`` is the input of the head (:func:`head_call`) and ``logits`` the model's.

    The caller chooses grad mode and model mode. The head must be applied to ``(batch, features)``.
    """
    _, head, h, logits = head_call(model, inputs)
    if h.ndim != 2:
        raise ValueError(f"The classifier head must be applied to (batch, features) inputs; its input has shape "
                         f"{tuple(h.shape)}")
    return h, logits, head


def parameters_on(model: nn.Module, params: ParamSpec, loader: Any, label_key: str,
                  task: Task = CLASSIFICATION) -> dict[str, nn.Parameter]:
    """:func:`~lightning_dynamical.scoring.common.select_parameters`, ``"last_layer"`` being the head
    :func:`head_call` finds on the first batch of ``loader`` (read only then, and only when that leaves it whole) where
    the task's head is an ``nn.Linear``, else (logits not one ``nn.Linear``'s output: a temperature, GPT-2's
    last-token pick) the last registered ``nn.Linear``: the gradients of whichever parameters are chosen are exact."""
    head = None
    if params == "last_layer" and not isinstance(task, Segmentation) and iter(loader) is not loader:
        batch = next(iter(loader), None)
        if batch is not None:
            with torch.no_grad():
                try:
                    head = head_call(model, to_model(batch_inputs(batch, label_key), model), task)[0]
                except ValueError:
                    head = None
    return select_parameters(model, params, head)
