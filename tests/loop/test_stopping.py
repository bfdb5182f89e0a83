"""Stopping criteria: each fires on a crafted case and not on its negative; the loop stops on them, records
them, and their state survives a resume from a round checkpoint and from al_state.json."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from sklearn.metrics import cohen_kappa_score
from torch import Tensor

from lightning_dynamical import ActiveLearningLoop, Classifier, DynamicAL, Entropy
from lightning_dynamical.loop.stopping import (
    GradientNormDecay,
    LabelBudget,
    StabilizingPredictions,
    Stopping,
    StoppingCriterion,
    ValidationPlateau,
    cohen_kappa,
)
from lightning_dynamical.models import DigitsCNN
from tests.helpers.tiny import CrashAtRound, comparable_state, digits_datamodule, fit_loop, read_csv

ROOT = Path(__file__).resolve().parents[2]


class FakeContext:
    """The few things a criterion reads, scripted per round."""

    def __init__(self, labeled: int = 0, query_size: int = 10, predictions: Tensor | None = None,
                 val: float = 0.0, sqnorm: Tensor | None = None, candidates: int = 50) -> None:
        self.labeled, self.query_size, self.val, self.sqnorm = labeled, query_size, val, sqnorm
        self._predictions = predictions
        self.datamodule = type("DM", (), {"state_dict": lambda s: {"candidates": list(range(candidates))}})()

    def predictions(self, indices):
        return self._predictions[torch.as_tensor(indices)]

    def val_accuracy(self) -> float:
        return self.val

    def pool_sqnorm(self) -> Tensor:
        return self.sqnorm


def test_cohen_kappa_matches_scikit_learn():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (200,), generator=gen)
    b = torch.where(torch.rand(200, generator=gen) < 0.7, a, torch.randint(0, 4, (200,), generator=gen))
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a.numpy(), b.numpy()))
    assert cohen_kappa(a, a) == 1.0
    assert cohen_kappa(torch.zeros(5), torch.zeros(5)) == 1.0
    with pytest.raises(ValueError, match="label vectors"):
        cohen_kappa(a, b[:10])


def test_label_budget_fires_only_when_the_next_query_does_not_fit():
    budget = LabelBudget(100)
    assert not budget.update(FakeContext(labeled=90, query_size=10))
    assert budget.update(FakeContext(labeled=91, query_size=10))
    assert "max_labels=100" in budget.message
    with pytest.raises(ValueError, match="max_labels"):
        LabelBudget(0)


def test_stabilizing_predictions_fires_after_k_agreeing_rounds_and_not_on_changing_predictions():
    gen = torch.Generator().manual_seed(1)
    fixed = torch.randint(0, 3, (50,), generator=gen)
    stable = StabilizingPredictions(threshold=0.99, rounds=2, stop_set_size=20)
    assert [stable.update(FakeContext(predictions=fixed)) for _ in range(4)] == [False, False, True, True]
    assert len(stable.stop_set) == 20 and len(set(stable.stop_set)) == 20
    assert "kappa 1.0000, 1.0000 >= 0.99 for 2 rounds" in stable.message

    changing = StabilizingPredictions(threshold=0.99, rounds=2, stop_set_size=20)
    fired = [changing.update(FakeContext(predictions=torch.randint(0, 3, (50,), generator=gen))) for _ in range(5)]
    assert fired == [False] * 5
    assert all(k < 0.99 for k in changing.kappas)

    one_flip = StabilizingPredictions(threshold=0.99, rounds=2, stop_set_size=50)
    flipped = fixed.clone()
    flipped[0] = (flipped[0] + 1) % 3
    sequence = [fixed, fixed, flipped, flipped]  # the flip breaks the run of agreeing rounds
    assert [one_flip.update(FakeContext(predictions=p)) for p in sequence] == [False, False, False, False]


def test_validation_plateau_fires_after_patience_rounds_without_gain():
    rising = ValidationPlateau(patience=2)
    assert not any(rising.update(FakeContext(val=v)) for v in (0.5, 0.6, 0.7, 0.8))
    flat = ValidationPlateau(patience=2, min_delta=0.01)
    assert [flat.update(FakeContext(val=v)) for v in (0.5, 0.7, 0.705, 0.70)] == [False, False, False, True]


def test_gradient_norm_decay_fires_below_a_fraction_of_the_first_round():
    b = 3
    decaying = GradientNormDecay(fraction=0.1)
    scale = [1.0, 0.5, 0.2, 0.05]
    base = torch.tensor([10.0, 8.0, 6.0, 1.0, 0.5])
    assert [decaying.update(FakeContext(query_size=b, sqnorm=base * s)) for s in scale] == [False, False, False, True]
    assert decaying.value == pytest.approx(0.05)
    steady = GradientNormDecay(fraction=0.1)
    assert not any(steady.update(FakeContext(query_size=b, sqnorm=base * s)) for s in (1.0, 0.8, 1.2, 0.5))


def test_stopping_refuses_bad_input():
    with pytest.raises(TypeError, match="StoppingCriterion"):
        Stopping(["budget"])
    with pytest.raises(ValueError, match="more than one criterion named"):
        Stopping([LabelBudget(10), LabelBudget(20)])
    with pytest.raises(ValueError, match="stop_mode"):
        Stopping(None, "maybe")
    for make, match in [(lambda: StabilizingPredictions(threshold=2), "threshold"),
                        (lambda: StabilizingPredictions(rounds=0), "rounds"),
                        (lambda: ValidationPlateau(patience=0), "patience"),
                        (lambda: GradientNormDecay(fraction=1.5), "fraction")]:
        with pytest.raises(ValueError, match=match):
            make()


# ---- in the loop -----------------------------------------------------------------------------------------
class AlwaysAfterScoring(StoppingCriterion):
    name = "always"
    phase = "query"

    def update(self, ctx) -> bool:
        self.message = "always fires"
        return True


def _fit(tmp: Path, stop, strategy=None, rounds: int = 3, val_size: int = 0, crash_at: int | None = None,
         ckpt_path: str | None = None, **kwargs):
    L.seed_everything(0)
    dm = digits_datamodule(val_size=val_size)
    loop = ActiveLearningLoop(strategy or DynamicAL(), query_size=30, rounds=rounds, max_epochs_per_round=2,
                              patience=1, dirpath=str(tmp), verbose=False, stop=stop, **kwargs)
    crash = [] if crash_at is None else [CrashAtRound(loop, crash_at)]
    fit_loop(Classifier(DigitsCNN()), dm, loop, tmp, callbacks=crash, ckpt_path=ckpt_path)
    return dm, loop


def _rounds(tmp: Path) -> list[dict[str, str]]:
    return read_csv(tmp / "al_rounds.csv")


def test_budget_stops_the_run_with_a_line_naming_it(tmp_path, one_thread, caplog):
    with caplog.at_level("INFO"):
        dm, loop = _fit(tmp_path, LabelBudget(100), rounds=5)
    assert dm.num_labeled == 100 and loop.finished and loop.round == 2
    rows = _rounds(tmp_path)
    assert [r["stopped_by"] for r in rows] == ["", "", "budget"]
    assert all(0 <= float(r["train_acc"]) <= 1 and float(r["train_loss"]) > 0 for r in rows)
    assert "stopping after round 2: label budget: 100 labeled" in caplog.text


def test_a_criterion_firing_after_scoring_labels_nothing(tmp_path, one_thread):
    dm, loop = _fit(tmp_path, [AlwaysAfterScoring()], rounds=3)
    assert dm.num_labeled == 40 and loop.finished and len(loop.history) == 1
    assert loop.history[0]["stopped_by"] == "always" and loop.history[0]["score_seconds"] > 0


def test_record_mode_only_records(tmp_path, one_thread):
    dm, loop = _fit(tmp_path, [AlwaysAfterScoring(), LabelBudget(40)], rounds=2, stop_mode="record")
    assert dm.num_labeled == 100 and loop.round == 2
    assert [r["stopped_by"] for r in _rounds(tmp_path)] == ["budget;always", "budget;always", "budget"]


def test_criteria_that_cannot_work_fail_before_training(tmp_path):
    with pytest.raises(TypeError, match="GradientNormDecay reads DynamicAL"):
        _fit(tmp_path, GradientNormDecay(), strategy=Entropy())
    with pytest.raises(ValueError, match="ValidationPlateau needs a validation split"):
        _fit(tmp_path, ValidationPlateau())


def _criteria():
    return [StabilizingPredictions(threshold=0.5, rounds=1, stop_set_size=200), ValidationPlateau(patience=1),
            GradientNormDecay(fraction=0.5)]


def test_criterion_state_survives_resume(tmp_path, one_thread):
    full, crash = tmp_path / "full", tmp_path / "crash"
    _, loop_full = _fit(full, _criteria(), val_size=100, stop_mode="record")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(crash, _criteria(), val_size=100, stop_mode="record", crash_at=2)
    _, loop = _fit(crash, _criteria(), val_size=100, stop_mode="record", ckpt_path=str(crash / "al_round_1.ckpt"))
    assert comparable_state(crash / "al_state.json") == comparable_state(full / "al_state.json")
    state = loop.stopping.state_dict()
    assert state == loop_full.stopping.state_dict()
    assert len(state["kappa"]["kappas"]) == 3 and state["gradient_norm"]["reference"] > 0
    assert [r["stopped_by"] for r in _rounds(crash)] == [r["stopped_by"] for r in _rounds(full)]

    fresh = ActiveLearningLoop(query_size=30, rounds=3, stop=_criteria())
    fresh.load_state_dict(fresh.records.resume_from(digits_datamodule(val_size=100), str(crash / "al_state.json")))
    assert fresh.stopping.state_dict() == state


def test_stop_list_from_lightning_cli_yaml(tmp_path, monkeypatch):
    from lightning.pytorch import LightningDataModule, LightningModule

    from lightning_dynamical.cli.app import ActiveLearningCLI

    config = yaml.safe_load((ROOT / "configs" / "digits.yaml").read_text())
    config["trainer"]["logger"] = False
    config["trainer"]["default_root_dir"] = str(tmp_path)
    config["trainer"]["callbacks"][0]["init_args"]["stop"] = [
        {"class_path": "lightning_dynamical.loop.stopping.LabelBudget", "init_args": {"max_labels": 300}},
        {"class_path": "lightning_dynamical.loop.stopping.StabilizingPredictions", "init_args": {"threshold": 0.95}}]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setattr("sys.argv", ["lightning-dynamical"])
    cli = ActiveLearningCLI(LightningModule, LightningDataModule, subclass_mode_model=True,
                            subclass_mode_data=True, run=False, args=["--config", str(path)])
    loop = next(c for c in cli.trainer.callbacks if isinstance(c, ActiveLearningLoop))
    assert [type(c).__name__ for c in loop.stopping.criteria] == ["LabelBudget", "StabilizingPredictions"]
    assert loop.stopping.criteria[0].max_labels == 300 and loop.stopping.criteria[1].threshold == 0.95
