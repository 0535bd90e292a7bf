"""Convergence of the trace estimator (paper appendix A.2.1, Fig. 3), and two comparisons.

The log-likelihood of an image under class y is the mean over n Hutchinson repetitions (probes):

    log p̂_m(x | y) = (1/m) Σ_{j ∈ S} L_j(x, y),   |S| = m,

where L_j is the log-likelihood computed with probe v_j (paper eq. 3; n = 30 in the paper). All n
repetitions are computed ONCE and every smaller m is obtained by drawing random subsets S of the n
(:func:`subsample_means`), the same subset for every class of an image so that the common random
numbers across classes are kept. Fig. 3 of the paper then shows

* accuracy against m, error bars two standard deviations over random subsets
  (:func:`accuracy_curve`);
* the log-likelihood against m for the correct class and for the best wrong class, error bars the
  standard error of the mean of the m repetitions (:func:`likelihood_curves`).

Two comparisons the paper did not make, at equal compute:

* **One shared trajectory vs independent solves.** The probability-flow state x(t) does not depend
  on the probe, so one solve can carry all n divergence integrals (``shared_trajectory=True`` of
  :func:`sbgc.method.likelihood.log_likelihood`); the paper solved the n augmented ODEs separately. Both
  estimate the same quantity with the same probe variance; they differ in cost
  (:func:`network_passes`) and by the solver error of each trajectory.
* **Common random numbers (CRN) across classes or not.** :func:`sbgc.method.classify.class_log_likelihoods`
  gives every class of an image the same dequantization noise and the same probes;
  :func:`class_log_likelihoods_independent` gives each class its own (what separate per-class
  evaluations would do). The class margin then carries independent noise from both classes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import jax
import numpy as np

from sbgc.method.classify import ClassLikelihoods
from sbgc.method.likelihood import log_likelihood
from sbgc.method.sde import SDE
from sbgc.report import markdown_table

Array = jax.Array
ScoreFn = Callable[[Array, Array, Array], Array]


# --- checks -----------------------------------------------------------------------------------------
def _check_table(per_probe, labels) -> tuple[np.ndarray, np.ndarray]:
    """per_probe float [B, K, n] (K >= 2, n >= 2) and labels int [B] in [0, K)."""
    v = np.asarray(per_probe, np.float64)
    if v.ndim != 3 or v.shape[1] < 2 or v.shape[2] < 2:
        raise ValueError(f"per-probe log-likelihoods must have shape [B, K, n] with K, n >= 2, got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"per-probe log-likelihoods must be finite, got {int(np.sum(~np.isfinite(v)))} non-finite")
    y = np.asarray(labels)
    if y.shape != (v.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be int [{v.shape[0]}] to match per_probe, got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= v.shape[1]):
        raise ValueError(f"labels must lie in [0, {v.shape[1]}), got range [{y.min()}, {y.max()}]")
    return v, y


def _check_ms(ms, n: int) -> np.ndarray:
    ms = np.asarray(ms)
    if ms.ndim != 1 or ms.size == 0 or not np.issubdtype(ms.dtype, np.integer):
        raise ValueError(f"ms must be a non-empty 1-D int array of repetition counts, got {ms!r}")
    if ms.min() < 1 or ms.max() > n:
        raise ValueError(f"every m must be in [1, {n}] (the repetitions computed), got {ms.tolist()}")
    return ms.astype(np.int64)


# --- subsampling repetitions ------------------------------------------------------------------------
def subsample_indices(n: int, m: int, n_subsamples: int, rng: np.random.Generator) -> np.ndarray:
    """``n_subsamples`` random subsets of size m of range(n), each without replacement: int [S, m]."""
    if not 1 <= m <= n:
        raise ValueError(f"subset size m must be in [1, {n}], got {m}")
    if n_subsamples < 1:
        raise ValueError(f"n_subsamples must be >= 1, got {n_subsamples}")
    return np.argsort(rng.random((n_subsamples, n)), axis=1)[:, :m]


def subsample_means(per_probe, m: int, n_subsamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means over random m-subsets of the last axis: [..., n] → [S, ...].

    Subset s is the same for every leading entry (every image and class), so values that share
    probes across classes keep sharing them.
    """
    v = np.asarray(per_probe, np.float64)
    idx = subsample_indices(v.shape[-1], m, n_subsamples, rng)  # [S, m]
    return np.stack([v[..., i].mean(axis=-1) for i in idx])


def best_wrong_class(log_p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """argmax over the classes other than the label: [..., B, K], [B] → [..., B]."""
    masked = np.array(log_p, np.float64, copy=True)
    b = labels.shape[0]
    masked[..., np.arange(b), labels] = -np.inf
    return masked.argmax(axis=-1)


@dataclasses.dataclass(frozen=True)
class RepetitionCurve:
    """A statistic at each number of repetitions m, over random subsets of the repetitions."""

    ms: np.ndarray  # [M]
    values: np.ndarray  # [M, S] one value per subset
    mean: np.ndarray  # [M] over subsets
    std: np.ndarray  # [M] over subsets (0 at m = n: every subset is all repetitions)


def accuracy_curve(per_probe, labels, ms, n_subsamples: int, rng: np.random.Generator) -> RepetitionCurve:
    """Accuracy of argmax_y log p̂_m(x | y) against m. per_probe [B, K, n], labels [B]."""
    v, y = _check_table(per_probe, labels)
    ms = _check_ms(ms, v.shape[2])
    acc = np.stack([(subsample_means(v, m, n_subsamples, rng).argmax(axis=-1) == y).mean(axis=-1) for m in ms])
    return RepetitionCurve(ms, acc, acc.mean(axis=1), acc.std(axis=1))


@dataclasses.dataclass(frozen=True)
class LikelihoodCurves:
    """Fig. 3 (right): log p̂_m of the correct and the best wrong class against m, averaged over images.

    ``*_mean`` average over images and random subsets; ``*_sem`` is the standard error of one
    image's m-repetition mean, s/√m with s the std of that image's n per-probe values, taken as the
    root mean square over images. The best wrong class is chosen in each subset (the class the
    classifier would compare with at m repetitions), so for small m it is biased upwards: a maximum
    over noisy estimates. ``margin`` is correct − best wrong, its SEM from the per-probe
    differences (which cancel the probe noise shared by the two classes).
    """

    ms: np.ndarray  # [M]
    correct_mean: np.ndarray  # [M] nats
    correct_sem: np.ndarray  # [M]
    wrong_mean: np.ndarray  # [M]
    wrong_sem: np.ndarray  # [M]
    margin_mean: np.ndarray  # [M]
    margin_sem: np.ndarray  # [M]
    first_m_correct: np.ndarray  # [M] the running mean over the first m repetitions (one realisation)
    first_m_wrong: np.ndarray  # [M]


def sufficient_repetitions(acc: RepetitionCurve, n_images: int, tolerance: float | None = None) -> tuple[int, float]:
    """(m, tolerance): the smallest m whose mean accuracy over subsets is within ``tolerance`` of
    the accuracy with all n repetitions; by default the tolerance is one binomial standard error of
    that accuracy over ``n_images`` images, the resolution of the sample (no smaller m is
    distinguishable from n with it)."""
    if n_images < 1:
        raise ValueError(f"n_images must be positive, got {n_images}")
    full = float(acc.mean[-1])
    if tolerance is None:
        tolerance = math.sqrt(max(full * (1 - full), 1.0 / n_images) / n_images)
    close = np.flatnonzero(np.abs(acc.mean - full) <= tolerance)
    return int(acc.ms[close[0]]), float(tolerance)


def probe_std(per_probe, labels) -> dict[str, np.ndarray]:
    """Per-image std (ddof 1) over the n repetitions: correct class, best wrong class (at all n
    repetitions) and their per-probe difference. per_probe [B, K, n] → three arrays [B]."""
    v, y = _check_table(per_probe, labels)
    b = np.arange(v.shape[0])
    wrong = best_wrong_class(v.mean(axis=-1), y)
    correct_j, wrong_j = v[b, y], v[b, wrong]  # [B, n]
    return {
        "correct": correct_j.std(axis=-1, ddof=1),
        "wrong": wrong_j.std(axis=-1, ddof=1),
        "margin": (correct_j - wrong_j).std(axis=-1, ddof=1),
    }


def likelihood_curves(per_probe, labels, ms, n_subsamples: int, rng: np.random.Generator) -> LikelihoodCurves:
    """log p̂_m for the correct and the best wrong class against m (see :class:`LikelihoodCurves`)."""
    v, y = _check_table(per_probe, labels)
    ms = _check_ms(ms, v.shape[2])
    b = np.arange(v.shape[0])
    correct, wrong = [], []
    for m in ms:
        means = subsample_means(v, m, n_subsamples, rng)  # [S, B, K]
        correct.append(means[:, b, y].mean())
        wrong.append(np.take_along_axis(means, best_wrong_class(means, y)[..., None], -1).mean())
    rms = {k: np.sqrt(np.mean(s**2)) for k, s in probe_std(v, y).items()}
    running = np.moveaxis(np.cumsum(v, axis=-1)[..., ms - 1] / ms, -1, 0)  # [M, B, K]
    run_wrong = np.take_along_axis(running, best_wrong_class(running, y)[..., None], -1)[..., 0]  # [M, B]
    root_m = np.sqrt(ms)
    return LikelihoodCurves(
        ms=ms,
        correct_mean=np.array(correct),
        correct_sem=rms["correct"] / root_m,
        wrong_mean=np.array(wrong),
        wrong_sem=rms["wrong"] / root_m,
        margin_mean=np.array(correct) - np.array(wrong),
        margin_sem=rms["margin"] / root_m,
        first_m_correct=running[:, b, y].mean(axis=1),
        first_m_wrong=run_wrong.mean(axis=1),
    )


# --- without common random numbers ------------------------------------------------------------------
def class_log_likelihoods_independent(
    score_fn: ScoreFn,
    sde: SDE,
    x,
    key: Array,
    *,
    n_classes: int = 10,
    **likelihood_kwargs,
) -> ClassLikelihoods:
    """log p(x | y) for every class with INDEPENDENT random numbers per class: [B, K] (per probe [B, K, n]).

    Class k is solved by :func:`sbgc.method.likelihood.log_likelihood` with its own key ``fold_in(key, k)``:
    its own dequantization noise (for uint8 input) and its own probes, as separate per-class
    evaluations would have. Compare with :func:`sbgc.method.classify.class_log_likelihoods`, which shares
    both across classes. ``likelihood_kwargs`` as for ``log_likelihood``.
    """
    if not (isinstance(n_classes, (int, np.integer)) and n_classes >= 1):
        raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
    b = np.shape(x)[0] if np.ndim(x) else 0
    per_class = [
        log_likelihood(score_fn, sde, x, np.full((b,), k, np.int32), jax.random.fold_in(key, k), **likelihood_kwargs)
        for k in range(n_classes)
    ]
    stack = lambda name: np.stack([getattr(r, name) for r in per_class], axis=1)
    fields = ("log_p", "log_p_probes", "bpd", "bpd_probes", "nfe", "prior_logp", "delta_logp")
    return ClassLikelihoods(**{f: stack(f) for f in fields}, log_det=per_class[0].log_det, dim=per_class[0].dim)


def dequantization_std(crn_probes, independent_probes) -> float:
    """Std of one class log-likelihood over dequantization draws u, from a CRN run and an
    independent run of the same images [B, K, n] (nats).

    Image i, class k: the CRN run used noise u₀ (shared by the classes), the independent run u_k;
    their n-probe means differ by Δ = g(u_k) − g(u₀) + probe noise, so
    E[Δ²] = 2 Var_u + (s²_crn + s²_ind)/n, solved for Var_u (pooled over images and classes;
    clipped at 0, which means "not resolved above the probe noise"). Var_u includes the change of
    the solver error between the two trajectories. Meaningful only where the two runs used
    different noise: uint8 input.
    """
    a, b = np.asarray(crn_probes, np.float64), np.asarray(independent_probes, np.float64)
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] < 2:
        raise ValueError(f"need two per-probe tables of the same shape [B, K, n >= 2], got {a.shape} and {b.shape}")
    n = a.shape[2]
    delta = b.mean(axis=-1) - a.mean(axis=-1)
    probe_var = (a.var(axis=-1, ddof=1) + b.var(axis=-1, ddof=1)) / n
    return float(np.sqrt(max(0.0, 0.5 * np.mean(delta**2 - probe_var))))


# --- shared trajectory vs independent solves ------------------------------------------------------
def network_passes(nfe, n_probes: int, shared_trajectory: bool) -> np.ndarray:
    """Cost of a row in network passes (one primal or one tangent evaluation of the score network).

    Each vector-field evaluation runs the network once and one Jacobian-vector product per probe it
    carries: ``nfe`` (summed over the row's solves) × (1 + n) for a shared trajectory, × 2 for
    independent solves (each solve carries one probe). A JVP costs about one to two primal passes;
    measured wall times are reported beside this count.
    """
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    nfe = np.asarray(nfe, np.float64)
    return nfe * ((1 + n_probes) if shared_trajectory else 2)


@dataclasses.dataclass(frozen=True)
class TimedRun:
    """A likelihood table [B, K, n] with its wall time (compilation included) and how it was solved."""

    result: ClassLikelihoods
    seconds: float
    shared_trajectory: bool
    label: str

    @property
    def n_probes(self) -> int:
        return int(self.result.log_p_probes.shape[-1])

    def head(self, b: int, label: str | None = None) -> TimedRun:
        """The first b images of the run (same draws: an image's draws do not depend on the batch),
        with the wall time prorated."""
        n_images = self.result.log_p.shape[0]
        if not 1 <= b <= n_images:
            raise ValueError(f"b must be in [1, {n_images}], got {b}")
        sliced = ClassLikelihoods(*(f[:b] if isinstance(f, np.ndarray) else f for f in self.result))
        return TimedRun(sliced, self.seconds * b / n_images, self.shared_trajectory, label or self.label)

    def passes_per_image(self, m) -> np.ndarray:
        """Network passes per image (all classes) that m repetitions cost this way, from the measured
        evaluations: nfe · (1 + m) for one shared solve per class, m · 2 · nfe_per_solve otherwise."""
        nfe_image = float(self.result.nfe.sum(axis=1).mean())  # summed over classes (and solves)
        m = np.asarray(m, np.float64)
        if self.shared_trajectory:
            return nfe_image * (1.0 + m)  # = network_passes(nfe, m, shared_trajectory=True)
        return 2.0 * m * nfe_image / self.n_probes  # m solves of nfe / n evaluations, 2 passes each


def timed(label: str, fn: Callable[[], ClassLikelihoods], *, shared_trajectory: bool) -> TimedRun:
    """Run ``fn`` (a call returning :class:`ClassLikelihoods`) and record its wall time."""
    start = time.perf_counter()
    result = fn()
    return TimedRun(result, time.perf_counter() - start, shared_trajectory, label)


@dataclasses.dataclass(frozen=True)
class VariantCurves:
    """One way of computing the class log-likelihoods, as a function of the repetitions m it spends."""

    label: str
    ms: np.ndarray  # [M] repetitions 1 … n
    passes: np.ndarray  # [M] network passes per image (all classes) at m repetitions
    accuracy: RepetitionCurve
    margin_se: np.ndarray  # [M] standard error of correct − best wrong at m repetitions [nats]
    seconds: float  # wall time of the whole run (compilation included)


def variant_curves(
    run: TimedRun, labels, n_subsamples: int, rng: np.random.Generator, extra_margin_var: float = 0.0
) -> VariantCurves:
    """Accuracy and class-margin standard error against m and compute for one :class:`TimedRun`.

    The margin SE is RMS_images(s_margin)/√m from the per-probe differences (:func:`probe_std`),
    plus ``extra_margin_var`` (nats², a variance not visible in the probes, e.g. independent
    dequantization noise per class) under the square root.
    """
    per_probe = run.result.log_p_probes
    ms = np.arange(1, per_probe.shape[-1] + 1)
    margin_var = np.mean(probe_std(per_probe, labels)["margin"] ** 2)
    return VariantCurves(
        label=run.label,
        ms=ms,
        passes=run.passes_per_image(ms),
        accuracy=accuracy_curve(per_probe, labels, ms, n_subsamples, rng),
        margin_se=np.sqrt(margin_var / ms + extra_margin_var),
        seconds=run.seconds,
    )


def equal_compute_table(variants: list[VariantCurves]) -> str:
    """Markdown: each variant at the largest m whose cost fits the smallest full budget of them all."""
    budget = min(v.passes[-1] for v in variants)
    header = (f"variant (budget {budget:,.0f} network passes per image)", "m", "passes per image",
              "accuracy (mean ± 2 std over subsets)", "SE of the class margin [nats]", "wall time of the run [s]")
    rows = []
    for v in variants:
        i = max(int(np.searchsorted(v.passes, budget * (1 + 1e-9), side="right")) - 1, 0)
        rows.append((v.label, v.ms[i], f"{v.passes[i]:,.0f}", f"{100 * v.accuracy.mean[i]:.1f} % ± "
                     f"{200 * v.accuracy.std[i]:.1f}", f"{v.margin_se[i]:.3g}", f"{v.seconds:.0f}"))
    return markdown_table(header, rows)


# --- figures ----------------------------------------------------------------------------------------
def plot_fig3(acc: RepetitionCurve, ll: LikelihoodCurves, n_images: int):
    """The paper's Fig. 3: accuracy (± 2 std over subsets) and log-likelihood (± SEM) against m."""
    import matplotlib.pyplot as plt

    fig, (ax_a, ax_l) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    ax_a.errorbar(acc.ms, 100 * acc.mean, yerr=200 * acc.std, fmt="o-", color="k", capsize=3,
                  label="mean ± 2 std over random subsets")  # fmt: skip
    ax_a.set(xlabel="repetitions m of the trace estimator", ylabel=f"accuracy [%] (n = {n_images} images)",
             ylim=(-3, 103))  # fmt: skip
    ax_a.xaxis.get_major_locator().set_params(integer=True)
    ax_l.xaxis.get_major_locator().set_params(integer=True)
    ax_a.legend(fontsize=8)
    for mean, sem, first, colour, name in (
        (ll.correct_mean, ll.correct_sem, ll.first_m_correct, "k", "correct class"),
        (ll.wrong_mean, ll.wrong_sem, ll.first_m_wrong, "C1", "best wrong class"),
    ):
        ax_l.errorbar(ll.ms, mean, yerr=sem, fmt="o-", color=colour, capsize=3, label=f"{name} (± SEM)")
        ax_l.plot(ll.ms, first, ":", color=colour, label=f"{name}, first m repetitions")
    ax_l.set(xlabel="repetitions m of the trace estimator", ylabel="mean log p̂_m(x | y) [nats]")
    ax_l.legend(fontsize=8)
    return fig


def plot_comparison(variants: list[VariantCurves], x: str = "passes"):
    """Accuracy (± 2 std over subsets) and the class margin's SE per variant, against compute
    (``x="passes"``, network passes per image) or against the repetitions m (``x="m"``)."""
    import matplotlib.pyplot as plt

    if x not in ("passes", "m"):
        raise ValueError(f"x must be 'passes' or 'm', got {x!r}")
    fig, (ax_a, ax_s) = plt.subplots(1, 2, figsize=(10, 3.4), constrained_layout=True)
    for i, v in enumerate(variants):
        xs = v.passes if x == "passes" else v.ms
        ax_a.errorbar(xs, 100 * v.accuracy.mean, yerr=200 * v.accuracy.std, fmt="o-", color=f"C{i}", capsize=3,
                      label=v.label)  # fmt: skip
        ax_s.plot(xs, v.margin_se, "o-", color=f"C{i}", label=v.label)
    xlabel = "network passes per image (all classes)" if x == "passes" else "repetitions m of the trace estimator"
    ax_a.set(xlabel=xlabel, ylabel="accuracy [%] (± 2 std over subsets)", ylim=(-3, 103))
    ax_s.set(xlabel=xlabel, ylabel="SE of correct − best wrong [nats]", yscale="log")
    for ax in (ax_a, ax_s):
        ax.legend(fontsize=8)
        if x == "m":
            ax.xaxis.get_major_locator().set_params(integer=True)
    return fig
