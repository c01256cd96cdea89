"""Shared test set-up: the one-thread fixtures (see helpers.torch_threads). pytest puts the checkout on sys.path
(``pythonpath`` in pyproject.toml), so tests import the harness as ``experiments...`` and ``scripts...``."""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from tests.helpers import torch_threads


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
