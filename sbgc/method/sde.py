"""Forward SDEs of the paper (sub-VP, and VP for comparison) in closed form.

Both SDEs share the linear noise schedule β(t) = β_min + t (β_max − β_min) on t ∈ [0, T], T = 1,
and its integral B(t) = ∫₀ᵗ β(s) ds = β_min t + ½ t² (β_max − β_min).

=========  ===========================  ===============================  ===================
SDE        diffusion g(t)²              kernel p_t(x_t | x_0)            prior p_T
=========  ===========================  ===============================  ===================
VP         β(t)                         N(x_0 e^{−B/2}, (1 − e^{−B}) I)   N(0, I)
sub-VP     β(t) (1 − e^{−2B(t)})        N(x_0 e^{−B/2}, (1 − e^{−B})² I)  N(0, I)
=========  ===========================  ===============================  ===================

Both have drift f(x, t) = −½ β(t) x (Song et al. 2021, ICLR, eqs. 11 and 29; paper §2).

The paper uses sub-VP. Everything here is elementwise in ``t`` and works on scalars or arrays; ``x``
is an array of any shape whose leading axis (if ``t`` is an array) matches ``t``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp
import numpy as np

Array = jnp.ndarray
SDEKind = Literal["subvp", "vp"]


def broadcast_time(t: Array, x: Array) -> Array:
    """Reshape ``t`` of shape [B] (or []) so that it broadcasts against ``x`` of shape [B, ...]."""
    t = jnp.asarray(t)
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


@dataclasses.dataclass(frozen=True)
class SDE:
    """A linear-β SDE of the VP family, ``kind`` = ``"subvp"`` (the paper's) or ``"vp"``."""

    kind: SDEKind = "subvp"
    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0

    def __post_init__(self):
        if self.kind not in ("subvp", "vp"):
            raise ValueError(f"SDE kind must be 'subvp' or 'vp', got {self.kind!r}")
        if not 0 < self.beta_min < self.beta_max:
            raise ValueError(
                f"need 0 < beta_min < beta_max, got beta_min={self.beta_min}, beta_max={self.beta_max}"
            )

    # --- schedule -------------------------------------------------------------------------------
    def beta(self, t: Array) -> Array:
        """β(t) = β_min + t (β_max − β_min)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def int_beta(self, t: Array) -> Array:
        """B(t) = ∫₀ᵗ β(s) ds = β_min t + ½ t² (β_max − β_min)."""
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    # --- forward SDE dx = f(x, t) dt + g(t) dw ---------------------------------------------------
    def drift(self, x: Array, t: Array) -> Array:
        """f(x, t) = −½ β(t) x.  x: [B, ...], t: [B] or []."""
        return -0.5 * broadcast_time(self.beta(t), x) * x

    def diffusion_squared(self, t: Array) -> Array:
        """g(t)²: β(t) for VP, β(t) (1 − e^{−2B(t)}) for sub-VP."""
        beta = self.beta(t)
        if self.kind == "vp":
            return beta
        return beta * -jnp.expm1(-2.0 * self.int_beta(t))

    def diffusion(self, t: Array) -> Array:
        """g(t)."""
        return jnp.sqrt(self.diffusion_squared(t))

    # --- perturbation kernel p_t(x_t | x_0) = N(mean_coeff · x_0, std² I) ------------------------
    def mean_coeff(self, t: Array) -> Array:
        """e^{−B(t)/2}: the kernel mean is ``mean_coeff(t) * x0``."""
        return jnp.exp(-0.5 * self.int_beta(t))

    def marginal_std(self, t: Array) -> Array:
        """σ(t): sqrt(1 − e^{−B}) for VP, 1 − e^{−B} for sub-VP."""
        one_minus = -jnp.expm1(-self.int_beta(t))
        return jnp.sqrt(one_minus) if self.kind == "vp" else one_minus

    def score_from_noise(self, noise: Array, t: Array) -> Array:
        """The score ∇ₓ log p_t(x_t) = −ε̂ / σ(t) of a network ε̂ that predicts the noise z of
        x_t = m(t) x₀ + σ(t) z.  noise: [B, ...]; t: [B] → [B, ...]."""
        return -noise / broadcast_time(self.marginal_std(t), noise)

    def marginal(self, x0: Array, t: Array) -> tuple[Array, Array]:
        """Mean [B, ...] and std [B] (or []) of p_t(x_t | x_0)."""
        return broadcast_time(self.mean_coeff(t), x0) * x0, self.marginal_std(t)

    # --- prior and probability-flow ODE ----------------------------------------------------------
    def prior_logp(self, z: Array) -> Array:
        """log N(z; 0, I) summed over all but the leading axis.  z: [B, ...] → [B]."""
        d = np.prod(z.shape[1:])
        return -0.5 * d * np.log(2 * np.pi) - 0.5 * jnp.sum(z.reshape(z.shape[0], -1) ** 2, axis=1)

    def probability_flow_drift(self, x: Array, t: Array, score: Array) -> Array:
        """Paper eq. 1: dx/dt = f(x, t) − ½ g(t)² ∇ₓ log p_t(x), with ``score`` in place of ∇ log p_t."""
        return self.drift(x, t) - 0.5 * broadcast_time(self.diffusion_squared(t), x) * score

    # --- likelihood weighting and its importance sampling (Song, Durkan, Murray, Ermon 2021) -----
    def likelihood_weight(self, t: Array) -> Array:
        """w(t) = g(t)² / σ(t)²: the density (up to a constant) from which t is importance-sampled.

        With λ(t) = g(t)², the per-t denoising loss λ(t) ‖s + z/σ‖² equals w(t) ‖σ s + z‖².
        """
        return self.diffusion_squared(t) / self.marginal_std(t) ** 2

    def _cum_weight_of_int_beta(self, b: Array) -> Array:
        """An antiderivative of w in terms of u = B(t) (du = β dt).

        sub-VP: w dt = coth(u/2) du → 2 log sinh(u/2).   VP: w dt = du / (1 − e^{−u}) → log(e^u − 1).
        """
        if self.kind == "vp":
            return jnp.log(jnp.expm1(b))
        return 2.0 * jnp.log(jnp.sinh(0.5 * b))

    def _int_beta_of_cum_weight(self, c: Array) -> Array:
        """Inverse of :meth:`_cum_weight_of_int_beta`."""
        if self.kind == "vp":
            return jnp.log1p(jnp.exp(c))
        return 2.0 * jnp.arcsinh(jnp.exp(0.5 * c))

    def _t_of_int_beta(self, b: Array) -> Array:
        """Inverse of B(t): the positive root of ½ (β_max − β_min) t² + β_min t − b = 0."""
        db = self.beta_max - self.beta_min
        return (-self.beta_min + jnp.sqrt(self.beta_min**2 + 2.0 * db * b)) / db

    def importance_weight_normalizer(self, eps: float) -> Array:
        """Z = ∫_ε^T w(t) dt, the constant that makes t ~ w(t)/Z a density on [ε, T]."""
        return self._cum_weight_of_int_beta(self.int_beta(self.T)) - self._cum_weight_of_int_beta(
            self.int_beta(eps)
        )

    def sample_importance_t(self, u: Array, eps: float) -> Array:
        """Map u ~ U[0, 1) to t ~ w(t)/Z on [ε, T] by inverting the closed-form cumulative."""
        c0 = self._cum_weight_of_int_beta(self.int_beta(eps))
        c = c0 + u * self.importance_weight_normalizer(eps)
        return jnp.clip(self._t_of_int_beta(self._int_beta_of_cum_weight(c)), eps, self.T)

    def importance_t_density(self, t: Array, eps: float) -> Array:
        """The density w(t)/Z of :meth:`sample_importance_t` on [ε, T]."""
        return self.likelihood_weight(t) / self.importance_weight_normalizer(eps)
