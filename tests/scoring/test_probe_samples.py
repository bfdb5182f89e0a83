"""Data that a probe of the batch's own samples cannot see through: a batch of two that is a sentence and its
reversal, two identical padding-only samples, a batch whose samples are all equal, and a position lookup reduced over
the dim the watch expands. Each case scores exactly against per-sample autograd on every batch, including the
batches after the one that could have fooled the probe (its evidence would be remembered for them)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_dynamical.scoring import FastEngine, select_parameters
from lightning_dynamical.scoring.trace import probe_positions
from tests.helpers.brute_force import any_per_sample_grads, assert_dynamical_exact

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

VOCAB = 20


class SequenceFirstMix(nn.Module):
    """Embeddings, a dense layer fed ``(T, B, E)`` (dim 0 is not the batch), a head over the flattened sequence."""

    def __init__(self, length: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        self.mix = nn.Linear(8, 8)
        self.fc = nn.Linear(length * 8, 3)

    def forward(self, input_ids: Tensor) -> Tensor:
        h = torch.tanh(self.mix(self.embed(input_ids).transpose(0, 1)))
        return self.fc(h.transpose(0, 1).flatten(1))


class TimeMajorMix(SequenceFirstMix):
    """The dense layer on the sequence-first embeddings flattened to ``(T * B, E)``: rows of time steps, not samples,
    with the batch's shapes (only values can show it)."""

    def forward(self, input_ids: Tensor) -> Tensor:
        b, t = input_ids.shape
        rows = self.embed(input_ids).transpose(0, 1).reshape(t * b, -1)
        h = torch.tanh(self.mix(rows)).reshape(t, b, -1)
        return self.fc(h.transpose(0, 1).flatten(1))


REDUCTIONS = {"sum": lambda t, b: t.sum(0), "mean": lambda t, b: t.mean(0), "first": lambda t, b: t[0],
              "max": lambda t, b: t.amax(0), "scaled first": lambda t, b: (t * 2)[0], "flip": lambda t, b: t.flip(0),
              "roll": lambda t, b: t.roll(1, 0), "repeated by index": lambda t, b: t[torch.zeros(b, dtype=torch.long)],
              "sliced": lambda t, b: t[:, : t.shape[1]] * 1.5}


class SummedPositions(nn.Module):
    """Position embeddings looked up with ids ``(1, T)`` and reduced, indexed or reordered over that leading dim:
    expanded to the batch, a sum multiplies them by the batch size, the others keep their values but not which row
    each sample's gradient reaches (a slice along another dim keeps both)."""

    def __init__(self, length: int, reduction: str = "sum") -> None:
        super().__init__()
        self.reduction = REDUCTIONS[reduction]
        self.emb = nn.Embedding(VOCAB, 8)
        self.pos = nn.Embedding(length, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, input_ids: Tensor) -> Tensor:
        pos = self.reduction(self.pos(torch.arange(input_ids.shape[1])[None]), input_ids.shape[0])
        return self.fc(torch.tanh(self.emb(input_ids) + pos).mean(1))


def _loader(ids: Tensor, labels: Tensor, batch: int) -> DataLoader:
    return DataLoader([{"input_ids": ids[i], "labels": labels[i]} for i in range(len(ids))], batch_size=batch)


def _assert_exact(model: nn.Module, pool: Tensor, batch: int) -> None:
    torch.manual_seed(1)
    model = model.double().eval()
    labeled, targets = torch.randint(1, VOCAB, (3, pool.shape[1])), torch.tensor([0, 1, 2])
    g = any_per_sample_grads(model, {"input_ids": pool})
    g_s = any_per_sample_grads(model, {"input_ids": labeled}, targets).sum(0)
    assert_dynamical_exact(model, _loader(pool, torch.zeros(len(pool), dtype=torch.long), batch),
                           _loader(labeled, targets, 2), g, g_s)


def test_a_sentence_and_its_reversal_in_a_batch_of_two_do_not_pass_a_sequence_first_layout() -> None:
    torch.manual_seed(0)
    pool = torch.randint(1, VOCAB, (6, 2))
    pool[0], pool[1] = torch.tensor([3, 7]), torch.tensor([7, 3])  # the first batch: its two samples' rows swap
    _assert_exact(SequenceFirstMix(2), pool, batch=2)
    engine = FastEngine()
    model = SequenceFirstMix(2).double().eval()
    engine.batch_statistics(model, pool[:2], select_parameters(model, None), [])
    assert "not the samples" in engine.paths["mix.weight"].reason


def test_two_identical_padding_samples_go_exact_and_leave_no_evidence_for_later_batches() -> None:
    torch.manual_seed(0)
    pool = torch.randint(1, VOCAB, (6, 4))
    pool[:2] = 0  # the first batch of two: padding only, the same inputs twice
    _assert_exact(SequenceFirstMix(4), pool, batch=2)
    model = SequenceFirstMix(4).double().eval()
    engine, params = FastEngine(), select_parameters(model, None)
    engine.batch_statistics(model, pool[:2], params, [])
    assert all(p.path != "fast (linear)" and "same inputs" in p.reason for n, p in engine.paths.items()
               if n.startswith("mix."))
    engine.batch_statistics(model, pool[2:4], params, [])  # a batch of the same shapes probes for itself
    assert "not the samples" in engine.paths["mix.weight"].reason


def test_a_batch_of_equal_samples_goes_exact_where_only_values_could_show_the_layout() -> None:
    torch.manual_seed(0)
    pool = torch.cat([torch.full((4, 4), 4), torch.randint(1, VOCAB, (4, 4))])
    _assert_exact(TimeMajorMix(4), pool, batch=4)
    model = TimeMajorMix(4).double().eval()
    engine, params = FastEngine(), select_parameters(model, None)
    engine.batch_statistics(model, pool[:4], params, [])
    assert "same inputs" in engine.paths["mix.weight"].reason
    engine.batch_statistics(model, pool[4:], params, [])
    assert "not the samples" in engine.paths["mix.weight"].reason


@pytest.mark.parametrize("reduction", sorted(REDUCTIONS))
def test_a_reduction_over_an_expanded_lookup_is_caught_and_rescored_without_expanding(reduction: str) -> None:
    torch.manual_seed(0)
    pool = torch.randint(0, VOCAB, (6, 5))
    for batch in (2, 3, 4):
        _assert_exact(SummedPositions(5, reduction), pool, batch=batch)
    model = SummedPositions(5, reduction).double().eval()
    engine = FastEngine()
    sq, _, y = engine.batch_statistics(model, pool[:4], select_parameters(model, None), [])
    with torch.no_grad():
        assert torch.equal(y, model(pool[:4]).argmax(1))  # pseudo labels of the model's own forward
    assert (engine.paths["pos.weight"].path == "fast (embedding)") == (reduction == "sliced")


def test_probe_takes_fewer_or_more_samples_than_the_batch_and_one_that_differs_from_the_last() -> None:
    x = torch.tensor([[1.0], [2.0], [1.0]])
    assert probe_positions(x) == ([[2, 1], [1, 2, 1, 2, 1]], True)  # sample 0 equals the last: sample 1 instead
    assert probe_positions(x[:2]) == ([[1, 0, 1], [0, 1, 0]], True)
    assert probe_positions(torch.ones(3, 2)) == ([[2, 0]], False)
    assert probe_positions({"input_ids": torch.ones(2, 4), "scale": torch.tensor(2.0)}) == ([[1, 0, 1]], False)
    assert probe_positions(torch.arange(32.0)[:, None])[0] == [[31, 0, 31], [0, 31, 0]]
    assert probe_positions(torch.arange(6.0)[:, None])[0] == [[5, 0, 5, 0, 5], [0, 5, 0, 5, 0]]
