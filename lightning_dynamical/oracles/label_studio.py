"""``LabelStudioOracle``: people label the queried samples in a Label Studio project: a class, a label set, or the
entity spans over a sentence's words (token classification).

It speaks Label Studio's REST API with the standard library (``urllib``), so the plugin needs no extra
package for it; ``label-studio`` itself is a separate program (its own virtual environment). The API key
is read, when a request is made, from the environment variable ``api_key_env`` or from ``api_key_file``;
it is never an argument, so it never reaches a saved config, a checkpoint, hyperparameters or a log.
Both kinds of Label Studio key work: a legacy token (``Authorization: Token ...``) and a personal access
token (a JWT refresh token, exchanged at ``/api/token/refresh`` for short-lived access tokens).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from xml.sax.saxutils import quoteattr

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.loop.distributed import is_rank_zero
from lightning_dynamical.oracles.base import LabelsPending, Oracle, Query, oracle_classes
from lightning_dynamical.oracles.files import LabelFileError, _shorten, parse_labels
from lightning_dynamical.reporting.charts import image_array
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import batch_inputs
from lightning_dynamical.tasks.classification import Classification
from lightning_dynamical.tasks.multilabel import MultiLabel
from lightning_dynamical.tasks.tokens import TokenClassification

FROM_NAME = "label"
"""The control of the labeling config (``Choices``, or ``Labels`` for spans); annotations are read from it."""
TO_NAME = "sample"
"""The object the control labels: the image or text shown (the task data's ``sample``)."""


class LabelStudioUnavailable(ConnectionError):
    """Label Studio could not be reached, or refused the API key; nothing was changed."""


class LabelStudioOracle(Oracle):
    """Queried samples become tasks of a Label Studio project; annotators' choices or spans come back as labels.

    Each round, ``label`` creates (or reuses, by ``project`` title) a project whose labeling config is a
    single-choice classification over ``class_names`` (multiple-choice for the multi-label task: the chosen
    names are the sample's label set, none chosen is the empty set), imports the queried samples as tasks (images as
    PNG data URIs, scaled to at least ``min_image_size`` pixels; strings, and samples whose data set has ``words``
    (:func:`item_words`), as text; other inputs as their values in text), with the pool index and round in the task
    data and the pseudo label with its score as a prediction, so annotators see the model's guess. Then the run
    pauses exactly as with ``FileOracle``: the loop saves ``al_pending_round_<k>.ckpt`` and stops; resuming from it
    fetches the annotations (cancelled ones, i.e. skipped tasks, do not count), validates them and continues. With
    ``wait=True`` the run instead polls every ``poll_seconds`` until every task is annotated, with a progress bar, and
    pauses as above if ``timeout_seconds`` pass first.

    Token classification (NER) with IOB2 ``tags`` gets a span project instead: one ``Label`` per entity type of the
    tags over the sample's words joined by single spaces (selected by whole words), the model's entities as the
    prediction, and each annotation's spans read back as the IOB2 tag of every word (:func:`region_spans`: a
    region takes every word its characters touch; no region means every word is ``O``), ``ignore_index`` at the
    other positions. The pool data set must give the words of its samples (:func:`item_words`).

    Refused with a message and nothing changed: a choice or span label that is not a class, a malformed or
    overlapping span, annotators disagreeing on a task, tasks of this round for other pool indices (another run using
    the project), a project whose classes or control differ. A task still unlabeled or skipped keeps the labels
    pending. Label Studio being unreachable pauses the run at query time (the tasks are created on resume) and stops
    a resume.

    Args:
        url: the Label Studio server, e.g. ``http://localhost:8080``.
        project: title of the project to create or reuse (at least 3 characters).
        class_names: the choices annotators see, one per class id ``0..C-1``; default ``"0".."C-1"`` (not for span
            projects, whose labels are the entity types of the task's tags).
        api_key_env: environment variable holding the API key.
        api_key_file: a file holding the API key (read instead of the variable when given).
        wait: poll until all tasks of the round are annotated instead of pausing right away.
        poll_seconds: seconds between polls with ``wait=True``.
        timeout_seconds: with ``wait=True``, pause after this long (``None``: wait for ever).
        num_classes: valid labels are ``0..num_classes-1``; default: the data module's.
        min_image_size: smallest side of the images shown, in pixels (nearest-neighbour upscaling).
        request_timeout: seconds before one HTTP request gives up.
    """

    source = "label-studio"

    tasks = (Classification, MultiLabel, TokenClassification)
    unsupported = ("its projects are single-choice (a class per sample), multiple-choice (a label set per sample) or "
                   "span (entities over a sample's words, for token classification) interfaces; brush masks for "
                   "segmentation are not wired to Label Studio (use FileOracle for masks)")

    def __init__(self, url: str = "http://localhost:8080", project: str = "lightning-dynamical",
                 class_names: list[str] | None = None, api_key_env: str = "LABEL_STUDIO_API_KEY",
                 api_key_file: str | None = None, wait: bool = False, poll_seconds: float = 10.0,
                 timeout_seconds: float | None = None, num_classes: int | None = None, min_image_size: int = 64,
                 request_timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if len(project.strip()) < 3:
            raise ValueError(f"project must be a title of at least 3 characters, got {project!r}")
        if class_names is not None and len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names must be distinct, got {class_names}")
        if class_names is not None and (not class_names or any(not str(n).strip() for n in class_names)):
            raise ValueError(f"class_names must be non-empty names, got {class_names}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names for num_classes={num_classes}")
        if poll_seconds <= 0 or request_timeout <= 0:
            raise ValueError(f"poll_seconds and request_timeout must be > 0, got {poll_seconds}, {request_timeout}")
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be None or > 0, got {timeout_seconds}")
        self.url = url.rstrip("/")
        self.project = project
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.api_key_env = api_key_env
        self.api_key_file = api_key_file
        self.wait = wait
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.num_classes = num_classes if num_classes is not None or class_names is None else len(class_names)
        self.min_image_size = min_image_size
        self.request_timeout = request_timeout

    def check_task(self, task: Task) -> None:
        """Also refuse token classification whose spans cannot be named: no IOB2 tags, an entity type without both
        its ``B-`` and ``I-`` tag, or ``class_names`` given (a span project's labels are the entity types)."""
        super().check_task(task)
        if not isinstance(task, TokenClassification):
            return
        problem = None
        if task.tags is None:
            problem = "its span projects offer the entity types of the task's IOB2 tags, and it has none (tags=...)"
        elif not span_types(task.tags):
            problem = f"the task's tags {list(task.tags)} name no entity type"
        elif self.class_names is not None:
            problem = ("class_names name the choices of classification projects; a span project's labels are the "
                       "entity types of the task's tags (leave class_names out)")
        else:
            lacking = [t for t in span_types(task.tags) if not {f"B-{t}", f"I-{t}"} <= set(task.tags)]
            if lacking:
                problem = f"spans of type {lacking[0]!r} need both the tags 'B-{lacking[0]}' and 'I-{lacking[0]}'"
        if problem:
            raise ConfigError(f"{type(self).__name__} cannot label the {task.name} task: {problem}")

    def check_datamodule(self, datamodule: ActiveLearningDataModule) -> None:
        """Token classification: the pool must give each sample's words (:func:`pool_sentences` of its first
        sample), so that a run without them stops at setup, not after its first round's training."""
        if isinstance(datamodule.task, TokenClassification) and datamodule.num_unlabeled:
            pool_sentences(datamodule, datamodule.unlabeled_indices[:1])

    # ---- the oracle ------------------------------------------------------------------------------------
    def label(self, datamodule: ActiveLearningDataModule, query: Query) -> Sequence[Any] | None:
        try:
            return self._labels(datamodule, query, f"label the {len(query.indices)} tasks of round {query.round} in "
                                                   "{url}")
        except LabelStudioUnavailable as err:
            raise LabelsPending(f"{err}; the run pauses, and resuming creates or reads the tasks of round "
                                f"{query.round}") from err

    def collect(self, datamodule: ActiveLearningDataModule, query: Query) -> Sequence[Any] | None:
        return self._labels(datamodule, query, f"the tasks of round {query.round} were only created now: label them "
                                               "in {url} and resume again from the same checkpoint")

    def _labels(self, datamodule: ActiveLearningDataModule, query: Query, created: str) -> list[Any]:
        """The round's labels: its tasks created first where missing (rank zero), then, without ``wait``, a pause
        whose message is ``created`` (``{url}`` is the project's address)."""
        self.check_task(datamodule.task)
        ask = self._question(datamodule, query)
        client = self._client()
        project = self._project(client, datamodule, query, ask)
        if not self._round_tasks(client, project, query):
            if is_rank_zero():
                self._import(client, project, datamodule, query, ask)
            if not self.wait:
                raise LabelsPending(created.format(url=self._project_url(project)))
        tasks = self._wait(client, project, query) if self.wait else self._round_tasks(client, project, query)
        source = f"Label Studio project {self._project_url(project)}"
        if ask.sentences is None:
            return read_annotations(tasks, query, ask.names, source, ask.multiple)
        task = datamodule.task
        assert isinstance(task, TokenClassification) and task.tags is not None  # check_task
        return read_span_annotations(tasks, query, ask.sentences, task.tags, task.ignore_index, source)

    # ---- the project and its tasks ---------------------------------------------------------------------
    def _question(self, datamodule: ActiveLearningDataModule, query: Query) -> _Question:
        """What the project asks of this data module: spans over the queried sentences' words (token
        classification), else a choice among the class names; refused before Label Studio is asked."""
        task = datamodule.task
        if isinstance(task, TokenClassification) and task.tags is not None:
            return _Question("Labels", span_types(task.tags), sentences=pool_sentences(datamodule, query.indices))
        return _Question("Choices", self._names(datamodule), multiple=isinstance(task, MultiLabel))

    def _names(self, datamodule: ActiveLearningDataModule) -> list[str]:
        classes = oracle_classes(datamodule, self.num_classes, type(self).__name__)
        if self.class_names is not None:
            return self.class_names
        dataset_names = getattr(datamodule.splits.pool, "classes", None)
        if isinstance(dataset_names, Sequence) and len(dataset_names) == classes and len(set(dataset_names)) == classes:
            return [str(n) for n in dataset_names]
        return [str(c) for c in range(classes)]

    def _client(self) -> _Client:
        return _Client(self.url, self._api_key(), self.request_timeout)

    def _api_key(self) -> str:
        if self.api_key_file is not None:
            try:
                with open(os.path.expanduser(self.api_key_file)) as f:
                    key = f.read().strip()
            except OSError as err:
                raise LabelStudioUnavailable(f"cannot read the Label Studio API key file {self.api_key_file}: "
                                             f"{err.strerror}") from err
            if not key:
                raise LabelStudioUnavailable(f"the Label Studio API key file {self.api_key_file} is empty")
            return key
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise LabelStudioUnavailable(f"no Label Studio API key: set the environment variable {self.api_key_env} "
                                         "or pass api_key_file")
        return key

    def _project(self, client: _Client, datamodule: ActiveLearningDataModule, query: Query,
                 ask: _Question) -> dict[str, Any]:
        """The project titled ``self.project`` (created if missing), checked to offer exactly ``ask``'s control and
        names."""
        for project in client.pages(f"/api/projects?title={_quote(self.project)}"):
            if project.get("title") != self.project:
                continue
            control = project.get("parsed_label_config", {}).get(FROM_NAME, {})
            offered = control.get("labels")
            if offered != ask.names or control.get("type") != ask.control:
                raise LabelFileError(f"Label Studio project {self.project!r} ({self.url}/projects/{project['id']}) "
                                     f"offers the {control.get('type')} {offered}, this run has the {ask.control} "
                                     f"{ask.names}; choose another project title. Nothing was changed")
            return project
        if not is_rank_zero():
            raise LabelsPending(f"Label Studio project {self.project!r} is not created yet")
        if ask.sentences is not None:
            config = span_config(ask.names)
            description = "mark the entities in each sentence."
        else:
            shown = self._sample(datamodule, query.indices[0])
            kind = "image" if shown.startswith("data:image/") else "text"
            config = labeling_config(ask.names, kind, ask.multiple)
            description = "choose the class of each sample."
        return client.request("POST", "/api/projects", {
            "title": self.project, "label_config": config,
            "description": f"Active-learning queries from lightning-dynamical: {description}",
        })

    def _round_tasks(self, client: _Client, project: dict[str, Any], query: Query) -> list[dict[str, Any]]:
        """The project's tasks of this round, with their annotations."""
        tasks = client.request("GET", f"/api/projects/{project['id']}/export?exportType=JSON&download_all_tasks=true")
        return [t for t in tasks if t.get("data", {}).get("al_round") == query.round]

    def _import(self, client: _Client, project: dict[str, Any], datamodule: ActiveLearningDataModule, query: Query,
                ask: _Question) -> None:
        scores = query.scores.tolist() if query.scores is not None else [None] * len(query.indices)
        pseudo = query.pseudo_labels.tolist() if query.pseudo_labels is not None else [None] * len(query.indices)
        tasks = []
        for index, score, guess in zip(query.indices, scores, pseudo):
            data: dict[str, Any] = {"pool_index": int(index), "al_round": query.round,
                                    "sample": self._sample(datamodule, int(index))}
            if score is not None and math.isfinite(score):
                data["score"] = float(score)
            task: dict[str, Any] = {"data": data}
            guessed = self._guess(datamodule, ask, int(index), guess)
            if guessed is not None:
                data["pseudo_label"], result = guessed
                prediction: dict[str, Any] = {"model_version": f"lightning-dynamical round {query.round}",
                                              "result": result}
                if "score" in data:
                    prediction["score"] = data["score"]
                task["predictions"] = [prediction]
            tasks.append(task)
        client.request("POST", f"/api/projects/{project['id']}/import", tasks)

    @staticmethod
    def _guess(datamodule: ActiveLearningDataModule, ask: _Question, index: int,
               guess: Any) -> tuple[str, list[dict[str, Any]]] | None:
        """The model's guess for pool sample ``index`` as ``(text, prediction result)``: its entities (spans), or
        the names it chose; ``None`` without a guess."""
        if guess is None:
            return None
        task = datamodule.task
        if ask.sentences is not None:
            assert isinstance(task, TokenClassification) and task.tags is not None
            sentence = ask.sentences[index]
            spans = sentence.spans(guess, task.tags, task.ignore_index)
            return describe_spans(spans, sentence.words), span_regions(spans, sentence.words)
        guessed = _guessed(guess, ask.names)
        if guessed is None:
            return None
        return ", ".join(guessed), [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                                     "value": {"choices": guessed}}]

    def _sample(self, datamodule: ActiveLearningDataModule, index: int) -> str:
        """The task data that shows pool sample ``index``: its words as text, an image, a text, or the input's
        values."""
        words = item_words(datamodule.splits.pool_eval, index)
        if words is not None:
            return " ".join(words)
        x = batch_inputs(datamodule.splits.pool_eval[index], datamodule.label_key)
        if isinstance(x, dict):  # keyword inputs (e.g. token ids): shown as their values
            return json.dumps({k: v.tolist() if hasattr(v, "tolist") else v for k, v in x.items()})[:10_000]
        if isinstance(x, tuple):  # positional inputs: shown as their values, in order
            return json.dumps([v.tolist() for v in x])[:10_000]
        kind = _kind(x)
        if kind == "image":
            return self._png_data_uri(image_array(x))
        if kind == "text":
            return str(x)
        values = x.flatten().tolist() if hasattr(x, "flatten") else x
        return json.dumps(values)[:10_000]

    def _png_data_uri(self, array: Any) -> str:
        picture = Image.fromarray(array)
        scale = max(1, math.ceil(self.min_image_size / min(picture.size)))
        if scale > 1:
            picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
        out = io.BytesIO()
        picture.save(out, format="PNG")
        return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")

    def _wait(self, client: _Client, project: dict[str, Any], query: Query) -> list[dict[str, Any]]:
        """Poll until every task of the round has an annotation (a skip counts: it needs people, not time)."""
        start = time.monotonic()
        bar = tqdm(total=len(query.indices), desc=f"round {query.round}: tasks annotated in Label Studio",
                   unit="task", disable=not is_rank_zero())
        try:
            while True:
                tasks = self._round_tasks(client, project, query)
                done = sum(1 for t in tasks if t.get("annotations"))
                bar.update(done - bar.n)
                if tasks and done >= len(query.indices):
                    return tasks
                if self.timeout_seconds is not None and time.monotonic() - start >= self.timeout_seconds:
                    raise LabelsPending(f"waited {self.timeout_seconds:g} s: {done} of {len(query.indices)} tasks of "
                                        f"round {query.round} are annotated in {self._project_url(project)}")
                time.sleep(self.poll_seconds)
        finally:
            bar.close()

    def _project_url(self, project: dict[str, Any]) -> str:
        return f"{self.url}/projects/{project['id']} ({self.project!r})"


def labeling_config(names: Sequence[str], kind: str, multiple: bool = False) -> str:
    """A single-choice classification config over ``names`` (multiple-choice: a label set) for an image, a text or
    values shown as text."""
    shown = (f'<Image name="{TO_NAME}" value="$sample"/>' if kind == "image"
             else f'<Text name="{TO_NAME}" value="$sample"/>')
    choices = "".join(f"<Choice value={quoteattr(n)}/>" for n in names)
    question = "Which labels apply?" if multiple else "Which class?"
    return (f'<View>{shown}<Header value="{question} (the model\'s guess is preselected)"/>'
            f'<Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="{"multiple" if multiple else "single"}" '
            f'showInline="true">{choices}</Choices></View>')


def span_config(types: Sequence[str]) -> str:
    """A span config: one ``Label`` per entity type over the sample's text, selected by whole words."""
    labels = "".join(f"<Label value={quoteattr(t)}/>" for t in types)
    return (f'<View><Header value="Mark every entity (the model\'s guess is preselected)"/>'
            f'<Labels name="{FROM_NAME}" toName="{TO_NAME}">{labels}</Labels>'
            f'<Text name="{TO_NAME}" value="$sample" granularity="word"/></View>')


def read_annotations(tasks: Sequence[dict[str, Any]], query: Query, names: Sequence[str], source: str,
                     multiple: bool = False) -> list[Any]:
    """Labels for ``query.indices`` from the round's exported tasks, every problem named before refusing: class
    indices, or with ``multiple`` 0/1 vectors over ``names`` (the chosen ones are 1).

    Pending (:class:`LabelsPending`) while a task is unannotated or only skipped; refused
    (:class:`LabelFileError`) for choices that are not classes, disagreeing annotators, an annotation
    with no choice (single-choice only), or tasks that do not answer this query (missing, foreign or repeated pool
    indices).
    """
    class_of = {name: c for c, name in enumerate(names)}

    def answer(index: int, annotations: list[dict[str, Any]]) -> Any:
        chosen = {tuple(sorted(_choices(a)) if multiple else _choices(a)) for a in annotations}
        if len(chosen) > 1:
            raise _Refused("annotators disagree on pool indices", f"{index}: {sorted('/'.join(c) for c in chosen)}")
        (choice,) = chosen
        if len(choice) != 1 and not multiple:
            raise _Refused("annotations without exactly one choice for pool indices", str(index))
        unknown = [c for c in choice if c not in class_of]
        if unknown:
            raise _Refused(f"choices that are not classes (classes: {list(names)})",
                           f"pool index {index}: {unknown[0]!r}")
        return [int(n in choice) for n in names] if multiple else class_of[choice[0]]

    labels = _read(tasks, query, source, answer)
    if multiple:
        return [labels[int(i)] for i in query.indices]
    return parse_labels([{"index": str(i), "label": str(y)} for i, y in labels.items()], query.indices, len(names),
                        source)


def read_span_annotations(tasks: Sequence[dict[str, Any]], query: Query, sentences: Mapping[int, Sentence],
                          tags: Sequence[str], ignore_index: int, source: str) -> list[Tensor]:
    """Token labels for ``query.indices`` from the round's exported tasks of a span project: each annotation's
    regions (:func:`region_spans`) as the IOB2 tag indices (into ``tags``) of the sample's words, ``ignore_index``
    at its other positions (:meth:`Sentence.label`); an annotation without regions says every word is ``O``.

    Pending and refused as :func:`read_annotations`; refused besides: a malformed, unknown or overlapping region
    (:class:`SpanError`), annotators whose spans differ.
    """
    types = span_types(tags)

    def answer(index: int, annotations: list[dict[str, Any]]) -> Tensor:
        sentence = sentences[index]
        read: dict[tuple[Span, ...], None] = {}
        for annotation in annotations:
            try:
                read[tuple(region_spans(annotation.get("result", []), sentence.words, types))] = None
            except SpanError as err:
                raise _Refused("span annotations refused for pool indices", f"{index}: {err}") from None
        if len(read) > 1:
            raise _Refused("annotators disagree on pool indices",
                           f"{index}: {' / '.join(describe_spans(s, sentence.words) for s in read)}")
        (spans,) = read
        return sentence.label(spans, tags, ignore_index)

    labels = _read(tasks, query, source, answer)
    return [labels[int(i)] for i in query.indices]


class _Refused(Exception):
    """One pool index refused: ``kind`` groups it with others of its kind in the message, ``item`` names it."""

    def __init__(self, kind: str, item: str) -> None:
        super().__init__(kind, item)
        self.kind, self.item = kind, item


def _read(tasks: Sequence[dict[str, Any]], query: Query, source: str,
          answer: Callable[[int, list[dict[str, Any]]], Any]) -> dict[int, Any]:
    """Pool index -> ``answer(index, annotations)`` (the task's annotations that were not cancelled) for every task
    answering ``query``, refused (:class:`LabelFileError`) with every problem named (missing, foreign or repeated
    tasks, :class:`_Refused` answers), else pending (:class:`LabelsPending`) while a task has no annotation that
    counts."""
    problems: dict[str, list[str]] = {}
    waiting: dict[str, list[str]] = {}
    labels: dict[int, Any] = {}
    found = [task.get("data", {}).get("pool_index") for task in tasks]
    wanted = [int(i) for i in query.indices]
    structure = {"tasks for pool indices outside the query (another run uses this project?)":
                 sorted({str(i) for i in found} - {str(i) for i in wanted}),
                 "several tasks for pool indices": sorted({str(i) for i in found if found.count(i) > 1}),
                 "no task for pool indices (deleted?)": [str(i) for i in wanted if i not in found]}
    problems.update({kind: items for kind, items in structure.items() if items})
    for task, index in zip(tasks, found):
        if index not in wanted:  # named above
            continue
        annotations = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
        if not annotations:
            kind = "skipped (cancelled) by annotators" if task.get("annotations") else "not annotated yet"
            waiting.setdefault(kind, []).append(str(index))
            continue
        try:
            labels[int(index)] = answer(int(index), annotations)
        except _Refused as refused:
            problems.setdefault(refused.kind, []).append(refused.item)
    if problems:
        details = "; ".join(f"{kind} {_shorten(items)}" for kind, items in problems.items())
        raise LabelFileError(f"{source} refused, nothing was changed: {details}")
    if waiting:
        details = "; ".join(f"{kind}: pool indices {_shorten(items)}" for kind, items in waiting.items())
        raise LabelsPending(f"{source}: labels still missing, nothing was changed ({details}); label every task "
                            "(skipped ones too) and resume")
    return labels


# ---- span labels -------------------------------------------------------------------------------------------
class Span(NamedTuple):
    """An entity of type ``label`` over the words ``start .. end - 1`` of a sentence."""

    start: int
    end: int
    label: str


class SpanError(ValueError):
    """An annotation's regions cannot be read as word spans (each problem named)."""


@dataclass(frozen=True)
class Sentence:
    """The words of a token-classification pool sample and where they sit in its label: word ``k`` is label
    position ``positions[k]`` of ``length``."""

    words: tuple[str, ...]
    positions: tuple[int, ...]
    length: int

    def spans(self, label: Sequence[int] | Tensor, tags: Sequence[str], ignore_index: int) -> list[Span]:
        """The entities of a label (tag indices per position; ``ignore_index`` reads as ``O``)."""
        values = label.tolist() if isinstance(label, Tensor) else list(label)
        return tags_to_spans([tags[values[p]] if values[p] != ignore_index else "O" for p in self.positions])

    def label(self, spans: Sequence[Span], tags: Sequence[str], ignore_index: int) -> Tensor:
        """The ``(length,)`` int64 label of ``spans``: the tag indices of the words' IOB2 tags
        (:func:`spans_to_tags`), ``ignore_index`` at the other positions."""
        index = {tag: i for i, tag in reversed(list(enumerate(tags)))}
        label = torch.full((self.length,), ignore_index, dtype=torch.long)
        label[list(self.positions)] = torch.tensor([index[t] for t in spans_to_tags(spans, len(self.words))],
                                                   dtype=torch.long)
        return label


def item_words(dataset: Dataset, index: int) -> list[str] | None:
    """The words of item ``index``: ``dataset.words[index]``, looked up through views that re-index another data set
    (``Subset`` and the like: a ``dataset`` and an ``indices`` attribute); ``None`` when no data set on the way has
    ``words``.

    The contract: ``words[i][k]`` is the word at item ``i``'s ``k``-th real position (``attention_mask`` 1, or every
    position of an input without the mask), one word per token, after truncation
    (:class:`~lightning_dynamical.data.ag_news.EncodedTexts` keeps them, e.g. from
    :func:`~lightning_dynamical.data.wikiann.build_wikiann`).
    """
    words = getattr(dataset, "words", None)
    if words is not None:
        return [str(w) for w in words[index]]
    inner, indices = getattr(dataset, "dataset", None), getattr(dataset, "indices", None)
    if isinstance(inner, Dataset) and indices is not None:
        return item_words(inner, int(indices[index]))
    return None


def pool_sentences(datamodule: ActiveLearningDataModule, indices: Sequence[int]) -> dict[int, Sentence]:
    """The :class:`Sentence` of each pool index (:func:`item_words` of ``splits.pool_eval``, at the real positions of
    the task's ``mask_key``); a :class:`ConfigError` when the pool has no words, or words that do not fit."""
    task = datamodule.task
    assert isinstance(task, TokenClassification)
    dataset = datamodule.splits.pool_eval
    sentences: dict[int, Sentence] = {}
    for index in indices:
        words = item_words(dataset, int(index))
        if words is None:
            raise ConfigError("LabelStudioOracle shows a token-classification sample as its words and reads spans "
                              "back onto them, but the pool data set has no words: give it a `words` attribute "
                              "(words[i]: item i's words, one per real token), as EncodedTexts(words=...) from "
                              "build_wikiann has")
        inputs = batch_inputs(dataset[int(index)], datamodule.label_key)
        first = next(v for v in inputs.values() if isinstance(v, Tensor)) if isinstance(inputs, dict) \
            else inputs if isinstance(inputs, Tensor) else inputs[0]
        (length,) = task.label_shape(first)
        mask = inputs.get(task.mask_key) if isinstance(inputs, dict) else None
        positions = (torch.nonzero(mask != 0).flatten().tolist() if isinstance(mask, Tensor)
                     else list(range(min(len(words), length))))
        bad = [w for w in words if not w or any(c.isspace() for c in w)]
        if len(words) != len(positions) or bad:
            problem = f"word {bad[0]!r} is empty or holds whitespace" if bad else \
                f"{len(words)} words for {len(positions)} real positions of {length}"
            raise ConfigError(f"LabelStudioOracle cannot show pool index {index} as words: {problem}; give one "
                              "word (no whitespace) per real token")
        sentences[int(index)] = Sentence(tuple(words), tuple(positions), length)
    return sentences


def span_types(tags: Sequence[str]) -> list[str]:
    """The entity types of IOB2 ``tags`` in order of first appearance (``O, B-PER, I-PER, B-LOC, I-LOC`` ->
    ``PER, LOC``): the labels of a span project."""
    return list(dict.fromkeys(t[2:] for t in tags if t != "O"))


def tags_to_spans(tags: Sequence[str]) -> list[Span]:
    """The entities of a sentence's IOB2 tags (one per word), read as :class:`~lightning_dynamical.tasks.EntityF1`
    and seqeval's default mode read them: ``B-X`` begins an entity, ``I-X`` continues one of type ``X`` ending on
    the word before, else begins one."""
    spans: list[Span] = []
    for k, tag in enumerate(tags):
        if tag == "O":
            continue
        label = tag[2:]
        if tag.startswith("I-") and spans and spans[-1].end == k and spans[-1].label == label:
            spans[-1] = spans[-1]._replace(end=k + 1)
        else:
            spans.append(Span(k, k + 1, label))
    return spans


def spans_to_tags(spans: Sequence[Span], n_words: int) -> list[str]:
    """The IOB2 tags of ``n_words`` words: ``B-X`` on a span's first word, ``I-X`` on its others, ``O`` elsewhere
    (spans must not overlap: :func:`region_spans` refuses that)."""
    tags = ["O"] * n_words
    for span in spans:
        tags[span.start:span.end] = [f"B-{span.label}"] + [f"I-{span.label}"] * (span.end - span.start - 1)
    return tags


def word_offsets(words: Sequence[str]) -> list[tuple[int, int]]:
    """Each word's character range ``[start, end)`` in the text shown, the words joined by single spaces."""
    offsets: list[tuple[int, int]] = []
    start = 0
    for word in words:
        offsets.append((start, start + len(word)))
        start += len(word) + 1
    return offsets


def span_regions(spans: Sequence[Span], words: Sequence[str]) -> list[dict[str, Any]]:
    """Label Studio result items (type ``labels``, character offsets into the shown text) of word spans."""
    offsets, text = word_offsets(words), " ".join(words)
    regions = []
    for span in spans:
        start, end = offsets[span.start][0], offsets[span.end - 1][1]
        regions.append({"from_name": FROM_NAME, "to_name": TO_NAME, "type": "labels",
                        "value": {"start": start, "end": end, "text": text[start:end], "labels": [span.label]}})
    return regions


def region_spans(result: Sequence[dict[str, Any]], words: Sequence[str], types: Sequence[str]) -> list[Span]:
    """The word spans of an annotation's regions (result items of the ``label`` control), sorted; none is a valid
    answer (no entity).

    A region's characters ``[start, end)`` of the shown text (:func:`word_offsets`) cover every word they touch: a
    region that cuts a word, or takes in a space, is snapped to whole words (Label Studio selects whole words
    anyway). Refused (:class:`SpanError`, naming every problem): a region without integer ``start < end`` inside
    the text or touching no word, without exactly one label, with a label that is not an entity type of ``types``,
    and regions that share a word (a repeated identical region counts once).
    """
    offsets, text = word_offsets(words), " ".join(words)
    problems: list[str] = []
    spans: set[Span] = set()
    for n, item in enumerate(result):
        if item.get("from_name") != FROM_NAME:
            continue
        value = item.get("value")
        value = value if isinstance(value, dict) else {}
        start, end, labels = _offset(value.get("start")), _offset(value.get("end")), value.get("labels")
        where = f"region {n}"
        if start is None or end is None or not 0 <= start < end <= len(text):
            problems.append(f"{where}: characters {value.get('start')!r}..{value.get('end')!r} are not a stretch of "
                            f"the {len(text)}-character text")
            continue
        covered = [k for k, (a, b) in enumerate(offsets) if a < end and start < b]
        if not covered:
            problems.append(f"{where}: characters {start}..{end} ({text[start:end]!r}) touch no word")
            continue
        where = f"region {n} {' '.join(words[covered[0]:covered[-1] + 1])!r}"
        if not isinstance(labels, list) or len(labels) != 1:
            problems.append(f"{where}: {len(labels) if isinstance(labels, list) else 'no'} labels, expected one")
        elif labels[0] not in types:
            problems.append(f"{where}: {labels[0]!r} is not an entity type ({', '.join(types)})")
        else:
            spans.add(Span(covered[0], covered[-1] + 1, str(labels[0])))
    ordered = sorted(spans)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.start < a.end:
                problems.append(f"overlapping regions {describe_spans([a], words)} and {describe_spans([b], words)}")
    if problems:
        raise SpanError("; ".join(problems))
    return ordered


def describe_spans(spans: Sequence[Span], words: Sequence[str]) -> str:
    """``'Anders Lindström' (PER), 'Paris' (LOC)`` (``no entity`` for none): spans as people read them."""
    return ", ".join(f"{' '.join(words[s.start:s.end])!r} ({s.label})" for s in spans) or "no entity"


def _offset(x: Any) -> int | None:
    """A character offset as an int (Label Studio may send ``3.0``); ``None`` when it is not a whole number."""
    if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x == int(x):
        return int(x)
    return None


@dataclass(frozen=True)
class _Question:
    """What a project asks: its control (``Choices`` or ``Labels``) with its names, whether several choices may be
    made, and for spans the queried samples' :class:`Sentence` by pool index."""

    control: str
    names: list[str]
    multiple: bool = False
    sentences: dict[int, Sentence] | None = None


def _guessed(guess: Any, names: Sequence[str]) -> list[str] | None:
    """The names the model predicted (a class index, or a 0/1 vector of a label set), or ``None``."""
    if guess is None:
        return None
    if isinstance(guess, list):
        return [n for n, on in zip(names, guess) if on]
    return [names[int(guess)]] if 0 <= int(guess) < len(names) else None


def _choices(annotation: dict[str, Any]) -> list[str]:
    return [choice for item in annotation.get("result", []) if item.get("from_name") == FROM_NAME
            for choice in item.get("value", {}).get("choices", [])]


def _kind(x: Any) -> str:
    if isinstance(x, str):
        return "text"
    return "image" if image_array(x) is not None else "values"


class _Unauthorized(LabelStudioUnavailable):
    """HTTP 401/403: the key was refused (or a personal access token's access token expired)."""


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


class _Client:
    """Minimal JSON client for Label Studio's REST API; the key lives only as long as the client."""

    def __init__(self, url: str, key: str, timeout: float) -> None:
        self._url, self._key, self._timeout = url, key, timeout
        self._access: str | None = None

    def pages(self, path: str) -> list[dict[str, Any]]:
        """Every item of a paginated list endpoint."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            sep = "&" if "?" in path else "?"
            body = self.request("GET", f"{path}{sep}page={page}&page_size=100")
            if isinstance(body, list):
                return items + body
            items += body.get("results", [])
            if not body.get("next"):
                return items
            page += 1

    def request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            return self._send(method, path, body)
        except _Unauthorized:
            if not (self._is_jwt() and self._access is not None):
                raise
            self._access = None  # the short-lived access token expired: refresh once and retry
            return self._send(method, path, body)

    def _send(self, method: str, path: str, body: Any) -> Any:
        request = urllib.request.Request(self._url + path, method=method, headers={
            "Authorization": self._authorization(), "Content-Type": "application/json", "Accept": "application/json"},
            data=None if body is None else json.dumps(body).encode())
        return self._open(request, f"{method} {path.split('?')[0]}")

    def _authorization(self) -> str:
        if not self._is_jwt():
            return f"Token {self._key}"
        if self._access is None:
            request = urllib.request.Request(self._url + "/api/token/refresh", method="POST",
                                             headers={"Content-Type": "application/json"},
                                             data=json.dumps({"refresh": self._key}).encode())
            self._access = self._open(request, "POST /api/token/refresh")["access"]
        return f"Bearer {self._access}"

    def _is_jwt(self) -> bool:
        return self._key.count(".") == 2

    def _open(self, request: urllib.request.Request, what: str) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise _Unauthorized(f"Label Studio at {self._url} refused the API key (HTTP {err.code} for "
                                             f"{what})") from None
            detail = err.read()[:500].decode("utf-8", "replace")
            raise RuntimeError(f"Label Studio at {self._url} answered HTTP {err.code} to {what}: {detail}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise LabelStudioUnavailable(f"Label Studio at {self._url} is not reachable ({reason})") from None
        return json.loads(text) if text else None
