"""The networks: each returns logits. The classifiers end in an ``nn.Linear`` head (the last Linear); the
segmentation ``UNet`` ends in a 1x1 ``nn.Conv2d`` head giving per-pixel logits.

The paper's image networks take an image batch; ``TextTransformer`` and ``TokenTagger`` (per-token logits
``(batch, T, tags)``) take ``input_ids``/``attention_mask``.
"""

from lightning_dynamical.models.cifar_cnn import CifarCNN
from lightning_dynamical.models.digits_cnn import DigitsCNN
from lightning_dynamical.models.lenet import LeNet
from lightning_dynamical.models.mlp import MLP
from lightning_dynamical.models.resnet import resnet18
from lightning_dynamical.models.tagger import TokenTagger
from lightning_dynamical.models.text_transformer import TextTransformer
from lightning_dynamical.models.unet import UNet
from lightning_dynamical.models.vgg import VGG, vgg11

__all__ = ["MLP", "VGG", "CifarCNN", "DigitsCNN", "LeNet", "TextTransformer", "TokenTagger", "UNet", "resnet18",
           "vgg11"]
