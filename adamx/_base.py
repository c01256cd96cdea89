"""What every optimizer of the package shares: argument checks, state set-up and the low-precision policy.

Moments of float16/bfloat16 parameters are kept in float32 (AdamX's 1 - beta2_hat_t reaches ~1e-7, far below
the resolution of a 16-bit moment); the step math then runs on float32 working copies of the parameter and
gradient and the result is rounded back into the parameter once per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_nonnegative(name: str, value: Any) -> None:
    """Raise ValueError naming ``value`` unless it is a finite number >= 0."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"Invalid {name}: a tensor {name} must hold one value, got shape {tuple(value.shape)}."
            )
        value = value.item()
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not (math.isfinite(value) and value >= 0)
    ):
        raise ValueError(f"Invalid {name}: {value!r}; it must be a finite number >= 0.")


def check_beta(index: int, value: Any, *, high_inclusive: bool = False) -> None:
    """Raise ValueError naming ``betas[index]`` unless 0 <= value < 1 (or <= 1 with ``high_inclusive``)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (0.0 <= value < 1.0 or (high_inclusive and value == 1.0)):
        rule = "0 <= betas[{0}] <= 1" if high_inclusive else "0 <= betas[{0}] < 1"
        raise ValueError(f"Invalid betas[{index}]: {value!r}; it must satisfy {rule.format(index)}.")


def as_betas(betas: Any) -> tuple[float, float]:
    """Accept a tuple or a list (YAML gives lists) of two numbers."""
    if not isinstance(betas, Sequence) or isinstance(betas, str) or len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas!r}; pass two numbers, e.g. (0.9, 0.99).")
    return (float(betas[0]), float(betas[1]))


def moment_dtype(param: torch.Tensor) -> torch.dtype:
    """float32 moments for 16-bit parameters, the parameter's own dtype otherwise."""
    return torch.float32 if param.dtype in LOW_PRECISION else param.dtype


def zeros_moment(param: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(param, dtype=moment_dtype(param), memory_format=torch.preserve_format)


def dense_grad(param: torch.Tensor, optimizer_name: str) -> torch.Tensor:
    grad = param.grad
    if grad.is_sparse:
        raise RuntimeError(
            f"{optimizer_name} does not support sparse gradients (got one for a parameter of shape "
            f"{tuple(param.shape)}); use dense gradients (e.g. nn.Embedding(sparse=False)) or torch.optim.SparseAdam."
        )
    if torch.is_complex(param):
        raise RuntimeError(
            f"{optimizer_name} does not support complex parameters; pass torch.view_as_real(param)."
        )
    return grad


def working_copies(
    params: list[torch.Tensor], grads: list[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Float32 stand-ins for 16-bit params/grads; returns the pairs to copy back after the step."""
    work_p, work_g, write_back = [], [], []
    for p, g in zip(params, grads):
        if p.dtype in LOW_PRECISION:
            wp = p.float()
            work_p.append(wp)
            work_g.append(g.float())
            write_back.append((p, wp))
        else:
            work_p.append(p)
            work_g.append(g if g.dtype == p.dtype else g.to(p.dtype))
    return work_p, work_g, write_back


def copy_back(write_back: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for p, wp in write_back:
        p.copy_(wp)


def check_floating_params(params: Iterable[torch.Tensor], optimizer_name: str) -> None:
    """Raise ValueError naming the dtype unless every parameter is a floating-point (or complex) tensor."""
    for p in params:
        if not (p.is_floating_point() or p.is_complex()):
            raise ValueError(
                f"{optimizer_name} updates floating-point parameters only; got a {p.dtype} parameter of "
                f"shape {tuple(p.shape)}: leave it out of the optimizer (a buffer) or make it float."
            )


class MomentOptimizer(Optimizer):
    """torch.optim.Optimizer plus the float32-moments policy across ``load_state_dict`` and one validation
    of every param group, wherever it comes from (constructor or ``add_param_group``).

    torch casts floating state to the parameter's dtype when loading; for 16-bit parameters that would round
    the float32 moments, so they are restored from the saved tensors after the base class has loaded them.
    """

    _moment_keys: tuple[str, ...] = ()
    # The one mechanism for param-group defaults: keys a saved state_dict (an older adamx, lion-pytorch, the
    # authors' code) may lack -> the class default, used only when the optimizer's own defaults lack it too.
    _optional_group_keys: dict[str, Any] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        fill_missing_group_keys(self, self._optional_group_keys)

    def _with_defaults(self, saved: dict[str, Any]) -> dict[str, Any]:
        """A saved param group as loading would complete it (its params left out), for checking first."""
        return {**self._optional_group_keys, **self.defaults, **saved, "params": []}

    def _check_group(self, group: dict[str, Any]) -> None:
        """Validate (and normalise in place) one param group with the defaults filled in. Subclasses extend
        this with their hyperparameter checks; it raises ValueError with one sentence naming the bad value."""
        check_floating_params(group.get("params", []), type(self).__name__)
        if group.get("maximize"):
            raise ValueError(
                f"{type(self).__name__} has no maximize option (a group with maximize=True would be minimised); "
                "minimise the negated objective instead: (-objective).backward()."
            )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's add_param_group, then the constructor's checks (a group that fails them is not added)."""
        super().add_param_group(param_group)
        try:
            self._check_group(self.param_groups[-1])
        except Exception:
            self.param_groups.pop()
            raise

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_groups = state_dict["param_groups"]
        saved_state = state_dict["state"]
        super().load_state_dict(state_dict)
        for saved_group, group in zip(saved_groups, self.param_groups):
            for saved_id, p in zip(saved_group["params"], group["params"]):
                if p.dtype not in LOW_PRECISION or saved_id not in saved_state:
                    continue
                for key in self._moment_keys:
                    value = saved_state[saved_id].get(key)
                    if isinstance(value, torch.Tensor):
                        self.state[p][key] = value.to(device=p.device, dtype=torch.float32, copy=True)

    def _run_closure(self, closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()


def compiling() -> bool:
    """True while Dynamo traces (torch.compile); the step then keeps every per-step value on the device."""
    return torch.compiler.is_compiling()


Split = Callable[[dict[str, Any]], tuple[list[float], dict[str, Any]]]


def split_groups(
    optimizer: Optimizer, split: Split, tensors: bool = False
) -> list[tuple[dict[str, Any], Any]]:
    """Per param group of ``optimizer``, ``split(group)``'s (hyperparameters a scheduler may change, the rest)
    as (the rest, the hyperparameters: a float64 CPU tensor if ``tensors``, else the list). Every gradient is
    checked first, so a refused step (sparse gradient, complex parameter) changes no state."""
    label = getattr(optimizer, "_label", type(optimizer).__name__)
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                dense_grad(p, label)
    out = []
    for group in optimizer.param_groups:
        values, static = split(group)
        out.append(
            (static, torch.tensor([float(x) for x in values], dtype=torch.float64) if tensors else values)
        )
    return out


@torch.compiler.disable
def compiled_split_groups(optimizer: Optimizer, split: Split) -> list[tuple[dict[str, Any], torch.Tensor]]:
    """``split_groups`` with tensors, run outside the compiled graph (Dynamo runs it eagerly: one graph break).

    Under ``torch.compile`` a Python float in a param group becomes a guard, or a symbolic float whose guards
    fail, the moment a scheduler changes it; as a tensor it is a graph input, so a new lr, weight decay factor
    or beta1 (OneCycleLR's ``cycle_momentum``) neither recompiles nor is ignored. The compiled step reads only
    what this returns, never ``param_groups`` (Dynamo would guard on every float of every group); pass the
    optimizer, not its ``param_groups``, for the same reason.
    """
    return split_groups(optimizer, split, tensors=True)


def on_like(x: float | torch.Tensor, ref: torch.Tensor) -> float | torch.Tensor:
    """A host float as is; a 0-d tensor (a compiled step's hyperparameter) on ``ref``'s device in its dtype."""
    return x.to(device=ref.device, dtype=ref.dtype) if isinstance(x, torch.Tensor) else x


def foreach_axpy_(xs: list[torch.Tensor], ys: list[torch.Tensor], a: float | torch.Tensor) -> None:
    """xs += a * ys, for a host float (one fused kernel) or a 0-d tensor (compiled steps)."""
    if isinstance(a, torch.Tensor):
        torch._foreach_add_(xs, torch._foreach_mul(ys, a))
    else:
        torch._foreach_add_(xs, ys, alpha=a)


def axpy_(x: torch.Tensor, y: torch.Tensor, a: float | torch.Tensor) -> torch.Tensor:
    """x += a * y, for a host float or a 0-d tensor; returns x."""
    return x.add_(y * a) if isinstance(a, torch.Tensor) else x.add_(y, alpha=a)


def fill_missing_group_keys(optimizer: Optimizer, optional: dict[str, Any]) -> None:
    """Give every param group the ``optional`` keys it lacks (a state_dict from an older adamx or another
    library): the value this optimizer was constructed with, else, for a pickle whose defaults lack it too,
    the class default in ``optional``. Called from ``__setstate__``, as torch's optimizers do."""
    for key, default in optional.items():
        value = optimizer.defaults.setdefault(key, default)
        for group in optimizer.param_groups:
            group.setdefault(key, value)


def group_by_device_and_dtype(tensorlists: list[list[torch.Tensor]]) -> Iterable[list[list[torch.Tensor]]]:
    """Split parallel tensor lists into runs that share (device, dtype) of the first list, for foreach calls."""
    buckets: dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]] = {}
    for i, t in enumerate(tensorlists[0]):
        key = (t.device, t.dtype)
        if key not in buckets:
            buckets[key] = [[] for _ in tensorlists]
        for lst, src in zip(buckets[key], tensorlists):
            lst.append(src[i])
    return buckets.values()
