"""Detection under DDP: 2 gloo processes on one global batch give one process's gradient (ratio 1.0, not
1/world_size: the task multiplies YOLOv7's loss by the world size, as YOLOv7's train.py does)."""

import pytest

from tools.acceptance.ddp import detection_gradient_ratio


@pytest.mark.slow
def test_two_gloo_processes_give_one_process_gradient():
    result = detection_gradient_ratio("gloo", "cpu", world=2)
    assert result["ratio"] == pytest.approx(1.0, abs=1e-4), result
    assert result["cosine"] == pytest.approx(1.0, abs=1e-6), result
    assert result["max_rel_gap"] < 1e-3, result
