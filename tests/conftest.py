"""Shared test set-up: the repo root on sys.path (models/, data/, experiments/ are used from the checkout),
and the one-thread fixtures (see helpers.torch_threads)."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("MPLBACKEND", "Agg")

from helpers import torch_threads  # noqa: E402  (tests/ is on sys.path once pytest loads this file)


@pytest.fixture
def one_thread():
    """One intra-op thread for this test."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    """One intra-op thread for a whole module, its module-scoped fixtures included."""
    with torch_threads(1):
        yield
