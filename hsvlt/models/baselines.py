"""The ablation baselines of HSVLT (reports/ablation.py): the same backbone with the label-image interaction moved
to the end or removed. `build_model(config, E)` (hsvlt/models/factory.py) builds one when `config.fusion` names
it, and the trainer, checkpoints, evaluation and export handle them as they handle HSVLT: all three are
MultiLabelClassifiers (hsvlt/models/classifier.py).

    fusion="late"   "separate steps", Query2Label-style: the backbone runs all four stages on its own, then
                    the label tokens meet the last map only, in depths[-1] interaction blocks (IVLA's
                    cross-attention, multi-modal feature S and language update, without a visual update,
                    with pre-norms as `pre_norm` says); the per-class head scores that S. HSVLT without its
                    stage 1-3 interaction, in effect.
    fusion="none"   no vision-language interaction: global average pooling of the last map, LayerNorm and a
                    linear classifier. The label embeddings stay a buffer (checkpoints look alike), unused: it
                    has no label tokens (not a LabelQueryClassifier), so the deployable wrapper runs it on the
                    images alone.

The backbone's parameters keep HSVLT's names (stages.i.downsample, stages.i.blocks.j.visual), so ImageNet
weights (hsvlt.models.pretrained), backbone learning rates and frozen stages apply unchanged.
`aggregate_stages` is not used by either baseline.
"""

import torch
from torch import nn

from hsvlt.models.classifier import LabelQueryClassifier, MultiLabelClassifier, is_backbone
from hsvlt.models.config import HSVLTConfig
from hsvlt.models.csa import CrossScaleAggregation
from hsvlt.models.ivla import IVLABlock
from hsvlt.models.stages import Stage, StageSpec


class VisualBlock(nn.Module):
    """An IVLA block's visual update on its own (same parameter names)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, visual: torch.Tensor) -> torch.Tensor:
        return self.visual(visual)


def visual_stages(specs: list[StageSpec]) -> nn.ModuleList:
    """The backbone's four stages with no language in them, under HSVLT's parameter names."""
    return nn.ModuleList(
        Stage(spec.downsample, [VisualBlock(visual) for visual in spec.visual_blocks]) for spec in specs
    )


def visual_features(stages: nn.ModuleList, visual: torch.Tensor) -> torch.Tensor:
    """A normalised image, B x 3 x H x W, through `stages` -> the last stage's map, B x d4 x H/32 x W/32."""
    for stage in stages:
        visual = stage.downsample(visual)
        for block in stage.blocks:
            visual = block(visual)
    return visual


class LateFusionHSVLT(LabelQueryClassifier):
    """fusion="late": label queries attend to the last stage's map only, after the backbone."""

    def __init__(self, config: HSVLTConfig, label_embeddings: torch.Tensor):
        super().__init__(config, label_embeddings)
        num_classes, text_dim = label_embeddings.shape
        width, depth = config.widths[-1], config.depths[-1]
        drop_rates = self.drop_rates()
        self.stages = visual_stages(self.backbone_stages(drop_rates))
        self.language_projections = nn.ModuleList([nn.Linear(text_dim, width)])
        self.interaction = nn.ModuleList(
            IVLABlock(nn.Identity(), width, config.num_heads, rate, config.visual_feedback, final=j == depth - 1,
                      pre_norm=config.pre_norm, language_update=config.language_update, stage_entry=j == 0)
            for j, rate in enumerate(drop_rates[-depth:])
        )
        self.head = CrossScaleAggregation([width], num_classes, config.head_norm)
        self._init_weights()

    def forward_with_labels(self, images: torch.Tensor, labels: torch.Tensor, return_attention: bool = False):
        """As HSVLT's; with `return_attention`, one map: the last interaction block's, B x heads x C x h x w."""
        visual = visual_features(self.stages, self.normalise(images))  # B d4 h w
        labels = labels.expand(images.shape[0], -1, -1)  # B C d4
        for block in self.interaction:
            visual, labels, features, attention = block(visual, labels)
        logits = self.head([features])
        return (logits, [attention.unflatten(-1, visual.shape[-2:])]) if return_attention else logits


class PooledClassifier(MultiLabelClassifier):
    """fusion="none": global average pooling, LayerNorm and a linear head (the plain ConvNeXt classifier)."""

    def __init__(self, config: HSVLTConfig, label_embeddings: torch.Tensor):
        super().__init__(config, label_embeddings)
        self.stages = visual_stages(self.backbone_stages(self.drop_rates()))
        self.norm = nn.LayerNorm(config.widths[-1], eps=1e-6)
        self.head = nn.Linear(config.widths[-1], self.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """The backbone as HSVLT's (the config's backbone_init), the head ConvNeXt's truncated normal."""
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                if is_backbone(name):
                    self._init_backbone_weight(module.weight)
                else:
                    nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor, return_attention: bool = False) -> torch.Tensor:
        """images: B x 3 x H x W RGB in [0, 1] -> logits B x C."""
        if return_attention:
            raise ValueError("the fusion='none' baseline has no label-to-pixel attention to return")
        pooled = visual_features(self.stages, self.normalise(images)).mean(dim=(2, 3))  # B d4
        return self.head(self.norm(pooled))  # B C
