import numpy as np
import pytest
import torch
from skimage import data as photos

from hsvlt.checkpoint import load_model
from hsvlt.deploy.wrapper import AsTrainedHSVLT
from hsvlt.models import create_model
from hsvlt.models.efficientnet_lite import (
    LITE0_WIDTHS,
    UNUSED_BY_HSVLT,
    EfficientNetLite0,
    checkpoint_filter,
    fold_batch_norm,
    hsvlt_key_prefixes,
    imagenet_weights_path,
    unit_scale_stages,
)
from hsvlt.models.pretrained import load_pretrained
from hsvlt.preprocess import prepare_image, to_input
from hsvlt.train import main, parse_args

torch.set_flush_denormal(True)
# ImageNet-1k indices (the order of the ILSVRC2012 class list, e.g. opencv-doc's
# classification_classes_ILSVRC2012.txt): 281 tabby, 282 tiger cat, 283 Persian cat, 284 Siamese cat,
# 285 Egyptian cat; 504 coffee mug, 967 espresso, 968 cup.
CATS = {281, 282, 283, 284, 285}
COFFEE = {504, 967, 968}


@pytest.fixture(scope="module")
def package_weights() -> dict:
    return torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def photo_batch() -> torch.Tensor:
    return torch.from_numpy(to_input(np.stack([prepare_image(photos.chelsea(), 224),
                                               prepare_image(photos.coffee(), 224)])))


def embeddings(classes: int = 5) -> torch.Tensor:
    return torch.randn(classes, 384, generator=torch.Generator().manual_seed(0))


def backbone_path(model, images: torch.Tensor) -> list[torch.Tensor]:
    """What the label tokens attend to in each stage when IVLA leaves the map alone: downsample, then the
    visual update of every block."""
    visual, maps = (images - model.pixel_mean) / model.pixel_std, []
    for stage in model.stages:
        visual = stage.downsample(visual)
        for block in stage.blocks:
            visual = block.visual(visual)
        maps.append(visual)
    return maps


def randomise_batch_norms(module: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    for norm in module.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            size = norm.num_features
            norm.running_mean.copy_(torch.randn(size, generator=generator) * 0.5)
            norm.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            norm.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            norm.bias.data.copy_(torch.randn(size, generator=generator) * 0.2)


def test_lite0_structure_has_no_squeeze_excitation_and_reaches_stride_32():
    model = EfficientNetLite0().eval()
    assert sum(p.numel() for p in model.parameters()) == 4_652_008  # EfficientNet-Lite0 as published
    leaf_types = {type(m).__name__ for m in model.modules() if not list(m.children())}
    assert leaf_types == {"Conv2d", "BatchNorm2d", "ReLU6", "ZeroPad2d", "Linear", "DropPath"}, leaf_types
    assert model.features(torch.rand(1, 3, 224, 224)).shape == (1, 320, 7, 7)


def test_the_key_mapping_covers_all_296_package_tensors(package_weights):
    assert len(package_weights) == 296
    renamed = checkpoint_filter(package_weights)
    own = EfficientNetLite0().state_dict()
    assert set(renamed) == set(own)
    assert all(renamed[key].shape == own[key].shape for key in own)
    # In HSVLT, everything but the ImageNet head has a place, and every backbone tensor has a source.
    unused = sorted(key for key in renamed if key.startswith(UNUSED_BY_HSVLT))
    assert unused == ["classifier.bias", "classifier.weight", "head.bn.bias", "head.bn.num_batches_tracked",
                      "head.bn.running_mean", "head.bn.running_var", "head.bn.weight", "head.conv.weight"]
    model = create_model("hsvlt_lite0", embeddings())
    hsvlt_state = model.state_dict()
    prefixes = hsvlt_key_prefixes(model.config.depths)
    targets = {}
    for key, tensor in renamed.items():
        if key in unused:
            continue
        prefix = next(p for p in prefixes if key.startswith(p))
        target = prefixes[prefix] + key[len(prefix):]
        assert hsvlt_state[target].shape == tensor.shape, (key, target)
        targets[key] = target
    assert len(set(targets.values())) == len(targets) == 288
    backbone = {key for key in hsvlt_state if ".downsample." in f".{key}" or ".visual." in key}
    assert backbone == set(targets.values())


def test_imagenet_weights_see_a_cat_and_a_coffee(package_weights, photo_batch):
    model = EfficientNetLite0().eval()
    model.load_state_dict(checkpoint_filter(package_weights))
    with torch.no_grad():
        logits = model(photo_batch)
    top = logits.argmax(dim=1).tolist()
    assert top[0] in CATS, top
    assert top[1] in COFFEE, top
    # The unit-scale reparametrisation hsvlt_lite0 loads computes the same network.
    rescaled = EfficientNetLite0().eval()
    rescaled.load_state_dict(unit_scale_stages(checkpoint_filter(package_weights)))
    with torch.no_grad():
        torch.testing.assert_close(rescaled(photo_batch), logits, rtol=1e-4, atol=1e-3)


def test_hsvlt_lite0_backbone_is_the_imagenet_network_at_unit_scale(package_weights, photo_batch):
    model = create_model("hsvlt_lite0", embeddings()).eval()
    report = load_pretrained(model, "imagenet")
    assert "288 backbone tensors" in report and "ignored 8" in report
    reference = EfficientNetLite0().eval()
    reference.load_state_dict(unit_scale_stages(checkpoint_filter(package_weights)))
    with torch.no_grad():
        maps = backbone_path(model, photo_batch)
        torch.testing.assert_close(maps[-1], reference.features(photo_batch), rtol=1e-5, atol=1e-5)
        logits = reference.classifier(reference.head(maps[-1]).mean(dim=(2, 3)))
    assert logits.argmax(dim=1)[0].item() in CATS and logits.argmax(dim=1)[1].item() in COFFEE
    assert [m.shape[1] for m in maps] == list(LITE0_WIDTHS)
    rms = [m.pow(2).mean().sqrt().item() for m in maps]
    assert all(0.4 < r < 2.5 for r in rms), rms  # as loaded, 3-9: see unit_scale_stages


@pytest.mark.parametrize("size", [64, 96])
def test_hsvlt_lite0_attends_at_strides_4_to_32(size):
    model = create_model("hsvlt_lite0", embeddings(7)).eval()
    with torch.no_grad():
        logits, attention = model(torch.rand(2, 3, size, size), return_attention=True)
    assert logits.shape == (2, 7)
    assert [tuple(a.shape) for a in attention] == [(2, 1, 7, size // s, size // s) for s in (4, 8, 16, 32)]
    for stage in attention:
        torch.testing.assert_close(stage.flatten(3).sum(-1), torch.ones(2, 1, 7))


def test_fold_batch_norm_keeps_the_outputs_and_leaves_no_batch_norm():
    model = EfficientNetLite0()
    randomise_batch_norms(model)
    model.eval()
    images = torch.rand(2, 3, 64, 64)
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 49  # the original is untouched
    with torch.no_grad():
        torch.testing.assert_close(folded(images), model(images), rtol=1e-4, atol=1e-4)


def test_fold_batch_norm_on_the_deployable_hsvlt_lite0():
    model = create_model("hsvlt_lite0", embeddings())
    randomise_batch_norms(model)
    deployable = AsTrainedHSVLT(model)
    folded = fold_batch_norm(deployable)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(images), deployable(images), rtol=1e-4, atol=1e-5)


def test_lite0_defaults_to_imagenet_weights_unless_told_otherwise():
    assert parse_args(["--model", "hsvlt_lite0"]).pretrained == "imagenet"
    scratch = parse_args(["--model", "hsvlt_lite0", "--no-pretrained"])
    assert scratch.pretrained is None and scratch.backbone_lr_scale == 1.0
    assert parse_args(["--model", "hsvlt_nano"]).pretrained is None
    with pytest.raises(SystemExit):
        parse_args(["--model", "hsvlt_lite0", "--pretrained", "imagenet", "--no-pretrained"])


def test_train_cli_runs_hsvlt_lite0_and_frozen_stages_keep_their_statistics(tmp_path, capsys):
    out = tmp_path / "run"
    main(["--model", "hsvlt_lite0", "--img-size", "64", "--train-size", "16", "--val-size", "8", "--epochs", "1",
          "--batch-size", "8", "--workers", "0", "--freeze-stages", "2", "--out", str(out)])
    assert "288 backbone tensors loaded" in capsys.readouterr().out
    trained, _ = load_model(out / "best.pt")
    start = create_model("hsvlt_lite0", trained.label_embeddings, img_size=64)
    load_pretrained(start, "imagenet")
    before, after = start.state_dict(), trained.state_dict()
    frozen = [k for k in before if k.startswith(("stages.0.", "stages.1.")) and ".bn." in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # weights and running stats
    assert not torch.equal(before["stages.2.downsample.0.project.bn.running_mean"],
                           after["stages.2.downsample.0.project.bn.running_mean"])
