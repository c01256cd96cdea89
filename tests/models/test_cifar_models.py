"""The four CIFAR models: forward/backward at 32x32, stage sizes and parameter counts (docs/models.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import StochasticDepth

from models import build_model

# Parameter count and the shape after each entry of ``model.features`` (C, H, W; Swin: H, W, C),
# measured on torchvision 0.29 and recorded in docs/models.md.
EXPECTED = {
    "efficientnetv2_m": (
        52_986_456,
        [(24, 32, 32), (24, 32, 32), (48, 32, 32), (80, 16, 16), (160, 8, 8), (176, 8, 8), (304, 4, 4),
         (512, 4, 4), (1280, 4, 4)],
    ),
    "efficientnetv2_l": (
        117_362_372,
        [(32, 32, 32), (32, 32, 32), (64, 32, 32), (96, 16, 16), (192, 8, 8), (224, 8, 8), (384, 4, 4),
         (640, 4, 4), (1280, 4, 4)],
    ),
    "convnext_b": (
        90_384_996,
        [(128, 32, 32), (128, 32, 32), (256, 16, 16), (256, 16, 16), (512, 8, 8), (512, 8, 8), (1024, 4, 4),
         (1024, 4, 4)],
    ),
    "swinv2_s": (
        49_041_022,
        [(32, 32, 96), (32, 32, 96), (16, 16, 192), (16, 16, 192), (8, 8, 384), (8, 8, 384), (4, 4, 768),
         (4, 4, 768)],
    ),
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def built(request, one_thread_module):
    """Each model built once, run forward/backward once on a 32x32 batch of 2, stage outputs hooked."""
    name = request.param
    torch.manual_seed(0)
    model = build_model(name, num_classes=100)
    shapes: list[tuple[int, ...]] = []
    handles = [
        layer.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
        for layer in model.features
    ]
    out = model(torch.randn(2, 3, 32, 32))
    out.logsumexp(dim=1).sum().backward()
    for handle in handles:
        handle.remove()
    return name, model, out, shapes


def test_forward_backward(built):
    name, model, out, _ = built
    assert out.shape == (2, 100) and torch.isfinite(out).all()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: {pname} has no finite gradient"
    assert sum(p.grad.abs().sum().item() for p in model.parameters()) > 0


def test_parameter_count(built):
    name, model, _, _ = built
    assert sum(p.numel() for p in model.parameters()) == EXPECTED[name][0]


def test_stage_sizes(built):
    name, _, _, shapes = built
    assert shapes == EXPECTED[name][1]


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_cifar_adaptations(built):
    """The paper's changes, read off the modules: strides, kernels, patch and window sizes."""
    name, model, _, _ = built
    strided = [c for c in _convs(model) if c.stride != (1, 1)]
    if name.startswith("efficientnetv2"):
        assert model.features[0][0].stride == (1, 1)
        assert len(strided) == 3 and all(c.stride == (2, 2) and c.padding == (1, 1) for c in strided)
        dropout = model.classifier[0].p
        assert dropout == {"efficientnetv2_m": 0.3, "efficientnetv2_l": 0.4}[name]
    elif name == "convnext_b":
        assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in _convs(model))
        assert model.features[0][0].stride == (1, 1) and len(strided) == 3
        depthwise = [c for c in _convs(model) if c.groups > 1]
        assert len(depthwise) == 36 and all(c.groups == c.in_channels for c in depthwise)
        # Replaced convs keep torchvision's ConvNeXt init: trunc_normal_(std=0.02) (cut at +-2, i.e. a
        # plain normal at this std), zero bias.
        weights = torch.cat([c.weight.detach().flatten() for c in depthwise])
        assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
        assert all(c.bias.abs().max() == 0 for c in depthwise)
    else:
        assert model.features[0][0].kernel_size == (1, 1)
        blocks = [m for m in model.modules() if hasattr(m, "attn")]
        assert len(blocks) == 24 and all(list(b.attn.window_size) == [4, 4] for b in blocks)
        assert [blocks[i].attn.num_heads for i in (0, 2, 4, 22)] == [3, 6, 12, 24]
    depth = [m.p for m in model.modules() if isinstance(m, StochasticDepth)]
    expected_last = {"efficientnetv2_m": 0.2, "efficientnetv2_l": 0.2, "convnext_b": 0.5, "swinv2_s": 0.3}[
        name
    ]
    assert depth[0] == 0.0 and 0.9 * expected_last <= depth[-1] <= expected_last  # torchvision's linear rule


def test_norm_layers_are_the_authors(built):
    """EfficientNetV2: the authors' BatchNorm2d(momentum=0.01), eps 1e-5 (torchvision: 0.1 / 1e-3);
    ConvNeXt-B: LayerNorm eps 1e-5 as their copy (torchvision: 1e-6). SwinV2 keeps torchvision's norms."""
    name, model, _, _ = built
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    lns = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    if name.startswith("efficientnetv2"):
        assert bns and not lns
        assert {(m.momentum, m.eps) for m in bns} == {(0.01, 1e-5)}
    elif name == "convnext_b":
        assert lns and not bns
        assert len(lns) == 1 + 36 + 3 + 1  # stem, one per block, one per downsampling, the head
        assert {m.eps for m in lns} == {1e-5}
    else:
        assert {m.eps for m in lns} == {1e-5}  # torchvision's Swin builds nn.LayerNorm with its default


# The paper's settings per table and optimizer: (model, optimizer group, lr, weight decay, schedule, min lr).
TABLES = {
    "table3": [("efficientnetv2_m", o, 3e-3, 0.01, "linear_to_min", 3e-5) for o in ("adam", "adax", "adamx")],
    "table7": [
        ("efficientnetv2_m", o, 3e-3, 0.01, "linear_to_min", 3e-5)
        for o in ("adam", "adam_adafactor", "adam_adax", "adam_adamx")
    ],
    "table4": [("swinv2_s", o, 2.2e-5, 0.01, "constant", None) for o in ("adam", "adax", "adamx")],
    "table8": [
        ("swinv2_s", o, 2.2e-5, 0.01, "constant", None)
        for o in ("adam", "adam_adafactor", "adam_adax", "adam_adamx")
    ],
    "table11": [
        ("efficientnetv2_l", "sgd", 0.1, 1e-3, "linear_to_min", 1e-3),
        ("efficientnetv2_l", "lion", 1e-3, 0.1, "linear_to_min", 1e-5),
        *[("efficientnetv2_l", o, 0.01, 0.01, "linear_to_min", 1e-4) for o in ("radam", "sophiag", "adamx")],
    ],
    "table12": [
        ("convnext_b", "sgd", 0.01, 1e-3, "linear_to_min", 1e-4),
        ("convnext_b", "lion", 1e-4, 0.1, "linear_to_min", 1e-6),
        *[("convnext_b", o, 1e-3, 0.01, "linear_to_min", 1e-5) for o in ("radam", "sophiag", "adamx")],
    ],
}


@pytest.mark.slow
def test_table_configs_hold_the_papers_settings():
    """Each CIFAR table's experiment file composes, per optimizer, to the paper's training settings."""
    import experiments.runs.rundir  # noqa: F401  (registers the resolver the run directory uses)
    from experiments.runs.build import apply_per_optimizer
    from tests.helpers import compose_config

    for table, rows in TABLES.items():
        for model, optimizer, lr, wd, schedule, min_lr in rows:
            cfg = apply_per_optimizer(compose_config([f"experiment={table}", f"optimizer={optimizer}"]))
            where = f"{table} optimizer={optimizer}"
            assert (cfg.experiment_name, cfg.model.name, cfg.dataset.name) == (
                table,
                model,
                "cifar100",
            ), where
            assert (cfg.trainer.epochs, cfg.dataset.batch_size, cfg.dataset.drop_last) == (
                80,
                64,
                True,
            ), where
            assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.schedule.name) == (
                lr,
                wd,
                schedule,
            ), where
            if schedule == "linear_to_min":
                assert (cfg.schedule.min_lr, cfg.schedule.t1) == (min_lr, 37488), where
            if optimizer == "sgd":
                assert cfg.optimizer.momentum == 0.9
