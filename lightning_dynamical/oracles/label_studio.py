"""``LabelStudioOracle``: people label the queried samples in a Label Studio project.

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
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

from PIL import Image
from tqdm.auto import tqdm

from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.loop.distributed import is_rank_zero
from lightning_dynamical.oracles.base import LabelsPending, Oracle, Query, oracle_classes
from lightning_dynamical.oracles.files import LabelFileError, _shorten, parse_labels
from lightning_dynamical.reporting.charts import image_array
from lightning_dynamical.tasks.batches import batch_inputs
from lightning_dynamical.tasks.classification import Classification
from lightning_dynamical.tasks.multilabel import MultiLabel

FROM_NAME = "label"
"""The ``Choices`` control of the labeling config; annotations are read from it."""


class LabelStudioUnavailable(ConnectionError):
    """Label Studio could not be reached, or refused the API key; nothing was changed."""


class LabelStudioOracle(Oracle):
    """Queried samples become tasks of a Label Studio project; annotators' choices come back as labels.

    Each round, ``label`` creates (or reuses, by ``project`` title) a project whose labeling config is a
    single-choice classification over ``class_names`` (multiple-choice for the multi-label task: the chosen
    names are the sample's label set, none chosen is the empty set), imports the queried samples as tasks (images as
    PNG data URIs, scaled to at least ``min_image_size`` pixels; strings as text; other inputs as their
    values in text), with the pool index and round in the task data and the pseudo label with its score as
    a prediction, so annotators see the model's guess. Then the run pauses exactly as with ``FileOracle``:
    the loop saves ``al_pending_round_<k>.ckpt`` and stops; resuming from it fetches the annotations
    (cancelled ones, i.e. skipped tasks, do not count), validates them and continues. With ``wait=True``
    the run instead polls every ``poll_seconds`` until every task is annotated, with a progress bar, and
    pauses as above if ``timeout_seconds`` pass first.

    Refused with a message and nothing changed: a choice that is not a class, annotators disagreeing on
    a task, tasks of this round for other pool indices (another run using the project), a project whose
    classes differ. A task still unlabeled or skipped keeps the labels pending. Label Studio being
    unreachable pauses the run at query time (the tasks are created on resume) and stops a resume.

    Args:
        url: the Label Studio server, e.g. ``http://localhost:8080``.
        project: title of the project to create or reuse (at least 3 characters).
        class_names: the choices annotators see, one per class id ``0..C-1``; default ``"0".."C-1"``.
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

    tasks = (Classification, MultiLabel)
    unsupported = ("its projects are single-choice (a class per sample) or multiple-choice (a label set per sample) "
                   "interfaces; span labels and brush masks are not wired to Label Studio yet (use FileOracle for "
                   "masks)")

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
        names = self._names(datamodule)
        client = self._client()
        project = self._project(client, datamodule, query, names)
        if not self._round_tasks(client, project, query):
            if is_rank_zero():
                self._import(client, project, datamodule, query, names)
            if not self.wait:
                raise LabelsPending(created.format(url=self._project_url(project)))
        return self._answer(client, project, query, names, _multiple(datamodule))

    def _answer(self, client: _Client, project: dict[str, Any], query: Query, names: list[str],
                multiple: bool) -> list[Any]:
        """The round's labels, waiting for them first with ``wait=True``; pending while any are missing."""
        tasks = self._wait(client, project, query) if self.wait else self._round_tasks(client, project, query)
        return read_annotations(tasks, query, names, f"Label Studio project {self._project_url(project)}", multiple)

    # ---- the project and its tasks ---------------------------------------------------------------------
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
                 names: list[str]) -> dict[str, Any]:
        """The project titled ``self.project`` (created if missing), checked to offer exactly ``names``."""
        for project in client.pages(f"/api/projects?title={_quote(self.project)}"):
            if project.get("title") != self.project:
                continue
            offered = project.get("parsed_label_config", {}).get(FROM_NAME, {}).get("labels")
            if offered != names:
                raise LabelFileError(f"Label Studio project {self.project!r} ({self.url}/projects/{project['id']}) "
                                     f"offers the classes {offered}, this run has {names}; choose another project "
                                     "title. Nothing was changed")
            return project
        if not is_rank_zero():
            raise LabelsPending(f"Label Studio project {self.project!r} is not created yet")
        config = labeling_config(names, _kind(datamodule.splits.pool_eval[query.indices[0]][0]), _multiple(datamodule))
        return client.request("POST", "/api/projects", {
            "title": self.project, "label_config": config,
            "description": "Active-learning queries from lightning-dynamical: choose the class of each sample.",
        })

    def _round_tasks(self, client: _Client, project: dict[str, Any], query: Query) -> list[dict[str, Any]]:
        """The project's tasks of this round, with their annotations."""
        tasks = client.request("GET", f"/api/projects/{project['id']}/export?exportType=JSON&download_all_tasks=true")
        return [t for t in tasks if t.get("data", {}).get("al_round") == query.round]

    def _import(self, client: _Client, project: dict[str, Any], datamodule: ActiveLearningDataModule, query: Query,
                names: list[str]) -> None:
        scores = query.scores.tolist() if query.scores is not None else [None] * len(query.indices)
        pseudo = query.pseudo_labels.tolist() if query.pseudo_labels is not None else [None] * len(query.indices)
        tasks = []
        for index, score, guess in zip(query.indices, scores, pseudo):
            data = {"pool_index": int(index), "al_round": query.round, **self._sample(datamodule, int(index))}
            if score is not None and math.isfinite(score):
                data["score"] = float(score)
            task: dict[str, Any] = {"data": data}
            guessed = _guessed(guess, names)
            if guessed is not None:
                data["pseudo_label"] = ", ".join(guessed)
                prediction: dict[str, Any] = {"model_version": f"lightning-dynamical round {query.round}",
                              "result": [{"from_name": FROM_NAME, "to_name": "sample", "type": "choices",
                                          "value": {"choices": guessed}}]}
                if "score" in data:
                    prediction["score"] = data["score"]
                task["predictions"] = [prediction]
            tasks.append(task)
        client.request("POST", f"/api/projects/{project['id']}/import", tasks)

    def _sample(self, datamodule: ActiveLearningDataModule, index: int) -> dict[str, str]:
        """The task data that shows pool sample ``index``: an image, a text, or the input's values."""
        x = batch_inputs(datamodule.splits.pool_eval[index], datamodule.label_key)
        if isinstance(x, dict):  # keyword inputs (e.g. token ids): shown as their values
            return {"sample": json.dumps({k: v.tolist() if hasattr(v, "tolist") else v
                                          for k, v in x.items()})[:10_000]}
        if isinstance(x, tuple):  # positional inputs: shown as their values, in order
            return {"sample": json.dumps([v.tolist() for v in x])[:10_000]}
        kind = _kind(x)
        if kind == "image":
            return {"sample": self._png_data_uri(image_array(x))}
        if kind == "text":
            return {"sample": str(x)}
        values = x.flatten().tolist() if hasattr(x, "flatten") else x
        return {"sample": json.dumps(values)[:10_000]}

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
    shown = '<Image name="sample" value="$sample"/>' if kind == "image" else '<Text name="sample" value="$sample"/>'
    choices = "".join(f"<Choice value={quoteattr(n)}/>" for n in names)
    question = "Which labels apply?" if multiple else "Which class?"
    return (f'<View>{shown}<Header value="{question} (the model\'s guess is preselected)"/>'
            f'<Choices name="{FROM_NAME}" toName="sample" choice="{"multiple" if multiple else "single"}" '
            f'showInline="true">{choices}</Choices></View>')


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
    problems: dict[str, list[str]] = {}
    waiting: dict[str, list[str]] = {}
    rows: list[dict[str, Any]] = []
    found = [task.get("data", {}).get("pool_index") for task in tasks]
    wanted = [int(i) for i in query.indices]
    structure = {"tasks for pool indices outside the query (another run uses this project?)":
                 sorted({str(i) for i in found} - {str(i) for i in wanted}),
                 "several tasks for pool indices": sorted({str(i) for i in found if found.count(i) > 1}),
                 "no task for pool indices (deleted?)": [str(i) for i in wanted if i not in found]}
    problems.update({kind: items for kind, items in structure.items() if items})
    for task, index in zip(tasks, found):
        annotations = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
        if not annotations:
            kind = "skipped (cancelled) by annotators" if task.get("annotations") else "not annotated yet"
            waiting.setdefault(kind, []).append(str(index))
            continue
        chosen = {tuple(sorted(_choices(a)) if multiple else _choices(a)) for a in annotations}
        if len(chosen) > 1:
            problems.setdefault("annotators disagree on pool indices", []).append(
                f"{index}: {sorted('/'.join(c) for c in chosen)}")
            continue
        (choice,) = chosen
        if len(choice) != 1 and not multiple:
            problems.setdefault("annotations without exactly one choice for pool indices", []).append(str(index))
            continue
        unknown = [c for c in choice if c not in class_of]
        if unknown:
            problems.setdefault(f"choices that are not classes (classes: {list(names)})", []).append(
                f"pool index {index}: {unknown[0]!r}")
            continue
        label = [int(n in choice) for n in names] if multiple else class_of[choice[0]]
        rows.append({"index": str(index), "label": label})
    if problems:
        details = "; ".join(f"{kind} {_shorten(items)}" for kind, items in problems.items())
        raise LabelFileError(f"{source} refused, nothing was changed: {details}")
    if waiting:
        details = "; ".join(f"{kind}: pool indices {_shorten(items)}" for kind, items in waiting.items())
        raise LabelsPending(f"{source}: labels still missing, nothing was changed ({details}); label every task "
                            "(skipped ones too) and resume")
    if multiple:
        by_index = {int(r["index"]): r["label"] for r in rows}
        return [by_index[int(i)] for i in query.indices]
    return parse_labels([{**r, "label": str(r["label"])} for r in rows], query.indices, len(names), source)


def _multiple(datamodule: ActiveLearningDataModule) -> bool:
    """Whether the data module's labels are label sets (a multiple-choice project)."""
    return isinstance(datamodule.task, MultiLabel)


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
