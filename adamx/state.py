"""One state_dict layout for every path, and the fused path's extra state: all of it lives here.

AdamX and AdaX export per parameter ``step``, ``exp_avg`` and ``exp_avg_sq`` holding the exact moments in the
moment dtype, whichever path ran (docs/optimizer_state.md). The fused path keeps its moments scaled
(stored = scale * exact, see ``adamx._adaptive``); its export adds ``fused_*`` entries that restore that scaled
form bit for bit on load, so a resumed run equals the run that was never interrupted. Unscaling into a copy and
re-scaling that copy on load could not give back the same float32 bits; ``state_dict()`` never touches the
live state.
"""

from __future__ import annotations

from typing import Any

import torch

# The fused path's live per-parameter entries (stored moments = scale * exact ones, and the decay carry); 1.0 on
# every other path. Created with the state, read as the fused bucket key, written back after each fused step,
# divided out when another path takes the state over, exported as ``fused_*`` and restored on load.
FUSED_KEYS = ("exp_avg_scale", "exp_avg_sq_scale", "decay_carry")


def init_fused_state(state: dict[str, Any]) -> None:
    """A new parameter state's fused entries: unscaled moments, nothing carried."""
    for key in FUSED_KEYS:
        state[key] = 1.0


def fused_key(state: dict[str, Any]) -> tuple[float, float, float]:
    """(m scale, v scale, decay carry): parameters that share them share one fused kernel call. States from
    before the carry existed (or converted by another tool) lack some: 1.0."""
    return (
        state.get("exp_avg_scale", 1.0),
        state.get("exp_avg_sq_scale", 1.0),
        state.get("decay_carry", 1.0),
    )


def set_fused_state(states: list[dict[str, Any]], m_scale: float, v_scale: float, carry: float) -> None:
    """Record a fused step's new scales and carry in each parameter's state."""
    for state in states:
        state["exp_avg_scale"], state["exp_avg_sq_scale"], state["decay_carry"] = m_scale, v_scale, carry


def make_exact(state: dict[str, Any]) -> None:
    """Divide the moments by their scales in place (another path takes over a fused state); the carry stays
    (a fused step uses it again)."""
    a, b = state.get("exp_avg_scale", 1.0), state.get("exp_avg_sq_scale", 1.0)
    if a != 1.0 or b != 1.0:
        state["exp_avg"].div_(a)
        state["exp_avg_sq"].div_(b)
        state["exp_avg_scale"] = state["exp_avg_sq_scale"] = 1.0


# live key of the fused path -> its entry in the exported state
_INTERNAL = {
    "exp_avg_scale": "fused_exp_avg_scale",
    "exp_avg_sq_scale": "fused_exp_avg_sq_scale",
    "decay_carry": "fused_decay_carry",
}
_MOMENTS = (("exp_avg", "exp_avg_scale"), ("exp_avg_sq", "exp_avg_sq_scale"))


def _number(value: Any) -> float:
    """A scale held as a Python float or a one-element tensor, as a float."""
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def exact_moment(stored: torch.Tensor, scale: float) -> torch.Tensor:
    """``stored / scale`` rounded once into ``stored``'s dtype (the division runs in float64)."""
    if scale == 1.0:
        return stored
    return (stored.to(torch.float64) / scale).to(stored.dtype)


def _same(a: torch.Tensor, b: Any) -> bool:
    """Bitwise-equal values (NaN equal to NaN), same dtype and shape."""
    if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return False
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


def canonical_state(state: dict[str, Any]) -> dict[str, Any]:
    """The exported form of one parameter's live AdamX/AdaX state; a new dict, the live one is not touched.

    Scales of 1 (single-tensor and foreach paths) are left out. A fused state exports exp_avg / exp_avg_scale
    and exp_avg_sq / exp_avg_sq_scale as ``exp_avg``/``exp_avg_sq`` (new tensors) plus the scaled tensors
    themselves (live references, as torch's state_dict holds every tensor), the scales and the decay carry
    under ``fused_*``. If training steps before the dict is saved, ``internal_state`` notices the mismatch
    and loads the exported moments.
    """
    scales = {key: _number(state.get(key, 1.0)) for key in _INTERNAL}
    out = {key: value for key, value in state.items() if key not in _INTERNAL}
    if all(value == 1.0 for value in scales.values()) or "exp_avg" not in state:
        return out
    if isinstance(out.get("step"), torch.Tensor):  # a snapshot, like the exported moments (step is
        out["step"] = out["step"].clone()  # incremented in place: a live reference would run ahead of them)
    for key, scale_key in _MOMENTS:
        out[key] = exact_moment(state[key], scales[scale_key])
        out[f"fused_{key}"] = state[key]
    for key, exported in _INTERNAL.items():
        out[exported] = scales[key]
    return out


def internal_state(saved: dict[str, Any]) -> dict[str, Any]:
    """The live form of one exported parameter state: the inverse of ``canonical_state``.

    A ``fused_*`` copy is used only while ``exact_moment`` of it still equals the exported moment; a moment
    edited after export (or converted by another tool) wins, with scale 1. States written before this layout
    (scaled moments beside ``exp_avg_scale``...) pass through unchanged: every path reads them.
    """
    if "exp_avg" not in saved or "exp_avg_scale" in saved:
        return saved
    out = {key: value for key, value in saved.items() if not key.startswith("fused_")}
    out.update({key: 1.0 for key in _INTERNAL})
    if "fused_exp_avg_scale" not in saved:
        return out
    for key, scale_key in _MOMENTS:
        stored, scale = saved.get(f"fused_{key}"), _number(saved[_INTERNAL[scale_key]])
        if isinstance(stored, torch.Tensor) and _same(exact_moment(stored, scale), saved[key]):
            out[key], out[scale_key] = stored, scale
    out["decay_carry"] = _number(saved.get("fused_decay_carry", 1.0))
    return out


def canonical_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``Optimizer.state_dict()``'s output with every parameter state in the canonical layout. An entry that
    is not a parameter's state dict (``opt.state["note"] = 1``, as torch's state_dict pre-hook test writes)
    passes through unchanged, as in torch."""
    state = {
        key: canonical_state(value) if isinstance(value, dict) else value
        for key, value in state_dict["state"].items()
    }
    return {**state_dict, "state": state}


def internal_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A saved state_dict with every parameter state in the live layout, ready for torch's loader."""
    state = {
        key: internal_state(value) if isinstance(value, dict) else value
        for key, value in state_dict["state"].items()
    }
    return {**state_dict, "state": state}


def live_state_in_place(state: dict[str, Any]) -> None:
    """Turn an exported state written straight into ``optimizer.state`` (ZeroRedundancyOptimizer's
    ``load_state_dict`` does that) into the live layout in place: the scaled ``fused_*`` moments and their
    scales come back (a bit-identical continuation) and no ``fused_*`` entry stays behind."""
    live = internal_state(state)
    state.clear()
    state.update(live)
