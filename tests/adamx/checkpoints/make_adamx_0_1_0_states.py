"""Wrote adamx_0_1_0_states.pt with adamx 0.1.0 (main at 57bbda4: ``step`` a Python int, fused moment scales
as floats), for tests/adamx/test_validation.py. Kept for the record: run with that version's adamx on the path,
``git -C <checkout> switch --detach 57bbda4 && python tests/adamx/checkpoints/make_adamx_0_1_0_states.py``.

Per case: the params and a deep copy of opt.state_dict() after 5 steps, and the params after 5 more steps on
the stored gradients 6..10.
"""

import copy

import torch

import adamx

SHAPES = [(6, 4), (5,)]
CASES = {
    "adamx-single": lambda p: adamx.AdamX(p, foreach=False),
    "adamx-fused": lambda p: adamx.AdamX(p, fused=True),
    "adamx-foreach-adafactor": lambda p: adamx.AdamX(
        p, foreach=True, beta2_schedule="adafactor", betas=(0.9, 0.8)
    ),
    "adax-fused": lambda p: adamx.AdaX(p, fused=True),
    "adax-single": lambda p: adamx.AdaX(p, foreach=False),
}


def grads(t: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(500 + t)
    return [torch.randn(s, generator=g) for s in SHAPES]


def main() -> None:
    out = {"grads": [grads(t) for t in range(1, 11)], "cases": {}}
    for name, make in CASES.items():
        g0 = torch.Generator().manual_seed(1)
        params = [torch.randn(s, generator=g0).requires_grad_() for s in SHAPES]
        opt = make(
            [{"params": [params[0]], "weight_decay": 0.05}, {"params": [params[1]], "weight_decay": 0.0}]
        )
        entry = {}
        for t in range(10):
            if t == 5:
                entry = {
                    "params": [p.detach().clone() for p in params],
                    "optimizer": copy.deepcopy(opt.state_dict()),
                }
            for p, g in zip(params, out["grads"][t]):
                p.grad = g.clone()
            opt.step()
        entry["params_after"] = [p.detach().clone() for p in params]
        out["cases"][name] = entry
    torch.save(out, "tests/adamx/checkpoints/adamx_0_1_0_states.pt")


if __name__ == "__main__":
    main()
