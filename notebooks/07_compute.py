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
# # What a classification costs
#
# The paper classifies an image by solving the probability-flow ODE once per class, with 30
# Hutchinson probes at rtol = atol = $10^{-5}$ (**paper**, §2 and appendix A.1): thousands of
# network evaluations per class. A single forward and backward pass of its adversarial attack
# "take approximately 90 minutes on an NVIDIA Tesla V100" (**paper**, §3.3). This chapter asks how
# much of that cost the *decision* needs. It compares, on the same model and the same test images
# (the first images of chapter 06's nested sample):
#
# * the **reference**: chapter 06's converged estimator, the ODE with all the probes of its table
#   (the paper's n = 30 in the `mnist` profile), read from the same cached table;
# * the **exact ODE** classifier (`sbgc.method.classify`) with fewer probes, at the paper's
#   tolerance and looser ones;
# * the **variational bound** classifier (`sbgc.method.bound`): the continuous-time lower bound on
#   $\log p(x \mid y)$ of Song, Durkan, Murray & Ermon (2021), estimated from $K$ plain forward passes
#   per class, $K$ = 10 … 1000; and the same estimator with uniform-in-$t$ weighting (not a bound;
#   chapter 06 finds it the better classifier at equal $K$);
# * either with **class pruning**: $K_1$ passes for every class, then $K_2$ more for the best few.

# %% tags=["parameters"]
profile = "ci"
overrides = {}  # e.g. {"n_images": 20, "ode.rtol": 1e-3}; knobs: sbgc.book.profiles
cache = "use"  # results-cache/: "use", "read-only" or "recompute" (sbgc.cache.MODES)

# %% tags=["hide-cell"]
from sbgc.book.provenance import setup_jax

setup_jax()  # persistent compilation cache shared by the chapters

import jax
import numpy as np
from IPython.display import Markdown, display

from sbgc.cache import CacheKey, chapter_cache
from sbgc.book.profiles import chapter_params
from sbgc.book.provenance import collect_provenance, write_results
from sbgc.data.datasets import describe, evaluation_split, sample_indices
from sbgc.experiments import compute
from sbgc.experiments import converged as cv
from sbgc.report import cpu_trained_note
from sbgc.stats import mean_estimate
from sbgc.train.pretrained import load_model

P = chapter_params("07_compute", profile, overrides)
C = chapter_cache(cache)
key = jax.random.key(P.seed)
display(Markdown(P.to_markdown()))

# %% [markdown]
# ## The bound, and what it costs
#
# With the forward kernel $x_t = m(t)\,x_0 + \sigma(t)\,z$, the generative model behind the bound
# is the reverse-time SDE driven by the learned score from $x_T \sim \mathcal{N}(0, I)$ down to
# $t = \varepsilon$, followed by a Gaussian *decoder* for the last stretch $[0, \varepsilon]$,
# $p(x_0 \mid x_\varepsilon) = \mathcal{N}\big(x_0;\, (x_\varepsilon + \sigma_\varepsilon^2 s_\theta)/m_\varepsilon,\,
# (\sigma_\varepsilon/m_\varepsilon)^2 I\big)$ (score_flow's treatment of $[0, \varepsilon]$).
# Jensen's inequality over the forward path and Girsanov's theorem give, per image and class,
#
# $$
# \begin{aligned}
# \log p_\theta(x_0 \mid y) \;\ge\;
# &\underbrace{-\tfrac D2 \log\frac{2\pi\sigma_\varepsilon^2}{m_\varepsilon^2}
#   - \tfrac12\,\mathbb{E}\,\big\|\sigma_\varepsilon s_\theta(x_\varepsilon, \varepsilon, y) + z\big\|^2}
#   _{\text{decoder, } [0,\,\varepsilon]}
# \;-\; \underbrace{\mathrm{KL}\big(q(x_T \mid x_0)\,\|\,\mathcal{N}(0, I)\big)}_{\text{prior, closed form}} \\
# &-\; \underbrace{\tfrac Z2\, \mathbb{E}_{t \sim w/Z}\, \mathbb{E}_z
#   \big\|\sigma(t)\, s_\theta(x_t, t, y) + z\big\|^2}_{\text{diffusion, } [\varepsilon,\,T]},
# \end{aligned}
# $$
#
# with $w = g^2/\sigma^2$ and $Z = \int_\varepsilon^T w\,\mathrm{d}t$. The diffusion term is the
# training loss of chapter 1 with the training's importance sampling of $t$; the decoder term is
# the same denoising error at $t = \varepsilon$ plus a constant. `sbgc.method.bound` derives each term
# (and why it equals score_flow's form in expectation) in its docstring.
#
# * **Estimator.** $K$ times per image from the importance distribution, stratified (one per
#   stratum of its cumulative), one noise per time, one more for the decoder: $K + 1$ forward
#   passes per class. The *same* times and noises serve all ten classes of an image (common random
#   numbers), so class differences carry no independent sampling noise. A control variate
#   $\gamma(t)(\|z\|^2 - D)$, of mean zero, removes the noise of the part of $z$ the network cannot
#   predict; it cancels between classes anyway.
# * **Pruning.** $K_1$ passes for every class, keep the best `keep` classes, $K_2$ further passes
#   (fresh draws) for those; the decision is the argmax over the kept classes.
# * **A lower bound, of a different density.** The bound is on the density of the reverse SDE +
#   decoder, not on the probability-flow ODE's density; the two coincide for the exact score.
#   `tests/test_bound.py` checks on closed-form Gaussian classes that the estimate converges to the
#   closed-form bound, never exceeds its model's density beyond its error bar, and that the pruned
#   classifier reaches the closed-form Bayes accuracy; and, on the `ci` network, that the bound lies
#   below the ODE log-likelihood.
#
# **Counting the cost.** Every count below comes from the code, not from a formula for what it
# should be. For the bound, `nfe` counts the forward passes evaluated. For the ODE, the solver
# counts its vector-field evaluations; each evaluates the network once, linearised, and pushes one
# tangent per probe through it (all probes share one trajectory), so it costs $1 + n$ network
# passes. The plots use passes; the table gives both, and the cost ratio below is stated against
# either count.

# %%
model = load_model(P.checkpoint)
data = evaluation_split(P.data)
chosen = sample_indices(len(data), P.n_images, P.seed)  # chapter 06's nested sample: its first images
x, y = data.images[chosen], data.labels[chosen].astype(np.int32)
data_source = cv.sample_source(data, P.seed)
prov = collect_provenance(P, data_source=f"{data_source}, the first {len(chosen)} images", checkpoint=model.path,
                          sample_sizes={"images": len(chosen), "reference probes": P.reference.n_probes})  # fmt: skip
model_note = cpu_trained_note(model.meta)
device = f"{jax.devices()[0].device_kind} ({jax.devices()[0].platform})"
display(Markdown(P.notice(model.meta) + f"\n\nScore model: {model.describe()}. Device: {device}.\n\n"
                 + prov.line(model_note)))

# %% [markdown]
# ## The frontier: accuracy against network passes
#
# Every setting classifies the same images with the same key, so the ODE and the bound see the
# same dequantization noise. The reference (its 95 % interval shaded) is chapter 06's table: its
# own random numbers, its wall time measured block by block when it was computed. Wall times include
# one-off JIT compilation (a large share on a few images; negligible on hundreds) and depend on the
# state of the persistent compilation cache.

# %%
entries = []


def point(fn, **setting):
    """One frontier point through the results cache (keyed by its setting, the seed and the images)."""
    key_ = CacheKey(f"frontier_{fn.__name__}", 1, {"seed": P.seed, **setting}, model.sha256, data_source, chosen)
    entry = C.get(key_, lambda: fn(model.score_fn, model.sde, x, y, key, **setting).to_arrays())
    entries.append(entry)
    return compute.FrontierPoint.from_arrays(entry.arrays)


common = dict(eps=P.eps)
ode_points = [point(compute.ode_point, n_probes=n, rtol=rtol, chunk_size=P.ode_chunk, **common)
              for rtol in P.ode_rtols for n in P.ode_probes]  # fmt: skip
bound_kw = dict(sampling=P.sampling, chunk_size=P.bound_chunk, **common)
bound_points = [point(compute.bound_point, n_times=k, weighting=w, **bound_kw) for w in P.weightings for k in P.bound_times]
pruned_points = [point(compute.pruned_point, first_times=k1, keep=m, second_times=k2, weighting=w, **bound_kw)
                 for w in P.weightings for k1, m, k2 in P.pruning]  # fmt: skip
points = ode_points + bound_points + pruned_points
ref_scorer = P.reference.scorer()
ref_table = cv.ode_probe_table(model, data, chosen, ref_scorer, C, seed=P.seed, data_source=data_source,
                               block=P.reference_block)  # fmt: skip
entries += list(ref_table.entries)
reference = compute.table_point(ref_table, ref_scorer, y, f"reference: ODE, n = {ref_scorer.n_probes}, rtol {P.reference.rtol:g}")
fig = compute.plot_frontier(points, reference, f"{len(chosen)} {describe(data).split(' (')[0]} images, {model.path.name}")
display(Markdown(compute.frontier_table([reference] + points) + "\n\nWall times are those of the run that computed "
                 "each point (sbgc.cache records them).\n\n" + prov.line(model_note, entries)))

# %% [markdown]
# ## Bits/dim: the price of the bound
#
# The bound can rank classes, but as a likelihood it is only a bound: on the same images and the
# true class, its bits/dim against the exact ODE's (the reference), with the bound (likelihood
# weighting) from the largest $K$. The uniform-weighted score is not a bound and has no bits/dim. Error bars: the bound's Monte-Carlo standard
# error; the ODE's probe standard error (none with one probe). Points above the diagonal are
# images where the bound is worse than the exact value.

# %%
best_bound = max((p for p in bound_points if p.method == "bound"), key=lambda p: p.settings["n_times"])
gap_bpd = best_bound.true_bpd - reference.true_bpd  # [N]
gap = mean_estimate(gap_bpd) if gap_bpd.size > 1 else None
below = np.mean(best_bound.true_log_p + 2 * best_bound.true_log_p_se < reference.true_log_p)
fig = compute.plot_bound_gap(reference, best_bound, "true class, same images and dequantization")
gap_text = (f"{gap.value:.3f} bits/dim (95 % interval {gap.lo:.3f} – {gap.hi:.3f}, {gap.n} images)" if gap
            else f"{gap_bpd[0]:.3f} bits/dim (one image)")  # fmt: skip
display(Markdown(
    f"Mean bits/dim of the true class: exact ODE ({reference.label}) {reference.true_bpd.mean():.3f}, bound "
    f"({best_bound.label}) {best_bound.true_bpd.mean():.3f}. Gap, bound minus exact: **{gap_text}**. On "
    f"{below:.0%} of the images the bound lies below the exact value by more than twice its standard error.\n\n"
    + prov.line(model_note, entries)
))

# %% [markdown]
# ## Which point for which job
#
# The reference is again chapter 06's converged estimator. A setting "matches" it by chapter 06's rule: its
# accuracy on the same images is at least the reference's less `tolerance` (a 95 % interval over 100 images
# spans about eight points, far too wide to call two classifiers equal).

# %%
cheap = compute.cheapest_match(points, reference, tuple(m for m in compute.METHODS if m != "ODE"), P.tolerance)
cheap_any = compute.cheapest_match(points, reference, compute.METHODS, P.tolerance)
ratio_passes = cheap.passes.mean() / reference.passes.mean() if cheap else None
ratio_evals = cheap.passes.mean() / reference.evaluations.mean() if cheap else None
goal_met = cheap is not None and ratio_evals <= 0.1
table = compute.comparison_table([("reference (exact ODE, converged)", reference), ("cheapest matching bound setting", cheap),
                               ("cheapest matching setting of any kind", cheap_any)])  # fmt: skip
ratio_text = (f"Measured cost ratio: {ratio_evals:.3f} of the reference's score evaluations per image "
              f"({ratio_passes:.4f} of its network passes, the probes' tangent passes included)." if cheap
              else "No bound setting matched the reference.")  # fmt: skip
display(Markdown(
    f"{table}\n\n**Goal** (at least the reference's accuracy less {100 * P.tolerance:.1f} points on the same images, "
    f"with at most one tenth of its score evaluations per image): **{'met' if goal_met else 'not met'}** in this run. {ratio_text}\n\n"
    + prov.line(model_note, entries)
))

# %% [markdown]
# **How to read this for a job** (the measured points above are what the advice rests on; at the
# `ci` profile they are two images and cannot support it):
#
# * **Screening a dataset** (accuracy over thousands of images, or a first look at a new model):
#   the cheapest *matching* setting of the table, in practice the pruned bound. Its decisions carry
#   Monte-Carlo noise, so report its accuracy with the binomial interval and spot-check a subset
#   against the exact ODE.
# * **A headline number**: the exact ODE at the paper's protocol (30 probes, rtol = atol =
#   $10^{-5}$) for bits/dim, always, since the bound overstates bits/dim by the gap measured above.
#   For accuracy, the bound is acceptable only where this page shows it matching the reference on
#   enough images.
# * **An attack's inner loop**: the bound with small $K$ and common random numbers. Its gradient is
#   ordinary back-propagation through $10(K + 1)$ forward passes, where the ODE needs the adjoint
#   solve with Hessian-vector products (the paper's 90 minutes per step). An attack that defeats
#   the bound-based decision must still be checked against the exact-ODE decision at the end, and
#   a robust-looking result under a noisy bound is expected from gradient noise alone: use enough
#   $K$ that the gradient's sign is stable.

# %%
numbers = {
    "points": [p.summary() for p in points],
    "reference": reference.summary(),
    "cheapest_matching_bound": cheap.summary() if cheap else None,
    "match_tolerance": P.tolerance,  # matching: accuracy at least the reference's less this, same images
    "cost_ratio_vs_reference_evaluations": ratio_evals,
    "cost_ratio_vs_reference_passes": ratio_passes,
    "goal_met": goal_met,
    "bound_minus_exact_bpd_mean": float(gap_bpd.mean()),
    "bound_minus_exact_bpd_ci95": [gap.lo, gap.hi] if gap else None,
    "fraction_bound_below_exact": float(below),
    "images": chosen, "device": device, "checkpoint": model.describe(), "cache": [e.record for e in entries],
}  # fmt: skip
path = write_results(numbers, prov)
