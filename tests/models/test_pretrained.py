"""ConvNeXt checkpoint import. The synthetic checkpoints are written from ConvNeXt's published key layouts
(the original release and timm), independently of hsvlt/models/pretrained.py's mapping rules."""

import pytest
import torch

from hsvlt.models import create_model
from hsvlt.models.efficientnet_lite import imagenet_weights_path
from hsvlt.models.pretrained import PretrainedError, load_pretrained

torch.set_flush_denormal(True)


def convnext_checkpoint(depths, widths, layout: str) -> tuple[dict, dict]:
    """Random ImageNet-ConvNeXt-shaped weights: (state dict, {checkpoint key: HSVLT key}) for its backbone."""
    generator = torch.Generator().manual_seed(sum(depths) + len(layout))
    state, expected = {}, {}

    def add(key, shape, ours=None):
        state[key] = torch.randn(shape, generator=generator)
        if ours is not None:
            expected[key] = ours

    stem = "downsample_layers.0" if layout == "original" else "stem"
    add(f"{stem}.0.weight", (widths[0], 3, 4, 4), "stages.0.downsample.0.weight")
    add(f"{stem}.0.bias", (widths[0],), "stages.0.downsample.0.bias")
    add(f"{stem}.1.weight", (widths[0],), "stages.0.downsample.1.weight")
    add(f"{stem}.1.bias", (widths[0],), "stages.0.downsample.1.bias")
    for i, (depth, width) in enumerate(zip(depths, widths)):
        if i > 0:
            down = f"downsample_layers.{i}" if layout == "original" else f"stages.{i}.downsample"
            add(f"{down}.0.weight", (widths[i - 1],), f"stages.{i}.downsample.0.weight")
            add(f"{down}.0.bias", (widths[i - 1],), f"stages.{i}.downsample.0.bias")
            add(f"{down}.1.weight", (width, widths[i - 1], 2, 2), f"stages.{i}.downsample.1.weight")
            add(f"{down}.1.bias", (width,), f"stages.{i}.downsample.1.bias")
        for j in range(depth):
            block, ours = (f"stages.{i}.{j}" if layout == "original" else f"stages.{i}.blocks.{j}",
                           f"stages.{i}.blocks.{j}.visual")
            names = ({"dwconv": "dwconv", "norm": "norm", "pwconv1": "pwconv1", "pwconv2": "pwconv2"}
                     if layout == "original" else
                     {"conv_dw": "dwconv", "norm": "norm", "mlp.fc1": "pwconv1", "mlp.fc2": "pwconv2"})
            shapes = {"dwconv": (width, 1, 7, 7), "norm": (width,), "pwconv1": (4 * width, width),
                      "pwconv2": (width, 4 * width)}
            for theirs, our_name in names.items():
                add(f"{block}.{theirs}.weight", shapes[our_name], f"{ours}.{our_name}.weight")
                bias = 4 * width if our_name == "pwconv1" else width
                add(f"{block}.{theirs}.bias", (bias,), f"{ours}.{our_name}.bias")
            add(f"{block}.gamma", (width,), f"{ours}.gamma")
    head = {"norm": "norm", "head": "head"} if layout == "original" else {"norm": "head.norm", "head": "head.fc"}
    add(f"{head['norm']}.weight", (widths[-1],))
    add(f"{head['norm']}.bias", (widths[-1],))
    add(f"{head['head']}.weight", (1000, widths[-1]))
    add(f"{head['head']}.bias", (1000,))
    return state, expected


def embeddings() -> torch.Tensor:
    return torch.randn(5, 384, generator=torch.Generator().manual_seed(0))


def save(tmp_path, state: dict, wrapper: str | None):
    path = tmp_path / f"convnext_{wrapper or 'plain'}.pth"
    torch.save({wrapper: state, "epoch": 300} if wrapper else state, path)
    return path


@pytest.mark.parametrize("preset", ["hsvlt_pico", "hsvlt_nano"])
@pytest.mark.parametrize("layout", ["original", "timm"])
@pytest.mark.parametrize("wrapper", [None, "model", "state_dict"])
def test_every_backbone_tensor_lands_where_it_should(tmp_path, preset, layout, wrapper):
    model = create_model(preset, embeddings())
    fresh_before = {k: v.clone() for k, v in model.state_dict().items() if "cross_attention" in k or k == "head.weight"}
    state, expected = convnext_checkpoint(model.config.depths, model.config.widths, layout)
    report = load_pretrained(model, str(save(tmp_path, state, wrapper)))
    own = model.state_dict()
    for theirs, ours in expected.items():
        assert torch.equal(own[ours], state[theirs]), (theirs, ours)
    backbone = [k for k in own if ".downsample." in f".{k}" or ".visual." in k]
    assert sorted(backbone) == sorted(expected.values())
    assert all(torch.equal(own[k], v) for k, v in fresh_before.items())  # the interaction layers start fresh
    assert f"{len(expected)} backbone tensors loaded" in report and "ignored 4" in report
    assert "language_projections" in report and "IVLA cross_attention" in report and "head" in report


def test_a_deeper_checkpoint_is_an_error_naming_the_key(tmp_path):
    model = create_model("hsvlt_pico", embeddings())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state, _ = convnext_checkpoint((1, 1, 2, 1), model.config.widths, "original")
    with pytest.raises(PretrainedError, match=r"'stages\.2\.1\.dwconv\.weight' has no place in hsvlt_pico"):
        load_pretrained(model, str(save(tmp_path, state, "model")))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # nothing loaded


def test_a_shallower_checkpoint_is_an_error_naming_the_missing_key(tmp_path):
    model = create_model("hsvlt_pico", embeddings(), depths=(1, 1, 2, 1))
    state, _ = convnext_checkpoint((1, 1, 1, 1), model.config.widths, "timm")
    with pytest.raises(PretrainedError, match=r"nothing for 'stages\.2\.blocks\.1\.visual\."):
        load_pretrained(model, str(save(tmp_path, state, None)))


def test_a_width_mismatch_is_an_error_naming_the_key(tmp_path):
    model = create_model("hsvlt_nano", embeddings())
    state, _ = convnext_checkpoint(model.config.depths, (16, 32, 48, 64), "timm")
    with pytest.raises(PretrainedError, match=r"'stem\.0\.weight' has shape \(16, 3, 4, 4\), hsvlt_nano needs "
                                              r"\(48, 3, 4, 4\)"):
        load_pretrained(model, str(save(tmp_path, state, "state_dict")))


def test_files_that_are_not_convnext_checkpoints_are_one_line_errors(tmp_path):
    model = create_model("hsvlt_pico", embeddings())
    with pytest.raises(PretrainedError, match="missing.pth: pretrained weights not found"):
        load_pretrained(model, str(tmp_path / "missing.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedError, match="garbage.pth: not a readable checkpoint"):
        load_pretrained(model, str(garbage))
    resnet = save(tmp_path, {"conv1.weight": torch.zeros(64, 3, 7, 7)}, None)
    with pytest.raises(PretrainedError, match="'conv1.weight' is not a ConvNeXt key"):
        load_pretrained(model, str(resnet))
    with pytest.raises(PretrainedError, match="EfficientNet-Lite0"):
        load_pretrained(model, "imagenet")
    lite0 = create_model("hsvlt_lite0", embeddings())
    state, _ = convnext_checkpoint((1, 1, 1, 1), (16, 32, 48, 64), "original")
    with pytest.raises(PretrainedError, match="'downsample_layers.0.0.weight' is not an EfficientNet-Lite0 key"):
        load_pretrained(lite0, str(save(tmp_path, state, "model")))


def test_lite0_loads_the_same_weights_from_a_file(tmp_path):
    packaged, from_file = create_model("hsvlt_lite0", embeddings()), create_model("hsvlt_lite0", embeddings())
    load_pretrained(packaged, "imagenet")
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    load_pretrained(from_file, str(save(tmp_path, {f"module.{k}": v for k, v in state.items()}, "state_dict")))
    backbone = [k for k in packaged.state_dict() if ".downsample." in f".{k}" or ".visual." in k]
    assert all(torch.equal(packaged.state_dict()[k], from_file.state_dict()[k]) for k in backbone)
