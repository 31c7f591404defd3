"""HSVLT: Hierarchical Scale-Aware Vision-Language Transformer (ACM MM 2023).

    image ──stem──► V1 ─IVLA×N1─► ──down──► V2 ─IVLA×N2─► ... V4 ─IVLA×N4─►
    labels E ─Linear─► L1 ───┘     ─Linear─► L2 ───┘        ─Linear─► L4 ───┘
                             S1               S2                      S4
    CSA: concat(S1..S4) ─► per-class head ─► logits

The model takes RGB images in [0, 1] and normalises them itself, so there is exactly one copy of the
normalisation constants (the config) for training, evaluation, export and the demo.
"""

from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from hsvlt.models.convnext import ConvNeXtBlock, downsample, stem
from hsvlt.models.csa import CrossScaleAggregation
from hsvlt.models.efficientnet_lite import LITE0_MEAN, LITE0_STD, LITE0_WIDTHS, efficientnet_lite0_stages
from hsvlt.models.ivla import IVLABlock

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONE_INITS = ("trunc_normal", "kaiming")
FUSIONS = ("ivla", "late", "none")  # HSVLT, and the ablation baselines of hsvlt/models/baselines.py


@dataclass(frozen=True)
class HSVLTConfig:
    preset: str = "custom"
    backbone: str = "convnext"  # a key of BACKBONES
    depths: tuple[int, ...] = (2, 2, 6, 2)  # IVLA blocks per stage
    widths: tuple[int, ...] = (48, 96, 192, 384)
    img_size: int = 224
    num_heads: int = 1
    drop_path: float = 0.0
    layer_scale_init: float = 1e-6
    backbone_init: str = "trunc_normal"  # "trunc_normal": ConvNeXt's std 0.02; "kaiming": He fan-in, for from scratch
    visual_feedback: bool = False
    pre_norm: bool = True  # LayerNorm where label / visual tokens enter IVLA (hsvlt/models/ivla.py)
    aggregate_stages: tuple[int, ...] = (0, 1, 2, 3)  # stages whose S feeds CSA
    fusion: str = "ivla"  # "ivla": HSVLT; "late" / "none": the ablation baselines (hsvlt/models/baselines.py)
    mean: tuple[float, ...] = IMAGENET_MEAN  # on the [0, 1] scale
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.backbone_init not in BACKBONE_INITS:
            raise ValueError(f"unknown backbone_init {self.backbone_init!r}; choose from {', '.join(BACKBONE_INITS)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; choose from {', '.join(FUSIONS)}")
        if not self.aggregate_stages or not all(0 <= i < len(self.widths) for i in self.aggregate_stages):
            stages = f"0-{len(self.widths) - 1}"
            raise ValueError(f"aggregate_stages {tuple(self.aggregate_stages)} must name stages {stages}")

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "HSVLTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown HSVLT config keys: {sorted(unknown)}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})


@dataclass
class StageSpec:
    """What a backbone gives one stage: the layer that brings the map to this stage's stride and width,
    and the visual update of each IVLA block."""

    downsample: nn.Module
    visual_blocks: list[nn.Module] = field(default_factory=list)


def convnext_stages(config: HSVLTConfig, drop_rates: list[float]) -> list[StageSpec]:
    specs, block = [], 0
    for i, (depth, width) in enumerate(zip(config.depths, config.widths)):
        down = stem(width) if i == 0 else downsample(config.widths[i - 1], width)
        visual = [ConvNeXtBlock(width, drop_rates[block + j], config.layer_scale_init) for j in range(depth)]
        specs.append(StageSpec(down, visual))
        block += depth
    return specs


BACKBONES = {"convnext": convnext_stages, "efficientnet_lite0": efficientnet_lite0_stages}


class Stage(nn.Module):
    def __init__(self, downsample: nn.Module, blocks: list[IVLABlock]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)


class HSVLT(nn.Module):
    def __init__(self, config: HSVLTConfig, label_embeddings: torch.Tensor):
        super().__init__()
        if label_embeddings.dim() != 2:
            raise ValueError(f"label embeddings must be C x D, got shape {tuple(label_embeddings.shape)}")
        self.config = config
        num_classes, text_dim = label_embeddings.shape
        self.register_buffer("label_embeddings", label_embeddings.detach().float().clone())
        self.register_buffer("pixel_mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

        drop_rates = torch.linspace(0, config.drop_path, sum(config.depths)).tolist()
        self._build(BACKBONES[config.backbone](config, drop_rates), drop_rates, text_dim, num_classes)
        self._init_weights()

    def _build(self, specs: list[StageSpec], drop_rates: list[float], text_dim: int, num_classes: int) -> None:
        """The stages of IVLA blocks, the language projections and the CSA head."""
        config = self.config
        self.stages = nn.ModuleList()
        self.language_projections = nn.ModuleList()
        block, last = 0, sum(len(spec.visual_blocks) for spec in specs) - 1
        for i, (spec, width) in enumerate(zip(specs, config.widths)):
            blocks = []
            for visual in spec.visual_blocks:
                blocks.append(IVLABlock(visual, width, config.num_heads, drop_rates[block], config.visual_feedback,
                                        final=block == last, pre_norm=config.pre_norm))
                block += 1
            self.stages.append(Stage(spec.downsample, blocks))
            in_dim = text_dim if i == 0 else config.widths[i - 1]
            self.language_projections.append(nn.Linear(in_dim, width))
        self.head = CrossScaleAggregation([config.widths[i] for i in config.aggregate_stages], num_classes)

    def _init_weights(self) -> None:
        """Backbone: ConvNeXt's truncated normal (std 0.02), or He's fan-in normal with `backbone_init="kaiming"`,
        which keeps activations at unit scale through the stack and is what a from-scratch model needs (std 0.02
        shrinks every pointwise layer's output ~10x, and the blocks stay effectively off). Interaction layers: variance-preserving Xavier
        init, and the first language projection scaled to the embeddings' RMS, so that label tokens start at
        unit scale. With 0.02 everywhere, the products in IVLA shrink the multi-modal feature S to ~1e-7 and
        a model trained from scratch does not learn (sentence embeddings are unit-norm, unlike BERT's).
        Residual branches that gate or add to a stream (language gate, visual feedback) start closed."""
        for name, module in self.named_modules():
            if not isinstance(module, (nn.Linear, nn.Conv2d)):
                continue
            if ".visual." in name or ".downsample." in name:
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

    @property
    def num_classes(self) -> int:
        return self.label_embeddings.shape[0]

    def encode_labels(self) -> torch.Tensor:
        """The stage-1 language tokens, C x d1: they depend on the label embeddings only, so a deployed
        model holds them as a constant (hsvlt.deploy)."""
        return self.language_projections[0](self.label_embeddings)

    def forward(self, images: torch.Tensor, return_attention: bool = False):
        """images: B x 3 x H x W RGB in [0, 1]. Returns logits (B x C), and with `return_attention` also
        the label-to-pixel attention of the last block of each stage, B x heads x C x H_i x W_i."""
        return self.forward_with_labels(images, self.encode_labels(), return_attention)

    def forward_with_labels(self, images: torch.Tensor, labels: torch.Tensor, return_attention: bool = False):
        visual = (images - self.pixel_mean) / self.pixel_std
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


PRESETS: dict[str, HSVLTConfig] = {
    "hsvlt_pico": HSVLTConfig(preset="hsvlt_pico", depths=(1, 1, 1, 1), widths=(16, 32, 48, 64), img_size=64),
    # Trained from scratch: layer scale starts at 1, not ConvNeXt's 1e-6, and He init, not std 0.02; both keep
    # the visual blocks nearly off for hundreds of steps. On single upright shapes at 64 px: 36% top-1 after
    # 300 steps with ConvNeXt's init, 72% with layer scale 1, 86% after 200 steps with layer scale 1 and He init.
    "hsvlt_nano": HSVLTConfig(preset="hsvlt_nano", depths=(2, 2, 6, 2), widths=(48, 96, 192, 384),
                              layer_scale_init=1.0, backbone_init="kaiming"),
    "hsvlt_tiny": HSVLTConfig(preset="hsvlt_tiny", depths=(3, 3, 9, 3), widths=(96, 192, 384, 768), drop_path=0.1),
    "hsvlt_small": HSVLTConfig(
        preset="hsvlt_small", depths=(3, 3, 27, 3), widths=(96, 192, 384, 768), img_size=448, drop_path=0.2
    ),
    # ImageNet-pretrained EfficientNet-Lite0 (hsvlt/models/efficientnet_lite.py). One IVLA block per stage: only
    # the stride-16 stage has two width-keeping MBConv blocks to share out, and giving each its own IVLA block,
    # depths (1, 1, 2, 1), measured no faster and worse on shapes (800 train / 200 val scenes, 2 epochs, 128 px,
    # one contended core): val mAP 37.4 vs 44.8; batch-1 latency at 224 px 69.3 vs 69.5 ms.
    "hsvlt_lite0": HSVLTConfig(preset="hsvlt_lite0", backbone="efficientnet_lite0", depths=(1, 1, 1, 1),
                               widths=LITE0_WIDTHS, mean=LITE0_MEAN, std=LITE0_STD),
}

