"""U-Net: parameter count, output shapes (320 and odd sizes), RegNet initialisation incl. transposed convs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models import build_model
from models.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_at_base_32_and_21_classes():
    # inc 10,208 + downs 4,704,000 + ups 3,048,800 + head 693 (counted by hand from the layer list)
    assert n_params(build_model("unet", num_classes=21)) == 7_763_701
    # only the 1x1 head depends on the classes: 32 weights + 1 bias per class
    assert n_params(UNet(num_classes=2)) == 7_763_701 - 19 * 33
    assert n_params(UNet(num_classes=21, base=16)) < 7_763_701 / 3.9  # ~quadratic in the width


def test_output_shape_at_320():
    model = UNet(num_classes=21).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 320, 320))
    assert out.shape == (1, 21, 320, 320) and torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(97, 131), (33, 47), (64, 80)])
def test_output_shape_for_odd_sizes(size):
    model = UNet(num_classes=5, base=4)
    out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_regnet_init_covers_convs_transposed_convs_and_norms():
    torch.manual_seed(0)
    model = UNet(num_classes=21)
    transposed = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(transposed) == 4 and not isinstance(transposed[0], nn.Conv2d)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            fan_out = math.prod(module.kernel_size) * module.out_channels
            expected = math.sqrt(2.0 / fan_out)
            assert module.weight.std().item() == pytest.approx(expected, rel=0.1)
            if module.bias is not None:
                assert torch.count_nonzero(module.bias) == 0
        elif isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    # PyTorch's default for this transposed conv (kaiming-uniform, a = sqrt(5)) is 2.45x smaller
    default = nn.ConvTranspose2d(512, 256, 2, stride=2).weight.std().item()
    assert transposed[0].weight.std().item() > 2 * default


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        UNet(num_classes=0)
