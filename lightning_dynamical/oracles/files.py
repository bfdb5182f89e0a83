"""The human oracle's files: a query CSV plus its JSON manifest, read back validated, and ``label import``.

``queries_round_<k>.csv`` has the columns ``index, file, score, pseudo_label, label``; people fill ``label``.
``queries_round_<k>.json`` (the manifest) records what was asked: round, indices, number of classes and pool
size, so a filled CSV can be checked without the run that wrote it. A CSV with any problem is refused as a
whole with a message naming every problem, and nothing is changed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import posixpath
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec
from torch import Tensor

from lightning_dynamical.errors import ConfigError
from lightning_dynamical.oracles.masks import read_mask
from lightning_dynamical.records import files as records
from lightning_dynamical.records import queries
from lightning_dynamical.records.weights import resolve
from lightning_dynamical.tasks.base import encode_tensor

QUERY_FIELDS = ("index", "file", "score", "pseudo_label", "label")


class LabelFileError(ConfigError):
    """A label CSV, its manifest or the target state cannot be used; nothing was changed."""


def query_csv_path(folder: str, round: int) -> str:
    return records.join(folder, f"queries_round_{round}.csv")


def manifest_path(csv_path: str) -> str:
    """The manifest that sits next to a query CSV (same name, ``.json``)."""
    return (csv_path[:-4] if csv_path.endswith(".csv") else csv_path) + ".json"


def write_query(csv_path: str, rows: Sequence[dict[str, Any]], manifest: dict[str, Any]) -> None:
    """Write the query CSV (``label`` left empty) and its manifest, each atomically."""
    records.atomic_write_json(manifest_path(csv_path), manifest)
    records.atomic_write_csv(csv_path, QUERY_FIELDS, [{**row, "label": ""} for row in rows])


def read_rows(path: str) -> list[dict[str, str]]:
    """The CSV's rows (a UTF-8 BOM, as spreadsheets write it, is accepted); needs ``index`` and ``label``."""
    fs, fs_path = fsspec.core.url_to_fs(path)
    if not fs.exists(fs_path):
        raise FileNotFoundError(f"{path} does not exist")
    with fs.open(fs_path, "rb") as f:
        try:
            text = f.read().decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise LabelFileError(f"{path} refused, nothing was changed: not UTF-8 text ({err}); save it as UTF-8 "
                                 "CSV") from err
    reader = csv.DictReader(io.StringIO(text, newline=""))  # CR-only, CRLF and quoted line breaks alike
    try:
        fields = reader.fieldnames or []
        missing = [c for c in ("index", "label") if c not in fields]
        repeated = sorted({c for c in ("index", "label") if fields.count(c) > 1})  # the columns read
        if missing or repeated:
            what = f"no {' or '.join(missing)} column" if missing else f"repeated columns {repeated}"
            raise LabelFileError(f"{path} refused, nothing was changed: {what} (columns: {fields})")
        return list(reader)
    except csv.Error as err:
        raise LabelFileError(f"{path} refused, nothing was changed: not a readable CSV ({err})") from err


def read_labels(path: str, indices: Sequence[int], num_classes: int, masks: int | None = None,
                shapes: Mapping[int, Sequence[int]] | None = None) -> list[int] | list[Tensor]:
    """The labels in ``path`` for ``indices``, in that order; any problem refuses the whole file."""
    return parse_labels(read_rows(path), indices, num_classes, path, masks, shapes)


def parse_labels(rows: Sequence[dict[str, str]], indices: Sequence[int], num_classes: int,
                 source: str = "the label CSV", masks: int | None = None,
                 shapes: Mapping[int, Sequence[int]] | None = None) -> list[Any]:
    """Check every row against the query, collecting all problems before refusing; labels in ``indices`` order.

    Refused: rows missing for queried indices, indices outside the query, repeated indices, empty labels,
    non-integer indices or labels, and classes outside ``[0, num_classes)``. With ``masks`` (the segmentation
    task's ``ignore_index``) a label is the path of a mask PNG relative to the CSV's folder
    (:mod:`~lightning_dynamical.oracles.masks`), read as an ``(H, W)`` tensor; unreadable files, pixel values
    outside the classes and masks whose ``(H, W)`` differs from the sample's in ``shapes`` are refused the same way.
    """
    wanted = {int(i) for i in indices}
    labels: dict[int, Any] = {}
    seen: set[int] = set()
    problems: dict[str, list[str]] = {}

    def problem(kind: str, what: object) -> None:
        problems.setdefault(kind, []).append(str(what))

    for line, row in enumerate(rows, start=2):
        raw_index, raw_label = (row.get("index") or "").strip(), (row.get("label") or "").strip()
        index = _as_int(raw_index)
        if index is None:
            problem("non-integer indices", f"line {line}: {raw_index!r}")
            continue
        if index in seen:
            problem("duplicate rows for indices", index)
            continue
        seen.add(index)
        if index not in wanted:
            problem("indices not in the query", index)
            continue
        shown = posixpath.basename((row.get("file") or "").strip())  # the image the row was written for
        if shown.endswith(".png") and _as_int(shown[:-4]) not in (None, index):
            problem("rows whose index and file disagree (a column sorted on its own?)", f"{index}: {shown}")
            continue
        label = _as_int(raw_label)
        if raw_label == "":
            problem("empty labels for indices", index)
        elif masks is not None:
            mask = read_mask(records.join(_folder(source), raw_label), masks, num_classes)
            expected = tuple(shapes[index]) if shapes and index in shapes else None
            if isinstance(mask, str):
                problem("unusable mask files", f"index {index}: {raw_label} ({mask})")
            elif expected is not None and tuple(mask.shape) != expected:
                problem("masks of another size than their image (height x width)",
                        f"index {index}: {raw_label} is {mask.shape[0]}x{mask.shape[1]}, the image "
                        f"{expected[0]}x{expected[1]}")
            else:
                labels[index] = mask
        elif label is None:
            problem("non-integer labels", f"index {index}: {raw_label!r}")
        elif not 0 <= label < num_classes:
            problem(f"unknown classes (valid: 0..{num_classes - 1})", f"index {index}: {label}")
        else:
            labels[index] = label
    missing = [i for i in indices if int(i) not in seen]
    if missing:
        problems["missing rows for indices"] = [str(i) for i in missing]
    if problems:
        details = "; ".join(f"{kind} {_shorten(items)}" for kind, items in problems.items())
        raise LabelFileError(f"{source} refused, nothing was changed: {details}")
    return [labels[int(i)] for i in indices]


def read_manifest(csv_path: str) -> dict[str, Any]:
    """The manifest of a query CSV, checked for the keys ``label import`` needs."""
    path = manifest_path(csv_path)
    try:
        with fsspec.open(path, "r") as f:
            manifest = json.load(f)
    except FileNotFoundError as err:
        raise LabelFileError(f"{path} (written by FileOracle next to the CSV) is missing") from err
    except json.JSONDecodeError as err:
        raise LabelFileError(f"{path} is not valid JSON: {err}") from err
    missing = [k for k in ("round", "indices", "num_classes", "dataset_size") if k not in manifest]
    if missing:
        raise LabelFileError(f"{path} lacks the keys {missing}")
    return manifest


def import_labels(csv_path: str, state_path: str) -> dict[str, Any]:
    """Validate a filled CSV and add its labels to ``al_state.json``: the queried round becomes done.

    The indices join ``labeled`` with their ``given_labels``, the paused round's row (kept in the state at
    pause time) joins ``history``, and ``round`` moves past the queried round, so
    ``ActiveLearningLoop(resume_from_state=...)`` continues with the next round from the weights of the
    checkpoint the state names. The round's rows go into the ``al_queries.csv`` next to the state. Each
    file is replaced atomically, and only once everything checked out. Returns the new state.
    """
    rows = read_rows(csv_path)
    manifest = read_manifest(csv_path)
    indices = [int(i) for i in manifest["indices"]]
    masks = manifest.get("masks")
    shapes = {int(i): shape for i, shape in manifest.get("mask_shapes", {}).items()}
    labels = parse_labels(rows, indices, int(manifest["num_classes"]), csv_path, masks, shapes)
    stored = [encode_tensor(y) for y in labels] if masks is not None else labels
    state = records.read_state(state_path)
    where = f"{csv_path} refused for {state_path}, nothing was changed"
    if int(state["dataset_size"]) != int(manifest["dataset_size"]):
        raise LabelFileError(f"{where}: the state is for a pool of {state['dataset_size']} samples, the query for "
                             f"one of {manifest['dataset_size']}")
    if int(state["round"]) != int(manifest["round"]):
        raise LabelFileError(f"{where}: the state is at round {state['round']}, these labels answer round "
                             f"{manifest['round']} (already imported?)")
    already = sorted(set(indices) & {int(i) for i in state["labeled"]})
    if already:
        raise LabelFileError(f"{where}: indices {_shorten([str(i) for i in already])} are already labeled")
    history = list(state.get("history", []))
    pending_row = state.get("pending_row")
    if pending_row is not None and int(pending_row["round"]) == int(manifest["round"]):
        history.append(pending_row)
    new = {key: value for key, value in state.items() if key != "pending_row"}
    new.update(labeled=[*state["labeled"], *indices], round=int(manifest["round"]) + 1, history=history,
               given_labels=[*state.get("given_labels", []), *([i, y] for i, y in zip(indices, stored))])
    by_index = {_as_int((r.get("index") or "").strip()): r for r in rows}
    queries.write_round(_folder(state_path), int(manifest["round"]), [
        {"round": manifest["round"], "index": i, "score": by_index[i].get("score", ""),
         "pseudo_label": by_index[i].get("pseudo_label", ""), "label": y, "labeled_by": "file"}
        for i, y in zip(indices, stored)])
    records.atomic_write_json(state_path, new)
    return new


def _folder(path: str) -> str:
    """The folder holding ``path`` (local path or fsspec URL)."""
    return path.rsplit("/", 1)[0] if "/" in path else "."


def main(argv: Sequence[str] | None = None) -> int:
    """``lightning-dynamical label import <csv> --state <al_state.json>``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="lightning-dynamical label", description="Feed human labels back.")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("import", help="validate a filled query CSV and add its labels to al_state.json")
    cmd.add_argument("csv", help="the filled queries_round_<k>.csv (its .json manifest next to it)")
    cmd.add_argument("--state", required=True, help="the run's al_state.json, updated in place")
    args = parser.parse_args(argv)
    try:
        state = import_labels(args.csv, args.state)
    except (LabelFileError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    weights = resolve(state.get("weights"), args.state)
    source = (f"from the weights in {weights}" if weights else
              "from freshly initialised weights: the state names no checkpoint (pass that round's checkpoint as "
              "ckpt_path instead where you have one)")
    print(f"imported labels into {args.state}; round {state['round']} comes next. Resume with "
          f"ActiveLearningLoop(resume_from_state={args.state!r}); it continues {source}.")
    return 0


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _shorten(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"
