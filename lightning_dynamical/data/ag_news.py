"""AG News topic classification (4 classes) from its CSV file, encoded with a word vocabulary of the pool.

The file is AG News' own format: rows ``label,title,description`` (an optional header row of those names),
labels 1-4 (World, Sports, Business, Sci/Tech), quoted fields, and backslashes standing for line breaks.
The text of an item is its title and description. No tokenizer is downloaded: :class:`WordVocabulary` is
built from the pool texts only (never the test texts), deterministically (by frequency, ties by word).
"""

from __future__ import annotations

import csv
import html
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.errors import ConfigError, check_positive_int
from lightning_dynamical.tasks.batches import LABEL_KEY

CLASSES = ("World", "Sports", "Business", "Sci/Tech")
HEADER = ["label", "title", "description"]
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[$%&]")
_ENTITY = re.compile(r"#(\d+);")


def read_ag_news_csv(path: str | Path) -> tuple[list[str], Tensor]:
    """Texts (title and description) and 0-based labels of an AG News CSV file; fails on a malformed row."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"AG News CSV not found: {str(path)!r} ({path.resolve()}); set root (and file) to where "
                          "the 'label,title,description' CSV is, e.g. root: ../shared/data with ag_news/test.csv")
    texts: list[str] = []
    labels: list[int] = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        for row in reader:
            if not row or (not texts and [c.strip().lower() for c in row] == HEADER):
                continue
            if len(row) != 3 or row[0].strip() not in ("1", "2", "3", "4"):
                raise ConfigError(f"{path}, line {reader.line_num}: expected 'label,title,description' with a "
                                 f"label in 1-4, got {row[:4]!r}")
            labels.append(int(row[0]) - 1)
            texts.append(f"{row[1]} {row[2]}")
    if not texts:
        raise ConfigError(f"{path} holds no AG News rows")
    return texts, torch.tensor(labels, dtype=torch.long)


def tokenize(text: str) -> list[str]:
    """Lower-cased words, numbers and ``$ % &``; backslashes (line breaks) and HTML entities undone first."""
    text = html.unescape(_ENTITY.sub(lambda m: chr(int(m.group(1))), text.replace("\\", " ")))
    return _TOKEN.findall(text.lower())


class WordVocabulary:
    """Word ids: 0 is padding, 1 an unknown word, then the words in the given order.

    Args:
        words: the known words, most frequent first (ids 2, 3, ...); no repeats.
    """

    PAD = 0
    UNK = 1
    SPECIALS = ("[PAD]", "[UNK]")

    def __init__(self, words: Sequence[str]) -> None:
        self.words = list(words)
        self.ids = {w: i + len(self.SPECIALS) for i, w in enumerate(self.words)}
        if len(self.ids) != len(self.words):
            raise ValueError("the vocabulary's words must be unique")

    @classmethod
    def build(cls, texts: Iterable[str], size: int, min_freq: int = 1) -> WordVocabulary:
        """The ``size - 2`` most frequent words of ``texts`` seen at least ``min_freq`` times (ties by word)."""
        if size <= len(cls.SPECIALS):
            raise ConfigError(f"vocabulary size must be > {len(cls.SPECIALS)} (padding and unknown), got {size}")
        check_positive_int("min_freq", min_freq)
        counts = Counter(w for text in texts for w in tokenize(text))
        ranked = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        return cls(ranked[: size - len(cls.SPECIALS)])

    def __len__(self) -> int:
        return len(self.words) + len(self.SPECIALS)

    def encode(self, texts: Sequence[str], max_length: int) -> tuple[Tensor, Tensor]:
        """``(input_ids, attention_mask)``, both ``(len(texts), max_length)`` int64; truncated, right-padded.

        A text with no tokens becomes one unknown token, so every row attends to something.
        """
        check_positive_int("max_length", max_length)
        ids = torch.full((len(texts), max_length), self.PAD, dtype=torch.long)
        mask = torch.zeros((len(texts), max_length), dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = [self.ids.get(w, self.UNK) for w in tokenize(text)[:max_length]] or [self.UNK]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        return ids, mask


class EncodedTexts(Dataset):
    """Encoded texts whose items are dicts ``{"input_ids", "attention_mask", label_key}`` (Hugging Face style).

    ``targets`` holds the labels (read by class-balanced initial sets without touching the items). ``words``, when
    given, holds the words of each item, ``words[i][k]`` being the word at item ``i``'s ``k``-th real position
    (``attention_mask`` 1), after truncation: what people are shown when they label an item, and what their span
    labels are read back onto (:class:`~lightning_dynamical.oracles.label_studio.LabelStudioOracle` finds it as the
    pool data set's ``words`` attribute, see :func:`~lightning_dynamical.oracles.label_studio.item_words`).

    Raises:
        ValueError: ``input_ids``, ``attention_mask``, ``targets`` (and ``words``) differ in length, or an item's
            words do not number its real positions.
    """

    def __init__(self, input_ids: Tensor, attention_mask: Tensor, targets: Tensor, vocabulary: WordVocabulary,
                 label_key: str = LABEL_KEY, words: Sequence[Sequence[str]] | None = None) -> None:
        if not len(input_ids) == len(attention_mask) == len(targets):
            raise ValueError(f"input_ids ({len(input_ids)}), attention_mask ({len(attention_mask)}) and targets "
                             f"({len(targets)}) differ in length")
        if words is not None:
            if len(words) != len(targets):
                raise ValueError(f"words ({len(words)}) and targets ({len(targets)}) differ in length")
            real = (attention_mask != 0).sum(1).tolist()
            wrong = [i for i, (w, n) in enumerate(zip(words, real)) if len(w) != n]
            if wrong:
                raise ValueError(f"item {wrong[0]} has {len(words[wrong[0]])} words for {real[wrong[0]]} real "
                                 f"positions ({len(wrong)} such items); give one word per real position")
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        self.targets = targets
        self.vocabulary = vocabulary
        self.label_key = label_key
        self.words: list[list[str]] | None = None if words is None else [list(w) for w in words]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i],
                self.label_key: self.targets[i]}


def build_ag_news(
    root: str | Path,
    file: str = "ag_news/test.csv",
    *,
    pool_size: int | None = None,
    test_size: int = 1000,
    vocab_size: int = 8000,
    min_freq: int = 2,
    max_length: int = 64,
    seed: int = 0,
    label_key: str = LABEL_KEY,
) -> DatasetSplits:
    """AG News from ``<root>/<file>``: a seeded split into ``test_size`` test items and a pool.

    The pool holds ``pool_size`` items (all the others when ``None``); the vocabulary (at most
    ``vocab_size`` ids, so ``input_ids < vocab_size``) is built from the pool texts. Items are dicts of
    ``max_length`` token ids, their attention mask and the 0-based label under ``label_key``.
    """
    texts, labels = read_ag_news_csv(Path(root) / file)
    n = len(texts)
    if not 0 < test_size < n:
        raise ConfigError(f"test_size must be in (0, {n}) for the {n} items of {Path(root) / file}, got {test_size}")
    if pool_size is not None and not 0 < pool_size <= n - test_size:
        raise ConfigError(f"pool_size must be None or in (0, {n - test_size}] ({n} items, {test_size} for test), "
                         f"got {pool_size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test = order[:test_size].sort().values
    pool = order[test_size:][:pool_size].sort().values
    vocabulary = WordVocabulary.build((texts[i] for i in pool.tolist()), vocab_size, min_freq)

    def encoded(index: Tensor) -> EncodedTexts:
        ids, mask = vocabulary.encode([texts[i] for i in index.tolist()], max_length)
        return EncodedTexts(ids, mask, labels[index], vocabulary, label_key)

    pool_ds = encoded(pool)
    return DatasetSplits(pool=pool_ds, pool_eval=pool_ds, val=None, test=encoded(test), num_classes=len(CLASSES))
