"""Token classification (named-entity recognition, tagging): logits ``(batch, tokens, classes)``, cross-entropy per
token averaged over each sample's labeled tokens, pseudo targets only at real tokens, entity-level F1."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import Metric

from lightning_dynamical.errors import ConfigError
from lightning_dynamical.tasks.positions import PerPosition

if TYPE_CHECKING:
    from lightning_dynamical.tasks.batches import Inputs

OUTSIDE, BEGIN, INSIDE = 0, 1, 2
"""The IOB2 kinds of a tag: ``O``, ``B-<type>``, ``I-<type>``."""


def iob2(tags: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """``(kinds, types)`` per tag index: :data:`OUTSIDE`/:data:`BEGIN`/:data:`INSIDE`, and the entity type's
    number (``-1`` for ``O``); a :class:`ConfigError` names the first tag that is not IOB2."""
    kinds: list[int] = []
    types: list[int] = []
    names: dict[str, int] = {}
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not (tag == "O" or (tag[:2] in ("B-", "I-") and len(tag) > 2)):
            raise ConfigError(f"TokenClassification tags must be IOB2 tags ('O', 'B-<type>', 'I-<type>'); got "
                              f"{tag!r} at index {i}")
        kinds.append(OUTSIDE if tag == "O" else BEGIN if tag[0] == "B" else INSIDE)
        types.append(-1 if tag == "O" else names.setdefault(tag[2:], len(names)))
    return kinds, types


class EntityF1(Metric):
    """Entity-level micro F1 over IOB2 spans, as ``seqeval.metrics.f1_score`` computes it in its default
    (conlleval) mode: an entity is a ``(type, first token, last token)`` span, counted when predicted and true spans
    match exactly; ``F1 = 2 TP / (predicted + true)`` (0 without any entity).

    Spans are read over each sequence's labeled positions only (targets other than ``ignore_index``, as the usual
    evaluation drops padding and sub-word pieces before seqeval); each sequence ends with an implicit ``O``. As in
    seqeval's default mode, an ``I-X`` after ``O`` or after a tag of another type begins an entity, and a ``B-X`` or
    a change of type ends the current one.

    Updated with ``(preds, target)``: ``preds`` logits ``(batch, classes, tokens)`` or tags ``(batch, tokens)``,
    ``target`` tags ``(batch, tokens)``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    tp: Tensor
    predicted: Tensor
    actual: Tensor
    kinds: Tensor
    types: Tensor

    def __init__(self, tags: tuple[str, ...], ignore_index: int = -100) -> None:
        super().__init__()
        kinds, types = iob2(tuple(tags))
        self.ignore_index = ignore_index
        self.register_buffer("kinds", torch.tensor(kinds, dtype=torch.long), persistent=False)
        self.register_buffer("types", torch.tensor(types, dtype=torch.long), persistent=False)
        for state in ("tp", "predicted", "actual"):
            self.add_state(state, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        pred = preds.argmax(1) if preds.is_floating_point() else preds
        if pred.shape != target.shape or target.ndim != 2:
            raise ValueError(f"EntityF1 needs tags (batch, tokens) or logits (batch, classes, tokens) and targets "
                             f"(batch, tokens); got {tuple(preds.shape)} and {tuple(target.shape)}")
        valid = target != self.ignore_index
        order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices  # labeled positions first
        kept = torch.arange(target.shape[1], device=target.device) < valid.sum(1, keepdim=True)
        starts_p, ends_p, types_p = self._entities(pred.gather(1, order), kept)
        starts_t, ends_t, types_t = self._entities(target.gather(1, order), kept)
        self.tp += (starts_p & starts_t & (types_p == types_t) & (ends_p == ends_t)).sum()
        self.predicted += starts_p.sum()
        self.actual += starts_t.sum()

    def _entities(self, tags: Tensor, kept: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(starts, ends, types)`` per position: whether an entity begins there, the position of its last token and
        its type. ``kept`` marks the labeled positions (moved first); the rest read as ``O``."""
        safe = tags.where(kept, 0)
        kind = self.kinds[safe].where(kept, OUTSIDE)
        typ = self.types[safe].where(kept, -1)
        b, n = tags.shape
        pad_kind, pad_type = kind.new_full((b, 1), OUTSIDE), typ.new_full((b, 1), -1)
        kind = torch.cat([pad_kind, kind, pad_kind], 1)  # an O before and after every sequence
        typ = torch.cat([pad_type, typ, pad_type], 1)
        prev_kind, prev_type, cur_kind, cur_type = kind[:, :-1], typ[:, :-1], kind[:, 1:], typ[:, 1:]
        changed = cur_type != prev_type
        begins = ((cur_kind == BEGIN) | ((cur_kind == INSIDE) & (prev_kind == OUTSIDE))
                  | ((cur_kind != OUTSIDE) & changed))
        ends_before = (prev_kind != OUTSIDE) & ((cur_kind != INSIDE) | changed)  # an entity ends at the previous one
        ends_at = ends_before[:, 1:]  # (b, n): the entity covering position t ends at t
        position = torch.arange(n, device=tags.device).expand(b, n)
        last = torch.where(ends_at, position, n).flip(1).cummin(1).values.flip(1)
        return begins[:, :n], last, typ[:, 1: n + 1]

    def compute(self) -> Tensor:
        total = self.predicted + self.actual
        return torch.where(total > 0, 2 * self.tp / total.clamp_min(1), 0.0)


@dataclass(frozen=True)
class TokenClassification(PerPosition):
    """One class per token (NER, POS tagging; Hugging Face ``AutoModelForTokenClassification``): logits
    ``(batch, tokens, classes)``, targets ``(batch, tokens)`` class indices with ``ignore_index`` at padding and at
    tokens left unlabeled (sub-word pieces after a word's first).

    Per-sample loss: the **mean** over the sample's labeled tokens of the token cross-entropy (summed over the batch:
    :attr:`~lightning_dynamical.tasks.base.Task.sums_over_samples`), so a sentence's weight does not grow with its
    length. Pseudo targets (:meth:`batch_pseudo_targets`): the per-token ``argmax`` at the real tokens, ``ignore_index``
    where the batch's ``inputs[mask_key]`` is 0 (padding); inputs without that mask (a tensor, positional inputs, a
    dict without the key) are all real tokens. At pool time every real token counts, sub-word pieces included (their
    labels are unknown there); a data module whose model takes another mask may name it in ``mask_key``.

    Metrics: token accuracy over the labeled tokens (``test_acc``), and, with ``tags``, the entity-level micro F1
    over IOB2 spans as seqeval computes it (``test_entity_f1``, :class:`EntityF1`). Without ``tags`` the spans cannot
    be read, so the headline metric is token accuracy (``metric_name`` ``"acc"``; the loop warns once).

    Args:
        ignore_index: the target value of unlabeled tokens (left out of the loss, its mean and the metrics).
        mask_key: the dict input holding the attention mask (1: real token, 0: padding).
        tags: the IOB2 tag of each class index (``("O", "B-PER", "I-PER", ...)``), for the entity F1.

    Raises:
        ConfigError: a tag that is not ``"O"``, ``"B-<type>"`` or ``"I-<type>"``; from :meth:`metric`, tags that do
            not number the model's classes.
    """

    mask_key: str = "attention_mask"
    tags: tuple[str, ...] | None = None

    name = "token classification"
    logits_shape = "(batch, tokens, classes)"
    class_dim = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tags is not None:
            object.__setattr__(self, "tags", tuple(self.tags))  # lists from configs; hashable
            iob2(self.tags)

    @property
    def metric_name(self) -> str:
        """``"entity_f1"`` with ``tags``, else ``"acc"`` (token accuracy is then the headline)."""
        return "acc" if self.tags is None else "entity_f1"

    def logits_ok(self, logits: Tensor) -> bool:
        return logits.ndim == 3

    def prepare_targets(self, targets: Tensor, logits: Tensor) -> Tensor:
        tokens = tuple(logits.shape[:2])
        if tuple(targets.shape) != tokens or targets.is_floating_point() or targets.is_complex():
            raise self.targets_error(targets, logits, f"shape {tokens} (batch, tokens) of class indices")
        return targets.to(logits.device, torch.long)

    def target_problem(self, targets: Tensor) -> str | None:
        if targets.dtype.is_floating_point or targets.is_complex() or targets.dtype == torch.bool or targets.ndim != 2:
            return "an int class index per token, shape (batch, tokens)"
        return None

    def real_positions(self, logits: Tensor, inputs: Inputs | None) -> Tensor | None:
        """``inputs[mask_key] != 0`` for dict inputs holding the mask (checked against the logits' tokens), else
        ``None`` (every token real)."""
        mask = inputs.get(self.mask_key) if isinstance(inputs, Mapping) else None
        if not isinstance(mask, Tensor):
            return None
        if tuple(mask.shape) != tuple(logits.shape[:2]):
            raise ValueError(f"The {self.name} task's mask {self.mask_key!r} must have the logits' (batch, tokens) "
                             f"shape {tuple(logits.shape[:2])}; got {tuple(mask.shape)}")
        return mask.to(logits.device) != 0

    def label_shape(self, inputs: Tensor) -> tuple[int, ...]:
        """A sample's labels are one per token of its (first) input, ``(tokens,)``."""
        return tuple(inputs.shape[:1])

    def metric(self, num_classes: int) -> Metric | None:
        """:class:`EntityF1` over ``tags``; ``None`` without them (token accuracy is the headline, with a warning)."""
        if self.tags is None:
            rank_zero_warn("TokenClassification has no tags (index -> 'B-PER', ...), so entity F1 cannot be "
                           "measured; token accuracy is the headline metric (give tags=... for test_entity_f1)",
                           category=UserWarning)
            return None
        if len(self.tags) != num_classes:
            raise ConfigError(f"TokenClassification has {len(self.tags)} tags for a model with {num_classes} classes; "
                              "give one IOB2 tag per class index")
        return EntityF1(self.tags, self.ignore_index)
