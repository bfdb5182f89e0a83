"""WikiANN named-entity recognition (Pan et al., 2017) from its CoNLL-style files, as token ids with a word vocabulary
of the pool.

A file holds one token per line, ``<language>:<token><TAB><tag>`` (``en:Paris<TAB>B-LOC``), and a blank line between
sentences; the tags are IOB2 over persons, organisations and locations (:data:`TAGS`). The same annotations give two
views: token classification (a tag per token, ``-100`` at padding) and multi-label classification (which entity types
a sentence mentions). Nothing is downloaded; the vocabulary comes from the pool sentences only (never the test ones),
deterministically (by frequency, ties by word), so test words outside the pool are unknown, as they would be in use.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from lightning_dynamical.data.ag_news import EncodedTexts, WordVocabulary
from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.errors import ConfigError, check_choice, check_optional_positive_int, check_positive_int
from lightning_dynamical.tasks.batches import LABEL_KEY

TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
"""The IOB2 tags; a tag's index is its class in the token-classification view."""
ENTITY_TYPES = ("PER", "ORG", "LOC")
"""The entity types; a type's index is its label in the multi-label view."""
IGNORE_INDEX = -100
"""The target of padding positions (left out of the token-classification loss and metrics)."""
WikiANNView = Literal["ner", "multilabel"]
VIEWS: tuple[WikiANNView, ...] = ("ner", "multilabel")
_TAG_IDS = {tag: i for i, tag in enumerate(TAGS)}
# Tag index -> entity-type index (-1 for O).
_TAG_TYPE = torch.tensor([-1 if tag == "O" else ENTITY_TYPES.index(tag[2:]) for tag in TAGS])


class Sentence(NamedTuple):
    """One sentence: its tokens and their tags (indices into :data:`TAGS`)."""

    tokens: list[str]
    tags: list[int]


def read_wikiann(path: str | Path, language: str = "en") -> list[Sentence]:
    """The sentences of a WikiANN file, the ``<language>:`` prefix stripped from every token.

    Raises:
        ConfigError: the file is missing (naming the path), a line is not ``<language>:<token><TAB><tag>``, a tag is
            not one of :data:`TAGS` (both naming ``file:line``), or the file holds no sentence.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"WikiANN file not found: {str(path)!r} ({path.resolve()}); set root to the folder that "
                          f"holds wikiann/{language}/train and wikiann/{language}/test, e.g. root: ../shared/data")
    prefix = f"{language}:"
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[int] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                if tokens:
                    sentences.append(Sentence(tokens, tags))
                    tokens, tags = [], []
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0].startswith(prefix) or len(fields[0]) == len(prefix):
                raise ConfigError(f"{path}:{number}: expected '{prefix}<token><TAB><tag>', got {line[:80]!r}")
            tag = fields[1].strip()
            if tag not in _TAG_IDS:
                raise ConfigError(f"{path}:{number}: unknown tag {tag!r}; allowed: {', '.join(TAGS)}")
            tokens.append(fields[0][len(prefix):])
            tags.append(_TAG_IDS[tag])
    if tokens:
        sentences.append(Sentence(tokens, tags))
    if not sentences:
        raise ConfigError(f"{path} holds no WikiANN sentences")
    return sentences


def build_vocabulary(sentences: Iterable[Sequence[str]], size: int, min_freq: int = 1,
                     lowercase: bool = False) -> WordVocabulary:
    """The ``size - 2`` most frequent words of ``sentences`` seen at least ``min_freq`` times (ties by word), after
    ``lowercase`` when set; ids 0 and 1 are padding and unknown."""
    _check_vocabulary(size, min_freq)
    counts = Counter(w.lower() if lowercase else w for tokens in sentences for w in tokens)
    ranked = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return WordVocabulary(ranked[: size - len(WordVocabulary.SPECIALS)])


def _check_vocabulary(size: int, min_freq: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size <= len(WordVocabulary.SPECIALS):
        raise ConfigError(f"vocab_size must be an int > {len(WordVocabulary.SPECIALS)} (padding and unknown), "
                          f"got {size!r}")
    check_positive_int("min_freq", min_freq)


def encode_sentences(sentences: Sequence[Sentence], vocabulary: WordVocabulary, max_length: int,
                     lowercase: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """``(input_ids, attention_mask, tags)``, each ``(len(sentences), max_length)`` int64: sentences truncated to
    ``max_length`` tokens and right-padded (id 0, mask 0, tag :data:`IGNORE_INDEX`)."""
    check_positive_int("max_length", max_length)
    shape = (len(sentences), max_length)
    ids = torch.full(shape, WordVocabulary.PAD, dtype=torch.long)
    mask = torch.zeros(shape, dtype=torch.long)
    tags = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    for row, (tokens, sentence_tags) in enumerate(sentences):
        n = min(len(tokens), max_length)
        ids[row, :n] = torch.tensor([vocabulary.ids.get(w.lower() if lowercase else w, WordVocabulary.UNK)
                                     for w in tokens[:n]])
        mask[row, :n] = 1
        tags[row, :n] = torch.tensor(sentence_tags[:n])
    return ids, mask, tags


def entity_types(tags: Tensor) -> Tensor:
    """``(N, 3)`` float32 0/1: which of :data:`ENTITY_TYPES` the (encoded, so truncated) sentences tag at least once.

    ``tags`` is ``(N, T)`` tag indices, :data:`IGNORE_INDEX` at padding.
    """
    types = _TAG_TYPE[tags.clamp_min(0)].masked_fill(tags < 0, -1)
    return torch.stack([(types == k).any(1) for k in range(len(ENTITY_TYPES))], 1).float()


def _subset(sentences: list[Sentence], size: int | None, seed: int, name: str, path: Path) -> list[Sentence]:
    """A seeded subset of ``size`` sentences in file order (all of them for ``None``)."""
    if size is None:
        return sentences
    if size > len(sentences):
        raise ConfigError(f"{name} must be null or at most the {len(sentences)} sentences of {path}, got {size}")
    keep = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    return [sentences[i] for i in keep.tolist()]


def build_wikiann(
    root: str | Path,
    task: WikiANNView = "ner",
    *,
    pool_size: int | None = None,
    test_size: int | None = None,
    vocab_size: int = 20000,
    min_freq: int = 1,
    max_length: int = 32,
    lowercase: bool = False,
    language: str = "en",
    seed: int = 0,
    label_key: str = LABEL_KEY,
) -> DatasetSplits:
    """WikiANN from ``<root>/wikiann/<language>/``: the pool from ``train``, the test set from ``test`` (``dev`` is
    not read; ``val`` is ``None``, the DataModule can hold out part of the pool).

    ``pool_size``/``test_size`` keep seeded subsets of the sentences (``None``: all), for CPU-sized runs. The
    vocabulary (at most ``vocab_size`` ids, so ``input_ids < vocab_size``) is built from the pool sentences. Items
    are dicts of ``max_length`` token ids, their attention mask and, under ``label_key``, for ``task="ner"`` the
    ``(max_length,)`` int64 tag indices (:data:`TAGS`; :data:`IGNORE_INDEX` at padding, 7 classes), for
    ``task="multilabel"`` the ``(3,)`` float32 0/1 entity types present (:data:`ENTITY_TYPES`, 3 labels). Tokens past
    ``max_length`` are dropped from both views. The data sets keep each sentence's (truncated) tokens as their
    ``words`` (:class:`~lightning_dynamical.data.ag_news.EncodedTexts`), so people can be shown the sentences.
    """
    check_choice("task", task, VIEWS)
    check_positive_int("max_length", max_length)
    check_optional_positive_int("pool_size", pool_size)
    check_optional_positive_int("test_size", test_size)
    _check_vocabulary(vocab_size, min_freq)
    folder = Path(root) / "wikiann" / language
    train = read_wikiann(folder / "train", language)
    test = read_wikiann(folder / "test", language)
    pool = _subset(train, pool_size, seed, "pool_size", folder / "train")
    test = _subset(test, test_size, seed + 1, "test_size", folder / "test")
    vocabulary = build_vocabulary((s.tokens for s in pool), vocab_size, min_freq, lowercase)

    def encoded(sentences: list[Sentence]) -> EncodedTexts:
        ids, mask, tags = encode_sentences(sentences, vocabulary, max_length, lowercase)
        return EncodedTexts(ids, mask, tags if task == "ner" else entity_types(tags), vocabulary, label_key,
                            words=[s.tokens[:max_length] for s in sentences])

    pool_ds = encoded(pool)
    return DatasetSplits(pool=pool_ds, pool_eval=pool_ds, val=None, test=encoded(test),
                         num_classes=len(TAGS) if task == "ner" else len(ENTITY_TYPES))
