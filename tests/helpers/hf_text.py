"""A Hugging Face style task for the tests: dict samples (``input_ids``, ``attention_mask``, ``labels``) and a
LightningModule around a tiny, randomly initialised ``BertForSequenceClassification``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch.utils.data import Dataset

from lightning_dynamical import ActiveLearningDataModule

if TYPE_CHECKING:
    from transformers import BertForSequenceClassification

VOCAB, SEQ, CLASSES = 30, 8, 3


class TokenDataset(Dataset):
    """Token sequences whose class is signalled by which token range dominates; padded, with a mask."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % CLASSES
        lengths = torch.randint(3, SEQ + 1, (n,), generator=gen)
        base = 1 + 9 * self.labels[:, None] + torch.randint(0, 9, (n, SEQ), generator=gen)
        noise = torch.randint(1, VOCAB, (n, SEQ), generator=gen)
        ids = torch.where(torch.rand(n, SEQ, generator=gen) < 0.7, base, noise)
        self.mask = (torch.arange(SEQ) < lengths[:, None]).long()
        self.ids = ids * self.mask

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def token_datamodule(n: int, test_size: int, **options: Any) -> ActiveLearningDataModule:
    """An ``ActiveLearningDataModule`` over ``n`` :class:`TokenDataset` samples (seed 0) and ``test_size`` test ones."""
    return ActiveLearningDataModule(TokenDataset(n, 0), test=TokenDataset(test_size, 1), **options)


def tiny_bert() -> BertForSequenceClassification:
    """A randomly initialised one-layer BERT (width 16) for :class:`TokenDataset`'s vocabulary, length and classes."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=SEQ, num_labels=CLASSES)
    return BertForSequenceClassification(config)


class HFClassifier(L.LightningModule):
    """What a user of transformers writes: ``forward(**inputs)`` returns the model's ``ModelOutput``."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.model = tiny_bert()
        self.lr = lr

    def forward(self, **inputs: torch.Tensor):
        return self.model(**inputs)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.model(**batch).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)
