# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Convergence of the trace estimator (paper appendix A.2.1, Fig. 3)
#
# The divergence in the probability-flow likelihood is a Hutchinson estimate: each *repetition*
# (probe $v_j$) gives one value $L_j(x, y)$ of $\log p(x \mid y)$, and the paper averages $n = 30$
# of them ($n = 10$ for CIFAR-10-C and the attacks, "a more conservative lower estimate of the
# performance"). Its Fig. 3 shows how the classifier depends on that number: the accuracy rises
# monotonically with the repetitions, $n = 10$ is "nearly asymptotic", and the asymptotic accuracy
# is above 95 % (**paper**); the log-likelihood estimate's standard error "converges very slowly",
# and the correct class ends above the best wrong one on average.
#
# This chapter redoes Fig. 3, and adds two comparisons the paper did not make, at equal compute:
# one shared ODE trajectory for all probes against one solve per probe, and common random numbers
# across classes against independent ones.

# %% tags=["parameters"]
profile = "ci"
overrides = {}  # e.g. {"n_images": 20, "ode.rtol": 1e-3}; knobs: sbgc.book.profiles
cache = "use"  # results-cache/: "use", "read-only" or "recompute" (sbgc.cache.MODES)

# %% tags=["hide-cell"]
from sbgc.book.provenance import setup_jax

setup_jax()  # persistent compilation cache shared by the chapters

import dataclasses
import functools

import jax
import numpy as np
from IPython.display import Markdown, display

from sbgc.cache import CacheKey, cached_tuple, chapter_cache
from sbgc.book.profiles import chapter_params
from sbgc.book.provenance import collect_provenance, write_results
from sbgc.data.datasets import describe as describe_split
from sbgc.data.datasets import evaluation_split
from sbgc.experiments import convergence as conv
from sbgc.method.classify import ClassLikelihoods, class_log_likelihoods
from sbgc.report import cpu_trained_note, markdown_table
from sbgc.stats import binomial_interval
from sbgc.train.pretrained import load_model

P = chapter_params("06_convergence", profile, overrides)
C = chapter_cache(cache)
key = jax.random.key(P.seed)
rng = np.random.default_rng(P.seed)
display(Markdown(P.to_markdown()))

# %% [markdown]
# ## What is computed
#
# For every image $x$ and class $y$ the $n$ repetitions $L_1, \dots, L_n$ are computed **once**:
# one probability-flow solve per (image, class) carries all $n$ divergence integrals, because the
# trajectory $x(t)$ does not depend on the probe (`shared_trajectory=True`). Every class of an
# image uses the same dequantization noise and the same $n$ probes (common random numbers,
# `sbgc.method.classify.class_log_likelihoods`). The estimate from $m \le n$ repetitions is the mean over
# a random subset $S$ of size $m$, the same subset for every class of the image
# (`sbgc.experiments.convergence.subsample_means`), redrawn many times:
#
# * **accuracy** of $\arg\max_y \hat L_m(x, y)$, mean over subsets, error bars two standard
#   deviations over subsets (as in the paper; at $m = n$ every subset is the full set, so the bar
#   vanishes; the sampling error over *images* is a separate, binomial interval);
# * **log-likelihood** of the correct class and of the best wrong class, averaged over images and
#   subsets, error bars the standard error of an $m$-repetition mean, $s/\sqrt m$, with $s$ the
#   standard deviation of an image's $n$ repetitions (root mean square over images). The best
#   wrong class is picked in each subset, as the classifier would at $m$ repetitions: a maximum
#   over nine noisy estimates, biased upwards at small $m$. The dotted lines show one realisation,
#   the running mean over the first $m$ repetitions, which is what a single run with $m$ probes
#   would report.

# %%
model = load_model(P.checkpoint)
split = evaluation_split(P.data)
images = split.subset(np.sort(rng.choice(len(split), P.n_images, replace=False)))
data_source = f"{describe_split(split)}, {P.n_images} random images"
prov = collect_provenance(P, data_source=data_source, checkpoint=model.path, sample_sizes={
    "images": P.n_images, "probes": P.ode.n_probes, "comparison images": P.n_compare_images})  # fmt: skip
model_note = cpu_trained_note(model.meta)
ode = P.ode.solver_settings()
solver = P.ode.likelihood_kwargs(progress=False)
likelihoods = functools.partial(class_log_likelihoods, model.score_fn, model.sde, key=jax.random.fold_in(key, 0))
display(Markdown(P.notice(model.meta) + f"\n\nScore model: {model.describe()}, {model.meta.get('n_params', 0):,} "
                 "parameters.\n\n" + prov.line(model_note)))


def cached_run(name: str, label: str, subset, compute, *, shared_trajectory: bool):
    """A likelihood table through the results cache, as a TimedRun (its wall time the computing run's)."""
    key_ = CacheKey(name, 1, {"knobs": P.knobs}, model.sha256, data_source, subset.indices)
    result, entry = cached_tuple(C, key_, compute, ClassLikelihoods)
    return conv.TimedRun(result, entry.record["seconds"], shared_trajectory, label), entry


# %%
shared, shared_entry = cached_run("convergence_main", "one shared trajectory, CRN", images,
                                  lambda: likelihoods(images.images, **solver), shared_trajectory=True)
ms = np.arange(1, P.ode.n_probes + 1)
acc = conv.accuracy_curve(shared.result.log_p_probes, images.labels, ms, P.n_subsamples, rng)
ll = conv.likelihood_curves(shared.result.log_p_probes, images.labels, ms, P.n_subsamples, rng)
fig = conv.plot_fig3(acc, ll, P.n_images)

# %%
hits = int(np.sum(shared.result.predict() == images.labels))
m_enough, m_tol = conv.sufficient_repetitions(acc, P.n_images)
ci_lo, ci_hi = binomial_interval(hits, P.n_images)
at = lambda m: int(np.searchsorted(ms, min(m, P.ode.n_probes)))  # index of m (or of n if m > n)
display(Markdown(markdown_table(
    ("repetitions m", "accuracy, mean ± 2 std over subsets", "log p̂ correct class [nats]", "log p̂ best wrong class [nats]",
     "SEM of one image's estimate, correct class [nats]"),
    [(ms[i], f"{100 * acc.mean[i]:.1f} % ± {200 * acc.std[i]:.1f}", f"{ll.correct_mean[i]:.1f}", f"{ll.wrong_mean[i]:.1f}",
      f"{ll.correct_sem[i]:.2f}") for i in sorted({at(1), at(10), at(P.ode.n_probes)})],
) + f"""

**Which n suffices on this sample:** from m = {m_enough} repetitions on, the mean accuracy over subsets is
within {100 * m_tol:.1f} points (one binomial standard error over these {P.n_images} images, the resolution of the
sample) of the accuracy with all {P.ode.n_probes}; at m = 1 it is {100 * (acc.mean[0] - acc.mean[-1]):+.1f} points
from it.

With all {P.ode.n_probes} repetitions: {hits} of {P.n_images} images correct, {100 * hits / P.n_images:.1f} % (95 %
Clopper–Pearson interval over images {100 * ci_lo:.1f} – {100 * ci_hi:.1f} %). Run time {shared.seconds:.0f} s
(compilation included, in the run that computed it), {shared.result.nfe.mean():.0f} score evaluations per solve. **Paper** (Fig. 3, 67M
network, CIFAR-10 test set): accuracy rises monotonically, nearly asymptotic at n = 10, above 95 % at n = 30.

{prov.line(model_note, shared_entry)}
"""))  # fmt: skip

# %% [markdown]
# ## Comparison 1: common random numbers across classes, or not
#
# The classifier compares classes, so what matters is the noise of the *differences*
# $\hat L_m(x, y) - \hat L_m(x, y')$. With common random numbers (CRN) the two classes see the same
# dequantization noise and probes, and the part of the noise they share cancels. Without CRN, as
# when each class is evaluated separately, each class gets its own noise and probes
# (`sbgc.experiments.convergence.class_log_likelihoods_independent`, key `fold_in(key, class)`). Both cost the
# same per repetition, so equal compute means equal $m$.
#
# The standard error of the class margin (correct minus best wrong) comes from the per-probe
# differences $L_j(x, y) - L_j(x, y')$, which are paired under CRN and independent without. Without
# CRN the classes also differ in dequantization noise, which no number of probes averages away:
# its spread $\sigma_u$ (one class log-likelihood across dequantization draws) is estimated from
# the two runs (`dequantization_std`) and added, $2\sigma_u^2$, to the margin's variance. The two
# runs also follow different trajectories, so $\sigma_u$ includes the change of the solver error
# between them, which at loose tolerances can dominate. Under CRN the dequantization noise is
# shared, and its (smaller) effect on the margin is not measured here.

# %%
compare = images.subset(slice(0, P.n_compare_images))
independent = functools.partial(conv.class_log_likelihoods_independent, model.score_fn, model.sde, key=jax.random.fold_in(key, 1))
no_crn, no_crn_entry = cached_run("convergence_no_crn", "independent per class (no CRN)", compare,
                                  lambda: independent(compare.images, **solver), shared_trajectory=True)
crn_subset = shared.head(P.n_compare_images, "CRN (the main run), one shared trajectory")
sigma_u = conv.dequantization_std(crn_subset.result.log_p_probes, no_crn.result.log_p_probes)
crn_variants = [conv.variant_curves(crn_subset, compare.labels, P.n_subsamples, rng),
                conv.variant_curves(no_crn, compare.labels, P.n_subsamples, rng, extra_margin_var=2 * sigma_u**2)]  # fmt: skip
fig = conv.plot_comparison(crn_variants, x="m")

# %%
display(Markdown(
    conv.equal_compute_table(crn_variants)
    + "\n\nSpread of one class log-likelihood over dequantization draws: σ_u "
    + ("not resolved above the probe noise (estimate clipped at 0)" if sigma_u == 0 else f"≈ {sigma_u:.3g} nats")
    + f" (pooled over {P.n_compare_images} image(s) × 10 classes). Wall time of the CRN row: its share of the main run.\n\n"
    + prov.line(model_note, [shared_entry, no_crn_entry])
))

# %% [markdown]
# ## Comparison 2: one shared trajectory, or one solve per probe
#
# The paper solved the $n$ augmented ODEs separately (one probe each). Here the same images, the
# same dequantization noise and the same probes are solved both ways: with a shared trajectory
# (the main run) and with `shared_trajectory=False`, $n$ independent solves. Both estimate the same
# quantity with the same probe variance, so they may only differ by solver error, which the first
# line below measures. Their cost differs: an evaluation of the shared solve runs the network once
# plus one Jacobian-vector product per probe, $\text{nfe}\,(1 + m)$ network passes for $m$ probes;
# $m$ separate solves cost $2m\,\text{nfe}_1$ (`sbgc.experiments.convergence.network_passes`; a JVP costs
# about one to two forward passes, so measured wall times are shown too). The figure puts both
# on the same compute axis.
#
# One difference is not about cost. A solver error is a property of a trajectory. With a shared
# trajectory it is the same for all probes of an (image, class): a bias that the spread of the
# probes does not show and more probes do not reduce. With one solve per probe each repetition has
# its own error, which adds to the spread of the repetitions, and it is not shared across classes,
# so it also adds to the class margin. At loose tolerances this can dominate; the gap between the
# two ways of solving the same probes (first line below) shows its size.

# %%
separate, separate_entry = cached_run(
    "convergence_separate", "one solve per probe", compare,
    lambda: likelihoods(compare.images, **dict(solver, solver=dataclasses.replace(ode, shared_trajectory=False))),
    shared_trajectory=False)
solve_gap = np.abs(separate.result.log_p_probes - crn_subset.result.log_p_probes)
solve_variants = [conv.variant_curves(crn_subset, compare.labels, P.n_subsamples, rng),
                  conv.variant_curves(separate, compare.labels, P.n_subsamples, rng)]  # fmt: skip
fig = conv.plot_comparison(solve_variants, x="passes")

# %%
display(Markdown(
    f"Same probes, solved both ways: |Δ L_j| = {solve_gap.mean():.3g} nats on average, {solve_gap.max():.3g} at most "
    f"(rtol = {P.ode.rtol:g}, atol = {P.ode.atol:g}); per-probe spread of the same values: "
    f"{np.mean(crn_subset.result.log_p_probes.std(axis=-1, ddof=1)):.3g} nats.\n\n"
    + conv.equal_compute_table(solve_variants)
    + f"\n\nWall time of the separate solves: {separate.seconds:.0f} s for {P.n_compare_images} image(s) "
    f"(compilation included).\n\n" + prov.line(model_note, [shared_entry, separate_entry])
))

# %%
numbers = {
    "ms": ms, "accuracy_mean": acc.mean, "accuracy_std": acc.std,
    "accuracy_all_probes": hits / P.n_images, "sufficient_repetitions": m_enough, "sufficient_tolerance": m_tol, "accuracy_all_probes_ci95": (ci_lo, ci_hi),
    "loglik_correct_mean_nats": ll.correct_mean, "loglik_correct_sem_nats": ll.correct_sem,
    "loglik_best_wrong_mean_nats": ll.wrong_mean, "loglik_best_wrong_sem_nats": ll.wrong_sem,
    "margin_mean_nats": ll.margin_mean, "margin_sem_nats": ll.margin_sem,
    "dequantization_std_nats": sigma_u,
    "shared_vs_separate_abs_diff_mean_nats": float(solve_gap.mean()),
    "shared_vs_separate_abs_diff_max_nats": float(solve_gap.max()),
    "variants": {v.label: {"passes": v.passes, "accuracy_mean": v.accuracy.mean, "accuracy_std": v.accuracy.std,
                           "margin_se_nats": v.margin_se, "seconds": v.seconds}
                 for v in crn_variants + solve_variants[1:]},
    "seconds_main_run": shared.seconds, "checkpoint": model.describe(),
    "cache": [e.record for e in (shared_entry, no_crn_entry, separate_entry)],
}  # fmt: skip
path = write_results(numbers, prov)

# %% [markdown]
# ## Reading the result
#
# The paper's conclusions, "accuracy improves monotonically with the repetitions" and "n = 10 is
# nearly asymptotic", are about its 67M-parameter model. The curves above are for the network and
# the sample sizes named in the provenance lines; at the `ci` profile they only check the machinery
# (one set of solves subsampled instead of re-solved per point, common random numbers kept inside
# each subset, the two comparisons).
#
# What the comparisons can show at a larger profile: whether CRN makes the class margin's noise
# small enough that fewer repetitions suffice for the same accuracy (the paper's $n = 10$ for the
# out-of-distribution tasks is then a cost choice, not an accuracy one), and how many more
# repetitions a shared trajectory buys for the same compute than separate solves.
