"""What the forkserver of ``tools.acceptance.isolate`` imports once, so that every check group's process
starts with it loaded. An import that fails here is left to the group that needs it (where it becomes
that group's FAIL row), so nothing is imported without a guard. Nothing here may touch CUDA: the groups
are forked from this process and each must start its own CUDA context (``isolate._mp_context`` makes
``torch.cuda.is_available()`` ask NVML here, and none of these modules calls CUDA at import)."""

from __future__ import annotations

import importlib

MODULES = (
    "torchvision",
    "adamx",
    "models",
    "experiments.tasks",
    "experiments.train.trainer",
    "tools.acceptance.env_optim",
    "tools.acceptance.training",
    "tools.acceptance.data_ddp",
    "tools.acceptance.vs_cpu",
)

for _name in MODULES:
    try:
        importlib.import_module(_name)
    except Exception:  # noqa: BLE001, S110 - the group that needs it reports the error
        pass
