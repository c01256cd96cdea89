"""A pytest plugin (`-p tools.mutants.timing_plugin`): each test's seconds (setup + call + teardown) into
the JSON file named by $MUTATION_TIMING, so mutants can run their covering tests fastest first."""

from __future__ import annotations

import json
import os
from collections import defaultdict

_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report) -> None:
    _seconds[report.nodeid] += report.duration


def pytest_sessionfinish(session, exitstatus) -> None:
    path = os.environ.get("MUTATION_TIMING")
    if path:
        with open(path, "w") as f:
            json.dump(dict(_seconds), f)
