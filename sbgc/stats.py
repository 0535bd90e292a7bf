"""Small statistical helpers for the book's numbers: standard errors and confidence intervals.

Every interval here is two-sided at ``level`` (default 95 %). For a binomial proportion (an
accuracy, a fraction of pairs) use :func:`binomial_interval` (Clopper–Pearson) or
:func:`proportion_summary`, which adds the exact two-sided sign test against one half.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _as_sample(values, name: str, minimum: int) -> np.ndarray:
    """A finite 1-D float64 sample of at least ``minimum`` values."""
    x = np.asarray(values, np.float64)
    if x.ndim != 1 or x.size < minimum:
        raise ValueError(f"{name} must be a 1-D sample of at least {minimum} values, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite, got {int(np.sum(~np.isfinite(x)))} non-finite values")
    return x


def sem(values, axis: int = -1) -> np.ndarray:
    """Standard error of the mean along ``axis``: sample std (ddof = 1) / sqrt(n)."""
    x = np.asarray(values, np.float64)
    n = x.shape[axis]
    if n < 2:
        raise ValueError(f"the standard error needs at least 2 values along axis {axis}, got {n}")
    return x.std(axis=axis, ddof=1) / np.sqrt(n)


@dataclasses.dataclass(frozen=True)
class MeanInterval:
    """Mean of a sample with its standard error and Student-t confidence interval."""

    mean: float
    sem: float
    lo: float
    hi: float
    n: int
    level: float

    def excludes(self, value: float) -> bool:
        """Whether ``value`` lies outside the interval."""
        return not self.lo <= value <= self.hi


def mean_interval(values, level: float = 0.95) -> MeanInterval:
    """Mean ± the Student-t interval t_{n−1, (1+level)/2} · s/√n of a 1-D sample (n ≥ 2)."""
    from scipy.stats import t as student_t

    _check_level(level)
    x = _as_sample(values, "values", 2)
    m, se = float(x.mean()), float(sem(x))
    half = float(student_t.ppf(0.5 + level / 2, x.size - 1)) * se
    return MeanInterval(m, se, m - half, m + half, int(x.size), level)


@dataclasses.dataclass(frozen=True)
class ProportionSummary:
    """A fraction k/n with its Clopper–Pearson interval and the sign-test p-value against 1/2."""

    successes: int
    n: int
    fraction: float
    lo: float
    hi: float
    sign_test_p: float  # two-sided exact binomial test of H0: fraction = 1/2
    level: float


def binomial_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper–Pearson (exact) interval for a binomial proportion, e.g. an accuracy."""
    from scipy.stats import beta

    if not (0 <= successes <= trials and trials > 0):
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    alpha = 1.0 - level
    lo = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return lo, hi


def proportion_summary(successes: int, n: int, level: float = 0.95) -> ProportionSummary:
    """k of n with an exact (Clopper–Pearson) interval and the exact two-sided sign test p-value."""
    from scipy.stats import binomtest

    _check_level(level)
    lo, hi = binomial_interval(int(successes), int(n), level)
    p = float(binomtest(int(successes), int(n), 0.5, alternative="two-sided").pvalue)
    return ProportionSummary(int(successes), int(n), successes / n, lo, hi, p, level)
