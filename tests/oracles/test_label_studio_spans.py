"""LabelStudioOracle for token classification (NER) against a real Label Studio server: a span project over the
sentences' words, the model's entities preselected, annotators' spans back as the IOB2 tags trained on; and, without
a server, the span <-> tag conversions with their refusals."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch import seed_everything
from torch.utils.data import Subset

from lightning_dynamical import ActiveLearningLoop, Classifier, LabelsPending, LabelStudioOracle, Random
from lightning_dynamical.data import WikiANNNERDataModule
from lightning_dynamical.data.ag_news import EncodedTexts, WordVocabulary
from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.data.wikiann import IGNORE_INDEX, TAGS
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.models import TokenTagger
from lightning_dynamical.oracles.base import Query
from lightning_dynamical.oracles.files import LabelFileError
from lightning_dynamical.oracles.label_studio import (
    Sentence,
    Span,
    SpanError,
    item_words,
    pool_sentences,
    read_span_annotations,
    region_spans,
    span_config,
    span_regions,
    span_types,
    spans_to_tags,
    tags_to_spans,
    word_offsets,
)
from lightning_dynamical.tasks import EntityF1, Segmentation, TokenClassification
from tests.helpers.tiny import digest, quiet_trainer, read_csv

pytestmark = pytest.mark.usefixtures("one_thread")

TYPES = ["PER", "ORG", "LOC"]
B = 3
LENGTH = 6
SENTENCES = [  # three words or more, each at least two characters long; two sentences longer than LENGTH
    "Anders Lindström lives in Paris", "the river runs", "Saunders Group sold 968 shares", "Paris and Anders",
    "New York City is big", "he met Barack Obama in Berlin today again", "Google hired Marie Curie",
    "nothing to see here", "London calling loudly", "the quick brown fox jumps over the lazy dog",
    "Mount Everest is high", "Ann visited Rome",
]


def write_wikiann(root: Path) -> Path:
    """Tiny WikiANN files in the real format (``en:<token><TAB><tag>``, a blank line after each sentence); every tag
    ``O``: the people label the queried ones."""
    folder = root / "wikiann" / "en"
    folder.mkdir(parents=True, exist_ok=True)
    for name, sentences in (("train", SENTENCES), ("test", SENTENCES[:2])):
        text = "".join("".join(f"en:{w}\tO\n" for w in s.split()) + "\n" for s in sentences)
        (folder / name).write_text(text, encoding="utf-8")
    return root


def make_run(tmp_path: Path, oracle: LabelStudioOracle):
    seed_everything(0, verbose=False)
    dm = WikiANNNERDataModule(root=str(write_wikiann(tmp_path / "data")), initial_size=6, batch_size=4,
                              max_length=LENGTH, vocab_size=64)
    model = Classifier(TokenTagger(vocab_size=64, num_tags=len(TAGS), max_length=LENGTH, dim=8, depth=0, heads=2),
                       num_classes=len(TAGS))
    loop = ActiveLearningLoop(Random(), query_size=B, rounds=1, max_epochs_per_round=1, oracle=oracle,
                              dirpath=str(tmp_path / "run"), save_round_checkpoints=False, verbose=False)
    return quiet_trainer(tmp_path, [loop]), loop, model, dm


def region(text: str, start: int, end: int, label: str) -> dict:
    return {"from_name": "label", "to_name": "sample", "type": "labels",
            "value": {"start": start, "end": end, "text": text[start:end], "labels": [label]}}


def tag_ids(tags: list[str]) -> list[int]:
    """Tag names as indices into WikiANN's tags, padded to LENGTH with the ignore index."""
    return [TAGS.index(t) for t in tags] + [IGNORE_INDEX] * (LENGTH - len(tags))


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_spans_round_trip_through_a_labels_project(label_studio, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    oracle = LabelStudioOracle(label_studio.url, project="ner spans")
    trainer, loop, model, dm = make_run(tmp_path, oracle)
    trainer.fit(model, datamodule=dm)
    assert loop.pending is not None
    ckpt = str(tmp_path / "run" / "al_pending_round_0.ckpt")

    project = label_studio.project("ner spans")
    assert '<Labels name="label" toName="sample">' in project["label_config"]
    assert '<Text name="sample" value="$sample" granularity="word"/>' in project["label_config"]
    assert project["parsed_label_config"]["label"]["type"] == "Labels"
    assert project["parsed_label_config"]["label"]["labels"] == TYPES
    tasks = label_studio.tasks("ner spans")
    pseudo = dict(zip(loop.pending["indices"], loop.pending["pseudo_labels"].tolist()))
    assert sorted(t["data"]["pool_index"] for t in tasks) == sorted(pseudo)
    predicted = 0
    for task in tasks:
        text, index = task["data"]["sample"], task["data"]["pool_index"]
        words = text.split(" ")
        assert words == SENTENCES[index].split()[:LENGTH]  # the words shown, truncated as the model sees them
        (prediction,) = label_studio.request("GET", f"/api/tasks/{task['id']}")["predictions"]
        typed: list[str | None] = [None] * len(words)  # the type each predicted region gives each word
        starts = [a for a, _ in word_offsets(words)]
        ends = [b for _, b in word_offsets(words)]
        for item in prediction["result"]:
            value = item["value"]
            assert item["type"] == "labels" and value["text"] == text[value["start"]:value["end"]]
            first, last = starts.index(value["start"]), ends.index(value["end"])  # whole words
            typed[first:last + 1] = value["labels"] * (last + 1 - first)
        guessed = [TAGS[t] for t in pseudo[index][:len(words)]]
        assert typed == [None if t == "O" else t[2:] for t in guessed]
        assert (task["data"]["pseudo_label"] == "no entity") == (not prediction["result"])
        predicted += len(prediction["result"])
    assert predicted  # the untrained tagger guesses entities, so the predictions are checked

    first, empty, cut = tasks  # a multi-word span and a one-word one; no entity; a region cutting a word
    text = first["data"]["sample"]
    n_first = len(text.split(" "))
    last_word = text.rsplit(" ", 1)[1]
    second = text.index(" ", text.index(" ") + 1)  # the end of the second word
    label_studio.request("POST", f"/api/tasks/{first['id']}/annotations", {"result": [
        region(text, 0, second, "PER"), region(text, len(text) - len(last_word), len(text), "LOC")]})
    label_studio.request("POST", f"/api/tasks/{empty['id']}/annotations", {"result": []})
    text = cut["data"]["sample"]
    word = text.split(" ")[0]
    overlapping = label_studio.request("POST", f"/api/tasks/{cut['id']}/annotations", {"result": [
        region(text, 0, len(text), "ORG"), region(text, 0, len(word), "LOC")]})
    before = digests(tmp_path / "run")
    trainer, loop, model, dm = make_run(tmp_path, oracle)
    with pytest.raises(LabelFileError, match=rf"span annotations refused .*{cut['data']['pool_index']}: overlapping "
                                             rf"regions '{re.escape(word)}' \(LOC\) and '.*' \(ORG\)"):
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    assert digests(tmp_path / "run") == before

    label_studio.delete_annotation(overlapping["id"])
    label_studio.request("POST", f"/api/tasks/{cut['id']}/annotations", {"result": [
        region(text, 1, len(word) + 1, "ORG")]})  # from the word's second letter to the space after it: the word
    trainer, loop, model, dm = make_run(tmp_path, oracle)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    assert loop.finished and dm.num_labeled == 6 + B
    n_empty, n_cut = (len(t["data"]["sample"].split(" ")) for t in (empty, cut))
    human = {first["data"]["pool_index"]: tag_ids(["B-PER", "I-PER"] + ["O"] * (n_first - 3) + ["B-LOC"]),
             empty["data"]["pool_index"]: tag_ids(["O"] * n_empty),
             cut["data"]["pool_index"]: tag_ids(["B-ORG"] + ["O"] * (n_cut - 1))}
    labeled = dm.labeled_dataset()
    for index, tags in human.items():
        assert labeled[dm.labeled_indices.index(index)]["labels"].tolist() == tags
    rows = read_csv(tmp_path / "run" / "al_queries.csv")
    assert {int(r["index"]): dm.task.decode_label(r["label"]).tolist() for r in rows} == human
    assert {r["labeled_by"] for r in rows} == {"label-studio"}


# ---- without a server ----------------------------------------------------------------------------------
WORDS = ["Anders", "Lindström", "visited", "New", "York"]
TEXT = " ".join(WORDS)


def at(word: int, last: int | None = None) -> tuple[int, int]:
    """The characters of words ``word..last`` of :data:`WORDS`."""
    offsets = word_offsets(WORDS)
    return offsets[word][0], offsets[word if last is None else last][1]


def test_tags_and_spans_convert_both_ways() -> None:
    assert span_types(TAGS) == TYPES
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG", "B-PER", "B-PER"]
    spans = tags_to_spans(tags)
    assert spans == [Span(0, 2, "PER"), Span(3, 5, "LOC"), Span(5, 6, "LOC"), Span(6, 7, "ORG"), Span(7, 8, "PER"),
                     Span(8, 9, "PER")]  # I- after O or another type begins an entity, as seqeval reads it
    assert spans_to_tags(spans, len(tags)) == ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "B-LOC", "B-ORG", "B-PER",
                                               "B-PER"]
    assert tags_to_spans(["O", "O"]) == [] and spans_to_tags([], 2) == ["O", "O"]
    assert word_offsets(["ab", "c", "def"]) == [(0, 2), (3, 4), (5, 8)]


def test_tags_to_spans_reads_entities_as_entity_f1_does() -> None:
    rng = random.Random(0)
    for _ in range(200):
        tags = [rng.choice(TAGS) for _ in range(rng.randint(1, 8))]
        canonical = spans_to_tags(tags_to_spans(tags), len(tags))
        if not tags_to_spans(tags):
            continue
        f1 = EntityF1(TAGS)
        f1.update(torch.tensor([[TAGS.index(t) for t in tags]]), torch.tensor([[TAGS.index(t) for t in canonical]]))
        assert f1.compute() == 1.0, (tags, canonical)


def test_regions_round_trip_and_snap_to_whole_words() -> None:
    spans = [Span(0, 2, "PER"), Span(3, 5, "LOC")]
    regions = span_regions(spans, WORDS)
    assert [r["value"] for r in regions] == [
        {"start": 0, "end": 16, "text": "Anders Lindström", "labels": ["PER"]},
        {"start": 25, "end": 33, "text": "New York", "labels": ["LOC"]}]
    assert region_spans(regions, WORDS, TYPES) == spans
    assert region_spans([], WORDS, TYPES) == []  # no entity is an answer
    start, end = at(3, 4)
    assert region_spans([region(TEXT, start + 1, end - 2, "LOC")], WORDS, TYPES) == [Span(3, 5, "LOC")]  # cut words
    assert region_spans([region(TEXT, at(2)[1], at(3)[1], "LOC")], WORDS, TYPES) == [Span(3, 4, "LOC")]  # a space
    twice = region(TEXT, *at(0), "PER")
    other = {**region(TEXT, *at(2), "PER"), "from_name": "comment"}  # another control's result is not a span
    assert region_spans([twice, twice, {**twice, "value": {**twice["value"], "start": 0.0}}, other], WORDS, TYPES) == \
        [Span(0, 1, "PER")]


@pytest.mark.parametrize(("value", "match"), [
    ({"start": 0, "end": 6, "labels": ["PLANET"]}, r"region 0 'Anders': 'PLANET' is not an entity type \(PER, ORG"),
    ({"start": 0, "end": 6, "labels": ["PER", "LOC"]}, "region 0 'Anders': 2 labels, expected one"),
    ({"start": 0, "end": 6}, "region 0 'Anders': no labels, expected one"),
    ({"start": 6, "end": 6, "labels": ["PER"]}, r"characters 6..6 are not a stretch of the 33-character text"),
    ({"start": 30, "end": 40, "labels": ["PER"]}, r"characters 30..40 are not a stretch"),
    ({"start": 0.5, "end": 6, "labels": ["PER"]}, r"characters 0.5..6 are not"),
    ({"start": "0", "end": 6, "labels": ["PER"]}, r"characters '0'..6 are not"),
    ({"start": 6, "end": 7, "labels": ["PER"]}, r"characters 6..7 \(' '\) touch no word"),
])
def test_malformed_regions_are_refused(value: dict, match: str) -> None:
    with pytest.raises(SpanError, match=match):
        region_spans([{"from_name": "label", "type": "labels", "value": value}], WORDS, TYPES)


def test_overlapping_regions_are_refused_each_named() -> None:
    regions = [region(TEXT, *at(3, 4), "LOC"), region(TEXT, *at(4), "ORG"), region(TEXT, *at(0, 1), "PER"),
               region(TEXT, *at(1), "PER"), region(TEXT, 0, 2, "ORG")]
    with pytest.raises(SpanError) as err:
        region_spans(regions, WORDS, TYPES)
    assert str(err.value) == ("overlapping regions 'Anders' (ORG) and 'Anders Lindström' (PER); overlapping regions "
                              "'Anders Lindström' (PER) and 'Lindström' (PER); overlapping regions 'New York' (LOC) "
                              "and 'York' (ORG)")


SENTENCE = Sentence(tuple(WORDS), (0, 1, 2, 3, 4), 7)
QUERY = Query(0, [5, 7], None, None)


def task(index: int, *results: list[dict] | None) -> dict:
    """A task with one annotation per result (``None``: a skip)."""
    return {"data": {"pool_index": index, "al_round": 0}, "annotations": [
        {"result": [], "was_cancelled": True} if r is None else {"result": r} for r in results]}


def test_span_annotations_read_as_tag_indices_in_query_order() -> None:
    per = [region(TEXT, *at(0, 1), "PER")]
    labels = read_span_annotations([task(7, []), task(5, per, per)], QUERY, {5: SENTENCE, 7: SENTENCE}, TAGS,
                                   IGNORE_INDEX, "p")
    assert [y.tolist() for y in labels] == [[1, 2, 0, 0, 0, -100, -100], [0, 0, 0, 0, 0, -100, -100]]
    assert labels[0].dtype == torch.int64
    gapped = Sentence(("Paris",), (2,), 4)  # a word at position 2 (left padding), the rest ignored
    assert gapped.label([Span(0, 1, "LOC")], TAGS, -1).tolist() == [-1, -1, 5, -1]
    assert gapped.spans(torch.tensor([-1, -1, 6, -1]), TAGS, -1) == [Span(0, 1, "LOC")]


@pytest.mark.parametrize(("tasks", "error", "match"), [
    ([task(5, []), task(7, [region(TEXT, *at(0), "PER")], [region(TEXT, *at(0), "ORG")])], LabelFileError,
     r"annotators disagree on pool indices \[7: 'Anders' \(PER\) / 'Anders' \(ORG\)\]"),
    ([task(5, [region(TEXT, *at(0), "PLANET")]), task(7, [region(TEXT, 0, 99, "PER")])], LabelFileError,
     r"span annotations refused for pool indices \[5: region 0 'Anders': 'PLANET' is not an entity type .*, "
     r"7: region 0: characters 0..99 are not"),
    ([task(5, []), task(7, None)], LabelsPending, r"skipped \(cancelled\) by annotators: pool indices \[7\]"),
    ([task(5, []), task(7)], LabelsPending, r"not annotated yet: pool indices \[7\]"),
    ([task(5, []), task(9, [])], LabelFileError, r"outside the query .*\[9\].*no task for pool indices .*\[7\]"),
])
def test_bad_span_annotations_refused_or_pending(tasks, error, match) -> None:
    with pytest.raises(error, match=match):
        read_span_annotations(tasks, QUERY, {5: SENTENCE, 7: SENTENCE}, TAGS, IGNORE_INDEX, "p")


def encoded(words: list[list[str]] | None, length: int = 4) -> EncodedTexts:
    ids = torch.zeros(len(words or [[]]), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, w in enumerate(words or [["x"]]):
        ids[row, :len(w)], mask[row, :len(w)] = 2, 1
    return EncodedTexts(ids, mask, torch.full_like(ids, IGNORE_INDEX), WordVocabulary([]), words=words)


def test_words_are_found_through_views_and_refused_when_missing_or_unfit() -> None:
    data = encoded([["Paris", "is"], ["Anders"], ["a", "b", "c"]])
    assert item_words(Subset(Subset(data, [2, 1]), [1]), 0) == ["Anders"]
    assert item_words(torch.utils.data.TensorDataset(torch.zeros(2)), 0) is None
    task = TokenClassification(tags=TAGS)
    dm = ActiveLearningDataModule(Subset(data, [1, 0, 2]), initial_size=1, task=task, num_classes=7)
    assert pool_sentences(dm, [1]) == {1: Sentence(("Paris", "is"), (0, 1), 4)}
    without = ActiveLearningDataModule(encoded(None), initial_size=1, task=task, num_classes=7)
    with pytest.raises(ConfigError, match="the pool data set has no words: give it a `words` attribute"):
        pool_sentences(without, [0])
    data.words[0] = ["New York", "is"]  # type: ignore[index]
    with pytest.raises(ConfigError, match="pool index 1 as words: word 'New York' is empty or holds whitespace"):
        pool_sentences(dm, [1])
    data.words[0] = ["Paris"]  # type: ignore[index]
    with pytest.raises(ConfigError, match="pool index 1 as words: 1 words for 2 real positions of 4"):
        pool_sentences(dm, [1])
    with pytest.raises(ValueError, match="item 0 has 1 words for 2 real positions"):
        EncodedTexts(data.input_ids, data.attention_mask, data.targets, data.vocabulary, words=[["a"], ["b"], ["c"]])


def test_a_pool_without_words_stops_the_run_at_setup(tmp_path) -> None:
    """LabelStudioOracle on a token-classification pool without words is refused when the loop sets up, before any
    training step (no Label Studio server is asked); the same pool with words passes the check."""
    full = encoded([["Paris", "is"], ["Anders"], ["a", "b", "c"], ["x"], ["New", "York"]])
    bare = EncodedTexts(full.input_ids, full.attention_mask, full.targets, full.vocabulary)
    task = TokenClassification(tags=TAGS)
    oracle = LabelStudioOracle()
    with_words = ActiveLearningDataModule(full, initial_size=2, task=task, num_classes=len(TAGS))
    with_words.setup("fit")
    oracle.check_datamodule(with_words)
    dm = ActiveLearningDataModule(bare, initial_size=2, task=task, num_classes=len(TAGS))
    model = Classifier(TokenTagger(vocab_size=8, num_tags=len(TAGS), max_length=4, dim=8, depth=0, heads=2),
                       num_classes=len(TAGS))
    loop = ActiveLearningLoop(Random(), query_size=1, rounds=1, max_epochs_per_round=1, oracle=oracle,
                              dirpath=str(tmp_path / "run"), save_round_checkpoints=False, verbose=False)
    trainer = quiet_trainer(tmp_path, [loop])
    with pytest.raises(ConfigError, match="the pool data set has no words: give it a `words` attribute"):
        trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 0


def test_span_config_and_tasks_refused() -> None:
    config = span_config(TYPES)
    assert '<Labels name="label" toName="sample"><Label value="PER"/><Label value="ORG"/><Label value="LOC"/>' \
           "</Labels>" in config
    oracle = LabelStudioOracle()
    oracle.check_task(TokenClassification(tags=TAGS))
    for task, kwargs, match in [
        (TokenClassification(), {}, "the entity types of the task's IOB2 tags, and it has none"),
        (TokenClassification(tags=("O",)), {}, r"tags \['O'\] name no entity type"),
        (TokenClassification(tags=("O", "B-PER")), {}, "spans of type 'PER' need both the tags 'B-PER' and 'I-PER'"),
        (TokenClassification(tags=TAGS), {"class_names": list(TAGS)}, "leave class_names out"),
        (Segmentation(), {}, "brush masks for segmentation are not wired to Label Studio"),
    ]:
        with pytest.raises(ConfigError, match=f"LabelStudioOracle cannot label the .* task: .*{match}"):
            LabelStudioOracle(**kwargs).check_task(task)
