"""Maximum-likelihood denoising score matching (Song, Durkan, Murray & Ermon 2021; paper §2, A.1).

The score-matching objective with weighting λ(t) on [ε, T] is

    J_λ(θ) = ½ ∫_ε^T λ(t) E_{x₀, x_t} ‖s_θ(x_t, t) − ∇ log p_t(x_t | x₀)‖² dt,

and with x_t = m(t) x₀ + σ(t) z the conditional score is −z/σ(t). Three estimators of J_λ:

``"likelihood"``     λ = g²,  t ~ U[ε, T]:       (T − ε) · ½ g(t)² ‖s + z/σ‖²
``"likelihood_is"``  λ = g²,  t ~ w(t)/Z, w = g²/σ²: Z · ½ ‖σ s + z‖²          (the paper's choice)
``"sigma2"``         λ = σ²,  t ~ U[ε, T]:       (T − ε) · ½ ‖σ s + z‖²          (the usual DDPM-style loss)

The first two have the same expectation (tested); with λ = g² the objective bounds the negative
log-likelihood up to a constant (Song et al. 2021, Thm. 1), which is why it is called maximum
likelihood training. Importance sampling removes the huge variance of g²/σ² near t = ε.
"""

from __future__ import annotations

from typing import Callable, Literal

import jax
import jax.numpy as jnp

from sbgc.method.sde import SDE, broadcast_time

Array = jax.Array
ScoreFn = Callable[[Array, Array, Array], Array]
Weighting = Literal["likelihood_is", "likelihood", "sigma2"]
WEIGHTINGS: tuple[str, ...] = ("likelihood_is", "likelihood", "sigma2")


def sample_time(sde: SDE, key: Array, batch: int, weighting: Weighting, eps: float) -> tuple[Array, Array]:
    """Draw t [batch] for ``weighting`` and the factor [batch] that makes the estimator unbiased.

    The factor is 1 / (sampling density of t) times λ(t)/w(t) where applicable, folded so that
    ``factor * ½ ‖σ s + z‖²`` estimates J_λ (see the module docstring).
    """
    u = jax.random.uniform(key, (batch,))
    if weighting == "likelihood_is":
        t = sde.sample_importance_t(u, eps)
        return t, jnp.full((batch,), sde.importance_weight_normalizer(eps))
    t = eps + u * (sde.T - eps)
    if weighting == "likelihood":
        return t, (sde.T - eps) * sde.likelihood_weight(t)
    if weighting == "sigma2":
        return t, jnp.full((batch,), sde.T - eps)
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def scaled_score(score_fn: ScoreFn, sde: SDE, x0: Array, y: Array, t: Array, z: Array) -> Array:
    """σ(t) s_θ(x_t, t, y) at x_t = m(t) x₀ + σ(t) z (= −ε̂ for a noise-predicting network).
    x0, z: [B, ...]; t, y: [B] → [B, ...]."""
    mean, std = sde.marginal(x0, t)
    std_b = broadcast_time(std, x0)
    return std_b * score_fn(mean + std_b * z, t, y)


def squared_norm(a: Array) -> Array:
    """‖a_b‖² over all but the leading axis.  a: [B, ...] → [B]."""
    return jnp.sum(a.reshape(a.shape[0], -1) ** 2, axis=1)


def denoising_error(score_fn: ScoreFn, sde: SDE, x0: Array, y: Array, t: Array, z: Array) -> Array:
    """‖σ(t) s_θ(x_t, t, y) + z‖² summed over data dimensions.  x0, z: [B, ...]; t, y: [B] → [B]."""
    return squared_norm(scaled_score(score_fn, sde, x0, y, t, z) + z)


def dsm_loss(
    score_fn: ScoreFn,
    sde: SDE,
    x0: Array,
    y: Array,
    key: Array,
    *,
    weighting: Weighting = "likelihood_is",
    eps: float = 1e-5,
    reduce: Literal["mean", "sum"] = "mean",
) -> Array:
    """Per-example denoising score-matching loss [B], an unbiased one-sample estimate of J_λ.

    Args:
      score_fn: ``(x [B, ...], t [B], y [B]) -> score [B, ...]`` with params (and dropout rng) bound.
      x0: clean data in model space, [B, ...].
      y: integer labels [B].
      key: PRNG key for t and the noise z.
      weighting: ``"likelihood_is"`` (paper), ``"likelihood"`` or ``"sigma2"``.
      eps: smallest time ε.
      reduce: ``"sum"`` over data dimensions (nats) or ``"mean"`` (divided by D; the training scale).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    if x0.ndim < 2 or y.shape != x0.shape[:1]:
        raise ValueError(f"expected x0 [B, ...] and y [B]; got x0 {x0.shape}, y {y.shape}")
    t_key, z_key = jax.random.split(key)
    t, factor = sample_time(sde, t_key, x0.shape[0], weighting, eps)  # [B], [B]
    z = jax.random.normal(z_key, x0.shape, x0.dtype)  # [B, ...]
    loss = 0.5 * factor * denoising_error(score_fn, sde, x0, y, t, z)  # [B]
    if reduce == "mean":
        loss = loss / jnp.prod(jnp.array(x0.shape[1:]))
    return loss
