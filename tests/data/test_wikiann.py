"""WikiANN in its real file format (``en:<token><TAB><tag>``, blank line between sentences): the reader and its
errors, the pool-only vocabulary, padding, the two views of the tags, seeded subsets and the DataModules' tasks.
Tiny files written here stand in for the real ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_dynamical.data import WikiANNMultiLabelDataModule, WikiANNNERDataModule
from lightning_dynamical.data.modules import WikiANNDataModule
from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.data.wikiann import (
    ENTITY_TYPES,
    IGNORE_INDEX,
    TAGS,
    build_vocabulary,
    build_wikiann,
    entity_types,
    read_wikiann,
)
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.tasks.tokens import TokenClassification

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = [
    [("R.H.", "B-ORG"), ("Saunders", "I-ORG"), ("(", "O"), ("968", "O"), (")", "O")],
    [("'", "O"), ("Anders", "B-PER"), ("Lindström", "I-PER")],
    [("Paris", "B-LOC"), ("and", "O"), ("Anders", "B-PER")],
    [("the", "O"), ("the", "O"), ("river", "O")],
]
TEST = [[("Paris", "B-LOC"), ("Zürich", "B-LOC")], [("poolless", "O")]]


def write(path: Path, sentences: list[list[tuple[str, str]]], trailing_blank: bool = True) -> Path:
    """A WikiANN file: ``en:<token>\\t<tag>`` lines, a blank line after each sentence (after the last one too, as
    the real files have, unless ``trailing_blank`` is off)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join("\n".join(f"en:{token}\t{tag}" for token, tag in s) for s in sentences)
    path.write_text(text + ("\n\n" if trailing_blank else "\n"), encoding="utf-8")
    return path


def write_wikiann(root: Path, train: list | None = None, test: list | None = None) -> Path:
    folder = root / "wikiann" / "en"
    write(folder / "train", TRAIN if train is None else train)
    write(folder / "test", TEST if test is None else test)
    return root


def numbered(n: int) -> list[list[tuple[str, str]]]:
    """``n`` one-token sentences, sentence ``k`` holding the word ``wk``."""
    return [[(f"w{k}", "O")] for k in range(n)]


# ---- reader --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trailing_blank", [True, False])
def test_reads_sentences_and_strips_the_prefix(tmp_path: Path, trailing_blank: bool) -> None:
    path = write(tmp_path / "train", TRAIN, trailing_blank)
    assert path.read_text(encoding="utf-8").startswith("en:R.H.\tB-ORG\nen:Saunders\tI-ORG\n")
    sentences = read_wikiann(path)
    assert [s.tokens for s in sentences] == [[token for token, _ in s] for s in TRAIN]
    assert [[TAGS[t] for t in s.tags] for s in sentences] == [[tag for _, tag in s] for s in TRAIN]
    assert TAGS == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")


def test_repeated_blank_lines_and_crlf_do_not_make_empty_sentences(tmp_path: Path) -> None:
    path = tmp_path / "train"
    path.write_bytes(b"\r\n\r\nen:a\tO\r\nen:b:c\tB-LOC\r\n\r\n\r\n\r\nen:d\tI-LOC\r\n")
    assert [tuple(s) for s in read_wikiann(path)] == [(["a", "b:c"], [0, 5]), (["d"], [6])]


@pytest.mark.parametrize(("line", "number", "match"), [
    ("en:Paris B-LOC", 4, "expected 'en:<token><TAB><tag>'"),   # a space, not a tab
    ("Paris\tB-LOC", 4, "expected 'en:<token><TAB><tag>'"),     # no prefix
    ("en:\tO", 4, "expected 'en:<token><TAB><tag>'"),           # no token
    ("en:a\tO\tX", 4, "expected 'en:<token><TAB><tag>'"),       # three fields
    ("en:Paris\tB-GPE", 4, "unknown tag 'B-GPE'; allowed: O, B-PER"),
])
def test_malformed_lines_name_the_file_and_line(tmp_path: Path, line: str, number: int, match: str) -> None:
    path = tmp_path / "train"
    path.write_text(f"en:a\tO\n\nen:b\tO\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{path}:{number}: {match}"):
        read_wikiann(path)


def test_missing_and_empty_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"WikiANN file not found: '.*wikiann/en/train'.*set root"):
        build_wikiann(tmp_path)
    (tmp_path / "empty").write_text("\n\n")
    with pytest.raises(ConfigError, match="empty holds no WikiANN sentences"):
        read_wikiann(tmp_path / "empty")


# ---- vocabulary and views ------------------------------------------------------------------------------
def test_vocabulary_comes_from_the_pool_only(tmp_path: Path) -> None:
    splits = build_wikiann(write_wikiann(tmp_path), vocab_size=100)
    vocabulary = splits.pool.vocabulary
    assert vocabulary.words[:2] == ["Anders", "the"]  # by frequency, ties by word
    assert "Zürich" not in vocabulary.ids and "poolless" not in vocabulary.ids and "Paris" in vocabulary.ids
    assert splits.test[0]["input_ids"][:2].tolist() == [vocabulary.ids["Paris"], vocabulary.UNK]
    assert len(build_wikiann(tmp_path, vocab_size=5).pool.vocabulary) == 5  # PAD, UNK and the 3 most frequent
    lower = build_vocabulary([["The", "the", "THE", "x"]], 10, lowercase=True)
    assert lower.words == ["the", "x"]
    assert build_vocabulary([["a", "a", "b"]], 10, min_freq=2).words == ["a"]
    with pytest.raises(ConfigError, match="vocab_size must be an int > 2"):
        build_wikiann(tmp_path, vocab_size=2)


def test_ner_items_are_padded_with_ignored_tags_and_truncated(tmp_path: Path) -> None:
    splits = build_wikiann(write_wikiann(tmp_path), "ner", max_length=4)
    assert splits.num_classes == len(TAGS) == 7 and splits.val is None and splits.pool_eval is splits.pool
    item = splits.pool[1]  # ' Anders Lindström
    assert sorted(item) == ["attention_mask", "input_ids", "labels"]
    assert all(v.dtype == torch.int64 and v.shape == (4,) for v in item.values())
    assert item["attention_mask"].tolist() == [1, 1, 1, 0]
    assert item["labels"].tolist() == [0, TAGS.index("B-PER"), TAGS.index("I-PER"), IGNORE_INDEX]
    assert item["input_ids"][3] == 0
    first = splits.pool[0]  # five tokens, truncated to four
    assert first["attention_mask"].tolist() == [1, 1, 1, 1] and first["labels"].tolist() == [3, 4, 0, 0]
    assert len(splits.pool) == 4 and len(splits.test) == 2


def test_multilabel_items_say_which_entity_types_a_sentence_holds(tmp_path: Path) -> None:
    splits = build_wikiann(write_wikiann(tmp_path), "multilabel", max_length=4)
    assert splits.num_classes == len(ENTITY_TYPES) == 3 and ENTITY_TYPES == ("PER", "ORG", "LOC")
    labels = torch.stack([splits.pool[i]["labels"] for i in range(len(splits.pool))])
    assert labels.dtype == torch.float32
    assert labels.tolist() == [[0, 1, 0], [1, 0, 0], [1, 0, 1], [0, 0, 0]]
    assert splits.pool[1]["attention_mask"].tolist() == [1, 1, 1, 0]
    # Derived from the tags the model sees: an entity past max_length is not counted.
    assert entity_types(torch.tensor([[0, 2, -100], [6, 0, 0]])).tolist() == [[1, 0, 0], [0, 0, 1]]
    cut = build_wikiann(write_wikiann(tmp_path, train=[[("a", "O"), ("b", "O"), ("Paris", "B-LOC")]]),
                        "multilabel", max_length=2)
    assert cut.pool[0]["labels"].tolist() == [0, 0, 0]


def test_subsets_are_seeded_and_in_file_order(tmp_path: Path) -> None:
    write_wikiann(tmp_path, train=numbered(30), test=numbered(20))

    def pool_words(splits: DatasetSplits) -> list[str]:
        return [splits.pool.vocabulary.words[int(i) - 2] for i in splits.pool.input_ids[:, 0]]

    a, b, c = (build_wikiann(tmp_path, pool_size=10, test_size=5, seed=seed) for seed in (0, 0, 1))
    assert len(pool_words(a)) == 10 and pool_words(a) == sorted(pool_words(a), key=lambda w: int(w[1:]))
    assert pool_words(a) == pool_words(b) != pool_words(c)
    assert len(a.test) == 5 and torch.equal(a.test.input_ids, b.test.input_ids)
    every = build_wikiann(tmp_path)
    assert pool_words(every) == [f"w{k}" for k in range(30)] and len(every.test) == 20
    with pytest.raises(ConfigError, match=r"pool_size must be null or at most the 30 sentences of .*train, got 31"):
        build_wikiann(tmp_path, pool_size=31)
    with pytest.raises(ConfigError, match="test_size must be null or a positive int"):
        build_wikiann(tmp_path, test_size=0)
    with pytest.raises(ConfigError, match="task must be one of 'ner', 'multilabel'; got 'pos'"):
        build_wikiann(tmp_path, "pos")  # type: ignore[arg-type]


# ---- DataModules -------------------------------------------------------------------------------------
def test_multilabel_datamodule(tmp_path: Path) -> None:
    dm = WikiANNMultiLabelDataModule(root=str(write_wikiann(tmp_path)), initial_size=2, batch_size=2, max_length=6)
    dm.setup("fit")
    assert dm.task.name == "multi-label" and dm.num_classes == 3 and len(dm.labeled_indices) == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["labels"].shape == (2, 3) and batch["input_ids"].shape == (2, 6)


def test_ner_datamodule(tmp_path: Path) -> None:
    dm = WikiANNNERDataModule(root=str(write_wikiann(tmp_path)), initial_size=2, batch_size=2, max_length=6)
    dm.setup("fit")
    assert isinstance(dm.task, TokenClassification) and dm.task.name == "token classification"
    assert dm.task.tags == TAGS and dm.task.metric_name == "entity_f1" and dm.num_classes == 7
    batch = next(iter(dm.train_dataloader()))
    assert batch["labels"].shape == batch["input_ids"].shape == (2, 6)


def test_datamodules_refuse_balanced_and_the_base_refuses_to_build(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="balanced"):
        WikiANNMultiLabelDataModule(root=str(tmp_path), balanced=True)
    with pytest.raises(ConfigError, match="WikiANNDataModule picks no view of WikiANN"):
        WikiANNDataModule(root=str(tmp_path))
    ner = WikiANNNERDataModule(root=str(tmp_path))
    assert ner.task.name == "token classification" and ner.task.tags == TAGS and ner.task.metric_name == "entity_f1"
    assert WikiANNMultiLabelDataModule(root=str(tmp_path)).task.name == "multi-label"


def test_items_keep_their_truncated_words(tmp_path: Path) -> None:
    for view in ("ner", "multilabel"):
        splits = build_wikiann(write_wikiann(tmp_path), view, max_length=4)
        assert splits.pool.words == [["R.H.", "Saunders", "(", "968"], ["'", "Anders", "Lindström"],
                                     ["Paris", "and", "Anders"], ["the", "the", "river"]]
        assert splits.test.words == [["Paris", "Zürich"], ["poolless"]]
        assert [len(w) for w in splits.pool.words] == splits.pool.attention_mask.sum(1).tolist()
