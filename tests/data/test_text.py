"""AG News in its real CSV format, the word vocabulary, TextTransformer, Classifier on dict batches, the text
config through the CLI. A tiny CSV written here stands in for the real file."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical import ActiveLearningLoop, Classifier, DynamicAL
from lightning_dynamical.data.ag_news import (
    CLASSES,
    WordVocabulary,
    build_ag_news,
    read_ag_news_csv,
    tokenize,
)
from lightning_dynamical.data.modules import AGNewsDataModule
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.models import TextTransformer
from tests.helpers.brute_force import any_per_sample_grads
from tests.helpers.hf_text import CLASSES as HF_CLASSES
from tests.helpers.hf_text import tiny_bert, token_datamodule
from tests.helpers.tiny import fit_loop, read_csv

ROOT = Path(__file__).resolve().parents[2]
TOPICS = {1: "election minister", 2: "match coach", 3: "shares profit", 4: "software chip"}


def write_ag_news(root: Path, per_class: int = 12) -> Path:
    """``<root>/ag_news/test.csv`` as AG News ships it: header, labels 1-4, quoted fields with commas and
    doubled quotes, backslashes for line breaks, HTML-style entities. Item ``k`` holds the word ``itemk``."""
    path = root / "ag_news" / "test.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "title", "description"])
        for k in range(4 * per_class):
            label = k % 4 + 1
            writer.writerow([str(label), f"Item{k} {TOPICS[label]} (Reuters)",
                             f'Reuters - The "{TOPICS[label]}", said a\\spokesman, rose #36;{k} today.'])
    return path


def test_reads_the_real_format(tmp_path: Path) -> None:
    path = write_ag_news(tmp_path, per_class=2)
    assert path.read_text().splitlines()[1] == ('1,Item0 election minister (Reuters),"Reuters - The ""election '
                                                'minister"", said a\\spokesman, rose #36;0 today."')
    texts, labels = read_ag_news_csv(path)
    assert labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3] and labels.dtype == torch.long
    assert texts[0] == 'Item0 election minister (Reuters) Reuters - The "election minister", said a\\spokesman, rose ' \
                       "#36;0 today."
    assert tokenize(texts[0]) == ["item0", "election", "minister", "reuters", "reuters", "the", "election",
                                  "minister", "said", "a", "spokesman", "rose", "$", "0", "today"]
    assert CLASSES == ("World", "Sports", "Business", "Sci/Tech")


def test_the_first_real_rows_parse(tmp_path: Path) -> None:
    """Two rows copied from the real file (no header): an unquoted description, a quoted one with backslashes."""
    path = tmp_path / "two.csv"
    path.write_text("3,Fears for T N pension after talks,Unions representing workers at Turner   Newall say they "
                    "are 'disappointed' after talks with stricken parent firm Federal Mogul.\n"
                    '4,The Race is On (SPACE.com),"SPACE.com - TORONTO, Canada -- A second\\team of rocketeers '
                    'competing for the  #36;10 million"\n')
    texts, labels = read_ag_news_csv(path)
    assert labels.tolist() == [2, 3]
    assert tokenize(texts[0])[-12:] == ["say", "they", "are", "disappointed", "after", "talks", "with", "stricken",
                                        "parent", "firm", "federal", "mogul"]
    assert tokenize(texts[1]) == ["the", "race", "is", "on", "space", "com", "space", "com", "toronto", "canada",
                                  "a", "second", "team", "of", "rocketeers", "competing", "for", "the", "$", "10",
                                  "million"]


@pytest.mark.parametrize("line, phrase", [("5,Title,Text", "label in 1-4"), ("1,Title only", "label,title"),
                                          ("World,Title,Text", "label in 1-4")])
def test_bad_rows_are_refused_with_their_line(tmp_path: Path, line: str, phrase: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"label,title,description\n1,A,B\n{line}\n")
    with pytest.raises(ValueError, match=phrase) as err:
        read_ag_news_csv(path)
    assert "line 3" in str(err.value)
    with pytest.raises(ConfigError, match="AG News CSV not found: .*missing.csv"):
        read_ag_news_csv(tmp_path / "missing.csv")


def test_vocabulary_is_deterministic_and_ranked_by_frequency() -> None:
    texts = ["b a c a", "c b a", "d e"]
    vocab = WordVocabulary.build(texts, size=100)
    assert vocab.words == ["a", "b", "c", "d", "e"]  # counts 3, 2, 2, 1, 1; ties by word
    assert WordVocabulary.build(list(reversed(texts)), size=100).words == vocab.words
    assert WordVocabulary.build(texts, size=4).words == ["a", "b"]
    assert WordVocabulary.build(texts, size=100, min_freq=2).words == ["a", "b", "c"]
    ids, mask = vocab.encode(["a e zzz", "", "c c c c c c"], max_length=4)
    assert ids.tolist() == [[2, 6, 1, 0], [1, 0, 0, 0], [4, 4, 4, 4]]  # unknown 1, padding 0; empty -> unknown
    assert mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    with pytest.raises(ValueError, match="unique"):
        WordVocabulary(["a", "b", "a"])
    with pytest.raises(ValueError, match="vocabulary size must be > 2"):
        WordVocabulary.build(texts, size=2)
    with pytest.raises(ValueError, match=r"max_length must be a positive int \(>= 1\)"):
        vocab.encode(["a"], max_length=0)


def test_build_ag_news_splits_by_seed_and_learns_words_from_the_pool_only(tmp_path: Path) -> None:
    write_ag_news(tmp_path)
    splits = build_ag_news(tmp_path, test_size=12, vocab_size=200, min_freq=1, max_length=16, seed=3)
    pool, test = splits.pool, splits.test
    assert (len(pool), len(test), splits.num_classes) == (36, 12, 4)
    assert splits.pool_eval is pool and splits.val is None
    item = pool[0]
    assert sorted(item) == ["attention_mask", "input_ids", "labels"]
    assert item["input_ids"].shape == item["attention_mask"].shape == (16,)
    assert item["input_ids"].dtype == item["attention_mask"].dtype == item["labels"].dtype == torch.long
    assert item["labels"].ndim == 0 and set(pool.targets.tolist()) <= {0, 1, 2, 3}
    vocab = pool.vocabulary
    assert int(pool.input_ids.max()) < 200 and int(test.input_ids.max()) < 200
    # item k's own word "itemk" is in the vocabulary exactly when item k is in the pool
    pool_items = {int(w[4:]) for w in vocab.words if w.startswith("item")}
    assert len(pool_items) == 36
    first_ids = test.input_ids[:, 0].tolist()
    assert first_ids == [WordVocabulary.UNK] * 12  # every test item's first word is unseen
    # the label goes with its item: item k has label k % 4
    for i in range(len(pool)):
        k = int(vocab.words[int(pool.input_ids[i, 0]) - 2][4:])
        assert int(pool[i]["labels"]) == k % 4
    again = build_ag_news(tmp_path, test_size=12, vocab_size=200, min_freq=1, max_length=16, seed=3)
    assert again.pool.vocabulary.words == vocab.words and torch.equal(again.pool.input_ids, pool.input_ids)
    other = build_ag_news(tmp_path, test_size=12, vocab_size=200, min_freq=1, max_length=16, seed=4)
    assert other.pool.vocabulary.words != vocab.words
    small = build_ag_news(tmp_path, pool_size=20, test_size=12, vocab_size=200, min_freq=1, seed=3)
    small_items = {int(w[4:]) for w in small.pool.vocabulary.words if w.startswith("item")}
    assert len(small.pool) == 20 and len(small_items) == 20 and small_items < pool_items  # same test split


@pytest.mark.parametrize("kwargs, phrase", [({"test_size": 48}, "test_size must be in"),
                                            ({"test_size": 0}, "test_size must be in"),
                                            ({"pool_size": 37}, "pool_size must be None or in"),
                                            ({"vocab_size": 2}, "vocabulary size"),
                                            ({"max_length": 0}, "max_length")])
def test_build_ag_news_refuses_bad_sizes(tmp_path: Path, kwargs: dict, phrase: str) -> None:
    write_ag_news(tmp_path)
    with pytest.raises(ValueError, match=phrase):
        build_ag_news(tmp_path, **{"test_size": 12, **kwargs})


def test_datamodule_draws_a_balanced_initial_set_and_uses_its_label_key(tmp_path: Path) -> None:
    write_ag_news(tmp_path)
    dm = AGNewsDataModule(root=str(tmp_path), test_size=12, initial_size=8, balanced=True, label_key="y", seed=1)
    assert dm.num_labeled == 8 and dm.num_unlabeled == 28
    assert sorted(dm.splits.pool.targets[dm.labeled_indices].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    batch = next(iter(dm.train_dataloader()))
    assert sorted(batch) == ["attention_mask", "input_ids", "y"] and batch["y"].shape == (8,)


# ---- the network and the LightningModule ----------------------------------------------------------------
def test_text_transformer_ignores_padding_and_checks_shapes() -> None:
    torch.manual_seed(0)
    net = TextTransformer(vocab_size=30, num_classes=4, max_length=10, dim=16, depth=2, heads=2).eval()
    ids = torch.randint(1, 30, (3, 6))
    mask = torch.ones_like(ids)
    padded_ids = torch.cat([ids, torch.zeros(3, 4, dtype=torch.long)], 1)
    padded_mask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.long)], 1)
    out = net(input_ids=ids, attention_mask=mask)
    assert out.shape == (3, 4)
    torch.testing.assert_close(net(input_ids=padded_ids, attention_mask=padded_mask), out)
    assert not torch.allclose(net(input_ids=padded_ids), out)  # without the mask, padding is attended to
    with pytest.raises(ValueError, match="max_length=10"):
        net(input_ids=torch.ones(2, 11, dtype=torch.long))
    with pytest.raises(ValueError, match="must match input_ids"):
        net(input_ids=ids, attention_mask=mask[:, :5])
    with pytest.raises(ValueError, match="divisible"):
        TextTransformer(vocab_size=30, num_classes=4, dim=10, heads=4)


@pytest.mark.usefixtures("one_thread")
def test_text_transformer_scores_exactly_on_the_fast_path() -> None:
    """Every parameter (positions included) takes a closed form, and the scores equal a per-sample loop."""
    torch.manual_seed(0)
    net = TextTransformer(vocab_size=30, num_classes=4, max_length=8, dim=8, depth=1, heads=2).double()
    ids = torch.randint(1, 30, (7, 8))
    mask = (torch.arange(8) < torch.randint(1, 9, (7,))[:, None]).long()
    rows = [{"input_ids": ids[i], "attention_mask": mask[i], "labels": torch.tensor(i % 4)} for i in range(7)]
    pool, labeled = DataLoader(rows[:5], batch_size=3), DataLoader(rows[5:], batch_size=2)
    paths = DynamicAL().explain(net, next(iter(pool)))
    assert [p.name for p in paths] == [n for n, _ in net.named_parameters()]
    assert all(p.path.startswith("fast (") for p in paths), [str(p) for p in paths if not p.path.startswith("fast")]
    net.eval()
    g = any_per_sample_grads(net, {"input_ids": ids[:5], "attention_mask": mask[:5]})
    g_s = any_per_sample_grads(net, {"input_ids": ids[5:], "attention_mask": mask[5:]},
                               torch.arange(5, 7) % 4).sum(0)
    scores = DynamicAL(gamma=2.0).score(net, pool, labeled)
    ref = g.pow(2).sum(1) + 2.0 * (g @ g_s)
    assert float((scores - ref).abs().max() / ref.abs().max()) <= 1e-8


class DictOutput(nn.Module):
    """A network with Hugging Face manners: keyword inputs, logits in a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(20, 3, mode="sum")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.embed(input_ids, per_sample_weights=attention_mask.float())}


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # steps called without a Trainer
def test_classifier_trains_on_dict_batches_and_still_on_tuples() -> None:
    torch.manual_seed(0)
    model = Classifier(DictOutput(), num_classes=3, lr=0.1)
    batch = {"input_ids": torch.randint(0, 20, (6, 5)), "attention_mask": torch.ones(6, 5, dtype=torch.long),
             "labels": torch.tensor([0, 1, 2, 0, 1, 2])}
    opt = model.configure_optimizers()
    losses = []
    for _ in range(20):
        loss = model.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert set(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])) == {"logits"}
    with pytest.raises(TypeError, match="a 'labels' entry"):
        model.training_step({k: v for k, v in batch.items() if k != "labels"}, 0)
    renamed = Classifier(DictOutput(), num_classes=3, label_key="target")
    assert torch.isfinite(renamed.training_step({**{k: v for k, v in batch.items() if k != "labels"},
                                                 "target": batch["labels"]}, 0))
    tuples = Classifier(nn.Linear(4, 3), num_classes=3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    loss = tuples.training_step((x, y), 0)
    torch.testing.assert_close(loss, nn.functional.cross_entropy(tuples.net(x), y))
    assert torch.equal(tuples(x), tuples.net(x))
    with pytest.raises(TypeError, match="not both"):
        tuples(x, mask=x)
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    assert torch.isfinite(tuples.training_step(next(iter(loader)), 0))


# ---- the config through the CLI --------------------------------------------------------------------------
def test_ag_news_config_one_round(tmp_path: Path) -> None:
    write_ag_news(tmp_path / "data")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    script = Path(sys.executable).parent / "lightning-dynamical"  # the installed console script
    cmd = [str(script), "fit", "--config", str(ROOT / "configs/ag_news.yaml"),
           "--data.init_args.root=data", "--data.init_args.pool_size=null", "--data.init_args.test_size=12",
           "--data.init_args.initial_size=8", "--model.init_args.net.init_args.dim=16",
           "--model.init_args.net.init_args.depth=1", f"--trainer.default_root_dir={tmp_path}",
           f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false",
           "--trainer.callbacks.init_args.rounds=1", "--trainer.callbacks.init_args.query_size=4",
           "--trainer.callbacks.init_args.max_epochs_per_round=3", f"--trainer.callbacks.init_args.dirpath={tmp_path}"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_csv(tmp_path / "al_rounds.csv")
    assert [int(r["round"]) for r in rows] == [0, 1]
    assert [int(r["labeled"]) for r in rows] == [8, 12]
    assert all(0 <= float(r["test_acc"]) <= 1 for r in rows)
    state = json.loads((tmp_path / "al_state.json").read_text())
    assert len(state["labeled"]) == 12 and len(set(state["labeled"])) == 12


@pytest.mark.usefixtures("one_thread")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_classifier_around_a_hugging_face_model_runs_a_round(tmp_path: Path) -> None:
    """``Classifier(BertForSequenceClassification)``: keyword inputs in, a ``ModelOutput`` out, no adapter."""
    L.seed_everything(0)
    model = Classifier(tiny_bert(), num_classes=HF_CLASSES, lr=3e-3)
    dm = token_datamodule(40, 12, initial_size=8, batch_size=8)
    loop = ActiveLearningLoop(DynamicAL(), query_size=5, rounds=1, max_epochs_per_round=2, dirpath=str(tmp_path),
                              save_round_checkpoints=False, verbose=False)
    fit_loop(model, dm, loop, tmp_path)
    assert dm.num_labeled == 13
    assert [r["labeled"] for r in loop.history] == [8, 13]
    assert all(0 <= r["test_acc"] <= 1 for r in loop.history)
