"""Errors the user can fix: a bad setting, file or run directory. run.py prints the message (one sentence
naming the key or file and the way out) without a traceback and exits 2; ``debug=true`` or
``HYDRA_FULL_ERROR=1`` shows the traceback instead."""

from __future__ import annotations

import os
from typing import Any


class UsageError(ValueError):
    """A setting, file or run directory that the user has to change; the message says which and how.

    A ValueError, so callers that caught the harness's earlier ValueErrors still catch it.
    """


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (its type name when it has none)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def show_tracebacks(cfg: Any = None) -> bool:
    """Whether errors the user can fix should still show their traceback (``debug=true`` or
    ``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or bool(cfg is not None and cfg.get("debug", False))
