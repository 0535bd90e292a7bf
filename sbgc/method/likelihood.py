"""Exact log-likelihood of data under a score model, by the probability-flow ODE (paper eqs. 1–3).

For a score model s(x, t, y) ≈ ∇ₓ log p_t(x | y) the probability-flow ODE

    dx/dt = f̃(x, t, y) = f(x, t) − ½ g(t)² s(x, t, y)                                  (eq. 1)

carries p_ε(· | y) to p_T(· | y) ≈ N(0, I), and the instantaneous change of variables gives

    log p_ε(x(ε) | y) = log p_T(x(T) | y) + ∫_ε^T ∇ₓ·f̃(x(t), t, y) dt                      (eq. 2)

with the ODE integrated FORWARD in time, from the data at t = ε to the prior at t = T. The
divergence is the Hutchinson–Skilling estimate ∇ₓ·f̃ ≈ vᵀ (∂f̃/∂x) v with a probe v, E[v vᵀ] = I,
drawn once and kept for the whole solve (eq. 3); log p is averaged over n probes. ``probe="exact"``
takes the trace of the full Jacobian instead (small D only).

Conventions
-----------
* **Score functions** are pure JAX functions ``score_fn(x, t, y) -> score``: x float32 [B, *shape]
  in model space, t float32 [B], y int32 [B], the score ∇ₓ log p_t(x | y) in model space.
* **Data.** ``x`` is either uint8 pixels (dequantized to x = (pixel + u)/256, u ~ U[0, 1)^D, or
  (pixel + ½)/256 without noise) or floats already in data space (used as given). Model space is
  x̃ = 2x − 1 (``data_scaling="centered"``, the CIFAR network) or x̃ = x (``"unit"``).
* **Reported log-likelihood**: log p(x | y) in nats of the [0, 1]-scaled continuous (dequantized)
  data, log p_[0,1](x) = log p_model(x̃) + log|det ∂x̃/∂x| = log p_model(x̃) + D log 2 (centred).
* **Bits per dimension** of the DISCRETE data (:func:`bits_per_dim`):
  bpd = −log p_[0,1](x) / (D ln 2) + 8, the +8 being the −D log 256 that maps [0, 1] to pixel units.
  A uniform density on the dequantized unit cube therefore has exactly 8 bits/dim. (score_sde
  writes +7 for [−1, 1] data: the same number, since log p_[−1,1] = log p_[0,1] − D log 2.)
* **Common random numbers**: one ``key`` fixes the dequantization noise and the n probes per IMAGE
  (image i's from ``fold_in(key', i)``); every class evaluated for that image
  (:func:`log_likelihood_table`) reuses them, so class differences are not blurred by independent
  noise, and an image's draws do not depend on the batch or chunk it comes in.

Solver
------
diffrax with an adaptive PID controller (default ``Dopri5``, rtol = atol = 1e-5, ε = 1e-5 as in the
paper; no ``dtmin``), ``throw=False`` and explicit success/finiteness checks outside jit: a solve
that fails raises :class:`LikelihoodSolveError` naming the rows. ``SolverSettings(n_steps=N)``
takes N equal steps instead (cheap, tolerance-free gradients for CPU runs), and
``SolverSettings.adjoint``/``checkpoints`` choose how ``jax.grad`` differentiates the solve (see
:mod:`sbgc.experiments.adversarial` for the measurement behind the default). Error control: the default
``error_norm="split"`` takes max(RMS over the state x, RMS over the n log-p integrals), so the
log-p components are controlled as tightly as the state instead of being one of D + n entries of a
single RMS; ``"rms"`` is the plain RMS over all components (what scipy's RK45 does).

``shared_trajectory=True`` solves ONE augmented ODE per row, the state x together with n divergence
integrals (the state does not depend on the probe), computing the n products vᵀJv per step from
one linearisation of f̃; ``False`` solves the n augmented ODEs independently, as the paper does.

Shapes: rows (image × class) are solved by ``jax.vmap`` of a per-row solve, in jitted chunks of
``chunk_size`` rows (the last padded, so each chunk shape compiles once). With n probes each
evaluation of the vector field runs the score network on 1 point plus n tangent (JVP) passes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Literal, NamedTuple, Sequence

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from sbgc.method.devices import (
    chunk_for_memory,
    device_memory_bytes,
    names_the_chunk_knob,
    padded_chunks,
    row_sharding,
    shard_rows,
    sharded_chunk,
)
from sbgc.method.numerics import highest_precision
from sbgc.method.sde import SDE

Array = jax.Array
ScoreFn = Callable[[Array, Array, Array], Array]
PriorLogpFn = Callable[[Array, Array], Array]
Probe = Literal["rademacher", "gaussian", "exact"]
DataScaling = Literal["centered", "unit"]
ErrorNorm = Literal["split", "rms"]
Adjoint = Literal["recursive", "backsolve"]

SOLVERS: dict[str, type[diffrax.AbstractERK]] = {
    "dopri5": diffrax.Dopri5,
    "tsit5": diffrax.Tsit5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "heun": diffrax.Heun,
    "ralston": diffrax.Ralston,
    "midpoint": diffrax.Midpoint,
}
PROBES = ("rademacher", "gaussian", "exact")
DATA_SCALINGS = ("centered", "unit")
ADJOINTS = ("recursive", "backsolve")
STEP_GRIDS = ("uniform", "log")


class LikelihoodSolveError(RuntimeError):
    """A probability-flow solve hit ``max_steps``, failed inside the solver, or gave non-finite values.

    ``rows`` lists (image index, class label) of the failed rows.
    """

    def __init__(self, message: str, rows: list[tuple[int, int]]):
        super().__init__(message)
        self.rows = rows


# --- conventions ----------------------------------------------------------------------------------
def bits_per_dim(log_p_unit: Array | np.ndarray | float, dim: int) -> np.ndarray:
    """Bits/dim of DISCRETE 8-bit data from log p (nats) of its dequantized [0, 1]-scaled version.

    bpd = −log p_[0,1](x) / (D ln 2) + 8. The dequantized density in pixel units is
    p_[0,1](x) / 256^D, and log P(pixels) ≥ E_u log p_pixel(pixels + u) (uniform dequantization), so
    this is an upper bound on the discrete model's bits/dim. log p = 0 (the uniform density on the
    unit cube) gives exactly 8.
    """
    if dim < 1:
        raise ValueError(f"dim must be a positive number of dimensions, got {dim}")
    return -np.asarray(log_p_unit, np.float64) / (dim * math.log(2.0)) + 8.0


def log_det_model_to_unit(dim: int, data_scaling: DataScaling) -> float:
    """log|det ∂x̃/∂x| of the map from [0, 1] data x to model space x̃: D log 2 (centred) or 0."""
    if data_scaling not in DATA_SCALINGS:
        raise ValueError(f"data_scaling must be one of {DATA_SCALINGS}, got {data_scaling!r}")
    return dim * math.log(2.0) if data_scaling == "centered" else 0.0


def to_unit_interval(x: Array | np.ndarray, key: Array | None, dequantize: bool, first_image: int = 0) -> Array:
    """Data in [0, 1] from uint8 pixels (x + u)/256, u ~ U[0, 1) (or + ½ without noise); floats pass.

    x: uint8 or float [B, ...] → float32 [B, ...]. Image i's noise is drawn from
    ``fold_in(key, first_image + i)``, so it does not depend on the rest of the batch (and a block of
    a sample, passed with its offset, gets the draws it has in the whole sample). Floats are taken to be data
    already (their range is not checked: the analytic densities live on all of R^D) and must come
    with dequantize=False.
    """
    x = jnp.asarray(x)
    if x.dtype == jnp.uint8:
        if not dequantize:
            return (x.astype(jnp.float32) + 0.5) / 256.0
        if key is None:
            raise ValueError("dequantize=True needs a PRNG key for the uniform noise, got key=None")
        draw = lambda i: jax.random.uniform(jax.random.fold_in(key, i), x.shape[1:], jnp.float32)
        u = jax.vmap(draw)(first_image + jnp.arange(x.shape[0]))
        return (x.astype(jnp.float32) + u) / 256.0
    if jnp.issubdtype(x.dtype, jnp.floating):
        if dequantize:
            raise ValueError(
                f"dequantize=True expects uint8 pixels, got {x.dtype} data (already continuous); "
                "pass dequantize=False for float input"
            )
        return x.astype(jnp.float32)
    raise ValueError(f"x must be uint8 pixels or floats in [0, 1], got dtype {x.dtype}")


def to_model_space(x_unit: Array, data_scaling: DataScaling) -> Array:
    """x̃ = 2x − 1 (``"centered"``) or x̃ = x (``"unit"``)."""
    log_det_model_to_unit(1, data_scaling)  # validates the name
    return 2.0 * x_unit - 1.0 if data_scaling == "centered" else x_unit


def draw_probes(key: Array, n: int, shape: tuple[int, ...], kind: Probe) -> Array | None:
    """Hutchinson probes [n, *shape] with E[v vᵀ] = I (Rademacher ±1 or standard normal).

    ``kind="exact"`` needs no probes: returns None.
    """
    if kind == "exact":
        return None
    if kind == "rademacher":
        return jax.random.rademacher(key, (n, *shape), jnp.float32)
    if kind == "gaussian":
        return jax.random.normal(key, (n, *shape), jnp.float32)
    raise ValueError(f"probe must be one of {PROBES}, got {kind!r}")


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def image_probes(key: Array, image_ids: Array, n: int, shape: tuple[int, ...], kind: Probe) -> Array:
    """Probes [len(ids), n, *shape] of the given images: image i's from ``fold_in(key, i)``.

    The same image gets the same probes whatever else is in its chunk or batch, and every class of
    an image (every row with that image id) gets the same probes: common random numbers.
    """
    return jax.vmap(lambda i: draw_probes(jax.random.fold_in(key, i), n, shape, kind))(image_ids)


# --- divergence (diffrax CNF-example style) -------------------------------------------------------
def exact_divergence(fn: Callable[[Array], Array], x: Array) -> tuple[Array, Array]:
    """f(x) [*shape] and the exact trace of ∂f/∂x, shape [1]: one JVP per input dimension."""
    f, jvp_fn = jax.linearize(fn, x)
    d = x.size
    basis = jnp.eye(d, dtype=x.dtype).reshape((d, *x.shape))  # [D, *shape]
    columns = jax.vmap(jvp_fn)(basis).reshape(d, d)  # row i: J e_i
    return f, jnp.trace(columns)[None]


def hutchinson_divergence(fn: Callable[[Array], Array], x: Array, probes: Array) -> tuple[Array, Array]:
    """f(x) [*shape] and vₖᵀ (∂f/∂x) vₖ for probes v [n, *shape] → [n], from one linearisation."""
    f, jvp_fn = jax.linearize(fn, x)
    jv = jax.vmap(jvp_fn)(probes)  # [n, *shape]
    return f, jnp.sum((jv * probes).reshape(probes.shape[0], -1), axis=1)


# --- settings and the per-row solve ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SolverSettings:
    """How the probability-flow ODE is solved (hashable: a static argument of the jitted solve)."""

    solver: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    eps: float = 1e-5  # start time ε: the paper's 1e-5 (score_flow passes 1e-2 for sub-VP)
    max_steps: int = 4096
    error_norm: ErrorNorm = "split"
    shared_trajectory: bool = True
    # First trial step. (diffrax 0.7.2 with dt0=None skips its initial-step heuristic inside
    # diffeqsolve, whose terms are wrapped, and silently uses 0.01: we say so explicitly.)
    dt0: float = 0.01
    # Fixed-step solving: n_steps steps instead of the PID controller; rtol, atol and dt0 are then
    # ignored. None: adaptive.
    n_steps: int | None = None
    # Where the fixed steps fall (fixed_step_times): "uniform", equal steps of (T − ε)/n_steps
    # (diffrax.ConstantStepSize); "log", equal steps in log t (diffrax.StepTo), small near ε where
    # the probability-flow ODE of a trained model changes fastest and large near T.
    step_grid: str = "uniform"
    # Reverse-mode derivative of the solve: "recursive" differentiates the solver's steps
    # (diffrax.RecursiveCheckpointAdjoint, the exact gradient of the computed solution);
    # "backsolve" solves the continuous adjoint ODE backwards (diffrax.BacksolveAdjoint).
    adjoint: Adjoint = "recursive"
    # Checkpoints of RecursiveCheckpointAdjoint: memory ≈ checkpoints × solver state per row,
    # more checkpoints recompute fewer steps. None: diffrax's default, ~log2(max_steps).
    checkpoints: int | None = None
    # Fixed steps only: take the n_steps steps of the same diffrax solver object in straight-line
    # code instead of diffeqsolve's while loop (same steps, same arithmetic), so that reverse mode
    # differentiates an unrolled graph: XLA:CPU runs the network's second-order backward pass much
    # faster outside a loop (bench/attack_gradient.py --unroll-study). The adjoint is then plain
    # reverse mode through the steps, i.e. what "recursive" computes; compile time grows with n_steps.
    unroll: bool = False

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {self.solver!r}")
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(f"rtol and atol must be positive, got rtol={self.rtol}, atol={self.atol}")
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}")
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"max_steps must be a positive int, got {self.max_steps!r}")
        if not self.dt0 > 0:
            raise ValueError(f"dt0 must be positive, got {self.dt0}")
        if self.error_norm not in ("split", "rms"):
            raise ValueError(f"error_norm must be 'split' or 'rms', got {self.error_norm!r}")
        if self.n_steps is not None:
            if not (isinstance(self.n_steps, int) and self.n_steps >= 1):
                raise ValueError(f"n_steps must be None (adaptive) or a positive int, got {self.n_steps!r}")
            if self.n_steps > self.max_steps:
                raise ValueError(f"n_steps={self.n_steps} exceeds max_steps={self.max_steps}")
        if self.adjoint not in ADJOINTS:
            raise ValueError(f"adjoint must be one of {ADJOINTS}, got {self.adjoint!r}")
        if self.checkpoints is not None and not (isinstance(self.checkpoints, int) and self.checkpoints >= 1):
            raise ValueError(f"checkpoints must be None or a positive int, got {self.checkpoints!r}")
        if self.step_grid not in STEP_GRIDS:
            raise ValueError(f"step_grid must be one of {STEP_GRIDS}, got {self.step_grid!r}")
        if self.step_grid != "uniform" and (self.n_steps is None or self.adjoint != "recursive"):
            raise ValueError(f"step_grid={self.step_grid!r} needs fixed steps (n_steps) and adjoint='recursive', "
                             f"got n_steps={self.n_steps!r}, adjoint={self.adjoint!r}")
        if self.unroll and (self.n_steps is None or self.adjoint != "recursive"):
            raise ValueError("unroll=True needs fixed steps (n_steps) and reverse mode through them "
                             f"(adjoint='recursive'), got n_steps={self.n_steps!r}, adjoint={self.adjoint!r}")

    def fixed_step_times(self, t1: float) -> np.ndarray:
        """The n_steps + 1 times ε = t_0 < … < t_N = t1 of a fixed-step solve: equally spaced
        ("uniform") or equally spaced in log t ("log", t_k = ε (t1/ε)^(k/N))."""
        if self.n_steps is None:
            raise ValueError("fixed_step_times needs fixed steps (n_steps)")
        k = np.arange(self.n_steps + 1) / self.n_steps
        if self.step_grid == "log":
            times = self.eps * (t1 / self.eps) ** k
        else:
            times = self.eps + k * (t1 - self.eps)
        times[0], times[-1] = self.eps, t1
        return times

    def evaluations(self, num_steps: Array) -> Array:
        """Vector-field evaluations of one solve that took ``num_steps`` steps (rejected included).

        s·steps + [FSAL]: s new stages per step (the first stage is reused from the previous step
        when the tableau is first-same-as-last, FSAL), plus that first stage once at the start.
        Dopri5: 6·steps + 1; Heun: 2·steps. Checked against counted calls in the tests.
        """
        tab = SOLVERS[self.solver].tableau
        per_step = tab.num_stages - int(tab.fsal)
        return per_step * num_steps + int(tab.fsal)


def _norm(kind: ErrorNorm) -> Callable:
    if kind == "rms":
        return optx.rms_norm

    def split_norm(state):
        x, logp = state
        return jnp.maximum(optx.rms_norm(x), optx.rms_norm(logp))

    return split_norm


class RowSolution(NamedTuple):
    """Raw per-row output of :func:`solve_rows` (model space).  R rows, n probes (1 if exact)."""

    prior_logp: Array  # [R, n] log p_T(x(T)) (the same for all n when the trajectory is shared)
    delta_logp: Array  # [R, n] ∫_ε^T ∇·f̃ dt
    num_steps: Array  # [R, s] solver steps per solve (s = 1 shared, n independent)
    successful: Array  # [R] bool: every solve of the row reached T
    max_steps_reached: Array  # [R] bool


def _solve_one(
    score_fn: ScoreFn,
    sde: SDE,
    x: Array,
    y: Array,
    probes: Array | None,
    settings: SolverSettings,
    prior_logp_fn: PriorLogpFn | None,
):
    """One augmented solve for one row. x [*shape], y [], probes [m, *shape] or None (exact).

    Everything traced that the vector field reads (the score function's parameters, y, probes)
    travels in ``args`` rather than a closure, so any diffrax adjoint can differentiate it.
    """

    def vector_field(t, state, args):
        score, label, v = args  # score_fn, y [], probes [m, *shape] or None
        x_t, _ = state  # [*shape], [m]
        t1 = jnp.reshape(t, (1,)).astype(jnp.float32)

        def drift(z):  # f̃(z, t, y): [*shape] → [*shape]
            s = score(z[None], t1, label[None])
            return sde.probability_flow_drift(z[None], t1, s)[0]

        if v is None:
            return exact_divergence(drift, x_t)
        return hutchinson_divergence(drift, x_t, v)

    m = 1 if probes is None else probes.shape[0]
    y0 = (x, jnp.zeros((m,), jnp.float32))
    if settings.unroll:
        z, delta = unrolled_fixed_steps(vector_field, SOLVERS[settings.solver](), settings.fixed_step_times(sde.T),
                                        y0, (score_fn, y, probes))  # fmt: skip
        prior = sde.prior_logp(z[None])[0] if prior_logp_fn is None else prior_logp_fn(z[None], y[None])[0]
        true = jnp.asarray(True)
        return jnp.broadcast_to(prior, (m,)), delta, jnp.asarray(settings.n_steps), true, ~true
    if settings.n_steps is None:
        controller = diffrax.PIDController(rtol=settings.rtol, atol=settings.atol, norm=_norm(settings.error_norm))
        dt0 = settings.dt0
    elif settings.step_grid == "uniform":
        controller, dt0 = diffrax.ConstantStepSize(), (sde.T - settings.eps) / settings.n_steps
    else:
        controller, dt0 = diffrax.StepTo(ts=jnp.asarray(settings.fixed_step_times(sde.T), jnp.float32)), None
    if settings.adjoint == "backsolve":
        # The backward solve's state is (x, log p, their adjoints, the args' adjoints), to which the
        # split norm does not apply: it is controlled by the RMS norm at the same tolerances.
        back = diffrax.ConstantStepSize() if settings.n_steps else diffrax.PIDController(rtol=settings.rtol, atol=settings.atol)
        adjoint = diffrax.BacksolveAdjoint(stepsize_controller=back)
    else:  # reverse mode through the steps (jax.grad)
        adjoint = diffrax.RecursiveCheckpointAdjoint(checkpoints=settings.checkpoints)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        SOLVERS[settings.solver](),
        t0=settings.eps,
        t1=sde.T,
        dt0=dt0,
        y0=y0,
        args=(score_fn, y, probes),
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=controller,
        adjoint=adjoint,
        max_steps=settings.max_steps,
        throw=False,
    )
    z, delta = sol.ys[0][0], sol.ys[1][0]  # [*shape], [m]
    if prior_logp_fn is None:
        prior = sde.prior_logp(z[None])[0]
    else:
        prior = prior_logp_fn(z[None], y[None])[0]
    return (
        jnp.broadcast_to(prior, (m,)),
        delta,
        sol.stats["num_steps"],
        diffrax.is_successful(sol.result),
        sol.result == diffrax.RESULTS.max_steps_reached,
    )


def unrolled_fixed_steps(vector_field: Callable, solver: diffrax.AbstractSolver, times: Sequence[float],
                         y0: Any, args: Any) -> Any:
    """y(times[-1]) of dy/dt = vector_field(t, y, args) from y0 at times[0] by one step of
    ``solver`` (a diffrax solver object) from each time to the next, written out as straight-line
    code (no while loop).

    The steps are diffrax's own (``solver.init`` / ``solver.step``, FSAL state carried), so the
    result equals ``diffeqsolve`` with ``ConstantStepSize`` / ``StepTo`` over the same times up to
    float rounding (tested); its reverse-mode derivative is that of the same computation.
    """
    term = diffrax.ODETerm(vector_field)
    times = [float(t) for t in times]
    state = solver.init(term, times[0], times[1], y0, args)
    y = y0
    for a, b in zip(times[:-1], times[1:]):
        y, _, _, state, _ = solver.step(term, a, b, y, args, state, made_jump=False)
    return y


@highest_precision
def solve_rows(
    score_fn: ScoreFn,
    sde: SDE,
    x: Array,
    y: Array,
    probes: Array | None,
    settings: SolverSettings,
    prior_logp_fn: PriorLogpFn | None = None,
) -> RowSolution:
    """Pure JAX probability-flow log-densities of R rows in MODEL space (jit- and grad-able).

    x: float32 [R, *shape] (model space); y: int32 [R]; probes: [R, n, *shape] (per-row probes) or
    None for the exact trace. ``prior_logp_fn(z [1, *shape], y [1]) -> [1]`` replaces the N(0, I)
    prior (e.g. an exact p_T in tests); default ``sde.prior_logp``.
    log p_model(x | y) ≈ prior_logp + delta_logp, one value per probe. No checks: see ``successful``.
    Traced at the highest matmul precision (:mod:`sbgc.method.numerics`).
    """
    per_row = lambda xi, yi, pi: _solve_one(score_fn, sde, xi, yi, pi, settings, prior_logp_fn)
    if probes is None:
        prior, delta, steps, ok, maxed = jax.vmap(lambda xi, yi: per_row(xi, yi, None))(x, y)
        steps = steps[:, None]
    elif settings.shared_trajectory:
        prior, delta, steps, ok, maxed = jax.vmap(per_row)(x, y, probes)
        steps = steps[:, None]
    else:
        # n independent solves per row, each with one probe: vmap over rows, then over probes.
        per_probe = jax.vmap(lambda xi, yi, pk: per_row(xi, yi, pk[None]), in_axes=(None, None, 0))
        prior, delta, steps, ok, maxed = jax.vmap(per_probe)(x, y, probes)
        prior, delta = prior[..., 0], delta[..., 0]  # [R, n]
        ok, maxed = ok.all(axis=1), maxed.any(axis=1)
    return RowSolution(prior, delta, steps, ok, maxed)


_solve_rows_jit = eqx.filter_jit(solve_rows)


def labels_per_image(y: Array | np.ndarray, x: Array | np.ndarray) -> np.ndarray:
    """``y`` as an int array [B] of one label per image of ``x`` [B, ...] (a ValueError otherwise)."""
    y = np.asarray(y)
    b = np.shape(x)[0] if np.ndim(x) else 0
    if y.shape != (b,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be an int array of shape ({b},) matching x, got {y.dtype} {y.shape}")
    return y


def change_of_variables(prior_logp, delta_logp, log_det):
    """Paper eq. 2: log p₀(x(0)) = log p_T(x(T)) + ∫₀ᵀ ∇·f̃(x(t), t) dt, plus log|det ∂x̃/∂x| of the
    map from the [0, 1] data into model space (D log 2 for the centred [−1, 1] space).

    prior_logp, delta_logp: arrays of one shape (e.g. [R, n], per row and probe); log_det: a float.
    Works on numpy and JAX arrays alike.
    """
    return prior_logp + delta_logp + log_det


# --- the public, checked, chunked entry points ----------------------------------------------------
class LikelihoodResult(NamedTuple):
    """Log-likelihoods of a batch; leading axes [*L] = [B] (:func:`log_likelihood`) or [B, K].

    log_p_probes = prior_logp + delta_logp + log_det, per probe; log_p is their mean.
    """

    log_p: np.ndarray  # [*L] log p(x | y), nats, [0, 1]-scaled dequantized data (mean over probes)
    log_p_probes: np.ndarray  # [*L, n]
    bpd: np.ndarray  # [*L] bits/dim of the discrete data, from log_p
    bpd_probes: np.ndarray  # [*L, n]
    nfe: np.ndarray  # [*L] vector-field evaluations (one score forward each), summed over solves
    prior_logp: np.ndarray  # [*L, n] log p_T(x(T)) in model space
    delta_logp: np.ndarray  # [*L, n] ∫ ∇·f̃ dt in model space
    log_det: float  # log|det ∂x̃/∂x|: D log 2 (centred) or 0 (unit)
    dim: int  # D


@dataclasses.dataclass(frozen=True)
class PreparedBatch:
    """Model-space data of B images and the key of their probes (common random numbers)."""

    x_model: Array  # [B, *shape] model space
    probe_key: Array | None  # None for the exact trace
    n_probes: int
    probe: Probe
    log_det: float
    dim: int
    first_image: int = 0  # image i of the batch draws as image first_image + i of its sample

    def probes(self, image_ids: Array | np.ndarray) -> Array | None:
        """Probes [len(ids), n, *shape] of the given images (positions in the batch; None for the
        exact trace)."""
        if self.probe == "exact":
            return None
        shape = tuple(self.x_model.shape[1:])
        ids = self.first_image + jnp.asarray(image_ids)
        return image_probes(self.probe_key, ids, self.n_probes, shape, self.probe)


def prepare_batch(
    x: Array | np.ndarray,
    key: Array | None,
    *,
    n_probes: int,
    probe: Probe,
    dequantize: bool,
    data_scaling: DataScaling,
    first_image: int = 0,
) -> PreparedBatch:
    """Dequantize and map to model space a batch x [B, *shape]; fix the key of its probes.

    The key is split once into (dequantization key, probe key); image i's noise and probes are
    drawn from ``fold_in(·, i)`` of these, so every class of an image sees the same draws, and the
    draws of an image do not depend on the batch it came in. ``first_image`` offsets those indices:
    a block of a sample, evaluated with its offset, gets exactly the draws it has in the whole
    sample (so a sample can be evaluated, and cached, block by block). Probes are drawn per chunk
    (:meth:`PreparedBatch.probes`), so their memory is bounded by the chunk, not the batch.
    """
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    if not (isinstance(n_probes, (int, np.integer)) and n_probes >= 1):
        raise ValueError(f"n_probes must be a positive int, got {n_probes!r}")
    if data_scaling not in DATA_SCALINGS:
        raise ValueError(f"data_scaling must be one of {DATA_SCALINGS}, got {data_scaling!r}")
    if not (isinstance(first_image, (int, np.integer)) and first_image >= 0):
        raise ValueError(f"first_image must be a non-negative int, got {first_image!r}")
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x must be a batch [B, ...] with B >= 1 and at least one data axis, got shape {x.shape}")
    needs_key = (dequantize and x.dtype == jnp.uint8) or probe != "exact"
    if needs_key and key is None:
        raise ValueError("a PRNG key is needed (dequantization noise or Hutchinson probes), got key=None")
    k_deq, k_probe = jax.random.split(key) if key is not None else (None, None)
    x_model = to_model_space(to_unit_interval(x, k_deq, dequantize, int(first_image)), data_scaling)
    dim = int(np.prod(x.shape[1:]))
    n = 1 if probe == "exact" else int(n_probes)
    return PreparedBatch(x_model, k_probe, n, probe, log_det_model_to_unit(dim, data_scaling), dim, int(first_image))


def _failed_rows(out: RowSolution, images: np.ndarray, labels: np.ndarray) -> list[tuple[int, int, str]]:
    """(image, class, why) of every row of a solved chunk (numpy ``out``, rows [r]) that did not reach
    T or gave a non-finite log-likelihood."""
    finite = np.isfinite(out.prior_logp).all(axis=1) & np.isfinite(out.delta_logp).all(axis=1)
    failed = []
    for j, (i, c) in enumerate(zip(images, labels)):
        if not out.successful[j]:
            why = "max_steps reached" if out.max_steps_reached[j] else "solver did not succeed"
            failed.append((int(i), int(c), f"{why} ({int(out.num_steps[j].max())} steps)"))
        elif not finite[j]:
            failed.append((int(i), int(c), "non-finite log-likelihood"))
    return failed


def _failure_message(
    failed: list[tuple[int, int, str]], settings: SolverSettings, n_rows: int
) -> str:
    shown = "; ".join(f"image {i} class {c}: {why}" for i, c, why in failed[:20])
    more = f"; … and {len(failed) - 20} more" if len(failed) > 20 else ""
    return (
        f"probability-flow ODE solve failed for {len(failed)} of {n_rows} rows "
        f"(solver={settings.solver}, rtol={settings.rtol}, atol={settings.atol}, eps={settings.eps}, "
        f"max_steps={settings.max_steps}): {shown}{more}. No log-likelihood is returned for a failed "
        "solve; raise max_steps, loosen the tolerances or check the score function for NaN/inf."
    )


def log_likelihood_table(
    score_fn: ScoreFn,
    sde: SDE,
    x: Array | np.ndarray,
    labels: Array | np.ndarray,
    key: Array | None,
    *,
    solver: SolverSettings = SolverSettings(),
    n_probes: int = 30,
    probe: Probe = "rademacher",
    dequantize: bool = True,
    data_scaling: DataScaling = "centered",
    chunk_size: int | None = None,
    progress: bool = True,
    prior_logp_fn: PriorLogpFn | None = None,
    first_image: int = 0,
) -> LikelihoodResult:
    """log p(x_i | labels[i, k]) for B images × K labels each, with common random numbers per image.

    Args:
        score_fn: ``score_fn(x [R, *shape], t [R], y [R]) -> [R, *shape]`` in model space.
        sde: the forward SDE the score model was trained for.
        x: uint8 pixels or float data [B, *shape] (see the module docstring).
        labels: int [B, K] class labels per image.
        key: PRNG key for the dequantization noise and the probes (None only if neither is drawn).
        solver: how the ODE is solved (:class:`SolverSettings`: method, rtol, atol, start time ε,
            max_steps, error norm, shared trajectory, fixed steps); the paper's by default.
        n_probes: Hutchinson probes per row (the paper: 30; ignored for ``probe="exact"``).
        probe: ``"rademacher"``, ``"gaussian"`` or ``"exact"`` (full Jacobian trace; small D).
        dequantize: add U[0, 1) noise to uint8 pixels (else use the bin centre).
        data_scaling: model space is 2x − 1 (``"centered"``) or x (``"unit"``).
        chunk_size: rows (image, label) per jitted call (bounds memory: each evaluation runs the
            network on chunk_size × (1 + n) points in shared mode), rounded up to a multiple of the
            local devices, over which each chunk's rows are split (:func:`row_sharding`; the results
            do not depend on the device count or the chunk). On a device that reports its memory
            (GPU) a chunk that would not fit is lowered, and None takes as many rows as fit
            (:func:`chunk_for_memory`); None on a CPU: 128. progress: tqdm over chunks.
        prior_logp_fn: ``fn(z [1, *shape], y [1]) -> [1]`` replacing the N(0, I) prior (tests).
        first_image: the images' position in their sample, for the random draws (image i draws as
            image ``first_image + i``): a block evaluated with its offset equals that block of the
            whole sample's table (:func:`prepare_batch`).

    Returns:
        :class:`LikelihoodResult` with leading axes [B, K].

    Raises:
        LikelihoodSolveError: a solve failed or produced non-finite values (rows are named).
        ValueError: malformed input. TypeError: ``solver`` is not a :class:`SolverSettings`.
    """
    if not isinstance(solver, SolverSettings):
        raise TypeError(f"solver must be a SolverSettings (e.g. SolverSettings(rtol=1e-3, atol=1e-3)), got {solver!r}")
    settings = solver
    if not (chunk_size is None or isinstance(chunk_size, (int, np.integer)) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be a positive int or None (sized from device memory), got {chunk_size!r}")
    batch = prepare_batch(
        x, key, n_probes=n_probes, probe=probe, dequantize=dequantize, data_scaling=data_scaling,
        first_image=first_image,
    )
    labels = np.asarray(labels)
    b = batch.x_model.shape[0]
    if labels.ndim != 2 or labels.shape[0] != b or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an int array of shape ({b}, K), got {labels.dtype} {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be non-negative class indices, got minimum {labels.min()}")
    k = labels.shape[1]
    n = batch.n_probes
    image_of_row = np.repeat(np.arange(b), k)  # [R]
    label_of_row = labels.reshape(-1).astype(np.int32)  # [R]
    n_rows = b * k
    sharding = row_sharding()  # every local device solves its share of each chunk's rows

    def compile_at(rows: int):  # the chunk's solve, compiled for ``rows`` rows (to size it from device memory)
        img = np.zeros(rows, np.int64)
        args = shard_rows(sharding, batch.x_model[img], jnp.asarray(label_of_row[img]), batch.probes(img))
        return _solve_rows_jit.lower(score_fn, sde, *args, settings, prior_logp_fn).compile()

    chunk, compiled = chunk_for_memory(chunk_size, n_rows, compile_at, multiple=sharded_chunk(1, sharding),
                                       limit=device_memory_bytes(), fallback=128)  # fmt: skip
    solve = _solve_rows_jit if compiled is None else compiled

    prior = np.empty((n_rows, n), np.float64)
    delta = np.empty((n_rows, n), np.float64)
    nfe = np.empty((n_rows,), np.int64)
    for rows, padded in padded_chunks(n_rows, chunk, desc="log-likelihood", progress=progress):
        img = image_of_row[padded]
        with names_the_chunk_knob("chunk_size", chunk, f"one ODE solve with {n} probe(s)"):
            x_rows, y_rows, p_rows = shard_rows(sharding, batch.x_model[img], jnp.asarray(label_of_row[padded]),
                                                batch.probes(img))
            out = solve(score_fn, sde, x_rows, y_rows, p_rows, settings, prior_logp_fn)
            out = jax.tree_util.tree_map(lambda a: np.asarray(a)[: rows.size], out)
        failed = _failed_rows(out, image_of_row[rows], label_of_row[rows])
        if failed:
            raise LikelihoodSolveError(
                _failure_message(failed, settings, n_rows), [(i, c) for i, c, _ in failed]
            )
        prior[rows], delta[rows] = out.prior_logp, out.delta_logp
        nfe[rows] = np.asarray(settings.evaluations(out.num_steps)).sum(axis=1)

    log_p_probes = change_of_variables(prior, delta, batch.log_det).reshape(b, k, n)
    log_p = log_p_probes.mean(axis=-1)
    return LikelihoodResult(
        log_p=log_p,
        log_p_probes=log_p_probes,
        bpd=bits_per_dim(log_p, batch.dim),
        bpd_probes=bits_per_dim(log_p_probes, batch.dim),
        nfe=nfe.reshape(b, k),
        prior_logp=prior.reshape(b, k, n),
        delta_logp=delta.reshape(b, k, n),
        log_det=batch.log_det,
        dim=batch.dim,
    )


def log_likelihood(
    score_fn: ScoreFn, sde: SDE, x: Array | np.ndarray, y: Array | np.ndarray, key: Array | None, **kwargs
) -> LikelihoodResult:
    """log p(x | y) of a batch by the probability-flow ODE (paper eqs. 1–3): x [B, *shape], y int [B].

    Keyword arguments as :func:`log_likelihood_table` (``solver=SolverSettings(...)``, ``n_probes``,
    ``probe``, ``dequantize``, ``data_scaling``, ``chunk_size``, ``progress``, ``prior_logp_fn``).
    Returns a :class:`LikelihoodResult` with leading axis [B].
    """
    y = labels_per_image(y, x)
    res = log_likelihood_table(score_fn, sde, x, y[:, None], key, **kwargs)
    squeeze = lambda a: a[:, 0]
    return res._replace(
        log_p=squeeze(res.log_p), log_p_probes=squeeze(res.log_p_probes), bpd=squeeze(res.bpd),
        bpd_probes=squeeze(res.bpd_probes), nfe=squeeze(res.nfe),
        prior_logp=squeeze(res.prior_logp), delta_logp=squeeze(res.delta_logp),
    )  # fmt: skip
