"""Real model code against the brute force, float64, with the path each parameter took asserted.

Every case scores exactly (gamma 0, 2, inf; error relative to the largest score <= 1e-8) whatever its
path; the path assertions catch a model that silently went to a slow path, or a fast path that should
have been refused (a sequence-first layout, a functionally reused weight).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from lightning_dynamical import DynamicAL
from lightning_dynamical.scoring import ScoringError
from tests.helpers.brute_force import any_per_sample_grads
from tests.helpers.zoo import CASES, SEQ

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

SEQ_FIRST = {"seq_first_encoder", "seq_first_linear"}


def _slow(name: str) -> bool:
    return name.startswith("encoder.layers.")


# case -> (which parameters must be on a slow exact path, a phrase their reasons must contain)
EXPECTED = {
    "seq_first_encoder": (_slow, "dim 0 of its input"),
    "seq_first_linear": (lambda n: n.startswith("mix."), "dim 0 of its input"),
    "functional_tied_head": (lambda n: n == "emb.weight", "used 2 times"),
    "raw_parameters": (lambda n: n == "log_t", "Tensor.exp"),
    "position_major_rows": (lambda n: n.startswith("mix."), "not the samples"),
    "rigid_positions": (lambda n: n == "pos.weight", "not the batch"),
    "bert_masked": (lambda n: False, ""),
    "albert_masked": (lambda n: ".albert_layers." in n, "used 2 times"),
    "deberta": (lambda n: False, ""),
    "gpt2": (lambda n: False, ""),
    "timm_resnet18": (lambda n: False, ""),
    "timm_efficientnet_b0": (lambda n: False, ""),
    "timm_convnext_atto": (lambda n: False, ""),
    "timm_vit_tiny": (lambda n: False, ""),
    "timm_vit_checkpointing": (lambda n: False, ""),
    "mobilenet_v3_small": (lambda n: False, ""),
    "timm_mixer_zero_head": (lambda n: False, ""),
    "output_dict": (lambda n: False, ""),
    "output_tuple": (lambda n: False, ""),
    "output_model_output": (lambda n: False, ""),
}


def _double(inputs):
    if isinstance(inputs, dict):
        return {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    return inputs.double() if inputs.is_floating_point() else inputs


def _loader(inputs, targets, batch_size):
    n = targets.shape[0]
    if isinstance(inputs, dict):
        rows = [{**{k: v[i] for k, v in inputs.items()}, "labels": targets[i]} for i in range(n)]
    else:
        rows = [(inputs[i], targets[i]) for i in range(n)]
    return DataLoader(rows, batch_size=batch_size)


def _problem(name: str):
    torch.manual_seed(0)
    case = CASES[name]
    model = case.model().double()
    # sequence-first cases: a pool of 14 in batches of 8 leaves a last, partial batch of SEQ == 6 samples
    n_pool, batch = (14, 8) if name in SEQ_FIRST else (6, 4)
    pool_x, lab_x = _double(case.inputs(n_pool)), _double(case.inputs(3))
    with torch.no_grad():
        logits = model.eval()(**lab_x) if isinstance(lab_x, dict) else model.eval()(lab_x)
    classes = (logits if isinstance(logits, torch.Tensor) else
               logits["logits"] if isinstance(logits, dict) else
               logits[0] if isinstance(logits, tuple) else logits.logits).shape[1]
    lab_y = torch.randint(0, classes, (3,))
    model.train()  # the engine must put BatchNorm and dropout in eval mode itself
    pool = _loader(pool_x, torch.zeros(n_pool, dtype=torch.long), batch)
    labeled = _loader(lab_x, lab_y, 2)
    return model, pool, labeled, pool_x, lab_x, lab_y


@pytest.mark.parametrize("name", sorted(CASES))
def test_zoo_scores_exactly_and_says_how(name):
    model, pool, labeled, pool_x, lab_x, lab_y = _problem(name)
    model.eval()
    g = any_per_sample_grads(model, pool_x)
    g_s = any_per_sample_grads(model, lab_x, lab_y).sum(0)
    model.train()
    sq, dots = g.pow(2).sum(1), g @ g_s
    for gamma in (0.0, 2.0, math.inf):
        ref = sq if gamma == 0 else dots if math.isinf(gamma) else sq + gamma * dots
        scores = DynamicAL(gamma=gamma, chunk_size=3).score(model, pool, labeled)
        err = float((scores - ref).abs().max() / ref.abs().max())
        assert err <= 1e-8, (gamma, err)
    assert model.training
    slow, phrase = EXPECTED[name]
    batches = list(pool)
    paths = DynamicAL().explain(model, batches[-1])
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert [p.name for p in paths] == names
    on_slow = {p.name for p in paths if p.path in ("vmap", "loop")}
    assert on_slow == {n for n in names if slow(n)}
    assert all(p.path.startswith(("fast (", "unused")) for p in paths if p.name not in on_slow)
    assert any(phrase in p.reason for p in paths) or not on_slow


@pytest.mark.parametrize("name", sorted(SEQ_FIRST))
def test_sequence_first_is_refused_on_the_batch_where_length_equals_batch(name):
    model, pool, *_ = _problem(name)
    last = list(pool)[-1]
    assert last[0].shape[0] == SEQ  # (T, B, E) with T == B: shapes alone cannot tell
    reasons = {p.name: p.reason for p in DynamicAL().explain(model, last) if p.path in ("vmap", "loop")}
    assert reasons and all("not the samples" in r for n, r in reasons.items() if ".linear" in n or "mix." in n)


@pytest.mark.parametrize("name", ["bert_masked", "timm_vit_checkpointing"])
def test_func_engine_names_the_reason_and_points_to_the_default(name):
    model, pool, labeled, *_ = _problem(name)
    with pytest.raises(ScoringError, match=r"engine='func' cannot score this model: torch.func.vmap failed.*"
                                           r"engine='auto'"):
        DynamicAL(engine="func").score(model, pool, labeled)


def test_slow_paths_are_warned_once_with_names_and_reasons():
    model, pool, labeled, *_ = _problem("functional_tied_head")
    strategy = DynamicAL()
    expected = r"(?s)1 of \d+ selected parameters.*emb.weight: vmap \(used 2 times"
    with pytest.warns(UserWarning, match=expected) as record:
        strategy.score(model, pool, labeled)
        strategy.score(model, pool, labeled)
    assert len([w for w in record if "slow exact path" in str(w.message)]) == 1


def test_a_parameter_with_a_gradient_hook_goes_to_the_loop_and_stays_exact():
    model, pool, labeled, pool_x, lab_x, lab_y = _problem("output_dict")
    model.fc.weight.register_hook(lambda g: 3 * g)
    model.eval()
    g = any_per_sample_grads(model, pool_x)
    ref = g.pow(2).sum(1)
    model.train()
    scores = DynamicAL(gamma=0.0).score(model, pool, labeled)
    assert float((scores - ref).abs().max() / ref.abs().max()) <= 1e-8
    paths = {p.name: p for p in DynamicAL().explain(model, next(iter(pool)))}
    assert paths["fc.weight"].path == "loop" and "gradient hook" in paths["fc.weight"].reason
    assert paths["fc.bias"].path.startswith("fast")


def test_scoring_holds_no_tensors_after_it_returns():
    """A hooked output and its site reference each other through autograd's C++ storage: the engine must
    break that cycle, or every scored batch stays in memory (seen with Linear on (B, T, D) inputs)."""
    import gc

    from tests.helpers.zoo import SeqFirstLinear

    def live_bytes() -> int:
        gc.collect()
        return sum(t.numel() * t.element_size() for t in gc.get_objects() if torch.is_tensor(t))

    torch.manual_seed(0)
    model = SeqFirstLinear()
    ids = torch.randint(0, 40, (64, 6))
    pool = DataLoader(list(zip(ids, torch.zeros(64, dtype=torch.long))), batch_size=8)
    DynamicAL(gamma=0).score(model, pool, [])
    before = live_bytes()
    DynamicAL(gamma=0).score(model, pool, [])
    assert live_bytes() - before < 4096
