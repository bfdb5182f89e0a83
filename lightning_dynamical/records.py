"""Round records on disk: ``al_rounds.csv`` and ``al_state.json``, written atomically, read back checked."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Sequence
from typing import Any

import fsspec
from fsspec.core import url_to_fs

ROUNDS_FILE = "al_rounds.csv"
STATE_FILE = "al_state.json"
ROUND_FIELDS = ("round", "labeled", "pool", "test_acc", "score_seconds", "epochs", "train_loss", "train_acc",
                "stopped_by")


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to a temporary sibling, then rename it over ``path`` (readers never see half a file)."""
    fs, fs_path = url_to_fs(path)
    parent = fs._parent(fs_path)
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{fs_path}.tmp-{uuid.uuid4().hex}"
    with fs.open(tmp, "w") as f:
        f.write(text)
    fs.mv(tmp, fs_path)


def join(dirpath: str, name: str) -> str:
    return dirpath.rstrip("/") + "/" + name


def write_rounds(dirpath: str, rows: Sequence[dict[str, Any]]) -> None:
    """All finished rounds, one CSV row each."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=ROUND_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(join(dirpath, ROUNDS_FILE), out.getvalue())


def write_state(dirpath: str, state: dict[str, Any]) -> None:
    """The current round and labeled split as JSON."""
    atomic_write_text(join(dirpath, STATE_FILE), json.dumps(state, indent=1) + "\n")


def read_rounds(path: str) -> list[dict[str, str]]:
    with fsspec.open(path, "r") as f:
        return list(csv.DictReader(f))


def read_state(path: str) -> dict[str, Any]:
    """Read ``al_state.json``, refusing files that are not a valid state."""
    with fsspec.open(path, "r") as f:
        try:
            state = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
    missing = [k for k in ("round", "dataset_size", "labeled") if k not in state]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing}")
    return state
