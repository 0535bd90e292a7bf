"""The score_sde-style reference likelihood: scipy ``solve_ivp`` on the host (for comparison only).

As in yang-song/score_sde ``likelihood.py``: the rows of a chunk are flattened into ONE state
vector [R·D + R] (images, then one log-p integral per row), integrated by scipy's ``RK45`` from
t = ε to T with rtol/atol (scipy's error norm: RMS over all components); every right-hand side is
a jitted device call whose output is copied back to numpy. One Rademacher probe per row, drawn once
per solve. Same data conventions and outputs as :mod:`sbgc.method.likelihood` (the dequantization noise
and probe come from the same key split as ``log_likelihood(..., n_probes=1, probe="rademacher")``,
so the two are paired), and nfe = ``sol.nfev`` of the solve that contained the row (scipy counts
rejected steps and its 2 initial-step evaluations).
"""

from __future__ import annotations

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate
from tqdm import tqdm

from sbgc.method.classify import ClassLikelihoods
from sbgc.method.likelihood import (
    DataScaling,
    LikelihoodResult,
    LikelihoodSolveError,
    ScoreFn,
    SolverSettings,
    bits_per_dim,
    change_of_variables,
    hutchinson_divergence,
    labels_per_image,
    prepare_batch,
)
from sbgc.method.numerics import highest_precision
from sbgc.method.sde import SDE

Array = jax.Array


@eqx.filter_jit
@highest_precision
def _rhs(score_fn: ScoreFn, sde: SDE, x: Array, t: Array, y: Array, probes: Array) -> tuple[Array, Array]:
    """f̃(x, t) [R, *shape] and vᵀ(∂f̃/∂x)v [R] for rows x [R, *shape], one probe each [R, *shape]."""

    def per_row(xi, yi, vi):
        t1 = jnp.reshape(t, (1,)).astype(jnp.float32)

        def drift(z):
            return sde.probability_flow_drift(z[None], t1, score_fn(z[None], t1, yi[None]))[0]

        f, div = hutchinson_divergence(drift, xi, vi[None])
        return f, div[0]

    return jax.vmap(per_row)(x, y, probes)


def reference_log_likelihood_table(
    score_fn: ScoreFn,
    sde: SDE,
    x: Array | np.ndarray,
    labels: Array | np.ndarray,
    key: Array,
    *,
    solver: SolverSettings = SolverSettings(),
    dequantize: bool = True,
    data_scaling: DataScaling = "centered",
    chunk_size: int | None = None,
    progress: bool = True,
) -> LikelihoodResult:
    """log p(x_i | labels[i, k]) by scipy RK45, [B, K] leading axes, one probe (n = 1).

    ``solver``: only its rtol, atol and ε are used (the method is always scipy's RK45, as in
    score_sde). ``chunk_size`` rows share one joint solve (default: all rows, as score_sde solves a
    batch).
    """
    if not isinstance(solver, SolverSettings):
        raise TypeError(f"solver must be a SolverSettings, got {solver!r}")
    rtol, atol, eps = solver.rtol, solver.atol, solver.eps  # scipy RK45 whatever solver.solver names
    batch = prepare_batch(
        x, key, n_probes=1, probe="rademacher", dequantize=dequantize, data_scaling=data_scaling
    )
    labels = np.asarray(labels)
    b = batch.x_model.shape[0]
    if labels.ndim != 2 or labels.shape[0] != b or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an int array of shape ({b}, K), got {labels.dtype} {labels.shape}")
    k = labels.shape[1]
    n_rows = b * k
    chunk = n_rows if chunk_size is None else min(int(chunk_size), n_rows)
    if chunk < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    shape = tuple(batch.x_model.shape[1:])
    image_of_row = np.repeat(np.arange(b), k)
    label_of_row = labels.reshape(-1).astype(np.int32)

    prior = np.empty((n_rows,), np.float64)
    delta = np.empty((n_rows,), np.float64)
    nfe = np.empty((n_rows,), np.int64)
    for start in tqdm(range(0, n_rows, chunk), desc="scipy reference", disable=not progress):
        rows = np.arange(start, min(start + chunk, n_rows))
        r = rows.size
        x0 = np.asarray(batch.x_model[image_of_row[rows]], np.float64).reshape(-1)
        y = jnp.asarray(label_of_row[rows])
        v = batch.probes(image_of_row[rows])[:, 0]  # [r, *shape], on device

        def ode_func(t, state):
            xt = jnp.asarray(state[: -r].reshape((r, *shape)), jnp.float32)
            f, div = _rhs(score_fn, sde, xt, jnp.asarray(t, jnp.float32), y, v)
            return np.concatenate([np.asarray(f, np.float64).reshape(-1), np.asarray(div, np.float64)])

        sol = scipy.integrate.solve_ivp(
            ode_func, (eps, sde.T), np.concatenate([x0, np.zeros(r)]), method="RK45", rtol=rtol, atol=atol
        )
        z = sol.y[:, -1]
        bad = not sol.success or not np.all(np.isfinite(z))
        if bad:
            why = sol.message if not sol.success else "non-finite state"
            names = [(int(image_of_row[i]), int(label_of_row[i])) for i in rows]
            raise LikelihoodSolveError(
                f"scipy RK45 reference solve failed (rtol={rtol}, atol={atol}, eps={eps}) for rows "
                f"(image, class) {names[:20]}{' …' if len(names) > 20 else ''}: {why}",
                names,
            )
        zx = jnp.asarray(z[:-r].reshape((r, *shape)), jnp.float32)
        prior[rows] = np.asarray(sde.prior_logp(zx), np.float64)
        delta[rows] = z[-r:]
        nfe[rows] = sol.nfev

    log_p = change_of_variables(prior, delta, batch.log_det).reshape(b, k)
    return LikelihoodResult(
        log_p=log_p,
        log_p_probes=log_p[..., None],
        bpd=bits_per_dim(log_p, batch.dim),
        bpd_probes=bits_per_dim(log_p, batch.dim)[..., None],
        nfe=nfe.reshape(b, k),
        prior_logp=prior.reshape(b, k, 1),
        delta_logp=delta.reshape(b, k, 1),
        log_det=batch.log_det,
        dim=batch.dim,
    )


def log_likelihood(score_fn: ScoreFn, sde: SDE, x, y, key, **kwargs) -> LikelihoodResult:
    """log p(x | y) by the scipy reference: leading axis [B] (kwargs of the table function)."""
    y = labels_per_image(y, x)
    res = reference_log_likelihood_table(score_fn, sde, x, y[:, None], key, **kwargs)
    return LikelihoodResult(*(a[:, 0] if isinstance(a, np.ndarray) else a for a in res))


def class_log_likelihoods(
    score_fn: ScoreFn, sde: SDE, x, key, *, n_classes: int = 10, **kwargs
) -> ClassLikelihoods:
    """log p(x | y) for every class by the scipy reference, same key → same draws for all classes."""
    b = np.shape(x)[0] if np.ndim(x) else 0
    labels = np.tile(np.arange(n_classes, dtype=np.int32), (b, 1))
    return ClassLikelihoods(*reference_log_likelihood_table(score_fn, sde, x, labels, key, **kwargs))


@dataclasses.dataclass(frozen=True)
class Reference:
    """The scipy reference as a scorer (:mod:`sbgc.method.scorers`): log p(x | y) by RK45 on the host,
    one Rademacher probe per row (paired with :class:`sbgc.method.scorers.Ode` at ``n_probes=1``: the
    same key gives the same dequantization and probe). Only ``solver``'s rtol, atol and ε are used.
    ``chunk_size`` rows share one joint solve, as score_sde solves a batch (it changes scipy's error
    norm, hence the numbers: it is part of the key). No differentiable form (a host loop)."""

    solver: SolverSettings = SolverSettings()
    data_scaling: DataScaling = "centered"
    chunk_size: int | None = None

    gives_density = True

    def describe(self) -> str:
        s = self.solver
        rows = "all rows" if self.chunk_size is None else f"{self.chunk_size} rows"
        return f"scipy RK45 reference (rtol {s.rtol:g}, atol {s.atol:g}, eps {s.eps:g}, {rows} per solve), 1 probe"

    def scores(self, score_fn, sde, x, key, *, n_classes=10, classes=None, first_image=0, progress=False):
        from sbgc.method.scorers import ClassScores, classes_of, is_pixels

        if first_image:
            raise ValueError("the reference draws by position in the batch: first_image must be 0")
        labels = classes_of(x, n_classes, classes)
        start = time.perf_counter()
        res = reference_log_likelihood_table(score_fn, sde, x, labels, key, solver=self.solver,
                                             dequantize=is_pixels(x), data_scaling=self.data_scaling,
                                             chunk_size=self.chunk_size, progress=progress)  # fmt: skip
        nfe = np.asarray(res.nfe).sum(axis=1)
        return ClassScores(np.asarray(res.log_p, np.float64), np.full(labels.shape, np.nan), labels,
                           np.ones(labels.shape, bool), nfe, 2 * nfe, time.perf_counter() - start, res.dim, True,
                           False)  # fmt: skip

    def pure(self, score_fn, sde, key, *, n_classes=10):
        raise NotImplementedError("the scipy reference runs on the host: it has no differentiable form")
