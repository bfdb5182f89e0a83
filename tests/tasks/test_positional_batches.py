"""Two-input models fed ``((x1, x2), y)`` batches, called as ``model(x1, x2)``: exact scores on every engine, every
strategy, the loop; shapes still refused say which element and show the dict batch."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_dynamical import (
    ALBL,
    BADGE,
    ActiveLearningDataModule,
    ActiveLearningLoop,
    Classifier,
    DynamicAL,
    Entropy,
    Margin,
    Random,
)
from lightning_dynamical.scoring import select_parameters
from lightning_dynamical.scoring.exact import loop_gradients
from lightning_dynamical.tasks.batches import batch_size, split_batch, take, to_model
from tests.helpers.brute_force import any_per_sample_grads
from tests.helpers.tiny import fit_loop, read_csv

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]


class TwoInputNet(nn.Module):
    """An image branch (Conv-BatchNorm2d) and a vector branch (Linear-BatchNorm1d), concatenated, dropout, a head."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv, self.bn2d = nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.lin, self.bn1d = nn.Linear(4, 5), nn.BatchNorm1d(5)
        self.drop, self.head = nn.Dropout(0.3), nn.Linear(8, classes)

    def forward(self, image: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn2d(self.conv(image))).mean((2, 3))
        v = torch.relu(self.bn1d(self.lin(vector)))
        return self.head(self.drop(torch.cat([h, v], 1)))


class Pairs(Dataset):
    """Seeded items ``((image (1, 5, 5), vector (4,)), label)``, the label from the vector's first feature."""

    def __init__(self, n: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.images, self.vectors = torch.randn(n, 1, 5, 5, generator=gen), torch.randn(n, 4, generator=gen)
        self.labels = torch.bucketize(self.vectors[:, 0].contiguous(), torch.tensor([-0.4, 0.4]))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return (self.images[i], self.vectors[i]), self.labels[i]


def _trained_double() -> nn.Module:
    """The net in float64 with BatchNorm running statistics from a few train-mode forwards."""
    torch.manual_seed(0)
    model = TwoInputNet().double().train()
    data = Pairs(16, seed=9)
    with torch.no_grad():
        for _ in range(3):
            model(data.images.double(), data.vectors.double())
    return model


def _whole(dataset: Pairs) -> tuple[torch.Tensor, torch.Tensor]:
    return dataset.images.double(), dataset.vectors.double()


@pytest.mark.parametrize("engine", ["fast", "func", "auto"])
def test_dynamical_scores_equal_brute_force(engine):
    model = _trained_double()
    pool, labeled = Pairs(7, seed=1), Pairs(5, seed=2)
    strategy = DynamicAL(gamma=2.0, engine=engine)
    scores = strategy.score(model, DataLoader(pool, batch_size=3), DataLoader(labeled, batch_size=3))
    assert model.training  # every module's mode restored
    model.eval()
    g = any_per_sample_grads(model, _whole(pool))
    g_s = any_per_sample_grads(model, _whole(labeled), labeled.labels).sum(0)
    ref = g.pow(2).sum(1) + 2 * g @ g_s
    assert float((scores - ref).abs().max() / ref.abs().max()) <= 1e-10
    paths = strategy.explain(model, next(iter(DataLoader(pool, batch_size=3))))
    expected = ("vmap",) if engine == "func" else ("fast", "unused")
    assert all(p.path.startswith(expected) for p in paths), paths  # the proof held: no fallback on a tuple batch


class Mixing(TwoInputNet):
    """Centres the second input over the batch: samples are not independent, which the fast proof must catch."""

    def forward(self, image: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        return super().forward(image, vector - vector.mean(0) + vector[:1])


def test_samples_mixed_through_the_second_input_go_to_the_exact_path():
    torch.manual_seed(0)
    model = Mixing().double().eval()
    pool = Pairs(6, seed=1)
    strategy = DynamicAL(gamma=0.0, engine="fast")
    scores = strategy.score(model, DataLoader(pool, batch_size=6), [])
    assert torch.allclose(scores, any_per_sample_grads(model, _whole(pool)).pow(2).sum(1), rtol=1e-10, atol=0)
    paths = strategy.explain(model, next(iter(DataLoader(pool, batch_size=6))))
    assert all(p.path == "vmap" and "not independent" in p.reason for p in paths), paths


def test_last_layer_and_per_sample_loop_equal_brute_force():
    model = _trained_double().eval()
    pool, labeled = Pairs(6, seed=3), Pairs(4, seed=4)
    scores = DynamicAL(gamma=2.0, params="last_layer", engine="last_layer").score(
        model, DataLoader(pool, batch_size=4), DataLoader(labeled, batch_size=4))
    head = sum(p.numel() for p in model.head.parameters())  # the head's parameters are the last columns
    g = any_per_sample_grads(model, _whole(pool))[:, -head:]
    g_s = any_per_sample_grads(model, _whole(labeled), labeled.labels)[:, -head:].sum(0)
    ref = g.pow(2).sum(1) + 2 * g @ g_s
    assert float((scores - ref).abs().max() / ref.abs().max()) <= 1e-10
    inputs = to_model(split_batch(next(iter(DataLoader(pool, batch_size=6))))[0], model)
    grads = loop_gradients(model, inputs, pool.labels, select_parameters(model))
    flat = torch.cat([v.reshape(6, -1) for v in grads.values()], 1)
    assert torch.allclose(flat, any_per_sample_grads(model, _whole(pool), pool.labels), rtol=0, atol=1e-12)


def test_entropy_margin_badge_albl_read_positional_inputs():
    model = _trained_double().eval()
    pool, labeled = DataLoader(Pairs(9, seed=5), batch_size=4), DataLoader(Pairs(4, seed=6), batch_size=4)
    with torch.no_grad():
        p = model(*_whole(pool.dataset)).softmax(1)
    assert torch.allclose(Entropy().score(model, pool, labeled), -(p * p.log()).sum(1), atol=1e-12)
    top2 = p.topk(2, 1).values
    assert torch.allclose(Margin().score(model, pool, labeled).abs(), (top2[:, 0] - top2[:, 1]).abs(), atol=1e-12)
    for strategy in (BADGE(), ALBL([Entropy(), Random(seed=1)])):  # ALBL fingerprints each positional input
        assert len(set(strategy.select(model, pool, labeled, 3).positions.tolist())) == 3


def test_batch_contract_on_positional_inputs():
    x1, x2, y = torch.randn(5, 2), torch.randn(5, 3, 4), torch.arange(5)
    inputs, target = split_batch([[x1, x2], y])
    assert isinstance(inputs, tuple) and target is y and batch_size(inputs) == 5
    picked = take(inputs, [4, 1])
    assert isinstance(picked, tuple) and torch.equal(picked[0], x1[[4, 1]]) and torch.equal(picked[1], x2[[4, 1]])
    assert split_batch(((x1, x2),))[1] is None  # inputs only (a pool without targets)


@pytest.mark.parametrize("batch, match", [
    (((torch.zeros(2, 3), ["a", "b"]), torch.zeros(2)), r"element 1 of the batch's inputs \(element 0\) is a list"),
    (({"x": torch.zeros(2, 3)}, torch.zeros(2)), r"got a tuple whose element 0 is a dict"),
    (((), torch.zeros(2)), r"inputs \(element 0\) of a batch are an empty tuple"),
    ("text", r"got a str"),
])
def test_refused_shapes_name_the_element_and_show_the_dict_batch(batch, match):
    with pytest.raises(TypeError, match=match) as info:
        split_batch(batch)
    assert "{'x1': ..., 'x2': ..., 'labels': target}" in str(info.value) and "model(**inputs)" in str(info.value)


def test_positional_inputs_must_share_the_batch_dimension():
    inputs = split_batch(((torch.zeros(4, 2), torch.zeros(3, 2)), torch.zeros(4)))[0]
    with pytest.raises(TypeError, match=r"batched on dim 0; got shapes \[\(4, 2\), \(3, 2\)\].*dict batch"):
        batch_size(inputs)


def test_one_loop_round_on_positional_batches(tmp_path):
    L.seed_everything(0)
    dm = ActiveLearningDataModule(Pairs(40, seed=7), test=Pairs(12, seed=8), initial_size=8, batch_size=8,
                                  eval_batch_size=16)
    loop = ActiveLearningLoop(DynamicAL(), query_size=6, rounds=1, max_epochs_per_round=1, dirpath=str(tmp_path),
                              save_round_checkpoints=False, verbose=False)
    fit_loop(Classifier(TwoInputNet(), num_classes=3), dm, loop, tmp_path)
    assert dm.num_labeled == 14
    rows = read_csv(tmp_path / "al_rounds.csv")
    assert [int(r["labeled"]) for r in rows] == [8, 14]
    assert all(0.0 <= float(r["test_acc"]) <= 1.0 for r in rows)
