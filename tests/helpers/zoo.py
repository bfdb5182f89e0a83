"""Real model code as users write it: timm, Hugging Face transformers, torchvision, and plain patterns that
trip naive per-sample engines. Random init, float64, tiny inputs; nothing is downloaded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

VOCAB, SEQ = 40, 6


@dataclass
class Case:
    """A model factory and an input factory ``n -> batch inputs`` (a tensor or a dict of model inputs)."""

    model: Callable[[], nn.Module]
    inputs: Callable[[int], Tensor | dict[str, Tensor]]


def images(size: int, channels: int = 3) -> Callable[[int], Tensor]:
    return lambda n: torch.randn(n, channels, size, size)


def tokens(mask: bool, types: bool = False) -> Callable[[int], dict[str, Tensor]]:
    def make(n: int) -> dict[str, Tensor]:
        ids = torch.randint(1, VOCAB, (n, SEQ))
        out = {"input_ids": ids}
        if mask:
            lengths = torch.randint(2, SEQ + 1, (n,))
            out["attention_mask"] = (torch.arange(SEQ) < lengths[:, None]).long()
        if types:
            out["token_type_ids"] = torch.zeros(n, SEQ, dtype=torch.long)
        return out
    return make


class SeqFirstEncoder(nn.Module):
    """A batch-first model around ``nn.TransformerEncoder`` in its default sequence-first layout."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids: Tensor) -> Tensor:
        h = self.encoder(self.embed(ids).transpose(0, 1))  # (T, B, E)
        return self.fc(self.norm(h.mean(0)))


class SeqFirstLinear(nn.Module):
    """Only ``nn.Linear`` on a ``(T, B, E)`` input: its rows on dim 0 are positions, not samples."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        self.mix = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids: Tensor) -> Tensor:
        h = torch.tanh(self.mix(self.embed(ids).transpose(0, 1)))
        return self.fc(h.mean(0))


class FunctionalTiedHead(nn.Module):
    """An embedding weight reused functionally as an output projection (as DeBERTa's MLM head does)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.dense = nn.Linear(8, 8)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(VOCAB, 3)

    def forward(self, ids: Tensor) -> Tensor:
        h = torch.tanh(self.dense(self.drop(self.emb(ids).mean(1))))
        return self.fc(h @ self.emb.weight.T)


class RawParameters(nn.Module):
    """Raw ``nn.Parameter``s used functionally, next to a BatchNorm'd convolution: a broadcast scale and a
    linear map (closed forms), and a temperature through ``exp`` (no closed form)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 4))
        self.w = nn.Parameter(torch.randn(3, 4) * 0.3)
        self.b = nn.Parameter(torch.zeros(3))
        self.log_t = nn.Parameter(torch.tensor(0.3))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn(self.conv(x))).mean((2, 3)) * self.gamma
        return nn.functional.linear(h, self.w, self.b) * self.log_t.exp()


class PositionMajorRows(SeqFirstLinear):
    """A linear map on rows flattened position-major, ``(T * B, E)``: rows are grouped, but not by sample."""

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(ids).transpose(0, 1)  # (T, B, E)
        t, b, e = h.shape
        h = torch.tanh(self.mix(h.reshape(t * b, e))).reshape(t, b, e)
        return self.fc(h.mean(0))


class RigidPositions(nn.Module):
    """Position embeddings looked up once for the batch, then reshaped to exactly one row: expanding the
    lookup to the batch breaks this code, so the engine must fall back to the lookup as written."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, 8)
        self.pos = nn.Embedding(SEQ, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids: Tensor) -> Tensor:
        pos = self.pos(torch.arange(ids.shape[1]).unsqueeze(0)).view(1, ids.shape[1], 8)
        return self.fc(torch.tanh(self.tok(ids) + pos).mean(1))


class OutputKinds(nn.Module):
    """A model returning a dict, a tuple or an object with ``.logits``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.lin = nn.Linear(5, 6)
        self.bn = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(6, 3)

    def forward(self, features: Tensor, scale: Tensor | None = None) -> object:
        logits = self.fc(self.drop(torch.relu(self.bn(self.lin(features)))))
        if scale is not None:
            logits = logits * scale
        if self.kind == "dict":
            return {"logits": logits, "hidden": features}
        if self.kind == "tuple":
            return logits, features
        from transformers.modeling_outputs import SequenceClassifierOutput
        return SequenceClassifierOutput(logits=logits)


def _hf(name: str, **extra: object) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import transformers
        config_cls = getattr(transformers, f"{name}Config")
        model_cls = getattr(transformers, f"{name}ForSequenceClassification")
        small = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
        small.update(extra)
        return model_cls(config_cls(**small))
    return make


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2ForSequenceClassification
    config = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=16, num_labels=3,
                        pad_token_id=0)
    return GPT2ForSequenceClassification(config)


def _timm(name: str, checkpointing: bool = False, **kwargs: object) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import timm
        model = timm.create_model(name, pretrained=False, num_classes=3, **kwargs)
        if checkpointing:
            model.set_grad_checkpointing(True)
        return model
    return make


def _mixer() -> nn.Module:
    """timm's MLP-Mixer as initialised: its head is zeros, so every dense layer below receives a zero gradient."""
    from timm.models.mlp_mixer import MlpMixer
    return MlpMixer(num_classes=3, img_size=16, patch_size=4, num_blocks=2, embed_dim=32)


def _mobilenet() -> nn.Module:
    from torchvision.models import mobilenet_v3_small
    return mobilenet_v3_small(num_classes=3)


VIT = dict(img_size=16, patch_size=8)
CASES: dict[str, Case] = {
    "seq_first_encoder": Case(SeqFirstEncoder, lambda n: torch.randint(0, VOCAB, (n, SEQ))),
    "seq_first_linear": Case(SeqFirstLinear, lambda n: torch.randint(0, VOCAB, (n, SEQ))),
    "functional_tied_head": Case(FunctionalTiedHead, lambda n: torch.randint(0, VOCAB, (n, SEQ))),
    "raw_parameters": Case(RawParameters, images(6)),
    "position_major_rows": Case(PositionMajorRows, lambda n: torch.randint(0, VOCAB, (n, SEQ))),
    "rigid_positions": Case(RigidPositions, lambda n: torch.randint(0, VOCAB, (n, SEQ))),
    "bert_masked": Case(_hf("Bert"), tokens(mask=True, types=True)),
    "albert_masked": Case(_hf("Albert", embedding_size=8), tokens(mask=True)),
    "deberta": Case(_hf("DebertaV2", max_relative_positions=8, position_buckets=4), tokens(mask=False)),
    "gpt2": Case(_gpt2, tokens(mask=False)),
    "timm_resnet18": Case(_timm("resnet18"), images(16)),
    "timm_efficientnet_b0": Case(_timm("efficientnet_b0"), images(32)),
    "timm_convnext_atto": Case(_timm("convnext_atto"), images(32)),
    "timm_vit_tiny": Case(_timm("vit_tiny_patch16_224", **VIT), images(16)),
    "timm_vit_checkpointing": Case(_timm("vit_tiny_patch16_224", checkpointing=True, **VIT), images(16)),
    "mobilenet_v3_small": Case(_mobilenet, images(32)),
    "timm_mixer_zero_head": Case(_mixer, images(16)),
    "output_dict": Case(lambda: OutputKinds("dict"), lambda n: {"features": torch.randn(n, 5)}),
    "output_tuple": Case(lambda: OutputKinds("tuple"), lambda n: {"features": torch.randn(n, 5)}),
    "output_model_output": Case(lambda: OutputKinds("model_output"), lambda n: {"features": torch.randn(n, 5)}),
}
