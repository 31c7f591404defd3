"""Training precision: bf16 autocast on CUDA and on CPUs with native bf16, float32 evaluation on the CPU, and
the depthwise conv kept float32 under CPU autocast."""

import torch
import torch.nn.functional as F

from hsvlt.evaluate import autocast, uses_reduced_precision
from hsvlt.models.convnext import DepthwiseConv2d


def test_cpu_bf16_only_for_training_and_only_where_native():
    cpu = torch.device("cpu")
    assert not uses_reduced_precision(cpu)  # evaluation keeps the CPU in float32
    assert not uses_reduced_precision(cpu, enabled=False, cpu=True)  # --no-amp
    assert uses_reduced_precision(cpu, cpu=True) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert uses_reduced_precision(torch.device("cuda"))
    with autocast(cpu, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast(cpu, None):
        assert not torch.is_autocast_enabled("cpu")


def test_depthwise_conv_runs_in_float32_under_cpu_autocast():
    torch.manual_seed(0)
    conv, x = DepthwiseConv2d(8), torch.randn(2, 8, 10, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
        pointwise = F.linear(x.permute(0, 2, 3, 1), torch.randn(8, 8))
    assert pointwise.dtype == torch.bfloat16  # autocast is on
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.conv2d(x, conv.weight, conv.bias, padding=3, groups=8))
