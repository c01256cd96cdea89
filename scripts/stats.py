"""The statistics of the results tables (issue 25): tests, multiple comparisons, effect sizes, verdicts.

Every comparison is one row against the reference row over seeds (independent samples, n of each side):

- **Welch's t-test on the right scale**: on log10 of the values for losses and areas (quantities that span
  decades: a raw-scale t-test is then driven by the largest seed), on the raw values for errors in % and
  counts (bounded, tied, can be 0). ``scipy.stats.ttest_ind(equal_var=False)``.
- **An exact Mann-Whitney U test beside it** (``scipy.stats.mannwhitneyu(method="exact")``), which needs no
  scale at all. With 5 against 5 seeds its smallest two-sided p is 2/252 = 0.0079.
- **Holm's step-down adjustment** across a stated family (every comparison of one test kind in one table),
  so that a family of 16 landmark tests is read as a family, not as 16 separate claims.
- **An effect size with a 95% bootstrap interval over seeds**: the difference of the means of log10 (the
  log10 of the ratio of geometric means) on the log scale, the difference of means on the raw scale; each
  side is resampled on its own (``scipy.stats.bootstrap``, percentile method, 9,999 resamples, a fixed RNG
  seed, so a table is reproducible to the digit).
- **A verdict by a stated rule** (``verdict``): "supported" when the Holm-adjusted Welch p < alpha and the
  bootstrap interval lies wholly on the claimed side of 0; "contradicted" when the same holds on the other
  side; "not supported" otherwise (no difference this design can detect; it is not evidence of equality).

``area_split`` divides the area under a per-step loss into a trend part and a spike part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, stats

ALPHA = 0.05
BOOTSTRAP_SEED = 20251207  # fixed: a table regenerated from the same runs gives the same intervals
BOOTSTRAP_RESAMPLES = 9999
SCALES = ("log10", "linear")

VERDICT_RULE = (
    "verdict rule: 'supported' when the Holm-adjusted Welch p < {alpha:g} and the 95% bootstrap interval of "
    "the effect lies wholly on the side the claim predicts; 'contradicted' when both hold on the other side; "
    "otherwise 'not supported' (no difference this design detects; not evidence of equality)."
)


def _values(x: Sequence[float]) -> np.ndarray:
    return np.asarray([float(v) for v in x], dtype=np.float64)


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is not a scale of these tests; use one of {', '.join(SCALES)}.")


def on_scale(x: Sequence[float], scale: str) -> np.ndarray | None:
    """The values as the test sees them: log10 (None when any value is <= 0 or not finite) or as they are."""
    _check_scale(scale)
    v = _values(x)
    if not np.isfinite(v).all():
        return None
    if scale == "log10":
        if (v <= 0).any():
            return None
        return np.log10(v)
    return v


def welch(a: Sequence[float], b: Sequence[float], scale: str = "log10") -> float:
    """Two-sided Welch t-test p of a vs b on ``scale``; NaN when a side has n < 2, the log of a value is
    undefined, or neither side varies."""
    la, lb = on_scale(a, scale), on_scale(b, scale)
    if la is None or lb is None or len(la) < 2 or len(lb) < 2:
        return math.nan
    if np.ptp(la) == 0 and np.ptp(lb) == 0:
        return math.nan
    return float(stats.ttest_ind(la, lb, equal_var=False).pvalue)


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided exact Mann-Whitney U p of a vs b (scale-free); NaN when a side is empty or not finite,
    or when every value is the same (no ordering to test)."""
    va, vb = _values(a), _values(b)
    if len(va) == 0 or len(vb) == 0 or not (np.isfinite(va).all() and np.isfinite(vb).all()):
        return math.nan
    if np.ptp(np.concatenate([va, vb])) == 0:
        return math.nan
    return float(stats.mannwhitneyu(va, vb, alternative="two-sided", method="exact").pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given; NaN entries are not in the family and stay NaN.

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j))."""
    p = [float(v) for v in pvalues]
    live = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(live)
    out = [math.nan] * len(p)
    running = 0.0
    for rank, (value, index) in enumerate(live):
        running = max(running, min(1.0, (m - rank) * value))
        out[index] = running
    return out


@dataclass(frozen=True)
class Effect:
    """Effect of a row vs the reference on ``scale``: ``estimate`` and its 95% bootstrap interval.
    log10: mean(log10 a) - mean(log10 b) (so 10**estimate is the ratio of geometric means); linear:
    mean(a) - mean(b)."""

    estimate: float
    low: float
    high: float
    scale: str

    def text(self) -> str:
        if math.isnan(self.estimate):
            return "—"
        if self.scale == "log10":
            return f"×{10**self.estimate:.3g} [{10**self.low:.3g}, {10**self.high:.3g}]"
        return f"{self.estimate:+.3g} [{self.low:+.3g}, {self.high:+.3g}]"


def effect(
    a: Sequence[float],
    b: Sequence[float],
    scale: str = "log10",
    seed: int = BOOTSTRAP_SEED,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> Effect:
    """The effect of a vs b with a 95% percentile bootstrap interval, each side resampled over its seeds
    (``scipy.stats.bootstrap``, fixed RNG seed). NaN when a side has n < 2 or its log is undefined."""
    la, lb = on_scale(a, scale), on_scale(b, scale)
    if la is None or lb is None or len(la) < 2 or len(lb) < 2:
        return Effect(math.nan, math.nan, math.nan, scale)
    estimate = float(la.mean() - lb.mean())
    if np.ptp(la) == 0 and np.ptp(lb) == 0:  # nothing to resample: the interval is the point
        return Effect(estimate, estimate, estimate, scale)
    res = stats.bootstrap(
        (la, lb),
        lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        vectorized=True,
        paired=False,
        n_resamples=resamples,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return Effect(estimate, float(res.confidence_interval.low), float(res.confidence_interval.high), scale)


def verdict(p_adjusted: float, eff: Effect, claim: str, alpha: float = ALPHA) -> str:
    """'supported' / 'contradicted' / 'not supported' by the rule in ``VERDICT_RULE``.

    ``claim`` is the sign the claim predicts for the effect (row - reference): 'lower' (the row's values are
    smaller, e.g. a claimed-better optimizer's loss) or 'higher'."""
    if claim not in ("lower", "higher"):
        raise ValueError(f"claim={claim!r} must be 'lower' or 'higher' (the side the claim predicts).")
    if math.isnan(p_adjusted) or math.isnan(eff.low) or p_adjusted >= alpha:
        return "not supported"
    below, above = eff.high < 0, eff.low > 0
    if (claim == "lower" and below) or (claim == "higher" and above):
        return "supported"
    if (claim == "lower" and above) or (claim == "higher" and below):
        return "contradicted"
    return "not supported"


@dataclass
class Comparison:
    """One row vs the reference on one quantity: both samples, the tests, Holm's adjustment (filled by
    ``adjust``), the effect and the verdict."""

    family: str
    row: str
    quantity: str
    scale: str
    values: list[float]
    reference: list[float]
    claim: str | None = None  # 'lower'/'higher': the side a claim predicts for row - reference
    p_welch: float = math.nan
    p_mw: float = math.nan
    p_welch_holm: float = math.nan
    p_mw_holm: float = math.nan
    eff: Effect | None = None
    verdict: str = ""

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def n_ref(self) -> int:
        return len(self.reference)

    @property
    def median(self) -> float:
        return float(np.median(self.values)) if self.values else math.nan

    @property
    def median_ref(self) -> float:
        return float(np.median(self.reference)) if self.reference else math.nan


def compare(
    family: str,
    row: str,
    quantity: str,
    values: Sequence[float],
    reference: Sequence[float],
    scale: str,
    claim: str | None = None,
) -> Comparison:
    """The unadjusted tests and the effect of one comparison (``adjust`` adds Holm and the verdict)."""
    c = Comparison(family, row, quantity, scale, list(map(float, values)), list(map(float, reference)), claim)
    c.p_welch = welch(c.values, c.reference, scale)
    c.p_mw = mann_whitney(c.values, c.reference)
    c.eff = effect(c.values, c.reference, scale)
    return c


def adjust(comparisons: list[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """Holm-adjust the Welch and the Mann-Whitney p-values within each family, then give each comparison
    that carries a claim its verdict. Returns the same list."""
    for family in dict.fromkeys(c.family for c in comparisons):
        members = [c for c in comparisons if c.family == family]
        for c, pw, pm in zip(
            members, holm([c.p_welch for c in members]), holm([c.p_mw for c in members]), strict=True
        ):
            c.p_welch_holm, c.p_mw_holm = pw, pm
    for c in comparisons:
        if c.claim is not None and c.eff is not None:
            c.verdict = verdict(c.p_welch_holm, c.eff, c.claim, alpha)
    return comparisons


def family_sizes(comparisons: list[Comparison]) -> dict[str, int]:
    """family -> number of comparisons with a Welch p (those Holm counts)."""
    out: dict[str, int] = {}
    for c in comparisons:
        out.setdefault(c.family, 0)
        out[c.family] += int(not math.isnan(c.p_welch))
    return out


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "—"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def fmt_value(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:.3g}"


def comparisons_markdown(title: str, comparisons: list[Comparison], header: Sequence[str] = ()) -> str:
    """A table of comparisons with each family (and its size) stated in the header, and the verdict rule."""
    sizes = family_sizes(comparisons)
    lines = [f"# {title}", ""] + [f"{line}  " for line in header]
    lines += [
        "Holm families (adjusted within each, for the Welch and the Mann-Whitney p separately): "
        + "; ".join(f"{name} ({m} tests)" for name, m in sizes.items())
        + ".  ",
        "Welch = two-sided Welch t-test on log10 of the values (scale log10) or on the values (linear); "
        "MW = two-sided exact Mann-Whitney U; effect = ratio of geometric means (log10) or difference of "
        f"means (linear), row vs reference, with a 95% percentile bootstrap interval over seeds "
        f"({BOOTSTRAP_RESAMPLES:,} resamples, RNG seed {BOOTSTRAP_SEED}).  ",
        VERDICT_RULE.format(alpha=ALPHA),
        "",
        "| family | row | quantity | scale | n | median | n ref | median ref | Welch p | Holm | MW p | Holm "
        "| effect [95% CI] | claim | verdict |",
        "|" + "---|" * 15,
    ]
    for c in comparisons:
        lines.append(
            "| "
            + " | ".join(
                [
                    c.family,
                    c.row,
                    c.quantity,
                    c.scale,
                    str(c.n),
                    fmt_value(c.median),
                    str(c.n_ref),
                    fmt_value(c.median_ref),
                    fmt_p(c.p_welch),
                    fmt_p(c.p_welch_holm),
                    fmt_p(c.p_mw),
                    fmt_p(c.p_mw_holm),
                    c.eff.text() if c.eff is not None else "—",
                    c.claim or "—",
                    c.verdict or "—",
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def comparisons_csv(comparisons: list[Comparison]) -> str:
    """Long format, one line per comparison, every number at 10 significant digits."""

    def g(v: float) -> str:
        return "" if v is None or math.isnan(v) else f"{v:.10g}"

    cols = [
        "family", "row", "quantity", "scale", "n", "median", "n_ref", "median_ref", "p_welch", "p_welch_holm",
        "p_mw", "p_mw_holm", "effect", "effect_low", "effect_high", "claim", "verdict", "values", "reference",
    ]  # fmt: skip
    out = [",".join(cols)]
    for c in comparisons:
        e = c.eff or Effect(math.nan, math.nan, math.nan, c.scale)
        out.append(
            ",".join(
                [c.family, c.row, c.quantity, c.scale, str(c.n), g(c.median), str(c.n_ref), g(c.median_ref)]
                + [g(c.p_welch), g(c.p_welch_holm), g(c.p_mw), g(c.p_mw_holm), g(e.estimate), g(e.low)]
                + [g(e.high), c.claim or "", c.verdict]
                + ['"' + ";".join(f"{v:.10g}" for v in c.values) + '"']
                + ['"' + ";".join(f"{v:.10g}" for v in c.reference) + '"']
            )
        )
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- the area: trend and spikes


def rolling_trend(loss: Sequence[float], window: int) -> np.ndarray:
    """A robust trend of a per-step loss: the running median over ``window`` steps centred on each step,
    the first and last values repeated past the ends (so a monotone loss is its own trend). ``window``
    must be odd and >= 1."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"trend window={window} must be an odd number of steps >= 1 (e.g. 441).")
    return ndimage.median_filter(_values(loss), size=window, mode="nearest")


def area_split(loss: Sequence[float], window: int) -> tuple[float, float, float]:
    """(area, trend part, spike part) of a per-step loss (unit step width): trend = Σ min(loss, trend_t),
    spikes = Σ max(loss - trend_t, 0), with trend_t the running median (``rolling_trend``), so
    area = trend + spikes exactly: the spike part is what lies above the running median."""
    v = _values(loss)
    if len(v) == 0 or not np.isfinite(v).all():
        return math.nan, math.nan, math.nan
    trend = rolling_trend(v, window)
    below = np.minimum(v, trend).sum()
    above = np.maximum(v - trend, 0.0).sum()
    return float(v.sum()), float(below), float(above)
