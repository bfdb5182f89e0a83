"""Token classification: every engine scores exactly, and ``summed_gradient`` gives G_S exactly, against a brute-force
per-sample ``torch.autograd.grad`` loop written here from scratch: each sample run alone on its real tokens only (no
padding), its loss the mean over its labeled tokens of a hand-written cross-entropy, pseudo targets the per-token
argmax. In float64, on two small taggers with dropout, scored in eval mode from dict batches ``{input_ids,
attention_mask}`` padded per batch to different lengths: a per-token MLP (every parameter on the fast path) and a
transformer encoder layer with a key-padding mask (its attention on the exact path, the rest fast)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_dynamical import DynamicAL
from lightning_dynamical.scoring import evaluation, select_parameters, summed_gradient
from lightning_dynamical.scoring.diagnostics import query_regime
from lightning_dynamical.scoring.exact import loop_gradients, vmap_gradients
from lightning_dynamical.tasks import TokenClassification
from lightning_dynamical.tasks.batches import forward_logits
from tests.helpers.brute_force import assert_close_scores, scores_of

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:There is a performance drop.*scaled_dot_product:UserWarning")]

VOCAB, CLASSES, DIM, MAX_T = 13, 5, 8, 7
IGNORE = -100
N_POOL, N_LAB = 7, 5
TASK = TokenClassification()
MHA = ["layer.self_attn.in_proj_weight", "layer.self_attn.in_proj_bias", "layer.self_attn.out_proj.weight",
       "layer.self_attn.out_proj.bias"]


class MLPTagger(nn.Module):
    """Token and position embeddings, Linear-LayerNorm-ReLU-Dropout per token, a Linear head: logits ``(B, T, C)``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM, padding_idx=0)
        self.pos = nn.Embedding(MAX_T, DIM)
        self.lin = nn.Linear(DIM, DIM)
        self.norm = nn.LayerNorm(DIM)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        h = self.embed(input_ids) + self.pos(torch.arange(input_ids.shape[1]).unsqueeze(0))
        return self.head(self.drop(torch.relu(self.norm(self.lin(h)))))


class AttentionTagger(nn.Module):
    """Token and position embeddings, one ``nn.TransformerEncoderLayer`` (batch first, dropout) attending to the real
    tokens only (``src_key_padding_mask``), a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM, padding_idx=0)
        self.pos = nn.Embedding(MAX_T, DIM)
        self.layer = nn.TransformerEncoderLayer(DIM, 2, 16, dropout=0.2, batch_first=True)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        h = self.embed(input_ids) + self.pos(torch.arange(input_ids.shape[1]).unsqueeze(0))
        return self.head(self.layer(h, src_key_padding_mask=attention_mask == 0))


TAGGERS = {"mlp": MLPTagger, "attention": AttentionTagger}


def collate(items: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Pad a batch to its longest sample: id 0, mask 0, label ``IGNORE`` (dynamic padding: batches differ in length)."""
    t = max(item["input_ids"].shape[0] for item in items)
    out = {}
    for key, fill in (("input_ids", 0), ("attention_mask", 0), ("labels", IGNORE)):
        if key in items[0]:
            out[key] = torch.stack([nn.functional.pad(item[key], (0, t - item[key].shape[0]), value=fill)
                                    for item in items])
    return out


def sentences(lengths: Sequence[int], seed: int, labeled: bool) -> list[dict[str, Tensor]]:
    """Samples of the given lengths; labels (when ``labeled``) leave about a third of the tokens unlabeled (sub-word
    pieces) and the second sample unlabeled entirely."""
    gen = torch.Generator().manual_seed(seed)
    items = []
    for i, n in enumerate(lengths):
        item = {"input_ids": torch.randint(1, VOCAB, (n,), generator=gen), "attention_mask": torch.ones(n).long()}
        if labeled:
            y = torch.randint(0, CLASSES, (n,), generator=gen)
            y[torch.rand(n, generator=gen) < 0.3] = IGNORE
            if i == 1:
                y[:] = IGNORE
            item["labels"] = y
        items.append(item)
    return items


POOL_LENGTHS = [3, 5, 2, 7, 4, 1, 6]  # batches of 3: padded to 5, 7 and 6 tokens
LAB_LENGTHS = [4, 6, 2, 5, 3]


def token_problem(tagger: str, seed: int = 0):
    """``(model (train mode, float64), pool loader, labeled loader, pool items, labeled items)``."""
    torch.manual_seed(seed)
    model = TAGGERS[tagger]().double()
    with torch.no_grad():  # break the symmetries of default inits (LayerNorm weight 1, bias 0)
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.train()
    pool = sentences(POOL_LENGTHS, seed + 1, labeled=False)
    lab = sentences(LAB_LENGTHS, seed + 2, labeled=True)
    loaders = DataLoader(pool, batch_size=3, collate_fn=collate), DataLoader(lab, batch_size=2, collate_fn=collate)
    return model, *loaders, pool, lab


def _ce(logits: Tensor, targets: Tensor) -> Tensor:
    """One sample's loss, by hand: the mean over its labeled tokens of ``-log softmax`` at the target (0 if none)."""
    logp = torch.log_softmax(logits, -1)
    valid = targets != IGNORE
    picked = logp.gather(-1, targets.where(valid, 0).unsqueeze(-1)).squeeze(-1)
    return -(picked * valid).sum() / valid.sum().clamp_min(1)


def _alone(model: nn.Module, item: dict[str, Tensor]) -> Tensor:
    """The logits ``(1, n, C)`` of one sample run alone on its real tokens (no padding at all)."""
    return model(item["input_ids"][None], item["attention_mask"][None])


def _flat_grad(model: nn.Module, loss: Tensor, names: list[str]) -> Tensor:
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(params[n])).reshape(-1) for n, g in zip(names, grads)])


def brute_force(model: nn.Module, pool: list[dict[str, Tensor]], lab: list[dict[str, Tensor]],
                names: list[str] | None = None) -> tuple[Tensor, Tensor, list[Tensor]]:
    """``(g (N, P), G_S (P,), pseudo targets per sample (n_i,))``: one forward of each sample alone and one
    ``autograd.grad``, the model in eval mode (restored)."""
    names = names or [n for n, p in model.named_parameters() if p.requires_grad]
    with evaluation(model):
        rows, pseudo = [], []
        for item in pool:
            logits = _alone(model, item)
            y = logits.argmax(-1).detach()
            rows.append(_flat_grad(model, _ce(logits, y), names))
            pseudo.append(y[0])
        g_s = sum(_flat_grad(model, _ce(_alone(model, item), item["labels"][None]), names) for item in lab)
    return torch.stack(rows).detach(), g_s.detach(), pseudo


def padded(rows: list[Tensor]) -> Tensor:
    """Per-sample pseudo targets padded with ``IGNORE`` to the longest."""
    return torch.stack([nn.functional.pad(r, (0, MAX_T - r.shape[0]), value=IGNORE) for r in rows])


def test_reference_loss_is_the_tasks():
    """The hand-written loss of the reference is the task's per-sample loss (summed over a batch by the task)."""
    torch.manual_seed(0)
    logits = torch.randn(3, MAX_T, CLASSES, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (3, MAX_T))
    y[0, 4:] = IGNORE
    y[1] = IGNORE
    expected = sum(_ce(logits[i: i + 1], y[i: i + 1]) for i in range(3))
    torch.testing.assert_close(TASK.loss(logits, y), expected, rtol=1e-12, atol=1e-12)
    assert float(TASK.loss(logits[1:2], y[1:2])) == 0.0


@pytest.mark.parametrize("tagger", list(TAGGERS))
def test_summed_gradient_matches_brute_force(tagger):
    """G_S over labeled batches (padding and unlabeled tokens at -100), and the pool's summed pseudo-label gradient
    (padding left out by the attention mask), equal the per-sample sums."""
    model, pool, labeled, pool_items, lab_items = token_problem(tagger)
    g, g_s, _ = brute_force(model, pool_items, lab_items)
    with evaluation(model):
        params = select_parameters(model, None)
        total = summed_gradient(model, labeled, params, task=TASK)
        pseudo = summed_gradient(model, pool, params, pseudo_labels=True, task=TASK)
    assert_close_scores(torch.cat([total[n].reshape(-1) for n in params]), g_s, 1e-12)
    assert_close_scores(torch.cat([pseudo[n].reshape(-1) for n in params]), g.sum(0), 1e-12)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("engine", ["fast", "func", "auto"])
@pytest.mark.parametrize("tagger", list(TAGGERS))
def test_dynamical_token_classification_matches_brute_force_float64(tagger, engine, gamma, recwarn):
    model, pool, labeled, pool_items, lab_items = token_problem(tagger)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    chosen = DynamicAL(gamma=gamma, engine=engine, chunk_size=2, task=TASK).select(model, pool, labeled, 3)
    g, g_s, pseudo = brute_force(model, pool_items, lab_items)
    assert chosen.pool_scores is not None
    assert_close_scores(chosen.pool_scores, scores_of(g, g_s, gamma))
    assert chosen.pseudo_labels is not None  # the pool's batches (5, 7, 6 tokens) padded to 7 with IGNORE
    assert torch.equal(chosen.pseudo_labels, padded(pseudo)[chosen.positions])
    assert all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("engine", ["last_layer", "auto", "fast"])
def test_last_layer_on_a_token_head(engine):
    """The head ``nn.Linear`` on ``(B, T, D)``: the last-layer closed form sums over the real tokens."""
    model, pool, labeled, pool_items, lab_items = token_problem("attention", seed=1)
    scores = DynamicAL(gamma=2.0, params="last_layer", engine=engine, task=TASK).score(model, pool, labeled)
    g, g_s, _ = brute_force(model, pool_items, lab_items, ["head.weight", "head.bias"])
    assert_close_scores(scores, scores_of(g, g_s, 2.0))


@pytest.mark.parametrize("tagger", list(TAGGERS))
def test_exact_paths_match_brute_force_gradients(tagger):
    """The exact fallback's ``vmap`` and per-sample loop give every sample's whole gradient on a padded batch."""
    model, _, _, pool_items, lab_items = token_problem(tagger, seed=2)
    g, _, _ = brute_force(model, pool_items, lab_items)
    batch = collate(pool_items)
    with evaluation(model):
        params = select_parameters(model, None)
        y = TASK.batch_pseudo_targets(forward_logits(model, batch, TASK), batch)
        assert torch.equal(y == IGNORE, batch["attention_mask"] == 0)
        for grads in (vmap_gradients(model, batch, y, params, 3, TASK), loop_gradients(model, batch, y, params, TASK)):
            flat = torch.cat([grads[n].reshape(N_POOL, -1) for n in params], 1)
            torch.testing.assert_close(flat, g, rtol=1e-9, atol=1e-12 * g.abs().max())


def test_padding_is_left_out_of_the_pseudo_targets():
    """Scored as if padding were tokens (a mask key the batches lack), the scores change: the mask is what makes
    them equal the brute force."""
    model, pool, labeled, pool_items, lab_items = token_problem("mlp", seed=3)
    g, g_s, _ = brute_force(model, pool_items, lab_items)
    unmasked = DynamicAL(gamma=2.0, engine="fast", task=TokenClassification(mask_key="absent"))
    scores = unmasked.score(model, pool, labeled)
    err = (scores - scores_of(g, g_s, 2.0)).abs().max()
    assert err > 1e-3 * scores_of(g, g_s, 2.0).abs().max()


def test_query_regime_of_a_token_query():
    """Eq. 14 and the medians from the pseudo-label gradients at the real tokens, against the brute force."""
    model, pool, labeled, pool_items, lab_items = token_problem("mlp", seed=4)
    regime = query_regime(model, labeled, pool, task=TASK)
    g, g_s, _ = brute_force(model, pool_items, lab_items)
    sq, dots, g_q = g.pow(2).sum(1), g @ g_s, g.sum(0)
    ratio = (sq.sum() + 2 * g_q @ g_s) / (g_q @ g_q + 2 * g_q @ g_s)
    assert regime.approximation_ratio == pytest.approx(float(ratio), rel=1e-9)
    assert regime.sqnorm_median == pytest.approx(float(sq.median()), rel=1e-9)
    assert regime.dot_median == pytest.approx(float(dots.median()), rel=1e-9)


def test_fast_path_covers_the_mlp_tagger(recwarn):
    model, pool, *_ = token_problem("mlp")
    paths = DynamicAL(engine="fast", task=TASK).explain(model, next(iter(pool)))
    assert [p.name for p in paths] == [n for n, _ in model.named_parameters()]
    assert {p.name: p.path for p in paths} == {
        "embed.weight": "fast (embedding)", "pos.weight": "fast (embedding)", "lin.weight": "fast (linear)",
        "lin.bias": "fast (linear)", "norm.weight": "fast (layer_norm)", "norm.bias": "fast (layer_norm)",
        "head.weight": "fast (linear)", "head.bias": "fast (linear)"}
    assert not [w for w in recwarn if "slow exact path" in str(w.message)]


def test_attention_falls_to_the_exact_path_with_its_reason():
    """``nn.MultiheadAttention`` hands its parameters to ``F.multi_head_attention_forward``, which has no closed form:
    those four are scored by ``vmap`` (exactly); embeddings, feed-forward, LayerNorms and head stay fast."""
    model, pool, *_ = token_problem("attention")
    with pytest.warns(UserWarning, match="4 of 16 selected parameters are scored on a slow exact path"):
        paths = {p.name: p for p in DynamicAL(engine="fast", task=TASK).explain(model, next(iter(pool)))}
    for name in MHA:
        assert paths[name].path == "vmap"
        assert paths[name].reason == "used by multi_head_attention_forward, which has no closed form"
    assert all(p.path.startswith("fast (") for n, p in paths.items() if n not in MHA)
