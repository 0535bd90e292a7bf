"""Every estimator of the class score against its budget, and the budget at which it has converged.

The classifier argmax_y S(x, y) is the model's only where S is estimated well enough that more effort
would not change the decisions. Three estimators of S are compared here on one fixed sample, each
against its budget (:mod:`sbgc.method.scorers`):

* the probability-flow ODE with m Hutchinson probes (the paper's estimator: m = 30 for Table 1);
* the variational bound (likelihood weighting) with K stratified times;
* the uniform-in-t denoising score with K stratified times (not a bound; Li et al.'s weighting);

and class pruning over the two bounds. Every budget is read off ONE expensive computation per
estimator, as chapter 06 does for the probes (:mod:`sbgc.experiments.convergence`):

* **probes**: all n probes of a shared trajectory are computed once (:func:`ode_probe_table`); m of
  them are a random m-subset, the same for every class of an image.
* **times**: K_max stratified times u_k = (k + U_k)/K_max are computed once (:func:`bound_time_table`;
  the likelihood weighting maps u through its inverse cumulative, the uniform one linearly). For K
  dividing K_max, r = K_max/K, choosing one fine stratum uniformly at random inside each coarse
  stratum j (fine strata jr … jr + r − 1) gives a point uniform in that coarse stratum, independently
  across coarse strata: exactly a K-time stratified sample (:func:`stratum_subsets`), with its own
  noise z per time. Redrawing the choice gives the spread over K-time estimates.
* **pruning** (:func:`pruned_curve`): a K₁-subset scores every class, the ``keep`` best of each image are
  decided by their K₁ + K₂ times combined, the K₂ an independently drawn subset, as
  :class:`sbgc.method.scorers.Pruned` over two bounds that differ only in K combines its draws. The two
  subsets can share a time of the K_max (they are drawn independently from the same table), where the
  library would draw fresh times. Cost C·K₁ + keep·K₂ network passes per image.

For each budget: accuracy (mean and 2 std over random subsets; the binomial interval over images is
separate), agreement with the reference decisions (the ODE with all n probes, on the images where it
was computed), and network passes per image. :func:`convergence_table` names each estimator's
asymptote (its largest budget) and its cheapest budget within ``tolerance`` of the reference accuracy.

Results are computed in blocks of images through the results cache (:func:`sbgc.cache.cached_blocks`),
so a run resumes where it stopped and a longer nested sample reuses the blocks of a shorter one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import numpy as np

from sbgc.cache import CacheKey, CachedResult, ResultCache, cached_blocks
from sbgc.data.files import ImageSet
from sbgc.experiments.convergence import TimedRun, best_wrong_class, subsample_indices
from sbgc.method.bound import BoundSettings, log_bound_table
from sbgc.method.classify import ClassLikelihoods
from sbgc.method.likelihood import log_likelihood_table
from sbgc.method.scorers import Bound, Ode, all_classes, is_pixels
from sbgc.report import markdown_table
from sbgc.stats import binomial_interval

CODE_VERSION = 1  # of the tables below: bump when a change alters what they return


# --- the tables, computed once per estimator --------------------------------------------------------
class TimeTable(NamedTuple):
    """The bound's per-time values for K_max stratified times (stratum order), every class of B images.

    The estimate from the times ``S`` is ``offset + values[..., S].mean(-1)``: for the likelihood weighting
    the bound on log p(x | y) in nats of the [0, 1] data (offset = prior + decoder + log-det), for the
    uniform weighting the class score −½ (T − ε) E‖σ s + z‖² (offset 0).
    """

    values: np.ndarray  # [B, C, K_max] float32: per-time values −½ c h_k
    offset: np.ndarray  # [B, C] float64
    passes: np.ndarray  # [B] network passes per image, all classes, counted
    seconds: np.ndarray  # [B] wall time per image (its block's, shared equally)
    dim: int
    is_bound: bool
    entries: tuple = ()  # the cached blocks (CachedResult) it was read from

    def estimate(self, times: np.ndarray) -> np.ndarray:
        """Class scores from the times ``times`` (int [K], indices into K_max): [B, C]."""
        return self.offset + self.values[..., times].astype(np.float64).mean(axis=-1)


class ProbeTable(NamedTuple):
    """The ODE's per-probe log-likelihoods (one shared trajectory per image and class)."""

    result: ClassLikelihoods  # leading axes [B, C]; log_p_probes [B, C, n] nats of the [0, 1] data
    seconds: np.ndarray  # [B] wall time per image (its block's, shared equally)
    entries: tuple = ()  # the cached blocks (CachedResult) it was read from

    @property
    def log_p_probes(self) -> np.ndarray:
        return self.result.log_p_probes

    @property
    def nfe(self) -> np.ndarray:
        return self.result.nfe

    def head(self, b: int, label: str) -> TimedRun:
        """The first b images as a :class:`sbgc.experiments.convergence.TimedRun` (a shared trajectory)."""
        rows = ClassLikelihoods(*(f[:b] if isinstance(f, np.ndarray) else f for f in self.result))
        return TimedRun(rows, float(self.seconds[:b].sum()), True, label)


_PER_ROW = ("log_p", "log_p_probes", "bpd", "bpd_probes", "nfe", "prior_logp", "delta_logp")


def _report(b: int, entry: CachedResult) -> None:
    if entry.computed_now:
        print(f"[converged] block {b}: {entry.path.name} in {entry.record['seconds']:.0f} s", flush=True)


def _block_seconds(entries: list[CachedResult], sizes: list[int]) -> np.ndarray:
    return np.concatenate([np.full(n, e.record["seconds"] / n) for e, n in zip(entries, sizes)])


def bound_time_table(model, split: ImageSet, indices: np.ndarray, bound: Bound, cache: ResultCache, *, seed: int,
                     data_source: str, block: int = 25, n_classes: int = 10, progress: bool = False) -> TimeTable:
    """:class:`TimeTable` of ``split``'s images ``indices`` (every class) for the scorer ``bound``, whose
    ``settings.n_times`` stratified times are K_max; blocks of ``block`` images, block b with key
    ``fold_in(PRNGKey(seed), b)``. ``model``: ``score_fn``, ``sde`` and ``sha256``."""
    if bound.settings.sampling != "stratified":
        raise ValueError("the budgets are read off stratified times (stratum_subsets): sampling must be 'stratified'")
    base = jax.random.PRNGKey(seed)

    def compute(b: int, idx: np.ndarray) -> dict[str, np.ndarray]:
        x = split.images[idx]
        res = log_bound_table(model.score_fn, model.sde, x, all_classes(len(idx), n_classes), jax.random.fold_in(base, b),
                              settings=bound.settings, dequantize=is_pixels(x), data_scaling=bound.data_scaling,
                              chunk_size=bound.chunk_size, progress=progress)  # fmt: skip
        offset = res.log_p - res.diffusion_term  # prior + decoder + log-det (0 for the uniform weighting)
        return {"values": res.diffusion_draws.astype(np.float32), "offset": offset,
                "passes": res.nfe.sum(axis=1), "dim": np.full(len(idx), res.dim)}  # fmt: skip

    key = CacheKey("converged_bound_times", CODE_VERSION, {"scorer": bound, "seed": seed, "classes": n_classes},
                   model.sha256, data_source, indices)
    arrays, entries = cached_blocks(cache, key, block, compute, on_block=_report)
    sizes = [e.arrays["passes"].shape[0] for e in entries]
    return TimeTable(arrays["values"], arrays["offset"], arrays["passes"], _block_seconds(entries, sizes),
                     int(arrays["dim"][0]), bound.settings.is_bound, tuple(entries))  # fmt: skip


def ode_probe_table(model, split: ImageSet, indices: np.ndarray, ode: Ode, cache: ResultCache, *, seed: int,
                    data_source: str, block: int = 2, n_classes: int = 10, progress: bool = False) -> ProbeTable:
    """:class:`ProbeTable` of ``split``'s images ``indices`` (every class), ``ode.n_probes`` probes on one
    shared trajectory; the probes and dequantization of the image at position i of the sample are drawn
    from ``PRNGKey(seed)`` and i (``first_image``), whatever the blocks."""
    if not ode.solver.shared_trajectory:
        raise ValueError("the probe counts are read off one shared trajectory: ode.solver.shared_trajectory must be True")
    key0 = jax.random.PRNGKey(seed)

    def compute(b: int, idx: np.ndarray) -> dict[str, np.ndarray]:
        x = split.images[idx]
        res = log_likelihood_table(model.score_fn, model.sde, x, all_classes(len(idx), n_classes), key0,
                                   solver=ode.solver, n_probes=ode.n_probes, probe=ode.probe, dequantize=is_pixels(x),
                                   data_scaling=ode.data_scaling, chunk_size=ode.chunk_size, progress=progress,
                                   first_image=b * block)  # fmt: skip
        return {**{f: np.asarray(getattr(res, f)) for f in _PER_ROW}, "log_det": np.full(len(idx), res.log_det),
                "dim": np.full(len(idx), res.dim)}

    key = CacheKey("converged_ode_probes", CODE_VERSION, {"scorer": ode, "seed": seed, "classes": n_classes},
                   model.sha256, data_source, indices)
    arrays, entries = cached_blocks(cache, key, block, compute, on_block=_report)
    sizes = [e.arrays["nfe"].shape[0] for e in entries]
    result = ClassLikelihoods(**{f: arrays[f] for f in _PER_ROW}, log_det=float(arrays["log_det"][0]),
                              dim=int(arrays["dim"][0]))  # fmt: skip
    return ProbeTable(result, _block_seconds(entries, sizes), tuple(entries))


# --- budgets read off the tables ----------------------------------------------------------------------
def stratum_subsets(k_max: int, k: int, n_subsamples: int, rng: np.random.Generator) -> np.ndarray:
    """int [S, k]: one fine stratum chosen uniformly inside each of k coarse strata of k_max fine ones.

    The chosen times form a k-time stratified sample (module docstring); k must divide k_max."""
    if not (1 <= k <= k_max and k_max % k == 0):
        raise ValueError(f"k must divide k_max = {k_max} (a coarse stratum is a whole number of fine ones), got {k}")
    if n_subsamples < 1:
        raise ValueError(f"n_subsamples must be >= 1, got {n_subsamples}")
    r = k_max // k
    return np.arange(k) * r + rng.integers(0, r, size=(n_subsamples, k))


@dataclasses.dataclass(frozen=True)
class BudgetCurve:
    """An estimator's decisions against its budget (times K or probes m), over random subsets.

    ``accuracy`` on all B images; ``agreement`` with the reference decisions on the first ``n_reference``
    images (NaN without a reference); ``passes`` network passes per image (all classes)."""

    label: str
    budgets: np.ndarray  # [M]
    accuracy_mean: np.ndarray  # [M]
    accuracy_std: np.ndarray  # [M] over subsets
    agreement_mean: np.ndarray  # [M]
    agreement_std: np.ndarray  # [M]
    paired_accuracy: np.ndarray  # [M] mean accuracy on the reference images (paired with the reference's)
    passes: np.ndarray  # [M] per image
    seconds: np.ndarray  # [M] per image: measured at the largest budget, scaled by passes below it
    n_images: int
    n_reference: int

    def cheapest_within(self, target: float, tolerance: float, paired: bool = False) -> int | None:
        """Index of the smallest budget whose mean accuracy (``paired``: on the reference images) is at least
        ``target − tolerance``, or None."""
        ok = np.flatnonzero((self.paired_accuracy if paired else self.accuracy_mean) >= target - tolerance)
        return int(ok[0]) if ok.size else None


def _curve(label, budgets, decide, labels, reference, passes, seconds_max) -> BudgetCurve:
    """``decide(i) -> int [S, B]``: the decisions at budget i for each subset."""
    acc, agree, paired = [], [], []
    n_ref = 0 if reference is None else len(reference)
    for i in range(len(budgets)):
        pred = decide(i)
        right = pred == labels
        acc.append(right.mean(axis=1))
        agree.append((pred[:, :n_ref] == reference).mean(axis=1) if n_ref else np.full(pred.shape[0], np.nan))
        paired.append(right[:, :n_ref].mean() if n_ref else np.nan)
    acc, agree, passes = np.array(acc), np.array(agree), np.asarray(passes, np.float64)
    return BudgetCurve(label, np.asarray(budgets), acc.mean(1), acc.std(1), agree.mean(1), agree.std(1),
                       np.array(paired), passes, seconds_max * passes / passes[-1], len(labels), n_ref)  # fmt: skip


def _check_reference(reference, n_images: int):
    if reference is None:
        return None
    reference = np.asarray(reference)
    if reference.ndim != 1 or reference.size > n_images:
        raise ValueError(f"reference decisions must be int [N <= {n_images}] (the first N images), got {reference.shape}")
    return reference


def bound_curve(label: str, table: TimeTable, labels, ks, n_subsamples: int, rng: np.random.Generator,
                reference=None) -> BudgetCurve:  # fmt: skip
    """Decisions of the K-time estimate for each K in ``ks`` (each dividing K_max)."""
    labels = np.asarray(labels)
    reference = _check_reference(reference, len(labels))
    k_max = table.values.shape[-1]
    subsets = [stratum_subsets(k_max, int(k), n_subsamples, rng) for k in ks]
    decide = lambda i: np.stack([table.estimate(s).argmax(axis=1) for s in subsets[i]])
    c = table.values.shape[1]
    passes = [c * (int(k) + table.is_bound) for k in ks]  # + the decoder's pass per class for the bound
    return _curve(label, ks, decide, labels, reference, passes, float(table.seconds.mean()))


def probe_curve(label: str, table: ProbeTable, labels, ms, n_subsamples: int, rng: np.random.Generator,
                reference=None) -> BudgetCurve:  # fmt: skip
    """Decisions of the m-probe estimate for each m in ``ms`` (of the table's n, one shared trajectory).

    Passes: nfe (of the n-probe solve) × (1 + m) per class: one primal evaluation and m Jacobian-vector
    products per step (:func:`sbgc.experiments.convergence.network_passes`)."""
    labels = np.asarray(labels)
    reference = _check_reference(reference, len(labels))
    n = table.log_p_probes.shape[-1]
    subsets = [subsample_indices(n, int(m), n_subsamples, rng) for m in ms]  # chapter 06's Fig. 3 subsets
    decide = lambda i: np.stack([table.log_p_probes[..., s].mean(axis=-1).argmax(axis=1) for s in subsets[i]])
    nfe = float(table.nfe.sum(axis=1).mean())
    passes = [nfe * (1 + int(m)) for m in ms]
    return _curve(label, ms, decide, labels, reference, passes, float(table.seconds.mean()))


def pruned_curve(label: str, table: TimeTable, labels, k1: int, keep: int, ks2, n_subsamples: int,
                 rng: np.random.Generator, reference=None) -> BudgetCurve:  # fmt: skip
    """Pruning read off one table: K₁ times score every class, the ``keep`` best of each image are decided
    by their K₁ + K₂ times combined (each K₂ in ``ks2``; the two subsets drawn independently), as the library's
    :class:`sbgc.method.scorers.Pruned` over two bounds combines them. Budget axis: K₂."""
    labels = np.asarray(labels)
    reference = _check_reference(reference, len(labels))
    k_max, c = table.values.shape[-1], table.values.shape[1]
    if not 1 <= keep < c:
        raise ValueError(f"keep must be in [1, {c - 1}], got {keep}")
    first_times = stratum_subsets(k_max, k1, n_subsamples, rng)  # [S, K₁]
    kept = [np.argsort(-table.estimate(s), axis=1)[:, :keep] for s in first_times]  # S × [B, keep]
    second = [stratum_subsets(k_max, int(k2), n_subsamples, rng) for k2 in ks2]

    def decide(i):
        out = []
        for s in range(n_subsamples):
            both = np.concatenate([first_times[s], second[i][s]])  # the K₁ + K₂ times of the kept classes
            scores = np.take_along_axis(table.estimate(both), kept[s], axis=1)
            out.append(np.take_along_axis(kept[s], scores.argmax(axis=1)[:, None], axis=1)[:, 0])
        return np.stack(out)

    passes = [c * (k1 + table.is_bound) + keep * int(k2) for k2 in ks2]
    full = c * (k_max + table.is_bound)
    return _curve(label, ks2, decide, labels, reference, passes, float(table.seconds.mean()) * passes[-1] / full)


# --- the table ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Verdict:
    """One estimator's convergence: its asymptote, its cheapest budget within ``tolerance`` of that asymptote
    (converged), and its cheapest budget within ``tolerance`` of the reference accuracy on the same images."""

    label: str
    asymptote: float  # accuracy at the largest budget (mean over subsets), all images
    asymptote_ci: tuple[float, float]  # binomial 95 % interval over images, at the largest budget
    converged_budget: int  # the cheapest budget within tolerance of the asymptote
    converged_passes: float
    converged_seconds: float
    budget: int | None  # the cheapest budget within tolerance of the reference accuracy (paired), or None
    accuracy: float  # on the reference images at that budget (NaN if none)
    agreement: float  # with the reference decisions at that budget (NaN if none)
    passes: float  # per image at that budget (NaN if none)
    seconds: float

    def record(self) -> dict:
        """The fields as a results record: a number that is not available (NaN) is None."""
        nan_none = lambda v: None if isinstance(v, float) and math.isnan(v) else v
        return {k: nan_none(v) for k, v in dataclasses.asdict(self).items()}


def verdicts(curves: list[BudgetCurve], target: float, tolerance: float) -> list[Verdict]:
    """For each curve: asymptote, the cheapest budget within ``tolerance`` of it, and the cheapest budget whose
    accuracy on the reference images is within ``tolerance`` of ``target`` (the reference accuracy there)."""
    out = []
    for c in curves:
        hits = int(round(c.accuracy_mean[-1] * c.n_images))
        j = c.cheapest_within(float(c.accuracy_mean[-1]), tolerance)
        i = c.cheapest_within(target, tolerance, paired=True)
        pick = (lambda a: float(a[i])) if i is not None else (lambda a: math.nan)
        out.append(Verdict(c.label, float(c.accuracy_mean[-1]), binomial_interval(hits, c.n_images), int(c.budgets[j]),
                           float(c.passes[j]), float(c.seconds[j]), None if i is None else int(c.budgets[i]),
                           pick(c.paired_accuracy), pick(c.agreement_mean), pick(c.passes), pick(c.seconds)))  # fmt: skip
    return out


def convergence_table(curves: list[BudgetCurve], target: float, tolerance: float, budget_name: dict[str, str]) -> str:
    """Markdown: per estimator, its asymptote, where it converges to it, and the cheapest budget within
    ``tolerance`` of the reference accuracy ``target`` on the reference images."""
    rows = []
    tol = f"{100 * tolerance:.1f}"
    for v in verdicts(curves, target, tolerance):
        lo, hi = v.asymptote_ci
        name = budget_name.get(v.label, "budget")
        own = (f"{name} {v.converged_budget}", f"{v.converged_passes:,.0f}", f"{v.converged_seconds:.2f}")
        if v.budget is None:
            ref = ("not reached", "", "", "")
        else:
            ref = (f"{name} {v.budget}", f"{100 * v.accuracy:.1f} %", f"{100 * v.agreement:.1f} %", f"{v.passes:,.0f}")
        rows.append((v.label, f"{100 * v.asymptote:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]", *own, *ref))
    return markdown_table(("estimator", "accuracy at its largest budget (95 % interval)",
                           f"converged: within {tol} points of that", "passes per image", "seconds per image",
                           f"within {tol} points of the reference's {100 * target:.1f} % (same images)",
                           "accuracy there (same images)", "agreement with the reference", "passes per image"),
                          rows)  # fmt: skip


def curve_rows(c: BudgetCurve, budget_name: str) -> list[tuple]:
    """Rows of one curve for a markdown table: budget, accuracy ± 2 std, agreement, passes, seconds."""
    return [(f"{budget_name} {int(b)}", f"{100 * a:.1f} % ± {200 * s:.1f}",
             "" if math.isnan(g) else f"{100 * g:.1f} %", f"{p:,.0f}", f"{t:.2f}")
            for b, a, s, g, p, t in zip(c.budgets, c.accuracy_mean, c.accuracy_std, c.agreement_mean, c.passes,
                                        c.seconds)]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ToleranceCheck:
    """The reference at a tighter solver tolerance on its first images, with the same probes and dequantization
    (:func:`ode_probe_table` draws them by image position): what the tolerance alone changes."""

    n_images: int
    rtol: tuple[float, float]  # (the reference's, the tighter one)
    agreement: float  # fraction of the images with the same decision (all probes)
    abs_diff_mean: float  # |Δ log p(x | y)| in nats (all-probe means), mean over images and classes
    abs_diff_max: float
    margin_diff_max: float  # |Δ (correct − best wrong class)| in nats, at most over the images
    margin_min: float  # the smallest |correct − best wrong| margin at the tighter tolerance, nats
    bpd_diff_mean: float  # bits/dim of p(x | y_true), tighter minus the reference's, mean over images
    nfe_ratio: float  # score evaluations per solve, tighter / the reference's
    seconds_ratio: float  # wall time per image, tighter / the reference's

    def markdown(self) -> str:
        loose, tight = self.rtol
        return markdown_table(("", f"rtol = atol = {loose:g} → {tight:g}"), [
            ("images (the first of the reference's)", f"{self.n_images}"),
            ("same decision", f"{100 * self.agreement:.1f} %"),
            ("|Δ log p(x | y)|, mean / max over images and classes", f"{self.abs_diff_mean:.3g} / {self.abs_diff_max:.3g} nats"),
            ("|Δ margin| (correct − best wrong class), max", f"{self.margin_diff_max:.3g} nats"),
            ("smallest margin |correct − best wrong| (tighter)", f"{self.margin_min:.3g} nats"),
            ("Δ bits/dim of p(x | y_true), mean", f"{self.bpd_diff_mean:+.4f}"),
            ("cost, tighter / reference: evaluations per solve, seconds per image",
             f"{self.nfe_ratio:.2f}×, {self.seconds_ratio:.2f}×")])  # fmt: skip


def tolerance_check(reference: ProbeTable, tight: ProbeTable, labels: np.ndarray,
                    rtol: tuple[float, float]) -> ToleranceCheck:  # fmt: skip
    """Compare ``tight`` (N images) with the first N images of ``reference`` (the same probes and images)."""
    labels = np.asarray(labels)
    n = tight.result.log_p.shape[0]
    if n > reference.result.log_p.shape[0] or labels.shape != (n,):
        raise ValueError(f"the tight table's {n} images must be the first of the reference's "
                         f"({reference.result.log_p.shape[0]}), with {n} labels (got {labels.shape})")
    loose_lp, tight_lp = reference.result.log_p[:n], tight.result.log_p
    rows = np.arange(n)

    def margin(lp):
        return lp[rows, labels] - lp[rows, best_wrong_class(lp, labels)]

    diff = np.abs(tight_lp - loose_lp)
    return ToleranceCheck(
        n, rtol, float(np.mean(loose_lp.argmax(1) == tight_lp.argmax(1))), float(diff.mean()), float(diff.max()),
        float(np.max(np.abs(margin(tight_lp) - margin(loose_lp)))), float(np.min(np.abs(margin(tight_lp)))),
        float(np.mean(tight.result.bpd[rows, labels] - reference.result.bpd[:n][rows, labels])),
        float(tight.result.nfe.mean() / reference.result.nfe[:n].mean()),
        float(tight.seconds.mean() / reference.seconds[:n].mean()))  # fmt: skip


def at_tighter_tolerance(model, split: ImageSet, indices: np.ndarray, reference: ProbeTable, ode: Ode, rtol: float,
                         cache: ResultCache, *, seed: int, data_source: str,
                         block: int) -> tuple[ToleranceCheck, ProbeTable]:  # fmt: skip
    """The first images of the reference (``indices`` [N], the reference's first N) solved again at rtol = atol =
    ``rtol`` with the same probes and dequantization (through ``cache``), and their :func:`tolerance_check`."""
    tight_ode = dataclasses.replace(ode, solver=dataclasses.replace(ode.solver, rtol=rtol, atol=rtol))
    tight = ode_probe_table(model, split, indices, tight_ode, cache, seed=seed, data_source=data_source, block=block)
    return tolerance_check(reference, tight, split.labels[indices], (ode.solver.rtol, rtol)), tight


def probe_budgets(n: int) -> np.ndarray:
    """1, 2, 4, … up to n, and n itself: the probe counts read off an n-probe table."""
    return np.array(sorted({2**i for i in range(int(math.log2(n)) + 1)} | {n}))


@dataclasses.dataclass(frozen=True)
class Study:
    """Every estimator against its budget on one nested sample (:func:`study`)."""

    labels: np.ndarray  # [B] of the sample
    reference: ProbeTable  # the ODE with all its probes, on the first N images
    reference_decisions: np.ndarray  # [N]
    bounds: dict[str, TimeTable]  # by weighting
    curves: list[BudgetCurve]  # ODE (probes), then each weighting (times), then each pruning
    budget_names: dict[str, str]  # curve label -> "m" (probes) or "K" (times) or "K₂"

    @property
    def reference_accuracy(self) -> float:
        n = len(self.reference_decisions)
        return float(np.mean(self.reference_decisions == self.labels[:n]))

    def entries(self) -> list:
        """The cache entries (blocks) of every table, for provenance lines."""
        return [e for t in (self.reference, *self.bounds.values()) for e in t.entries]

    @property
    def reference_interval(self) -> tuple[float, float]:
        """The reference accuracy's 95 % Clopper–Pearson interval over its images."""
        n = len(self.reference_decisions)
        return binomial_interval(int(np.sum(self.reference_decisions == self.labels[:n])), n)

    def markdown(self, title: str, reference: str, tolerance: float, n_subsamples: int) -> str:
        """The study's section: the reference's accuracy with its interval, then :func:`convergence_table`
        (``reference``: the reference estimator described; ``tolerance`` as in :func:`verdicts`)."""
        n_ref = len(self.reference_decisions)
        hits = int(np.sum(self.reference_decisions == self.labels[:n_ref]))
        lo, hi = self.reference_interval
        return (f"### {title}\n\n**Reference** ({reference}, the first {n_ref} images): {hits} correct, "
                f"{100 * self.reference_accuracy:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}] (95 % Clopper–Pearson).\n\n"
                + convergence_table(self.curves, self.reference_accuracy, tolerance, self.budget_names)
                + f"\n\nAccuracy at the largest budget: on all {len(self.labels)} images (the ODE: on its {n_ref}), "
                f"mean over {n_subsamples} random subsets at each budget. Against the reference: accuracy on the same "
                f"{n_ref} images, so the comparison is paired. Seconds: measured at each table's largest budget on this "
                "machine (2 CPU cores, compilation included, sometimes shared with other jobs), scaled by network "
                "passes below it; `bench/estimator_cost.py` times settings side by side.")


def study(model, split: ImageSet, indices: np.ndarray, cache: ResultCache, rng: np.random.Generator, *, seed: int,
          data_source: str, ode: Ode, n_reference: int, ode_block: int, bounds: dict[str, Bound],
          bound_times, pruning, bound_block: int, n_subsamples: int) -> Study:  # fmt: skip
    """The tables (through ``cache``) and every budget curve read off them.

    ``indices`` [B]: the sample (every bound table); its first ``n_reference`` images get the ODE table
    (the reference decisions are its all-probe argmax). ``bounds``: label -> scorer whose n_times is the
    largest of ``bound_times``; ``pruning``: (K₁, keep) pairs, applied to each bound, decided with each K₂
    of ``bound_times`` from K₁ on."""
    if not 1 <= n_reference <= len(indices):
        raise ValueError(f"n_reference must be in [1, {len(indices)}] (the first images of the sample), got {n_reference}")
    labels = np.asarray(split.labels[indices])
    ref = ode_probe_table(model, split, indices[:n_reference], ode, cache, seed=seed, data_source=data_source,
                          block=ode_block)  # fmt: skip
    decisions = ref.result.log_p.argmax(axis=1)
    label = f"ODE, m probes (reference: m = {ode.n_probes})"
    curves = [probe_curve(label, ref, labels[:n_reference], probe_budgets(ode.n_probes), n_subsamples, rng, decisions)]
    names = {label: "m"}
    tables = {}
    for name, bound in bounds.items():
        if bound.settings.n_times != max(bound_times):
            raise ValueError(f"bound {name!r}: n_times {bound.settings.n_times} is not the largest budget {max(bound_times)}")
        tables[name] = bound_time_table(model, split, indices, bound, cache, seed=seed, data_source=data_source,
                                        block=bound_block)  # fmt: skip
        curves.append(bound_curve(name, tables[name], labels, bound_times, n_subsamples, rng, decisions))
        names[name] = "K"
    for name, table in tables.items():
        for k1, keep in pruning:
            pl = f"{name}, pruned: K₁ = {k1}, keep {keep}"
            ks2 = [k for k in bound_times if k >= k1]
            curves.append(pruned_curve(pl, table, labels, k1, keep, ks2, n_subsamples, rng, decisions))
            names[pl] = "K₂"
    return Study(labels, ref, decisions, tables, curves, names)


def plot_budgets(st: Study, title: str | None = None):
    """Accuracy and agreement with the reference decisions against network passes per image, every estimator."""
    import matplotlib.pyplot as plt

    fig, (ax_a, ax_g) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    n_ref = len(st.reference_decisions)
    lo, hi = st.reference_interval
    ax_a.axhspan(100 * lo, 100 * hi, color="0.85", label=f"reference, 95 % interval ({n_ref} images)")
    for i, c in enumerate(st.curves):
        style = dict(fmt="o-" if "pruned" not in c.label else "s--", color=f"C{i}", capsize=2, ms=4, label=c.label)
        ax_a.errorbar(c.passes, 100 * c.accuracy_mean, yerr=200 * c.accuracy_std, **style)
        ax_g.errorbar(c.passes, 100 * c.agreement_mean, yerr=200 * c.agreement_std, **style)
    ax_a.set(xscale="log", xlabel="network passes per image (all classes)",
             ylabel=f"accuracy [%] ({st.curves[-1].n_images} images; ODE: {n_ref})")  # fmt: skip
    ax_g.set(xscale="log", xlabel="network passes per image (all classes)",
             ylabel=f"agreement with the reference decisions [%] ({n_ref} images)")  # fmt: skip
    ax_a.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def corrupted_sample(split: ImageSet, indices: np.ndarray, corruption: str, seed: int) -> ImageSet:
    """The images ``indices`` of ``split`` under one corruption of the split's benchmark (MNIST-C, CIFAR-10-C; its
    first severity), as an ImageSet of those images in sample order: position i is sample image i, so the
    estimators draw the same random numbers for it as for the clean image. The corruption of an image depends
    only on (seed, its index in the split, corruption), as in chapter 03."""
    from sbgc.data.datasets import dataset_of_source
    from sbgc.experiments import corruption_robustness as rb

    dataset = dataset_of_source(split.source)
    family = rb.corruption_family(dataset.name if dataset is not None else "cifar10")
    rb.check_corruptions((corruption,), family)
    part = split.subset(indices)
    evalset = rb.EvaluationSet(part.images, part.labels.astype(np.int64), part.indices, split.source, len(split), family)
    images = rb.corrupted(evalset, (corruption, family.severities[0]), seed)
    return ImageSet(images, part.labels, part.source, part.indices, part.split)


def sample_source(split: ImageSet, seed: int) -> str:
    """The data source of a nested sample (:func:`sbgc.data.datasets.sample_indices`) for cache keys."""
    from sbgc.data.datasets import describe

    return f"{describe(split)}, nested sample sample_indices(seed={seed})"


def main(argv=None) -> None:
    """Fill the results cache with one table, block by block (resumable: rerun the same command)."""
    import argparse
    import time

    from sbgc.cache import chapter_cache
    from sbgc.data.datasets import evaluation_split, sample_indices
    from sbgc.method.likelihood import SolverSettings
    from sbgc.train.pretrained import load_model

    p = argparse.ArgumentParser(prog="python -m sbgc.experiments.converged", description=main.__doc__)
    p.add_argument("--model", default="mnist")
    p.add_argument("--data", default="mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, required=True, help="the first N images of the nested sample")
    p.add_argument("--block", type=int, required=True, help="images per cached block (part of the key)")
    p.add_argument("--weighting", choices=("likelihood", "uniform"), help="a bound table with this weighting")
    p.add_argument("--times", type=int, default=256, help="K_max stratified times of the bound table")
    p.add_argument("--probes", type=int, help="an ODE table with this many probes (instead of a bound table)")
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--corruption", default=None, help="the first --images under this corruption of the dataset's "
                   "benchmark (chapter 06's noise knob), instead of the clean images")
    p.add_argument("--cache", default="use", choices=("use", "recompute"))
    a = p.parse_args(argv)
    if (a.weighting is None) == (a.probes is None):
        p.error("give exactly one of --weighting (a bound table) and --probes (an ODE table)")
    model, split = load_model(a.model), evaluation_split(a.data)
    idx, cache, source = sample_indices(len(split), a.images, a.seed), chapter_cache(a.cache), sample_source(split, a.seed)
    if a.corruption is not None:  # as chapter 06 keys its noise condition
        split = corrupted_sample(split, idx, a.corruption, a.seed)
        source = f"{source}, under {a.corruption} (regenerated, seed {a.seed})"
        idx = np.arange(a.images)
    start = time.perf_counter()
    if a.probes is None:
        t = bound_time_table(model, split, idx, Bound(BoundSettings(n_times=a.times, weighting=a.weighting)), cache,
                             seed=a.seed, data_source=source, block=a.block)  # fmt: skip
        print(f"bound table {a.weighting} K={a.times}: {t.values.shape}, {t.seconds.mean():.2f} s per image")
    else:
        ode = Ode(SolverSettings(rtol=a.rtol, atol=a.rtol), n_probes=a.probes)
        t = ode_probe_table(model, split, idx, ode, cache, seed=a.seed, data_source=source, block=a.block)
        print(f"ODE table n={a.probes} rtol={a.rtol:g}: {t.log_p_probes.shape}, {t.seconds.mean():.1f} s per image")
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
