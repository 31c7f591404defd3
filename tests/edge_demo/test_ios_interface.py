"""The Swift code's view of the Core ML model (HSVLTInterface in edge_demo/ios/HSVLTDemo/HSVLTClassifier.swift:
input and output names, symbolic shapes, metadata keys) is exactly what export/to_coreml.py writes. Swift cannot
be built here, so the names and shapes are parsed from the Swift source: it stays the one source of truth."""

import json
import re
from pathlib import Path

import pytest

from hsvlt.export import to_coreml

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")

SWIFT = Path(__file__).resolve().parents[2] / "edge_demo" / "ios" / "HSVLTDemo"


def swift_interface() -> dict:
    """HSVLTInterface's constants: {"inputs": {constant: name}, "outputs": ..., "keys": ..., "shapes": {name: [..]}}."""
    source = (SWIFT / "HSVLTClassifier.swift").read_text()
    body = re.search(r"enum HSVLTInterface \{(.*?)\n\}", source, re.S).group(1)
    strings = dict(re.findall(r'static let (\w+) = "([^"]*)"', body))
    arrays = {name: re.findall(r'"([^"]*)"', items)
              for name, items in re.findall(r"static let (\w+) = \[([^\]]*)\]", body)}
    interface = {"inputs": {k: v for k, v in strings.items() if k.endswith("Input")},
                 "outputs": {k: v for k, v in strings.items() if k.endswith("Output")},
                 "keys": {k: v for k, v in strings.items() if k.endswith("Key")}, "shapes": {}}
    for constant, shape in arrays.items():
        prefix = constant.removesuffix("Shape")
        owner = strings.get(prefix + "Input") or strings.get(prefix + "Output")
        assert owner is not None, f"{constant} belongs to no input or output"
        interface["shapes"][owner] = shape
    assert set(strings) == {*interface["inputs"], *interface["outputs"], *interface["keys"]}
    return interface


def resolve(symbolic: list[str], actual: list[int], sizes: dict[str, int]) -> bool:
    """As HSVLTClassifier.check: numbers and "C" / "S" must match, a lowercase symbol is any positive size."""
    return len(symbolic) == len(actual) and all(
        size == int(symbol) if symbol.isdigit() else size == sizes[symbol] if symbol in sizes else size > 0
        for symbol, size in zip(symbolic, actual))


@pytest.fixture(scope="module")
def packages(models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("coreml")
    with_attention, plain = folder / "HSVLT_attention.mlpackage", folder / "HSVLT.mlpackage"
    to_coreml.main(["--ckpt", str(models["checkpoint"]), "--out", str(with_attention), "--attention-stage", "1",
                    "--parity-images", "0"])
    to_coreml.main(["--ckpt", str(models["checkpoint"]), "--out", str(plain), "--parity-images", "0"])
    return {"attention": to_coreml.inspect_package(with_attention), "plain": to_coreml.inspect_package(plain)}


def test_names_and_shapes_are_those_of_the_exported_package(packages):
    swift = swift_interface()
    info = packages["attention"]
    assert set(swift["inputs"].values()) == set(info["inputs"])
    assert set(swift["outputs"].values()) == set(info["outputs"])
    metadata = info["metadata"]
    sizes = {"C": len(json.loads(metadata[swift["keys"]["labelsKey"]])),
             "S": int(metadata[swift["keys"]["inputSizeKey"]])}
    for name, (kind, shape) in info["inputs"].items():
        assert kind == "imageType"  # Vision hands the model an image
        assert resolve(swift["shapes"][name], shape, sizes), (name, shape)
    for name, shape in info["outputs"].items():
        assert resolve(swift["shapes"][name], shape, sizes), (name, shape)
    assert set(swift["shapes"]) == {*info["inputs"], *info["outputs"]}


def test_attention_is_the_only_optional_output(packages):
    swift = swift_interface()
    plain = packages["plain"]
    assert set(plain["inputs"]) == set(swift["inputs"].values())
    assert set(swift["outputs"].values()) - set(plain["outputs"]) == {swift["outputs"]["attentionOutput"]}


def test_metadata_keys_exist_and_hold_what_the_swift_decodes(packages):
    keys = swift_interface()["keys"]
    for info in packages.values():
        metadata = info["metadata"]
        assert set(keys.values()) <= set(metadata)
        labels = json.loads(metadata[keys["labelsKey"]])
        thresholds = json.loads(metadata[keys["thresholdsKey"]])
        assert all(isinstance(label, str) for label in labels)  # [String]
        assert len(thresholds) == len(labels) and all(isinstance(t, float) for t in thresholds)  # [Float]
        assert int(metadata[keys["inputSizeKey"]]) == info["inputs"]["image"][1][-1]  # Int(...)
        assert metadata[keys["presetKey"]] == "hsvlt_pico"


def test_swift_uses_the_interface_constants_and_never_repeats_their_strings():
    swift = swift_interface()
    code = {path.name: path.read_text() for path in SWIFT.glob("*.swift")}
    enum = re.search(r"enum HSVLTInterface \{.*?\n\}", code["HSVLTClassifier.swift"], re.S).group(0)
    code["HSVLTClassifier.swift"] = code["HSVLTClassifier.swift"].replace(enum, "")
    everything = "\n".join(code.values())
    constants = {**swift["inputs"], **swift["outputs"], **swift["keys"]}
    for constant, value in constants.items():
        assert f"HSVLTInterface.{constant}" in everything, f"{constant} is declared but not used"
        assert f'"{value}"' not in everything, f'"{value}" is written out instead of HSVLTInterface.{constant}'
    for constant in ("imageShape", "probabilitiesShape", "attentionShape"):
        assert f"HSVLTInterface.{constant}" in everything
