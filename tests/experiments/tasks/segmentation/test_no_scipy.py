"""SegmentationTask on synthetic data needs no scipy (only SBD's .mat reader does)."""

import subprocess
import sys

import pytest

from tests.helpers import ROOT

BLOCK = (
    "import sys, importlib.abc\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name.split('.')[0] == 'scipy':\n"
    "            raise ImportError('blocked ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


@pytest.mark.slow
def test_the_21_class_task_builds_and_names_its_classes_without_scipy():
    code = BLOCK + (
        "from experiments.tasks.segmentation.task import SegmentationTask\n"
        "task = SegmentationTask(num_classes=21)\n"
        "print(task.class_names[0], task.class_names[-1], len(task.class_names))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["background", "tvmonitor", "21"]


def test_the_names_are_sbds():
    from data.sbd import SBD_CLASSES
    from experiments.tasks.segmentation.task import default_class_names

    assert default_class_names(21) == list(SBD_CLASSES)
    assert default_class_names(3) == ["0", "1", "2"]
