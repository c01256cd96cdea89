"""YOLOv7-tiny: output layout, parameter count, initialisation, input checks."""

import math

import pytest
import torch

from models import build_model
from models.yolov7_tiny import YOLOv7Tiny


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("yolov7_tiny", num_classes=20)


@pytest.mark.parametrize("size,batch,train", [(320, 2, True), (640, 1, False)])
@pytest.mark.heavy
def test_output_shapes_per_level(model, size, batch, train):
    model.train(train)
    with torch.no_grad():
        out = model(torch.rand(batch, 3, size, size))
    assert isinstance(out, list) and len(out) == 3
    for o, s in zip(out, (8, 16, 32)):
        assert o.shape == (batch, 3, size // s, size // s, 25)
        assert torch.isfinite(o).all()


def test_non_square_input(model):
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 256, 384))
    assert [tuple(o.shape[2:4]) for o in out] == [(32, 48), (16, 24), (8, 12)]


def test_parameter_count(model):
    n20 = sum(p.numel() for p in model.parameters())
    assert n20 == 6_066_402  # the issue's ~6.07M
    n80 = sum(p.numel() for p in YOLOv7Tiny(num_classes=80).parameters())
    assert abs(n80 - 6.2e6) < 0.05e6  # the official 6.2M (80 classes)
    # Only the detect convs differ: per extra output channel (3 anchors x 60 classes), the weights
    # (128 + 256 + 512 inputs over the levels) plus one bias and one implicit scale per level.
    assert n80 - n20 == (128 + 256 + 512 + 3 * 2) * 3 * 60


def test_anchors_and_strides(model):
    assert model.strides == (8, 16, 32)
    assert model.anchors.shape == (3, 3, 2) and model.anchors.dtype == torch.float32
    assert model.anchors[0, 0].tolist() == [10, 13] and model.anchors[2, 2].tolist() == [373, 326]
    assert "anchors" in dict(model.named_buffers())  # moves with .to(device)


def test_initialisation(model):
    conv = model.backbone.stage5.conv4[0]  # 3x3, 256 -> 256
    fan_out = 3 * 3 * 256
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.02)
    bn = model.backbone.stage5.conv4[1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    for conv, stride in zip(model.detect.convs, (8, 16, 32)):
        bias = conv.bias.view(3, 25)
        assert torch.allclose(bias[:, 4], torch.tensor(math.log(8 / (320 / stride) ** 2)))
        assert torch.allclose(bias[:, 5:], torch.tensor(math.log(0.6 / (20 - 0.99))))
        assert torch.allclose(bias[:, :4], torch.zeros(3, 4))
    mul = torch.cat([m.implicit.flatten() for m in model.detect.implicit_mul])
    add = torch.cat([m.implicit.flatten() for m in model.detect.implicit_add])
    assert abs(mul.mean().item() - 1) < 0.01 and 0.01 < mul.std().item() < 0.03
    assert abs(add.mean().item()) < 0.01 and 0.01 < add.std().item() < 0.03


def test_bad_input_is_named():
    m = YOLOv7Tiny(num_classes=3)
    with pytest.raises(ValueError, match="multiples of 32"):
        m(torch.rand(1, 3, 100, 100))
    with pytest.raises(ValueError, match="anchors"):
        YOLOv7Tiny(num_classes=3, anchors=[[10, 13], [16, 30]])
