"""Log-likelihood along straight lines between test images (paper §3.4, eq. 4, Fig. 2).

For two images x_A, x_B the paper measures

    f(t) = log p(t · x_A + (1 − t) · x_B),   t ∈ [0, 1]                                  (eq. 4)

at 24 values of t over 500 random test-image pairs, and finds f convex: the interpolated images
(blends that are not natural images) get LOWER log-likelihood than the chord between the endpoints,
unlike GLOW in Fetaya et al. (2020), where f was concave.

Conventions
-----------
* **Density.** p is the classifier's unconditional density p(x) = (1/K) Σ_y p(x | y)
  (:func:`sbgc.method.classify.log_marginal`), in nats of [0, 1]-scaled continuous images.
* **Continuous endpoints.** Each pair is dequantized ONCE with ONE noise draw u ~ U[0, 1)^D shared
  by both endpoints, x_A = (pix_A + u)/256 and x_B = (pix_B + u)/256, so every point of the path is
  (t · pix_A + (1 − t) · pix_B + u)/256: the same dequantization noise at every t, and the path is
  a straight line in the continuous space the model's density lives on. The floats are passed to
  the likelihood with ``dequantize=False`` (:func:`dequantize_pairs`, :func:`interpolate`).
* **Common random numbers.** All classes of an image share the Hutchinson probes
  (:mod:`sbgc.method.classify`), and :func:`path_log_likelihoods` solves t by t with the SAME key, so
  pair p gets the same probes at every t: the probe noise of f is then strongly correlated along
  the path and largely cancels in the differences that measure curvature. Different pairs get
  independent probes.

Convexity is measured per pair, not eyeballed from the mean curve (:func:`convexity_statistics`):
the gap between the chord and f at the midpoint, the mean gap over t, and the divided second
differences of f, each summarised over pairs with a confidence interval (exact binomial intervals
and sign tests for fractions of pairs, Student-t intervals for means).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sbgc.method.classify import class_log_likelihoods, log_marginal
from sbgc.method.sde import SDE
from sbgc.report import markdown_table
from sbgc.stats import Estimate, mean_estimate, proportion_estimate, sign_test_p

Array = jax.Array
ScoreFn = Callable[[Array, Array, Array], Array]


# --- the paths ----------------------------------------------------------------------------------
def interpolation_times(n_t: int) -> np.ndarray:
    """n_t equally spaced values of t in [0, 1], both ends included (the paper: n_t = 24)."""
    if not (isinstance(n_t, (int, np.integer)) and n_t >= 3):
        raise ValueError(f"n_t must be an int >= 3 (curvature needs three points), got {n_t!r}")
    return np.linspace(0.0, 1.0, int(n_t))


def random_pairs(n_images: int, n_pairs: int, seed: int) -> np.ndarray:
    """``n_pairs`` distinct unordered pairs of distinct image indices in [0, n_images): int [P, 2].

    Uniform over all n(n − 1)/2 pairs, without replacement; each row is (A, B) in random order.
    """
    if n_images < 2:
        raise ValueError(f"need at least 2 images to form a pair, got n_images={n_images}")
    n_all = n_images * (n_images - 1) // 2
    if not 1 <= n_pairs <= n_all:
        raise ValueError(f"n_pairs must be in [1, {n_all}] for {n_images} images, got {n_pairs}")
    rng = np.random.default_rng(seed)
    chosen: dict[tuple[int, int], tuple[int, int]] = {}
    while len(chosen) < n_pairs:
        a, b = rng.integers(0, n_images, size=(2, 2 * (n_pairs - len(chosen))))
        for i, j in zip(a.tolist(), b.tolist()):
            if i != j and len(chosen) < n_pairs:
                chosen.setdefault((min(i, j), max(i, j)), (i, j))
    return np.array(list(chosen.values()), np.int64).reshape(n_pairs, 2)


def dequantize_pairs(
    pixels_a: np.ndarray, pixels_b: np.ndarray, key: Array, *, shared_noise: bool = True
) -> tuple[Array, Array]:
    """Continuous endpoints x = (pixels + u)/256 in [0, 1] of P pairs: uint8 [P, *shape] → float32.

    ``shared_noise=True`` (the default, see the module docstring) draws one u per pair for both
    endpoints; ``False`` draws u_A and u_B independently (then the noise of the path's midpoint is
    (u_A + u_B)/2, no longer uniform).
    """
    pixels_a, pixels_b = np.asarray(pixels_a), np.asarray(pixels_b)
    if pixels_a.dtype != np.uint8 or pixels_b.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, got {pixels_a.dtype} and {pixels_b.dtype}")
    if pixels_a.shape != pixels_b.shape or pixels_a.ndim < 2:
        raise ValueError(
            f"pixels_a and pixels_b must be batches [P, ...] of the same shape, got {pixels_a.shape} "
            f"and {pixels_b.shape}"
        )
    k_a, k_b = jax.random.split(key)
    u_a = jax.random.uniform(k_a, pixels_a.shape, jnp.float32)
    u_b = u_a if shared_noise else jax.random.uniform(k_b, pixels_b.shape, jnp.float32)
    return (jnp.asarray(pixels_a, jnp.float32) + u_a) / 256.0, (jnp.asarray(pixels_b, jnp.float32) + u_b) / 256.0


def _interpolate_one(x_a: Array, x_b: Array, ts: Array) -> Array:
    """Eq. 4's argument for one pair: t · x_A + (1 − t) · x_B.  [*shape], [*shape], [T] → [T, *shape]."""
    t = ts.reshape((-1,) + (1,) * x_a.ndim)
    return t * x_a[None] + (1.0 - t) * x_b[None]


@jax.jit
def _interpolate(x_a: Array, x_b: Array, ts: Array) -> Array:
    return jax.vmap(_interpolate_one, in_axes=(0, 0, None))(x_a, x_b, ts)


def interpolate(x_a: Array, x_b: Array, ts: Array | np.ndarray) -> Array:
    """Straight paths between P pairs: x_a, x_b float [P, *shape], ts [T] → [P, T, *shape].

    Row [p, i] is ts[i] · x_a[p] + (1 − ts[i]) · x_b[p], so t = 1 is x_A and t = 0 is x_B.
    """
    x_a, x_b, ts = jnp.asarray(x_a), jnp.asarray(x_b), jnp.asarray(ts, jnp.float32)
    if x_a.shape != x_b.shape or x_a.ndim < 2:
        raise ValueError(f"x_a and x_b must be batches [P, ...] of the same shape, got {x_a.shape} and {x_b.shape}")
    if not (jnp.issubdtype(x_a.dtype, jnp.floating) and jnp.issubdtype(x_b.dtype, jnp.floating)):
        raise ValueError(f"x_a and x_b must be continuous (float) images, got {x_a.dtype} and {x_b.dtype}")
    if ts.ndim != 1:
        raise ValueError(f"ts must be a 1-D array of times, got shape {ts.shape}")
    return _interpolate(x_a.astype(jnp.float32), x_b.astype(jnp.float32), ts)


# --- log-likelihood along the paths -----------------------------------------------------------------
class PathLikelihoods(NamedTuple):
    """f(t) of P paths at T times, with everything behind it."""

    ts: np.ndarray  # [T]
    log_p: np.ndarray  # [P, T] log p(x) = log (1/K) Σ_y p(x | y), nats, [0, 1]-scaled data
    class_log_p: np.ndarray  # [P, T, K] log p(x | y) (mean over probes)
    class_log_p_probes: np.ndarray  # [P, T, K, n] per-probe values (same probes along a path)
    nfe: np.ndarray  # [P, T, K] score evaluations per solve
    dim: int  # D
    seconds: float  # wall time of all solves

    def log_p_probes(self) -> np.ndarray:
        """log p(x) from each probe alone, [P, T, n]: the class mixture of per-probe values."""
        p, t, k, n = self.class_log_p_probes.shape
        flat = np.moveaxis(self.class_log_p_probes, 2, 3).reshape(-1, k)  # [P·T·n, K]
        return log_marginal(flat).reshape(p, t, n)

    def bpd(self) -> np.ndarray:
        """f(t) in bits/dim of the discrete data: −log p / (D ln 2) + 8, [P, T]."""
        return -self.log_p / (self.dim * np.log(2.0)) + 8.0


def path_log_likelihoods(
    score_fn: ScoreFn,
    sde: SDE,
    paths: Array | np.ndarray,
    ts: np.ndarray,
    key: Array,
    *,
    n_classes: int = 10,
    progress: bool = False,
    **likelihood_kwargs,
) -> PathLikelihoods:
    """f(t) = log p(path(t)) for continuous paths [P, T, *shape] (from :func:`interpolate`).

    Solved t by t with the same ``key`` (same probes for pair p at every t; see the module
    docstring). ``likelihood_kwargs`` go to :func:`sbgc.method.classify.class_log_likelihoods`
    (solver, n_probes, chunk_size, ...); ``dequantize`` is always False here.
    """
    from tqdm import tqdm

    paths = jnp.asarray(paths)
    ts = np.asarray(ts, np.float64)
    if paths.ndim < 3 or not jnp.issubdtype(paths.dtype, jnp.floating):
        raise ValueError(f"paths must be continuous images [P, T, ...] (float), got {paths.dtype} {paths.shape}")
    if ts.shape != (paths.shape[1],):
        raise ValueError(f"ts must have shape ({paths.shape[1]},) to match paths, got {ts.shape}")
    if likelihood_kwargs.pop("dequantize", False):
        raise ValueError("paths are already continuous images: dequantize must be False")
    start = time.perf_counter()
    per_t = [
        class_log_likelihoods(score_fn, sde, paths[:, i], key, n_classes=n_classes, dequantize=False,
                              progress=False, **likelihood_kwargs)
        for i in tqdm(range(paths.shape[1]), desc="f(t)", disable=not progress)
    ]  # fmt: skip
    seconds = time.perf_counter() - start
    class_log_p = np.stack([r.log_p for r in per_t], axis=1)  # [P, T, K]
    p, t, k = class_log_p.shape
    return PathLikelihoods(
        ts=ts,
        log_p=log_marginal(class_log_p.reshape(p * t, k)).reshape(p, t),
        class_log_p=class_log_p,
        class_log_p_probes=np.stack([r.log_p_probes for r in per_t], axis=1),
        nfe=np.stack([r.nfe for r in per_t], axis=1),
        dim=per_t[0].dim,
        seconds=seconds,
    )


# --- convexity ------------------------------------------------------------------------------------
def chord_gaps(f: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """chord(t) − f(t) per path, [P, T] → [P, T]; chord(t) = f(t₀) + (t − t₀)/(t_end − t₀) · (f(t_end) − f(t₀)).

    Positive where f lies below the straight line between its end values (as for a convex f),
    zero at both ends.
    """
    f, ts = _check_curves(f, ts)
    w = (ts - ts[0]) / (ts[-1] - ts[0])  # [T]
    chord = f[:, :1] * (1.0 - w) + f[:, -1:] * w
    return chord - f


def second_differences(f: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Divided second differences 2 · f[t_{i−1}, t_i, t_{i+1}] ≈ f''(t_i): [P, T] → [P, T − 2].

    Exact for quadratics on any grid; (f_{i+1} − 2 f_i + f_{i−1}) / h² on a uniform grid.
    """
    f, ts = _check_curves(f, ts)
    h = np.diff(ts)  # [T − 1]
    slopes = np.diff(f, axis=1) / h  # [P, T − 1]
    return 2.0 * np.diff(slopes, axis=1) / (h[1:] + h[:-1])


def _check_curves(f: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f, ts = np.asarray(f, np.float64), np.asarray(ts, np.float64)
    if f.ndim != 2 or f.shape[1] < 3:
        raise ValueError(f"f must have shape [P, T] with T >= 3, got shape {f.shape}")
    if ts.shape != (f.shape[1],) or not np.all(np.diff(ts) > 0):
        raise ValueError(f"ts must be {f.shape[1]} strictly increasing times to match f, got {ts}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"f must be finite, got {int(np.sum(~np.isfinite(f)))} non-finite values")
    return f, ts


@dataclasses.dataclass(frozen=True)
class ConvexityStatistics:
    """Per-pair convexity measures of f and their summaries over pairs.

    A convex f lies below its chord (gaps > 0) and has f'' ≥ 0; a concave f the opposite.
    """

    midpoint_gap: np.ndarray  # [P] chord − f at t = ½ (linear interpolation between grid points)
    mean_gap: np.ndarray  # [P] mean over t of chord − f (trapezoid rule), nats
    mean_curvature: np.ndarray  # [P] mean of the divided second differences, nats per unit t²
    below_chord: Estimate  # fraction of pairs with midpoint_gap > 0 (Clopper–Pearson)
    midpoint: Estimate  # mean of midpoint_gap over pairs (Student t)
    gap: Estimate  # mean of mean_gap over pairs
    curvature: Estimate  # mean of mean_curvature over pairs
    positive_curvature: Estimate  # fraction of pairs with mean_curvature > 0

    @property
    def n_pairs(self) -> int:
        return int(self.midpoint_gap.size)

    def verdict(self) -> str:
        """"convex" or "concave" when the midpoint-below-chord fraction, the mean midpoint gap and
        the mean curvature all exclude the neutral value (½, 0, 0) on the same side at the
        intervals' level; "undecided" otherwise."""
        frac, mid, curv = self.below_chord, self.midpoint, self.curvature
        if frac.lo > 0.5 and mid.lo > 0 and curv.lo > 0:
            return "convex"
        if frac.hi < 0.5 and mid.hi < 0 and curv.hi < 0:
            return "concave"
        return "undecided"

    def to_markdown(self) -> str:
        """The summaries over pairs as a markdown table (nats; intervals at their level)."""
        pct = lambda s: (f"{100 * s.value:.0f} % ({s.successes} of {s.n})", f"{100 * s.lo:.0f} – {100 * s.hi:.0f} %",
                         f"p = {sign_test_p(s.successes, s.n):.2g}")  # fmt: skip
        num = lambda s: (f"{s.value:.4g} ± {s.se:.2g}", f"{s.lo:.4g} – {s.hi:.4g}", "–")
        level = f"{100 * self.midpoint.level:.0f} %"
        return markdown_table((f"measure (over {self.n_pairs} pairs)", "value", f"{level} interval", "sign test vs ½"), [
            ("pairs whose midpoint lies below the chord", *pct(self.below_chord)),
            ("chord − f at t = ½, mean ± SEM [nats]", *num(self.midpoint)),
            ("chord − f averaged over t, mean ± SEM [nats]", *num(self.gap)),
            ("mean second difference of f, mean ± SEM [nats / t²]", *num(self.curvature)),
            ("pairs with positive mean second difference", *pct(self.positive_curvature)),
        ])  # fmt: skip

    def as_dict(self) -> dict:
        """JSON-ready summaries (per-pair arrays included)."""
        record = {k: getattr(self, k).as_dict() for k in ("below_chord", "midpoint", "gap", "curvature", "positive_curvature")}
        for k in ("below_chord", "positive_curvature"):
            record[k]["sign_test_p"] = sign_test_p(record[k]["successes"], record[k]["n"])
        record.update(verdict=self.verdict(), n_pairs=self.n_pairs, midpoint_gap=self.midpoint_gap.tolist(),
                      mean_gap=self.mean_gap.tolist(), mean_curvature=self.mean_curvature.tolist())  # fmt: skip
        return record


def convexity_statistics(f: np.ndarray, ts: np.ndarray, level: float = 0.95) -> ConvexityStatistics:
    """Convexity of P curves f [P, T] sampled at ts [T] (P >= 2), with ``level`` intervals over pairs."""
    f, ts = _check_curves(f, ts)
    if f.shape[0] < 2:
        raise ValueError(f"intervals over pairs need at least 2 pairs, got {f.shape[0]}")
    gaps = chord_gaps(f, ts)  # [P, T]
    midpoint = np.array([np.interp(0.5 * (ts[0] + ts[-1]), ts, g) for g in gaps])  # [P]
    mean_gap = np.trapezoid(gaps, ts, axis=1) / (ts[-1] - ts[0])  # [P]
    curvature = second_differences(f, ts).mean(axis=1)  # [P]
    p = f.shape[0]
    return ConvexityStatistics(
        midpoint_gap=midpoint,
        mean_gap=mean_gap,
        mean_curvature=curvature,
        below_chord=proportion_estimate(int(np.sum(midpoint > 0)), p, level),
        midpoint=mean_estimate(midpoint, level),
        gap=mean_estimate(mean_gap, level),
        curvature=mean_estimate(curvature, level),
        positive_curvature=proportion_estimate(int(np.sum(curvature > 0)), p, level),
    )


def probe_standard_error(values_probes: np.ndarray) -> np.ndarray:
    """Hutchinson standard error of a per-pair statistic from its per-probe values [P, n] → [P].

    For a statistic that is (nearly) linear in f, e.g. a gap or a second difference, the value
    computed from each probe alone scatters with the probe noise; its std / √n is the standard
    error of the n-probe value.
    """
    v = np.asarray(values_probes, np.float64)
    if v.ndim != 2 or v.shape[1] < 2:
        raise ValueError(f"expected per-probe values [P, n] with n >= 2, got shape {v.shape}")
    return v.std(axis=1, ddof=1) / np.sqrt(v.shape[1])


def curvature_per_probe(result: PathLikelihoods) -> np.ndarray:
    """Mean second difference of each pair computed from each probe alone: [P, n]."""
    per_probe = np.moveaxis(result.log_p_probes(), 2, 1)  # [P, n, T]
    p, n, t = per_probe.shape
    return second_differences(per_probe.reshape(p * n, t), result.ts).mean(axis=1).reshape(p, n)


# --- figures ------------------------------------------------------------------------------------------
def plot_curves(ts: np.ndarray, f: np.ndarray, max_lines: int = 20):
    """Left: f(t) mean ± std over pairs (the paper's Fig. 2). Right: chord − f per pair and its mean."""
    import matplotlib.pyplot as plt

    f, ts = _check_curves(f, ts)
    gaps = chord_gaps(f, ts)
    fig, (ax_f, ax_g) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for ax, values, label in ((ax_f, f, "log p(x(t)) [nats]"), (ax_g, gaps, "chord − log p(x(t)) [nats]")):
        mean, std = values.mean(axis=0), values.std(axis=0)
        for row in values[:max_lines]:
            ax.plot(ts, row, color="0.75", lw=0.6)
        ax.fill_between(ts, mean - std, mean + std, color="C0", alpha=0.25, label="± 1 std over pairs")
        ax.plot(ts, mean, color="k", lw=2, label=f"mean over {f.shape[0]} pairs")
        ax.set_xlabel("t  (x(t) = t·x_A + (1 − t)·x_B)")
        ax.set_ylabel(label)
    ax_g.axhline(0.0, color="C3", lw=1, ls="--", label="f on its chord")
    ax_f.set_title("f(t) (grey: single pairs)")
    ax_g.set_title("gap to the chord (> 0: f below its chord, convex)")
    ax_g.legend(fontsize=8)
    return fig


def plot_convexity(stats: ConvexityStatistics):
    """Histograms over pairs of the midpoint gap and the mean curvature, with zero marked."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), constrained_layout=True)
    panels = (
        (stats.midpoint_gap, stats.midpoint, "chord − f at t = ½ [nats]"),
        (stats.mean_curvature, stats.curvature, "mean second difference of f [nats / t²]"),
    )
    for ax, (values, summary, label) in zip(axes, panels):
        ax.hist(values, bins=min(30, max(5, values.size // 3)), color="0.6")
        ax.axvline(0.0, color="C3", ls="--", lw=1, label="0 (straight line)")
        ax.axvspan(summary.lo, summary.hi, color="C0", alpha=0.3,
                   label=f"mean, {summary.level:.0%} interval")  # fmt: skip
        ax.set_xlabel(label)
        ax.set_ylabel("pairs")
        ax.legend(fontsize=8)
    return fig


def plot_strips(paths: np.ndarray, ts: np.ndarray, f: np.ndarray, n_show: int = 3, n_cols: int = 8):
    """Interpolation strips: ``n_show`` pairs, ``n_cols`` values of t each, titled with f(t) in nats."""
    import matplotlib.pyplot as plt

    paths = np.asarray(paths)
    n_show = min(n_show, paths.shape[0])
    cols = np.unique(np.round(np.linspace(0, len(ts) - 1, min(n_cols, len(ts)))).astype(int))
    fig, axes = plt.subplots(n_show, len(cols), figsize=(1.3 * len(cols), 1.55 * n_show), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    for r in range(n_show):
        for c, i in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(np.clip(paths[r, i], 0.0, 1.0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"t={ts[i]:.2f}\n{f[r, i]:.0f}", fontsize=7)
        axes[r, 0].set_ylabel(f"pair {r}", fontsize=8)
    fig.suptitle("interpolation strips (t = 0: x_B, t = 1: x_A; titles: log p in nats)", fontsize=9)
    return fig
