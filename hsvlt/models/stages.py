"""A model's four stages as a backbone gives them (StageSpec) and as the model holds them (Stage). Its own module
so that the backbone builders (hsvlt/models/convnext.py, hsvlt/models/efficientnet_lite.py) and the models built
on them (hsvlt/models/classifier.py) import it without importing each other."""

from dataclasses import dataclass, field

from torch import nn


@dataclass
class StageSpec:
    """What a backbone gives one stage: the layer that brings the map to this stage's stride and width,
    and the visual update of each IVLA block."""

    downsample: nn.Module
    visual_blocks: list[nn.Module] = field(default_factory=list)


class Stage(nn.Module):
    """One stage of a model: `downsample`, then `blocks` in order (parameter names stages.i.downsample.*,
    stages.i.blocks.j.*, which ImageNet weights, backbone learning rates and frozen stages go by)."""

    def __init__(self, downsample: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)
