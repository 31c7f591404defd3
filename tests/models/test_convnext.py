import pytest
import torch
import torch.nn.functional as F

from hsvlt.models.convnext import SMALL_MAP_PIXELS, DepthwiseConv2d, SmallMapDepthwise


def reference_gradients(conv: DepthwiseConv2d, x: torch.Tensor, grad: torch.Tensor):
    x = x.detach().requires_grad_()
    weight, bias = conv.weight.detach().requires_grad_(), conv.bias.detach().requires_grad_()
    F.conv2d(x, weight, bias, padding=3, groups=conv.groups).backward(grad)
    return x.grad, weight.grad, bias.grad


@pytest.mark.parametrize("side", [1, 2, 3, 5])
def test_small_map_backward_gives_onednns_gradients(side):
    torch.manual_seed(side)
    conv = DepthwiseConv2d(6).train()
    x = torch.randn(4, 6, side, side).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(4, 6, side, side)
    expected = reference_gradients(conv, x, grad)

    x = x.clone().requires_grad_()
    out = conv(x)
    assert out.grad_fn.name() == "SmallMapDepthwiseBackward"
    torch.testing.assert_close(out, F.conv2d(x, conv.weight, conv.bias, padding=3, groups=6), atol=0, rtol=0)
    out.backward(grad)
    for got, want in zip((x.grad, conv.weight.grad, conv.bias.grad), expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_small_map_backward_passes_torchs_gradient_check():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 1, 7, 7, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SmallMapDepthwise.apply, (x, weight, bias))


def test_larger_maps_evaluation_and_no_grad_keep_onednns_conv():
    conv = DepthwiseConv2d(4).train()
    side = int(SMALL_MAP_PIXELS**0.5) + 1
    assert conv(torch.randn(1, 4, side, side, requires_grad=True)).grad_fn.name() != "SmallMapDepthwiseBackward"
    small = torch.randn(1, 4, 2, 2, requires_grad=True)
    assert conv.eval()(small).grad_fn.name() != "SmallMapDepthwiseBackward"
    with torch.no_grad():
        assert conv.train()(small).grad_fn is None
