"""Oracles answer a query with labels: the simulated one reads the data set's own, ``FileOracle`` asks people."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from fsspec.core import url_to_fs
from PIL import Image
from torch import Tensor

from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.data.splits import dataset_size
from lightning_dynamical.errors import ConfigError, check_optional_positive_int
from lightning_dynamical.loop.distributed import is_rank_zero
from lightning_dynamical.oracles.files import (
    LabelFileError,
    parse_labels,
    query_csv_path,
    read_labels,
    read_rows,
    write_query,
)
from lightning_dynamical.oracles.masks import write_mask
from lightning_dynamical.records import files as records
from lightning_dynamical.records.queries import Query
from lightning_dynamical.reporting.charts import image_array
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import batch_inputs
from lightning_dynamical.tasks.classification import Classification
from lightning_dynamical.tasks.segmentation import Segmentation


class LabelsPending(Exception):
    """Raised by an oracle whose labels come later (people): the loop saves a checkpoint and pauses."""


class Oracle:
    """Base oracle: ``label(datamodule, query)`` returns labels for ``query.indices``, or ``None`` to use the
    data set's own targets, or raises :class:`LabelsPending` to pause the run until :meth:`collect` can
    return them (on resume from the pause checkpoint). ``source`` names who labeled, in ``al_queries.csv``."""

    source: str = "oracle"
    tasks: tuple[type[Task], ...] | None = None
    """The tasks whose labels this oracle can give (``None``: any task)."""
    unsupported: str = ""
    """Why other tasks are refused (completes "... cannot label the <task> task: ")."""

    def check_task(self, task: Task) -> None:
        """Refuse, in one line, a task whose labels this oracle cannot give (the loop calls it at setup)."""
        if self.tasks is not None and not isinstance(task, self.tasks):
            raise ConfigError(f"{type(self).__name__} cannot label the {task.name} task: {self.unsupported}")

    def check_datamodule(self, datamodule: ActiveLearningDataModule) -> None:
        """Refuse, at setup, a data module whose samples this oracle cannot show (after :meth:`check_task`; the
        data module is set up). Nothing by default."""

    def label(self, datamodule: ActiveLearningDataModule, query: Query) -> Sequence[Any] | None:
        raise NotImplementedError

    def collect(self, datamodule: ActiveLearningDataModule, query: Query) -> Sequence[Any] | None:
        """Labels for a query that was left pending; raise :class:`LabelsPending` if still missing."""
        raise LabelsPending(f"{type(self).__name__} cannot collect pending labels")


class DatasetOracle(Oracle):
    """Simulated annotator: the data set already holds the true labels."""

    source = "dataset"

    def label(self, datamodule: ActiveLearningDataModule, query: Query) -> Sequence[Any] | None:
        return None


class FileOracle(Oracle):
    """People label the queries through files in ``folder``; the run pauses until they are done.

    ``label`` writes ``queries_round_<k>.csv`` (index, file, score, pseudo_label and an empty ``label``
    column), its manifest ``queries_round_<k>.json`` and, for image data, one PNG per sample under
    ``queries_round_<k>/`` (scaled up to at least ``min_image_size`` pixels so people can see them), then
    raises :class:`LabelsPending`: the loop saves ``al_pending_round_<k>.ckpt`` and stops. Fill the
    ``label`` column with class ids and resume from that checkpoint (``collect`` reads the CSV back,
    validated), or run ``lightning-dynamical label import <csv> --state <al_state.json>`` and resume with
    ``resume_from_state``. For the segmentation task the ``label`` column names a mask PNG (relative to the
    folder; 8-bit single channel at the image's own size, one class index per pixel, 255 unlabeled): the model's
    prediction is written as ``queries_round_<k>/<index>_pseudo_mask.png`` (named in ``pseudo_label``) to copy and
    correct. A CSV already in the folder is never overwritten: one that answers this very
    query is used as is, one that is still unfilled pauses the run again.

    Args:
        folder: where the files go (local path or fsspec URL).
        num_classes: valid labels are ``0..num_classes-1``; default: the data module's
            :attr:`~lightning_dynamical.data.datamodule.ActiveLearningDataModule.num_classes`.
        min_image_size: smallest side of the written PNGs, in pixels (nearest-neighbour upscaling).
    """

    source = "file"
    tasks = (Classification, Segmentation)
    unsupported = "its label files hold a class id per sample, or a mask PNG per sample for segmentation"

    def __init__(self, folder: str, num_classes: int | None = None, min_image_size: int = 64) -> None:
        check_optional_positive_int("num_classes", num_classes)
        self.folder = str(folder)
        self.num_classes = num_classes
        self.min_image_size = min_image_size

    def label(self, datamodule: ActiveLearningDataModule, query: Query) -> Sequence[Any] | None:
        path = query_csv_path(self.folder, query.round)
        fs, fs_path = url_to_fs(path)
        if fs.exists(fs_path):
            return self._answered(datamodule, query, path)
        if is_rank_zero():
            self._write(datamodule, query, path)
        what = "mask PNG paths (255 = unlabeled)" if _masks(datamodule) is not None else "class ids"
        raise LabelsPending(f"fill the 'label' column of {path} with {what} 0..{self._classes(datamodule) - 1}")

    def collect(self, datamodule: ActiveLearningDataModule, query: Query) -> Sequence[Any] | None:
        path = query_csv_path(self.folder, query.round)
        try:
            return read_labels(path, query.indices, self._classes(datamodule), _masks(datamodule),
                               mask_shapes(datamodule, query.indices))
        except FileNotFoundError as err:
            raise LabelsPending(f"{path} is missing; FileOracle({self.folder!r}) wrote it when the run paused") from err

    def _answered(self, datamodule: ActiveLearningDataModule, query: Query, path: str) -> list[Any]:
        """Labels from a CSV that is already there; pauses if it is this query's but unfilled, else refuses."""
        rows = read_rows(path)
        if {_as_index(r.get("index")) for r in rows} - {None} != set(query.indices):
            raise LabelFileError(f"{path} exists and answers another query; move it away (it is kept as is)")
        try:
            return parse_labels(rows, query.indices, self._classes(datamodule), path, _masks(datamodule),
                                mask_shapes(datamodule, query.indices))
        except LabelFileError as err:
            raise LabelsPending(f"{path} is not filled in yet ({err})") from err

    def _classes(self, datamodule: ActiveLearningDataModule) -> int:
        return oracle_classes(datamodule, self.num_classes, type(self).__name__)

    def _write(self, datamodule: ActiveLearningDataModule, query: Query, path: str) -> None:
        scores = query.scores.tolist() if query.scores is not None else [None] * len(query.indices)
        pseudo = list(query.pseudo_labels) if query.pseudo_labels is not None else [None] * len(query.indices)
        masks = _masks(datamodule)
        rows = []
        shapes: dict[str, list[int]] = {}  # each image's (H, W), which its mask must match
        for index, score, pseudo_label in zip(query.indices, scores, pseudo):
            sample = batch_inputs(datamodule.splits.pool_eval[index], datamodule.label_key)
            size = _image_size(sample)
            if masks is not None and size is not None:
                shapes[str(index)] = list(size)
            image = image_array(sample) if isinstance(sample, Tensor) else None
            name = f"queries_round_{query.round}/{index}.png" if image is not None else ""
            if image is not None:
                self._save_png(records.join(self.folder, name), image, masks is None)
            if pseudo_label is not None and masks is not None:
                mask_name = f"queries_round_{query.round}/{index}_pseudo_mask.png"
                write_mask(records.join(self.folder, mask_name), pseudo_label, masks)
                pseudo_label = mask_name
            elif pseudo_label is not None:
                pseudo_label = datamodule.task.encode_label(pseudo_label)
            rows.append({"index": index, "file": name, "score": "" if score is None else score,
                         "pseudo_label": "" if pseudo_label is None else pseudo_label})
        manifest = {"round": query.round, "indices": [int(i) for i in query.indices],
                    "num_classes": self._classes(datamodule), "dataset_size": dataset_size(datamodule.splits.pool),
                    **({"masks": masks, "mask_shapes": shapes} if masks is not None else {})}
        write_query(path, rows, manifest)

    def _save_png(self, path: str, image: np.ndarray, scale_up: bool = True) -> None:
        """The image as a PNG, scaled up (nearest neighbour) to ``min_image_size``; at its own size where masks must
        match it pixel for pixel."""
        picture = Image.fromarray(image)
        scale = max(1, math.ceil(self.min_image_size / min(picture.size))) if scale_up else 1
        if scale > 1:
            picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
        fs, fs_path = url_to_fs(path)
        fs.makedirs(fs._parent(fs_path), exist_ok=True)
        with fs.open(fs_path, "wb") as f:
            picture.save(f, format="PNG")


def mask_shapes(datamodule: ActiveLearningDataModule, indices: Sequence[int]) -> dict[int, tuple[int, int]]:
    """``(H, W)`` of each pool sample's image, which its mask must match, for a segmentation task whose samples are
    image tensors; empty otherwise."""
    if _masks(datamodule) is None:
        return {}
    shapes = {}
    for index in indices:
        size = _image_size(batch_inputs(datamodule.splits.pool_eval[index], datamodule.label_key))
        if size is not None:
            shapes[int(index)] = size
    return shapes


def _image_size(sample: Any) -> tuple[int, int] | None:
    """``(H, W)`` of an image tensor sample, else ``None``."""
    if isinstance(sample, Tensor) and sample.ndim >= 2:
        return int(sample.shape[-2]), int(sample.shape[-1])
    return None


def _masks(datamodule: ActiveLearningDataModule) -> int | None:
    """The segmentation task's ``ignore_index`` when labels are masks, else ``None``."""
    task = datamodule.task
    return task.ignore_index if isinstance(task, Segmentation) else None


def oracle_classes(datamodule: ActiveLearningDataModule, num_classes: int | None, oracle: str) -> int:
    """The class count an oracle checks labels against: its own ``num_classes`` (which must agree with the
    data module's when both are known), else the data module's; refused when neither is known."""
    known = datamodule.num_classes
    if num_classes is not None and known is not None and num_classes != known:
        raise ValueError(f"{oracle}(num_classes={num_classes}) disagrees with the data module's {known} classes")
    if num_classes is not None:
        return num_classes
    if known is None:
        raise ValueError(f"the number of classes is unknown: pass num_classes to {oracle} or to the data module")
    return known


def _as_index(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None
