"""Pieces every scoring engine shares: batches, parameter selection, eval mode, summed gradients."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

ParamSpec = str | Sequence[str] | None
"""Which parameters form theta: ``None`` (all trainable), ``"last_layer"``, or a list of names."""


def batch_inputs(batch: Any) -> Tensor:
    """The input tensor of a batch: the batch itself, or the first element of a tuple/list."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise TypeError(
        f"A batch must be a tensor or a tuple/list whose first element is the input tensor, got {type(batch)}"
    )


def batch_targets(batch: Any) -> Tensor:
    """The target tensor of a labeled batch: the second element of a tuple/list."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[1], Tensor):
        return batch[1]
    raise TypeError(f"A labeled batch must be a tuple/list (input, target, ...), got {type(batch)}")


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of the model's first parameter (CPU/float32 for parameter-free models)."""
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def to_model(x: Tensor, model: nn.Module) -> Tensor:
    """Move an input to the model's device, casting floating inputs to the model's dtype."""
    device, dtype = model_device_dtype(model)
    if x.is_floating_point():
        return x.to(device=device, dtype=dtype, non_blocking=True)
    return x.to(device=device, non_blocking=True)


def last_linear_name(model: nn.Module) -> str:
    """Qualified name of the last ``nn.Linear`` registered in the model (the classifier head)."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError("params='last_layer' needs an nn.Linear classifier head; the model has none")
    return names[-1]


def select_parameters(model: nn.Module, params: ParamSpec = None) -> dict[str, nn.Parameter]:
    """The named trainable parameters that form theta (shared parameters appear once)."""
    named = dict(model.named_parameters())
    if params is None:
        chosen = [n for n, p in named.items() if p.requires_grad]
    elif params == "last_layer":
        prefix = last_linear_name(model) + "."
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


@contextlib.contextmanager
def evaluation(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode and restore each module's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def check_logits(out: Any, batch_size: int) -> Tensor:
    """Fail clearly unless the model returned logits of shape (batch, classes)."""
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != batch_size:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"The model must return logits of shape (batch, classes); got {shape} for a batch of "
                         f"{batch_size}")
    return out


def summed_gradient(
    model: nn.Module,
    loader: Iterable[Any],
    params: Mapping[str, nn.Parameter],
    pseudo_labels: bool = False,
) -> dict[str, Tensor]:
    """Sum over a loader of grad_theta CE_sum(model(x), y), one batched backward per batch.

    With ``pseudo_labels`` the targets are ``argmax model(x)`` (for a set of queried pool samples).
    The caller sets the model's mode (eval for scoring); parameters' ``.grad`` is left untouched.
    """
    names = list(params)
    tensors = [params[n] for n in names]
    total = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in tensors]
    for batch in loader:
        x = to_model(batch_inputs(batch), model)
        with torch.enable_grad():
            logits = check_logits(model(x), x.shape[0])
            y = logits.argmax(1) if pseudo_labels else batch_targets(batch).to(logits.device)
            loss = nn.functional.cross_entropy(logits, y, reduction="sum")
            grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        for acc, g in zip(total, grads):
            if g is not None:
                acc.add_(g)
    return dict(zip(names, total))
