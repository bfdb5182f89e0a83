"""The token tagger: per-token logits, padding that leaves real tokens' logits alone, checked arguments; and
``TextTransformer``'s padding invariance, which the multi-label WikiANN view relies on."""

from __future__ import annotations

import pytest
import torch

from lightning_dynamical import DynamicAL
from lightning_dynamical.data.wikiann import TAGS
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.models import TextTransformer, TokenTagger
from lightning_dynamical.tasks.tokens import TokenClassification

pytestmark = pytest.mark.usefixtures("one_thread")

def padded(ids: list[list[int]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of the rows, right-padded with id 0 to ``length``."""
    input_ids = torch.zeros(len(ids), length, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, tokens in enumerate(ids):
        input_ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return input_ids, mask


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_logits_are_per_token(depth: int) -> None:
    model = TokenTagger(vocab_size=50, num_tags=7, max_length=12, dim=16, depth=depth, heads=4).eval()
    input_ids, mask = padded([[5, 6, 7], [8, 9, 10, 11, 12]], 12)
    assert model(input_ids, mask).shape == (2, 12, 7)
    assert model(input_ids[:, :5]).shape == (2, 5, 7)  # shorter than max_length, no mask
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 7


def test_padding_does_not_change_real_tokens() -> None:
    torch.manual_seed(0)
    model = TokenTagger(vocab_size=50, num_tags=7, max_length=10, dim=16, depth=2, heads=2).eval()
    short, short_mask = padded([[3, 4, 5]], 3)
    long, long_mask = padded([[3, 4, 5], [6, 7, 8, 9, 10, 11]], 10)
    garbage = long.clone()
    garbage[0, 3:] = torch.arange(20, 27)  # other ids under the padding mask
    expected = model(short, short_mask)[0]
    for ids in (long, garbage):
        torch.testing.assert_close(model(ids, long_mask)[0, :3], expected)
    sentence = TextTransformer(vocab_size=50, num_classes=3, max_length=10, dim=16, depth=1, heads=2).eval()
    torch.testing.assert_close(sentence(garbage, long_mask)[0], sentence(short, short_mask)[0])


def test_arguments_are_checked() -> None:
    with pytest.raises(ConfigError, match="num_tags must be a positive int"):
        TokenTagger(vocab_size=10, num_tags=0)
    with pytest.raises(ConfigError, match=r"dim \(10\) must be divisible by heads \(4\)"):
        TokenTagger(vocab_size=10, num_tags=3, dim=10)
    with pytest.raises(ConfigError, match="depth must be >= 0 and dropout in"):
        TokenTagger(vocab_size=10, num_tags=3, dropout=1.0)
    model = TokenTagger(vocab_size=10, num_tags=3, max_length=4)
    with pytest.raises(ValueError, match="T <= max_length=4, got shape"):
        model(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask \(1, 3\) must match input_ids \(1, 4\)"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 3))


def test_dynamical_scores_the_tagger() -> None:
    """Every parameter is on the fast per-sample gradient path under the token-classification task (dict batch)."""
    model = TokenTagger(vocab_size=20, num_tags=7, max_length=6, dim=8, depth=1, heads=2)
    input_ids, mask = padded([[2, 3, 4], [5, 6, 7, 8, 9, 10]], 6)
    labels = torch.randint(0, 7, (2, 6)).masked_fill(mask == 0, -100)
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    paths = DynamicAL(task=TokenClassification(tags=TAGS)).explain(model, batch)
    assert [p.name for p in paths] == [n for n, _ in model.named_parameters()]
    assert all(p.path.startswith("fast (") for p in paths), [str(p) for p in paths if not p.path.startswith("fast")]
