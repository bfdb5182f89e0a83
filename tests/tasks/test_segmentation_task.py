"""Segmentation as a task: its loss and closed-form gradient against formulas written here, its metrics against a
hand count, its label checks, and the label encoding of state files and al_queries.csv."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_dynamical import ConfigError
from lightning_dynamical.tasks import Segmentation, TokenClassification, task_of
from lightning_dynamical.tasks.base import decode_tensor, encode_tensor

IGNORE = 255


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 3, 4, 5, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, 3, (3, 4, 5), generator=gen)
    targets[0, :2] = IGNORE  # sample 0: 10 of 20 pixels unlabeled
    targets[2] = IGNORE  # sample 2: no labeled pixel
    return logits, targets


def test_loss_is_the_sum_over_samples_of_the_mean_over_labeled_pixels():
    task = Segmentation(ignore_index=IGNORE)
    logits, targets = _batch()
    expected = torch.zeros((), dtype=torch.float64)
    for i in range(3):
        valid = targets[i] != IGNORE
        if valid.any():
            log_p = logits[i].log_softmax(0).permute(1, 2, 0)[valid]  # (P, C)
            expected = expected - log_p.gather(1, targets[i][valid].unsqueeze(1)).mean()
    torch.testing.assert_close(task.loss(logits, targets), expected, rtol=1e-12, atol=1e-12)


def test_closed_form_output_gradient_equals_autograd_and_rows_are_per_sample():
    task = Segmentation(ignore_index=IGNORE)
    logits, targets = _batch(1)
    z = logits.clone().requires_grad_()
    auto = torch.autograd.grad(task.loss(z, targets), z)[0]
    torch.testing.assert_close(task.output_gradient(logits, targets), auto, rtol=1e-12, atol=1e-14)
    assert torch.equal(auto[2], torch.zeros_like(auto[2]))  # a sample without labeled pixels has no gradient
    one = torch.autograd.grad(task.loss(z[:1], targets[:1]), z)[0][0]
    torch.testing.assert_close(auto[0], one, rtol=1e-12, atol=1e-14)


def test_pseudo_targets_are_the_per_pixel_argmax():
    logits, _ = _batch(2)
    assert torch.equal(Segmentation().pseudo_targets(logits), logits.argmax(1))


def test_metrics_are_pixel_accuracy_and_mean_iou_over_labeled_pixels():
    task = Segmentation(ignore_index=IGNORE)
    logits, targets = _batch(3)
    pred, valid = logits.argmax(1), targets != IGNORE
    accuracy, miou = task.accuracy(3), task.metric(3)
    accuracy.update(logits, targets)
    miou.update(logits, targets)
    expected_acc = (pred[valid] == targets[valid]).double().mean()
    ious = [((pred[valid] == c) & (targets[valid] == c)).sum() / ((pred[valid] == c) | (targets[valid] == c)).sum()
            for c in range(3)]
    torch.testing.assert_close(accuracy.compute().double(), expected_acc, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(miou.compute().double(), torch.stack(ious).double().mean(), rtol=1e-6, atol=1e-6)
    assert task.metric_name == "miou"


def test_targets_and_outputs_of_the_wrong_shape_are_refused_in_one_line():
    task = Segmentation()
    logits = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"segmentation task needs targets of shape \(2, 4, 4\).*got \(2, 4, 5\)"):
        task.prepare_targets(torch.zeros(2, 4, 5, dtype=torch.long), logits)
    with pytest.raises(ValueError, match=r"logits of shape \(batch, classes, height, width\).*got \(2, 3\)"):
        task.check_output(torch.zeros(2, 3))
    assert task.target_problem(torch.zeros(2, 4, 4)) is not None  # float masks
    assert task.target_problem(torch.zeros(2, dtype=torch.long)) is not None  # one class per sample
    assert task.target_problem(torch.zeros(2, 4, 4, dtype=torch.long)) is None


def test_label_problems_name_size_class_and_dtype():
    task = Segmentation(ignore_index=IGNORE)
    assert task.label_shape(torch.zeros(1, 6, 7)) == (6, 7)
    good = torch.tensor([[0, 1], [IGNORE, 2]])
    assert task.label_problem(good, 3, (2, 2)) is None
    assert "shape (2, 2), expected (3, 3)" in task.label_problem(good, 3, (3, 3))
    assert "classes outside 0..1" in task.label_problem(good, 2, (2, 2))
    assert "dtype float" in task.label_problem(good.double(), 3, (2, 2))


def test_encoded_labels_round_trip_exactly_and_classes_stay_ints():
    mask = torch.randint(0, 4, (13, 9), generator=torch.Generator().manual_seed(4))
    mask[0, 0] = -100
    text = Segmentation().encode_label(mask)
    assert isinstance(text, str) and text.startswith("13x9:") and "\n" not in text and "," not in text
    assert torch.equal(Segmentation().decode_label(text), mask)
    assert task_of("classification").encode_label(torch.tensor(3)) == 3
    assert task_of("classification").decode_label(3) == 3
    assert torch.equal(decode_tensor(encode_tensor(torch.zeros(0, 4, dtype=torch.long))), torch.zeros(0, 4).long())
    with pytest.raises(ValueError, match="not an encoded label tensor"):
        decode_tensor("4x4:not-base64!")


def test_tasks_by_name():
    assert task_of("segmentation") == Segmentation()
    assert task_of(Segmentation(ignore_index=3)).ignore_index == 3
    with pytest.raises(ConfigError, match="task must be one of .*'segmentation'.* got 'detection'"):
        task_of("detection")


def test_a_training_step_loss_matches_the_mean_of_per_sample_losses():
    task = Segmentation()
    net = nn.Conv2d(1, 2, 1).double()
    x = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (4, 3, 3))
    per_sample = torch.stack([task.loss(net(x[i:i + 1]), y[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(task.loss(net(x), y) / 4, per_sample.mean())


def test_queries_with_masks_larger_than_the_csv_field_limit_read_back(tmp_path):
    from lightning_dynamical.records.queries import read_queries, write_round

    big = Segmentation().encode_label(torch.randint(0, 21, (512, 512), generator=torch.Generator().manual_seed(0)))
    assert len(big) > 131_072
    write_round(str(tmp_path), 0, [{"round": 0, "index": 1, "score": 1.0, "pseudo_label": big, "label": big,
                                    "labeled_by": "dataset"}])
    write_round(str(tmp_path), 1, [])
    assert read_queries(str(tmp_path))[0]["label"] == big


def test_soft_labels_encode_exactly():
    for label in (torch.tensor([0.9, 0.1, 0.6]), torch.tensor(0.25), torch.tensor([[0.5, 1.0], [2.0, 0.0]])):
        text = Segmentation().encode_label(label)
        assert ":float64:" in text
        assert torch.equal(Segmentation().decode_label(text), label.double())
    assert Segmentation().encode_label(torch.tensor(3.0)) == 3  # integral: a class, as before


@pytest.mark.parametrize("task", [Segmentation(ignore_index=0), TokenClassification(ignore_index=2)])
def test_an_ignore_index_among_the_classes_is_refused(task):
    shape = (2, 3, 4, 4) if isinstance(task, Segmentation) else (2, 4, 3)
    with pytest.raises(ValueError, match=rf"ignore_index={task.ignore_index} is one of the model's 3 classes"):
        task.check_output(torch.randn(*shape))
    with pytest.raises(ConfigError, match="ignore_index must be an int, got 1.5"):
        type(task)(ignore_index=1.5)
