"""Adversarial attacks on the score-based generative classifier (paper §3.3, Table 3).

The SBGC as a differentiable classifier
---------------------------------------
The logits of the generative classifier are its K class log-likelihoods,

    logits_y(x) = log p₀(x | y),   y = 0 … K−1,                                     (paper eq. 2)

each from one probability-flow solve (:func:`sbgc.method.classify.class_log_likelihoods_pure`), so that
softmax(logits) is the posterior p(y | x) under a uniform prior and ŷ = argmax_y log p₀(x | y). PGD
(Madry et al. 2018, through Foolbox as in the paper) ascends the cross-entropy of that softmax.

* **Input.** The attacked input is a float image x ∈ [0, 1]^D, ALREADY dequantized once (e.g.
  :func:`sbgc.method.likelihood.to_unit_interval` with a key): the attack moves this continuous point and it
  is not dequantized again.
* **Fixed probes.** The n Rademacher probes of each image are drawn ONCE (:func:`draw_attack_probes`)
  and kept for the whole attack and for every class of the image, so the attacked function is
  deterministic and its gradient is the gradient of one fixed function (common random numbers).
* **Gradient.** ``jax.grad`` through the diffrax solves with ``RecursiveCheckpointAdjoint``: reverse
  mode through the solver's steps ("discretise-then-optimise"), the exact derivative of the computed
  solution. The divergence term vᵀ(∂f̃/∂x)v is itself a derivative of the score network, so the
  input gradient takes second derivatives of the network (vector-Jacobian products of its JVPs:
  the paper's "Hessian-vector products").
* **Failed solves raise.** The traced functions return an ``ok`` mask; it is checked outside the
  traced code after every forward and every PGD step, and a failure raises
  :class:`sbgc.method.likelihood.LikelihoodSolveError` naming the (image, class) rows.

Which adjoint is correct
------------------------
An earlier measurement on an untrained U-Net found diffrax's ``BacksolveAdjoint`` (solve the
continuous adjoint ODE backwards in time) and ``RecursiveCheckpointAdjoint`` disagreeing by three
orders of magnitude in gradient norm (8.5 vs 6,740). Settled by central finite differences (h = 1e-2
along 3 random unit directions) of the same function, a fixed random linear functional of the class
log-likelihoods; 1 CIFAR-10 test image, 2 classes, 1 probe, ε = 1e-5, on 2 CPU cores
(``bench/attack_gradient.py --adjoint-study``, ``bench/results/attack_gradient_adjoint_*_cpu.json``;
"untrained ``ci``" is the ``ci`` architecture with its near-zero output kernels re-drawn, so that its
score is not ≈ 0):

==========================  ==========  =======  ===================  =========================
network, solver             adjoint     ‖∇‖      max rel. error (FD)  ‖x̂ − x‖/‖x‖ (see below)
==========================  ==========  =======  ===================  =========================
shipped ``ci``,             recursive   11,213   4.3e-3               4.4e-2
Heun, 16 fixed steps        backsolve   9,839    0.57
untrained ``ci``,           recursive   5,642    2.0e-3               30
Heun, 16 fixed steps        backsolve   18.8     1.00
shipped ``ci``,             recursive   15,668   4.9e-2               2.3e-2
dopri5, rtol = atol = 1e-5  backsolve   16,830   0.14
shipped ``ci``,             recursive   15,605   (0.87: FD unusable)  0.34
dopri5, rtol = atol = 1e-3  backsolve   37,996   (0.93)
untrained ``ci``,           recursive   12,154   (1.2: FD unusable)   30
dopri5, rtol = atol = 1e-3  backsolve   10.5     (1.00)
==========================  ==========  =======  ===================  =========================

* ``RecursiveCheckpointAdjoint`` is correct: it is the exact derivative of the computed solution,
  and where that solution is a smooth function of x (fixed steps) it matches the finite differences
  to ≤ 4e-3 on both networks (float32 rounding of logits of O(10⁴) nats limits the FD itself).
  With adaptive steps the finite differences also see the step-size controller's decisions change
  between x ± h·d (diffrax takes the gradient with the step sizes frozen): at rtol 1e-5 the FD
  errors were 5e-2 (recursive) and 0.14 (backsolve), at 1e-3 ~1 for every gradient.
* ``BacksolveAdjoint`` is wrong on U-Nets: it re-creates x(t) by solving the probability-flow ODE
  backwards from x(T), and that reverse-time solve does not return to the data: x(ε) → x(T) → x̂(ε)
  misses x by 2–4 % of ‖x‖ on the shipped network (34 % at rtol 1e-3) and by ~30 × ‖x‖ on the
  untrained one. The adjoint is then integrated along the wrong trajectory: 57 % error on the
  shipped network with 16 Heun steps, 14 % at rtol 1e-5, and gradients 300–1,000 × too small on
  the untrained network (18.8 vs 5,642; at rtol 1e-3 10.5 vs 12,154: the pattern of the earlier
  8.5 vs 6,740). On a small smooth network (``tests/test_adversarial.py``, rtol 1e-6) the two adjoints
  agree to 1e-6.

``RecursiveCheckpointAdjoint`` is therefore the default (``SolverSettings.adjoint="recursive"``).

Memory on an accelerator
------------------------
``RecursiveCheckpointAdjoint(checkpoints=c)`` stores c copies of the solver's loop state (per row:
the image, the n log-p integrals and the solver's stage cache, a few × D floats: ~0.1–0.5 MB per
image of 10 rows, estimated from the state's size) and recomputes the steps between checkpoints in
the backward pass; ``checkpoints=None`` lets diffrax use ~log₂(max_steps) of them, which bounds the
recomputation to O(N log N) for N steps. The state is tiny next to the activations of the network,
so peak memory is set by ONE step's second-order backward pass over B·K rows × (1 + n) network
evaluations, whatever c is; ``max_steps`` bounds the number of steps (a solve that needs more
fails and raises). Choice: ``checkpoints=None`` (the default). On CPU the backward pass, not the
recomputation, is the cost (``ci`` network, Heun 8 steps: 27.5 s with None, 29.6 s with 9
checkpoints, 29.7 s with 2). On a large GPU, ``checkpoints`` ≈ the number of accepted steps
(hundreds at rtol 1e-5) removes the recomputation for ~0.1–0.5 MB per checkpoint and image (not
measured here: no GPU).

Objects here
------------
:class:`SBGCLogitsConfig`, :func:`draw_attack_probes`, :func:`sbgc_logits_fn`,
:func:`baseline_logits_fn` (a discriminative network with ``.logits``), :class:`LogitsFn`,
:func:`cross_entropy` (Foolbox's PGD loss), :func:`input_gradient`, :func:`finite_difference_check`,
:func:`foolbox_model`, :func:`run_pgd` / :class:`PGDResult` (``to_arrays`` / ``from_arrays`` for the
results cache), :func:`image_shape`, :func:`attack_log_likelihoods` /
:class:`AttackLikelihoods` (do attacks leave the data manifold by the model's own measure?).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
import warnings
from typing import Any, Callable, Literal, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from sbgc.method.bound import BoundSettings
from sbgc.method.classify import class_log_likelihoods_pure, log_marginal
from sbgc.method.devices import names_the_memory_knobs
from sbgc.method.likelihood import (
    DATA_SCALINGS,
    DataScaling,
    LikelihoodSolveError,
    ScoreFn,
    SolverSettings,
    bits_per_dim,
    image_probes,
)
from sbgc.method.numerics import highest_precision
from sbgc.method.scorers import Bound
from sbgc.method.sde import SDE

Array = jax.Array
Norm = Literal["linf", "l2"]
NORMS = ("linf", "l2")
Objective = Callable[[Array, Array], Array]


class ScoreModel(Protocol):
    """What :func:`sbgc_logits_fn` needs of a model (e.g. :class:`sbgc.train.pretrained.LoadedModel`)."""

    score_fn: ScoreFn  # (x [B, *shape] model space, t [B], y int [B]) -> score [B, *shape]
    sde: SDE


class Classifier(Protocol):
    """A discriminative classifier: ``logits(x_unit [B, H, W, C] float in [0, 1]) -> [B, K]``."""

    def logits(self, x_unit: Array) -> Array: ...


# --- configuration and probes ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SBGCLogitsConfig:
    """How the SBGC's class log-likelihoods are solved for an attack (defaults: paper, Table 3).

    n_probes: Rademacher probes per image (paper: n = 10 for the adversarial evaluation).
    solver: the :class:`~sbgc.method.likelihood.SolverSettings` of every solve (method, rtol, atol,
    ε, max_steps, error norm; ``n_steps`` for fixed steps; ``adjoint``: ``"recursive"``, verified
    by finite differences, or ``"backsolve"``; ``checkpoints`` of the recursive adjoint). All
    probes of a row share one trajectory (``shared_trajectory`` must stay True).
    n_classes: K. data_scaling: the network's model space (``"centered"``: 2x − 1).
    """

    n_probes: int = 10
    solver: SolverSettings = SolverSettings()
    n_classes: int = 10
    data_scaling: DataScaling = "centered"

    def __post_init__(self):
        if not (isinstance(self.n_probes, int) and self.n_probes >= 1):
            raise ValueError(f"n_probes must be a positive int, got {self.n_probes!r}")
        if not (isinstance(self.n_classes, int) and self.n_classes >= 2):
            raise ValueError(f"n_classes must be an int >= 2, got {self.n_classes!r}")
        if self.data_scaling not in DATA_SCALINGS:
            raise ValueError(f"data_scaling must be one of {DATA_SCALINGS}, got {self.data_scaling!r}")
        if not isinstance(self.solver, SolverSettings):
            raise TypeError(f"solver must be a SolverSettings, got {self.solver!r}")
        if not self.solver.shared_trajectory:
            raise ValueError("solver.shared_trajectory must be True: an attack's probes share one trajectory")

    def describe(self) -> str:
        """One line for tables: probes, solver, tolerances or steps, ε, adjoint."""
        s = self.solver
        grid = " (log t)" if s.step_grid == "log" else ""
        steps = f"{s.n_steps} fixed steps{grid}" if s.n_steps else f"rtol={s.rtol:g} atol={s.atol:g}"
        return (f"n={self.n_probes} probes, {s.solver} {steps}, eps={s.eps:g}, "
                f"adjoint={s.adjoint} (checkpoints={s.checkpoints})")  # fmt: skip


def image_shape(model: Any) -> tuple[int, int, int]:
    """(H, W, C) of the images a loaded model reads: ``model.config.image_size`` and ``.channels``
    (a :class:`sbgc.train.pretrained.LoadedModel` or :class:`sbgc.train.baseline.LoadedClassifier`;
    CIFAR-10: (32, 32, 3), MNIST: (28, 28, 1))."""
    config = getattr(model, "config", None)
    size, channels = getattr(config, "image_size", None), getattr(config, "channels", None)
    if not (isinstance(size, (int, np.integer)) and isinstance(channels, (int, np.integer)) and size > 0 and channels > 0):
        raise ValueError(f"model.config must have positive int image_size and channels, got {config!r}")
    return int(size), int(size), int(channels)


def draw_attack_probes(key: Array, n_images: int, n_probes: int, shape: tuple[int, ...]) -> Array:
    """Rademacher probes [B, n, *shape], image i's from ``fold_in(key, i)``, fixed for a whole attack.

    shape: one image's (H, W, C), e.g. :func:`image_shape` of the attacked model.

    The same draws as :meth:`sbgc.method.likelihood.PreparedBatch.probes` with the same probe key (the
    second half of ``jax.random.split(key)`` in :func:`sbgc.method.likelihood.prepare_batch`), so the
    attacked function of an image is the classifier :func:`sbgc.method.classify.class_log_likelihoods`
    evaluates with that key on the same (already dequantized) float images.
    """
    if not (isinstance(n_images, (int, np.integer)) and n_images >= 1):
        raise ValueError(f"n_images must be a positive int, got {n_images!r}")
    if not (isinstance(n_probes, (int, np.integer)) and n_probes >= 1):
        raise ValueError(f"n_probes must be a positive int, got {n_probes!r}")
    shape = tuple(int(d) for d in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be one image's (H, W, C), got {shape!r}")
    return image_probes(key, jnp.arange(int(n_images)), int(n_probes), tuple(shape), "rademacher")


# --- the attacked functions -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class LogitsFn:
    """A differentiable classifier x_unit [B, *shape] (float, [0, 1]) → logits [B, K].

    Calling it returns the logits (pure, jit- and grad-able: what Foolbox differentiates).
    ``logits_and_ok`` also returns the success mask ok [B, K] (solve reached T and is finite);
    :meth:`checked` evaluates under jit and raises if any entry is False.
    ``kind``: ``"sbgc"`` (logits are log p(x | y) in nats), ``"bound"`` (variational lower bounds on
    them) or ``"baseline"``.
    """

    logits_and_ok: Callable[[Array], tuple[Array, Array]]
    kind: str
    description: str = ""

    def __call__(self, x_unit: Array) -> Array:
        return self.logits_and_ok(x_unit)[0]

    @functools.cached_property
    def _forward(self) -> Callable[[Array], tuple[Array, Array]]:
        return jax.jit(self.logits_and_ok)

    def _memory_advice(self, what: str, x_unit):
        """Name the knobs to lower when ``what`` on the batch ``x_unit`` runs out of device memory."""
        return names_the_memory_knobs(
            f"in the attack's {what} of {len(x_unit)} image(s) ({self.description or self.kind})",
            "attack fewer images at a time, or lower ode.n_probes (every class's solve carries them) or, for the "
            "gradient, the solver's checkpoints (SolverSettings.checkpoints)")

    def checked(self, x_unit: Array | np.ndarray, what: str = "forward pass") -> np.ndarray:
        """Logits [B, K] (float64 numpy) under jit; raises LikelihoodSolveError on a failed solve."""
        with self._memory_advice(what, x_unit):
            logits, ok = self._forward(jnp.asarray(x_unit, jnp.float32))
        raise_if_failed(ok, what, self.description)
        return np.asarray(logits, np.float64)

    @functools.cached_property
    def _grad_fns(self) -> dict:
        return {}

    def value_and_grad(self, objective: Objective) -> Callable[[Array, Array], tuple[Array, Array, Array]]:
        """Jitted (x [B, *shape], target) → (objective(logits, target), ∂/∂x [B, *shape], ok [B, K]).

        One compiled function per objective, kept on this object (PGD calls it once per step).
        """
        if objective not in self._grad_fns:

            def value(x, target):
                logits, ok = self.logits_and_ok(x)
                return objective(logits, target), ok

            grad_fn = jax.value_and_grad(value, has_aux=True)
            jitted = jax.jit(lambda x, t: (lambda vo, g: (vo[0], g, vo[1]))(*grad_fn(x, t)))

            def named(x, target, jitted=jitted):
                with self._memory_advice("gradient", x):
                    return jitted(x, target)

            named.lower = jitted.lower  # ahead-of-time compilation, as the benchmarks time it
            self._grad_fns[objective] = named
        return self._grad_fns[objective]


def raise_if_failed(ok: Array | np.ndarray, what: str, description: str = "") -> None:
    """Raise :class:`LikelihoodSolveError` naming every (image, class) whose solve failed.

    ok: bool [B, K] (concrete, outside traced code).
    """
    ok = np.asarray(ok)
    if ok.all():
        return
    rows = [(int(i), int(c)) for i, c in zip(*np.nonzero(~ok))]
    shown = ", ".join(f"image {i} class {c}" for i, c in rows[:20]) + (" …" if len(rows) > 20 else "")
    raise LikelihoodSolveError(
        f"{what}: the probability-flow solve failed (max_steps reached, solver failure or non-finite "
        f"log-likelihood) for {len(rows)} of {ok.size} (image, class) rows: {shown}. "
        f"Settings: {description or 'n/a'}. Raise max_steps, loosen the tolerances or use fixed steps.",
        rows,
    )


def sbgc_logits_fn(model: ScoreModel, probes: Array, config: SBGCLogitsConfig = SBGCLogitsConfig()) -> LogitsFn:
    """The SBGC as a classifier: x_unit [B, *shape] in [0, 1] → class log-likelihoods [B, K] (nats).

    probes: [B, n, *shape] from :func:`draw_attack_probes`, fixed for the attack; every call must
    pass the same B images in the same order (image i is always solved with probes[i]). The input is
    used as given (no dequantization noise is added). ``model`` needs ``score_fn`` and ``sde``
    (a :class:`sbgc.train.pretrained.LoadedModel`). Gradients: ``jax.grad`` through the solves with
    ``config.solver.adjoint`` (module docstring).
    """
    probes = jnp.asarray(probes)
    if probes.ndim < 3 or probes.shape[1] != config.n_probes:
        raise ValueError(
            f"probes must have shape [B, n_probes={config.n_probes}, *image_shape], got {tuple(probes.shape)}"
        )
    settings = config.solver
    score_fn, sde = model.score_fn, model.sde

    @highest_precision
    def logits_and_ok(x_unit: Array) -> tuple[Array, Array]:
        if tuple(x_unit.shape) != (probes.shape[0], *probes.shape[2:]):
            raise ValueError(
                f"x_unit must have shape {(probes.shape[0], *probes.shape[2:])} (the images the probes "
                f"were drawn for), got {tuple(x_unit.shape)}"
            )
        return class_log_likelihoods_pure(
            score_fn, sde, x_unit.astype(jnp.float32), probes, n_classes=config.n_classes,
            solver=settings, data_scaling=config.data_scaling,
        )  # fmt: skip

    return LogitsFn(logits_and_ok, "sbgc", config.describe())


def bound_name(settings: BoundSettings) -> str:
    """What the bound classifier is called: the variational bound, or (uniform weighting) the denoising score."""
    return "variational bound" if settings.weighting == "likelihood" else "uniform-in-t denoising score"


def describe_bound(settings: BoundSettings) -> str:
    """One line for tables: the bound classifier's weighting, times, sampling, control variate and ε."""
    cv = "none" if settings.data_std is None else f"s_d={settings.data_std:g}"
    decoder = " + decoder" if settings.weighting == "likelihood" else ""
    return (f"{bound_name(settings)}, K={settings.n_times} {settings.sampling} times{decoder}, fixed per image; "
            f"control variate {cv}, eps={settings.eps:g}")  # fmt: skip


def bound_logits(model: ScoreModel, key: Array, settings: BoundSettings, n_classes: int = 10,
                 data_scaling: DataScaling = "centered") -> Callable[..., tuple[Array, Array]]:  # fmt: skip
    """The variational-bound classifier as a pure function for attacks:
    (x_unit [B, *shape], image_ids int [B], classes int [B, k] or None) → (bounds [B, k] nats, ok).

    Image i is scored with the times and noises :func:`sbgc.method.bound.bound_random_numbers`
    draws for id i with ``key``, held fixed: the classifier is deterministic and its gradient the
    exact gradient of the computed bound: :meth:`sbgc.method.scorers.Bound.pure`.
    """

    return Bound(settings, data_scaling).pure(model.score_fn, model.sde, key, n_classes=n_classes)


def bound_logits_fn(model: ScoreModel, key: Array, image_ids: Array | np.ndarray, settings: BoundSettings,
                    n_classes: int = 10, data_scaling: DataScaling = "centered") -> LogitsFn:  # fmt: skip
    """:func:`bound_logits` as a :class:`LogitsFn` of the images with ids ``image_ids`` [B] (in
    that order), e.g. for :func:`finite_difference_check` of the function the bound attack ascends."""
    ids = jnp.asarray(image_ids, jnp.int32)
    f = bound_logits(model, key, settings, n_classes, data_scaling)
    return LogitsFn(lambda x_unit: f(x_unit, ids), "bound", describe_bound(settings))


def baseline_logits_fn(classifier: Classifier) -> LogitsFn:
    """A discriminative classifier as a :class:`LogitsFn`: ``classifier.logits(x_unit) -> [B, K]``.

    ok is "all logits finite" (there is no solve to fail).
    """
    if not callable(getattr(classifier, "logits", None)):
        raise ValueError(f"classifier must have a callable .logits(x_unit) -> [B, K], got {type(classifier).__name__}")

    @highest_precision
    def logits_and_ok(x_unit: Array) -> tuple[Array, Array]:
        logits = classifier.logits(x_unit)
        return logits, jnp.isfinite(logits)

    return LogitsFn(logits_and_ok, "baseline", type(classifier).__name__)


# --- objectives and gradients ---------------------------------------------------------------------
def _wrong_class_differences(logits: Array, labels: Array) -> Array:
    """d_ik = logits_ik − logits_i,y_i for k ≠ y_i, −inf at k = y_i: [B, K] (the only thing the
    softmax cross-entropy depends on)."""
    y = labels[:, None].astype(jnp.int32)
    d = logits - jnp.take_along_axis(logits, y, axis=1)
    return jnp.where(jnp.arange(logits.shape[1])[None, :] == y, -jnp.inf, d)


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Σ_i −log softmax(logits_i)[labels_i]: logits [B, K], labels int [B] → scalar.

    Foolbox 3.3.4's loss for ``LinfPGD``/``L2PGD`` (``BaseGradientDescent.get_loss_fn``:
    ``ep.crossentropy(model(inputs), labels).sum()``), which the untargeted attack ASCENDS, i.e. PGD
    descends the negative cross-entropy as the paper states. Computed from the logit differences as
    Σ_i log(1 + Σ_{k≠y} e^{d_ik}), so its value is accurate at any margin. Its gradient p − e_y is
    the true one and therefore vanishes in float32 once the true class wins by more than ~17 nats
    (exactly 0 beyond ~104): PGD uses :func:`cross_entropy_direction` instead.
    """
    d = _wrong_class_differences(logits, labels)
    return jnp.sum(jax.nn.softplus(jax.nn.logsumexp(d, axis=1)))


def cross_entropy_direction(logits: Array, labels: Array) -> Array:
    """The direction of ∂ cross-entropy / ∂ logits, per image, exact at any margin: [B, K].

    c_i = (p_i − e_y) / (1 − p_iy) = softmax_{k≠y}(d_ik) − e_y: the true gradient divided by the
    positive factor 1 − p_iy, which underflows in float32 for SBGC logits (~10⁴ nats with margins of
    tens to thousands) while the softmax over the WRONG classes' differences does not. An image's
    input gradient is linear in its cotangent, so PGD (which uses the sign or the per-image norm of
    the gradient) takes the same steps as with the exact cross-entropy gradient.
    """
    d = _wrong_class_differences(logits, labels)
    return jax.nn.softmax(d, axis=1) - jax.nn.one_hot(labels, logits.shape[1], dtype=logits.dtype)


def margin_direction(logits: Array, labels: Array) -> Array:
    """∂ margin / ∂ logits = e_k* − e_y per image, k* the best wrong class: [B, K]."""
    k = logits.shape[1]
    best = jnp.argmax(_wrong_class_differences(logits, labels), axis=1)
    return jax.nn.one_hot(best, k, dtype=logits.dtype) - jax.nn.one_hot(labels, k, dtype=logits.dtype)


def margin(logits: Array, labels: Array) -> Array:
    """Σ_i (max_{k≠y} logits_ik − logits_iy): the Carlini–Wagner margin (positive: misclassified).

    Ascending it raises the best wrong class against the true one; its gradient e_k* − e_y does not
    saturate, and a positive rescaling of the logits rescales it (same direction), as robustness
    evaluations since Croce & Hein (2020) use beside the cross-entropy.
    """
    return jnp.sum(jnp.max(_wrong_class_differences(logits, labels), axis=1))


# PGD losses: "cross_entropy" (:func:`cross_entropy`, direction :func:`cross_entropy_direction`) and
# "margin" (:func:`margin`, direction :func:`margin_direction`)
LOSSES: tuple[str, ...] = ("cross_entropy", "margin")


def pgd_surrogate(logits: Array, target: tuple[Array, Array]) -> Array:
    """Σ_i ⟨stop_gradient(c_i), logits_i⟩, the function PGD differentiates, where
    ``target = (labels [B], use_margin [])`` and c is :func:`margin_direction` or
    :func:`cross_entropy_direction`: ONE compiled gradient serves both PGD losses (the choice is
    traced). Its input gradient is the chosen loss's exact gradient direction per image; its value
    is not the loss."""
    labels, use_margin = target
    c = jnp.where(use_margin, margin_direction(logits, labels), cross_entropy_direction(logits, labels))
    return jnp.sum(jax.lax.stop_gradient(c) * logits)


def projected_logits(logits: Array, weights: Array) -> Array:
    """Σ_{i,k} w_ik · logits_ik: logits, weights [B, K] → scalar (a fixed linear functional).

    Used by :func:`finite_difference_check`: unlike the cross-entropy it does not saturate when one
    class wins by many nats, so it tests the whole Jacobian ∂logits/∂x.
    """
    return jnp.sum(weights * logits)


def input_gradient(
    fn: LogitsFn, x_unit: Array | np.ndarray, target: Array | np.ndarray, objective: Objective = cross_entropy
) -> tuple[float, np.ndarray]:
    """Exact gradient of ``objective(fn(x), target)`` w.r.t. x: (value, gradient [B, *shape]).

    Default objective: Foolbox's PGD loss :func:`cross_entropy` with ``target`` = labels int [B].
    Raises LikelihoodSolveError if a solve failed.
    """
    value, grad, ok = fn.value_and_grad(objective)(jnp.asarray(x_unit, jnp.float32), jnp.asarray(target))
    raise_if_failed(ok, "input gradient", fn.description)
    return float(value), np.asarray(grad)


# --- results as arrays (sbgc.cache stores numpy arrays, no pickle) -----------------------------
def _to_arrays(result: Any) -> dict[str, np.ndarray]:
    """A frozen dataclass of numpy arrays, numbers, strings, None and tuples of floats as
    ``{field: array}``: strings as 0-d unicode arrays, None as a 0-d NaN with ``<field>__none`` = True,
    tuples as float64 (or, of strings, unicode) arrays with ``<field>__tuple`` = True. No object arrays."""
    out: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if value is None:
            out[f.name], out[f"{f.name}__none"] = np.asarray(np.nan), np.asarray(True)
        elif isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
            out[f.name], out[f"{f.name}__tuple"] = np.asarray(value, dtype=np.str_), np.asarray(True)
        elif isinstance(value, tuple):
            out[f.name], out[f"{f.name}__tuple"] = np.asarray(value, np.float64).reshape(-1), np.asarray(True)
        elif isinstance(value, str):
            out[f.name] = np.asarray(value, dtype=np.str_)
        else:
            out[f.name] = np.asarray(value)
        if out[f.name].dtype == object:
            raise TypeError(f"{type(result).__name__}.{f.name}: {type(value).__name__} cannot be stored as an array")
    return out


def _from_arrays(cls: type, arrays: Any) -> Any:
    """The inverse of :func:`_to_arrays`: 0-d arrays back as Python scalars (str, bool, int, float)."""
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in arrays]
    if missing:
        raise KeyError(f"arrays lack the field(s) {missing} of {cls.__name__}")
    fields = {}
    for f in dataclasses.fields(cls):
        a = np.asarray(arrays[f.name])
        if f"{f.name}__none" in arrays:
            fields[f.name] = None
        elif f"{f.name}__tuple" in arrays:
            fields[f.name] = tuple(str(v) for v in a) if a.dtype.kind == "U" else tuple(float(v) for v in a)
        elif a.ndim == 0:
            fields[f.name] = a.item()
        else:
            fields[f.name] = a
    return cls(**fields)


@dataclasses.dataclass(frozen=True)
class FiniteDifferenceCheck:
    """Directional derivatives of a scalar s(x) along unit directions d_j: exact vs central FD.

    exact [J] = ⟨∇s(x), d_j⟩ from reverse mode; finite_difference [J] = (s(x + h d) − s(x − h d))/2h;
    relative_error [J] = |exact − fd| / max(|exact|, |fd|).
    """

    exact: np.ndarray
    finite_difference: np.ndarray
    relative_error: np.ndarray
    h: float
    gradient_norm: float
    value: float

    @property
    def max_relative_error(self) -> float:
        return float(np.max(self.relative_error))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``{field: array}`` for :mod:`sbgc.cache` (no object arrays); :meth:`from_arrays` inverts it."""
        return _to_arrays(self)

    @classmethod
    def from_arrays(cls, arrays: Any) -> "FiniteDifferenceCheck":
        return _from_arrays(cls, arrays)

    @property
    def max_error_vs_gradient_norm(self) -> float:
        """max_j |exact_j − fd_j| / ‖∇s‖: meaningful where a direction is nearly orthogonal to ∇s
        (there the relative error compares two small numbers)."""
        return float(np.max(np.abs(self.exact - self.finite_difference)) / max(self.gradient_norm, 1e-30))


def finite_difference_check(
    fn: LogitsFn,
    x_unit: Array | np.ndarray,
    key: Array,
    n_directions: int = 4,
    h: float = 1e-2,
    objective: Objective = projected_logits,
    target: Array | np.ndarray | None = None,
) -> FiniteDifferenceCheck:
    """Check the exact input gradient against central finite differences along random directions.

    x_unit: [B, *shape]. Directions: standard normal over the whole batch, scaled to unit L2 norm
    (drawn from ``key``). Default scalar: :func:`projected_logits` with weights [B, K] drawn from
    ``key`` (standard normal, divided by √(B·K)) unless ``target`` is given. h is a step along a
    unit vector: in float32 the FD's rounding error is ~ ulp(s)/h and its truncation error ~ h², so
    h = 1e-2 suits scores of O(10³–10⁴) nats with smooth (fixed-step) solves; an adaptive solver adds
    its step-selection jitter / h. The FD values are computed from float64 copies of the logits less
    each image's clean maximum logit, which leaves both provided objectives' differences unchanged
    (the cross-entropy is shift-invariant, projected_logits linear); a custom objective must be one
    of the two kinds.
    """
    if not (isinstance(n_directions, (int, np.integer)) and n_directions >= 1):
        raise ValueError(f"n_directions must be a positive int, got {n_directions!r}")
    if not h > 0:
        raise ValueError(f"h must be positive, got {h}")
    x = jnp.asarray(x_unit, jnp.float32)
    k_dir, k_w = jax.random.split(key)
    if target is None and objective is not projected_logits:
        raise ValueError("target is required for an objective other than projected_logits")
    clean = fn.checked(x, "finite-difference check")  # [B, K] float64
    shift = clean.max(axis=1, keepdims=True)
    if target is None:
        target = jax.random.normal(k_w, clean.shape, jnp.float32) / math.sqrt(clean.size)
    target = jnp.asarray(target)
    value, grad = input_gradient(fn, x, target, objective)
    dirs = jax.random.normal(k_dir, (n_directions, *x.shape), jnp.float32)
    dirs = dirs / jnp.sqrt(jnp.sum(dirs**2, axis=tuple(range(1, dirs.ndim)), keepdims=True))
    score = lambda xx: float(objective(jnp.asarray(fn.checked(xx, "finite difference") - shift, jnp.float32), target))
    exact, fd = [], []
    for d in dirs:
        exact.append(float(jnp.vdot(jnp.asarray(grad), d)))
        fd.append((score(x + h * d) - score(x - h * d)) / (2 * h))
    exact, fd = np.asarray(exact), np.asarray(fd)
    rel = np.abs(exact - fd) / np.maximum(np.maximum(np.abs(exact), np.abs(fd)), 1e-30)
    return FiniteDifferenceCheck(exact, fd, rel, float(h), float(np.linalg.norm(grad)), value)


# --- Foolbox PGD ----------------------------------------------------------------------------------
@functools.cache
def _foolbox():
    """Import foolbox (the ``attacks`` extra) without its scipy ``DeprecationWarning``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import foolbox

    return foolbox


def foolbox_model(fn: LogitsFn | Callable[[Array], Array]):
    """``foolbox.JAXModel`` of a classifier on [0, 1] images: ``JAXModel(jit(fn), bounds=(0, 1))``."""
    return _foolbox().JAXModel(jax.jit(fn), bounds=(0, 1))


@contextlib.contextmanager
def _eagerpy_seed(seed: int):
    """Seed eagerpy's JAX random state (Foolbox's random start) for one attack, then restore it."""
    from eagerpy.tensor.jax import JAXTensor

    old = JAXTensor.key
    JAXTensor.key = jax.random.PRNGKey(seed)
    try:
        yield
    finally:
        JAXTensor.key = old


def _checked_pgd(norm: Norm, fn: LogitsFn, labels: Array, step_seconds: list[float], loss: str, **kwargs):
    """Foolbox's LinfPGD / L2PGD whose gradient step is ``fn``'s jitted, solve-checked gradient.

    Everything else (step normalisation, projection, clipping, random start) is Foolbox's. The
    gradient is that of :func:`pgd_surrogate`: for ``"cross_entropy"`` the direction of Foolbox's
    default loss computed so that it does not saturate (:func:`cross_entropy_direction`), for
    ``"margin"`` the margin's. One compiled function for every attack on ``fn``; every step's ``ok``
    mask is checked (a failed solve raises).
    """
    fb = _foolbox()
    import eagerpy as ep

    base = fb.attacks.LinfPGD if norm == "linf" else fb.attacks.L2PGD
    grad_fn = fn.value_and_grad(pgd_surrogate)
    target = (labels, jnp.asarray(loss == "margin"))

    class CheckedPGD(base):
        def value_and_grad(self, loss_fn, x):
            del loss_fn  # Foolbox's float32 cross-entropy saturates on SBGC logits: replaced (docstring)
            t = time.perf_counter()
            value, grad, ok = jax.block_until_ready(grad_fn(x.raw, target))
            step_seconds.append(time.perf_counter() - t)
            raise_if_failed(ok, f"{norm} PGD step {len(step_seconds)}", fn.description)
            if not np.isfinite(float(value)):
                raise FloatingPointError(f"{norm} PGD step {len(step_seconds)}: the {loss} objective is not finite")
            return ep.astensor(value), ep.astensor(grad)

    return CheckedPGD(**kwargs)


@dataclasses.dataclass(frozen=True)
class PGDResult:
    """One PGD attack on B images (arrays numpy; logits float64, images float32 in [0, 1]).

    success [B]: the attacked image is misclassified (Foolbox's ``Misclassification`` criterion;
    an image misclassified before the attack counts as a success). robust_accuracy = mean(adv_pred
    == labels) = 1 − mean(success). stepsize: the step in absolute units (rel_stepsize · ε unless
    given). seconds: the whole call (clean forward, steps, adversarial forward); step_seconds: each
    forward+backward.
    """

    norm: str
    loss: str
    epsilon: float
    steps: int
    rel_stepsize: float | None
    stepsize: float
    random_start: bool
    seed: int
    kind: str
    labels: np.ndarray  # [B]
    clean_logits: np.ndarray  # [B, K]
    clean_pred: np.ndarray  # [B]
    adversarial: np.ndarray  # [B, *shape]
    adv_logits: np.ndarray  # [B, K]
    adv_pred: np.ndarray  # [B]
    success: np.ndarray  # [B] bool
    linf: np.ndarray  # [B] ‖x_adv − x‖_∞
    l2: np.ndarray  # [B] ‖x_adv − x‖_2
    seconds: float
    step_seconds: tuple[float, ...]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``{field: array}`` for :mod:`sbgc.cache`: strings as 0-d unicode arrays, ``rel_stepsize``
        None as NaN with a flag, ``step_seconds`` as float64 [S]; :meth:`from_arrays` inverts it exactly."""
        return _to_arrays(self)

    @classmethod
    def from_arrays(cls, arrays: Any) -> "PGDResult":
        """A :class:`PGDResult` from :meth:`to_arrays`' output (e.g. a cache entry's ``arrays``)."""
        return _from_arrays(cls, arrays)

    def record(self) -> dict:
        """The attack's settings and summary numbers as plain JSON values (no images, no logits)."""
        return {"norm": self.norm, "loss": self.loss, "epsilon": self.epsilon, "steps": self.steps,
                "stepsize": self.stepsize, "random_start": self.random_start, "clean_accuracy": self.clean_accuracy,
                "robust_accuracy": self.robust_accuracy, "n": int(len(self.labels)), "max_linf": float(self.linf.max()),
                "max_l2": float(self.l2.max()), "seconds": self.seconds, "step_seconds": list(self.step_seconds)}  # fmt: skip

    def subset(self, mask: np.ndarray) -> "PGDResult":
        """The same attack on the images selected by ``mask`` (bool [B] or int positions [B']): every
        per-image array (labels, logits, predictions, adversarials, success, norms) restricted to them."""
        return dataclasses.replace(self, **{a: getattr(self, a)[mask] for a in _PER_IMAGE_RESULT})

    @property
    def clean_accuracy(self) -> float:
        return float(np.mean(self.clean_pred == self.labels))

    @property
    def robust_accuracy(self) -> float:
        return float(np.mean(self.adv_pred == self.labels))


_PER_IMAGE_RESULT = ("labels", "clean_logits", "clean_pred", "adversarial", "adv_logits", "adv_pred", "success", "linf",
                     "l2")  # PGDResult's per-image arrays [B, ...]


def run_pgd(
    fn: LogitsFn,
    images_unit: Array | np.ndarray,
    labels: Array | np.ndarray,
    *,
    norm: Norm,
    epsilon: float,
    steps: int,
    rel_stepsize: float | None = None,
    abs_stepsize: float | None = None,
    random_start: bool = True,
    seed: int = 0,
    loss: str = "cross_entropy",
) -> PGDResult:
    """Untargeted PGD (Madry et al. 2018) with Foolbox 3's ``LinfPGD`` / ``L2PGD`` on [0, 1] images.

    images_unit: float [B, *shape] in [0, 1] (dequantized once; the attack does not re-dequantize);
    labels: int [B]. The loss is Foolbox's default for these attacks, the summed softmax
    cross-entropy of the logits (``BaseGradientDescent.get_loss_fn`` in foolbox 3.3.4:
    ``ep.crossentropy(model(inputs), labels).sum()``), which the attack ascends: for the SBGC the
    softmax over the class log-likelihoods, i.e. PGD on the negative cross-entropy as in the paper.
    rel_stepsize: step / ε (None: Foolbox's default, 0.01/0.3 for L∞ and 0.025 for L2);
    abs_stepsize overrides it. random_start: Foolbox's uniform start in the ε-ball, seeded by
    ``seed``. Every step's solves are checked (a failure raises LikelihoodSolveError naming rows).
    loss: ``"cross_entropy"`` (ascends the cross-entropy along its exact direction, which Foolbox's
    own float32 loss loses once a class wins by > ~17 nats) or ``"margin"`` (:func:`margin`). Report
    the worst case over both (:func:`worst_case`). Positive rescaling of the logits does not change
    the margin attack's steps, nor the cross-entropy attack's for two classes.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if not (isinstance(steps, (int, np.integer)) and steps >= 1):
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    x = jnp.asarray(images_unit)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"images_unit must be float images in [0, 1] (dequantized), got dtype {x.dtype}")
    x = x.astype(jnp.float32)
    lo, hi = float(jnp.min(x)), float(jnp.max(x))
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"images_unit must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an int array of shape ({x.shape[0]},), got {labels.dtype} {labels.shape}")
    y = jnp.asarray(labels, jnp.int32)
    kwargs: dict[str, Any] = dict(steps=int(steps), random_start=bool(random_start))
    if rel_stepsize is not None:
        kwargs["rel_stepsize"] = float(rel_stepsize)
    if abs_stepsize is not None:
        kwargs["abs_stepsize"] = float(abs_stepsize)

    t0 = time.perf_counter()
    clean_logits = fn.checked(x, "clean forward pass")
    step_seconds: list[float] = []
    attack = _checked_pgd(norm, fn, y, step_seconds, loss, **kwargs)
    with _eagerpy_seed(seed):
        raw = attack.run(foolbox_model(fn), x, y, epsilon=float(epsilon))
    adv = attack.distance.clip_perturbation(x, raw, float(epsilon))  # as Foolbox's __call__ does
    adv = jnp.clip(adv, 0.0, 1.0).astype(jnp.float32)
    adv_logits = fn.checked(adv, "adversarial forward pass")
    seconds = time.perf_counter() - t0

    delta = np.asarray(adv, np.float64) - np.asarray(x, np.float64)
    flat = delta.reshape(delta.shape[0], -1)
    adv_pred = np.argmax(adv_logits, axis=1)
    stepsize = attack.abs_stepsize if attack.abs_stepsize is not None else attack.rel_stepsize * float(epsilon)
    return PGDResult(
        norm=norm, loss=loss, epsilon=float(epsilon), steps=int(steps),
        rel_stepsize=None if attack.abs_stepsize is not None else float(attack.rel_stepsize),
        stepsize=float(stepsize), random_start=bool(random_start), seed=int(seed), kind=fn.kind,
        labels=labels, clean_logits=clean_logits, clean_pred=np.argmax(clean_logits, axis=1),
        adversarial=np.asarray(adv), adv_logits=adv_logits, adv_pred=adv_pred, success=adv_pred != labels,
        linf=np.abs(flat).max(axis=1), l2=np.linalg.norm(flat, axis=1), seconds=seconds,
        step_seconds=tuple(step_seconds),
    )  # fmt: skip


def worst_case(results: list[PGDResult]) -> np.ndarray:
    """Per image, broken by ANY of the attacks (same images, same norm and ε): success [B] bool.

    Robust accuracy under the worst case = mean(~worst_case(results) & clean-correct), i.e. an image
    counts as robust only if every attack failed on it.
    """
    if not results:
        raise ValueError("worst_case needs at least one PGDResult")
    first = results[0]
    for r in results[1:]:
        if (r.norm, r.epsilon) != (first.norm, first.epsilon) or not np.array_equal(r.labels, first.labels):
            raise ValueError(f"worst case over different threat models or images: {(r.norm, r.epsilon)} vs "
                             f"{(first.norm, first.epsilon)}")
    return np.any([r.success for r in results], axis=0)


def worst_of(results: list[PGDResult]) -> PGDResult:
    """One :class:`PGDResult` holding, per image, the first attack that broke it (else the first
    attack's outcome): robust accuracy under the worst case over ``results`` (:func:`worst_case`)."""
    broken = worst_case(results)
    pick = np.array([next((j for j, r in enumerate(results) if r.success[i]), 0) for i in range(len(broken))])
    per_image = ("adversarial", "adv_logits", "adv_pred", "success", "linf", "l2")
    fields = {a: np.stack([getattr(r, a) for r in results])[pick, np.arange(len(pick))] for a in per_image}
    return dataclasses.replace(
        results[0], loss="worst of " + ", ".join(r.loss for r in results), seconds=sum(r.seconds for r in results),
        step_seconds=tuple(t for r in results for t in r.step_seconds), **fields)


# --- do attacks leave the data manifold? ----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class AttackLikelihoods:
    """log p(x) (nats, [0, 1] data) and bits/dim of clean and attacked images under the SBGC.

    log p(x) = log (1/K) Σ_y p(x | y) (:func:`sbgc.method.classify.log_marginal`); every array [B].
    delta_bpd = bpd_adv − bpd_clean (> 0: the attacked image is less likely by the model's measure).
    """

    log_p_clean: np.ndarray
    log_p_adv: np.ndarray
    bpd_clean: np.ndarray
    bpd_adv: np.ndarray
    dim: int

    @property
    def delta_bpd(self) -> np.ndarray:
        return self.bpd_adv - self.bpd_clean


def likelihood_shift(clean_logits: np.ndarray, adv_logits: np.ndarray, dim: int) -> AttackLikelihoods:
    """:class:`AttackLikelihoods` from SBGC logits [B, K] (class log-likelihoods) of both image sets.

    The two sets of logits must come from the same :class:`LogitsFn` (same probes: common random
    numbers, so the difference carries no probe noise of its own), e.g. a :class:`PGDResult`'s.
    """
    clean_logits, adv_logits = np.asarray(clean_logits), np.asarray(adv_logits)
    if clean_logits.ndim != 2 or clean_logits.shape != adv_logits.shape:
        raise ValueError(f"clean and adversarial logits must both be [B, K], got {clean_logits.shape} and {adv_logits.shape}")
    lp_c, lp_a = log_marginal(clean_logits), log_marginal(adv_logits)
    return AttackLikelihoods(lp_c, lp_a, bits_per_dim(lp_c, dim), bits_per_dim(lp_a, dim), int(dim))


def attack_log_likelihoods(
    fn: LogitsFn, clean_unit: Array | np.ndarray, adv_unit: Array | np.ndarray
) -> AttackLikelihoods:
    """log p(x) and bits/dim of clean and attacked [0, 1] images [B, *shape], with the same probes.

    ``fn`` must be an SBGC :class:`LogitsFn` (its logits are log p(x | y)); both batches are the same
    B images in the same order, so image i is solved with probes[i] in both.
    """
    if fn.kind != "sbgc":
        raise ValueError(f"attack_log_likelihoods needs an SBGC LogitsFn (logits = log p(x | y)), got kind {fn.kind!r}")
    clean, adv = np.asarray(clean_unit), np.asarray(adv_unit)
    if clean.shape != adv.shape:
        raise ValueError(f"clean and adversarial images must have the same shape, got {clean.shape} and {adv.shape}")
    dim = int(np.prod(clean.shape[1:]))
    return likelihood_shift(fn.checked(clean, "clean images"), fn.checked(adv, "adversarial images"), dim)
