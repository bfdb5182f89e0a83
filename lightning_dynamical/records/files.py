"""Round records on disk: ``al_rounds.csv``, ``al_state.json`` and round checkpoints, written atomically, read back
checked.

Every file is written to a temporary sibling (``<name>.tmp-<hex>``; checkpoints in ``.al_staging/``) and renamed over
its final name, so a crash at any moment leaves either the old or the new file, never half of one;
:func:`remove_stale_temps` clears the temporary files such a crash leaves behind.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from lightning_dynamical.errors import ConfigError
from lightning_dynamical.records.faults import kill_point
from lightning_dynamical.records.migrate import migrate_records_state

if TYPE_CHECKING:
    from lightning.pytorch import Trainer

ROUNDS_FILE = "al_rounds.csv"
STATE_FILE = "al_state.json"
ROUND_FIELDS = ("round", "labeled", "pool", "test_acc", "score_seconds", "epochs", "train_loss", "train_acc",
                "stopped_by", "converged_by", "smoothed_loss", "query_sqnorm_median", "query_dot_median",
                "query_dot_ratio_median", "query_approximation_ratio", "metric", "test_metric", "train_metric")
STAGING_DIR = ".al_staging"
_STALE_TEMP = re.compile(r"^al_.*\.tmp-[0-9a-f]{32}$")


def temp_path(path: str) -> str:
    """A fresh temporary sibling of ``path``."""
    return f"{path}.tmp-{uuid.uuid4().hex}"


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to a temporary sibling, then rename it over ``path`` (readers never see half a file)."""
    fs, fs_path = url_to_fs(path)
    fs.makedirs(fs._parent(fs_path), exist_ok=True)
    tmp = temp_path(fs_path)
    half = len(text) // 2
    try:
        with fs.open(tmp, "w") as f:
            f.write(text[:half])
            kill_point("record-partial", f.flush)
            f.write(text[half:])
        kill_point("record-written")
        fs.mv(tmp, fs_path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise
    kill_point("record-renamed")


def save_checkpoint(trainer: Trainer, path: str) -> None:
    """``trainer.save_checkpoint`` into ``<dir>/.al_staging/``, then renamed to ``path`` by rank zero once complete.

    Every rank must call it (as ``trainer.save_checkpoint``). While it runs, Python's temporary files go to the
    staging folder too, so the temporary copy Lightning writes first (an fsspec transaction, in the system's
    temporary folder by default) is also left where :func:`remove_stale_temps` finds it after a crash, and its
    final move is a rename within one file system. A crash therefore never leaves a partial file under ``path``.
    """
    staging = join(posixpath.dirname(path), STAGING_DIR)
    tmp = join(staging, posixpath.basename(path))
    kill_point("checkpoint-start")
    with _temporary_files_in(staging):
        trainer.save_checkpoint(tmp, weights_only=False)
    if trainer.is_global_zero:
        fs, fs_tmp = url_to_fs(tmp)
        kill_point("checkpoint-partial", lambda: fs.pipe_file(fs_tmp, fs.cat_file(fs_tmp)[: fs.size(fs_tmp) // 2]))
        kill_point("checkpoint-written")
        fs.mv(fs_tmp, url_to_fs(path)[1], recursive=fs.isdir(fs_tmp))
        kill_point("checkpoint-renamed")
        fs_staging = url_to_fs(staging)[1]
        if not fs.ls(fs_staging, detail=False):
            fs.rmdir(fs_staging)
    trainer.strategy.barrier("lightning_dynamical.records.files.save_checkpoint")


@contextmanager
def _temporary_files_in(folder: str) -> Iterator[None]:
    """Create ``folder``; for a local one, make it Python's temporary folder (``tempfile.tempdir``) meanwhile."""
    fs, fs_folder = url_to_fs(folder)
    fs.makedirs(fs_folder, exist_ok=True)
    if not isinstance(fs, LocalFileSystem):
        yield
        return
    previous = tempfile.tempdir
    tempfile.tempdir = fs_folder
    try:
        yield
    finally:
        tempfile.tempdir = previous


def remove_stale_temps(dirpath: str) -> list[str]:
    """Delete what a crashed write left in ``dirpath`` (``al_*.tmp-<hex>`` files, the staging folder); returns it."""
    fs, fs_dir = url_to_fs(dirpath)
    if not fs.isdir(fs_dir):
        return []
    names = {p: posixpath.basename(p.rstrip("/")) for p in fs.ls(fs_dir, detail=False)}
    stale = [p for p, name in names.items() if name == STAGING_DIR or _STALE_TEMP.match(name)]
    for p in stale:
        fs.rm(p, recursive=True)
    return stale


def exists(path: str) -> bool:
    fs, fs_path = url_to_fs(path)
    return bool(fs.exists(fs_path))


def join(dirpath: str, name: str) -> str:
    return dirpath.rstrip("/") + "/" + name


def round_checkpoint(dirpath: str, round: int) -> str:
    """Where the checkpoint saved after round ``round``'s query goes."""
    return join(dirpath, f"al_round_{round}.ckpt")


def atomic_write_csv(path: str, fields: Sequence[str], rows: Iterable[Mapping[str, Any]],
                     extras: Literal["ignore", "raise"] = "ignore") -> None:
    """``rows`` as CSV under a ``fields`` header, written atomically; keys not in ``fields`` are dropped
    (``extras="ignore"``) or refused (``"raise"``)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction=extras, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, out.getvalue())


def atomic_write_json(path: str, value: Any) -> None:
    """``value`` as indented JSON, written atomically."""
    atomic_write_text(path, json.dumps(value, indent=1) + "\n")


def write_rounds(dirpath: str, rows: Sequence[dict[str, Any]]) -> None:
    """All finished rounds, one CSV row each."""
    atomic_write_csv(join(dirpath, ROUNDS_FILE), ROUND_FIELDS, rows)


def write_state(dirpath: str, state: dict[str, Any]) -> None:
    """The current round and labeled split as JSON."""
    atomic_write_json(join(dirpath, STATE_FILE), state)


def read_rounds(path: str) -> list[dict[str, str]]:
    with fsspec.open(path, "r") as f:
        return list(csv.DictReader(f))


def read_state(path: str) -> dict[str, Any]:
    """Read ``al_state.json``, refusing (:class:`ConfigError`, naming the file and field) files that are not a state;
    a file an earlier version wrote comes back in today's format (:func:`.migrate.migrate_records_state`)."""
    fs, fs_path = url_to_fs(path)
    if not fs.exists(fs_path):
        raise ConfigError(f"state file {path} does not exist")
    with fs.open(fs_path, "r") as f:
        try:
            state = json.load(f)
        except json.JSONDecodeError as err:
            raise ConfigError(f"state file {path} is not valid JSON: {err}") from err
    if not isinstance(state, dict):
        raise ConfigError(f"state file {path} must hold a JSON object, got {type(state).__name__}")
    missing = [k for k in ("round", "dataset_size", "labeled") if k not in state]
    if missing:
        raise ConfigError(f"state file {path} lacks the keys {missing}")
    _check_state_fields(path, state)
    return migrate_records_state(state)


def _check_state_fields(path: str, state: dict[str, Any]) -> None:
    def bad(field: str, allowed: str, value: Any) -> ConfigError:
        return ConfigError(f"state file {path}: {field!r} must be {allowed}, got {_short(value)}")

    if not _is_int(state["round"]) or state["round"] < 0:
        raise bad("round", "an int >= 0", state["round"])
    size = state["dataset_size"]
    if not _is_int(size) or size < 1:
        raise bad("dataset_size", "an int >= 1", size)
    labeled = state["labeled"]
    if not isinstance(labeled, list) or not all(_is_int(i) for i in labeled):
        raise bad("labeled", "a list of int indices", labeled)
    outside = [i for i in labeled if not 0 <= i < size]
    if outside:
        raise ConfigError(f"state file {path}: 'labeled' has indices outside 0..{size - 1} (dataset_size={size}): "
                          f"{_short(outside)}")
    repeated = sorted(i for i, n in Counter(labeled).items() if n > 1)
    if repeated:
        raise ConfigError(f"state file {path}: 'labeled' repeats the indices {_short(repeated)}")
    given = state.get("given_labels", [])
    if not isinstance(given, list) or not all(isinstance(p, list) and len(p) == 2 and _is_int(p[0])
                                              and (_is_int(p[1]) or isinstance(p[1], str)) for p in given):
        raise bad("given_labels", "a list of [index, label] pairs (an int class, or an encoded label tensor)", given)
    history = state.get("history", [])
    if not isinstance(history, list) or not all(isinstance(r, dict) and _is_int(r.get("round")) for r in history):
        raise bad("history", "a list of rows with an int 'round'", history)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any, limit: int = 10) -> str:
    if isinstance(value, list) and len(value) > limit:
        return f"[{', '.join(map(repr, value[:limit]))}, ...] ({len(value)})"
    return repr(value)
