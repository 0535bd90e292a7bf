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
# # Convergence: every estimator against its budget (paper appendix A.2.1, Fig. 3, extended)
#
# The classifier $\arg\max_y \log p(x \mid y)$ is the model's only where $\log p(x \mid y)$ is estimated well
# enough that more effort would not change the decisions. The paper estimates it by the probability-flow ODE
# with a Hutchinson trace estimator and averages $n = 30$ probes ($n = 10$ for corruptions and attacks); its
# Fig. 3 shows the accuracy rising monotonically with the probes, "nearly asymptotic" at $n = 10$ and above
# 95 % at 30 (**paper**, CIFAR-10).
#
# This chapter asks, for every way of scoring a class that the book uses:
#
# * **How does the accuracy depend on the budget**, and where does it stop changing (its asymptote)?
# * **What is the cheapest budget within a tolerance of the reference accuracy**, the paper's own estimator
#   (ODE, all probes), and how often does it take the reference's decisions?
#
# The estimators: the ODE with $m$ probes; the variational bound with $K$ stratified times under the
# likelihood weighting (a bound on $\log p(x \mid y)$); the same denoising errors under a uniform-in-$t$
# weighting (a class score, not a density: the ε-MSE of Li et al.'s Diffusion Classifier); and class pruning
# over each bound. Each is computed **once** at its largest budget, and every smaller budget is read off that
# computation (random subsets of its probes, or one time per coarse stratum:
# `sbgc.experiments.converged`), so all budgets see the same images and the same random numbers.

# %% tags=["parameters"]
profile = "ci"
overrides = {}  # e.g. {"n_images": 20, "ode.rtol": 1e-3}; knobs: sbgc.book.profiles
cache = "use"  # results-cache/: "use", "read-only" or "recompute" (sbgc.cache.MODES)

# %% tags=["hide-cell"]
from sbgc.book.provenance import setup_jax

setup_jax()  # persistent compilation cache shared by the chapters

import dataclasses

import jax
import numpy as np
from IPython.display import Markdown, display

from sbgc.book.profiles import chapter_params
from sbgc.book.provenance import collect_provenance, write_results
from sbgc.cache import CacheKey, cached_tuple, chapter_cache
from sbgc.data.datasets import evaluation_split, sample_indices
from sbgc.experiments import convergence as conv
from sbgc.experiments import converged as cv
from sbgc.method.bound import BoundSettings
from sbgc.method.classify import ClassLikelihoods, class_log_likelihoods
from sbgc.method.scorers import Bound
from sbgc.report import cpu_trained_note, markdown_table
from sbgc.train.pretrained import load_model

P = chapter_params("06_convergence", profile, overrides)
K = P.knobs
K.check()
C = chapter_cache(cache)
rng = np.random.default_rng(K.seed)
display(Markdown(P.to_markdown()))

# %%
model = load_model(P.checkpoint)
split = evaluation_split(K.data)
indices = sample_indices(len(split), K.n_images, K.seed)
data_source = cv.sample_source(split, K.seed)
prov = collect_provenance(P, data_source=f"{data_source}, the first {K.n_images} images", checkpoint=model.path,
                          sample_sizes={"images": K.n_images, "reference images": K.n_reference_images,
                                        "probes": K.ode.n_probes, "times": max(K.bound_times),
                                        "comparison images": K.n_compare_images})  # fmt: skip
model_note = cpu_trained_note(model.meta)
ode = K.ode.scorer()
bounds = {f"bound, {w} weighting": Bound(BoundSettings(n_times=max(K.bound_times), weighting=w)) for w in K.weightings}
display(Markdown(P.notice(model.meta) + f"\n\nScore model: {model.describe()}, {model.meta.get('n_params', 0):,} "
                 "parameters.\n\n" + prov.line(model_note)))

# %% [markdown]
# ## Every estimator against its budget, on clean images and off the data
#
# For each set of images: accuracy (left; error bars two standard deviations over random subsets of the times
# or probes, the spread of one run at that budget) and agreement with the reference decisions (right) against
# the network passes an image costs (all classes). The reference is the ODE with all its probes, on the first
# images of the set; its 95 % interval over images is the grey band. A pruned estimator's budget is the $K_2$
# further times of the kept classes, after $K_1$ times for every class; the kept classes are decided by their
# $K_1 + K_2$ times combined, as the library's `Pruned` over two bounds does. An estimator's ranking can change
# off the data, so the same budgets are measured on the same images under one noise corruption (`noise`, its
# benchmark's first severity, regenerated as in chapter 03; each image keeps its random numbers).

# %%
conditions = {"clean test images": (split, indices, data_source, K.n_images, K.n_reference_images)}
if K.noise is not None:
    n = K.n_noise_images
    conditions[f"{K.noise}, the first {n} images"] = (
        cv.corrupted_sample(split, indices[:n], K.noise, K.seed), np.arange(n),
        f"{data_source}, under {K.noise} (regenerated, seed {K.seed})", n,
        K.n_noise_reference_images)  # fmt: skip
studies = {name: cv.study(model, images_, idx_, C, rng, seed=K.seed, data_source=source_, ode=ode, n_reference=n_ref,
                          ode_block=K.ode_block, bounds=bounds, bound_times=K.bound_times, pruning=K.pruning,
                          bound_block=K.bound_block, n_subsamples=K.n_subsamples)
           for name, (images_, idx_, source_, n_, n_ref) in conditions.items()}  # fmt: skip
for name, st_ in studies.items():
    fig = cv.plot_budgets(st_, title=name)

# %%
for name, st_ in studies.items():
    display(Markdown(st_.markdown(name, ode.describe(), K.tolerance, K.n_subsamples) + "\n\n"
                     + prov.line(model_note, st_.entries())))

# %% tags=["hide-input"]
display(Markdown(markdown_table(
    ("images", "estimator", "budget", "accuracy (mean ± 2 std over subsets)", "agreement with the reference",
     "network passes per image", "seconds per image"),
    [(name, c.label, *row) for name, st_ in studies.items() for c in st_.curves
     for row in cv.curve_rows(c, st_.budget_names[c.label])])))
st = studies["clean test images"]  # the rest of the page: the clean images
entries = st.entries()
ref_lo, ref_hi = st.reference_interval

# %% [markdown]
# ## The paper's Fig. 3: accuracy and log-likelihood against the probes
#
# On the reference images: the accuracy of $\arg\max_y \hat L_m(x, y)$ against the probes $m$ (mean over
# random $m$-subsets of the $n$, the same subset for every class of an image: common random numbers), and the
# log-likelihood of the correct and the best wrong class (error bars the standard error of an $m$-probe mean;
# the best wrong class is picked in each subset, as the classifier would, so it is biased upwards at small $m$;
# dotted: one realisation, the running mean over the first $m$ probes).

# %%
per_probe, ref_labels = st.reference.log_p_probes, st.labels[: K.n_reference_images]
ms = np.arange(1, K.ode.n_probes + 1)
acc = conv.accuracy_curve(per_probe, ref_labels, ms, K.n_subsamples, rng)
ll = conv.likelihood_curves(per_probe, ref_labels, ms, K.n_subsamples, rng)
fig = conv.plot_fig3(acc, ll, K.n_reference_images)
m_enough, m_tol = conv.sufficient_repetitions(acc, K.n_reference_images)
display(Markdown(
    f"From m = {m_enough} probes on, the mean accuracy over subsets is within {100 * m_tol:.1f} points (one "
    f"binomial standard error over these {K.n_reference_images} images) of the accuracy with all {K.ode.n_probes}; "
    f"at m = 1 it is {100 * (acc.mean[0] - acc.mean[-1]):+.1f} points from it. Class margin (correct − best wrong) "
    f"at all probes: {ll.margin_mean[-1]:.1f} nats on average, standard error of one image's margin "
    f"{ll.margin_sem[-1]:.2f} nats. {st.reference.result.nfe.mean():.0f} score evaluations per solve.\n\n"
    + prov.line(model_note, st.reference.entries)
))  # fmt: skip

# %% [markdown]
# ## Does the paper's tolerance move the decisions?
#
# The reference solves at rtol = atol = `ode.rtol`; the paper used $10^{-5}$. The first reference images again
# at the tighter tolerance (`tight_rtol`), with the same probes and dequantization noise, so that every
# difference is the solver's: the decisions, the log-likelihoods and the class margins, and what the tighter
# tolerance costs.

# %%
if K.tight_rtol is not None:
    tol_check, tight = cv.at_tighter_tolerance(model, split, indices[: K.n_tight_images], st.reference, ode,
                                               K.tight_rtol, C, seed=K.seed, data_source=data_source, block=K.ode_block)
    display(Markdown(tol_check.markdown() + f"\n\nBoth: {ode.n_probes} probes, the same for both tolerances.\n\n"
                     + prov.line(model_note, [*st.reference.entries, *tight.entries])))

# %% [markdown]
# ## Comparison 1: common random numbers across classes, or not
#
# The classifier compares classes, so what matters is the noise of the *differences*
# $\hat L_m(x, y) - \hat L_m(x, y')$. With common random numbers (CRN) the two classes see the same
# dequantization noise and probes, and the part of the noise they share cancels. Without CRN, as when each
# class is evaluated separately, each class gets its own noise and probes
# (`sbgc.experiments.convergence.class_log_likelihoods_independent`, key `fold_in(key, class)`). Both cost the
# same per probe, so equal compute means equal $m$. The standard error of the class margin comes from the
# per-probe differences, paired under CRN and independent without; without CRN the classes also differ in
# dequantization noise, whose spread $\sigma_u$ (estimated from the two runs, `dequantization_std`) adds
# $2\sigma_u^2$ to the margin's variance.

# %%
compare = split.subset(indices[: K.n_compare_images])
solver = K.ode.likelihood_kwargs(progress=False)
base_key = jax.random.PRNGKey(K.seed)  # the reference table's key: image i of the sample draws as image i


def comparison_run(name: str, label: str, compute, *, shared_trajectory: bool):
    """A likelihood table of the comparison images through the results cache, as a TimedRun."""
    key_ = CacheKey(name, 2, {"scorer": ode, "seed": K.seed}, model.sha256, data_source, compare.indices)
    result, entry = cached_tuple(C, key_, compute, ClassLikelihoods)
    return conv.TimedRun(result, entry.record["seconds"], shared_trajectory, label), entry


no_crn, no_crn_entry = comparison_run(
    "convergence_no_crn", "independent per class (no CRN)",
    lambda: conv.class_log_likelihoods_independent(model.score_fn, model.sde, compare.images,
                                                   key=jax.random.fold_in(base_key, 1), **solver),
    shared_trajectory=True)  # fmt: skip
crn_subset = st.reference.head(K.n_compare_images, "CRN (the reference run), one shared trajectory")
sigma_u = conv.dequantization_std(crn_subset.result.log_p_probes, no_crn.result.log_p_probes)
crn_variants = [conv.variant_curves(crn_subset, compare.labels, K.n_subsamples, rng),
                conv.variant_curves(no_crn, compare.labels, K.n_subsamples, rng, extra_margin_var=2 * sigma_u**2)]  # fmt: skip
fig = conv.plot_comparison(crn_variants, x="m")

# %%
display(Markdown(
    conv.equal_compute_table(crn_variants)
    + "\n\nSpread of one class log-likelihood over dequantization draws: σ_u "
    + ("not resolved above the probe noise (estimate clipped at 0)" if sigma_u == 0 else f"≈ {sigma_u:.3g} nats")
    + f" (pooled over {K.n_compare_images} image(s) × 10 classes). Wall time of the CRN row: its images' share of "
    "the reference run.\n\n" + prov.line(model_note, [*st.reference.entries, no_crn_entry])
))

# %% [markdown]
# ## Comparison 2: one shared trajectory, or one solve per probe
#
# The paper solved the $n$ augmented ODEs separately (one probe each). The same images, dequantization noise
# and probes are solved both ways here: with a shared trajectory (the reference run) and with
# `shared_trajectory=False`, $n$ independent solves. Both estimate the same quantity with the same probe
# variance; they differ in cost (a shared evaluation runs the network once plus one Jacobian-vector product per
# probe, $\text{nfe}\,(1 + m)$ passes; $m$ separate solves cost $2m\,\text{nfe}_1$,
# `sbgc.experiments.convergence.network_passes`) and by the solver error of each trajectory: with a shared
# trajectory it is a bias common to the probes of an (image, class), with separate solves it adds to the
# spread of the probes and is not shared across classes.

# %%
separate, separate_entry = comparison_run(
    "convergence_separate", "one solve per probe",
    lambda: class_log_likelihoods(model.score_fn, model.sde, compare.images, base_key,
                                  **dict(solver, solver=dataclasses.replace(ode.solver, shared_trajectory=False))),
    shared_trajectory=False)  # fmt: skip
solve_gap = np.abs(separate.result.log_p_probes - crn_subset.result.log_p_probes)
solve_variants = [conv.variant_curves(crn_subset, compare.labels, K.n_subsamples, rng),
                  conv.variant_curves(separate, compare.labels, K.n_subsamples, rng)]  # fmt: skip
fig = conv.plot_comparison(solve_variants, x="passes")

# %%
display(Markdown(
    f"Same probes, solved both ways: |Δ L_j| = {solve_gap.mean():.3g} nats on average, {solve_gap.max():.3g} at most "
    f"(rtol = {K.ode.rtol:g}, atol = {K.ode.atol:g}); per-probe spread of the same values: "
    f"{np.mean(crn_subset.result.log_p_probes.std(axis=-1, ddof=1)):.3g} nats.\n\n"
    + conv.equal_compute_table(solve_variants)
    + f"\n\nWall time of the separate solves: {separate.seconds:.0f} s for {K.n_compare_images} image(s) "
    "(compilation included).\n\n" + prov.line(model_note, [*st.reference.entries, separate_entry])
))

# %% tags=["hide-input"]
verdicts = cv.verdicts(st.curves, st.reference_accuracy, K.tolerance)
numbers = {  # the results file: every number above with its provenance
    "reference": {"estimator": ode.describe(), "n_images": K.n_reference_images, "accuracy": st.reference_accuracy,
                  "accuracy_ci95": (ref_lo, ref_hi)},
    "conditions": {name: {
        "reference_accuracy": st_.reference_accuracy, "n_reference_images": len(st_.reference_decisions),
        "curves": {c.label: {"budget": st_.budget_names[c.label], "budgets": c.budgets, "accuracy_mean": c.accuracy_mean,
                             "accuracy_std": c.accuracy_std, "agreement_mean": c.agreement_mean,
                             "agreement_std": c.agreement_std, "paired_accuracy": c.paired_accuracy,
                             "passes_per_image": c.passes, "seconds_per_image": c.seconds, "n_images": c.n_images}
                   for c in st_.curves},
        "verdicts": {v.label: v.record() for v in cv.verdicts(st_.curves, st_.reference_accuracy, K.tolerance)},
    } for name, st_ in studies.items()},
    "tolerance": K.tolerance,
    "fig3": {"ms": ms, "accuracy_mean": acc.mean, "accuracy_std": acc.std, "sufficient_repetitions": m_enough,
             "sufficient_tolerance": m_tol, "loglik_correct_mean_nats": ll.correct_mean,
             "loglik_best_wrong_mean_nats": ll.wrong_mean, "margin_mean_nats": ll.margin_mean,
             "margin_sem_nats": ll.margin_sem},
    "tight_tolerance": None if K.tight_rtol is None else dataclasses.asdict(tol_check),
    "dequantization_std_nats": sigma_u,
    "shared_vs_separate_abs_diff_mean_nats": float(solve_gap.mean()),
    "shared_vs_separate_abs_diff_max_nats": float(solve_gap.max()),
    "variants": {v.label: {"passes": v.passes, "accuracy_mean": v.accuracy.mean, "accuracy_std": v.accuracy.std,
                           "margin_se_nats": v.margin_se, "seconds": v.seconds}
                 for v in crn_variants + solve_variants[1:]},
    "checkpoint": model.describe(),
    "cache": [e.record for st_ in studies.values() for e in st_.entries()] + [no_crn_entry.record, separate_entry.record]
    + ([e.record for e in tight.entries] if K.tight_rtol is not None else []),
}  # fmt: skip
path = write_results(numbers, prov)

# %% [markdown]
# ## Reading the result
#
# The table above is the book's answer to "which estimator, at which budget": an estimator whose accuracy at
# its largest budget is below the reference's has not converged to the model's decisions (or estimates another
# score: the uniform weighting is not $\log p(x \mid y)$), and its cheapest budget within the tolerance is the
# setting the other chapters can use for numbers about the model rather than about the estimator's noise. At the
# `ci` profile the sample is a handful of images and every curve only checks the machinery; the `mnist`
# profile's numbers are on the shipped MNIST model, the sample named in the provenance lines.

# %% tags=["hide-input"]
best = min((v for v in verdicts if v.budget is not None), key=lambda v: v.passes, default=None)
asymptotes = "; ".join(f"{v.label} {100 * v.asymptote:.1f} %" for v in verdicts if "pruned" not in v.label)
display(Markdown(
    "On this run (clean images): " + (
        f"the cheapest estimator within {100 * K.tolerance:.1f} points of the reference accuracy is **{best.label}** at "
        f"{st.budget_names[best.label]} = {best.budget} ({best.passes:,.0f} network passes per image, {best.seconds:.2f} s "
        f"on this machine): {100 * best.accuracy:.1f} % on the {K.n_reference_images} reference images, where the "
        f"reference has {100 * st.reference_accuracy:.1f} %, and it takes the reference's decision on "
        f"{100 * best.agreement:.1f} % of them." if best else
        f"no estimator came within {100 * K.tolerance:.1f} points of the reference accuracy.")
    + f" Accuracy at each estimator's largest budget: {asymptotes}. Results: `{path}`."
))
