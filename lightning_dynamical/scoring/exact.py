"""Exact per-sample gradients for any model: ``torch.func`` where it can, a per-sample autograd loop elsewhere.

``vmap`` cannot run data-dependent control flow (Hugging Face attention masks), ``.item()`` (DeBERTa) or
saved-tensor hooks (gradient checkpointing); a loop of one forward and one ``autograd.grad`` per sample
runs every model the way it runs in training, only slower. :class:`ExactGradients` tries ``vmap`` once per
model and parameter set and remembers why it failed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lightning_dynamical.errors import check_optional_positive_int
from lightning_dynamical.scoring.norm_gradients import DenseNormGradients
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import (
    Inputs,
    arguments,
    batch_size,
    batched_mask,
    forward_logits,
    logits_of,
    take,
    unsqueeze,
)
from lightning_dynamical.tasks.classification import CLASSIFICATION


class ScoringError(RuntimeError):
    """An engine cannot score this model; the message says why and which engine can."""


def vmap_gradients(model: nn.Module, inputs: Inputs, y: Tensor, params: Mapping[str, Tensor],
                   chunk_size: int | None, task: Task = CLASSIFICATION) -> dict[str, Tensor]:
    """``{name: (B, *shape)}`` gradients of the task's loss of ``(model(x_i), y_i)`` per sample (``CE`` for
    classification) with ``vmap(grad)``."""
    selected = {n: p.detach() for n, p in params.items()}
    constants = {n: p.detach() for n, p in model.named_parameters() if n not in selected}
    constants.update(dict(model.named_buffers()))
    mask = batched_mask(inputs)

    def loss(theta: dict[str, Tensor], xi: Inputs, yi: Tensor) -> Tensor:
        one = unsqueeze(xi, mask)
        state = {**constants, **theta}
        out = functional_call(model, state, *arguments(one))
        return task.loss(logits_of(out, 1, task), yi.unsqueeze(0))

    return vmap(grad(loss), in_dims=(None, mask, 0), chunk_size=chunk_size)(selected, inputs, y)


def unscorable(err: BaseException) -> ScoringError | None:
    """What to change, where a backward failed because of how the model runs rather than a limit of a path."""
    text = str(err)
    if "use_reentrant=True" in text:
        return ScoringError(
            "This model runs torch.utils.checkpoint with use_reentrant=True in the forward it is scored with, which "
            "refuses torch.autograd.grad; the exact paths and G_S need it. Use use_reentrant=False (PyTorch's "
            "recommendation; it gives the same gradients), or checkpoint only while training (`if self.training`), as "
            "Hugging Face models do.")
    if "backward through the graph a second time" in text:
        return ScoringError(
            "A tensor this model keeps from an earlier forward carries that forward's autograd graph, which a backward "
            "already freed; scoring runs one backward per batch, in eval mode (timm's LeViT and EfficientFormer cache "
            "their attention biases this way in eval mode). Compute such a cache under torch.no_grad() or not in the "
            "forward that is scored.")
    return None


def parameter_gradients(loss: Tensor, tensors: Sequence[Tensor]) -> tuple[Tensor | None, ...]:
    """``torch.autograd.grad(loss, tensors, allow_unused=True)``, with what to change where the model refuses it."""
    try:
        return torch.autograd.grad(loss, tensors, allow_unused=True)
    except RuntimeError as err:
        reason = unscorable(err)
        if reason is not None:
            raise reason from err
        raise


def loop_gradients(model: nn.Module, inputs: Inputs, y: Tensor, params: Mapping[str, Tensor],
                   task: Task = CLASSIFICATION) -> dict[str, Tensor]:
    """The same gradients from one forward and one ``torch.autograd.grad`` per sample (any model, any task)."""
    names = list(params)
    tensors = [params[n] for n in names]
    rows: list[list[Tensor]] = [[] for _ in names]
    with _requiring_grad(tensors), buffers_kept(model), torch.enable_grad():
        for i in range(batch_size(inputs)):
            with DenseNormGradients():
                logits = forward_logits(model, take(inputs, [i]), task)
            loss = task.loss(logits, y[i: i + 1])
            grads = parameter_gradients(loss, tensors)
            for row, g, p in zip(rows, grads, tensors):
                row.append(torch.zeros_like(p) if g is None else g.detach())
    return {n: torch.stack(row) for n, row in zip(names, rows)}


@contextlib.contextmanager
def _requiring_grad(tensors: list[Tensor]) -> Iterator[None]:
    """Let frozen parameters that were selected anyway be differentiated, restoring the flags afterwards."""
    frozen = [t for t in tensors if not t.requires_grad]
    for t in frozen:
        t.requires_grad_(True)
    try:
        yield
    finally:
        for t in frozen:
            t.requires_grad_(False)


@contextlib.contextmanager
def buffers_kept(model: nn.Module) -> Iterator[None]:
    """Undo buffer updates of the per-sample forwards (BatchNorm running statistics in train mode); buffers
    left unchanged keep their version counter (part of the fast engine's proof key). Values are compared, not
    version counters: ``torch.func`` transforms can write buffers without bumping them."""
    saved = [(b, b.clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                if not torch.equal(b, value):
                    b.copy_(value)


def failure_reason(err: BaseException) -> str:
    """The first line of an exception, shortened, for warnings and ``explain``."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"{type(err).__name__}: {first[:160]}"


class ExactGradients:
    """Per-sample gradients by ``vmap`` where it works for this model, else by the per-sample loop."""

    def __init__(self, chunk_size: int | None = 32, allow_loop: bool = True) -> None:
        check_optional_positive_int("chunk_size", chunk_size)
        self.chunk_size = chunk_size
        self.allow_loop = allow_loop
        self._no_vmap: dict[tuple[int, tuple[str, ...], type[Task]], str] = {}

    def gradients(self, model: nn.Module, inputs: Inputs, y: Tensor, params: Mapping[str, Tensor],
                  task: Task = CLASSIFICATION) -> tuple[dict[str, Tensor], str, str]:
        """``(grads, path, reason)`` with path ``"vmap"`` or ``"loop"`` and why the loop was needed; ``y`` are the
        targets of ``task``'s loss (the pseudo targets when scoring)."""
        key = (id(model), tuple(params), type(task))
        hooked = [n for n, p in params.items() if getattr(p, "_backward_hooks", None)]
        if hooked:
            self._no_vmap[key] = f"{hooked} have gradient hooks, which torch.func does not run"
        if key not in self._no_vmap:
            try:
                return vmap_gradients(model, inputs, y, params, self.chunk_size, task), "vmap", ""
            except Exception as err:  # any vmap limitation: the loop below is exact for every model
                if not self.allow_loop:
                    raise ScoringError(
                        f"engine='func' cannot score this model: torch.func.vmap failed ({failure_reason(err)}). "
                        "The default engine='auto' scores it exactly, with a per-sample loop where vmap fails."
                    ) from err
                self._no_vmap[key] = f"vmap failed: {failure_reason(err)}"
        return loop_gradients(model, inputs, y, params, task), "loop", self._no_vmap[key]
