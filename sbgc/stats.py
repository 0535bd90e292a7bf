"""Small statistical helpers for the book's numbers: standard errors and confidence intervals.

Every interval here is two-sided at ``level`` (default 95 %). For a binomial proportion (an
accuracy, a fraction of pairs) use :func:`proportion_estimate` (Clopper–Pearson) and, against one
half, :func:`sign_test_p`; for a mean, :func:`mean_estimate` (Student t). Both return an
:class:`Estimate`, the one value-with-interval type of the book.
"""

from __future__ import annotations

import dataclasses
import math

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
class Estimate:
    """An estimate with its two-sided interval at ``level`` and the sample behind it — the one
    value-with-interval type of the book (a mean, an accuracy, a bootstrap percentile interval).

    value: the point estimate (a mean, or a fraction k/n).
    lo, hi: the interval; NaN where none exists (e.g. the mean of a single value).
    n: the sample size (values of a mean, trials of a fraction).
    level: the interval's coverage, e.g. 0.95.
    method: how the interval was made: ``"student-t"``, ``"clopper-pearson"``, ``"image-bootstrap"``.
    se: the standard error where one is defined (a mean's s/√n), else NaN.
    successes: k of a fraction k/n (None for a mean).
    """

    value: float
    lo: float
    hi: float
    n: int
    level: float = 0.95
    method: str = ""
    se: float = float("nan")
    successes: int | None = None

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.lo) or math.isnan(self.hi))

    def excludes(self, value: float) -> bool:
        """Whether ``value`` lies outside the interval (False when there is none)."""
        return self.has_interval and not self.lo <= value <= self.hi

    def fmt(self, digits: int = 2, scale: float = 1.0) -> str:
        """``"0.91 [0.84, 0.96] (n = 100)"``, values times ``scale``; ``"(n/a)"`` without an interval."""
        v, lo, hi = (scale * a for a in (self.value, self.lo, self.hi))
        interval = f"[{lo:.{digits}f}, {hi:.{digits}f}]" if self.has_interval else "(n/a)"
        return f"{v:.{digits}f} {interval} (n = {self.n:,})"

    def as_dict(self) -> dict:
        """JSON-ready (NaN becomes None)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in dataclasses.asdict(self).items()}


def mean_estimate(values, level: float = 0.95) -> Estimate:
    """Mean of a 1-D sample with its standard error and Student-t interval
    mean ± t_{n−1, (1+level)/2} · s/√n; a single value gets no interval (NaN bounds)."""
    from scipy.stats import t as student_t

    _check_level(level)
    x = _as_sample(values, "values", 1)
    if x.size == 1:
        return Estimate(float(x[0]), float("nan"), float("nan"), 1, level, "student-t")
    m, se = float(x.mean()), float(sem(x))
    half = float(student_t.ppf(0.5 + level / 2, x.size - 1)) * se
    return Estimate(m, m - half, m + half, int(x.size), level, "student-t", se)


def binomial_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper–Pearson (exact) interval for a binomial proportion, e.g. an accuracy."""
    from scipy.stats import beta

    if not (0 <= successes <= trials and trials > 0):
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    alpha = 1.0 - level
    lo = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return lo, hi


def proportion_estimate(successes: int, n: int, level: float = 0.95) -> Estimate:
    """The fraction k/n (e.g. an accuracy) with its exact (Clopper–Pearson) interval."""
    _check_level(level)
    lo, hi = binomial_interval(int(successes), int(n), level)
    return Estimate(successes / n, lo, hi, int(n), level, "clopper-pearson", successes=int(successes))


def sign_test_p(successes: int, n: int) -> float:
    """Two-sided exact binomial test of H0: fraction = 1/2 (the sign test) for k of n."""
    from scipy.stats import binomtest

    return float(binomtest(int(successes), int(n), 0.5, alternative="two-sided").pvalue)
