"""One no-grad pass over a loader: softmax probabilities, penultimate features (per sample, or per pixel or token for
a segmentation or token head), MC-dropout passes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lightning_dynamical.scoring.common import scoring_model
from lightning_dynamical.scoring.features import features_and_logits, head_of
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import (
    LABEL_KEY,
    Inputs,
    batch_inputs,
    evaluation,
    forward_logits,
    model_device_dtype,
    to_model,
)
from lightning_dynamical.tasks.tokens import TokenClassification

DROPOUT_TYPES = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)


def collect(
    model: nn.Module,
    loader: Iterable[Any],
    fn: Callable[[Inputs], tuple[Tensor, ...]],
    progress: bool = False,
    desc: str = "Inference",
    label_key: str = LABEL_KEY,
    join: Callable[[Sequence[Tensor]], Tensor] | None = None,
) -> tuple[Tensor, ...]:
    """Apply ``fn`` to every batch's input (on the model's device, no grad) and concatenate on the CPU (``torch.cat``,
    or ``join``: a task's :meth:`~lightning_dynamical.tasks.base.Task.concat_targets` for pseudo targets of batches
    padded to different lengths).

    The caller sets the model's mode. Floating outputs are cast to float64 (scores are computed and ranked
    in float64). An empty loader gives ``()``.
    """
    parts: list[tuple[Tensor, ...]] = []
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
            out = fn(to_model(batch_inputs(batch, label_key), model))
            parts.append(tuple(t.detach().cpu().double() if t.is_floating_point() else t.detach().cpu()
                               for t in out))
    return tuple(torch.cat(ts) if join is None else join(ts) for ts in zip(*parts))


def probabilities(model: nn.Module, loader: Iterable[Any], progress: bool = False,
                  label_key: str = LABEL_KEY) -> Tensor:
    """``(N, C)`` softmax outputs in eval mode (every module's mode restored afterwards), of the
    :func:`~lightning_dynamical.scoring.common.scoring_model` (eager, at least float32)."""
    with scoring_model(model) as model, evaluation(model):
        out = collect(model, loader, lambda x: (softmax(forward_logits(model, x)),), progress, "Predicting",
                      label_key)
    return out[0] if out else torch.zeros(0, 0, dtype=torch.float64)


def features_and_probabilities(model: nn.Module, loader: Iterable[Any], progress: bool = False,
                               label_key: str = LABEL_KEY) -> tuple[Tensor, Tensor]:
    """``(h (N, D), p (N, C))``: inputs of the classifier head and softmax outputs, in eval mode."""

    def fn(x: Inputs) -> tuple[Tensor, Tensor]:
        h, logits, _ = features_and_logits(model, x)
        return h, softmax(logits)

    with scoring_model(model) as model, evaluation(model):
        out = collect(model, loader, fn, progress, "Embedding", label_key)
    if not out:
        return torch.zeros(0, 0, dtype=torch.float64), torch.zeros(0, 0, dtype=torch.float64)
    return out[0], out[1]


ConvHead = nn.Conv1d | nn.Conv2d | nn.Conv3d
"""The convolutions a segmentation head may be (:func:`pointwise_head_of`)."""


def pointwise_head_of(model: nn.Module) -> ConvHead:
    """The model's last registered 1x1 convolution (stride 1, no padding, one group): a segmentation head, the
    per-pixel counterpart of :func:`~lightning_dynamical.scoring.features.head_of`."""
    heads = [m for m in model.modules() if isinstance(m, ConvHead)
             and set(m.kernel_size) == {1} and set(m.stride) == {1} and m.groups == 1
             and (isinstance(m.padding, str) or not any(m.padding))]
    if not heads:
        raise ValueError("The segmentation model needs a 1x1 convolution head (e.g. nn.Conv2d(features, classes, 1)) "
                         "whose output is the logits; it has none")
    return heads[-1]


def position_head_of(model: nn.Module, task: Task) -> nn.Linear | ConvHead:
    """The head applied at every position of ``task``'s logits: the last ``nn.Linear`` for token classification (on
    ``(batch, tokens, features)``), else the last 1x1 convolution (:func:`pointwise_head_of`, segmentation)."""
    return head_of(model) if isinstance(task, TokenClassification) else pointwise_head_of(model)


def position_features_and_logits(model: nn.Module, inputs: Inputs, task: Task) -> tuple[Tensor, Tensor]:
    """``(h, logits)`` in the task's layout: the input of the position head (:func:`position_head_of`) at every
    position (``(batch, D, *spatial)`` for segmentation, ``(batch, tokens, D)`` for tokens), and the logits, which
    must be the head's output (no upsampling or other layer after it, or the head's input would not be the features
    of the logits' positions)."""
    head = position_head_of(model, task)
    what = "nn.Linear" if isinstance(head, nn.Linear) else "1x1 convolution"
    seen: list[tuple[Tensor, Tensor]] = []
    handle = head.register_forward_hook(lambda _m, args, out: seen.append((args[0], out)))
    try:
        logits = forward_logits(model, inputs, task)
    finally:
        handle.remove()
    why = (f"it ran {len(seen)} times in one forward" if len(seen) != 1
           else f"its output has shape {tuple(seen[0][1].shape)}" if seen[0][1].shape != logits.shape
           else "its output differs from them (a layer after it?)" if not torch.equal(seen[0][1], logits) else None)
    if why:
        raise ValueError(f"The logits {tuple(logits.shape)} must be the output of the model's last {what} "
                         f"({type(head).__name__}, run once per forward, nothing after it); {why}")
    return seen[0][0], logits


def has_dropout(model: nn.Module) -> bool:
    """Whether the model contains a dropout module (needed for MC dropout)."""
    return any(isinstance(m, DROPOUT_TYPES) for m in model.modules())


@contextlib.contextmanager
def mc_dropout(model: nn.Module, seed: int) -> Iterator[nn.Module]:
    """Eval mode except dropout modules (BatchNorm stays frozen), under a forked RNG seeded by ``seed``; yields the
    :func:`~lightning_dynamical.scoring.common.scoring_model`.

    The CPU RNG and that of the model's device are forked, so the global RNG streams are left untouched
    and the same seed gives the same dropout masks. Every module's mode is restored on exit.
    """
    if not has_dropout(model):
        raise ValueError("MC dropout needs a model with an nn.Dropout-type module; this one has none")
    device = model_device_dtype(model)[0]
    accelerated = device.type != "cpu"
    devices, device_type = ([device], device.type) if accelerated else ([], "cuda")  # []: CPU RNG only
    with scoring_model(model) as model, evaluation(model), torch.random.fork_rng(devices, device_type=device_type):
        for m in model.modules():
            if isinstance(m, DROPOUT_TYPES):
                m.train()
        torch.random.default_generator.manual_seed(seed)
        if accelerated:
            module = torch.get_device_module(device.type)
            with module.device(device):
                module.manual_seed(seed)
        yield model


def softmax(logits: Tensor) -> Tensor:
    """Softmax over classes, in float64."""
    return logits.double().softmax(-1)
