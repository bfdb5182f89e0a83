"""The batch and output contract: inputs and targets from any batch, logits from any output.

A batch is a tensor (inputs only), a tuple/list ``(inputs, target, ...)`` whose inputs are a tensor or a
tuple/list of tensors (positional inputs, ``((x1, x2), y)``, each batched on dim 0), or a mapping (Hugging Face
style) whose ``label_key`` entry is the target and whose other entries are the model's keyword inputs.
The model is called as ``model(**inputs)`` for mappings, ``model(*inputs)`` for positional inputs and
``model(inputs)`` otherwise; its output is
the logits tensor itself, an object with ``.logits`` (a ``ModelOutput``), a mapping with ``"logits"``,
or a tuple/list whose first element is the logits. Anything else: override the model's ``forward``. The logits'
shape is the task's (:meth:`~lightning_dynamical.tasks.base.Task.check_output`; ``(batch, classes)`` by default).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.classification import CLASSIFICATION

Inputs = Tensor | tuple[Tensor, ...] | dict[str, Any]
"""What the model is called with: one tensor, positional tensors (``model(*inputs)``), or keyword inputs."""

LABEL_KEY = "labels"


def split_batch(batch: Any, label_key: str = LABEL_KEY) -> tuple[Inputs, Tensor | None]:
    """``(inputs, target or None)`` of a batch (see the module docstring for the accepted forms)."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        inputs = {k: v for k, v in batch.items() if k != label_key}
        if not any(isinstance(v, Tensor) for v in inputs.values()):
            raise TypeError(f"A dict batch needs at least one tensor input besides {label_key!r}; got keys "
                            f"{sorted(batch)}")
        target = batch.get(label_key)
        return inputs, target if isinstance(target, Tensor) else None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], (Tensor, tuple, list)):
        target = batch[1] if len(batch) >= 2 and isinstance(batch[1], Tensor) else None
        return batch[0] if isinstance(batch[0], Tensor) else _positional(batch[0], label_key), target
    raise TypeError(f"A batch must be a tensor, a tuple/list (inputs, target, ...) whose inputs are a tensor or a "
                    f"tuple/list of tensors (model(*inputs)), or a dict; got {_described(batch)}. "
                    f"{_dict_alternative(label_key)}")


def _positional(inputs: tuple | list, label_key: str) -> tuple[Tensor, ...]:
    """Positional inputs as a tuple, every element a tensor (refused otherwise, naming the element)."""
    if not inputs:
        raise TypeError(f"The inputs (element 0) of a batch are an empty {type(inputs).__name__}. "
                        f"{_dict_alternative(label_key)}")
    for i, v in enumerate(inputs):
        if not isinstance(v, Tensor):
            raise TypeError(f"Positional inputs must all be tensors; element {i} of the batch's inputs (element 0) "
                            f"is {_described(v)}. {_dict_alternative(label_key)}")
    return tuple(inputs)


def _described(value: Any) -> str:
    """What a refused value is, down to the unexpected element of a tuple/list."""
    name = type(value).__name__
    if isinstance(value, (tuple, list)):
        return f"a {name} whose element 0 is {_described(value[0])}" if value else f"an empty {name}"
    return f"a {name}"


def _dict_alternative(label_key: str) -> str:
    return (f"Other inputs go in a dict batch, {{'x1': ..., 'x2': ..., {label_key!r}: target}}, and the model is "
            "called as model(**inputs)")


def batch_inputs(batch: Any, label_key: str = LABEL_KEY) -> Inputs:
    """The model inputs of a batch."""
    return split_batch(batch, label_key)[0]


def batch_targets(batch: Any, label_key: str = LABEL_KEY) -> Tensor:
    """The targets of a labeled batch: its second element, or its ``label_key`` entry."""
    target = split_batch(batch, label_key)[1]
    if target is None:
        where = f"a {label_key!r} entry" if isinstance(batch, Mapping) else "a second element"
        raise TypeError(f"A labeled batch needs {where} holding the targets; got {type(batch).__name__}")
    return target


def batch_size(inputs: Inputs) -> int:
    """Samples in the inputs: dim 0 of the tensor, of every positional tensor (checked equal: each is indexed by
    sample), or of the first tensor of keyword inputs."""
    if isinstance(inputs, Tensor):
        return inputs.shape[0]
    if isinstance(inputs, tuple):
        shapes = [tuple(v.shape) for v in inputs]
        if not shapes or any(len(s) == 0 or s[0] != shapes[0][0] for s in shapes):
            raise TypeError(f"Positional inputs must all be tensors batched on dim 0; got shapes {shapes}. Inputs "
                            "that are not batched go in a dict batch (model(**inputs)), where they are kept whole")
        return shapes[0][0]
    for v in inputs.values():
        if isinstance(v, Tensor) and v.ndim > 0:
            return v.shape[0]
    raise TypeError(f"Keyword inputs need a batched tensor; got keys {sorted(inputs)}")


def take(inputs: Inputs, positions: Tensor | Sequence[int]) -> Inputs:
    """The samples at ``positions`` (every tensor whose dim 0 is the batch is indexed; others kept)."""
    b = batch_size(inputs)
    idx = torch.as_tensor(positions, dtype=torch.long)
    if isinstance(inputs, Tensor):
        return inputs[idx.to(inputs.device)]
    if isinstance(inputs, tuple):
        return tuple(v[idx.to(v.device)] for v in inputs)
    return {k: v[idx.to(v.device)] if _batched(v, b) else v for k, v in inputs.items()}


def same_inputs(inputs: Inputs, i: int, j: int) -> bool:
    """Whether samples ``i`` and ``j`` have equal inputs (each tensor batched on dim 0 compared; NaN differs)."""
    b = batch_size(inputs)
    if isinstance(inputs, Tensor):
        tensors = [inputs]
    elif isinstance(inputs, tuple):
        tensors = list(inputs)
    else:
        tensors = [v for v in inputs.values() if _batched(v, b)]
    return all(bool(torch.equal(t[i], t[j])) for t in tensors)


def batched_mask(inputs: Inputs) -> Any:
    """``vmap`` ``in_dims`` for the inputs: 0 for every tensor whose dim 0 is the batch, else ``None``."""
    if isinstance(inputs, Tensor):
        return 0
    b = batch_size(inputs)
    if isinstance(inputs, tuple):
        return (0,) * len(inputs)
    return {k: 0 if _batched(v, b) else None for k, v in inputs.items()}


def unsqueeze(inputs: Inputs, mask: Any) -> Inputs:
    """Undo ``vmap``'s removal of the batch dimension (one sample becomes a batch of one)."""
    if isinstance(inputs, Tensor):
        return inputs.unsqueeze(0)
    if isinstance(inputs, tuple):
        return tuple(v.unsqueeze(0) for v in inputs)
    return {k: v.unsqueeze(0) if mask[k] == 0 else v for k, v in inputs.items()}


def _batched(v: Any, b: int) -> bool:
    return isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == b


def to_model(inputs: Inputs, model: nn.Module) -> Inputs:
    """Move inputs to the model's device, casting floating tensors to the model's dtype."""
    device, dtype = model_device_dtype(model)

    def move(v: Any) -> Any:
        if not isinstance(v, Tensor):
            return v
        if v.is_floating_point():
            return v.to(device=device, dtype=dtype, non_blocking=True)
        return v.to(device=device, non_blocking=True)

    if isinstance(inputs, tuple):
        return tuple(move(v) for v in inputs)
    return move(inputs) if isinstance(inputs, Tensor) else {k: move(v) for k, v in inputs.items()}


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of the model's first parameter (CPU/float32 for parameter-free models)."""
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def arguments(inputs: Inputs) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` the model is called with: ``(inputs,)``, the positional tensors, or the keyword inputs."""
    if isinstance(inputs, dict):
        return (), inputs
    return (inputs if isinstance(inputs, tuple) else (inputs,)), {}


def call(model: nn.Module, inputs: Inputs) -> Any:
    """``model(**inputs)`` for keyword inputs, ``model(*inputs)`` for positional ones, else ``model(inputs)``."""
    args, kwargs = arguments(inputs)
    return model(*args, **kwargs)


def structure(batch: Any, label_key: str = LABEL_KEY) -> tuple[str, bool]:
    """``(form, has_target)``: how a batch holds its inputs (equal forms: the model is called the same way) and
    whether it holds a target; raises ``TypeError`` for a batch outside the contract."""
    inputs, target = split_batch(batch, label_key)
    if isinstance(inputs, dict):
        form = f"dict batches with keyword inputs {sorted(inputs)}"
    elif isinstance(inputs, tuple):
        form = f"tuple/list batches ((x1, ..., x{len(inputs)}), ...) of {len(inputs)} positional inputs"
    else:
        form = "tensor batches (inputs only)" if isinstance(batch, Tensor) else "tuple/list batches (x, ...)"
    return form, target is not None


def logits_of(output: Any, batch: int, task: Task = CLASSIFICATION) -> Tensor:
    """The logits in a model output, checked by ``task`` (``(batch, classes)`` for classification); fails clearly
    otherwise (:meth:`~lightning_dynamical.tasks.base.Task.check_output`)."""
    logits = output
    if not isinstance(logits, Tensor):
        if isinstance(output, Mapping) and "logits" in output:
            logits = output["logits"]
        elif isinstance(getattr(output, "logits", None), Tensor):
            logits = output.logits
        elif isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
            logits = output[0]
    if not isinstance(logits, Tensor):
        raise ValueError(task.output_error(type(output).__name__, batch))
    return task.check_output(logits, batch)


def forward_logits(model: nn.Module, inputs: Inputs, task: Task = CLASSIFICATION) -> Tensor:
    """Call the model on the inputs and return its logits (``(batch, classes)`` for classification)."""
    return logits_of(call(model, inputs), batch_size(inputs), task)


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
