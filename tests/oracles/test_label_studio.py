"""LabelStudioOracle against a real Label Studio server: annotators' labels are what the model trains on;
unknown classes, skipped tasks and an unreachable server are refused or reported with nothing changed."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback, seed_everything

from lightning_dynamical import ActiveLearningLoop, Classifier, LabelsPending, LabelStudioOracle
from lightning_dynamical.data import DigitsDataModule
from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.oracles.base import Query
from lightning_dynamical.oracles.files import LabelFileError
from lightning_dynamical.oracles.label_studio import LabelStudioUnavailable, labeling_config, read_annotations
from lightning_dynamical.strategies import DynamicAL
from tests.helpers.label_studio_server import free_port
from tests.helpers.models import TinyCNN
from tests.helpers.tiny import digest, quiet_trainer, read_csv

B = 6
NAMES = [f"digit {i}" for i in range(10)]


class TrainedOn(Callback):
    """Every (image, target) pair the model trains on in the rounds after the first."""

    def __init__(self, loop: ActiveLearningLoop) -> None:
        self.loop, self.pairs = loop, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.loop.round >= 1:
            self.pairs += [(x.numpy().tobytes(), int(y)) for x, y in zip(batch[0], batch[1])]


def make_run(tmp_path: Path, oracle: LabelStudioOracle, **loop_kwargs):
    seed_everything(0, verbose=False)
    dm = DigitsDataModule(initial_size=30, batch_size=32, seed=0)
    model = Classifier(TinyCNN(1, 10), num_classes=10, lr=0.01)
    loop = ActiveLearningLoop(DynamicAL(params="last_layer"), query_size=B, rounds=1, max_epochs_per_round=1,
                              oracle=oracle, dirpath=str(tmp_path / "run"), save_round_checkpoints=False,
                              verbose=False, **loop_kwargs)
    seen = TrainedOn(loop)
    return quiet_trainer(tmp_path, [loop, seen]), loop, model, dm, seen


def true_label(index: int) -> int:
    dm = DigitsDataModule(initial_size=30, seed=0)
    dm.setup()
    return int(dm.splits.pool[index][1])


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_annotators_labels_are_what_the_model_trains_on(label_studio, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    oracle = LabelStudioOracle(label_studio.url, project="round trip", class_names=NAMES)
    trainer, loop, model, dm, _ = make_run(tmp_path, oracle)
    trainer.fit(model, datamodule=dm)
    assert loop.pending is not None and (tmp_path / "run" / "al_pending_round_0.ckpt").is_file()

    tasks = label_studio.tasks("round trip")
    pending = dict(zip(loop.pending["indices"], loop.pending["pseudo_labels"].tolist()))
    assert sorted(t["data"]["pool_index"] for t in tasks) == sorted(pending)
    for task in tasks:
        assert task["data"]["al_round"] == 0 and task["data"]["sample"].startswith("data:image/png;base64,")
        (prediction,) = label_studio.request("GET", f"/api/tasks/{task['id']}")["predictions"]
        assert prediction["result"][0]["value"]["choices"] == [NAMES[pending[task["data"]["pool_index"]]]]
    human = {t["data"]["pool_index"]: (true_label(t["data"]["pool_index"]) + 1) % 10 for t in tasks}
    for task in tasks:
        label_studio.annotate(task["id"], NAMES[human[task["data"]["pool_index"]]])

    trainer, loop, model, dm, seen = make_run(tmp_path, oracle)
    trainer.fit(model, datamodule=dm, ckpt_path=str(tmp_path / "run" / "al_pending_round_0.ckpt"))
    assert loop.finished and [r["labeled"] for r in loop.history] == [30, 30 + B]
    images = {index: dm.splits.pool[index][0].numpy().tobytes() for index in human}
    trained = {}
    for image, target in seen.pairs:
        trained.setdefault(image, set()).add(target)
    assert all(trained[images[i]] == {y} for i, y in human.items())  # every epoch, only the annotator's label
    queried = read_csv(tmp_path / "run" / "al_queries.csv")
    assert {int(r["index"]): int(r["label"]) for r in queried} == human
    assert {(r["round"], r["labeled_by"]) for r in queried} == {("0", "label-studio")}


def test_unknown_class_skipped_task_and_server_down_change_nothing(label_studio, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    oracle = LabelStudioOracle(label_studio.url, project="refusals", class_names=NAMES)
    trainer, loop, model, dm, _ = make_run(tmp_path, oracle)
    trainer.fit(model, datamodule=dm)
    ckpt = str(tmp_path / "run" / "al_pending_round_0.ckpt")
    before = digests(tmp_path / "run")

    down = LabelStudioOracle(f"http://127.0.0.1:{free_port()}", project="refusals", class_names=NAMES)
    trainer, loop, model, dm, _ = make_run(tmp_path, down)
    with pytest.raises(LabelStudioUnavailable, match="is not reachable"):
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    assert digests(tmp_path / "run") == before

    tasks = label_studio.tasks("refusals")
    wrong = label_studio.annotate(tasks[0]["id"], "banana")
    label_studio.skip(tasks[1]["id"])
    human = {t["data"]["pool_index"]: true_label(t["data"]["pool_index"]) for t in tasks}
    for task in tasks[2:]:
        label_studio.annotate(task["id"], NAMES[human[task["data"]["pool_index"]]])
    trainer, loop, model, dm, _ = make_run(tmp_path, oracle)
    with pytest.raises(LabelFileError, match=r"choices that are not classes .*'banana'"):
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    assert digests(tmp_path / "run") == before

    label_studio.delete_annotation(wrong["id"])
    label_studio.annotate(tasks[0]["id"], NAMES[human[tasks[0]["data"]["pool_index"]]])
    trainer, loop, model, dm, _ = make_run(tmp_path, oracle)
    skipped = tasks[1]["data"]["pool_index"]
    with pytest.raises(LabelsPending, match=rf"skipped \(cancelled\) by annotators: pool indices \[{skipped}\]"):
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    assert digests(tmp_path / "run") == before

    label_studio.annotate(tasks[1]["id"], NAMES[human[tasks[1]["data"]["pool_index"]]])
    trainer, loop, model, dm, _ = make_run(tmp_path, oracle)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    assert loop.finished
    assert {int(r["index"]): int(r["label"]) for r in read_csv(tmp_path / "run" / "al_queries.csv")} == human


def test_server_down_at_query_time_pauses_and_resume_creates_the_tasks(label_studio, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    down = LabelStudioOracle(f"http://127.0.0.1:{free_port()}", project="late server", class_names=NAMES)
    trainer, loop, model, dm, _ = make_run(tmp_path, down)
    trainer.fit(model, datamodule=dm)
    assert loop.pending is not None and not loop.finished
    queried = sorted(loop.pending["indices"])

    up = LabelStudioOracle(label_studio.url, project="late server", class_names=NAMES)
    trainer, loop, model, dm, _ = make_run(tmp_path, up)
    with pytest.raises(LabelsPending, match="only created now"):
        trainer.fit(model, datamodule=dm, ckpt_path=str(tmp_path / "run" / "al_pending_round_0.ckpt"))
    assert sorted(t["data"]["pool_index"] for t in label_studio.tasks("late server")) == queried


def test_personal_access_token_works_and_text_inputs_become_text_tasks(label_studio, tmp_path, monkeypatch) -> None:
    jwt = label_studio.request("POST", "/api/token/")["token"]  # a refresh token, exchanged for access tokens
    assert jwt.count(".") == 2
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", jwt)
    data = torch.utils.data.TensorDataset(torch.randn(20, 5), torch.arange(20) % 4)
    dm = ActiveLearningDataModule(data, initial_size=4, num_classes=4)
    query = Query(0, [10, 3], torch.tensor([0.5, float("nan")]), torch.tensor([1, 2]))
    with pytest.raises(LabelsPending, match="label the 2 tasks of round 0"):
        LabelStudioOracle(label_studio.url, project="with a token").label(dm, query)
    tasks = label_studio.tasks("with a token")
    assert [(t["data"]["pool_index"], t["data"].get("score"), t["data"]["pseudo_label"]) for t in tasks] == [
        (3, None, "2"), (10, 0.5, "1")]
    assert len(json.loads(tasks[0]["data"]["sample"])) == 5
    assert '<Text name="sample"' in label_studio.project("with a token")["label_config"]


def test_wait_times_out_into_a_pause(label_studio, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    oracle = LabelStudioOracle(label_studio.url, project="nobody there", class_names=NAMES, wait=True,
                               poll_seconds=0.2, timeout_seconds=1.0)
    trainer, loop, model, dm, _ = make_run(tmp_path, oracle)
    trainer.fit(model, datamodule=dm)
    assert loop.pending is not None and (tmp_path / "run" / "al_pending_round_0.ckpt").is_file()


def annotate_when_tasks_appear(server, title: str, names: list[str], labels: dict[int, int], stop: threading.Event):
    """The annotator: waits for the round's tasks and labels each one (pool index -> class id)."""
    while not stop.is_set():
        try:
            tasks = server.tasks(title)
        except ValueError:  # the project does not exist yet
            tasks = []
        if tasks:
            for task in tasks:
                server.annotate(task["id"], names[labels.setdefault(task["data"]["pool_index"],
                                                                    (true_label(task["data"]["pool_index"]) + 3) % 10)])
            return
        time.sleep(0.2)


def test_cli_yaml_wait_and_the_key_is_written_nowhere(label_studio, tmp_path, capfd, monkeypatch) -> None:
    import wandb

    from lightning_dynamical.cli.app import run

    monkeypatch.setattr(sys, "argv", ["lightning-dynamical"])  # pytest's own arguments are not the CLI's

    key_file = tmp_path / "secret" / "label_studio_key"
    key_file.parent.mkdir()
    key_file.write_text(label_studio.token + "\n")
    out = tmp_path / "out"
    config = {
        "seed_everything": 0,
        "model": {"class_path": "lightning_dynamical.Classifier",
                  "init_args": {"net": {"class_path": "lightning_dynamical.models.DigitsCNN"}, "num_classes": 10}},
        "data": {"class_path": "lightning_dynamical.data.DigitsDataModule",
                 "init_args": {"initial_size": 30, "batch_size": 32, "seed": 0}},
        "trainer": {"max_epochs": -1, "accelerator": "cpu", "devices": 1, "default_root_dir": str(out),
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.WandbLogger",
                               "init_args": {"save_dir": str(out), "offline": True, "project": "ls-test"}},
                    "callbacks": [{"class_path": "lightning_dynamical.ActiveLearningLoop", "init_args": {
                        "strategy": {"class_path": "lightning_dynamical.Entropy"}, "query_size": B, "rounds": 1,
                        "max_epochs_per_round": 1, "dirpath": str(out / "al"),
                        "oracle": {"class_path": "lightning_dynamical.LabelStudioOracle", "init_args": {
                            "url": label_studio.url, "project": "from yaml", "class_names": NAMES,
                            "api_key_file": str(key_file), "wait": True, "poll_seconds": 0.2,
                            "timeout_seconds": 120}}}}]},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    labels: dict[int, int] = {}
    stop = threading.Event()
    annotator = threading.Thread(target=annotate_when_tasks_appear,
                                 args=(label_studio, "from yaml", NAMES, labels, stop), daemon=True)
    annotator.start()
    try:
        cli = run(["fit", "--config", str(path)])
        cli.trainer.logger.experiment.finish()
        wandb.teardown()
    finally:
        stop.set()
        annotator.join(timeout=30)
    queried = read_csv(out / "al" / "al_queries.csv")
    assert {int(r["index"]): int(r["label"]) for r in queried} == labels and len(labels) == B
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in written) and any(p.suffix == ".wandb" for p in written)
    assert any(p.suffix == ".ckpt" for p in written)
    token = label_studio.token.encode()
    assert [p for p in written if token in p.read_bytes()] == []
    captured = capfd.readouterr()
    assert label_studio.token not in captured.out + captured.err


# ---- without a server ----------------------------------------------------------------------------------
def task(index: int, *annotations: dict) -> dict:
    return {"data": {"pool_index": index, "al_round": 0}, "annotations": list(annotations)}


def chose(name: str, cancelled: bool = False) -> dict:
    return {"was_cancelled": cancelled,
            "result": [] if cancelled else [{"from_name": "label", "value": {"choices": [name]}}]}


QUERY = Query(0, [5, 7], None, None)


def test_annotations_read_in_query_order() -> None:
    assert read_annotations([task(7, chose("b")), task(5, chose("a"), chose("a"))], QUERY, ["a", "b"], "p") == [0, 1]


@pytest.mark.parametrize(("tasks", "error", "match"), [
    ([task(5, chose("a")), task(7, chose("c"))], LabelFileError,
     r"not classes \(classes: \['a', 'b'\]\) \[pool index 7: 'c'\]"),
    ([task(5, chose("a")), task(7, chose("a"), chose("b"))], LabelFileError, r"annotators disagree .*7"),
    ([task(5, chose("a")), task(7, chose("a")), task(9, chose("a"))], LabelFileError, r"outside the query .*\[9\]"),
    ([task(5, chose("a"))], LabelFileError, r"no task for pool indices \(deleted\?\) \[7\]"),
    ([task(5, chose("a")), task(5, chose("a")), task(7, chose("a"))], LabelFileError,
     r"several tasks for pool indices \[5\]"),
    ([task(5, chose("a")), task(7, chose("", cancelled=True))], LabelsPending, r"skipped .*\[7\]"),
    ([task(5, chose("a")), task(7)], LabelsPending, r"not annotated yet: pool indices \[7\]"),
])
def test_bad_annotations_refused_or_pending(tasks, error, match) -> None:
    with pytest.raises(error, match=match):
        read_annotations(tasks, QUERY, ["a", "b"], "p")


def test_no_api_key_pauses_at_query_time(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    data = torch.utils.data.TensorDataset(torch.randn(20, 5), torch.arange(20) % 4)
    dm = ActiveLearningDataModule(data, initial_size=4, num_classes=4)
    with pytest.raises(LabelsPending, match="no Label Studio API key: set the environment variable"):
        LabelStudioOracle("http://127.0.0.1:1").label(dm, Query(0, [10, 3], None, None))
    with pytest.raises(LabelStudioUnavailable, match="cannot read the Label Studio API key file"):
        LabelStudioOracle("http://127.0.0.1:1", api_key_file=str(tmp_path / "none")).collect(
            dm, Query(0, [10, 3], None, None))


def test_labeling_config_and_arguments_checked() -> None:
    config = labeling_config(["cat", 'say "hi"'], "image")
    assert '<Image name="sample" value="$sample"/>' in config and "<Choice value='say \"hi\"'/>" in config
    assert '<Text name="sample"' in labeling_config(["a"], "text")
    for kwargs, match in [({"url": "localhost:8080"}, "http"), ({"project": "ab"}, "3 characters"),
                          ({"class_names": ["a", "a"]}, "distinct"), ({"class_names": ["a"], "num_classes": 2}, "1 "),
                          ({"timeout_seconds": 0}, "timeout_seconds")]:
        with pytest.raises(ValueError, match=match):
            LabelStudioOracle(**kwargs)
