"""Datasets as plug-ins: the built-in ones and one of your own (tests/data/marks.py, the example of docs/DESIGN.md)
go through one registry; yours trains through `python -m hsvlt.train --data module:NAME`, its checkpoint opens
its data again, and a bad --data is refused in one line naming the flag."""

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from hsvlt.checkpoint import load_checkpoint
from hsvlt.data import DATASETS, build_data, canonical_spec, find_dataset, register_dataset, registry
from hsvlt.data.base import MultiLabelDataset
from hsvlt.evaluate import main as evaluate_main
from hsvlt.train import parse_args

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TINY = ["--model", "hsvlt_pico", "--img-size", "32", "--train-size", "32", "--val-size", "16", "--batch-size", "16",
        "--epochs", "1", "--workers", "0", "--device", "cpu"]


def hsvlt_train(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m hsvlt.train ARGV` in `cwd`, importing this checkout's hsvlt and, as a user's installed module
    would be, tests/data/marks.py."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}
    return subprocess.run([sys.executable, "-m", "hsvlt.train", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture
def marks_importable(monkeypatch):
    """tests/data on sys.path for this test, as the folder of a user's own module would be."""
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture
def isolated(marks_importable, monkeypatch, tmp_path):
    """Datasets a test registers, and modules it imports from its files, stay out of the rest of the session."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None) or ""
        if Path(file).is_relative_to(tmp_path) or Path(file).is_relative_to(HERE):
            del sys.modules[name]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("marks")
    result = hsvlt_train("--data", "marks:marks", *TINY, "--out", "run", cwd=folder)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder / "run"


def test_a_dataset_of_your_own_trains_through_the_command(trained, marks_importable):
    import marks

    for name in ("best.pt", "last.pt", "metrics.json"):
        assert (trained / name).is_file(), name
    best = load_checkpoint(trained / "best.pt")
    assert best["data"]["name"] == "marks:marks"
    assert best["labels"] == list(marks.LABELS)
    args = load_checkpoint(trained / "last.pt")["train_state"]["args"]
    assert (args["epochs"], args["img_size"], args["train_size"]) == (1, 32, 32)  # the flags
    recipe = asdict(marks.marks.recipe)
    for key in ("crop_scale", "randaugment", "lr", "warmup_epochs"):  # no flag: the dataset's recipe
        assert args[key] == recipe[key], key


def test_its_checkpoint_opens_its_data_again(trained, marks_importable, tmp_path):
    # Evaluation finds the data by the name the checkpoint recorded, and the same validation scenes by its seed.
    evaluate_main(["--ckpt", str(trained / "best.pt"), "--workers", "0", "--json", str(tmp_path / "e.json")])
    figures = json.loads((tmp_path / "e.json").read_text())
    assert figures["num_images"] == 16
    assert figures["mAP"] == pytest.approx(load_checkpoint(trained / "best.pt")["metrics"]["mAP"], abs=1e-4)


def test_a_file_names_the_same_dataset_and_is_recorded_with_its_absolute_path(marks_importable, monkeypatch):
    monkeypatch.chdir(REPO)
    spec = "tests/data/marks.py:marks"
    assert find_dataset(spec) is find_dataset("marks:marks") is find_dataset("marks")
    assert canonical_spec(spec) == f"{HERE / 'marks.py'}:marks"
    assert parse_args(["--data", spec]).data == f"{HERE / 'marks.py'}:marks"
    assert parse_args([]).data == "shapes" and canonical_spec("voc") == "voc"


def test_the_built_in_datasets_are_registered_in_the_help_order():
    assert DATASETS == ("shapes", "fashion-mosaic", "voc", "coco", "nuswide", "csv")
    for name in DATASETS:
        entry = find_dataset(name)
        assert entry.name == name and entry.summary and entry.module.startswith("hsvlt.data.")


def data_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        parse_args(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_bad_values_of_data_are_refused_in_one_line_naming_the_flag(isolated, capsys):
    folder = isolated
    (folder / "needs_more.py").write_text("import hsvlt_no_such_dependency\n")
    (folder / "clash.py").write_text("from hsvlt.data import register_dataset\n\n\n"
                                     "@register_dataset('shapes')\ndef shapes(request):\n    return None, None\n")
    cases = {
        "nope": f"nope: no dataset of that name (registered: {', '.join(registry.dataset_names())}; one of your own: "
                "module:NAME or path/to/file.py:NAME)",
        "hsvlt_no_such_module:x": "hsvlt_no_such_module:x: no module named 'hsvlt_no_such_module' (run from the "
                                  "folder that holds it, or give its file: path/to/hsvlt_no_such_module.py:NAME)",
        "marks:nothing": "marks:nothing: marks has no attribute 'nothing'",
        "marks:LABELS": "marks:LABELS: marks.LABELS is a tuple, not a dataset (decorate its builder with "
                        "@hsvlt.data.register_dataset)",
        f"{folder}/absent.py:x": f"{folder}/absent.py:x: no Python file at {folder}/absent.py",
        f"{folder}/needs_more.py:x": f"{folder}/needs_more.py:x: importing needs_more failed: No module named "
                                     "'hsvlt_no_such_dependency'",
        f"{folder}/clash.py:shapes": f"{folder}/clash.py:shapes: importing clash failed: dataset name 'shapes' is "
                                     "taken (by hsvlt.data.shapes); choose another",
    }
    for value, message in cases.items():
        assert data_error(["--data", value], capsys).endswith(f"error: argument --data: {message}"), value


def test_the_command_refuses_a_bad_data_in_one_line(tmp_path):
    result = hsvlt_train("--data", "marks:LABELS", cwd=tmp_path)
    assert result.returncode == 2
    assert re.fullmatch(r".*: error: argument --data: marks:LABELS: marks\.LABELS is a tuple, not a dataset "
                        r"\(decorate its builder with @hsvlt\.data\.register_dataset\)",
                        result.stderr.strip().splitlines()[-1])


class Split(MultiLabelDataset):
    def __init__(self, labels, count=2):
        super().__init__(labels)
        self.count = count

    def __len__(self):
        return self.count

    def load(self, index):
        return np.zeros((8, 8, 3), np.uint8), np.ones(len(self.labels), np.float32)


def test_a_builder_must_give_the_labels_it_registered(isolated):
    @register_dataset("test-liar", labels=("circle", "square"), embeddings="shapes")
    def liar(request):
        return Split(["circle", "star"]), Split(["circle", "star"])

    @register_dataset("test-split-mismatch", embeddings="shapes")
    def mismatch(request):
        return Split(["circle"]), Split(["square"])

    @register_dataset("test-unknown-label", embeddings="shapes")
    def unknown(request):
        return Split(["circle", "teapot"]), Split(["circle", "teapot"])

    for name, message in [("test-liar", "its training split's labels differ from the 2 it registered"),
                          ("test-split-mismatch", "its validation split has other labels than its training split"),
                          ("test-unknown-label", "shapes: no embedding for teapot")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            build_data(name)
    bundle = build_data("test-unknown-label", label_file=str(write_label_file(isolated / "own.npz")))
    assert bundle.labels == ["circle", "teapot"] and bundle.embeddings.shape == (2, 4)


def write_label_file(path: Path) -> Path:
    from hsvlt.labels import LabelSet, save_label_file

    vectors = np.eye(4, dtype=np.float32)[:3]
    save_label_file(path, LabelSet(["teapot", "square", "circle"], vectors, "a photo of a {}.", "test"))
    return path


def test_registration_refuses_what_cannot_train(isolated):
    from hsvlt.data import DatasetError
    from hsvlt.recipes import REAL_DATA_DEFAULTS

    with pytest.raises(DatasetError, match="needs img_size and train_size"):
        register_dataset("test-generated", recipe=REAL_DATA_DEFAULTS, generated=True)
    with pytest.raises(DatasetError, match="without ':'"):
        register_dataset("a:b")


def test_the_design_page_shows_the_example_as_it_is():
    page = (REPO / "docs" / "DESIGN.md").read_text()
    assert f"```python\n{(HERE / 'marks.py').read_text()}```" in page
