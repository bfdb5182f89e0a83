"""``ActiveLearningDataModule``: the labeled and unlabeled split of a pool, its loaders and its state."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any, cast

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset, default_collate

from lightning_dynamical.data.splits import DatasetSplits, dataset_size
from lightning_dynamical.errors import ConfigError, check_optional_positive_int, check_positive_int
from lightning_dynamical.records import rng
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import LABEL_KEY, batch_targets, split_batch
from lightning_dynamical.tasks.classification import Classification
from lightning_dynamical.tasks.multilabel import MultiLabel
from lightning_dynamical.tasks.names import TaskName, task_of


class LabelError(ConfigError):
    """A ``label()`` call or a restored state names indices that cannot be labeled."""


class RelabeledSubset(Dataset):
    """A subset of a dataset whose targets may be replaced by labels an oracle gave.

    With ``aligned`` (the evaluation view of the same samples), a sample with a given label is read from it instead:
    a given mask is aligned with the untransformed image, and a training transform that moves pixels (flips, crops)
    would move the image but not the mask. Such samples then train without augmentation, never misaligned.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int], labels: dict[int, torch.Tensor] | None = None,
                 label_key: str = LABEL_KEY, aligned: Dataset | None = None) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.labels = labels or {}
        self.label_key = label_key
        self.aligned = aligned

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        index = self.indices[i]
        given = index in self.labels
        item = (self.aligned if given and self.aligned is not None else self.dataset)[index]
        if given:
            label = self.labels[index].clone()
            if isinstance(item, Mapping):
                return {**item, self.label_key: label}
            item = (item[0], label, *item[2:])
        return item


class EpochShuffle(RandomSampler):
    """A random order fixed by ``(seed, epoch)`` alone, like ``DistributedSampler``.

    Lightning calls ``set_epoch`` every epoch, so a run resumed from a checkpoint shuffles exactly as an
    uninterrupted one, however often the loader is iterated. It is a ``RandomSampler``, so Lightning
    still recognises the loader as shuffled when it swaps in a ``DistributedSampler`` under DDP.
    """

    def __init__(self, data_source: Sized, seed: int) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        gen = rng.generator(self.seed, self.epoch, stride=rng.EPOCH_STRIDE)
        return iter(torch.randperm(len(self.data_source), generator=gen).tolist())


def dataset_targets(dataset: Dataset, label_key: str = LABEL_KEY) -> torch.Tensor:
    """One class per sample of a map-style dataset (:func:`sample_classes`), read from a ``targets``-like attribute
    when there is one."""
    if isinstance(dataset, Subset):
        return dataset_targets(dataset.dataset, label_key)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    n = dataset_size(dataset)
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) >= 2:
        return sample_classes(dataset.tensors[1], n)
    for attr in ("targets", "labels", "y"):
        values = getattr(dataset, attr, None)
        if values is not None and not callable(values) and len(values) == n:
            return sample_classes(torch.as_tensor(list(values) if not hasattr(values, "__array__") else values), n)
    return sample_classes(torch.stack([torch.as_tensor(batch_targets(dataset[i], label_key)) for i in range(n)]), n)


def sample_classes(targets: torch.Tensor, n: int) -> torch.Tensor:
    """The class of each of ``n`` samples: integer targets as they are, probability rows ``(n, C)`` by their most
    likely class; a ``ConfigError`` for targets that hold no one class per sample."""
    if targets.ndim == 2 and targets.shape[0] == n and targets.is_floating_point() and targets.shape[1] > 1:
        return targets.argmax(1)
    if targets.numel() == n and not targets.is_complex():
        return targets.reshape(-1).long()
    raise ConfigError(f"balanced=True draws the initial set per class, which needs one class per sample; the data "
                      f"set's targets have shape {tuple(targets.shape)} ({targets.dtype}) for {n} samples")


class ActiveLearningDataModule(LightningDataModule):
    """Holds a pool dataset and which of its samples are labeled.

    Give datasets directly, wrap an existing DataModule with :meth:`from_datamodule`, or subclass and
    override :meth:`build_splits` (built lazily at ``setup``). The initial labeled set of
    ``initial_size`` samples is drawn with ``seed`` (class-balanced with ``balanced=True``).
    ``val_size`` (an int, or a fraction of the pool) holds out a seeded validation split of the pool
    when no validation set is given. ``task`` says what a label is and how the model is trained, scored and
    measured (named once: the loop, its strategy and :class:`~lightning_dynamical.Classifier` read it from here).
    ``num_classes`` bounds the labels an oracle may give (``0..C-1``);
    by default it is the data set's class count, and when that is unknown the loop takes the model's
    logit width at fit start (:meth:`use_model_classes`).

    Indices everywhere are indices into the pool dataset. ``train_dataloader`` serves labeled samples
    (training transform); ``pool_dataloader`` serves unlabeled samples in ascending index order with the
    evaluation transform, so scores are aligned with :attr:`unlabeled_indices`.

    Args:
        pool: the unlabeled pool (training transform); ``None`` when :meth:`build_splits` builds it.
        val: a validation set, if any.
        test: the test set whose accuracy each round reports, if any.
        pool_eval: the pool with the evaluation transform (default: ``pool``).
        initial_size: size of the initial labeled set (M), drawn with ``seed``.
        balanced: draw the initial labeled set class-balanced.
        val_size: samples of the pool held out for validation when ``val`` is not given (an int, or a
            fraction in [0, 1)); 0 = none.
        batch_size: training batch size.
        eval_batch_size: batch size for scoring the pool and for evaluation.
        num_workers: DataLoader worker processes.
        collate_fn: builds a batch from a list of samples in every loader (default: PyTorch's ``default_collate``),
            e.g. to pad text or normalise.
        drop_last: drop the last incomplete training batch, never the only one (a labeled set smaller than a batch
            still trains); the pool and evaluation loaders never drop samples.
        seed: seeds the initial labeled set, the validation hold-out and the training shuffles.
        label_key: the target's key in dict batches.
        num_classes: the classes (or labels) a label may name (default: the data set's, else the model's width).
        task: ``"classification"`` (one class per sample), ``"multilabel"`` (a 0/1 vector per sample),
            ``"segmentation"`` (a class per pixel), ``"token_classification"`` (a tag per token) or a
            :class:`~lightning_dynamical.tasks.Task` with settings.

    Raises:
        ConfigError: an argument out of range, an unknown ``task``, ``balanced=True`` for a task other than
            classification, or an ``initial_size`` larger than the pool.
        LabelError: :meth:`label` given indices or labels that do not fit the pool (nothing changes).

    Example::

        dm = ActiveLearningDataModule(pool, test=test, initial_size=100, balanced=True, val_size=500)
        trainer.fit(model, datamodule=dm)  # with an ActiveLearningLoop among the callbacks
        dm.labeled_indices  # the labeled set after the last round
    """

    def __init__(
        self,
        pool: Dataset | None = None,
        val: Dataset | None = None,
        test: Dataset | None = None,
        pool_eval: Dataset | None = None,
        *,
        initial_size: int = 500,
        balanced: bool = False,
        val_size: int | float = 0,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        drop_last: bool = False,
        seed: int = 0,
        label_key: str = LABEL_KEY,
        num_classes: int | None = None,
        task: TaskName | Task = "classification",
    ) -> None:
        super().__init__()
        check_optional_positive_int("num_classes", num_classes)
        self.task = task_of(task)
        if balanced and not isinstance(self.task, Classification):
            raise ConfigError(f"balanced=True draws the initial set per class, which needs one class per sample; the "
                              f"{self.task.name} task has none (give balanced=False)")
        check_positive_int("initial_size", initial_size)
        check_positive_int("batch_size", batch_size)
        check_positive_int("eval_batch_size", eval_batch_size)
        if isinstance(val_size, bool) or not isinstance(val_size, int | float) or not (
                val_size >= 0 and (isinstance(val_size, int) or val_size < 1)):
            raise ConfigError(f"val_size must be an int >= 0 or a fraction in [0, 1), got {val_size!r}")
        self.initial_size = initial_size
        self.balanced = balanced
        self.val_size = val_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.collate_fn = collate_fn
        self.drop_last = drop_last
        self.seed = seed
        self.label_key = label_key
        self._num_classes = num_classes
        self._model_classes: int | None = None
        self._splits: DatasetSplits | None = None
        self._candidates: list[int] = []
        self._labeled: list[int] = []
        self._given_labels: dict[int, torch.Tensor] = {}
        self._val_indices: list[int] = []
        self._set_up = False
        if pool is not None:
            self._use(DatasetSplits(pool, pool_eval if pool_eval is not None else pool, val, test, 0))

    @classmethod
    def from_datamodule(cls, datamodule: LightningDataModule, **kwargs: Any) -> ActiveLearningDataModule:
        """Wrap a user's DataModule: its train set becomes the pool, its val/test sets are kept.

        Its train loader's ``batch_size``, ``collate_fn`` and ``drop_last`` are reused unless given. Pass
        ``pool_eval`` for a copy of the train set with the evaluation transform if the train set augments.
        """
        datamodule.prepare_data()
        datamodule.setup("fit")
        train = datamodule.train_dataloader()
        kwargs.setdefault("batch_size", train.batch_size or 64)
        if train.collate_fn is not default_collate:
            kwargs.setdefault("collate_fn", train.collate_fn)
        kwargs.setdefault("drop_last", train.drop_last)
        val = _dataset_or_none(datamodule, "val_dataloader")
        try:
            datamodule.setup("test")
        except Exception:  # noqa: BLE001 - a DataModule without a test stage simply has no test set
            pass
        test = _dataset_or_none(datamodule, "test_dataloader")
        return cls(train.dataset, val, test, kwargs.pop("pool_eval", None), **kwargs)

    def build_splits(self) -> DatasetSplits:
        """Build the datasets; subclasses that are configured by name (CLI) override this."""
        raise NotImplementedError(f"{type(self).__name__} was given no pool dataset and does not build one")

    # ---- lifecycle -------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._splits is None:
            self._use(self.build_splits())
        self._set_up = True

    def _use(self, splits: DatasetSplits) -> None:
        n, n_eval = dataset_size(splits.pool), dataset_size(splits.pool_eval)
        if n != n_eval:
            raise ConfigError(f"pool ({n}) and pool_eval ({n_eval}) differ in size")
        self._splits = splits
        gen = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(n, generator=gen).tolist()
        n_val = 0
        if splits.val is None and self.val_size:
            n_val = self.val_size if isinstance(self.val_size, int) else int(math.floor(self.val_size * n))
        self._val_indices = sorted(order[:n_val])
        self._candidates = sorted(order[n_val:])
        if self.initial_size > len(self._candidates):
            raise ConfigError(f"initial_size={self.initial_size} exceeds the pool of {len(self._candidates)} samples")
        if not self._labeled:
            self._labeled = self._initial_indices(gen)

    def _initial_indices(self, gen: torch.Generator) -> list[int]:
        candidates = torch.tensor(self._candidates)
        perm = candidates[torch.randperm(len(candidates), generator=gen)]
        if not self.balanced:
            return sorted(perm[: self.initial_size].tolist())
        targets = dataset_targets(self.splits.pool, self.label_key)[perm]
        classes = targets.unique().tolist()
        per_class = [perm[targets == c].tolist() for c in classes]
        chosen: list[int] = []
        depth = 0
        while len(chosen) < self.initial_size:
            for members in per_class:
                if depth < len(members) and len(chosen) < self.initial_size:
                    chosen.append(members[depth])
            depth += 1
        return sorted(chosen)

    # ---- the split -------------------------------------------------------------------------------------
    def _ready(self) -> DatasetSplits:
        if self._splits is None:
            set_up = self._set_up
            self.setup()
            self._set_up = set_up  # built on demand; only Lightning's own setup call decides about validation
        assert self._splits is not None
        return self._splits

    @property
    def splits(self) -> DatasetSplits:
        """The datasets (built on first use)."""
        return self._ready()

    @property
    def num_classes(self) -> int | None:
        """Valid labels are ``0..num_classes-1``: the explicit ``num_classes``, else the data set's, else the
        model's logit width once the loop has seen it; ``None`` while none of these is known."""
        if self._num_classes is not None:
            return self._num_classes
        if self.splits.num_classes > 0:
            return self.splits.num_classes
        return self._model_classes

    def use_model_classes(self, width: int) -> None:
        """Check the model's logit ``width`` against the classes (and the labels already given).

        A model with fewer logits than the data module's classes is refused. When the classes are unknown,
        ``width`` becomes the bound, after checking that every label given so far is below it.
        """
        known = self._num_classes if self._num_classes is not None else (self.splits.num_classes or None)
        if known is not None:
            if width < known:
                raise LabelError(f"the model outputs {width} logits but the data has {known} classes")
            return
        self._check_labels(self._given_labels.items(), width, "labels given so far")
        self._model_classes = width

    def _check_labels(self, pairs: Iterable[tuple[int, torch.Tensor]], num_classes: int | None,
                      what: str) -> list[torch.Tensor]:
        """Refuse labels the task does not accept: classes outside ``[0, num_classes)`` (unchecked while the classes
        are unknown), or a shape unlike the sample's (a mask of another size, a label set of another width). Returns
        them in the dtype the data set's own targets have (else int64 classes, float label sets), so a batch mixing
        given and own labels collates to one dtype and the loss gets what it takes."""
        bad, typed = [], []
        for i, y in pairs:
            shape, dtype = ((), torch.long) if isinstance(self.task, Classification) else self._target_like(i)
            default = torch.float32 if isinstance(self.task, MultiLabel) else torch.long
            converted = y.to(dtype if dtype is not None else default)
            problem = self.task.label_problem(y, num_classes, shape) or _unheld(y, converted)
            if problem is not None:
                scalar = y.ndim == 0 and not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool)
                bad.append(f"index {i}: {int(y) if scalar and shape == () else problem}")
            typed.append(converted)
        if bad:
            scalar = isinstance(self.task, Classification)
            what_wrong = f"are not classes 0..{num_classes - 1}" if scalar and num_classes is not None \
                else f"do not fit the {self.task.name} task"
            raise LabelError(f"{what}: {len(bad)} labels {what_wrong} ({', '.join(bad[:10])}"
                             f"{', ...' if len(bad) > 10 else ''}); nothing was changed")
        return typed

    @property
    def labeled_indices(self) -> list[int]:
        """Labeled pool indices, in the order they were labeled (initial set first, sorted)."""
        self._ready()
        return list(self._labeled)

    @property
    def unlabeled_indices(self) -> list[int]:
        """Unlabeled pool indices in ascending order: the order of :meth:`pool_dataloader`."""
        self._ready()
        labeled = set(self._labeled)
        return [i for i in self._candidates if i not in labeled]

    @property
    def num_labeled(self) -> int:
        return len(self.labeled_indices)

    @property
    def num_unlabeled(self) -> int:
        return len(self._candidates) - len(self.labeled_indices)

    def label(self, indices: Iterable[int], labels: Iterable[Any] | None = None) -> None:
        """Move pool ``indices`` into the labeled set, optionally with oracle ``labels`` (class indices; 0/1 vectors
        for multi-label; masks of the image's size for segmentation: tensors, arrays or nested lists).

        Every index and label is checked first; an unknown, already labeled or repeated index, or a label the task
        does not accept (a class outside ``0..num_classes-1``, a mask of another size), raises :class:`LabelError`
        and changes nothing.
        """
        idx = [int(i) for i in indices]
        given = None if labels is None else [_label_tensor(y) for y in labels]
        self._check_new(idx)
        if given is not None and len(given) != len(idx):
            raise LabelError(f"got {len(given)} labels for {len(idx)} indices")
        if given is not None:
            given = self._check_labels(zip(idx, given), self.num_classes, "label() refused")
        self._labeled.extend(idx)
        if given is not None:
            self._given_labels.update(zip(idx, given))

    def _check_new(self, idx: list[int]) -> None:
        self._ready()
        candidates = set(self._candidates)
        unknown = [i for i in idx if i not in candidates]
        if unknown:
            raise LabelError(f"indices {unknown[:10]} are not in the pool (valid: {len(candidates)} candidate "
                             f"indices of a dataset of {dataset_size(self.splits.pool)})")
        labeled = set(self._labeled)
        already = [i for i in idx if i in labeled]
        if already:
            raise LabelError(f"indices {already[:10]} are already labeled")
        if len(set(idx)) != len(idx):
            seen: set[int] = set()
            repeated = []
            for i in idx:
                if i in seen:
                    repeated.append(i)
                seen.add(i)
            raise LabelError(f"indices {repeated[:10]} are repeated")

    # ---- loaders ---------------------------------------------------------------------------------------
    def labeled_dataset(self, evaluation: bool = False) -> Dataset:
        """The labeled samples (training transform, or evaluation transform for scoring)."""
        source = self.splits.pool_eval if evaluation else self.splits.pool
        aligned = self.splits.pool_eval if self.task.label_from_input and source is not self.splits.pool_eval \
            else None
        return RelabeledSubset(source, self.labeled_indices, self._given_labels, self.label_key, aligned)

    def pool_dataset(self, positions: Sequence[int] | None = None) -> Dataset:
        """Unlabeled samples (evaluation transform) in ascending index order, or at ``positions`` of it."""
        return Subset(self.splits.pool_eval, self.pool_indices(positions))

    def pool_indices(self, positions: Iterable[int] | None = None) -> list[int]:
        """Pool indices of the unlabeled samples at ``positions`` of the unlabeled order (all without)."""
        unlabeled = self.unlabeled_indices
        return unlabeled if positions is None else [unlabeled[int(p)] for p in positions]

    def eval_loader(self, dataset: Dataset) -> DataLoader:
        """A non-shuffled loader with the evaluation batch size. Its own generator seeds its workers, so iterating it
        (scoring, evaluation, the charts a logger gets) never draws from the global RNG that training uses."""
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=self.collate_fn, generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        """Labeled samples (training transform), shuffled by :class:`EpochShuffle`."""
        dataset = self.labeled_dataset()
        seed = rng.derive(self.seed, len(self._labeled))
        # The loader's own generator seeds its workers, so iterating it never draws from the global RNG.
        drop_last = self.drop_last and dataset_size(dataset) >= self.batch_size  # never the only batch
        return DataLoader(dataset, batch_size=self.batch_size, sampler=EpochShuffle(cast(Sized, dataset), seed),
                          num_workers=self.num_workers, generator=torch.Generator().manual_seed(seed),
                          collate_fn=self.collate_fn, drop_last=drop_last)

    def pool_dataloader(self) -> DataLoader:
        """The unlabeled pool (evaluation transform) in ascending index order, for scoring it outside the loop."""
        return self.eval_loader(self.pool_dataset())

    @property
    def val_dataloader(self) -> Callable[[], DataLoader | list]:  # type: ignore[override]
        """The validation loader's factory; absent after :meth:`setup` when there is no validation set.

        Lightning runs validation only when ``val_dataloader`` is defined, so a pool without one trains without
        an empty validation loop (and without Lightning's warning about a zero-length loader). Before ``setup`` it
        is always defined, so Lightning's configuration check (which runs earlier) does not warn either.
        """
        if self._set_up and self.val_dataset is None:
            raise AttributeError(f"{type(self).__name__} has no validation set (val=None, val_size=0)")
        return self._val_dataloader

    def _val_dataloader(self) -> DataLoader | list:
        val = self.val_dataset
        return self.eval_loader(val) if val is not None else []

    def test_dataloader(self) -> DataLoader | list:
        test = self.splits.test
        return self.eval_loader(test) if test is not None else []

    @property
    def val_dataset(self) -> Dataset | None:
        if self.splits.val is not None:
            return self.splits.val
        return Subset(self.splits.pool_eval, self._val_indices) if self._val_indices else None

    # ---- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._ready()
        return {
            "dataset_size": dataset_size(self.splits.pool),
            "labeled": list(self._labeled),
            "candidates": list(self._candidates),
            "val_indices": list(self._val_indices),
            "given_labels": [[i, self.task.encode_label(y)] for i, y in self._given_labels.items()],
        }

    def check_state(self, state_dict: dict[str, Any]) -> None:
        """Refuse (:class:`LabelError`, naming the offending indices) a split that does not fit this pool."""
        self._checked_state(state_dict)

    def _checked_state(self, state_dict: dict[str, Any]) -> list[tuple[int, torch.Tensor]]:
        """:meth:`check_state`; returns the state's given labels, checked and in the targets' dtype."""
        self._ready()
        size = int(state_dict["dataset_size"])
        if size != dataset_size(self.splits.pool):
            raise LabelError(f"state is for a pool of {size} samples; this pool has {dataset_size(self.splits.pool)}")
        candidates = [int(i) for i in state_dict.get("candidates", self._candidates)]
        outside = [i for i in candidates if not 0 <= i < size]
        if outside or len(set(candidates)) != len(candidates):
            raise LabelError(f"state's candidate indices are outside 0..{size - 1} ({_few(outside)}) or repeated "
                             f"({_few(_repeated(candidates))})")
        labeled = [int(i) for i in state_dict["labeled"]]
        outside = [i for i in labeled if not 0 <= i < size]
        if outside:
            raise LabelError(f"state's labeled indices {_few(outside)} are outside 0..{size - 1}")
        repeated = _repeated(labeled)
        if repeated:
            raise LabelError(f"state's labeled indices {_few(repeated)} are repeated")
        held_out = sorted(set(labeled) - set(candidates))
        if held_out:
            raise LabelError(f"state's labeled indices {_few(held_out)} are not in the pool (held out for validation)")
        given = self._decoded(state_dict)
        strays = sorted({i for i, _ in given} - set(labeled))
        repeated = _repeated([i for i, _ in given])
        if strays or repeated:
            raise LabelError(f"state's given_labels name unlabeled or repeated indices (unlabeled {_few(strays)}, "
                             f"repeated {_few(repeated)}); nothing was changed")
        typed = self._check_labels(given, self.num_classes, "state's given_labels")
        return [(i, y) for (i, _), y in zip(given, typed)]

    def _target_like(self, index: int) -> tuple[tuple[int, ...] | None, torch.dtype | None]:
        """The shape pool sample ``index``'s label must have (the task's from its input for masks, else that of the
        data set's own target when it has one, else unknown) and the data set's target dtype (``None``: none)."""
        inputs, target = split_batch(self.splits.pool_eval[index], self.label_key)
        own = None if target is None else torch.as_tensor(target)
        if self.task.label_from_input:
            return self.task.label_shape(_first_tensor(inputs)), None if own is None else own.dtype
        return (None, None) if own is None else (tuple(own.shape), own.dtype)

    def _decoded(self, state_dict: dict[str, Any]) -> list[tuple[int, torch.Tensor]]:
        """A state's ``given_labels`` as ``(index, label tensor)`` pairs (ints in every older state)."""
        try:
            return [(int(i), self.task.decode_label(y)) for i, y in state_dict.get("given_labels", [])]
        except ValueError as err:
            raise LabelError(f"state's given_labels: {err}") from err

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a split; the state is validated against this pool (:meth:`check_state`) before anything changes."""
        given = self._checked_state(state_dict)
        self._candidates = sorted(int(i) for i in state_dict.get("candidates", self._candidates))
        self._labeled = [int(i) for i in state_dict["labeled"]]
        self._val_indices = [int(i) for i in state_dict.get("val_indices", self._val_indices)]
        self._given_labels = dict(given)

def _label_tensor(label: Any) -> torch.Tensor:
    """One oracle label as a tensor: a class index (an int, or a string of one, as label files hold), or a tensor,
    array or nested list (masks, label sets) as given. A float or a bool stays one (the task refuses it as a class
    rather than have ``2.7`` read as class 2)."""
    if isinstance(label, torch.Tensor):
        return label.detach().cpu()
    if isinstance(label, list | tuple | bool | float) or hasattr(label, "__array__"):
        return torch.as_tensor(label)
    try:
        return torch.tensor(int(label))
    except (TypeError, ValueError) as err:
        raise LabelError(f"a label must be a class index, a tensor or an array; got {label!r}") from err


def _unheld(label: torch.Tensor, converted: torch.Tensor) -> str | None:
    """Why ``label`` changed on its way into the data set's target dtype (``-100`` in ``uint8`` masks wraps to
    156; ``None``: it did not)."""
    if torch.equal(converted.to(label.dtype), label) or (label.is_floating_point() and converted.is_floating_point()):
        return None
    changed = label[converted.to(label.dtype) != label] if label.ndim else label
    dtype = str(converted.dtype).replace("torch.", "")
    return (f"value {changed.reshape(-1)[0].item()!r} does not fit the data set's {dtype} targets (give labels in the "
            f"data set's own encoding, or a task ignore_index that dtype holds)")


def _first_tensor(inputs: Any) -> torch.Tensor:
    """The first input tensor of one data set item's inputs (what a mask's shape follows)."""
    if isinstance(inputs, dict):
        return next(v for v in inputs.values() if isinstance(v, torch.Tensor))
    return inputs if isinstance(inputs, torch.Tensor) else inputs[0]


def _dataset_or_none(datamodule: LightningDataModule, hook: str) -> Dataset | None:
    try:
        loader = getattr(datamodule, hook)()
    except Exception:  # noqa: BLE001 - Lightning's default hooks raise MisconfigurationException
        return None
    return getattr(loader, "dataset", None)


def _repeated(indices: Sequence[int]) -> list[int]:
    """The indices that occur more than once, sorted."""
    return sorted(i for i, n in Counter(indices).items() if n > 1)


def _few(indices: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return f"[{shown}{', ...' if len(indices) > limit else ''}] ({len(indices)})"
