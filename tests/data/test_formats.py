"""The real-format loaders, each on a tiny fixture written in its exact on-disk layout, and read_image."""

import json
import logging
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from hsvlt.data.coco import COCO_CLASSES, COCODataset
from hsvlt.data.custom_csv import CSVDataset, read_label_file
from hsvlt.data.nuswide import NUSWIDE_CLASSES, NUSWIDEDataset
from hsvlt.data.voc import VOC_CLASSES, VOCDataset
from hsvlt.images import BadImage, read_image

COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def write_image(path: Path, value: int = 127) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((6, 8, 3), value, np.uint8))


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --- VOC ---------------------------------------------------------------------------------------------------


def voc_object(name: str, difficult: str | None) -> str:
    flag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    return f"<object><name>{name}</name><pose>Left</pose>{flag}<bndbox><xmin>1</xmin></bndbox></object>"


def write_voc(root: Path, annotations: dict[str, list[tuple[str, str | None]]]) -> Path:
    folder = root / "VOCdevkit" / "VOC2007"
    write_text(folder / "ImageSets" / "Main" / "trainval.txt", "".join(f"{i}\n" for i in annotations))
    for image_id, objects in annotations.items():
        body = "".join(voc_object(name, difficult) for name, difficult in objects)
        xml = f"<annotation><filename>{image_id}.jpg</filename>{body}</annotation>"
        write_text(folder / "Annotations" / f"{image_id}.xml", xml)
        write_image(folder / "JPEGImages" / f"{image_id}.jpg")
    return folder


def test_voc_difficult_only_is_ignored_and_any_plain_object_is_positive(tmp_path):
    folder = write_voc(
        tmp_path,
        {
            "000005": [("chair", "1"), ("chair", "1"), ("dog", "1"), ("dog", "0"), ("person", "0")],
            "000007": [("car", None)],
        },
    )
    expected = np.zeros((2, 20), np.float32)
    expected[0, VOC_CLASSES.index("chair")] = -1
    expected[0, VOC_CLASSES.index("dog")] = 1
    expected[0, VOC_CLASSES.index("person")] = 1
    expected[1, VOC_CLASSES.index("car")] = 1
    for root in (tmp_path, tmp_path / "VOCdevkit", folder):
        dataset = VOCDataset(root)
        assert dataset.labels == list(VOC_CLASSES) and len(VOC_CLASSES) == 20
        assert dataset.labels[:3] == ["aeroplane", "bicycle", "bird"] and dataset.labels[-1] == "tvmonitor"
        np.testing.assert_array_equal(dataset.targets(), expected)
        assert dataset.targets().dtype == np.float32
        assert dataset.paths[1] == folder / "JPEGImages" / "000007.jpg"
        image, target = dataset.load(0)
        assert image.shape == (6, 8, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(target, expected[0])


def test_voc_bad_input_names_the_file(tmp_path):
    folder = write_voc(tmp_path, {"000005": [("dog", "0")], "000007": [("unicorn", "0")]})
    with pytest.raises(ValueError, match=r"000007\.xml: unknown VOC class 'unicorn'$"):
        VOCDataset(tmp_path)
    bad = folder / "Annotations" / "000007.xml"
    write_text(bad, "<annotation>\n<object><name>dog</name>\n</annotation>\n")
    with pytest.raises(ValueError) as error:
        VOCDataset(tmp_path)
    assert str(error.value).startswith(f"{bad}: not valid XML (mismatched tag: line 3")
    bad.unlink()
    with pytest.raises(FileNotFoundError, match=r"000007\.xml: file not found"):
        VOCDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="test.txt: file not found"):
        VOCDataset(tmp_path, split="test")
    with pytest.raises(FileNotFoundError, match="no VOC2007 dataset here"):
        VOCDataset(tmp_path / "elsewhere")


# --- COCO --------------------------------------------------------------------------------------------------


def write_coco(root: Path, categories: list[dict], annotations: list[dict], images: int = 3) -> Path:
    names = [f"COCO_val2014_{i:012d}.jpg" for i in range(images)]
    data = {
        "info": {"year": 2014},
        "images": [{"id": 100 + i, "file_name": name, "width": 8, "height": 6} for i, name in enumerate(names)],
        "annotations": [{"id": n, "iscrowd": 0, "bbox": [0, 0, 1, 1], **a} for n, a in enumerate(annotations)],
        "categories": categories,
    }
    path = root / "annotations" / "instances_val2014.json"
    write_text(path, json.dumps(data))
    for name in names:
        write_image(root / "val2014" / name)
    return path


def test_coco_80_categories_with_real_ids(tmp_path):
    assert len(COCO_IDS) == len(COCO_CLASSES) == 80
    categories = [{"id": i, "name": n, "supercategory": "x"} for i, n in zip(COCO_IDS, COCO_CLASSES)][::-1]
    annotations = [
        {"image_id": 100, "category_id": 90},
        {"image_id": 100, "category_id": 1},
        {"image_id": 100, "category_id": 13, "iscrowd": 1},
        {"image_id": 102, "category_id": 67},
        {"image_id": 102, "category_id": 67},
    ]
    write_coco(tmp_path, categories, annotations)
    dataset = COCODataset(tmp_path, split="val")
    assert dataset.labels == list(COCO_CLASSES)
    expected = np.zeros((3, 80), np.float32)
    expected[0, [0, 11, 79]] = 1  # person (id 1), stop sign (id 13, crowd), toothbrush (id 90)
    expected[2, 60] = 1  # dining table (id 67)
    np.testing.assert_array_equal(dataset.targets(), expected)
    assert [dataset.labels[i] for i in (0, 11, 60, 79)] == ["person", "stop sign", "dining table", "toothbrush"]
    assert dataset.paths[1] == tmp_path / "val2014" / "COCO_val2014_000000000001.jpg"
    assert dataset.load(1)[0].shape == (6, 8, 3)


def test_coco_few_categories_sorted_by_id(tmp_path):
    categories = [{"id": 90, "name": "zzz"}, {"id": 1, "name": "mmm"}, {"id": 5, "name": "aaa"}]
    annotations = [{"image_id": 101, "category_id": 90}, {"image_id": 100, "category_id": 5}]
    write_coco(tmp_path, categories, annotations)
    dataset = COCODataset(tmp_path, "val", "2014")
    assert dataset.labels == ["mmm", "aaa", "zzz"]
    np.testing.assert_array_equal(dataset.targets(), [[0, 1, 0], [0, 0, 1], [0, 0, 0]])


def test_coco_bad_input_names_the_file(tmp_path):
    named_wrong = [{"id": i, "name": n} for i, n in zip(COCO_IDS, COCO_CLASSES)]
    named_wrong[62]["name"] = "television"
    path = write_coco(tmp_path, named_wrong, [])
    with pytest.raises(ValueError, match=r"instances_val2014\.json: 80 categories, .*'television' where COCO has 'tv'"):
        COCODataset(tmp_path, "val")
    write_coco(tmp_path, [{"id": 1, "name": "a"}], [{"image_id": 100, "category_id": 2}])
    with pytest.raises(ValueError, match=r"^.*\.json: annotations\[0\] refers to unknown category id 2$"):
        COCODataset(tmp_path, "val")
    write_coco(tmp_path, [{"id": 1, "name": "a"}], [{"image_id": 7, "category_id": 1}])
    with pytest.raises(ValueError, match=r"annotations\[0\] refers to unknown image id 7$"):
        COCODataset(tmp_path, "val")
    write_coco(tmp_path, [{"id": 1}], [])
    with pytest.raises(ValueError, match=r"categories\[0\] lacks one of the fields id, name$"):
        COCODataset(tmp_path, "val")
    write_text(path, '{"images": [}')
    with pytest.raises(ValueError) as error:
        COCODataset(tmp_path, "val")
    assert str(error.value).startswith(f"{path}: not valid JSON (") and "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match=r"instances_train2014\.json: file not found"):
        COCODataset(tmp_path)


# --- NUS-WIDE ----------------------------------------------------------------------------------------------


def write_nuswide(root: Path, part: str, images: list[str], positives: dict[str, list[int]]) -> None:
    write_text(root / "Concepts81.txt", "\r\n".join(NUSWIDE_CLASSES) + "\r\n")
    write_text(root / "ImageList" / f"{part}Imagelist.txt", "".join(f"{image}\n" for image in images))
    for concept in NUSWIDE_CLASSES:
        column = ["1" if i in positives.get(concept, []) else "0" for i in range(len(images))]
        write_text(root / "TrainTestLabels" / f"Labels_{concept}_{part}.txt", "".join(f"{v} \n" for v in column))


def test_nuswide_official_layout(tmp_path, caplog):
    assert len(NUSWIDE_CLASSES) == 81 and NUSWIDE_CLASSES.index("sky") == 55
    train = ["actor\\0001_2124494179.jpg", "sky/0002_1.jpg", "gone\\0003_2.jpg"]
    write_nuswide(tmp_path, "Train", train, {"sky": [1, 2], "airport": [0], "zebra": [1]})
    write_nuswide(tmp_path, "Test", ["beach\\0009_9.jpg"], {"beach": [0]})
    write_image(tmp_path / "Flickr" / "actor" / "0001_2124494179.jpg")
    write_image(tmp_path / "Flickr" / "sky" / "0002_1.jpg")
    with caplog.at_level(logging.WARNING, logger="hsvlt.data.nuswide"):
        dataset = NUSWIDEDataset(tmp_path)
    assert [r.getMessage() for r in caplog.records] == [
        f"NUS-WIDE train: 1 of 3 listed images are missing, e.g. {tmp_path / 'Flickr' / 'gone' / '0003_2.jpg'}"
    ]
    assert dataset.labels == list(NUSWIDE_CLASSES)
    assert dataset.paths[0] == tmp_path / "Flickr" / "actor" / "0001_2124494179.jpg"
    expected = np.zeros((3, 81), np.float32)
    expected[0, 0] = expected[1, 55] = expected[2, 55] = expected[1, 80] = 1
    np.testing.assert_array_equal(dataset.targets(), expected)
    assert dataset.load(0)[0].shape == (6, 8, 3)
    with pytest.raises(BadImage):
        dataset.load(2)
    test = NUSWIDEDataset(tmp_path, split="val")
    assert test.paths == [tmp_path / "Flickr" / "beach" / "0009_9.jpg"]
    np.testing.assert_array_equal(test.targets()[0].nonzero()[0], [2])


def test_nuswide_bad_input_names_the_file(tmp_path):
    write_nuswide(tmp_path, "Train", ["a\\1.jpg", "a\\2.jpg"], {})
    labels = tmp_path / "TrainTestLabels" / "Labels_fox_Train.txt"
    write_text(labels, "0\n2\n")
    with pytest.raises(ValueError, match=r"Labels_fox_Train\.txt:2: '2' where 0 or 1 was expected$"):
        NUSWIDEDataset(tmp_path)
    write_text(labels, "0\n")
    with pytest.raises(ValueError, match=r"Labels_fox_Train\.txt: 1 labels, but the image list has 2 images$"):
        NUSWIDEDataset(tmp_path)
    labels.unlink()
    with pytest.raises(FileNotFoundError, match=r"Labels_fox_Train\.txt: file not found"):
        NUSWIDEDataset(tmp_path)
    write_text(tmp_path / "Concepts81.txt", "\n".join(NUSWIDE_CLASSES).replace("fox", "wolf"))
    with pytest.raises(ValueError, match=r"Concepts81\.txt: 81 concepts, .*'wolf' where NUS-WIDE has 'fox'"):
        NUSWIDEDataset(tmp_path)
    with pytest.raises(ValueError, match="expected one of train, val, test"):
        NUSWIDEDataset(tmp_path, split="validation")


# --- CSV ---------------------------------------------------------------------------------------------------


def test_csv_labels_ignored_empty_and_order(tmp_path):
    csv_path = tmp_path / "photos.csv"
    rows = ["image,labels,note", "hol/beach.jpg,person| sea |dog,x", "hol/night.jpg,,", "k.png,cup|?knife|?cup,"]
    write_text(csv_path, "\n".join(rows) + "\n")
    write_image(tmp_path / "hol" / "beach.jpg")
    dataset = CSVDataset(csv_path)
    assert dataset.labels == ["cup", "dog", "knife", "person", "sea"]
    np.testing.assert_array_equal(dataset.targets(), [[0, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 0, -1, 0, 0]])
    assert dataset.paths == [tmp_path / "hol" / "beach.jpg", tmp_path / "hol" / "night.jpg", tmp_path / "k.png"]
    assert dataset.load(0)[0].shape == (6, 8, 3)

    order = ["sea", "person", "knife", "dog", "cup", "tree"]
    given = CSVDataset(csv_path, image_root=tmp_path / "elsewhere", labels=order)
    assert given.labels == order
    np.testing.assert_array_equal(given.targets()[[0, 2]], [[1, 1, 0, 1, 0, 0], [0, 0, -1, 0, 1, 0]])
    assert given.paths[2] == tmp_path / "elsewhere" / "k.png"


def test_csv_bad_input_names_file_and_line(tmp_path):
    csv_path = tmp_path / "val.csv"
    write_text(csv_path, "image,labels\na.jpg,dog\nb.jpg,dog|cat\n")
    with pytest.raises(ValueError, match=r"^.*val\.csv:3: unknown label 'cat' \(not among the 1 labels given\)$"):
        CSVDataset(csv_path, labels=["dog"])
    write_text(csv_path, "image,tags\na.jpg,dog\n")
    with pytest.raises(ValueError, match=r"val\.csv:1: the header lacks the column\(s\) labels$"):
        CSVDataset(csv_path)
    write_text(csv_path, "image,labels\na.jpg,dog\nb.jpg\n")
    with pytest.raises(ValueError, match=r"val\.csv:3: 1 fields, but the header has 2$"):
        CSVDataset(csv_path)
    write_text(csv_path, 'image,labels\n"a.jpg,dog\n')
    with pytest.raises(ValueError, match=r"val\.csv:\d+: malformed CSV"):
        CSVDataset(csv_path)
    with pytest.raises(FileNotFoundError, match=r"nothing\.csv: file not found"):
        CSVDataset(tmp_path / "nothing.csv")


def test_read_label_file(tmp_path):
    path = tmp_path / "labels.txt"
    write_text(path, "# my classes\ncat\n\n  dog  \n# done\nteddy bear\n")
    assert read_label_file(path) == ["cat", "dog", "teddy bear"]
    write_text(path, "cat\ndog\ncat\n")
    with pytest.raises(ValueError, match=r"labels\.txt:3: label 'cat' listed twice$"):
        read_label_file(path)


# --- read_image --------------------------------------------------------------------------------------------


def test_read_image_converts_every_layout_to_rgb_uint8(tmp_path):
    gray = np.array([[0, 100], [200, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    image = read_image(tmp_path / "gray.png")
    assert image.shape == (2, 2, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 1], gray)

    bgra = np.zeros((1, 2, 4), np.uint8)
    bgra[0, 0] = (0, 0, 255, 255)  # opaque red
    bgra[0, 1] = (255, 0, 0, 0)  # transparent blue: composited over white
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), [[[255, 0, 0], [255, 255, 255]]])

    deep = np.zeros((1, 2, 3), np.uint16)
    deep[0, 0] = (65535, 0, 257 * 100)  # B, G, R
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png"), [[[100, 0, 255], [0, 0, 0]]])


def test_read_image_bad_files_raise_bad_image_only(tmp_path):
    ok, encoded = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "cut.jpg").write_bytes(encoded.tobytes()[: encoded.size // 2])
    try:
        image = read_image(tmp_path / "cut.jpg")
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    except BadImage as error:
        assert str(error).startswith(str(tmp_path / "cut.jpg"))
    write_text(tmp_path / "notes.jpg", "not an image at all\n")
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name, reason in [("notes.jpg", "not an image"), ("empty.jpg", "empty file"),
                         ("missing.jpg", "file not found")]:
        with pytest.raises(BadImage) as error:
            read_image(tmp_path / name)
        assert str(error.value) == f"{tmp_path / name}: {reason}"


def test_read_image_huge_header_is_bad_image(tmp_path):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)  # 10^10 pixels, RGB
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    with pytest.raises(BadImage, match=r"huge\.png: 100000 x 100000 pixels \(10,000\.0 megapixels\) is above the "
                                       r"limit of 200 megapixels \(HSVLT_MAX_MEGAPIXELS raises it\)$"):
        read_image(tmp_path / "huge.png")
