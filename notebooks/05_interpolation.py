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
# # Likelihood along interpolations (paper Fig. 2)
#
# Fetaya et al. (2020) found that a GLOW generative classifier gives the pixel-space blend of two
# test images a *higher* likelihood than the images themselves: along the line
# $x(t) = t\,x_A + (1-t)\,x_B$ the log-likelihood was concave. A blend of two photographs is not a
# natural image, so a good density model should do the opposite. The paper measures (§3.4, eq. 4)
#
# $$
# f(t) = \log p\big(t\,x_A + (1 - t)\,x_B\big), \qquad t \in [0, 1],
# $$
#
# at 24 values of $t$ over 500 random test-image pairs and reports that $f$ is **convex** for the
# score-based model (**paper**, Fig. 2: mean ± std over pairs). This chapter measures the same
# curve and then *tests* convexity pair by pair, with confidence intervals, instead of reading it
# off the mean curve.

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

from sbgc.book.profiles import chapter_params
from sbgc.book.provenance import collect_provenance, write_results
from sbgc.cache import CacheKey, cached_tuple, chapter_cache
from sbgc.data.datasets import class_names, describe, evaluation_split
from sbgc.experiments import interpolation as interp
from sbgc.report import cpu_trained_note
from sbgc.train.pretrained import load_model

P = chapter_params("05_interpolation", profile, overrides)
C = chapter_cache(cache)
key = jax.random.key(P.seed)
display(Markdown(P.to_markdown()))

# %% [markdown]
# ## What exactly is computed
#
# * **The density.** $p$ is the classifier's unconditional density, the mixture of its class
#   densities with a uniform prior, $p(x) = \frac{1}{10} \sum_y p(x \mid y)$
#   (`sbgc.method.classify.log_marginal`; the paper's sum is larger by $\log 10$ nats at every $t$, which
#   changes no shape). Each $\log p(x \mid y)$ comes from the probability-flow ODE
#   (`sbgc.method.likelihood`), in nats of images scaled to $[0, 1]$.
# * **Continuous endpoints.** The model's density lives on dequantized images. Each pair is
#   dequantized once, with *one* uniform noise draw $u$ shared by both endpoints,
#   $x_A = (\text{pixels}_A + u)/256$ and $x_B = (\text{pixels}_B + u)/256$, so every point of the path
#   carries the same noise and the path is a straight line in the space the density is defined on
#   (`sbgc.experiments.interpolation.dequantize_pairs`, `interpolate`). The interpolated floats are passed to
#   the likelihood as they are (no second dequantization).
# * **Common random numbers.** All classes of an image share the Hutchinson probes, and pair $p$
#   gets the *same* probes at every $t$ (`path_log_likelihoods` solves $t$ by $t$ with one key).
#   The probe noise of $f$ is then correlated along the path and largely cancels in the
#   differences that measure curvature.
# * **The images** are pairs drawn at random, without repetition, from a test split with exact
#   pixels (the profile's `data`: the MNIST test split, or the first 846 CIFAR-10 test images — the
#   full CIFAR-10 test set on this machine is a JPEG-recompressed copy, whose smoothed pixels would
#   shift every likelihood).
#
# **Convexity, measured.** For each pair the chord is the straight line between $f(0)$ and $f(1)$.
# A convex $f$ lies below its chord; a concave one above it. Per pair we record
# (`sbgc.experiments.interpolation.convexity_statistics`):
#
# * the *midpoint gap* $\tfrac12\big(f(0) + f(1)\big) - f(\tfrac12)$ (linearly interpolated between
#   the two nearest values of $t$ when $t = \tfrac12$ is not on the grid, as for 24 points);
# * the *mean gap*, chord minus $f$ averaged over $t$;
# * the *mean second difference*, the average of $f''(t_i) \approx
#   \big(f(t_{i+1}) - 2 f(t_i) + f(t_{i-1})\big)/h^2$ over the grid.
#
# Over pairs we report the fraction whose midpoint lies below the chord with an exact
# (Clopper–Pearson) 95 % interval and the two-sided sign test against one half, and the means of
# the gaps and second differences with Student-$t$ 95 % intervals. The verdict is "convex" only if
# the fraction's interval lies above one half *and* the intervals of the mean midpoint gap and the
# mean second difference lie above zero ("concave" symmetrically; otherwise "undecided").

# %%
model = load_model(P.checkpoint)
data = evaluation_split(P.data)
names = class_names(P.data)
pairs = interp.random_pairs(len(data), P.n_pairs, P.seed)  # [P, 2] indices (A, B)
x_a, x_b = interp.dequantize_pairs(data.images[pairs[:, 0]], data.images[pairs[:, 1]], jax.random.fold_in(key, 0))
ts = interp.interpolation_times(P.n_t)
paths = interp.interpolate(x_a, x_b, ts)  # [P, T, H, W, C] in [0, 1]
data_source = f"{describe(data)}, {P.n_pairs} random pairs"
prov = collect_provenance(P, data_source=data_source, checkpoint=model.path,
                          sample_sizes={"pairs": P.n_pairs, "t values": P.n_t, "probes": P.ode.n_probes})  # fmt: skip
model_note = cpu_trained_note(model.meta)
display(Markdown(P.notice(model.meta) + f"\n\nScore model: {model.describe()}, {model.meta.get('n_params', 0):,} "
                 "parameters.\n\n" + prov.line(model_note)))

# %% [markdown]
# ## $f(t)$ over the pairs
#
# Left: $f(t)$, mean ± one standard deviation over pairs (the paper's Fig. 2), single pairs in
# grey. Most of the spread is the pairs' different likelihood *levels*; the right panel removes
# them by showing each pair's gap to its own chord. A convex $f$ gives gaps above zero.

# %%
solver = P.ode.likelihood_kwargs()
curves_key = CacheKey("interpolation_curves", 1, {"knobs": P.knobs, "stream": 1}, model.sha256, data_source, pairs.ravel())
curves, entry = cached_tuple(C, curves_key, lambda: interp.path_log_likelihoods(
    model.score_fn, model.sde, paths, ts, jax.random.fold_in(key, 1), **solver), interp.PathLikelihoods)
fig = interp.plot_curves(ts, curves.log_p)
display(Markdown(
    f"{P.n_pairs} pairs × {P.n_t} values of t × 10 classes solved in {curves.seconds:.0f} s "
    f"({curves.nfe.mean():.0f} score evaluations per solve on average; rtol = {P.ode.rtol:g}, atol = {P.ode.atol:g}). "
    f"Mean f at the endpoints: {curves.log_p[:, [0, -1]].mean():.1f} nats "
    f"({curves.bpd()[:, [0, -1]].mean():.2f} bits/dim).\n\n" + prov.line(model_note, entry)
))

# %% [markdown]
# ## Is $f$ convex? The test over pairs

# %%
stats = interp.convexity_statistics(curves.log_p, ts)
probe_se = interp.probe_standard_error(interp.curvature_per_probe(curves)) if P.ode.n_probes > 1 else None
se_text = ("One probe per solve: the Hutchinson standard error of a pair's curvature is not estimable" if probe_se is None
           else f"Hutchinson standard error of one pair's mean second difference (from its {P.ode.n_probes} probes, root mean "
                f"square over pairs): {np.sqrt(np.mean(probe_se**2)):.3g} nats / t²")  # fmt: skip
fig = interp.plot_convexity(stats)
display(Markdown(
    stats.to_markdown() + f"\n\n**Verdict at 95 %: {stats.verdict()}** (paper, Fig. 2: convex, over 500 pairs). "
    f"{se_text}.\n\n" + prov.line(model_note, entry)
))

# %% [markdown]
# ## Interpolation strips
#
# A few pairs along their paths, each panel titled with its $f(t)$ in nats.

# %%
fig = interp.plot_strips(np.asarray(paths), ts, curves.log_p, n_show=P.n_strips)
strip_names = [f"pair {i}: {names[data.labels[a]]} (x_A, test image {a}) → {names[data.labels[b]]} "
               f"(x_B, test image {b})" for i, (a, b) in enumerate(pairs[: P.n_strips])]  # fmt: skip
display(Markdown("\n".join(f"- {s}" for s in strip_names) + "\n\n" + prov.line()))

# %%
numbers = {
    "convexity": stats.as_dict(),
    "ts": ts, "mean_f_nats": curves.log_p.mean(axis=0), "std_f_nats": curves.log_p.std(axis=0),
    "mean_chord_gap_nats": interp.chord_gaps(curves.log_p, ts).mean(axis=0),
    "pairs": pairs, "seconds": curves.seconds, "mean_nfe_per_solve": float(curves.nfe.mean()),
    "curvature_probe_se_rms": None if probe_se is None else float(np.sqrt(np.mean(probe_se**2))),
    "checkpoint": model.describe(), "cache": entry.record,
}  # fmt: skip
path = write_results(numbers, prov)

# %% [markdown]
# ## Reading the result
#
# The paper's claim is about its 67M-parameter model after 950,000 training steps: it assigns
# pixel-space blends of two test images lower likelihood than the chord between the images
# (convex $f$), unlike GLOW. The verdict above is for the network named in the provenance line and
# for the sample sizes of this run's profile; at the `ci` profile it checks the machinery
# (paths, shared noise, common random numbers, the statistics), not the claim.
#
# Two things the mean curve alone cannot show, and the per-pair measures do: whether *most pairs*
# are convex or a few strongly convex pairs dominate the mean (the fraction below the chord and
# its sign test), and whether the curvature is resolved above the trace estimator's noise (the
# Hutchinson standard error of a pair's second difference, compared with the spread over pairs).
