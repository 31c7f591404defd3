"""hsvlt/quant/eager.py: torchao's eager QAT flow (the comparison behind PT2E as the default) on a tiny model."""

import numpy as np
import pytest
import torch

from hsvlt.deploy.runtimes import TorchModel
from hsvlt.export.common import load_source, scene_images
from hsvlt.export.to_executorch import lower
from hsvlt.quant import eager, qat

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")


@pytest.fixture(scope="module")
def converted(checkpoint):
    args = qat.parse_args(["--ckpt", str(checkpoint), "--out", "unused.pt2", "--workers", "0", "--batch-size", "8",
                           "--train-size", "32", "--val-size", "16", "--epochs", "1", "--max-steps", "2",
                           "--lr", "1e-7"])
    return eager.quantization_aware(args)


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


def test_eager_program_lowers_to_xnnpack_and_runs(converted, checkpoint):
    from executorch.runtime import Runtime

    model, _ = converted
    buffer, delegation = lower(eager.program(model, 32))
    assert delegation["subgraphs"] >= 1 and delegation["backends"] == ["XnnpackBackend"]
    method = Runtime.get().load_program(buffer).load_method("forward")
    images = torch.from_numpy(scene_images(1, load_source(checkpoint).img_size))
    (probabilities,) = method.execute([images])
    with torch.no_grad():
        expected = torch.sigmoid(model(images))
    assert probabilities.shape == (1, 10)
    torch.testing.assert_close(probabilities, expected, atol=0.05, rtol=0)
