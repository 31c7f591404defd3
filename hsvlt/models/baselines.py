"""The ablation baselines of HSVLT (hsvlt.ablation): the same backbone with the label-image interaction moved
to the end or removed. `build_model(config, E)` (hsvlt/models/factory.py) builds one when `config.fusion` names
it, so the trainer, checkpoints, evaluation and export handle them like any HSVLT.

    fusion="late"   "separate steps", Query2Label-style: the backbone runs all four stages on its own, then
                    the label tokens meet the last map only, in depths[-1] interaction blocks (IVLA's
                    cross-attention, multi-modal feature S and language update, without a visual update);
                    the per-class head scores that S. HSVLT without its stage 1-3 interaction, in effect.
    fusion="none"   no vision-language interaction: global average pooling of the last map, LayerNorm and a
                    linear classifier. The label embeddings stay a buffer (checkpoints look alike), unused.

The backbone's parameters keep HSVLT's names (stages.i.downsample, stages.i.blocks.j.visual), so ImageNet
weights (hsvlt.models.pretrained), backbone learning rates and frozen stages apply unchanged.
`aggregate_stages` is not used by either baseline.
"""

import torch
from torch import nn

from hsvlt.models.csa import CrossScaleAggregation
from hsvlt.models.hsvlt import HSVLT, Stage, StageSpec
from hsvlt.models.ivla import IVLABlock


class VisualBlock(nn.Module):
    """An IVLA block's visual update on its own (same parameter names)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, visual: torch.Tensor) -> torch.Tensor:
        return self.visual(visual)


class BackboneBaseline(HSVLT):
    """Shared part of the baselines: the four backbone stages with no language in them."""

    def _build_backbone(self, specs: list[StageSpec]) -> None:
        self.stages = nn.ModuleList(
            Stage(spec.downsample, [VisualBlock(visual) for visual in spec.visual_blocks]) for spec in specs
        )

    def visual_features(self, images: torch.Tensor) -> torch.Tensor:
        """images: B x 3 x H x W in [0, 1] -> the last stage's map, B x d4 x H/32 x W/32."""
        visual = (images - self.pixel_mean) / self.pixel_std
        for stage in self.stages:
            visual = stage.downsample(visual)
            for block in stage.blocks:
                visual = block(visual)
        return visual


class LateFusionHSVLT(BackboneBaseline):
    """fusion="late": label queries attend to the last stage's map only, after the backbone."""

    def _build(self, specs: list[StageSpec], drop_rates: list[float], text_dim: int, num_classes: int) -> None:
        config, width, depth = self.config, self.config.widths[-1], self.config.depths[-1]
        self._build_backbone(specs)
        self.language_projections = nn.ModuleList([nn.Linear(text_dim, width)])
        self.interaction = nn.ModuleList(
            IVLABlock(nn.Identity(), width, config.num_heads, rate, config.visual_feedback, final=j == depth - 1)
            for j, rate in enumerate(drop_rates[-depth:])
        )
        self.head = CrossScaleAggregation([width], num_classes)

    def forward_with_labels(self, images: torch.Tensor, labels: torch.Tensor, return_attention: bool = False):
        """As HSVLT's; with `return_attention`, one map: the last interaction block's, B x heads x C x h x w."""
        visual = self.visual_features(images)  # B d4 h w
        labels = labels.expand(images.shape[0], -1, -1)  # B C d4
        for block in self.interaction:
            visual, labels, features, attention = block(visual, labels)
        logits = self.head([features])
        return (logits, [attention.unflatten(-1, visual.shape[-2:])]) if return_attention else logits


class PooledClassifier(BackboneBaseline):
    """fusion="none": global average pooling, LayerNorm and a linear head (the plain ConvNeXt classifier)."""

    def _build(self, specs: list[StageSpec], drop_rates: list[float], text_dim: int, num_classes: int) -> None:
        self._build_backbone(specs)
        self.norm = nn.LayerNorm(self.config.widths[-1], eps=1e-6)
        self.head = nn.Linear(self.config.widths[-1], num_classes)

    def _init_weights(self) -> None:
        """The backbone as HSVLT's (the config's backbone_init), the head ConvNeXt's truncated normal."""
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                if name.startswith("stages."):
                    self._init_backbone_weight(module.weight)
                else:
                    nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def encode_labels(self) -> torch.Tensor:
        """The label embeddings themselves: this model has no language path (the input is ignored)."""
        return self.label_embeddings

    def forward_with_labels(self, images: torch.Tensor, labels: torch.Tensor, return_attention: bool = False):
        if return_attention:
            raise ValueError("the fusion='none' baseline has no label-to-pixel attention to return")
        pooled = self.visual_features(images).mean(dim=(2, 3))  # B d4
        return self.head(self.norm(pooled))  # B C
