"""What a task is to the scorers: the one place that says which loss is differentiated, how pseudo targets come
from logits, and which logits and targets are valid.

dynamicAL scores ``||g_u||^2 + gamma * g_u . G_S`` where ``g_u`` is the gradient of the task's loss of sample
``u`` at its pseudo target and ``G_S`` the summed gradient of the labeled set's losses at their targets; every
engine, :func:`~lightning_dynamical.scoring.common.summed_gradient` and the diagnostics take these from a
:class:`Task` (default :class:`~lightning_dynamical.tasks.classification.Classification`).
"""

from __future__ import annotations

import base64
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric

if TYPE_CHECKING:
    from lightning_dynamical.tasks.batches import Inputs

OUTPUT_FORMS = "a tensor, .logits, ['logits'] or a tuple with logits first"
"""How a model may return its logits (see :func:`~lightning_dynamical.tasks.batches.logits_of`)."""


class Task(ABC):
    """A learning task: its loss, its pseudo targets and the shapes of its logits and targets.

    Subclasses define :meth:`loss`, :meth:`pseudo_targets`, :meth:`logits_ok` and :meth:`prepare_targets`, and
    say how their loss is built from the samples with :attr:`sums_over_samples`. Make them frozen dataclasses
    (their repr, equality and hash then follow their settings; a strategy's repr shows its task). A task whose logits
    hold padded positions (tokens) says which are real with :meth:`real_positions`, from the batch's inputs, and
    leaves them out of :meth:`batch_pseudo_targets`.

    Attributes:
        name: the task's name in error messages (``"classification"``).
        logits_shape: the logits' expected shape in words (``"(batch, classes)"``).
        sums_over_samples: ``True`` when ``loss(logits, targets)`` is the sum over dim 0 (the samples) of each
            sample's loss, and sample ``i``'s loss reads only row ``i`` of the logits and of the targets (the
            positions or classes inside a sample may be summed or averaged in any way). Then the gradient of the
            batch loss w.r.t. the logits holds every sample's gradient in its own row, which is what the fast and
            last-layer closed forms rely on (their run-time proof checks the model, not the loss). ``False``: the
            engines compute every sample's gradient on the exact path, from its loss as a batch of one.
    """

    name: ClassVar[str] = "task"
    logits_shape: ClassVar[str] = "(batch, ...)"
    sums_over_samples: ClassVar[bool] = True
    label_from_input: ClassVar[bool] = False
    """Whether a label's shape follows the sample's input (:meth:`label_shape` reads it): masks do, classes do not."""
    min_classes: ClassVar[int] = 2
    """The fewest output classes a model may have (a regression output has no pseudo target to differentiate)."""

    @property
    def metric_name(self) -> str:
        """The headline metric's column suffix in ``al_rounds.csv`` (``test_<metric_name>``), e.g. ``"miou"``; a
        subclass sets it as a class attribute (or a property when it depends on the task's settings)."""
        return "acc"

    def classes_first(self, logits: Tensor) -> Tensor:
        """The logits with the classes on dim 1, ``(batch, classes, *positions)``, as softmaxes and torchmetrics
        read them (the logits themselves unless the task's classes are elsewhere, e.g. last for tokens)."""
        return logits

    def classes_of(self, logits: Tensor) -> int:
        """The number of classes (or labels) a logits tensor holds (dim 1 of :meth:`classes_first`)."""
        return int(self.classes_first(logits).shape[1])

    def accuracy(self, num_classes: int) -> Metric:
        """A torchmetrics metric updated with ``(logits, targets)``: the accuracy the fit test reads (class,
        pixel, token or per-label accuracy). A task used only for scoring need not define it; the loop does."""
        raise NotImplementedError(f"the {self.name} task defines no accuracy (Task.accuracy), which the loop "
                                  "measures every round")

    def metric(self, num_classes: int) -> Metric | None:
        """The headline metric (``test_<metric_name>``), updated with ``(logits, targets)``; ``None`` when it is
        :meth:`accuracy`."""
        return None

    def metric_targets(self, targets: Tensor) -> Tensor:
        """Prepared targets as the metrics take them (hard labels)."""
        return targets

    def metric_inputs(self, logits: Tensor) -> Tensor:
        """Logits as the metrics take them (:meth:`classes_first`)."""
        return self.classes_first(logits).detach()

    def target_problem(self, targets: Tensor) -> str | None:
        """What is wrong with a batch's targets for this task, before any model runs (``None``: nothing), as the
        words after "but the <task> task needs"; :meth:`prepare_targets` checks them against the logits."""
        return None

    def label_shape(self, inputs: Tensor) -> tuple[int, ...]:
        """The shape one sample's label must have, from the sample's input tensor (no batch dim)."""
        return ()

    def label_problem(self, label: Tensor, num_classes: int | None, shape: tuple[int, ...] | None) -> str | None:
        """What is wrong with one oracle label (``None``: nothing): its shape against ``shape`` (when known) and
        its values against ``num_classes`` (when known)."""
        if shape is not None and tuple(label.shape) != tuple(shape):
            return f"shape {tuple(label.shape)}, expected {tuple(shape)}"
        if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
            return f"dtype {str(label.dtype).replace('torch.', '')}, expected integer classes"
        if num_classes is not None and label.numel() and not bool(((label >= 0) & (label < num_classes)).all()):
            return f"classes outside 0..{num_classes - 1}"
        return None

    def encode_label(self, label: Tensor) -> int | str:
        """One label as it goes into ``al_state.json`` and ``al_queries.csv``: an int for a scalar class, else
        :func:`encode_tensor` (exact for soft targets too)."""
        if label.ndim == 0 and not (label.is_floating_point() and bool(label != label.round())):
            return int(label)
        return encode_tensor(label)

    def decode_label(self, value: int | str) -> Tensor:
        """The inverse of :meth:`encode_label` (an int is a class index, as in every older state file)."""
        return torch.tensor(int(value)) if isinstance(value, int) or str(value).lstrip("-").isdigit() \
            else decode_tensor(str(value))

    @abstractmethod
    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The scalar loss of a batch. On a batch of one it is the per-sample loss whose gradient is scored; on a
        larger batch, the sum of the per-sample losses (see :attr:`sums_over_samples`)."""

    @abstractmethod
    def pseudo_targets(self, logits: Tensor) -> Tensor:
        """The targets the model predicts at every position of the logits (detached; row ``i`` from row ``i`` of the
        logits alone). Scorers take :meth:`batch_pseudo_targets`, which may leave padding out."""

    def real_positions(self, logits: Tensor, inputs: Inputs | None) -> Tensor | None:
        """Which positions of each sample's logits are real, as a bool ``(batch, *positions)`` read from the batch's
        ``inputs`` (a padded token is not); ``None`` when all are (every task whose logits have no padding)."""
        return None

    def batch_pseudo_targets(self, logits: Tensor, inputs: Inputs | None = None) -> Tensor:
        """The pseudo targets of a batch whose model ``inputs`` are known (an unlabeled pool batch has no targets to
        say where its padding is): what every engine, strategy and the loop take. :meth:`pseudo_targets` here; a
        task with padded positions marks them ignored (:class:`~lightning_dynamical.tasks.tokens.TokenClassification`
        from the attention mask). A separate method, so that a task defining only ``pseudo_targets(logits)`` works."""
        return self.pseudo_targets(logits)

    def concat_targets(self, parts: Sequence[Tensor]) -> Tensor:
        """Batches' (pseudo) targets joined along dim 0 (``torch.cat``; a task whose batches differ in length pads)."""
        return torch.cat(list(parts))

    @abstractmethod
    def logits_ok(self, logits: Tensor) -> bool:
        """Whether a logits tensor of a batch has this task's shape and dtype (its dim 0 is checked apart)."""

    @abstractmethod
    def prepare_targets(self, targets: Tensor, logits: Tensor) -> Tensor:
        """A labeled batch's targets, checked against the logits and moved to their device (and dtype where the loss
        needs it); raises a one-line ``ValueError`` naming the task, the shape seen and the shape expected."""

    def check_output(self, logits: Tensor, batch: int | None = None) -> Tensor:
        """The logits, if they have this task's shape (and ``batch`` rows when given); else a one-line
        ``ValueError`` naming the task, the shape seen and the shape expected."""
        rows_ok = batch is None or (logits.ndim > 0 and logits.shape[0] == batch)
        if not (rows_ok and self.logits_ok(logits)):
            raise ValueError(self.output_error(tuple(logits.shape), batch))
        return logits

    def output_error(self, seen: object, batch: int | None = None) -> str:
        """The message of a refused model output (``seen``: its shape, or its type when it holds no logits)."""
        of = f" for a batch of {batch}" if batch is not None else ""
        return (f"The model must return logits of shape {self.logits_shape} for the {self.name} task ({OUTPUT_FORMS});"
                f" got {seen}{of}")

    def targets_error(self, targets: Tensor, logits: Tensor, expected: str) -> ValueError:
        """The error of refused targets: the task, the targets' shape and dtype, and what was expected."""
        dtype = str(targets.dtype).replace("torch.", "")
        return ValueError(f"The {self.name} task needs targets of {expected} for logits of shape "
                          f"{tuple(logits.shape)}; got {tuple(targets.shape)} {dtype}")

    def output_gradient(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``d loss / d logits`` at detached ``logits``: row ``i`` is sample ``i``'s gradient when
        :attr:`sums_over_samples`. By autograd here; subclasses may give the closed form."""
        with torch.enable_grad():
            z = logits.detach().requires_grad_()
            return torch.autograd.grad(self.loss(z, targets), z)[0]


def encode_tensor(t: Tensor) -> str:
    """A tensor as ``"<d0>x<d1>...:<base64 of zlib of int64 bytes>"`` (a 128x128 binary mask: ~100 bytes): one line
    of text for CSV and JSON, decoded exactly by :func:`decode_tensor`. Values that are not all integers (soft
    targets) go as float64, tagged ``"<shape>:float64:<base64>"``."""
    t = t.detach().to("cpu")
    dtype = torch.float64 if t.is_floating_point() and not bool((t == t.round()).all()) else torch.int64
    data = t.to(dtype).contiguous().numpy().tobytes()
    shape = "x".join(str(d) for d in t.shape)
    tag = f"{FLOAT_TAG}:" if dtype == torch.float64 else ""
    return f"{shape}:{tag}{base64.b64encode(zlib.compress(data, 9)).decode('ascii')}"


#: The tag of :func:`encode_tensor`'s float64 payloads (``:`` is not in base64's alphabet, so untagged payloads, int64,
#: stay as every older file has them).
FLOAT_TAG = "float64"


def decode_tensor(text: str) -> Tensor:
    """The tensor :func:`encode_tensor` wrote (int64, or float64 where tagged); a ``ValueError`` names what is
    malformed."""
    shape_text, _, payload = text.partition(":")
    tag, _, rest = payload.partition(":")
    dtype, payload = (torch.float64, rest) if rest and tag == FLOAT_TAG else (torch.int64, payload)
    try:
        shape = [int(d) for d in shape_text.split("x")] if shape_text else []
        data = bytearray(zlib.decompress(base64.b64decode(payload.encode("ascii"), validate=True)))
        flat = torch.frombuffer(data, dtype=dtype) if data else torch.zeros(0, dtype=dtype)
        return flat.clone().reshape(shape)
    except (ValueError, RuntimeError, zlib.error) as err:
        raise ValueError(f"not an encoded label tensor (\"<shape>:<base64>\"): {text[:40]!r} ({err})") from err
