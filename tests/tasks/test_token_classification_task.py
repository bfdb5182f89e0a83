"""Token classification as a task: its loss and closed-form gradient against formulas written here, pseudo targets
at the real tokens only, token accuracy against a hand count, entity F1 against seqeval (random and malformed IOB2
sequences), its checks and refusals, and the label encoding."""

from __future__ import annotations

import random
import warnings

import pytest
import torch

from lightning_dynamical import ConfigError
from lightning_dynamical.tasks import EntityF1, Segmentation, TokenClassification, task_of
from lightning_dynamical.tasks.tokens import iob2

IGNORE = -100
TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC-X", "I-MISC-X")  # a type holding a dash, as seqeval reads it


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 6, 4, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, 4, (3, 6), generator=gen)
    targets[0, 3:] = IGNORE  # sample 0: 3 of 6 tokens labeled
    targets[1, ::2] = IGNORE  # sample 1: sub-word pieces unlabeled
    targets[2] = IGNORE  # sample 2: no labeled token
    return logits, targets


def test_loss_is_the_sum_over_samples_of_the_mean_over_labeled_tokens():
    logits, targets = _batch()
    expected = torch.zeros((), dtype=torch.float64)
    for i in range(3):
        valid = targets[i] != IGNORE
        if valid.any():
            log_p = logits[i][valid].log_softmax(-1)  # (tokens, C)
            expected = expected - log_p.gather(1, targets[i][valid].unsqueeze(1)).mean()
    torch.testing.assert_close(TokenClassification().loss(logits, targets), expected, rtol=1e-12, atol=1e-12)


def test_closed_form_output_gradient_equals_autograd_and_rows_are_per_sample():
    task = TokenClassification()
    logits, targets = _batch(1)
    z = logits.clone().requires_grad_()
    auto = torch.autograd.grad(task.loss(z, targets), z)[0]
    torch.testing.assert_close(task.output_gradient(logits, targets), auto, rtol=1e-12, atol=1e-14)
    assert torch.equal(auto[2], torch.zeros_like(auto[2]))  # a sample without labeled tokens has no gradient
    assert torch.equal(auto[0, 3:], torch.zeros_like(auto[0, 3:]))  # nor have its unlabeled tokens
    one = torch.autograd.grad(task.loss(z[:1], targets[:1]), z)[0][0]
    torch.testing.assert_close(auto[0], one, rtol=1e-12, atol=1e-14)


def test_pseudo_targets_are_the_argmax_at_the_real_tokens():
    task = TokenClassification()
    logits, _ = _batch(2)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    assert torch.equal(task.pseudo_targets(logits), logits.argmax(-1))
    masked = task.batch_pseudo_targets(logits, {"input_ids": torch.zeros(3, 6).long(), "attention_mask": mask})
    assert torch.equal(masked, logits.argmax(-1).where(mask.bool(), IGNORE))
    assert torch.equal(TokenClassification(ignore_index=7, mask_key="m").batch_pseudo_targets(logits, {"m": mask}),
                       logits.argmax(-1).where(mask.bool(), 7))
    for unmasked in (torch.zeros(3, 6), (torch.zeros(3, 6),), {"input_ids": torch.zeros(3, 6)}, None):
        assert torch.equal(task.batch_pseudo_targets(logits, unmasked), logits.argmax(-1))  # every token real
    with pytest.raises(ValueError, match=r"mask 'attention_mask' must have the logits' \(batch, tokens\) shape "
                                         r"\(3, 6\); got \(3, 5\)"):
        task.batch_pseudo_targets(logits, {"attention_mask": mask[:, :5]})


def test_token_accuracy_over_labeled_tokens_and_classes_last():
    task = TokenClassification()
    logits, targets = _batch(3)
    assert task.classes_of(logits) == 4 and task.metric_inputs(logits).shape == (3, 4, 6)
    accuracy = task.accuracy(4)
    accuracy.update(task.metric_inputs(logits), task.metric_targets(targets))
    valid = targets != IGNORE
    expected = (logits.argmax(-1)[valid] == targets[valid]).double().mean()
    torch.testing.assert_close(accuracy.compute().double(), expected, rtol=1e-6, atol=1e-6)


def _tags(t: torch.Tensor, keep: torch.Tensor) -> list[list[str]]:
    return [[TAGS[int(v)] for v, k in zip(row, kept) if k] for row, kept in zip(t, keep)]


def test_entity_f1_equals_seqeval_on_random_and_malformed_sequences():
    """Random tags are mostly malformed IOB2 (I- after O, types switching inside a span): seqeval's default mode
    decides those, and the metric must agree, batch after batch (accumulated), with ignored tokens dropped first."""
    seqeval = pytest.importorskip("seqeval.metrics")
    gen = torch.Generator().manual_seed(0)
    rng = random.Random(0)
    for trial in range(60):
        metric = EntityF1(TAGS)
        true_all: list[list[str]] = []
        pred_all: list[list[str]] = []
        for _ in range(rng.randint(1, 3)):
            b, t = rng.randint(1, 4), rng.randint(1, 9)
            target = torch.randint(0, len(TAGS), (b, t), generator=gen)
            target[torch.rand(b, t, generator=gen) < 0.25] = IGNORE
            logits = torch.randn(b, len(TAGS), t, generator=gen)
            pred = logits.argmax(1) if trial % 2 else torch.randint(0, len(TAGS), (b, t), generator=gen)
            metric.update(logits if trial % 2 else pred, target)
            keep = target != IGNORE
            true_all += _tags(target, keep)
            pred_all += _tags(pred, keep)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # seqeval warns when there is no entity
            expected = seqeval.f1_score(true_all, pred_all, zero_division=0)
        assert float(metric.compute()) == pytest.approx(expected, abs=1e-6), (true_all, pred_all)


@pytest.mark.parametrize(("true", "pred", "f1"), [
    (["B-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"], 1.0),
    (["B-PER", "I-PER", "O"], ["B-PER", "O", "O"], 0.0),  # spans must match exactly
    (["I-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"], 1.0),  # an I- without B- begins an entity (default mode)
    (["B-PER", "I-LOC"], ["B-PER", "B-LOC"], 1.0),  # a change of type ends one entity and begins another
    (["B-PER", "B-PER"], ["B-PER", "I-PER"], 0.0),  # two entities against one
    (["O", "O"], ["O", "O"], 0.0),  # no entity at all: 0, as seqeval's zero division
])
def test_entity_f1_by_hand(true, pred, f1):
    metric = EntityF1(TAGS)
    metric.update(torch.tensor([[TAGS.index(t) for t in pred]]), torch.tensor([[TAGS.index(t) for t in true]]))
    assert float(metric.compute()) == pytest.approx(f1)


def test_entity_f1_reads_spans_over_labeled_tokens_only():
    """Unlabeled sub-word pieces between a B- and its I- do not split the entity (they are dropped first)."""
    metric = EntityF1(TAGS)
    target = torch.tensor([[1, IGNORE, 2, 0]])
    metric.update(torch.tensor([[1, 0, 2, 0]]), target)
    assert float(metric.compute()) == 1.0


def test_tags_are_iob2_and_name_the_headline_metric(recwarn):
    assert TokenClassification(tags=list(TAGS)).tags == TAGS  # a config's list becomes a (hashable) tuple
    assert iob2(("O", "B-A", "I-A", "I-B")) == ([0, 1, 2, 2], [-1, 0, 0, 1])
    for bad in ("B-", "X-PER", "b-PER", "E-PER", "S-LOC", "PER"):
        with pytest.raises(ConfigError, match=rf"must be IOB2 tags .* got '{bad}' at index 1"):
            TokenClassification(tags=("O", bad))
    with_tags = TokenClassification(tags=TAGS)
    assert with_tags.metric_name == "entity_f1" and isinstance(with_tags.metric(len(TAGS)), EntityF1)
    with pytest.raises(ConfigError, match="has 7 tags for a model with 5 classes"):
        with_tags.metric(5)
    without = TokenClassification()
    assert without.metric_name == "acc"
    with pytest.warns(UserWarning, match="token accuracy is the headline metric"):
        assert without.metric(5) is None


def test_targets_and_outputs_of_the_wrong_shape_are_refused_in_one_line():
    task = TokenClassification()
    logits = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match=r"token classification task needs targets of shape \(2, 5\).*got \(2, 4\)"):
        task.prepare_targets(torch.zeros(2, 4, dtype=torch.long), logits)
    with pytest.raises(ValueError, match=r"got \(2, 5\) float"):
        task.prepare_targets(torch.zeros(2, 5), logits)
    with pytest.raises(ValueError, match=r"logits of shape \(batch, tokens, classes\).*got \(2, 3\)"):
        task.check_output(torch.zeros(2, 3))
    assert task.target_problem(torch.zeros(2, 5)) is not None  # float tags
    assert task.target_problem(torch.zeros(2, dtype=torch.long)) is not None  # one class per sample
    assert task.target_problem(torch.zeros(2, 5, dtype=torch.long)) is None


def test_labels_follow_the_input_length_and_may_hold_ignore_index():
    task = TokenClassification()
    assert task.label_from_input and task.label_shape(torch.zeros(9, dtype=torch.long)) == (9,)
    good = torch.tensor([0, 2, IGNORE, 1])
    assert task.label_problem(good, 3, (4,)) is None
    assert "shape (4,), expected (5,)" in task.label_problem(good, 3, (5,))
    assert "classes outside 0..1" in task.label_problem(good, 2, (4,))
    text = task.encode_label(good)
    assert isinstance(text, str) and torch.equal(task.decode_label(text), good)


def test_batches_of_different_lengths_are_joined_padded_with_ignore_index():
    task = TokenClassification()
    joined = task.concat_targets([torch.tensor([[1, 2]]), torch.tensor([[3, 4, 5], [6, 7, 8]])])
    assert torch.equal(joined, torch.tensor([[1, 2, IGNORE], [3, 4, 5], [6, 7, 8]]))
    same = [torch.ones(2, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)]
    assert torch.equal(task.concat_targets(same), torch.cat(same))


def test_task_by_name_and_equality():
    assert task_of("token_classification") == TokenClassification()
    assert TokenClassification() != Segmentation() and TokenClassification(tags=TAGS) != TokenClassification()
    assert hash(TokenClassification(tags=list(TAGS))) == hash(TokenClassification(tags=TAGS))
    assert repr(Segmentation()) == "Segmentation(ignore_index=-100)"
