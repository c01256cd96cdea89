"""Bring your checkpoint: optimizer state_dicts of other libraries to adamx and back (docs/optimizer_state.md).

    convert_state_dict(sd, source, target) -> a state_dict for ``target``'s ``load_state_dict``

    "lion-pytorch"      -> "lion"               the same rule: continues bit for bit
    "torch.optim.AdamW" -> "adam"               the same optimizer: v / (1 - beta2^t), continues to rounding
    "torch.optim.AdamW" -> "adamx"              m and t carry over exactly; AdamW's bias-corrected v becomes
                                                AdamX's v, which from then on follows AdamX's beta2_hat_t
    "adam"              -> "torch.optim.AdamW"  the inverse of the second line

Path flags (foreach, fused) are not carried: the optimizer you load into keeps the ones it was built with.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch

from .schedules import DEFAULT_BETA2
from .state import exact_moment

LION_PYTORCH, TORCH_ADAMW = "lion-pytorch", "torch.optim.AdamW"


def _step(value: Any) -> int:
    """A step count held as an int, a float or a one-element tensor."""
    t = value.item() if isinstance(value, torch.Tensor) else value
    if not float(t).is_integer() or t < 1:
        raise ValueError(
            f"Invalid step {t!r} in the state_dict; a state that has taken a step has step >= 1."
        )
    return int(t)


def _one_minus_power(beta: float, t: int) -> float:
    """1 - beta^t without cancellation."""
    return 1.0 if beta == 0.0 else -math.expm1(t * math.log1p(beta - 1.0))


def _scaled(moment: torch.Tensor, factor: float) -> torch.Tensor:
    """moment * factor, formed in float64 and rounded once into the moment's dtype."""
    return (moment.to(torch.float64) * factor).to(moment.dtype)


def _groups_by_param(state_dict: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    return {pid: group for group in state_dict["param_groups"] for pid in group["params"]}


def _group_keys(group: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The listed keys, the param ids and (torch >= 2.6 named parameters) their names."""
    out = {key: group[key] for key in keys}
    out["params"] = list(group["params"])
    if "param_names" in group:
        out["param_names"] = list(group["param_names"])
    return out


# ---- lion-pytorch -> Lion ----------------------------------------------------------------------------------


def _lion_from_lion_pytorch(
    state_dict: dict[str, Any], decoupled_init_lr: float | None = None
) -> dict[str, Any]:
    groups = []
    for group in state_dict["param_groups"]:
        unknown = sorted(set(group) - {"params", "param_names", "lr", "betas", "weight_decay"})
        if unknown:
            raise ValueError(
                f"lion-pytorch param group has keys {unknown} this conversion does not know; only lr, betas "
                "and weight_decay map onto adamx.Lion (a newer lion-pytorch option would change the rule)."
            )
        new = _group_keys(group, ("lr", "betas", "weight_decay"))
        new["betas"] = tuple(float(b) for b in group["betas"])
        if decoupled_init_lr is not None:  # lion-pytorch's decoupled_weight_decay divides wd by its init lr
            new["weight_decay"] = group["weight_decay"] / decoupled_init_lr
        groups.append(new)
    state = {pid: {"exp_avg": st["exp_avg"].clone()} for pid, st in state_dict["state"].items() if st}
    return {"state": state, "param_groups": groups}


# ---- torch.optim.AdamW <-> the Adam family -----------------------------------------------------------------


def _check_adamw_group(group: dict[str, Any]) -> None:
    for flag in ("amsgrad", "maximize", "differentiable"):
        if group.get(flag):
            raise ValueError(f"torch param group has {flag}=True, which adamx does not implement; convert a "
                             f"state saved with {flag}=False.")  # fmt: skip
    if not group.get("decoupled_weight_decay", True) and group["weight_decay"] != 0:
        raise ValueError(
            f"torch param group has weight_decay={group['weight_decay']} added to the gradient "
            "(torch.optim.Adam's L2 penalty); adamx decays the weights (AdamW). Convert an AdamW state."
        )


def _adam_family_from_adamw(
    state_dict: dict[str, Any], schedule: str, beta2: float | None = None
) -> dict[str, Any]:
    groups = []
    for group in state_dict["param_groups"]:
        _check_adamw_group(group)
        new = _group_keys(group, ("lr", "betas", "eps", "weight_decay"))
        beta1, beta2_adamw = (float(b) for b in group["betas"])
        if schedule == "adam":
            new["betas"] = (beta1, beta2_adamw)
        else:
            new["betas"] = (beta1, DEFAULT_BETA2[schedule] if beta2 is None else float(beta2))
        new["beta2_schedule"] = schedule
        groups.append(new)
    group_of = _groups_by_param(state_dict)
    state = {}
    for pid, st in state_dict["state"].items():
        if not st:
            continue
        t = _step(st["step"])
        beta2_adamw = float(group_of[pid]["betas"][1])
        state[pid] = {
            "step": t,
            "exp_avg": st["exp_avg"].clone(),  # Adam's raw m in both; AdamX's m_t = m / (1 - beta1^t)
            "exp_avg_sq": _scaled(st["exp_avg_sq"], 1.0 / _one_minus_power(beta2_adamw, t)),
        }
    return {"state": state, "param_groups": groups}


def _adamw_from_adam(state_dict: dict[str, Any]) -> dict[str, Any]:
    groups = []
    for group in state_dict["param_groups"]:
        schedule = group.get("beta2_schedule", "adamx")
        if schedule != "adam":
            raise ValueError(
                f"param group has beta2_schedule={schedule!r}; only 'adam' (the registry's \"adam\") is "
                "torch's AdamW. Other schedules keep a v that no fixed-beta2 EMA reproduces."
            )
        new = _group_keys(group, ("lr", "betas", "eps", "weight_decay"))
        new.update(amsgrad=False, maximize=False, decoupled_weight_decay=True)
        groups.append(new)
    group_of = _groups_by_param(state_dict)
    state = {}
    for pid, st in state_dict["state"].items():
        if not st:
            continue
        t = _step(st["step"])
        beta2 = float(group_of[pid]["betas"][1])
        # a state written before the canonical layout may still hold the fused path's scaled moments
        m = exact_moment(st["exp_avg"], float(st.get("exp_avg_scale", 1.0)))
        v = exact_moment(st["exp_avg_sq"], float(st.get("exp_avg_sq_scale", 1.0)))
        state[pid] = {
            "step": torch.tensor(float(t), dtype=torch.float32),
            "exp_avg": m.clone(),
            "exp_avg_sq": _scaled(v, _one_minus_power(beta2, t)),
        }
    return {"state": state, "param_groups": groups}


def _adamw_to_adam(state_dict: dict[str, Any]) -> dict[str, Any]:
    return _adam_family_from_adamw(state_dict, "adam")


def _adamw_to_adamx(state_dict: dict[str, Any], beta2: float | None = None) -> dict[str, Any]:
    return _adam_family_from_adamw(state_dict, "adamx", beta2)


CONVERSIONS: dict[tuple[str, str], Callable[..., dict[str, Any]]] = {
    (LION_PYTORCH, "lion"): _lion_from_lion_pytorch,
    (TORCH_ADAMW, "adam"): _adamw_to_adam,
    (TORCH_ADAMW, "adamx"): _adamw_to_adamx,
    ("adam", TORCH_ADAMW): _adamw_from_adam,
}
"""(source, target) -> conversion; names are adamx registry names or the other library's class."""


def convert_state_dict(
    state_dict: dict[str, Any], source: str, target: str, **options: Any
) -> dict[str, Any]:
    """Convert an optimizer ``state_dict`` saved by ``source`` into one ``target`` loads and continues from.

    Options: ``decoupled_init_lr`` (lion-pytorch -> lion) when lion-pytorch was built with
    ``decoupled_weight_decay=True``: its state_dict does not record that, pass the ``lr`` it was built with;
    ``beta2`` (torch.optim.AdamW -> adamx): AdamX's schedule parameter, default 0.99 (AdamW's 0.999 is
    another quantity). Moment tensors are copied; the input is not modified.
    """
    if (source, target) not in CONVERSIONS:
        pairs = ", ".join(f"{s} -> {t}" for s, t in CONVERSIONS)
        raise ValueError(f"No conversion from {source!r} to {target!r}; available: {pairs}.")
    convert = CONVERSIONS[(source, target)]
    accepted = [name for name in inspect.signature(convert).parameters if name != "state_dict"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for {source} -> {target}; it accepts {accepted or 'none'}."
        )
    return convert(state_dict, **options)
