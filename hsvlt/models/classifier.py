"""What every model of this package is to the trainer, checkpoints, evaluation and export, shared by HSVLT
(hsvlt/models/hsvlt.py) and its ablation baselines (hsvlt/models/baselines.py):

    MultiLabelClassifier    images in [0, 1] -> one logit per class: the config, the label embeddings E, the
                            pixel normalisation, the backbone's stages, the head's per-class bias
    LabelQueryClassifier    one whose label tokens, E through the first language projection, query the image
                            (HSVLT, late fusion): encode_labels, forward_with_labels, the interaction's init
"""

import torch
from torch import nn

from hsvlt.models.config import HSVLTConfig
from hsvlt.models.convnext import convnext_stages
from hsvlt.models.efficientnet_lite import efficientnet_lite0_stages
from hsvlt.models.ivla import IVLABlock
from hsvlt.models.stages import StageSpec

BACKBONES = {"convnext": convnext_stages, "efficientnet_lite0": efficientnet_lite0_stages}


def is_backbone(name: str) -> bool:
    """Whether the module, parameter or state-dict key of this name belongs to the visual backbone: a stem or
    downsampling layer, or the visual update of an IVLA block. This is what ImageNet weights initialise, what has
    the backbone's learning rate, and what --freeze-stages freezes."""
    return ".downsample." in f".{name}" or ".visual." in name


class MultiLabelClassifier(nn.Module):
    """Images in [0, 1] (B x 3 x H x W) -> logits B x C, called as model(images) or, where the model has
    label-to-pixel attention, model(images, return_attention=True) -> (logits, one map per stage it returns).

    Holds the config it was built from (checkpoints store it), the label embeddings E (C x D, a buffer: a
    checkpoint carries its classes) and the normalisation constants, so there is exactly one copy of them for
    training, evaluation, export and the demo. Subclasses build `stages` (under the parameter names ImageNet
    weights, backbone learning rates and frozen stages go by) and a `head` whose bias holds one logit per class."""

    def __init__(self, config: HSVLTConfig, label_embeddings: torch.Tensor):
        super().__init__()
        if label_embeddings.dim() != 2:
            raise ValueError(f"label embeddings must be C x D, got shape {tuple(label_embeddings.shape)}")
        self.config = config
        self.register_buffer("label_embeddings", label_embeddings.detach().float().clone())
        self.register_buffer("pixel_mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.label_embeddings.shape[0]

    def drop_rates(self) -> list[float]:
        """Stochastic depth per IVLA block, rising linearly from 0 to config.drop_path."""
        return torch.linspace(0, self.config.drop_path, sum(self.config.depths)).tolist()

    def backbone_stages(self, drop_rates: list[float]) -> list[StageSpec]:
        """The stages of the backbone `config.backbone` names, freshly built."""
        return BACKBONES[self.config.backbone](self.config, drop_rates)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:  # B 3 H W in [0, 1] -> B 3 H W
        return (images - self.pixel_mean) / self.pixel_std

    def _init_backbone_weight(self, weight: torch.Tensor) -> None:
        if self.config.backbone_init == "kaiming":
            nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
        else:
            nn.init.trunc_normal_(weight, std=0.02)

    def init_head_bias(self, prevalence: torch.Tensor) -> None:
        """Start each class's logit at its training-set prevalence (clipped to [1e-3, 0.5]): the loss then
        starts at the prior's entropy instead of spending the first thousand steps learning the prior."""
        p = prevalence.detach().float().clamp(1e-3, 0.5).to(self.head.bias.device)
        with torch.no_grad():
            self.head.bias.copy_(torch.log(p / (1 - p)))


class LabelQueryClassifier(MultiLabelClassifier):
    """A classifier whose label tokens query the image: E through `language_projections[0]` gives the first
    tokens, C x d1, which depend on the labels only, so a deployed model holds them as a constant
    (hsvlt.deploy). Subclasses define forward_with_labels(images, labels, return_attention)."""

    def encode_labels(self) -> torch.Tensor:
        """The first language tokens, C x d1."""
        return self.language_projections[0](self.label_embeddings)

    def forward(self, images: torch.Tensor, return_attention: bool = False):
        """images: B x 3 x H x W RGB in [0, 1]. Returns logits (B x C), and with `return_attention` also
        label-to-pixel attention maps, each B x heads x C x H_i x W_i."""
        return self.forward_with_labels(images, self.encode_labels(), return_attention)

    def _init_weights(self) -> None:
        """Backbone: ConvNeXt's truncated normal (std 0.02), or He's fan-in normal with `backbone_init="kaiming"`,
        which keeps activations at unit scale through the stack and is what a from-scratch model needs (std 0.02
        shrinks every pointwise layer's output ~10x, and the blocks stay effectively off). Interaction layers:
        variance-preserving Xavier init, and the first language projection scaled to the embeddings' RMS, so
        that label tokens start at unit scale. With 0.02 everywhere, the products in IVLA shrink the multi-modal
        feature S to ~1e-7 and a model trained from scratch does not learn (sentence embeddings are unit-norm,
        unlike BERT's). Residual branches that gate or add to a stream (language gate, visual feedback) start
        closed."""
        for name, module in self.named_modules():
            if not isinstance(module, (nn.Linear, nn.Conv2d)):
                continue
            if is_backbone(name):
                self._init_backbone_weight(module.weight)
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        embedding_rms = float(self.label_embeddings.pow(2).mean().sqrt().clamp(min=1e-6))
        text_dim = self.label_embeddings.shape[1]
        nn.init.normal_(self.language_projections[0].weight, std=1.0 / (embedding_rms * text_dim**0.5))
        for module in self.modules():
            if isinstance(module, IVLABlock):
                module.reset_residual_branches()
