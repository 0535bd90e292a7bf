"""One interface for every way of scoring the classes of an image.

A generative classifier decides argmax_y S(x, y) for a class score S. The paper's S is log p(x | y) by
the probability-flow ODE (:mod:`sbgc.method.likelihood`, Hutchinson probes); the variational bound
(:mod:`sbgc.method.bound`) estimates a lower bound on it, or with the uniform weighting a weighted
denoising score; the scipy reference (:mod:`sbgc.checks.reference`) solves the ODE as score_sde does;
pruning (:class:`Pruned`) scores every class cheaply and refines the best few with another scorer.
Each is a *scorer*: a frozen dataclass whose fields are its settings, so that

* ``scorer.scores(score_fn, sde, x, key, n_classes=K)`` gives a :class:`ClassScores` table
  (log-scores [B, K] with standard errors, network passes, seconds) of uint8 pixels (dequantized with
  the key) or float data in [0, 1] (used as given);
* ``scorer.pure(score_fn, sde, key, n_classes=K)`` gives a pure, differentiable JAX function
  ``f(x_unit [B, *shape], image_ids int [B], classes int [B, k] | None) -> (scores [B, k], ok [B, k])``
  for attacks, with the random numbers (probes, times, noises) of image id i held fixed, the same
  ones :meth:`scores` draws for the image at position i with the same key;
* ``scorer.describe()`` is the line a table or a page prints, and the scorer itself, written out by
  :class:`sbgc.cache.CacheKey`, is the key of a cached result (fields that do not change the numbers,
  such as ``chunk_size``, carry ``metadata={"cache_key": False}`` and stay out of it).

A new estimator is one class with these three methods (and its tests); every caller that takes a
scorer (``python -m sbgc.experiments.evaluate``, the chapters, the attacks) then runs it.

Random numbers: every scorer draws image i's numbers from ``fold_in(·, i)`` of its key (common random
numbers across the classes of an image; a block of a sample evaluated with ``first_image`` gets the
draws it has in the whole sample where the estimator supports it).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from sbgc.method.bound import BoundSettings, bound_random_numbers, class_log_bounds_pure, log_bound_table, pruned_class_bounds
from sbgc.method.classify import class_log_likelihoods_pure, log_marginal
from sbgc.method.likelihood import (
    PROBES,
    DataScaling,
    Probe,
    ScoreFn,
    SolverSettings,
    bits_per_dim,
    image_probes,
    log_likelihood_table,
)
from sbgc.method.numerics import highest_precision
from sbgc.method.sde import SDE

Array = jax.Array
PureScores = Callable[..., tuple[Array, Array]]  # (x_unit [B, *shape], image_ids [B], classes [B, k] | None)
NOT_IN_KEY = {"cache_key": False}  # dataclass field metadata: the field does not change the numbers


class ClassScores(NamedTuple):
    """Class scores of B images; ``log_p`` is log p(x | y) in nats of the [0, 1]-scaled data when
    ``is_log_density`` (or a bound on it, ``is_bound``), else a class score in nats (uniform weighting).

    log_p [B, C]: the score of class ``classes[b, c]`` (after pruning, the kept entries hold the second
    scorer's values, the others the first's); log_p_se [B, C]: its Monte-Carlo standard error
    (NaN where the estimator gives none, e.g. one Hutchinson probe); candidates [B, C] bool: the entries
    the decision is taken over (all, except after pruning); nfe [B]: score evaluations per image (the
    bound's forward passes; the ODE's vector-field evaluations, summed over classes); passes [B]: network
    passes per image (an ODE evaluation is one linearised forward pass plus one tangent pass per probe,
    or per dimension for the exact trace); seconds: wall time of the whole table, compilation included.
    """

    log_p: np.ndarray
    log_p_se: np.ndarray
    classes: np.ndarray  # [B, C] int
    candidates: np.ndarray  # [B, C] bool
    nfe: np.ndarray  # [B]
    passes: np.ndarray  # [B]
    seconds: float
    dim: int
    is_log_density: bool  # log_p estimates log p(x | y) itself (the ODE) ...
    is_bound: bool  # ... or a lower bound on it (the likelihood-weighted bound)

    def predict(self) -> np.ndarray:
        """argmax over the candidate classes: int [B] (class labels, not columns)."""
        col = np.argmax(np.where(self.candidates, self.log_p, -np.inf), axis=1)
        return self.classes[np.arange(len(col)), col]

    def bpd(self) -> np.ndarray:
        """Bits/dim of log_p [B, C] (of the discrete data); NaN for a score that is no density."""
        if not (self.is_log_density or self.is_bound):
            return np.full(self.log_p.shape, np.nan)
        return bits_per_dim(self.log_p, self.dim)

    def log_marginal(self) -> np.ndarray:
        """logsumexp_y log_p − log C: [B] (needs every class scored: C = K, no pruning)."""
        if not self.candidates.all():
            raise ValueError("log p(x) needs every class scored; this table was pruned")
        return log_marginal(self.log_p)


@runtime_checkable
class ClassScorer(Protocol):
    """What every scorer provides (module docstring)."""

    def scores(self, score_fn: ScoreFn, sde: SDE, x: Array | np.ndarray, key: Array, *, n_classes: int = 10,
               classes: np.ndarray | None = None, first_image: int = 0, progress: bool = False) -> ClassScores: ...  # fmt: skip

    def pure(self, score_fn: ScoreFn, sde: SDE, key: Array, *, n_classes: int = 10) -> PureScores: ...

    def describe(self) -> str: ...

    @property
    def gives_density(self) -> bool:
        """Whether :meth:`scores` gives log p(x | y), or a bound on it, for every class (bits/dim mean something)."""
        ...


def all_classes(b: int, n_classes: int) -> np.ndarray:
    """int [B, K]: every class for every image."""
    if not (isinstance(n_classes, (int, np.integer)) and n_classes >= 1):
        raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
    return np.tile(np.arange(n_classes, dtype=np.int32), (b, 1))


def is_pixels(x) -> bool:
    """uint8 pixels are dequantized ((x + u)/256, the key's first half); float data in [0, 1] is used as given."""
    return np.asarray(x).dtype == np.uint8


def classes_of(x, n_classes: int, classes) -> np.ndarray:
    """int [B, C]: ``classes`` as given, or every class of each of x's B images (None)."""
    b = int(np.shape(x)[0])
    return all_classes(b, n_classes) if classes is None else np.asarray(classes, np.int32)


@dataclasses.dataclass(frozen=True)
class Ode:
    """log p(x | y) by the probability-flow ODE (:func:`sbgc.method.likelihood.log_likelihood_table`):
    ``n_probes`` Hutchinson probes (of kind ``probe``) per (image, class), shared by the classes of an
    image, solved as ``solver`` says. The paper: dopri5, rtol = atol = 1e-5, n = 30 (Table 1)."""

    solver: SolverSettings = SolverSettings()
    n_probes: int = 1
    probe: Probe = "rademacher"
    data_scaling: DataScaling = "centered"
    chunk_size: int | None = dataclasses.field(default=None, metadata=NOT_IN_KEY)  # (image, class) rows per call

    def __post_init__(self):
        if not isinstance(self.solver, SolverSettings):
            raise TypeError(f"solver must be a SolverSettings, got {type(self.solver).__name__}")
        if not (isinstance(self.n_probes, (int, np.integer)) and self.n_probes >= 1):
            raise ValueError(f"n_probes must be a positive int, got {self.n_probes!r}")
        if self.probe not in PROBES:
            raise ValueError(f"probe must be one of {PROBES}, got {self.probe!r}")

    gives_density = True

    def describe(self) -> str:
        s = self.solver
        steps = f"{s.n_steps} fixed steps" if s.n_steps else f"rtol {s.rtol:g}, atol {s.atol:g}"
        probes = "exact trace" if self.probe == "exact" else f"{self.n_probes} {self.probe} probe(s)"
        return f"probability-flow ODE ({s.solver}, {steps}, eps {s.eps:g}), {probes}"

    def scores(self, score_fn, sde, x, key, *, n_classes=10, classes=None, first_image=0, progress=False) -> ClassScores:
        labels = classes_of(x, n_classes, classes)
        start = time.perf_counter()
        res = log_likelihood_table(score_fn, sde, x, labels, key, solver=self.solver, n_probes=self.n_probes,
                                   probe=self.probe, dequantize=is_pixels(x), data_scaling=self.data_scaling,
                                   chunk_size=self.chunk_size, progress=progress, first_image=first_image)  # fmt: skip
        return self.class_scores(res, labels, time.perf_counter() - start)

    def class_scores(self, res, labels: np.ndarray, seconds: float) -> ClassScores:
        """The :class:`ClassScores` of a likelihood table ``res`` of this scorer (leading axes [B, C], the
        classes ``labels`` [B, C]; e.g. a cached one): the probes' standard error, and each vector-field
        evaluation counted as one linearised pass plus one tangent pass per probe."""
        n = res.log_p_probes.shape[-1]
        se = res.log_p_probes.std(axis=-1, ddof=1) / np.sqrt(n) if n > 1 else np.full(res.log_p.shape, np.nan)
        nfe = np.asarray(res.nfe).sum(axis=1)
        tangents = res.dim if self.probe == "exact" else self.n_probes
        return ClassScores(np.asarray(res.log_p, np.float64), se, labels, np.ones(labels.shape, bool), nfe,
                           nfe * (1 + tangents), seconds, res.dim, True, False)  # fmt: skip

    def pure(self, score_fn, sde, key, *, n_classes=10) -> PureScores:
        """Probes of image id i from the probe key of :func:`sbgc.method.likelihood.prepare_batch`."""
        _, probe_key = jax.random.split(key)

        @highest_precision
        def f(x_unit, image_ids, classes=None):
            probes = None if self.probe == "exact" else image_probes(
                probe_key, jnp.asarray(image_ids, jnp.int32), self.n_probes, tuple(x_unit.shape[1:]), self.probe)
            return class_log_likelihoods_pure(score_fn, sde, x_unit.astype(jnp.float32), probes, n_classes=n_classes,
                                              solver=self.solver, data_scaling=self.data_scaling, classes=classes)  # fmt: skip

        return f


@dataclasses.dataclass(frozen=True)
class Bound:
    """The variational bound on log p(x | y), or with ``weighting="uniform"`` the uniform-in-t denoising
    score (:class:`sbgc.method.bound.BoundSettings`), K times shared by the classes of an image."""

    settings: BoundSettings = BoundSettings()
    data_scaling: DataScaling = "centered"
    chunk_size: int | None = dataclasses.field(default=512, metadata=NOT_IN_KEY)  # network passes per call

    def __post_init__(self):
        if not isinstance(self.settings, BoundSettings):
            raise TypeError(f"settings must be a BoundSettings, got {type(self.settings).__name__}")

    @property
    def gives_density(self) -> bool:
        return self.settings.is_bound

    def describe(self) -> str:
        return self.settings.describe()

    def scores(self, score_fn, sde, x, key, *, n_classes=10, classes=None, first_image=0, progress=False) -> ClassScores:
        if first_image:
            raise ValueError("the bound draws an image's times and noises by its position in the batch: evaluate "
                             "a block with its own key (first_image must be 0)")
        labels = classes_of(x, n_classes, classes)
        start = time.perf_counter()
        res = log_bound_table(score_fn, sde, x, labels, key, settings=self.settings, dequantize=is_pixels(x),
                              data_scaling=self.data_scaling, chunk_size=self.chunk_size, progress=progress)  # fmt: skip
        seconds = time.perf_counter() - start
        nfe = res.nfe.sum(axis=1)
        return ClassScores(res.log_p, res.log_p_se, labels, np.ones(labels.shape, bool), nfe, nfe, seconds, res.dim,
                           False, self.settings.is_bound)  # fmt: skip

    def pure(self, score_fn, sde, key, *, n_classes=10) -> PureScores:
        @highest_precision
        def f(x_unit, image_ids, classes=None):
            times, noises = bound_random_numbers(sde, key, image_ids, self.settings, tuple(x_unit.shape[1:]))
            return class_log_bounds_pure(score_fn, sde, x_unit.astype(jnp.float32), times, noises,
                                         settings=self.settings, n_classes=n_classes, classes=classes,
                                         data_scaling=self.data_scaling)  # fmt: skip

        return f


@dataclasses.dataclass(frozen=True)
class Pruned:
    """Class pruning over any scorers: ``first`` scores every class, ``second`` re-scores the ``keep``
    best of each image (its random numbers from ``fold_in(key, 1)``), and the decision is the argmax of
    the second scores over the kept classes. Two bounds that differ only in K combine their draws
    instead (:func:`sbgc.method.bound.pruned_class_bounds`: the kept classes average K₁ + K₂ times)."""

    first: Any  # ClassScorer
    second: Any  # ClassScorer
    keep: int = 2

    def __post_init__(self):
        for name in ("first", "second"):
            if not isinstance(getattr(self, name), ClassScorer):
                raise TypeError(f"{name} must be a scorer (scores, pure, describe), got {getattr(self, name)!r}")
        if not (isinstance(self.keep, (int, np.integer)) and self.keep >= 1):
            raise ValueError(f"keep must be a positive int, got {self.keep!r}")

    def _combined_bound(self) -> bool:
        a, b = self.first, self.second
        return (isinstance(a, Bound) and isinstance(b, Bound) and a.data_scaling == b.data_scaling
                and dataclasses.replace(a.settings, n_times=b.settings.n_times) == b.settings)  # fmt: skip

    gives_density = False  # the dropped classes are not scored again

    def describe(self) -> str:
        how = "their draws combined" if self._combined_bound() else "re-scored"
        return f"pruned: {self.first.describe()} for every class; the {self.keep} best {how} by {self.second.describe()}"

    def scores(self, score_fn, sde, x, key, *, n_classes=10, classes=None, first_image=0, progress=False) -> ClassScores:
        if classes is not None:
            raise ValueError("pruning scores every class first: classes must be None")
        if not 1 <= self.keep <= n_classes:
            raise ValueError(f"keep={self.keep} must lie in [1, n_classes={n_classes}]")
        if self._combined_bound():
            start = time.perf_counter()
            res = pruned_class_bounds(score_fn, sde, x, key, n_classes=n_classes, settings=self.first.settings,
                                      keep=self.keep, second_times=self.second.settings.n_times,
                                      dequantize=is_pixels(x), data_scaling=self.first.data_scaling, chunk_size=self.first.chunk_size,
                                      progress=progress)  # fmt: skip
            labels = all_classes(len(res.log_p), n_classes)
            return ClassScores(res.log_p, res.log_p_se, labels, res.kept, res.nfe, res.nfe, time.perf_counter() - start,
                               res.dim, False, self.first.settings.is_bound)  # fmt: skip
        one = self.first.scores(score_fn, sde, x, key, n_classes=n_classes, first_image=first_image, progress=progress)
        top = np.argsort(-one.log_p, axis=1, kind="stable")[:, : self.keep].astype(np.int32)  # [B, keep] = classes
        two = self.second.scores(score_fn, sde, x, jax.random.fold_in(key, 1), classes=top, first_image=first_image,
                                 progress=progress)  # fmt: skip
        rows = np.arange(len(top))[:, None]
        log_p, log_p_se, kept = one.log_p.copy(), one.log_p_se.copy(), np.zeros(one.log_p.shape, bool)
        log_p[rows, top], log_p_se[rows, top], kept[rows, top] = two.log_p, two.log_p_se, True
        return ClassScores(log_p, log_p_se, one.classes, kept, one.nfe + two.nfe, one.passes + two.passes,
                           one.seconds + two.seconds, two.dim, two.is_log_density, two.is_bound)  # fmt: skip

    def pure(self, score_fn, sde, key, *, n_classes=10) -> PureScores:
        raise NotImplementedError("a pruned scorer's class choice is not differentiable: attack its second scorer "
                                  "on the kept classes (pure(...)(x, ids, classes=top))")


def scorer_from_plain(d: dict) -> Any:
    """Rebuild a scorer from its written-out settings (:func:`sbgc.cache.plain` of it, e.g. in a results
    file): an :class:`Ode` has ``solver``, a :class:`Bound` ``settings``, a :class:`Pruned` ``first``."""
    if "first" in d:
        return Pruned(scorer_from_plain(d["first"]), scorer_from_plain(d["second"]), d["keep"])
    if "solver" in d:
        return Ode(**{**d, "solver": SolverSettings(**d["solver"])})
    if "settings" in d:
        return Bound(**{**d, "settings": BoundSettings(**d["settings"])})
    raise ValueError(f"not a scorer's settings: {sorted(d)}")
