"""Model weights: loaded for ``resume_from_state`` from the checkpoint ``al_state.json`` names, or re-initialised."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from fsspec.core import url_to_fs
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn


def reference(checkpoint: str | None, dirpath: str) -> str | None:
    """How ``al_state.json`` in ``dirpath`` names ``checkpoint``: relative when it lies in ``dirpath`` (so the
    folder can be moved), else as given."""
    prefix = dirpath.rstrip("/") + "/"
    return checkpoint[len(prefix):] if checkpoint and checkpoint.startswith(prefix) else checkpoint


def resolve(checkpoint: str | None, state_path: str) -> str | None:
    """The checkpoint a state names, relative names taken from the state file's folder."""
    if not checkpoint or "://" in checkpoint or checkpoint.startswith("/"):
        return checkpoint
    return (state_path.rsplit("/", 1)[0] + "/" if "/" in state_path else "") + checkpoint


def restore_weights(pl_module: LightningModule, checkpoint: str | None, state_path: str, round: int) -> bool:
    """Load the model weights of ``checkpoint`` (the last round's, as ``al_state.json`` at ``state_path``
    names it).

    Returns whether weights were loaded. A state that names no checkpoint, or names one that is not
    there, leaves the model as it is and says so plainly (with the path to resume from where it exists);
    a checkpoint whose weights do not fit the model raises before anything changes.
    """
    checkpoint = resolve(checkpoint, state_path)
    if not checkpoint:
        rank_zero_warn(f"{state_path} names no checkpoint with the weights of the last round (it was written "
                       f"with save_round_checkpoints=False or by an older version): round {round} starts from "
                       "the model's current weights")
        return False
    fs, path = url_to_fs(checkpoint)
    if not fs.exists(path):
        rank_zero_warn(f"cannot restore the weights of the last round: {checkpoint} (named by {state_path}) does "
                       f"not exist here; round {round} starts from the model's current weights. Copy that "
                       "checkpoint here and resume again to continue from them")
        return False
    with fs.open(path, "rb") as f:
        saved = torch.load(f, map_location="cpu", weights_only=True)
    weights = saved.get("state_dict") if isinstance(saved, dict) else None
    problem = _mismatch(pl_module.state_dict(), weights)
    if problem or weights is None:
        raise RuntimeError(f"the weights in {checkpoint} (named by {state_path}) do not fit this model: {problem}; "
                           "nothing was changed")
    pl_module.load_state_dict(weights)
    rank_zero_info(f"[active learning] restored the model weights of the last round from {checkpoint}")
    return True


def _mismatch(current: dict[str, torch.Tensor], saved: dict[str, torch.Tensor] | None) -> str:
    """What keeps ``saved`` from loading into a model whose state is ``current`` ("" when it fits)."""
    if not isinstance(saved, dict):
        return "it holds no state_dict"
    missing, unexpected = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
    shapes = [k for k in current if k in saved and tuple(current[k].shape) != tuple(saved[k].shape)]
    parts = [f"{what} {keys[:5]}" for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                                     ("other shapes for", shapes)) if keys]
    return "; ".join(parts)


def reinitialise(trainer: Trainer, pl_module: LightningModule, seed: int) -> None:
    """Reset the model under ``seed`` (the global RNG is left as it was) by its modules' own ``reset_parameters``
    (``_reset_parameters`` for ``nn.MultiheadAttention`` and ``nn.Transformer``), children before parents as
    construction runs them, and clear the optimizers' state. Frozen parameters keep their values, and modules whose
    parameters are all frozen (a pretrained backbone) their buffers too; modules without parameters (BatchNorm
    without affine) reset their running statistics."""
    frozen = [(p, p.detach().clone()) for p in pl_module.parameters() if not p.requires_grad]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for module in _children_first(pl_module):
            reset = _reset_method(module)
            own = list(module.parameters())
            if reset is not None and (not own or any(p.requires_grad for p in own)):
                reset()
        for p, value in frozen:  # a parent's reset (nn.Transformer's) reaches its frozen children's too
            p.copy_(value)
    clear_optimizers(trainer)


def unresettable(pl_module: nn.Module) -> list[str]:
    """The trainable parameters :func:`reinitialise` cannot reset: held directly by a module without a reset method
    (a bare ``nn.Parameter`` such as a class token)."""
    covered: set[int] = set()
    for module in pl_module.modules():
        if _reset_method(module) is not None:
            covered.update(id(p) for p in module.parameters(recurse=False))
    return [name for name, p in pl_module.named_parameters() if p.requires_grad and id(p) not in covered]


def _reset_method(module: nn.Module) -> Callable[[], None] | None:
    for name in ("reset_parameters", "_reset_parameters"):
        method = getattr(module, name, None)
        if callable(method):
            return method
    return None


def _children_first(module: nn.Module, seen: set[int] | None = None) -> Iterator[nn.Module]:
    """Every submodule once, each after its children."""
    seen = set() if seen is None else seen
    for child in module.children():
        if id(child) not in seen:
            yield from _children_first(child, seen)
    if id(module) not in seen:
        seen.add(id(module))
        yield module


def clear_optimizers(trainer: Trainer) -> None:
    """A fresh optimizer state (moments, step counts), as re-creating the optimizer would give; the weights stay."""
    for optimizer in trainer.optimizers:
        optimizer.state.clear()
