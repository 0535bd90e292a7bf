"""The score-based generative classifier: ŷ = argmax_y log p(x | y) (paper §2).

Every class log-likelihood of an image is computed with COMMON RANDOM NUMBERS: the same
dequantization noise and the same Hutchinson probes for all classes (one key, split per image, not
per class; :func:`sbgc.method.likelihood.prepare_batch`). Differences between classes then carry no
independent probe noise, which is what the argmax compares.

The unconditional density is the mean over classes, p(x) = (1/K) Σ_y p(x | y), i.e. a uniform
prior p(y) = 1/K (:func:`log_marginal`). The paper writes the sum Σ_y p(x | y); the two differ by
log K nats, 0.0011 bits/dim for K = 10 and D = 3072.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbgc.method.devices import split_rows_in_trace

from sbgc.method.likelihood import (

    DataScaling,

    LikelihoodResult,

    PriorLogpFn,

    ScoreFn,

    SolverSettings,

    bits_per_dim,

    change_of_variables,

    log_det_model_to_unit,

    log_likelihood_table,

    solve_rows,

    to_model_space,

)
from sbgc.method.sde import SDE

Array = jax.Array


class ClassLikelihoods(LikelihoodResult):
    """:class:`~sbgc.method.likelihood.LikelihoodResult` with leading axes [B, K] (image, class).

    log_p [B, K] nats; bpd [B, K]; nfe [B, K]; log_p_probes, bpd_probes, prior_logp, delta_logp
    [B, K, n] (the SAME n probes for every class of an image).
    """

    __slots__ = ()

    def predict(self) -> np.ndarray:
        """argmax_y log p(x | y): [B]."""
        return predict(self.log_p)

    def log_marginal(self) -> np.ndarray:
        """log p(x) = logsumexp_y log p(x | y) − log K: [B]."""
        return log_marginal(self.log_p)

    def marginal_bpd(self) -> np.ndarray:
        """Bits/dim of the unconditional model (uniform class prior): [B]."""
        return bits_per_dim(self.log_marginal(), self.dim)


def class_log_likelihoods(
    score_fn: ScoreFn,
    sde: SDE,
    x: Array | np.ndarray,
    key: Array | None,
    *,
    n_classes: int = 10,
    **likelihood_kwargs,
) -> ClassLikelihoods:
    """log p(x | y) for every class y of every image, with common random numbers across classes.

    x: uint8 or float [B, *shape]; ``likelihood_kwargs`` as in :func:`sbgc.method.likelihood.log_likelihood`
    (solver, n_probes, probe, dequantize, data_scaling, chunk_size, ...).
    Rows are image-major (image 0 classes 0…K−1, image 1 …), solved in chunks of ``chunk_size``.
    """
    if not (isinstance(n_classes, (int, np.integer)) and n_classes >= 1):
        raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
    b = np.shape(x)[0] if np.ndim(x) else 0
    labels = np.tile(np.arange(n_classes, dtype=np.int32), (b, 1))  # [B, K]: same key → same draws
    return ClassLikelihoods(*log_likelihood_table(score_fn, sde, x, labels, key, **likelihood_kwargs))


def predict(log_p: Array | np.ndarray) -> np.ndarray:
    """The generative classifier's decision argmax_y log p(x | y): [B, K] → int [B]."""
    log_p = np.asarray(log_p)
    if log_p.ndim != 2:
        raise ValueError(f"log_p must have shape [B, K], got shape {log_p.shape}")
    return np.argmax(log_p, axis=1)


def log_marginal(log_p: Array | np.ndarray) -> np.ndarray:
    """log p(x) = log (1/K) Σ_y p(x | y) = logsumexp_y log p(x | y) − log K: [B, K] → [B].

    The uniform-prior mean; the paper's sum Σ_y p(x | y) is larger by log K nats (for K = 10 and
    D = 3072: 0.0011 bits/dim).
    """
    log_p = np.asarray(log_p, np.float64)
    if log_p.ndim != 2:
        raise ValueError(f"log_p must have shape [B, K], got shape {log_p.shape}")
    top = log_p.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(log_p - top).sum(axis=1, keepdims=True)))[:, 0] - math.log(log_p.shape[1])


def class_log_likelihoods_pure(
    score_fn: ScoreFn,
    sde: SDE,
    x_unit: Array,
    probes: Array | None,
    *,
    n_classes: int = 10,
    solver: SolverSettings = SolverSettings(),
    data_scaling: DataScaling = "centered",
    prior_logp_fn: PriorLogpFn | None = None,
    classes: Array | None = None,
    sharding: Any = "local",
) -> tuple[Array, Array]:
    """Pure JAX class log-likelihoods for gradients (``jax.grad``/``jax.vjp`` through the solves).

    x_unit: float32 [B, *shape] data in [0, 1] (already dequantized); probes: [B, n, *shape] shared
    by all classes of an image (e.g. ``prepare_batch(...).probes(np.arange(B))``), or None (exact
    trace). Returns log p(x | y) [B, K] in nats of the
    [0, 1] data (mean over probes) and ``ok`` [B, K] (solve reached T and is finite). No chunking
    and no error raised: check ``ok`` outside the traced code. ``prior_logp_fn`` as in
    :func:`sbgc.method.likelihood.solve_rows`.

    classes: int [B, k] (traced) to solve only those classes of each image: returns [B, k], column j
    the class ``classes[:, j]`` (k solves per image instead of K: e.g. the true and the runner-up
    class, all a margin's gradient needs). None: every class 0 … n_classes − 1.

    sharding: the B·k solves are split over every local device (default ``"local"``,
    :func:`sbgc.method.devices.split_rows_in_trace`), or as the given ``row_sharding``; None: not
    split. Each row keeps its probes, so the result does not depend on the split.
    """
    b, shape = x_unit.shape[0], x_unit.shape[1:]
    dim = int(np.prod(shape))
    if classes is None:
        classes = jnp.tile(jnp.arange(n_classes, dtype=jnp.int32), (b, 1))  # [B, K]
    elif classes.ndim != 2 or classes.shape[0] != b:
        raise ValueError(f"classes must be an int array [B={b}, k], got shape {tuple(classes.shape)}")
    k = classes.shape[1]
    x_model = to_model_space(x_unit, data_scaling)
    rows_x = jnp.repeat(x_model, k, axis=0)  # [B·k, *shape], image-major
    rows_y = jnp.reshape(classes, (-1,)).astype(jnp.int32)  # [B·k]
    rows_p = None if probes is None else jnp.repeat(probes, k, axis=0)
    rows_x, rows_y, rows_p = split_rows_in_trace(rows_x, rows_y, rows_p, sharding=sharding)  # over local devices
    sol = solve_rows(score_fn, sde, rows_x, rows_y, rows_p, solver, prior_logp_fn)
    log_p = change_of_variables(sol.prior_logp, sol.delta_logp, log_det_model_to_unit(dim, data_scaling)).mean(axis=1)
    ok = sol.successful & jnp.isfinite(log_p)
    return log_p[: b * k].reshape(b, k), ok[: b * k].reshape(b, k)
