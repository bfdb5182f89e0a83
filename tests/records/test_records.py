"""Records on disk: a write replaces a file whole or not at all and leaves no temporary file; CSV and JSON records
read back as written; a state file that is not a state is refused, naming the file and the field."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import fsspec
import pytest
import torch
from fsspec.implementations.local import LocalFileSystem

from lightning_dynamical.errors import ConfigError
from lightning_dynamical.records import files as records
from lightning_dynamical.records import migrate
from tests.helpers.tiny import read_csv

OLD = "round,labeled\n0,10\n"


def _folder(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# ---- atomic_write_text -------------------------------------------------------------------------------------
def test_write_creates_folders_and_replaces_the_file_leaving_nothing_else(tmp_path) -> None:
    target = tmp_path / "deep" / "er" / "al_rounds.csv"
    records.atomic_write_text(str(target), OLD)
    assert target.read_text() == OLD
    records.atomic_write_text(str(target), "new")
    assert target.read_text() == "new" and _folder(target.parent) == ["al_rounds.csv"]


def test_a_relative_path_is_written_in_the_working_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    records.atomic_write_text("al_state.json", "{}")
    assert (tmp_path / "al_state.json").read_text() == "{}" and _folder(tmp_path) == ["al_state.json"]


def test_while_a_write_is_under_way_the_file_holds_its_old_text(tmp_path, monkeypatch) -> None:
    """At each point where a crash could strike (the kill -9 test's points), the target is the old file whole."""
    target = tmp_path / "al_rounds.csv"
    target.write_text(OLD)
    text = "round,labeled\n" + "".join(f"{r},{10 * r}\n" for r in range(50))
    seen: dict[str, tuple[str, list[str]]] = {}

    def observe(name: str, before=None) -> None:
        if before is not None:
            before()
        temps = [p.read_text() for p in tmp_path.iterdir() if p.name.startswith("al_rounds.csv.tmp-")]
        seen[name] = (target.read_text(), temps)

    monkeypatch.setattr(records, "kill_point", observe)
    records.atomic_write_text(str(target), text)
    assert seen["record-partial"] == (OLD, [text[: len(text) // 2]])  # half of it, in the temporary file only
    assert seen["record-written"] == (OLD, [text])
    assert seen["record-renamed"] == (text, [])
    assert _folder(tmp_path) == ["al_rounds.csv"]


def test_a_write_failing_halfway_keeps_the_old_file_and_removes_its_temporary(tmp_path) -> None:
    target = tmp_path / "al_rounds.csv"
    target.write_text(OLD)
    unwritable = "a" * 1000 + "\ud800"  # a lone surrogate: the encoder fails in the second half of the write
    with pytest.raises(UnicodeEncodeError):
        records.atomic_write_text(str(target), unwritable)
    assert target.read_text() == OLD and _folder(tmp_path) == ["al_rounds.csv"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_rename_that_fails_or_is_interrupted_keeps_the_old_file(tmp_path, monkeypatch, error) -> None:
    target = tmp_path / "al_state.json"
    target.write_text("{}")

    def fail(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(LocalFileSystem, "mv", fail)
    with pytest.raises(type(error)):
        records.atomic_write_text(str(target), '{"round": 1}')
    assert target.read_text() == "{}" and _folder(tmp_path) == ["al_state.json"]


def test_any_fsspec_file_system_is_written_the_same_way() -> None:
    fs = fsspec.filesystem("memory")
    path = "memory://records-test/run/al_state.json"
    try:
        records.atomic_write_json(path, {"round": 2})
        assert records.exists(path) and not records.exists("memory://records-test/run/al_rounds.csv")
        assert fs.ls("/records-test/run", detail=False) == ["/records-test/run/al_state.json"]
        assert json.loads(fs.cat_file("/records-test/run/al_state.json")) == {"round": 2}
    finally:
        fs.rm("/records-test", recursive=True)


# ---- CSV and JSON ------------------------------------------------------------------------------------------
def test_csv_round_trip_in_field_order_with_awkward_values(tmp_path) -> None:
    path = str(tmp_path / "al_queries.csv")
    rows = [{"score": 0.25, "index": 7, "note": 'comma, "quotes"\nand a newline'}, {"index": 9}]
    records.atomic_write_csv(path, ["index", "score", "note"], iter(rows))
    assert (tmp_path / "al_queries.csv").read_text().splitlines()[0] == "index,score,note"
    assert records.read_rounds(path) == [{"index": "7", "score": "0.25", "note": 'comma, "quotes"\nand a newline'},
                                         {"index": "9", "score": "", "note": ""}]  # a missing key is an empty cell


def test_csv_with_no_rows_is_its_header(tmp_path) -> None:
    records.write_rounds(str(tmp_path), [])
    assert (tmp_path / records.ROUNDS_FILE).read_text() == ",".join(records.ROUND_FIELDS) + "\n"


def test_csv_extras_are_dropped_or_refused_before_anything_is_written(tmp_path) -> None:
    path = tmp_path / "results.csv"
    records.atomic_write_csv(str(path), ["a", "b"], [{"a": 1, "b": 2, "timing": 0.5}])
    assert read_csv(path) == [{"a": "1", "b": "2"}]
    before = path.read_text()
    with pytest.raises(ValueError, match="timing"):
        records.atomic_write_csv(str(path), ["a", "b"], [{"a": 3, "b": 4}, {"a": 5, "b": 6, "timing": 0.7}],
                                 extras="raise")
    assert path.read_text() == before and _folder(tmp_path) == ["results.csv"]
    with pytest.raises(ValueError, match="extrasaction"):
        records.atomic_write_csv(str(path), ["a"], [], extras="warn")  # type: ignore[arg-type]
    assert path.read_text() == before


def test_rounds_record_keeps_the_round_fields_only(tmp_path) -> None:
    row = {"round": 0, "labeled": 40, "pool": 1457, "test_acc": 0.75, "score_seconds": 1.5, "epochs": 3,
           "train_loss": 0.4, "train_acc": 0.9, "stopped_by": "", "internal": "not a record"}
    records.write_rounds(str(tmp_path), [row, {**row, "round": 1, "labeled": 70}])
    rows = records.read_rounds(str(tmp_path / records.ROUNDS_FILE))
    assert [list(r) for r in rows] == [list(records.ROUND_FIELDS)] * 2
    assert [(r["round"], r["labeled"], r["test_acc"]) for r in rows] == [("0", "40", "0.75"), ("1", "70", "0.75")]


def test_json_that_cannot_be_written_leaves_the_old_file(tmp_path) -> None:
    path = tmp_path / "al_state.json"
    records.atomic_write_json(str(path), {"round": 0, "labeled": [1, 2]})
    before = path.read_text()
    assert before.endswith("\n") and json.loads(before) == {"round": 0, "labeled": [1, 2]}
    with pytest.raises(TypeError, match="not JSON serializable"):
        records.atomic_write_json(str(path), {"round": 1, "labeled": torch.tensor([1, 2])})
    assert path.read_text() == before and _folder(tmp_path) == ["al_state.json"]


# ---- the state file ----------------------------------------------------------------------------------------
V2 = {"converged_by": "loss_target", "smoothed_loss": 0.008, "query_sqnorm_median": 2.0, "query_dot_median": 0.1,
      "query_dot_ratio_median": 0.05, "query_approximation_ratio": 0.9, "metric": "acc"}
STATE = {"round": 2, "dataset_size": 20, "labeled": [3, 1, 4], "given_labels": [[4, 1]],
         "history": [{"round": 0, "labeled": 1, "train_loss": 0.5, "train_acc": 0.9, "stopped_by": "", **V2,
                      "test_metric": 0.7, "train_metric": 0.9},
                     {"round": 1, "labeled": 2, "train_loss": 0.4, "train_acc": 1.0, "stopped_by": "kappa", **V2,
                      "test_metric": 0.8, "train_metric": 1.0}],
         "weights": None, "stopping": {"kappa": {"kappas": [0.5]}}}


def test_state_round_trip(tmp_path) -> None:
    records.write_state(str(tmp_path), STATE)
    assert records.read_state(str(tmp_path / records.STATE_FILE)) == STATE


def test_an_older_state_is_read_in_todays_format(tmp_path) -> None:
    older = {**STATE, "history": [{"round": 0, "labeled": 1}, {"round": 1, "labeled": 2}]}
    del older["stopping"], older["weights"]
    records.write_state(str(tmp_path), older)
    read = records.read_state(str(tmp_path / records.STATE_FILE))
    assert read == migrate.migrate_records_state(older)
    assert read["stopping"] == {} and read["weights"] is None and read["history"][1]["stopped_by"] == ""


@pytest.mark.parametrize("text, match", [
    ("[1, 2]", "must hold a JSON object, got list"),
    ('{"round": 0, "labeled": []}', r"lacks the keys \['dataset_size'\]"),
    (json.dumps({**STATE, "round": -1}), "'round' must be an int >= 0, got -1"),
    (json.dumps({**STATE, "round": True}), "'round' must be an int >= 0, got True"),
    (json.dumps({**STATE, "round": 1.0}), "'round' must be an int >= 0, got 1.0"),
    (json.dumps({**STATE, "dataset_size": 0}), "'dataset_size' must be an int >= 1, got 0"),
    (json.dumps({**STATE, "labeled": [1, "2"]}), r"'labeled' must be a list of int indices, got \[1, '2'\]"),
    (json.dumps({**STATE, "labeled": [*range(8, 20), 25, 20]}), r"outside 0\.\.19 \(dataset_size=20\): \[25, 20\]"),
    (json.dumps({**STATE, "labeled": list(range(12)) * 2}),
     r"repeats the indices \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\.\] \(12\)"),
    (json.dumps({**STATE, "given_labels": [[4]]}), "'given_labels' must be a list of \\[index, label\\] pairs"),
    (json.dumps({**STATE, "given_labels": None}), "'given_labels' must be .*, got None"),
    (json.dumps({**STATE, "history": [{"labeled": 1}]}), "'history' must be a list of rows with an int 'round'"),
])
def test_a_file_that_is_not_a_state_is_refused_naming_the_field(tmp_path, text, match) -> None:
    path = tmp_path / records.STATE_FILE
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^state file {path}.*{match}"):
        records.read_state(str(path))


def test_a_missing_or_broken_state_file_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match=f"^state file {tmp_path / 'gone.json'} does not exist$"):
        records.read_state(str(tmp_path / "gone.json"))
    (tmp_path / "half.json").write_text('{"round": 2, "datas')
    with pytest.raises(ConfigError, match="half.json is not valid JSON: Unterminated string"):
        records.read_state(str(tmp_path / "half.json"))


# ---- temporary files and checkpoints -----------------------------------------------------------------------
def test_what_a_crashed_write_leaves_is_what_cleanup_removes(tmp_path) -> None:
    left = [Path(records.temp_path(str(tmp_path / name))) for name in (records.ROUNDS_FILE, records.STATE_FILE)]
    for path in left:
        path.write_text("half")
    (tmp_path / records.STAGING_DIR).mkdir()
    mine = [tmp_path / "queries_round_0.csv.tmp-1234", tmp_path / records.STATE_FILE]
    for path in mine:
        path.write_text("keep")
    removed = records.remove_stale_temps(str(tmp_path))
    assert sorted(Path(p).name for p in removed) == sorted([p.name for p in left] + [records.STAGING_DIR])
    assert _folder(tmp_path) == sorted(p.name for p in mine)
    assert records.remove_stale_temps(str(tmp_path / "not-yet")) == []


def test_paths_join_and_name_round_checkpoints() -> None:
    assert records.join("s3://bucket/run/", "al_state.json") == "s3://bucket/run/al_state.json"
    assert records.round_checkpoint("/runs/a", 3) == "/runs/a/al_round_3.ckpt"


class FakeTrainer:
    """What save_checkpoint uses of a Trainer: ``save_checkpoint``, ``is_global_zero``, ``strategy.barrier``."""

    def __init__(self, rank: int = 0, fail: bool = False) -> None:
        self.is_global_zero, self.fail = rank == 0, fail
        self.barriers: list[str] = []
        self.strategy = SimpleNamespace(barrier=self.barriers.append)
        self.temp_folder = ""

    def save_checkpoint(self, path: str, weights_only: bool = False) -> None:
        self.temp_folder = tempfile.gettempdir()
        if self.is_global_zero:
            torch.save({"weights": torch.arange(4)}, path)
        if self.fail:
            raise RuntimeError("disk full")


def test_checkpoint_is_staged_then_renamed_and_temporary_files_go_to_the_staging_folder(tmp_path) -> None:
    path = records.round_checkpoint(str(tmp_path), 0)
    outside = tempfile.gettempdir()
    trainer = FakeTrainer()
    records.save_checkpoint(trainer, path)
    assert trainer.temp_folder == str(tmp_path / records.STAGING_DIR) and tempfile.gettempdir() == outside
    assert torch.equal(torch.load(path)["weights"], torch.arange(4))
    assert _folder(tmp_path) == ["al_round_0.ckpt"] and trainer.barriers


def test_a_failed_checkpoint_leaves_no_file_under_its_name(tmp_path) -> None:
    path = records.round_checkpoint(str(tmp_path), 1)
    outside = tempfile.gettempdir()
    with pytest.raises(RuntimeError, match="disk full"):
        records.save_checkpoint(FakeTrainer(fail=True), path)
    assert tempfile.gettempdir() == outside and not records.exists(path)
    assert records.remove_stale_temps(str(tmp_path)) and _folder(tmp_path) == []


def test_other_ranks_leave_the_rename_to_rank_zero_and_wait_for_it(tmp_path) -> None:
    trainer, path = FakeTrainer(rank=1), records.round_checkpoint(str(tmp_path), 0)
    records.save_checkpoint(trainer, path)
    assert trainer.barriers == ["lightning_dynamical.records.files.save_checkpoint"] and not records.exists(path)
