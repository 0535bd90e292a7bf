"""What a classification costs (the book chapter of that name): the accuracy–compute frontier.

Each :class:`FrontierPoint` is one classifier setting evaluated on the same N images: the exact
probability-flow ODE (:mod:`sbgc.method.likelihood`, n probes, tolerance rtol), the variational
bound (:mod:`sbgc.method.bound`, K times, likelihood weighting), the uniform-in-t denoising score
(the same estimator with uniform weighting: not a bound), or either with class pruning; with its
decisions, its cost in network passes and the true class's log p. The reference is the converged
estimator of chapter 06 (:func:`table_point`: the ODE with all the probes of its table). This module
compares them (the cheapest setting that matches the reference's accuracy), tabulates and plots them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from sbgc.method.bound import BoundSettings
from sbgc.method.likelihood import SolverSettings, bits_per_dim
from sbgc.method.scorers import Bound, Ode, Pruned, all_classes
from sbgc.report import markdown_table

# --- the accuracy–compute frontier (used by the book chapter "What a classification costs") --------
@dataclasses.dataclass(frozen=True)
class FrontierPoint:
    """One classifier setting evaluated on N images: decisions, cost and the true class's log p.

    ``passes`` counts network passes per image: forward passes for the bound; for the ODE each
    vector-field evaluation is one linearised forward pass plus one tangent pass per probe, so
    passes = (1 + n) · evaluations. ``evaluations`` is the solver's count (ODE) or = ``passes``.
    """

    method: str  # one of METHODS
    label: str  # e.g. "n = 3, rtol 1e-2"
    settings: dict
    correct: np.ndarray  # [N] bool
    passes: np.ndarray  # [N] network passes per image (all classes), counted
    evaluations: np.ndarray  # [N] score evaluations per image, counted
    seconds: float  # wall time of the whole run (N images), compilation included
    true_log_p: np.ndarray  # [N] log p(x | true y) (ODE) or its bound, nats
    true_log_p_se: np.ndarray  # [N] its standard error (NaN for a one-probe ODE)
    dim: int

    @property
    def n_images(self) -> int:
        return int(self.correct.size)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct))

    def accuracy_interval(self, level: float = 0.95) -> tuple[float, float]:
        """Clopper–Pearson interval of the accuracy."""
        from sbgc.stats import binomial_interval

        return binomial_interval(int(np.sum(self.correct)), self.n_images, level)

    @property
    def true_bpd(self) -> np.ndarray:
        return bits_per_dim(self.true_log_p, self.dim)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The point as numpy arrays (strings and the settings' JSON as 0-d unicode arrays: no pickle)."""
        import json

        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "settings"}
        return {**arrays, "settings": np.asarray(json.dumps(self.settings, sort_keys=True))}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "FrontierPoint":
        """Inverse of :meth:`to_arrays`."""
        import json

        return cls(method=str(arrays["method"]), label=str(arrays["label"]), settings=json.loads(str(arrays["settings"])),
                   correct=arrays["correct"], passes=arrays["passes"], evaluations=arrays["evaluations"],
                   seconds=float(arrays["seconds"]), true_log_p=arrays["true_log_p"],
                   true_log_p_se=arrays["true_log_p_se"], dim=int(arrays["dim"]))

    def summary(self) -> dict:
        """A JSON-ready record of the point."""
        lo, hi = self.accuracy_interval()
        return {
            "method": self.method, "label": self.label, "settings": dict(self.settings), "n_images": self.n_images,
            "accuracy": self.accuracy, "accuracy_ci95": [lo, hi],
            "passes_per_image_mean": float(self.passes.mean()), "passes_per_image_max": float(self.passes.max()),
            "evaluations_per_image_mean": float(self.evaluations.mean()),
            "seconds_per_image": self.seconds / self.n_images,
            "true_class_bpd_mean": float(self.true_bpd.mean()) if self.method in DENSITY_METHODS else None,
        }  # fmt: skip


def scorer_point(scorer, method: str, label: str, settings: dict, score_fn, sde, x, y, key, *,
                 n_classes: int = 10) -> FrontierPoint:  # fmt: skip
    """Any scorer (:mod:`sbgc.method.scorers`) as a frontier point on images x [N, ...] with labels y [N]:
    its decisions, counted passes and evaluations, wall time and the true class's score."""
    return scores_point(scorer.scores(score_fn, sde, x, key, n_classes=n_classes), method, label, settings, y)


def scores_point(res, method: str, label: str, settings: dict, y) -> FrontierPoint:
    """A :class:`sbgc.method.scorers.ClassScores` of N images with labels y [N] as a frontier point."""
    y = np.asarray(y)
    rows = np.arange(y.size)
    return FrontierPoint(method, label, settings, res.predict() == y, res.passes, res.nfe, res.seconds,
                         res.log_p[rows, y], res.log_p_se[rows, y], res.dim)  # fmt: skip


def table_point(table, scorer: Ode, labels: np.ndarray, label: str) -> FrontierPoint:
    """The reference as a frontier point: chapter 06's table (:class:`sbgc.experiments.converged.ProbeTable`) of
    the ODE ``scorer``, every class of each image, with all its probes; seconds: its blocks' wall times."""
    res = scorer.class_scores(table.result, all_classes(*table.result.log_p.shape), float(np.sum(table.seconds)))
    return scores_point(res, "ODE", label, {"n_probes": scorer.n_probes, "table": "chapter 06's reference"}, labels)


def bound_method(weighting: str, pruned: bool = False) -> str:
    """The frontier's name of a bound setting: the likelihood weighting is the bound, the uniform one is not."""
    name = "bound" if weighting == "likelihood" else "uniform-t score"
    return f"{name} + pruning" if pruned else name


def ode_point(score_fn, sde, x, y, key, *, n_probes: int, rtol: float, chunk_size: int, eps: float = 1e-5) -> FrontierPoint:
    """Exact-ODE classifier (:class:`sbgc.method.scorers.Ode`, dopri5 at rtol = atol, start time ``eps``)."""
    scorer = Ode(SolverSettings(rtol=rtol, atol=rtol, eps=eps), n_probes=n_probes, chunk_size=chunk_size)
    settings = {"n_probes": n_probes, "rtol": rtol, "atol": rtol, "eps": eps}
    return scorer_point(scorer, "ODE", f"n = {n_probes}, rtol {rtol:g}", settings, score_fn, sde, x, y, key)


def bound_point(score_fn, sde, x, y, key, *, n_times: int, chunk_size: int, **kwargs) -> FrontierPoint:
    """Bound classifier (:class:`sbgc.method.scorers.Bound`) with K = ``n_times``; ``kwargs``: the other
    :class:`~sbgc.method.bound.BoundSettings` fields (flat, as the chapter's cache keys name them)."""
    scorer = Bound(BoundSettings(n_times=n_times, **kwargs), chunk_size=chunk_size)
    return scorer_point(scorer, bound_method(scorer.settings.weighting), f"K = {n_times}", {"n_times": n_times, **kwargs},
                        score_fn, sde, x, y, key)  # fmt: skip


def pruned_point(score_fn, sde, x, y, key, *, first_times: int, keep: int, second_times: int, chunk_size: int,
                 **kwargs) -> FrontierPoint:  # fmt: skip
    """Pruned bound classifier (:class:`sbgc.method.scorers.Pruned` over two bounds: the draws combine)."""
    first = Bound(BoundSettings(n_times=first_times, **kwargs), chunk_size=chunk_size)
    scorer = Pruned(first, dataclasses.replace(first, settings=dataclasses.replace(first.settings, n_times=second_times)),
                    keep)  # fmt: skip
    settings = {"first_times": first_times, "keep": keep, "second_times": second_times, **kwargs}
    return scorer_point(scorer, bound_method(first.settings.weighting, pruned=True),
                        f"K₁ = {first_times}, keep {keep}, K₂ = {second_times}", settings, score_fn, sde, x, y, key)  # fmt: skip


def cheapest_match(points: list[FrontierPoint], reference: FrontierPoint, methods: tuple[str, ...],
                   tolerance: float) -> FrontierPoint | None:  # fmt: skip
    """The point of ``methods`` with the fewest passes per image whose accuracy is at least the reference's less
    ``tolerance`` (the points and the reference on the same images: a paired comparison, chapter 06's rule);
    None if there is none."""
    ok = [p for p in points if p.method in methods and p.accuracy >= reference.accuracy - tolerance]
    return min(ok, key=lambda p: p.passes.mean()) if ok else None


def frontier_table(points: list[FrontierPoint]) -> str:
    """Markdown table: accuracy with its interval, passes and evaluations per image, wall time per image."""
    rows = []
    for p in points:
        lo, hi = p.accuracy_interval()
        rows.append((p.method, p.label, f"{p.accuracy:.1%} ({lo:.1%} – {hi:.1%})", f"{p.passes.mean():,.0f}",
                     f"{p.evaluations.mean():,.0f}", f"{p.seconds / p.n_images:.2f} s"))
    return markdown_table(("method", "setting", "accuracy (95 % interval)", "network passes / image",
                           "score evaluations / image", "wall time / image"), rows)


def comparison_table(rows: list[tuple[str, FrontierPoint | None]]) -> str:
    """Markdown table of named points (role, point or None): setting, accuracy, passes, wall time."""
    cells = []
    for role, p in rows:
        if p is None:
            cells.append((role, "none", "–", "–", "–", "–"))
            continue
        lo, hi = p.accuracy_interval()
        cells.append((role, p.method, p.label, f"{p.accuracy:.1%} ({lo:.1%} – {hi:.1%})", f"{p.passes.mean():,.0f}",
                      f"{p.seconds / p.n_images:.2f} s"))
    return markdown_table(("", "method", "setting", "accuracy (95 % interval)", "network passes / image",
                           "wall time / image"), cells)


_METHOD_STYLE = {"ODE": ("C0", "o"), "bound": ("C3", "s"), "bound + pruning": ("C2", "^"),
                 "uniform-t score": ("C1", "D"), "uniform-t score + pruning": ("C4", "v")}
METHODS = tuple(_METHOD_STYLE)
DENSITY_METHODS = ("ODE", "bound", "bound + pruning")  # the rest score classes without a density: no bits/dim


def plot_frontier(points: list[FrontierPoint], reference: FrontierPoint | None, title: str):
    """Accuracy (Clopper–Pearson 95 % bars) against network passes per image (log scale; bars:
    min–max over images) and against wall time per image; the reference's interval shaded."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    if reference is not None:
        for ax in axes:
            ax.axhspan(*reference.accuracy_interval(), color="C0", alpha=0.08, lw=0,
                       label=f"95 % interval of the reference ({reference.label})")  # fmt: skip
    offsets = [(5, 5), (5, -11), (5, 15), (5, -21)]
    for method, (colour, marker) in _METHOD_STYLE.items():
        group = [p for p in points if p.method == method]
        if not group:
            continue
        acc = np.array([p.accuracy for p in group])
        yerr = np.abs(np.array([p.accuracy_interval() for p in group]).T - acc)
        cost = np.array([p.passes.mean() for p in group])
        xerr = np.abs(np.array([[p.passes.min(), p.passes.max()] for p in group]).T - cost)
        secs = np.array([p.seconds / p.n_images for p in group])
        kw = dict(color=colour, marker=marker, ls="none", capsize=3, label=method)
        axes[0].errorbar(cost, acc, yerr=yerr, xerr=xerr, **kw)
        axes[1].errorbar(secs, acc, yerr=yerr, **kw)
        for i, (p, c) in enumerate(zip(group, cost)):
            axes[0].annotate(p.label, (c, p.accuracy), fontsize=6.5, color=colour, xytext=offsets[i % len(offsets)],
                             textcoords="offset points")  # fmt: skip
    axes[0].set(xscale="log", xlabel="network passes per image (10 classes, counted)", ylabel="accuracy",
                ylim=(-0.05, 1.05))  # fmt: skip
    axes[1].set(xscale="log", xlabel="wall time per image [s] (compilation included)")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_bound_gap(ode: FrontierPoint, bound: FrontierPoint, title: str):
    """Bits/dim of the true class per image: bound against exact ODE, with error bars and y = x."""
    import matplotlib.pyplot as plt

    scale = ode.dim * math.log(2.0)
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    xerr = None if np.all(np.isnan(ode.true_log_p_se)) else ode.true_log_p_se / scale
    ax.errorbar(ode.true_bpd, bound.true_bpd, xerr=xerr, yerr=bound.true_log_p_se / scale, ls="none", marker="o",
                ms=4, capsize=2, color="C3")  # fmt: skip
    lims = [min(ode.true_bpd.min(), bound.true_bpd.min()), max(ode.true_bpd.max(), bound.true_bpd.max())]
    pad = 0.05 * (lims[1] - lims[0] + 1e-3)
    ax.plot([lims[0] - pad, lims[1] + pad], [lims[0] - pad, lims[1] + pad], color="k", lw=0.8, label="bound = exact")
    ax.set(xlabel=f"exact ODE bits/dim ({ode.label})", ylabel=f"bound bits/dim ({bound.label})", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
