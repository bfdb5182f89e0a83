"""FileOracle end to end: pause with CSV + PNGs + checkpoint, human labels back in, bad CSVs refused intact."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from lightning_dynamical import ActiveLearningLoop, Classifier, ConfigError
from lightning_dynamical.cli.app import main as cli_main
from lightning_dynamical.data import DigitsDataModule
from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.oracles.base import FileOracle, LabelsPending, Query
from lightning_dynamical.oracles.files import LabelFileError, import_labels, parse_labels, read_rows
from lightning_dynamical.strategies import DynamicAL
from tests.helpers.models import TinyCNN
from tests.helpers.tiny import digest, quiet_trainer, read_csv

ROOT = Path(__file__).resolve().parents[2]
B = 12


def make_run(tmp_path: Path, **loop_kwargs) -> tuple[Trainer, ActiveLearningLoop, Classifier, DigitsDataModule]:
    seed_everything(0, verbose=False)
    dm = DigitsDataModule(initial_size=40, batch_size=32, seed=0)
    model = Classifier(TinyCNN(1, 10), num_classes=10, lr=0.01)
    loop = ActiveLearningLoop(DynamicAL(params="last_layer"), query_size=B, rounds=1, max_epochs_per_round=2,
                              oracle=FileOracle(str(tmp_path / "labels")), dirpath=str(tmp_path / "run"),
                              save_round_checkpoints=False, verbose=False, **loop_kwargs)
    return quiet_trainer(tmp_path, [loop]), loop, model, dm


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def paused(tmp_path_factory) -> Path:
    """A run paused after round 0's query; the folder is copied per test that changes it."""
    tmp_path = tmp_path_factory.mktemp("paused")
    trainer, loop, model, dm = make_run(tmp_path)
    trainer.fit(model, datamodule=dm)
    assert loop.pending is not None and not loop.finished and loop.round == 0
    return tmp_path


def copy_of(paused: Path, tmp_path: Path) -> Path:
    shutil.copytree(paused, tmp_path, dirs_exist_ok=True)
    return tmp_path


def true_labels(rows: list[dict[str, str]]) -> dict[int, int]:
    dm = DigitsDataModule(initial_size=40, seed=0)
    dm.setup()
    return {int(r["index"]): int(dm.splits.pool[int(r["index"])][1]) for r in rows}


def test_pause_writes_csv_pngs_manifest_and_checkpoint(paused: Path) -> None:
    assert (paused / "run" / "al_pending_round_0.ckpt").is_file()
    rows = read_csv(paused / "labels" / "queries_round_0.csv")
    assert list(rows[0]) == ["index", "file", "score", "pseudo_label", "label"]
    assert len(rows) == B and all(r["label"] == "" for r in rows)
    assert all(r["score"] != "" and 0 <= int(r["pseudo_label"]) < 10 for r in rows)
    for r in rows:
        png = paused / "labels" / r["file"]
        assert png.suffix == ".png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((paused / "labels" / "queries_round_0.json").read_text())
    assert manifest["indices"] == [int(r["index"]) for r in rows] and manifest["num_classes"] == 10
    state = json.loads((paused / "run" / "al_state.json").read_text())
    assert state["round"] == 0 and len(state["labeled"]) == 40


def test_bad_csv_refused_then_filled_csv_resumes_with_human_labels(paused: Path, tmp_path: Path) -> None:
    work = copy_of(paused, tmp_path)
    csv_path, ckpt = work / "labels" / "queries_round_0.csv", work / "run" / "al_pending_round_0.ckpt"
    rows = read_csv(csv_path)
    truth = true_labels(rows)
    human = {i: (y + 1) % 10 if n < 3 else y for n, (i, y) in enumerate(truth.items())}
    write_csv(csv_path, [{**r, "label": str(human[int(r["index"])])} for r in rows[:-1]])  # one row missing
    before = {p: digest(p) for p in (ckpt, csv_path, work / "run" / "al_state.json")}
    trainer, loop, model, dm = make_run(work)
    with pytest.raises(LabelFileError, match="missing rows"):
        trainer.fit(model, datamodule=dm, ckpt_path=str(ckpt))
    assert {p: digest(p) for p in before} == before

    write_csv(csv_path, [{**r, "label": str(human[int(r["index"])])} for r in rows])
    trainer, loop, model, dm = make_run(work)
    trainer.fit(model, datamodule=dm, ckpt_path=str(ckpt))
    assert loop.finished and loop.pending is None
    assert [r["round"] for r in loop.history] == [0, 1]
    assert [r["labeled"] for r in loop.history] == [40, 40 + B]
    served = dm.labeled_dataset()
    by_index = {index: int(served[n][1]) for n, index in enumerate(dm.labeled_indices)}
    assert all(by_index[i] == y for i, y in human.items())
    assert sum(by_index[i] != truth[i] for i in human) == 3
    rounds = read_csv(work / "run" / "al_rounds.csv")
    assert [int(r["labeled"]) for r in rounds] == [40, 40 + B]


def test_label_import_updates_state_and_resume_from_state_continues(paused: Path, tmp_path: Path,
                                                                     capsys) -> None:
    work = copy_of(paused, tmp_path)
    csv_path, state_path = work / "labels" / "queries_round_0.csv", work / "run" / "al_state.json"
    rows = read_csv(csv_path)
    human = {i: (y + 1) % 10 for i, y in true_labels(rows).items()}
    write_csv(csv_path, [{**r, "label": str(human[int(r["index"])])} for r in rows + rows[:1]])  # a duplicate
    before = digest(state_path)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["label", "import", str(csv_path), "--state", str(state_path)])
    assert exit_info.value.code == 1 and "duplicate rows" in capsys.readouterr().err
    assert digest(state_path) == before

    write_csv(csv_path, [{**r, "label": str(human[int(r["index"])])} for r in rows])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["label", "import", str(csv_path), "--state", str(state_path)])
    assert exit_info.value.code == 0
    assert f"continues from the weights in {work / 'run' / 'al_pending_round_0.ckpt'}" in capsys.readouterr().out
    state = json.loads(state_path.read_text())
    assert state["round"] == 1 and len(state["labeled"]) == 40 + B
    assert {i: y for i, y in state["given_labels"]} == human
    imported = digest(state_path)
    with pytest.raises(LabelFileError, match="already imported"):
        import_labels(str(csv_path), str(state_path))
    assert digest(state_path) == imported

    assert state["weights"] == "al_pending_round_0.ckpt" and "pending_row" not in state
    assert [r["round"] for r in state["history"]] == [0]
    queried = read_csv(work / "run" / "al_queries.csv")
    assert [(int(r["index"]), int(r["label"]), r["labeled_by"]) for r in queried] == \
        [(int(r["index"]), human[int(r["index"])], "file") for r in rows]

    trainer, loop, model, dm = make_run(work, resume_from_state=str(state_path))
    seen = WeightsAtStart()
    trainer.callbacks.append(seen)
    trainer.fit(model, datamodule=dm)
    paused_weights = torch.load(work / "run" / "al_pending_round_0.ckpt", weights_only=False)["state_dict"]
    assert seen.weights.keys() == paused_weights.keys()
    assert all(torch.equal(seen.weights[k], paused_weights[k]) for k in paused_weights)
    assert loop.finished and [(r["round"], r["labeled"]) for r in loop.history] == [(0, 40), (1, 40 + B)]
    assert [int(r["round"]) for r in read_csv(work / "run" / "al_rounds.csv")] == [0, 1]
    served = dm.labeled_dataset()
    assert all(int(served[n][1]) == human[i] for n, i in enumerate(dm.labeled_indices) if i in human)
    assert len(read_csv(work / "run" / "al_queries.csv")) == B  # the last round queries nothing


class WeightsAtStart(Callback):
    """Keeps a copy of the model's weights as the fit starts (after the loop's own on_fit_start)."""

    def on_fit_start(self, trainer: Trainer, pl_module) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def test_answered_csv_is_reused_and_never_overwritten(paused: Path, tmp_path: Path) -> None:
    work = copy_of(paused, tmp_path)
    csv_path = work / "labels" / "queries_round_0.csv"
    unfilled = digest(csv_path)
    trainer, loop, model, dm = make_run(work)  # the same run started again from scratch: same query
    trainer.fit(model, datamodule=dm)
    assert loop.pending is not None and digest(csv_path) == unfilled

    rows = read_csv(csv_path)
    write_csv(csv_path, [{**r, "label": str(y)} for r, y in zip(rows, true_labels(rows).values())])
    filled = digest(csv_path)
    trainer, loop, model, dm = make_run(work)
    trainer.fit(model, datamodule=dm)
    assert loop.finished and loop.pending is None and digest(csv_path) == filled


def rows_for(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"index": i, "file": "", "score": "", "pseudo_label": "", "label": y} for i, y in pairs]


GOOD = [("5", "1"), ("7", "0"), ("9", "2")]


@pytest.mark.parametrize(("pairs", "match"), [
    (GOOD[:2], r"missing rows for indices \[9\]"),
    ([*GOOD[:2], ("9", "3")], r"unknown classes \(valid: 0..2\) \[index 9: 3\]"),
    ([*GOOD[:2], ("9", "-1")], "unknown classes"),
    ([*GOOD, ("7", "1")], r"duplicate rows for indices \[7\]"),
    ([*GOOD, ("8", "1")], r"indices not in the query \[8\]"),
    ([*GOOD[:2], ("9", "two")], "non-integer labels"),
    ([*GOOD[:2], ("9", "2.0")], "non-integer labels"),
    ([*GOOD[:2], ("9", "")], r"empty labels for indices \[9\]"),
    ([*GOOD, ("x", "1")], "non-integer indices"),
])
def test_bad_rows_refused_with_the_problem_named(pairs, match) -> None:
    with pytest.raises(LabelFileError, match=match):
        parse_labels(rows_for(pairs), [5, 7, 9], num_classes=3)


def test_good_rows_in_query_order_and_all_problems_reported_at_once() -> None:
    assert parse_labels(rows_for(GOOD[::-1]), [5, 7, 9], num_classes=3) == [1, 0, 2]
    with pytest.raises(LabelFileError) as err:
        parse_labels(rows_for([("5", "7"), ("5", "1"), ("8", "0")]), [5, 7, 9], num_classes=3)
    for part in ("unknown classes", "duplicate rows", "not in the query", "missing rows for indices [7, 9]"):
        assert part in str(err.value)


def test_csv_without_label_column_and_missing_manifest_refused(tmp_path: Path) -> None:
    path = tmp_path / "queries_round_0.csv"
    path.write_text("index,file\n1,\n")
    with pytest.raises(LabelFileError, match="no label column"):
        read_rows(str(path))
    path.write_text("index,label\n1,0\n")
    state = tmp_path / "al_state.json"
    state.write_text(json.dumps({"round": 0, "dataset_size": 10, "labeled": [0]}))
    with pytest.raises(LabelFileError, match="queries_round_0.json .* is missing"):
        import_labels(str(path), str(state))


def test_non_image_data_get_no_files(tmp_path: Path) -> None:
    data = torch.utils.data.TensorDataset(torch.randn(20, 5), torch.arange(20) % 4)
    dm = ActiveLearningDataModule(data, initial_size=4, num_classes=4)
    with pytest.raises(LabelsPending):
        FileOracle(str(tmp_path)).label(dm, Query(0, [10, 3], None, None))
    rows = read_csv(tmp_path / "queries_round_0.csv")
    assert [(r["index"], r["file"], r["score"], r["pseudo_label"]) for r in rows] == [("10", "", "", ""),
                                                                                      ("3", "", "", "")]
    assert json.loads((tmp_path / "queries_round_0.json").read_text())["num_classes"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queries_round_0.csv", "queries_round_0.json"]


def test_resume_from_a_state_with_labels_pending_is_refused(paused: Path, tmp_path: Path) -> None:
    """Without ``label import`` first, resuming would train the paused round again and drop its row."""
    work = copy_of(paused, tmp_path)
    state_path = work / "run" / "al_state.json"
    before = digest(state_path)
    trainer, _, model, dm = make_run(work, resume_from_state=str(state_path))
    with pytest.raises(ConfigError, match=r"has labels pending for round 0: import them first"):
        trainer.fit(model, datamodule=dm)
    assert digest(state_path) == before
