"""hsvlt/quant/eager.py: torchao's eager QAT flow (the comparison behind PT2E as the default) on a tiny model, and the
study that sets it against PT2E (reports/quantization.py --eager-study), whose eager program the lowering test
runs: one lowering of each program for the whole file."""

import numpy as np
import pytest
import torch

from hsvlt.checkpoint import load_source
from hsvlt.deploy.runtimes import ExecuTorchModel, TorchModel
from hsvlt.export.parity import scene_images
from hsvlt.quant import eager
from reports import quantization as report

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")
QAT_LR = 1e-7  # a rate that keeps the two QAT steps close to the checkpoint, so that fp32 is the reference


@pytest.fixture(scope="module")
def eager_study(checkpoint, tmp_path_factory):
    """The study's run on the tiny checkpoint: (its settings, the page, the folder of its programs)."""
    folder = tmp_path_factory.mktemp("eager_study")
    page, workdir = folder / "QUANT_EAGER.md", folder / "work"
    argv = ["--ckpt", str(checkpoint), "--eager-study", "--qat-epochs", "1", "--max-steps", "2", "--qat-lr",
            str(QAT_LR), "--train-size", "64", "--val-size", "16", "--workers", "0", "--out", str(page),
            "--workdir", str(workdir)]
    report.main(argv)
    return report.parse_args(argv), page, workdir


@pytest.fixture(scope="module")
def converted(eager_study, checkpoint, tmp_path_factory):
    """The study's eager QAT run again, in this process: the converted model (seeded, the same model the study
    lowered) and its log."""
    config, _, _ = eager_study
    unused = tmp_path_factory.mktemp("eager") / "unused.pt2"
    return eager.quantization_aware(report.qat_training(checkpoint, unused, QAT_LR, config))


def test_eager_study_page_renders(eager_study):
    _, page, _ = eager_study
    text = page.read_text()
    assert "PT2E QAT int8" in text and "eager QAT int8" in text and "fp32" in text
    eager_row = next(line for line in text.splitlines() if line.startswith("| eager QAT int8"))
    subgraphs = int(eager_row.split("|")[5])
    assert subgraphs >= 1  # the XNNPACK partitioner took the int8 graph


def test_eager_qat_quantises_every_linear_layer_and_stays_close_to_fp32(converted, checkpoint):
    model, log = converted
    assert [entry["epoch"] for entry in log] == [1] and np.isfinite(log[0]["loss"])
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(type(m.weight).__name__ != "Parameter" for m in linears)  # quantised tensors now
    images = scene_images(4, load_source(checkpoint).img_size)
    with torch.no_grad():
        probabilities = torch.sigmoid(model(torch.from_numpy(images))).numpy()
    reference = TorchModel(checkpoint).run(images).probabilities
    assert np.abs(probabilities - reference).max() < 0.1


def test_eager_program_runs_in_the_executorch_runtime_as_the_model_computes(eager_study, converted, checkpoint):
    """The study's lowered eager program (hsvlt.quant.eager.program through XNNPACK) against the converted model."""
    _, _, workdir = eager_study
    model, _ = converted
    (program_file,) = workdir.glob("*_eager.pte")
    images = scene_images(2, load_source(checkpoint).img_size)
    probabilities = ExecuTorchModel(program_file).run(images).probabilities
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(images))).numpy()
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities, expected, atol=0.05, rtol=0)
