"""fashion-mosaic: composed scenes of Fashion-MNIST item photos.

The scene tests run against Debian's dataset-fashion-mnist files when they are installed, and against a small
IDX fixture written here (same format) when they are not; the IDX reader tests always use written files.
"""

import gzip
from dataclasses import replace

import numpy as np
import pytest

from hsvlt.data import build_data
from hsvlt.data.fashion_mosaic import (
    CLASSES,
    DEFAULT_ROOT,
    MAX_SIZE,
    MIN_SIZE,
    SIZE_EDGES,
    FashionMosaicDataset,
    IDXError,
    compose_scene,
    load_items,
    read_idx,
    render_scene,
)

REAL_FILES = all((DEFAULT_ROOT / f"{prefix}-{kind}.gz").is_file()
                 for prefix in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    """The IDX format: 2 zero bytes, type code 0x08 (uint8), the number of dimensions, big-endian sizes, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def fixture_items(count: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` 28 x 28 item photos (a bright blob whose grey level makes each one unique) and their labels,
    every class in each half."""
    labels = np.tile(np.arange(len(CLASSES)), count // len(CLASSES))
    yy, xx = np.mgrid[0:28, 0:28]
    images = []
    for i, label in enumerate(labels):
        blob = ((xx - 13.5) / (4 + label)) ** 2 + ((yy - 13.5) / (12 - label)) ** 2 < 1
        images.append(blob * (60 + offset + i))
    return np.array(images, dtype=np.uint8), labels


def write_fixture(root) -> None:
    for prefix, count, offset in (("train", 40, 0), ("t10k", 20, 100)):
        images, labels = fixture_items(count, offset)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, compress=False)  # raw IDX reads too


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    if REAL_FILES:
        return DEFAULT_ROOT
    folder = tmp_path_factory.mktemp("fashion-mnist")
    write_fixture(folder)
    return folder


def test_scenes_are_a_pure_function_of_seed_split_and_index(root):
    first = FashionMosaicDataset("train", 10, 96, seed=3, root=root)
    again = FashionMosaicDataset("train", 10, 96, seed=3, root=root)
    for i in range(5):
        image, target = first.load(i)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, again.load(i)[0])
        np.testing.assert_array_equal(target, again.load(i)[1])
    other_seed = FashionMosaicDataset("train", 10, 96, seed=4, root=root)
    assert any(first.scene(i) != other_seed.scene(i) for i in range(5))
    assert len({first.load(i)[0].tobytes() for i in range(5)}) == 5


def test_each_split_uses_only_its_own_item_photos(root):
    train_images, train_labels = load_items(str(root), "train")
    test_file_images, _ = load_items(str(root), "t10k")
    half = len(test_file_images) // 2
    splits = {name: FashionMosaicDataset(name, 60, 64, root=root) for name in ("train", "val", "test")}
    np.testing.assert_array_equal(splits["train"].photos, train_images)
    np.testing.assert_array_equal(splits["val"].photos, test_file_images[:half])
    np.testing.assert_array_equal(splits["test"].photos, test_file_images[half:])
    used = {}
    for name, dataset in splits.items():
        used[name] = {dataset.first_photo + item.item for i in range(len(dataset)) for item in dataset.scene(i).items}
        assert all(item.item < len(dataset.photos) for i in range(len(dataset)) for item in dataset.scene(i).items)
    assert max(used["val"]) < half <= min(used["test"])
    assert not used["val"] & used["test"]


def test_targets_name_exactly_the_classes_of_the_items_drawn(root):
    dataset = FashionMosaicDataset("val", 200, 64, root=root)
    targets, sizes = dataset.targets(), dataset.object_sizes()
    assert targets.shape == sizes.shape == (200, len(CLASSES))
    for i in range(len(dataset)):
        scene = dataset.scene(i)
        labels = [item.label for item in scene.items]
        assert 1 <= len(labels) <= 4 and len(set(labels)) == len(labels)
        assert all(dataset.photo_labels[item.item] == item.label for item in scene.items)  # a real photo of it
        assert sorted(np.flatnonzero(targets[i])) == sorted(labels)
        np.testing.assert_array_equal(np.isfinite(sizes[i]), targets[i] > 0)
    np.testing.assert_array_equal(dataset.load(7)[1], targets[7])
    assert set(np.unique(targets)) == {0.0, 1.0}
    assert (targets.sum(0) > 0).all()  # every class occurs


def test_item_sizes_span_4x_with_small_items_common(root):
    dataset = FashionMosaicDataset("train", 600, 64, root=root)
    items = [item for i in range(len(dataset)) for item in dataset.scene(i).items]
    sizes = np.array([item.size for item in items])
    assert MAX_SIZE / MIN_SIZE >= 4
    assert sizes.min() >= MIN_SIZE and sizes.max() <= MAX_SIZE
    assert sizes.max() / sizes.min() > 3.5
    buckets = np.bincount(np.digitize(sizes, SIZE_EDGES), minlength=3) / len(sizes)
    assert buckets[0] > 0.25 and (buckets > 0.2).all(), buckets
    assert all(item.extent / 2 <= item.x <= 1 - item.extent / 2 and item.extent / 2 <= item.y <= 1 - item.extent / 2
               for item in items)  # the whole box is inside the image
    counts = np.bincount([len(dataset.scene(i).items) for i in range(len(dataset))], minlength=5)
    assert counts[0] == 0 and (counts[1:] > 0).all()


def test_items_may_touch_but_none_is_hidden(root):
    dataset = FashionMosaicDataset("val", 150, 96, root=root)
    visible, overlapping = [], 0
    for i in range(len(dataset)):
        scene = dataset.scene(i)
        image, fractions = compose_scene(scene, dataset.photos, 96)
        visible += fractions
        overlapping += any(fraction < 0.99 for fraction in fractions)
    assert min(visible) > 0.5
    assert overlapping > 0  # items do overlap sometimes


def test_items_are_drawn_inside_their_boxes(root):
    dataset = FashionMosaicDataset("train", 30, 128, root=root)
    for i in range(len(dataset)):
        scene = dataset.scene(i)
        with_items = render_scene(scene, dataset.photos, 128).astype(float)
        surface = render_scene(replace(scene, items=()), dataset.photos, 128).astype(float)
        change = np.abs(with_items - surface).max(-1)
        yy, xx = (np.mgrid[0:128, 0:128] + 0.5) / 128
        margin = 0.07  # the soft shadow reaches a little past the box (offset + 3 sigma of its blur)
        boxes = np.zeros((128, 128), bool)
        for item in scene.items:
            half = item.extent / 2 + margin
            boxes |= (abs(xx - item.x) < half) & (abs(yy - item.y) < half)
            centre = (abs(xx - item.x) < item.size / 4) & (abs(yy - item.y) < item.size / 4)
            assert change[centre].mean() > 10  # something is drawn at every item's place
        assert change[~boxes].max() <= 2  # the shadow's far tail changes pixels by rounding


def test_build_data_gives_the_fashion_label_set(root):
    bundle = build_data("fashion-mosaic", root=str(root), image_size=64, train_size=8, val_size=4)
    assert bundle.labels == list(CLASSES)
    assert bundle.embeddings.shape == (len(CLASSES), 384)
    assert len(bundle.train) == 8 and len(bundle.val) == 4 and bundle.val.split == "val"


def test_read_idx_gzip_and_raw(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "a", array, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), array)


@pytest.mark.parametrize("content, reason", [
    (b"", "bad magic number"),
    (b"\x00\x00\x08", "bad magic number"),
    (b"\x01\x02\x08\x01" + b"\x00" * 8, "bad magic number"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]), r"holds 10 bytes, but its header \(5,\) needs 13"),
    (gzip.compress(b"\x00\x00\x08\x01", mtime=0)[:-6], "cannot be read"),
])
def test_bad_idx_file_is_a_one_line_error_naming_it(tmp_path, content, reason):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(IDXError, match=reason) as error:
        read_idx(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_or_inconsistent_files_name_the_file(tmp_path):
    with pytest.raises(IDXError, match="train-images-idx3-ubyte.*not found.*dataset-fashion-mnist"):
        FashionMosaicDataset("train", 4, 64, root=tmp_path)
    images, labels = fixture_items(20, 0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:15])
    with pytest.raises(IDXError, match=r"train-labels-idx1-ubyte.gz: \(15,\) labels for 20 images"):
        load_items(str(tmp_path), "train")
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.where(labels == 3, 12, labels))
    with pytest.raises(IDXError, match="label 12 is not one of the 10 classes"):
        load_items(str(tmp_path), "t10k")
    with pytest.raises(ValueError, match="splits"):
        FashionMosaicDataset("holdout", 4, 64, root=tmp_path)


def test_train_command_names_a_missing_dataset_folder(tmp_path, capsys):
    from hsvlt.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--data", "fashion-mosaic", "--root", str(tmp_path / "absent"), "--model", "hsvlt_pico",
              "--out", str(tmp_path / "run")])
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "absent/train-images-idx3-ubyte" in message and "\n" not in message
