"""Monte-Carlo check of the paper's Eq. 10: the variance of Adam's bias-corrected second moment at large t,

    lim Var[v̂_t] = (1 - β2)/(1 + β2) · (2σ⁴ + 4σ² E[(∇f)²] + Var[(∇f)²]),

under Hypotheses 1-3 (gradient = full-batch gradient + N(0, σ²) noise, components i.i.d., the two
independent). Hypothesis 1 makes the coordinates independent replicas, so the variance is estimated
across coordinates of one long simulation of the recursion (Eq. 3), never from the closed form.

Two readings of "the full-batch gradient" are simulated, because Eq. 8 silently needs the first:
- ``iid``: ∇f at each step is a fresh draw (independent over time) — Eq. 10 should hold;
- ``fixed``: ∇f is drawn once per coordinate and stays (a plateau) — then Var[(∇f)²] enters undamped:
  Var[v̂_t] -> Var[(∇f)²] + (1 - β2)/(1 + β2) · (2σ⁴ + 4σ² E[(∇f)²]).
The same simulation with AdamX's β̂2,t (Eq. 11) shows what its "β̂2,t -> 1" does to this variance.

    python scripts/mc_eq10.py [--out results/mc_eq10.md]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adamx.schedules import beta2_hat_adamx


@dataclass(frozen=True)
class GradModel:
    """∇f ~ N(mu, s²) per coordinate, noise N(0, sigma²)."""

    mu: float = 0.5
    s: float = 0.5
    sigma: float = 1.0

    @property
    def mean_sq(self) -> float:  # E[(∇f)²]
        return self.mu**2 + self.s**2

    @property
    def var_sq(self) -> float:  # Var[(∇f)²] of a normal
        return 2 * self.s**4 + 4 * self.mu**2 * self.s**2

    @property
    def noise_part(self) -> float:  # 2σ⁴ + 4σ² E[(∇f)²]
        return 2 * self.sigma**4 + 4 * self.sigma**2 * self.mean_sq


def eq10(beta2: float, g: GradModel) -> float:
    """The paper's Eq. 10."""
    return (1 - beta2) / (1 + beta2) * (g.noise_part + g.var_sq)


def eq9_finite(beta2: float, t: int, g: GradModel) -> float:
    """Eq. 8-9 at finite t: (1-β2)² Σ β2^(2(t-i)) C / (1 - β2^t)²."""
    s = (1 - beta2) ** 2 * (1 - beta2 ** (2 * t)) / (1 - beta2**2)
    return s / (1 - beta2**t) ** 2 * (g.noise_part + g.var_sq)


def fixed_gradient_limit(beta2: float, g: GradModel) -> float:
    """Large-t variance when ∇f is constant over time per coordinate (derived in the module docstring)."""
    return g.var_sq + (1 - beta2) / (1 + beta2) * g.noise_part


def adamx_sum_w2(beta2: float, t: int) -> float:
    """Σ w_i² of AdamX's v_t = Σ w_i g_i², from the β̂2,t recursion (w_i = (1-β̂_i) Π_{j>i} β̂_j)."""
    w = np.zeros(t)
    for k in range(1, t + 1):
        b = beta2_hat_adamx(k, beta2)
        w[: k - 1] *= b
        w[k - 1] = 1 - b
    return float(np.sum(w**2))


def simulate(
    beta2: float,
    t: int,
    n: int,
    g: GradModel,
    mode: str = "iid",
    schedule: str = "adam",
    seed: int = 0,
    chunk: int = 1,
) -> tuple[float, float]:
    """Var[v̂_t] across ``n`` independent coordinates after ``t`` steps of the recursion, and its
    standard error. ``schedule`` 'adam' runs Eq. 3 (v = β2 v + (1-β2) g², v̂ = v/(1-β2^t));
    'adamx' runs v = β̂2,t v + (1-β̂2,t) g² with Eq. 11."""
    if mode not in ("iid", "fixed"):
        raise ValueError(f"Unknown gradient mode {mode!r}; use 'iid' or 'fixed'.")
    rng = np.random.default_rng(seed)
    fixed = g.mu + g.s * rng.standard_normal(n)
    v = np.zeros(n)
    for k in range(1, t + 1):
        full = fixed if mode == "fixed" else g.mu + g.s * rng.standard_normal(n)
        grad = full + g.sigma * rng.standard_normal(n)
        b = beta2 if schedule == "adam" else beta2_hat_adamx(k, beta2)
        v *= b
        v += (1 - b) * grad * grad
    v_hat = v / (1 - beta2**t) if schedule == "adam" else v
    var = float(np.var(v_hat, ddof=1))
    centred = v_hat - v_hat.mean()
    se = math.sqrt(max(float(np.mean(centred**4)) - var**2, 0.0) / n)
    return var, se


def adamx_limit(beta2: float, g: GradModel) -> float:
    """t -> inf of AdamX's Var[v_t]: v_t weights g_i² by c^(i-1)(1-c)/(1-c^t), c = β2^(1-β2), so
    Σ w_i² -> (1-c)/(1+c): the variance stays finite and non-zero (v freezes on its early gradients)."""
    c = beta2 ** (1 - beta2)
    return (1 - c) / (1 + c) * (g.noise_part + g.var_sq)


def run(budget: float = 2e8, seed: int = 0, min_n: int = 4000) -> list[dict]:
    """The report's rows: Adam's Eq. 10 for three β2 and both gradient readings, AdamX at three t."""
    g = GradModel()
    rows = []
    for beta2 in (0.9, 0.99, 0.999):
        t = int(round(10 / (1 - beta2)))
        n = max(int(budget / t / 4), min_n)
        for mode in ("iid", "fixed"):
            sim, se = simulate(beta2, t, n, g, mode=mode, seed=seed)
            rows.append(
                dict(
                    case=f"Adam β2={beta2}, ∇f {mode}",
                    t=t,
                    n=n,
                    eq10=eq10(beta2, g),
                    theory=eq9_finite(beta2, t, g) if mode == "iid" else fixed_gradient_limit(beta2, g),
                    sim=sim,
                    se=se,
                )
            )
    for t in (1000, 10000, 60000):
        n = max(int(budget / t / 4), min_n)
        sim, se = simulate(0.99, t, n, g, mode="iid", schedule="adamx", seed=seed)
        rows.append(
            dict(
                case="AdamX β2=0.99, ∇f iid",
                t=t,
                n=n,
                eq10=eq10(0.99, g),
                theory=adamx_sum_w2(0.99, t) * (g.noise_part + g.var_sq),
                sim=sim,
                se=se,
            )
        )
    return rows


def report(rows: list[dict], seconds: float) -> str:
    g = GradModel()
    lines = [
        "# Monte-Carlo check of Eq. 10",
        "",
        f"∇f ~ N({g.mu}, {g.s}²) per coordinate, noise σ = {g.sigma}: E[(∇f)²] = {g.mean_sq}, "
        f"Var[(∇f)²] = {g.var_sq}; t = 10/(1 - β2) steps; variance across n coordinates; "
        f"{seconds:.0f} s on the CPU (`python scripts/mc_eq10.py`).",
        "For the AdamX rows the Eq. 10 column is Eq. 10 at β2 = 0.99 (Adam's form), for comparison; AdamX's own "
        f"t -> ∞ limit is (1-c)/(1+c) · C with c = 0.99^0.01, = {adamx_limit(0.99, g):.5g}, not 0.",
        "'theory' is Eq. 9 at that t for ∇f iid over time, Var[(∇f)²] + (1-β2)/(1+β2)(2σ⁴ + 4σ²E[(∇f)²]) for ∇f "
        "fixed over time, and Σw_i² · (2σ⁴ + 4σ²E[(∇f)²] + Var[(∇f)²]) for AdamX.",
        "",
        "| case | t | n | Eq. 10 | theory | simulated ± s.e. | (sim - Eq.10)/Eq.10 | (sim - theory)/theory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['t']} | {r['n']} | {r['eq10']:.5g} | {r['theory']:.5g} | "
            f"{r['sim']:.5g} ± {r['se']:.2g} | {(r['sim'] - r['eq10']) / r['eq10']:+.2%} | "
            f"{(r['sim'] - r['theory']) / r['theory']:+.2%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="also write the markdown report here")
    ap.add_argument("--budget", type=float, default=2e8, help="coordinate-steps per case, x4 (default 2e8)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    text = report(run(args.budget, args.seed), time.perf_counter() - start)
    sys.stdout.write(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
