"""A class-conditional isotropic Gaussian mixture whose diffused marginals are known in closed form.

Class ``k`` (k = 0 … K−1) has M components with means μ_kj ∈ R^D, isotropic stds s_kj > 0 and
weights w_kj (Σ_j w_kj = 1):

    p₀(x | y = k) = Σ_j w_kj N(x; μ_kj, s_kj² I).

The forward SDEs of :mod:`sbgc.method.sde` are linear with the Gaussian kernel
p_t(x_t | x₀) = N(m(t) x₀, σ(t)² I), so every marginal is again a mixture of the same form,

    p_t(x | y = k) = Σ_j w_kj N(x; m(t) μ_kj, (m(t)² s_kj² + σ(t)²) I),

and its score ∇ₓ log p_t(x | k) = Σ_j r_kj(x, t) (m(t) μ_kj − x) / (m(t)² s_kj² + σ(t)²), with r the
posterior responsibilities of the components. This gives exact test cases for the
probability-flow likelihood (:mod:`sbgc.method.likelihood`) and the generative classifier
(:mod:`sbgc.method.classify`): exact densities, exact scores, exact Bayes decisions.

Shapes: points are vectors, ``x`` [B, D]; labels ``y`` int [B]; times ``t`` [B] or a scalar.
Every method is a pure JAX function of the mixture's arrays (it is an ``equinox.Module``), so a
bound method such as ``mixture.score`` can be passed wherever a score function
``score_fn(x, t, y)`` is expected and is traced, not baked in, under ``jax.jit``.

Example (two classes in 2-D, one Gaussian each)::

    mix = GaussianMixtureClasses.isotropic_gaussians(jnp.array([[-1., 0.], [1., 0.]]), std=0.8)
    x, y = mix.sample(jax.random.key(0), n_per_class=500)
    log_p = mix.class_log_probs(x)             # [1000, 2], log p(x | y) for every y
    y_hat = mix.bayes_predict(x)               # [1000], argmax_y log p(x | y)
    acc = mix.two_gaussian_bayes_accuracy()    # Φ(‖μ₁ − μ₀‖ / (2 s)) = Φ(1.25) ≈ 0.894
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sbgc.method.sde import SDE

Array = jax.Array


def _as_times(t: Array | float, batch: int) -> Array:
    """Broadcast a scalar or [B] time to float32 [B]."""
    t = jnp.asarray(t, jnp.float32)
    if t.ndim == 0:
        return jnp.broadcast_to(t, (batch,))
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or have shape ({batch},), got shape {t.shape}")
    return t


class GaussianMixtureClasses(eqx.Module):
    """Per-class isotropic Gaussian mixtures diffused by ``sde``.

    Attributes:
        means: [K, M, D] component means μ_kj.
        stds: [K, M] component standard deviations s_kj > 0 (isotropic).
        log_weights: [K, M] normalised log mixture weights log w_kj.
        sde: the forward SDE that defines the marginals p_t (static).
    """

    means: Array
    stds: Array
    log_weights: Array
    sde: SDE = eqx.field(static=True)

    def __init__(self, means, stds, weights=None, sde: SDE | None = None):
        """Args:
        means: [K, M, D] component means.
        stds: [K, M] positive component stds.
        weights: [K, M] positive weights (normalised per class here); ``None`` means equal.
        sde: forward SDE, default ``SDE("subvp")`` (the paper's).
        """
        means = np.asarray(means, np.float32)
        if means.ndim != 3:
            raise ValueError(f"means must have shape [K, M, D], got shape {means.shape}")
        k, m, _ = means.shape
        stds = np.asarray(stds, np.float32)
        if stds.shape != (k, m):
            raise ValueError(f"stds must have shape {(k, m)} to match means, got {stds.shape}")
        if not np.all(stds > 0):
            raise ValueError(f"stds must be positive, got minimum {stds.min()}")
        weights = np.ones((k, m), np.float32) if weights is None else np.asarray(weights, np.float32)
        if weights.shape != (k, m):
            raise ValueError(f"weights must have shape {(k, m)}, got {weights.shape}")
        if not np.all(weights > 0):
            raise ValueError(f"weights must be positive, got minimum {weights.min()}")
        log_w = np.log(weights) - np.log(weights.sum(axis=1, keepdims=True))
        self.means = jnp.asarray(means)
        self.stds = jnp.asarray(stds)
        self.log_weights = jnp.asarray(log_w)
        self.sde = SDE() if sde is None else sde

    @classmethod
    def isotropic_gaussians(cls, means, std: float, sde: SDE | None = None) -> GaussianMixtureClasses:
        """One Gaussian N(μ_k, std² I) per class.  means: [K, D]."""
        means = np.asarray(means, np.float32)
        if means.ndim != 2:
            raise ValueError(f"means must have shape [K, D], got shape {means.shape}")
        k = means.shape[0]
        return cls(means[:, None, :], np.full((k, 1), std, np.float32), None, sde)

    # --- sizes -----------------------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        return self.means.shape[0]

    @property
    def n_components(self) -> int:
        return self.means.shape[1]

    @property
    def dim(self) -> int:
        return self.means.shape[2]

    def _check(self, x: Array, y: Array) -> tuple[Array, Array]:
        x = jnp.asarray(x)
        y = jnp.asarray(y)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [B, {self.dim}], got shape {x.shape}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},) to match x, got {y.shape}")
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(f"y must be integer class labels, got dtype {y.dtype}")
        return x, y

    # --- marginals -------------------------------------------------------------------------------
    def marginal_params(self, t: Array) -> tuple[Array, Array]:
        """Component means [B, K, M, D] and variances [B, K, M] of p_t for times t [B]."""
        m = self.sde.mean_coeff(t)  # [B]
        sigma = self.sde.marginal_std(t)  # [B]
        mean = m[:, None, None, None] * self.means[None]  # [B, K, M, D]
        var = (m[:, None, None] * self.stds[None]) ** 2 + sigma[:, None, None] ** 2  # [B, K, M]
        return mean, var

    def _component_log_probs(self, x: Array, t: Array) -> tuple[Array, Array, Array]:
        """log w_kj N(x; m μ_kj, v_kj I) [B, K, M], with the means [B, K, M, D] and variances."""
        mean, var = self.marginal_params(t)
        sq = jnp.sum((x[:, None, None, :] - mean) ** 2, axis=-1)  # [B, K, M]
        log_n = -0.5 * sq / var - 0.5 * self.dim * jnp.log(2 * jnp.pi * var)  # [B, K, M]
        return self.log_weights[None] + log_n, mean, var

    def marginal_class_log_probs(self, x: Array, t: Array | float) -> Array:
        """log p_t(x | y = k) for every class: x [B, D], t [B] or scalar → [B, K]."""
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [B, {self.dim}], got shape {x.shape}")
        t = _as_times(t, x.shape[0])
        log_c, _, _ = self._component_log_probs(x, t)
        return jax.nn.logsumexp(log_c, axis=-1)

    def marginal_log_prob(self, x: Array, t: Array | float, y: Array) -> Array:
        """log p_t(x | y): x [B, D], t [B] or scalar, y int [B] → [B]."""
        x, y = self._check(x, y)
        lp = self.marginal_class_log_probs(x, t)  # [B, K]
        return jnp.take_along_axis(lp, y[:, None], axis=1)[:, 0]

    def log_prob(self, x: Array, y: Array) -> Array:
        """log p₀(x | y), the data density: x [B, D], y int [B] → [B]."""
        return self.marginal_log_prob(x, 0.0, y)

    def class_log_probs(self, x: Array) -> Array:
        """log p₀(x | y = k) for every class: x [B, D] → [B, K]."""
        return self.marginal_class_log_probs(x, 0.0)

    def terminal_log_prob(self, x: Array, y: Array) -> Array:
        """log p_T(x | y): the exact density at the end of the diffusion (≈ N(0, I), not equal)."""
        return self.marginal_log_prob(x, self.sde.T, y)

    def score(self, x: Array, t: Array | float, y: Array) -> Array:
        """Exact ∇ₓ log p_t(x | y) = Σ_j r_j (m μ_j − x) / v_j.  x [B, D], t [B], y int [B] → [B, D]."""
        x, y = self._check(x, y)
        t = _as_times(t, x.shape[0])
        log_c, mean, var = self._component_log_probs(x, t)  # [B, K, M], [B, K, M, D], [B, K, M]
        take = lambda a: jnp.take_along_axis(a, y.reshape((-1,) + (1,) * (a.ndim - 1)), axis=1)[:, 0]
        resp = jax.nn.softmax(take(log_c), axis=-1)  # [B, M]
        pull = (take(mean) - x[:, None, :]) / take(var)[..., None]  # [B, M, D]
        return jnp.sum(resp[..., None] * pull, axis=1)

    # --- sampling and Bayes decisions ------------------------------------------------------------
    def sample(self, key: Array, n_per_class: int) -> tuple[Array, Array]:
        """``n_per_class`` draws from p₀(x | k) for every class: x float32 [K·n, D], y int32 [K·n]."""
        if n_per_class < 1:
            raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
        k_comp, k_noise = jax.random.split(key)
        y = jnp.repeat(jnp.arange(self.n_classes, dtype=jnp.int32), n_per_class)  # [N]
        comp = jax.random.categorical(k_comp, self.log_weights[y])  # [N]
        mu = self.means[y, comp]  # [N, D]
        s = self.stds[y, comp]  # [N]
        z = jax.random.normal(k_noise, mu.shape, jnp.float32)
        return mu + s[:, None] * z, y

    def bayes_predict(self, x: Array) -> Array:
        """The Bayes classifier under a uniform class prior: argmax_k log p₀(x | k).  [B, D] → [B]."""
        return jnp.argmax(self.class_log_probs(x), axis=1)

    def two_gaussian_bayes_accuracy(self) -> float:
        """Closed-form Bayes accuracy Φ(‖μ₁ − μ₀‖ / (2 s)) for two equal-std single Gaussians.

        With a uniform prior the optimal boundary is the bisecting hyperplane; each class lies at
        distance ‖μ₁ − μ₀‖/2 from it along a direction where its std is s.
        """
        stds = np.asarray(self.stds)
        if self.n_classes != 2 or self.n_components != 1 or stds[0, 0] != stds[1, 0]:
            raise ValueError(
                "the closed form needs 2 classes of one component each with equal stds; got "
                f"{self.n_classes} classes, {self.n_components} components, stds {stds.tolist()}"
            )
        gap = float(np.linalg.norm(np.asarray(self.means[1, 0] - self.means[0, 0])))
        z = gap / (2.0 * float(stds[0, 0]))
        return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
