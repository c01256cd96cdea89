"""Writes tests/data/adamx_0_1_0_states.pt with the pre-issue-13 code (step: Python int, float scales)."""
import copy, torch, adamx
torch.manual_seed(0)
shapes = [(6, 4), (5,)]
cases = {
    "adamx-single": lambda p: adamx.AdamX(p, foreach=False),
    "adamx-fused": lambda p: adamx.AdamX(p, fused=True),
    "adamx-foreach-adafactor": lambda p: adamx.AdamX(p, foreach=True, beta2_schedule="adafactor", betas=(0.9, 0.8)),
    "adax-fused": lambda p: adamx.AdaX(p, fused=True),
    "adax-single": lambda p: adamx.AdaX(p, foreach=False),
}
def grads(t):
    g = torch.Generator().manual_seed(500 + t)
    return [torch.randn(s, generator=g) for s in shapes]
out = {"grads": [grads(t) for t in range(1, 11)], "cases": {}}
for name, make in cases.items():
    g0 = torch.Generator().manual_seed(1)
    params = [torch.randn(s, generator=g0).requires_grad_() for s in shapes]
    opt = make([{"params": [params[0]], "weight_decay": 0.05}, {"params": [params[1]], "weight_decay": 0.0}])
    for t in range(5):
        for p, g in zip(params, out["grads"][t]):
            p.grad = g.clone()
        opt.step()
    entry = {"params": [p.detach().clone() for p in params], "optimizer": copy.deepcopy(opt.state_dict())}
    for t in range(5, 10):
        for p, g in zip(params, out["grads"][t]):
            p.grad = g.clone()
        opt.step()
    entry["params_after"] = [p.detach().clone() for p in params]
    out["cases"][name] = entry
torch.save(out, "tests/data/adamx_0_1_0_states.pt")
print({k: v["optimizer"]["state"][0] for k, v in out["cases"].items()})
print(out["cases"]["adamx-fused"]["optimizer"]["param_groups"])
