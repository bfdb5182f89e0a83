"""Lightning setups that went wrong silently (found by fuzzing the loop with ordinary Trainer options): a finished
loop trained again forever, a validation-time checkpoint resumed with an infinite epoch loss, an epoch cut short
by ``max_steps`` ended a round, steps returning no loss crashed, ``min_epochs`` trained past the last round,
``reset="init"`` kept bare parameters, ``from_datamodule`` dropped the loader's ``collate_fn``, and a resume split
the records over two log folders."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, Classifier, ConfigError, Random
from lightning_dynamical.records.weights import reinitialise, unresettable
from tests.helpers.tiny import fit_loop, quiet_trainer, read_csv, toy_classifier, toy_datamodule

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]


def _loop(tmp_path, **kwargs) -> ActiveLearningLoop:
    options = {"query_size": 5, "rounds": 2, "max_epochs_per_round": 3, "train_acc_threshold": None,
               "dirpath": None if tmp_path is None else str(tmp_path), "verbose": False, **kwargs}
    return ActiveLearningLoop(Random(), **options)


class _Epochs(L.Callback):
    """Counts training epochs that start."""

    def __init__(self) -> None:
        self.epochs = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs += 1


def test_a_finished_loop_trains_nothing_again(tmp_path, caplog):
    L.seed_everything(0)
    loop, dm, model = _loop(tmp_path), toy_datamodule(batch_size=8), toy_classifier()
    fit_loop(model, dm, loop, tmp_path)
    assert loop.finished and dm.num_labeled == 20
    for ckpt_path, options in ((None, {}), (loop.final_checkpoint, {}), (None, {"min_epochs": 1})):
        epochs = _Epochs()
        with caplog.at_level("INFO", logger="lightning_dynamical"):
            fit_loop(model, dm, loop, tmp_path, [epochs], ckpt_path=ckpt_path, **options)
        assert epochs.epochs == 0 and dm.num_labeled == 20 and len(loop.history) == 3
        assert "this loop has finished (3 round(s) recorded, 20 labeled samples): nothing to train" in caplog.text


def test_a_checkpoint_saved_at_validation_before_the_epoch_end_resumes_exactly(tmp_path):
    """Validation every second epoch: ``ModelCheckpoint`` saves before the loop's epoch end, whose loss (taken at the
    epoch's last batch) is in the loop's state; the resumed run records and selects as the uninterrupted one."""

    def run(root, ckpt_path=None, max_epochs=-1):
        L.seed_everything(0)
        dm = toy_datamodule(batch_size=8, val_size=10)
        loop = _loop(root, smoothing=1)
        checkpoints = ModelCheckpoint(dirpath=root / "mc", save_top_k=-1, filename="{epoch}")
        fit_loop(toy_classifier(), dm, loop, root, [checkpoints], ckpt_path=ckpt_path, max_epochs=max_epochs,
                 enable_checkpointing=True, check_val_every_n_epoch=2, num_sanity_val_steps=0)
        return dm, read_csv(root / "al_rounds.csv")

    dm, rows = run(tmp_path / "whole")
    run(tmp_path / "cut", max_epochs=6)  # epoch 5 (saved at validation) is round 1's last
    resumed_dm, resumed_rows = run(tmp_path / "cut", ckpt_path=str(tmp_path / "cut" / "mc" / "epoch=5.ckpt"))
    assert [r["train_loss"] for r in resumed_rows] == [r["train_loss"] for r in rows]
    assert all(float(r["train_loss"]) < 10 for r in rows)
    assert resumed_dm.labeled_indices == dm.labeled_indices


def test_an_epoch_cut_short_by_max_steps_ends_no_round(tmp_path, caplog):
    L.seed_everything(0)
    loop = _loop(tmp_path, max_epochs_per_round=1)
    with caplog.at_level("INFO", logger="lightning_dynamical"):  # round 0: 3 steps; round 1's epoch: 1 of 4 batches
        fit_loop(toy_classifier(), toy_datamodule(batch_size=4), loop, tmp_path, max_steps=4)
    assert len(loop.history) == 1 and loop.datamodule.num_labeled == 15
    assert "Trainer(max_steps=4) ended the fit at the start of round 1" in caplog.text


class _SkipsOddBatches(Classifier):
    def training_step(self, batch, batch_idx):
        return None if batch_idx % 2 else super().training_step(batch, batch_idx)


class _ReturnsNothing(Classifier):
    def training_step(self, batch, batch_idx):
        super().training_step(batch, batch_idx)


class _SkipsTheRest(Classifier):
    """Ends every epoch after its first batch, as Lightning allows (``on_train_batch_start`` returning -1)."""

    def on_train_batch_start(self, batch, batch_idx):
        return -1 if batch_idx >= 1 else None


def test_an_epoch_whose_rest_is_skipped_still_counts(tmp_path):
    L.seed_everything(0)
    loop = _loop(tmp_path, max_epochs_per_round=2)
    fit_loop(_SkipsTheRest(nn.Linear(4, 2), num_classes=2), toy_datamodule(batch_size=4), loop, tmp_path,
             max_epochs=20)
    assert loop.finished and [r["epochs"] for r in loop.history] == [2, 2, 2]


def test_steps_returning_no_loss(tmp_path):
    L.seed_everything(0)
    loop = _loop(tmp_path / "skips")
    fit_loop(_SkipsOddBatches(nn.Linear(4, 2), num_classes=2), toy_datamodule(batch_size=4), loop, tmp_path)
    assert loop.finished and all(float(r["train_loss"]) > 0 for r in read_csv(tmp_path / "skips" / "al_rounds.csv"))
    with pytest.raises(ConfigError, match="training_step returned no loss in any of the epoch's 3 batches"):
        fit_loop(_ReturnsNothing(nn.Linear(4, 2), num_classes=2), toy_datamodule(batch_size=4),
                 _loop(tmp_path / "none"), tmp_path)


@pytest.mark.parametrize("option", [{"min_epochs": 30}, {"min_steps": 100}])
def test_trainer_minimums_that_outlast_the_rounds_are_refused(tmp_path, option):
    with pytest.raises(ConfigError, match=rf"Trainer\({next(iter(option))}=\d+\) would keep training after"):
        fit_loop(toy_classifier(), toy_datamodule(), _loop(tmp_path), tmp_path, **option)
    assert not (tmp_path / "al_state.json").exists()


class _WithToken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(4))
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = (x + self.token).unsqueeze(1)
        return self.head(self.attention(h, h, h)[0][:, 0])


def test_reset_init_resets_attention_and_refuses_parameters_it_cannot_reset(tmp_path):
    model = Classifier(_WithToken(), num_classes=2)
    assert unresettable(model) == ["net.token"]
    with pytest.raises(ConfigError, match=r"reset='init' .* would keep trained: net.token; give their module"):
        fit_loop(model, toy_datamodule(), _loop(tmp_path, reset="init"), tmp_path)
    model.net.token.requires_grad_(False)  # frozen: nothing to reset
    assert unresettable(model) == []
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    reinitialise(quiet_trainer(None), model, seed=1)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert {"net.attention.in_proj_weight", "net.attention.out_proj.weight", "net.head.weight"} <= changed
    assert "net.token" not in changed


def test_reset_init_resets_running_statistics_and_keeps_frozen_parameters_a_parent_would_reset():
    norm = nn.BatchNorm1d(4, affine=False)
    transformer = nn.Transformer(8, 2, 1, 1, 16, dropout=0.0)
    transformer.encoder.requires_grad_(False)
    model = Classifier(nn.Sequential(nn.Linear(4, 4), norm, nn.Linear(4, 2)), num_classes=2)
    model.extra = transformer
    norm(torch.randn(16, 4) + 3)
    frozen = {n: p.detach().clone() for n, p in transformer.encoder.named_parameters()}
    reinitialise(quiet_trainer(None), model, seed=1)
    assert torch.equal(norm.running_mean, torch.zeros(4)) and int(norm.num_batches_tracked) == 0
    assert all(torch.equal(p, frozen[n]) for n, p in transformer.encoder.named_parameters())


class _UserData(L.LightningDataModule):
    def train_dataloader(self):
        x = torch.arange(40.0).reshape(20, 2)
        return DataLoader(TensorDataset(x, torch.arange(20) % 2), batch_size=6, drop_last=True,
                          collate_fn=lambda items: (torch.stack([i[0] for i in items]) / 40, torch.stack(
                              [i[1] for i in items])))


def test_from_datamodule_keeps_the_loaders_collate_fn_and_drop_last():
    dm = ActiveLearningDataModule.from_datamodule(_UserData(), initial_size=8)
    assert dm.drop_last and dm.batch_size == 6
    batches = list(dm.train_dataloader())
    assert len(batches) == 1 and batches[0][0].max() < 1  # 8 labeled: one full batch of 6, scaled by the collate
    assert next(iter(dm.pool_dataloader()))[0].max() < 1 and sum(len(b[1]) for b in dm.pool_dataloader()) == 12
    small = ActiveLearningDataModule.from_datamodule(_UserData(), initial_size=4)
    assert [len(b[1]) for b in small.train_dataloader()] == [4]  # never the only batch


class _CrashIn(L.Callback):
    def __init__(self, loop: ActiveLearningLoop, round: int) -> None:
        self.loop, self.round = loop, round

    def on_train_epoch_start(self, trainer, pl_module):
        if self.loop.round == self.round:
            raise RuntimeError("simulated crash")


def test_a_resumed_run_keeps_its_records_in_the_checkpoints_folder_and_a_branch_gets_its_own(tmp_path):
    """Python API, default ``dirpath`` with a logger: resuming the crashed run's latest checkpoint logs to
    ``version_1`` while the rounds' records go on in ``version_0``; resuming an earlier round of it (a branch) writes
    a folder of its own and leaves ``version_0`` as it is."""

    def run(ckpt_path=None, crash=None):
        L.seed_everything(0)
        loop = _loop(None, rounds=3)
        callbacks = [loop] + ([_CrashIn(loop, crash)] if crash is not None else [])
        trainer = quiet_trainer(tmp_path, callbacks, logger=CSVLogger(tmp_path))
        try:
            trainer.fit(toy_classifier(), datamodule=toy_datamodule(batch_size=8), ckpt_path=ckpt_path)
        except RuntimeError:
            pass
        return loop

    first = tmp_path / "lightning_logs" / "version_0"
    run(crash=2)
    loop = run(ckpt_path=str(first / "al_round_1.ckpt"))
    assert loop.records.dirpath == str(first) and loop.finished
    assert {r["round"] for r in read_csv(first / "al_queries.csv")} == {"0", "1", "2"}
    assert [r["round"] for r in read_csv(first / "al_rounds.csv")] == ["0", "1", "2", "3"]
    before = (first / "al_rounds.csv").read_text()
    branch = run(ckpt_path=str(first / "al_round_0.ckpt"))
    assert branch.records.dirpath == str(tmp_path / "lightning_logs" / "version_2")
    assert (first / "al_rounds.csv").read_text() == before


def test_fast_dev_run_is_named(tmp_path, caplog):
    with caplog.at_level("INFO", logger="lightning_dynamical"):
        fit_loop(toy_classifier(), toy_datamodule(), _loop(tmp_path), tmp_path, fast_dev_run=True)
    assert "Trainer(fast_dev_run=True) ended the fit" in caplog.text


def test_a_checkpoint_in_the_records_folder_is_recognised_however_its_path_is_written(tmp_path, monkeypatch):
    from lightning_dynamical.records.run import _inside

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "a").mkdir(parents=True)
    for path in ("runs/a/al_round_1.ckpt", "./runs/a/al_round_1.ckpt", str(tmp_path / "runs/a/al_round_1.ckpt")):
        assert _inside(path, "runs/a") and _inside(path, str(tmp_path / "runs" / "a"))
    assert not _inside("runs/ab/al_round_1.ckpt", "runs/a")
