"""What a model is built from: HSVLTConfig, the one description of HSVLT and its ablation baselines that
checkpoints carry (to_dict / from_dict) and every model is built from (hsvlt.models.build_model)."""

from dataclasses import asdict, dataclass, fields

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONE_INITS = ("trunc_normal", "kaiming")
FUSIONS = ("ivla", "late", "none")  # HSVLT, and the ablation baselines of hsvlt/models/baselines.py


@dataclass(frozen=True)
class HSVLTConfig:
    preset: str = "custom"
    backbone: str = "convnext"  # a key of hsvlt.models.classifier.BACKBONES
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
