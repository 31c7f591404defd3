"""HSVLT: Hierarchical Scale-Aware Vision-Language Transformer (ACM MM 2023).

    image ──stem──► V1 ─IVLA×N1─► ──down──► V2 ─IVLA×N2─► ... V4 ─IVLA×N4─►
    labels E ─Linear─► L1 ───┘     ─Linear─► L2 ───┘        ─Linear─► L4 ───┘
                             S1               S2                      S4
    CSA: concat(S1..S4) ─► per-class head ─► logits

The model takes RGB images in [0, 1] and normalises them itself, so there is exactly one copy of the
normalisation constants (the config) for training, evaluation, export and the demo. Its deployable form,
RewrittenHSVLT (`HSVLT.deployable`), is built from the deployable forms of its blocks (hsvlt/models/deployable.py).
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from hsvlt.models.classifier import LabelQueryClassifier
from hsvlt.models.config import HSVLTConfig
from hsvlt.models.convnext import DropPath, rewrite_visual
from hsvlt.models.csa import CrossScaleAggregation
from hsvlt.models.deployable import Rewrites, conv_after_affine
from hsvlt.models.efficientnet_lite import LITE0_MEAN, LITE0_STD, LITE0_WIDTHS, fold_batch_norm
from hsvlt.models.ivla import IVLABlock
from hsvlt.models.stages import Stage


class HSVLT(LabelQueryClassifier):
    """The model drawn above: images in [0, 1] -> logits, label tokens meeting the map in every stage."""

    def __init__(self, config: HSVLTConfig, label_embeddings: torch.Tensor):
        super().__init__(config, label_embeddings)
        num_classes, text_dim = label_embeddings.shape
        drop_rates = self.drop_rates()
        specs = self.backbone_stages(drop_rates)
        self.stages = nn.ModuleList()
        self.language_projections = nn.ModuleList()
        block, last = 0, sum(len(spec.visual_blocks) for spec in specs) - 1
        for i, (spec, width) in enumerate(zip(specs, config.widths)):
            blocks = []
            for j, visual in enumerate(spec.visual_blocks):
                blocks.append(IVLABlock(visual, width, config.num_heads, drop_rates[block], config.visual_feedback,
                                        final=block == last, pre_norm=config.pre_norm,
                                        language_update=config.language_update, stage_entry=j == 0))
                block += 1
            self.stages.append(Stage(spec.downsample, blocks))
            in_dim = text_dim if i == 0 else config.widths[i - 1]
            self.language_projections.append(nn.Linear(in_dim, width))
        self.head = CrossScaleAggregation([config.widths[i] for i in config.aggregate_stages], num_classes,
                                          config.head_norm)
        self._init_weights()

    def forward_with_labels(self, images: torch.Tensor, labels: torch.Tensor, return_attention: bool = False):
        """forward() with the first label tokens given (C x d1, encode_labels()); with `return_attention` also
        the label-to-pixel attention of the last block of each stage, B x heads x C x H_i x W_i."""
        visual = self.normalise(images)
        labels = labels.expand(images.shape[0], -1, -1)  # B C d1
        multimodal, attention_maps = [], []
        for i, stage in enumerate(self.stages):
            visual = stage.downsample(visual)
            if i > 0:
                labels = self.language_projections[i](labels)
            for block in stage.blocks:
                visual, labels, features, attention = block(visual, labels)
            multimodal.append(features)
            if return_attention:
                attention_maps.append(attention.unflatten(-1, visual.shape[-2:]))
        logits = self.head([multimodal[i] for i in self.config.aggregate_stages])
        return (logits, attention_maps) if return_attention else logits

    def deployable(self, attention_stage: int | None = None, rewrites: Rewrites = Rewrites(),
                   logits: bool = False) -> "RewrittenHSVLT":
        """A rewritten copy for export (RewrittenHSVLT): the same function with operators the XNNPACK delegate
        runs whole; this model is left unchanged."""
        return RewrittenHSVLT(self, attention_stage, rewrites, logits)


PRESETS: dict[str, HSVLTConfig] = {
    "hsvlt_pico": HSVLTConfig(preset="hsvlt_pico", depths=(1, 1, 1, 1), widths=(16, 32, 48, 64), img_size=64),
    # Trained from scratch: layer scale starts at 1, not ConvNeXt's 1e-6, and He init, not std 0.02; both keep
    # the visual blocks nearly off for hundreds of steps, which a short from-scratch run cannot afford. In a
    # one-off comparison on single upright shapes, layer scale 1 learned far faster than ConvNeXt's init in the
    # same steps, and He init on top of it faster again (no report reruns it).
    "hsvlt_nano": HSVLTConfig(preset="hsvlt_nano", depths=(2, 2, 6, 2), widths=(48, 96, 192, 384),
                              layer_scale_init=1.0, backbone_init="kaiming"),
    "hsvlt_tiny": HSVLTConfig(preset="hsvlt_tiny", depths=(3, 3, 9, 3), widths=(96, 192, 384, 768), drop_path=0.1),
    "hsvlt_small": HSVLTConfig(
        preset="hsvlt_small", depths=(3, 3, 27, 3), widths=(96, 192, 384, 768), img_size=448, drop_path=0.2
    ),
    # ImageNet-pretrained EfficientNet-Lite0 (hsvlt/models/efficientnet_lite.py). One IVLA block per stage: only
    # the stride-16 stage has two width-keeping MBConv blocks to share out, and giving each its own IVLA block,
    # depths (1, 1, 2, 1), measured no faster and clearly less accurate in a one-off short run on shapes (no
    # report reruns it).
    "hsvlt_lite0": HSVLTConfig(preset="hsvlt_lite0", backbone="efficientnet_lite0", depths=(1, 1, 1, 1),
                               widths=LITE0_WIDTHS, mean=LITE0_MEAN, std=LITE0_STD),
}


# ---- deployable form -------------------------------------------------------------------------------------


class RewrittenHSVLT(nn.Module):
    """The deployable model after the rewrites: images in [0, 1] (B x 3 x H x W) -> probabilities B x C, and
    with `attention_stage` also that stage's label-to-pixel attention B x C x h x w (mean over heads), the
    contract of hsvlt.deploy.wrapper.AsTrainedHSVLT (the same model not rewritten)."""

    def __init__(self, model: HSVLT, attention_stage: int | None = None, rewrites: Rewrites = Rewrites(),
                 logits: bool = False):
        super().__init__()
        stages = len(model.stages)
        if attention_stage is not None and not 0 <= attention_stage < stages:
            raise ValueError(f"attention_stage must be 0..{stages - 1}, got {attention_stage}")
        self.logits = logits
        model = fold_batch_norm(model) if rewrites.batch_norm else copy.deepcopy(model).eval()
        for parent in list(model.modules()):  # stochastic depth is the identity at inference
            for name, child in parent.named_children():
                if isinstance(child, DropPath):
                    setattr(parent, name, nn.Identity())
        self.config, self.attention_stage = model.config, attention_stage
        self.register_buffer("pixel_mean", model.pixel_mean.clone())
        self.register_buffer("pixel_std", model.pixel_std.clone())
        with torch.no_grad():
            self.register_buffer("label_tokens", model.encode_labels().detach().clone())  # C d1
        self.downsample = nn.ModuleList(rewrite_visual(stage.downsample, rewrites) for stage in model.stages)
        self.normalise = not (rewrites.normalisation and self.fold_normalisation(self.downsample[0]))
        self.stages = nn.ModuleList()
        self.constant_labels = rewrites.label_constants and rewrites.attention  # folded into LabelAttention
        classes = self.label_tokens.shape[0]
        for i, (stage, pixels) in enumerate(zip(model.stages, self.map_pixels(model))):
            pixel_side = model.config.num_heads == 1 and pixels < classes
            self.stages.append(nn.ModuleList(
                block.deployable(rewrites, self.label_tokens if self.constant_labels and i == j == 0 else None,
                                 pixel_side)
                for j, block in enumerate(stage.blocks)))
        self.language_projections = nn.ModuleList(list(model.language_projections)[1:])
        self.head = model.head.deployable() if rewrites.head else model.head

    @staticmethod
    def map_pixels(model: HSVLT) -> list[int]:
        """Pixels of each stage's map at the model's input size, read from one forward pass."""
        size = model.config.img_size
        with torch.no_grad():
            _, maps = model(torch.zeros(1, 3, size, size), return_attention=True)  # B h C H_i W_i
        return [attention.shape[-2] * attention.shape[-1] for attention in maps]

    def fold_normalisation(self, stem: nn.Module) -> bool:
        """conv((x - mean) / std) as one conv, where the stem starts with a conv that does not pad."""
        first = stem[0] if isinstance(stem, nn.Sequential) else None
        if not isinstance(first, nn.Conv2d) or first.padding != (0, 0):
            return False
        stem[0] = conv_after_affine(1 / self.pixel_std.flatten(), -(self.pixel_mean / self.pixel_std).flatten(), first)
        return True

    def forward(self, image: torch.Tensor):
        visual = (image - self.pixel_mean) / self.pixel_std if self.normalise else image
        labels = None if self.constant_labels else self.label_tokens.expand(image.shape[0], -1, -1)
        multimodal, maps = [], []
        for i, (downsample, blocks) in enumerate(zip(self.downsample, self.stages)):
            visual = downsample(visual)
            if i > 0:
                labels = self.language_projections[i - 1](labels)
            for block in blocks:
                visual, labels, features, attention = block(visual, labels)
            multimodal.append(features)
            maps.append((attention, visual.shape[-2:]))
        scores = self.head([multimodal[i] for i in self.config.aggregate_stages])  # B C logits
        if not self.logits:
            scores = torch.sigmoid(scores)
        if self.attention_stage is None:
            return scores
        return scores, self.mean_over_heads(*maps[self.attention_stage])  # B C, B C h w

    @staticmethod
    def mean_over_heads(attention: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """B C heads HW -> B C h w. With several heads the mean is an average pooling over the heads axis
        (mean.dim over heads is not delegated)."""
        classes, heads = attention.shape[1:3]
        if heads > 1:
            attention = F.avg_pool2d(attention, (heads, 1))  # B C 1 HW
        return attention.reshape(-1, classes, *size)


ExportHSVLT = RewrittenHSVLT  # the earlier name, kept for existing callers
