"""The arithmetic behind a claim that survives review: p-values of paired differences (Student t and
an exact sign-flip test), their adjustment within a family of comparisons, the interval at the
adjusted level, the minimum detectable effect, a paired TOST and a robust outlier rule.
Pure functions of numbers, tested against statsmodels, scipy and hand-computed cases.

Why these, in one place:
- A study makes many comparisons; at 95 % per interval about one in twenty excludes zero by chance.
  Within a *family* the p-values are adjusted (Holm by default: it controls the family-wise error
  like Bonferroni and is never less powerful; Benjamini–Hochberg controls the false discovery rate).
- The interval shown beside an adjusted p is the t-interval at the level the row was tested at
  (`adjusted_levels`), so "the adjusted interval excludes zero" and "the adjusted p < α" agree.
- An unresolved difference is not evidence of no difference: it comes with the smallest effect the
  comparison had an 80 % chance to resolve (MDE), and, against a bound declared before the data, a
  TOST says whether equivalence within it is shown ("equivalent") or not ("inconclusive").
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import integrate, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

ALPHA = 0.05
POWER = 0.8
# statsmodels' names of the corrections a report offers
METHODS = {"holm": "holm", "bh": "fdr_bh", "bonferroni": "bonferroni"}
METHOD_NAMES = {"holm": "Holm", "bh": "Benjamini–Hochberg", "bonferroni": "Bonferroni"}
# A run is an outlier of its arm when its statistic lies outside the 99.9 % prediction interval that
# the arm's other seeds give for one more seed. Why not |x − median| > 5 MAD: an arm has ~5 seeds,
# and where three of them happen to lie close their MAD is near zero, so ordinary spread reads as
# "far" (on the CPU study that rule flags 7 of 60 runs, act-mean differences of 0.03 among them).
# Leaving the run out keeps it from widening its own yardstick, and under normal seeds the statistic
# is exactly Student t with n − 2 degrees of freedom, so the false-flag rate per run is 0.001.
OUTLIER_P = 0.001
EXACT_SIGN_FLIP_MAX_N = 16  # 2^16 sign vectors: still instant; above, a seeded Monte Carlo


def _finite(values: Sequence[float]) -> np.ndarray:
    return np.asarray([v for v in values if math.isfinite(v)], dtype=float)


def testable(differences: Sequence[float]) -> bool:
    """A t-test needs two values and some spread (five identical differences have no standard error)."""
    x = _finite(differences)
    # a spread at rounding level (equal values minus their float mean) is no spread
    return len(x) >= 2 and float(x.std(ddof=1)) > 1e-12 * max(1.0, float(np.abs(x).max()))


def t_test_p(differences: Sequence[float]) -> float:
    """Two-sided p of the paired t-test of mean difference 0; NaN where it is not `testable`."""
    if not testable(differences):
        return math.nan
    return float(stats.ttest_1samp(_finite(differences), 0.0).pvalue)


def sign_flip_p(differences: Sequence[float], seed: int = 0) -> float:
    """Two-sided p of the sign-flip (randomization) test: under "no difference" each seed's
    difference is as likely positive as negative, so the share of the 2^n sign patterns whose
    |mean| is at least the observed one is an exact p with no normality assumed. Note that its
    smallest value is 2/2^n: with 5 seeds 0.0625, so 5 seeds can never pass it at 0.05."""
    x = _finite(differences)
    n = len(x)
    if n == 0:
        return math.nan
    observed = abs(x.mean())
    if n <= EXACT_SIGN_FLIP_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(100_000, n))
    means = np.abs(signs @ x) / n
    # a relative tolerance, so that a pattern equal to the observed one is not lost to rounding
    return float(np.mean(means >= observed * (1 - 1e-12) - 1e-15))


def adjust(pvalues: Sequence[float], method: str = "holm") -> np.ndarray:
    """Adjusted p-values of one family (statsmodels' multipletests); NaN entries (untestable rows)
    are left out of the family and stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), math.nan)
    kept = np.isfinite(p)
    if kept.any():
        out[kept] = multipletests(p[kept], method=METHODS[method])[1]
    return out


def adjusted_levels(pvalues: Sequence[float], method: str = "holm", alpha: float = ALPHA) -> np.ndarray:
    """The two-sided error level each row of a family is judged at, so that its t-interval at level
    1 − level excludes zero exactly when its raw p < level:
    - bonferroni: α/m for every row;
    - holm: α/(m − r + 1) for the row of rank r (1 = smallest p), the step-down's own threshold;
      a row rejected by Holm always has its interval clear of zero, and a row whose interval clears
      zero is rejected unless a row of smaller p was not (then its adjusted p says so);
    - bh: R·α/m for every row, R the number BH rejects (at least 1): the false-coverage-adjusted
      intervals of Benjamini & Yekutieli (2005); they exclude zero exactly for the rejected rows.
    NaN for untestable rows, which are not counted in m."""
    p = np.asarray(pvalues, dtype=float)
    kept = np.isfinite(p)
    m = int(kept.sum())
    levels = np.full(len(p), math.nan)
    if m == 0:
        return levels
    if method == "bonferroni":
        levels[kept] = alpha / m
    elif method == "holm":
        ranks = stats.rankdata(p[kept], method="ordinal")
        levels[kept] = alpha / (m - ranks + 1)
    elif method == "bh":
        rejected = int(multipletests(p[kept], alpha=alpha, method="fdr_bh")[0].sum())
        levels[kept] = max(rejected, 1) * alpha / m
    else:
        raise ValueError(f"unknown correction {method!r}; choose one of {', '.join(METHODS)}")
    return levels


def minimum_detectable_effect(n: int, sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided paired t-test of n seeds at level `alpha` finds
    with probability `power`, given the paired SD: statsmodels' standardized effect times the SD."""
    if n < 2 or not (math.isfinite(sd) and sd > 0) or not math.isfinite(alpha):
        return math.nan
    effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided")
    return float(effect) * sd


def _power_by_mixture(standardized: float, n: int, alpha: float) -> float:
    """The two-sided one-sample t-test's power as the chi-square probability averaged over the normal:
    P(|Z + δ√n| > c·√(V/df)) = E_Z[P(V < df·(Z + δ√n)²/c²)], V ~ χ²(df), df = n − 1, c the t quantile.
    The same number as the noncentral t's tail, computed where scipy's `nct` gives NaN (large
    noncentrality with few degrees of freedom). Integrated over Z, whose density is smooth and lies
    within ±12, rather than over V, whose rejecting region can be too narrow for quad to find."""
    df, shift = n - 1, standardized * math.sqrt(n)
    critical = float(stats.t.ppf(1 - alpha / 2, df))

    def rejects(z: float) -> float:
        return stats.norm.pdf(z) * stats.chi2.cdf(df * (z + shift) ** 2 / critical**2, df)

    inside = [-shift] if -12 < -shift < 12 else None  # where the chi-square probability is 0
    return float(integrate.quad(rejects, -12, 12, points=inside, limit=200)[0])


def paired_power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """The probability that a two-sided paired t-test of n seeds at level `alpha` resolves a true mean
    difference `effect`, given the paired SD: statsmodels' TTestPower on effect / sd, or the same
    power by `_power_by_mixture` where statsmodels returns NaN."""
    if n < 2 or not (math.isfinite(sd) and sd > 0 and math.isfinite(effect) and math.isfinite(alpha)):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's nct on its NaN cases
        power = float(TTestPower().power(effect_size=abs(effect) / sd, nobs=n, alpha=alpha, alternative="two-sided"))
    return power if math.isfinite(power) else _power_by_mixture(abs(effect) / sd, n, alpha)


def seeds_for_power(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The fewest seeds (at least 2, a t-test's minimum) whose two-sided paired t-test at level `alpha`
    resolves a true mean difference `effect` with probability ≥ `power`, given the paired SD; NaN
    without a usable SD. The smallest whole n with `paired_power` ≥ `power` (power grows with n),
    found by doubling then bisection: statsmodels' `solve_power` gives the same n rounded up where it
    converges, but its root finder fails (NaN) for large effects at small levels, e.g. 0.085 nats
    over a paired SD of 0.006 at α/14."""
    if not (math.isfinite(sd) and sd > 0 and math.isfinite(effect) and effect != 0 and math.isfinite(alpha)):
        return math.nan
    low, high = 1, 2  # power(low) < power ≤ power(high) once the doubling stops
    while paired_power(effect, sd, high, alpha) < power:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if paired_power(effect, sd, middle, alpha) < power else (low, middle)
    return high


def tost_p(differences: Sequence[float], bound: float) -> float:
    """p of the paired two one-sided tests of |mean difference| ≥ bound: the larger of the p of
    "mean ≤ −bound" and of "mean ≥ +bound". Equivalence within ±bound is shown where it is < α
    (equivalently: the 1 − 2α interval lies inside ±bound)."""
    x = _finite(differences)
    if not testable(x) or not (math.isfinite(bound) and bound > 0):
        return math.nan
    n = len(x)
    se = x.std(ddof=1) / math.sqrt(n)
    p_above_lower = stats.t.sf((x.mean() + bound) / se, n - 1)  # H0: mean ≤ −bound
    p_below_upper = stats.t.cdf((x.mean() - bound) / se, n - 1)  # H0: mean ≥ +bound
    return float(max(p_above_lower, p_below_upper))


def leave_one_out_t(value: float, others: Sequence[float]) -> float:
    """(x − mean of the others) / (their SD · √(1 + 1/k)), k others: Student t(k − 1) when x and the
    others are draws from one normal distribution (the t of a prediction interval for one more seed)."""
    x = _finite(others)
    k = len(x)
    spread = float(x.std(ddof=1)) if k >= 2 else math.nan
    if not spread > 0:
        return math.nan
    return (value - float(x.mean())) / (spread * math.sqrt(1 + 1 / k))


def outliers(values: dict[str, float], p: float = OUTLIER_P) -> list[str]:
    """Keys whose value lies outside the two-sided 1 − p prediction interval of the other values
    (`leave_one_out_t` beyond Student t's 1 − p/2 quantile). Needs 4 finite values: 3 others, so
    that the t has two degrees of freedom."""
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    if len(finite) < 4:
        return []
    critical = float(stats.t.ppf(1 - p / 2, len(finite) - 2))
    flagged = []
    for key, value in finite.items():
        t = leave_one_out_t(value, [v for k, v in finite.items() if k != key])
        if math.isfinite(t) and abs(t) > critical:
            flagged.append(key)
    return flagged
