"""Class scores from the continuous-time variational bound on log p(x | y), and class pruning.

The probability-flow ODE (:mod:`sbgc.method.likelihood`) gives log p(x | y) exactly, at the price of an
adaptive solve per class with Hutchinson probes. The variational bound of Song, Durkan, Murray &
Ermon (2021, Thm. 1 and 2; score_flow's "bound likelihood") needs only plain forward passes of the
score network at independently drawn times: it is the denoising loss the network was trained on,
evaluated per image and class. This module turns it into a classifier.

Derivation (what is implemented)
--------------------------------
Model space x₀ (D dimensions), forward kernel q(x_t | x₀) = N(m(t) x₀, σ(t)² I), so
x_t = m(t) x₀ + σ(t) z with z ~ N(0, I). The generative model behind the bound is the reverse-time
SDE dx = [f(x, t) − g(t)² s_θ(x, t, y)] dt + g(t) dw̄ run from x_T ~ π = N(0, I) down to t = ε,
followed by a Gaussian decoder for the last stretch [0, ε],

    p(x₀ | x_ε, y) = N(x₀; (x_ε + σ_ε² s_θ(x_ε, ε, y)) / m_ε, (σ_ε / m_ε)² I)        (Tweedie mean)

as in score_flow's ``get_likelihood_offset_fn``. Jensen's inequality over the forward path
x_[ε, T] ~ q(· | x₀) and Girsanov's theorem for the two path measures give, per data point,

    log p_θ(x₀ | y) ≥ L(x₀, y) = E_z log p(x₀ | x_ε, y)                         decoder, [0, ε]
                                − KL(q(x_T | x₀) ‖ π)                            prior, at T
                                − ½ ∫_ε^T g(t)² E_z ‖s_θ(x_t, t, y) + z / σ(t)‖² dt   diffusion, [ε, T]

* **prior** (:func:`prior_kl`): KL = ½ Σ_d (m_T² x₀_d² + σ_T² − 1 − 2 log σ_T), in closed form and
  the same for every class.
* **diffusion** (:func:`diffusion_term`): with w(t) = g²/σ², g² ‖s + z/σ‖² = w ‖σ s + z‖², and t
  drawn from w(t)/Z on [ε, T] (:meth:`sbgc.method.sde.SDE.sample_importance_t`, as in training) the term is
  −½ Z E_t E_z ‖σ(t) s_θ + z‖²: the training loss of :func:`sbgc.method.losses.dsm_loss`
  (``"likelihood_is"``), per image and class.
* **decoder** (:func:`decoder_log_prob`): x₀ − (x_ε + σ_ε² s)/m_ε = −σ_ε (z + σ_ε s)/m_ε, so
  log p(x₀ | x_ε) = −(D/2) log(2π σ_ε² / m_ε²) − ½ ‖σ_ε s_θ(x_ε, ε, y) + z‖²: the same denoising
  error, at t = ε, plus a constant.

score_flow writes the same bound (as −log p) with the terms −E log π(x_T),
½∫ g² (‖s − ∇log q‖² − ‖∇log q‖²) − 2∇·f dt and the offset −log p(x₀ | x_ε) − H(q_ε), q = q(x_t | x₀).
Since −E log π(x_T) = KL + H(q_T), and H(q_T) − H(q_ε) = ∫ E ∇·f + ½ g² E‖∇log q_t‖² dt
(Fokker–Planck for the Gaussian kernel), their Monte-Carlo terms besides the denoising term add
up to KL + H(q_ε) in expectation, and the offset's −H(q_ε) cancels the entropy: the two bounds are
equal in expectation. Here the KL and the entropies are taken in closed form (less variance).

The bound is on the density of THIS model (reverse SDE + decoder). The ODE of
:mod:`sbgc.method.likelihood` defines a different density from the same score; the two coincide when s_θ is
the exact score (up to the decoder, whose gap vanishes as σ_ε → 0: σ_ε = 1e-6 for sub-VP at
ε = 1e-5). For a learned score nothing forces L below the ODE value; Song et al. (2021) find it
below on CIFAR-10, and ``tests/test_bound.py`` checks it on the ``ci`` network.

Estimator
---------
For each image, K times t_1 … t_K (``sampling="importance"``: u_k ~ U[0, 1) i.i.d.; ``"stratified"``:
u_k = (k + U_k)/K, one per stratum of the importance distribution) mapped through the inverse
cumulative of w/Z, one noise z_k per time, and one more noise for the decoder at t = ε. The SAME
times and noises serve every class of an image (common random numbers), so class differences carry
no independent sampling noise. Each (image, class, time) is one forward pass of the network:
``nfe`` counts them (K + 1 per image and class). Both samplers are unbiased for L; ``log_p_se``
combines the standard error of the diffusion term (:func:`mean_and_se`) with the decoder's (below).

Weighting (``BoundSettings.weighting``). The bound weights the denoising error h(t) = E‖σ s_θ + z‖² by
w(t) = g²/σ², which grows like 2/t as t → 0, and samples its times from w/Z: most of them fall at small t,
where the noise is tiny and the class barely changes the error. ``"uniform"`` instead draws t uniformly
on [ε, T] (stratified or i.i.d.) and scores a class by −½ (T − ε) E_t h(t), the ε-prediction MSE that DDPM
trains with (λ = σ², :func:`sbgc.method.losses.dsm_loss` ``"sigma2"``) and that Li et al.'s Diffusion
Classifier (2023) compares across classes. It is a weighted denoising objective, not a bound on
log p(x | y): no prior or decoder term, no bits/dim. Both share the times and noises across the classes.

Control variate. E‖z‖² = D, so ‖σ s + z‖² − γ(t)(‖z‖² − D) has the same expectation for any γ(t).
With γ(t) = r(t)², r = m² s_d² / (m² s_d² + σ²), this removes the χ²_D noise of the part of z the
network cannot predict (t → 0, where w(t) ~ 2/t is largest); it is the variance-optimal γ for
Gaussian data of per-dimension std s_d with the exact score, where σ s + z = σ m (μ − x₀)/v + r z
(:func:`control_variate_weight`; ``data_std`` = s_d, 0.5 for centred CIFAR-10). Class differences
are unaffected: with common random numbers ‖z‖² is the same for all classes.

The decoder term is one draw per image and class. Its error is estimated from that draw: with
ε_θ = −σ_ε s_θ nearly constant over the σ_ε-ball around m_ε x₀, the per-draw value
‖ε_θ‖² − 2 z·ε_θ + (1 − γ)‖z‖² + γ D has variance 4‖ε_θ‖² + 2D(1 − γ)².

Conventions (as :mod:`sbgc.method.likelihood`, whose helpers are used): uint8 pixels are dequantized to
(pixel + u)/256 with the same key split as :func:`sbgc.method.likelihood.prepare_batch` (the same ``key``
gives the ODE and the bound the same dequantized image); the bound is reported in nats of the
[0, 1]-scaled data, log p_[0,1] = log p_model + log|det ∂x̃/∂x|, and in bits/dim of the discrete
data (:func:`sbgc.method.likelihood.bits_per_dim`), an upper bound on the model's bits/dim.

Class pruning (:func:`pruned_class_bounds`): K₁ times for every class, keep the ``keep`` best
classes of each image, K₂ further times (fresh draws, shared by the kept classes) for those; the
decision is the argmax over the kept classes of their combined (K₁ + K₂)-time estimates.

Shapes: rows (image, class, time) are evaluated in jitted chunks of at most ``chunk_size`` network
inputs (padded to a power of two or to ``chunk_size``, so few shapes compile), with tqdm over chunks;
on a device that reports its memory (GPU) a chunk that would not fit is lowered, and ``chunk_size=None``
takes as many rows as fit (:func:`sbgc.method.devices.chunk_for_memory`; None on a CPU: 256).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sbgc.method.classify import log_marginal, predict
from sbgc.method.devices import (chunk_for_memory, device_memory_bytes, names_the_chunk_knob, padded_chunks,
                                 row_sharding, shard_rows, sharded_chunk, split_rows_in_trace)  # fmt: skip
from sbgc.method.likelihood import (DATA_SCALINGS, DataScaling, ScoreFn, bits_per_dim, labels_per_image,
                                    log_det_model_to_unit, to_model_space, to_unit_interval)  # fmt: skip
from sbgc.method.losses import scaled_score, squared_norm
from sbgc.method.numerics import highest_precision
from sbgc.method.sde import SDE

Array = jax.Array
Sampling = Literal["importance", "stratified"]
SAMPLINGS: tuple[str, ...] = ("importance", "stratified")
Weighting = Literal["likelihood", "uniform"]
WEIGHTINGS: tuple[str, ...] = ("likelihood", "uniform")


@dataclasses.dataclass(frozen=True)
class BoundSettings:
    """How the bound is estimated (hashable).

    n_times: K, times (one network pass each) per image and class, besides the decoder's.
    sampling: ``"importance"`` (i.i.d. u_k) or ``"stratified"`` (one u_k per stratum k/K), mapped to
        times by the weighting's distribution.
    eps: ε, the start of the diffusion term; [0, ε] is the decoder's.
    data_std: s_d of the control variate (model-space per-dimension data std), or None for none.
    weighting: the time weighting λ(t) of the denoising errors (:func:`diffusion_term`):
        ``"likelihood"`` — λ = g², t from w(t)/Z with w = g²/σ²: the bound on log p(x | y) (the paper's
        and score_flow's; the decoder and prior terms are added); ``"uniform"`` — λ = σ², t uniform on
        [ε, T]: −½ (T − ε) E_t E_z ‖σ s_θ + z‖², the ε-prediction MSE of DDPM that Li et al.'s Diffusion
        Classifier scores classes with. The latter is a class score, not a bound on a density: it has
        no decoder pass (K passes per image and class), no prior term, and no bits/dim (NaN).
    """

    n_times: int = 100
    sampling: Sampling = "stratified"
    eps: float = 1e-5
    data_std: float | None = 0.5
    weighting: Weighting = "likelihood"

    def __post_init__(self):
        if not (isinstance(self.n_times, (int, np.integer)) and self.n_times >= 2):
            raise ValueError(f"n_times must be an int >= 2 (its spread gives the error bar), got {self.n_times!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if not 0 < self.eps < 1:
            raise ValueError(f"eps must lie in (0, 1), got {self.eps}")
        if self.data_std is not None and not self.data_std > 0:
            raise ValueError(f"data_std must be positive or None (no control variate), got {self.data_std}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")

    @property
    def is_bound(self) -> bool:
        """Whether the estimate is the variational bound on log p(x | y) (``"likelihood"`` weighting)."""
        return self.weighting == "likelihood"

    def describe(self) -> str:
        """e.g. 'variational bound, K = 32 stratified times (likelihood weighting), eps = 1e-05'."""
        what = "variational bound" if self.is_bound else "uniform-in-t denoising score (eps-MSE, not a bound)"
        return f"{what}, K = {self.n_times} {self.sampling} times ({self.weighting} weighting), eps = {self.eps:g}"


# --- the terms of the bound (model space, nats) ------------------------------------------------------
def prior_kl(sde: SDE, x0: Array) -> Array:
    """KL(q(x_T | x₀) ‖ N(0, I)) = ½ Σ_d (m_T² x₀_d² + σ_T² − 1 − 2 log σ_T).  x0 [B, ...] → [B]."""
    m, s = sde.mean_coeff(sde.T), sde.marginal_std(sde.T)
    d = math.prod(x0.shape[1:])
    sq = jnp.sum(jnp.reshape(x0, (x0.shape[0], -1)).astype(jnp.float32) ** 2, axis=1)
    return 0.5 * (m**2 * sq + d * (s**2 - 1.0 - 2.0 * jnp.log(s)))


def control_variate_weight(sde: SDE, t: Array, data_std: float | None) -> Array:
    """γ(t) = (m² s_d² / (m² s_d² + σ²))², or 0 without a control variate.  t [...] → [...]."""
    if data_std is None:
        return jnp.zeros_like(t)
    signal = (sde.mean_coeff(t) * data_std) ** 2
    return (signal / (signal + sde.marginal_std(t) ** 2)) ** 2


def denoising_terms(score_fn: ScoreFn, sde: SDE, x0: Array, y: Array, t: Array, z: Array) -> tuple[Array, Array, Array]:
    """‖σ s_θ(x_t, t, y) + z‖², ‖z‖² and ‖σ s_θ‖² at x_t = m(t) x₀ + σ(t) z.

    x0, z: [R, ...] model space; y: int [R]; t: [R] → three [R]. The first is
    :func:`sbgc.method.losses.denoising_error`, the per-example training loss.
    """
    s = scaled_score(score_fn, sde, x0, y, t, z)  # σ s = −ε_θ: [R, ...]
    return squared_norm(s + z), squared_norm(z), squared_norm(s)


def corrected_error(err: np.ndarray, z_sq: np.ndarray, gamma: np.ndarray, dim: int) -> np.ndarray:
    """h = ‖σ s + z‖² − γ (‖z‖² − D): the mean of ‖σ s + z‖², less noise (module docstring)."""
    return err - gamma * (z_sq - dim)


def time_weight(sde: SDE, eps: float, weighting: Weighting):
    """The factor c of the per-time values −½ c h_k: Z = ∫_ε^T w dt for ``"likelihood"`` (times from w/Z,
    so −½ Z E h estimates −½ ∫ w E h dt), T − ε for ``"uniform"`` (times uniform, λ = σ²). A JAX scalar
    where the SDE's coefficients are traced (inside an attack's jitted function)."""
    return sde.importance_weight_normalizer(eps) if weighting == "likelihood" else sde.T - eps


def diffusion_term(sde: SDE, eps: float, h: np.ndarray, weighting: Weighting = "likelihood") -> np.ndarray:
    """Per-time values −½ c h_k (:func:`time_weight`) of −½ ∫_ε^T λ(t)/σ(t)² E h dt, for times drawn
    from the weighting's distribution.  h [..., K]."""
    return -0.5 * float(time_weight(sde, eps, weighting)) * np.asarray(h, np.float64)


def decoder_log_prob(sde: SDE, eps: float, h: np.ndarray, dim: int) -> np.ndarray:
    """log N(x₀; (x_ε + σ_ε² s)/m_ε, σ_ε²/m_ε² I) = −(D/2) log(2π σ_ε²/m_ε²) − ½ h.

    h = ‖σ_ε s_θ(x_ε, ε, y) + z‖² (or its control-variate version, the same in expectation).
    """
    ratio = float(sde.marginal_std(eps)) / float(sde.mean_coeff(eps))
    return -0.5 * dim * math.log(2.0 * math.pi * ratio**2) - 0.5 * np.asarray(h, np.float64)


def decoder_std_error(scaled_score_sq: np.ndarray, gamma: np.ndarray | float, dim: int) -> np.ndarray:
    """Std of the one-draw decoder term: ½ √(4‖ε_θ‖² + 2D(1 − γ)²) (module docstring)."""
    return 0.5 * np.sqrt(4.0 * np.asarray(scaled_score_sq, np.float64) + 2.0 * dim * (1.0 - gamma) ** 2)


# --- random numbers: the same for every class of an image -------------------------------------------
@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5, 6))
def draw_times(sde: SDE, key: Array, image_ids: Array, n: int, sampling: Sampling, eps: float,
               weighting: Weighting = "likelihood") -> Array:  # fmt: skip
    """Times [len(ids), n] on [ε, T], from w(t)/Z (``"likelihood"``) or uniform (``"uniform"``); image
    i's from ``fold_in(key, i)``, sorted (so stratified times stay in stratum order)."""

    def one(i):
        u = jax.random.uniform(jax.random.fold_in(key, i), (n,))
        if sampling == "stratified":
            u = (jnp.arange(n) + u) / n
        t = sde.sample_importance_t(u, eps) if weighting == "likelihood" else eps + u * (sde.T - eps)
        return jnp.sort(t)

    return jax.vmap(one)(image_ids)


def _row_noise(key: Array, image_ids: Array, draws: Array, shape: tuple[int, ...]) -> Array:
    """z [R, *shape] of rows: N(0, I) from fold_in(fold_in(key, image), draw), whatever the class."""
    one = lambda i, j: jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, i), j), shape, jnp.float32)
    return jax.vmap(one)(image_ids, draws)


@eqx.filter_jit
@highest_precision
def _chunk_terms(
    score_fn: ScoreFn, sde: SDE, x0: Array, y: Array, t: Array, key: Array, image_ids: Array, draws: Array
):
    """:func:`denoising_terms` of one chunk of rows, with each row's noise drawn from its ids."""
    z = _row_noise(key, image_ids, draws, x0.shape[1:])
    return denoising_terms(score_fn, sde, x0, y, t, z)


class _Rows(NamedTuple):
    """R rows (image, class, time, draw id) to evaluate; ``slot`` is the row's (image, class) entry."""

    image: np.ndarray  # [R] int
    label: np.ndarray  # [R] int32
    t: np.ndarray  # [R] float32
    draw: np.ndarray  # [R] int32: which noise of the image
    slot: np.ndarray  # [R] int: flat index into the [B, C] table of (image, class) entries


class _RowTerms(NamedTuple):
    err: np.ndarray  # [R] ‖σ s + z‖²
    z_sq: np.ndarray  # [R] ‖z‖²
    scaled_score_sq: np.ndarray  # [R] ‖σ s‖²
    passes: np.ndarray  # [B·C] network passes evaluated per (image, class), counted


def _evaluate_rows(
    score_fn: ScoreFn, sde: SDE, x_model: Array, rows: _Rows, n_slots: int, key: Array, chunk_size: int | None,
    progress: bool, desc: str,
) -> _RowTerms:  # fmt: skip
    """:func:`denoising_terms` of every row in float64, in jitted chunks of ``chunk_size`` rows.

    Chunks hold ``chunk_size`` rows, or the power of two at or above the row count when that is
    smaller; the last chunk is padded with copies of its last row, so few shapes are compiled.
    Padding is neither returned nor counted. Each chunk's rows are split over the local devices
    (:func:`sbgc.method.devices.row_sharding`; a chunk is rounded up to a multiple of them); a
    row's noise is drawn from (key, image, draw), so the result does not depend on the devices.
    """
    n_rows = rows.image.size
    sharding = row_sharding()

    def compile_at(n: int):  # the chunk's program for n rows (to size the chunk from device memory)
        img = np.zeros(n, np.int64)
        args = shard_rows(sharding, x_model[img], jnp.asarray(rows.label[img]), jnp.asarray(rows.t[img]),
                          jnp.asarray(img, jnp.int32), jnp.asarray(rows.draw[img]))  # fmt: skip
        return _chunk_terms.lower(score_fn, sde, *args[:3], key, *args[3:]).compile()

    chunk, compiled = chunk_for_memory(chunk_size, 1 << (n_rows - 1).bit_length(), compile_at,  # powers of two: few shapes
                                       multiple=sharded_chunk(1, sharding), limit=device_memory_bytes(), fallback=256,
                                       remedy="one row is one network pass of one image, so no knob of the bound "
                                              "helps: use a device with more memory")
    terms_of = _chunk_terms if compiled is None else compiled
    out = np.empty((3, n_rows), np.float64)
    passes = np.zeros(n_slots, np.int64)
    for idx, pad in padded_chunks(n_rows, chunk, desc=desc, progress=progress):
        img = rows.image[pad]
        with names_the_chunk_knob("chunk_size", chunk, "one network pass"):
            x, label, t, image_id, draw = shard_rows(
                sharding, x_model[img], jnp.asarray(rows.label[pad]), jnp.asarray(rows.t[pad]),
                jnp.asarray(img, jnp.int32), jnp.asarray(rows.draw[pad]))  # fmt: skip
            terms = terms_of(score_fn, sde, x, label, t, key, image_id, draw)
            out[:, idx] = np.asarray(jnp.stack(terms), np.float64)[:, : idx.size]
        passes += np.bincount(rows.slot[idx], minlength=n_slots)
    return _RowTerms(out[0], out[1], out[2], passes)


# --- results -------------------------------------------------------------------------------------------
class BoundResult(NamedTuple):
    """Variational lower bounds on log p(x | y); leading axes [*L] = [B] (:func:`log_bound`) or [B, C].

    log_p = prior_term + decoder_term + diffusion_term + log_det (nats of the [0, 1]-scaled
    dequantized data); diffusion_term is the mean of diffusion_draws over its last axis.
    """

    log_p: np.ndarray  # [*L] the bound, nats
    log_p_se: np.ndarray  # [*L] its Monte-Carlo standard error
    bpd: np.ndarray  # [*L] bits/dim of the discrete data (an upper bound, in expectation)
    bpd_se: np.ndarray  # [*L]
    prior_term: np.ndarray  # [B] −KL(q(x_T | x₀) ‖ N(0, I)), exact
    decoder_term: np.ndarray  # [*L] log p(x₀ | x_ε, y), one draw
    decoder_se: np.ndarray  # [*L]
    diffusion_term: np.ndarray  # [*L] −½ ∫_ε^T g² E‖s + z/σ‖² dt, estimated
    diffusion_se: np.ndarray  # [*L]
    diffusion_draws: np.ndarray  # [*L, K] per-time values −½ Z h_k
    times: np.ndarray  # [B, K] the times (shared by the classes of an image)
    nfe: np.ndarray  # [*L] network forward passes, counted (K + 1 per row)
    log_det: float  # log|det ∂x̃/∂x|: D log 2 (centred) or 0 (unit)
    dim: int  # D

    def predict(self) -> np.ndarray:
        """argmax_y of the bound: [B] (needs leading axes [B, C])."""
        return predict(self.log_p)

    def log_marginal(self) -> np.ndarray:
        """logsumexp_y bound − log C: [B], a bound on log p(x) under a uniform class prior."""
        return log_marginal(self.log_p)


@dataclasses.dataclass(frozen=True)
class _PreparedImages:
    x_model: Array  # [B, *shape]
    time_key: Array
    noise_key: Array
    log_det: float
    dim: int


def _prepare(x, key, dequantize: bool, data_scaling: DataScaling) -> _PreparedImages:
    """Model-space images and the keys of their times and noises (dequantization as sbgc.method.likelihood)."""
    if data_scaling not in DATA_SCALINGS:
        raise ValueError(f"data_scaling must be one of {DATA_SCALINGS}, got {data_scaling!r}")
    if key is None:
        raise ValueError("a PRNG key is needed for the times and noises of the bound, got key=None")
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x must be a batch [B, ...] with B >= 1 and at least one data axis, got shape {x.shape}")
    k_deq, k_rest = jax.random.split(key)  # the same split as sbgc.method.likelihood.prepare_batch
    k_time, k_noise = jax.random.split(k_rest)
    x_model = to_model_space(to_unit_interval(x, k_deq, dequantize), data_scaling)
    dim = math.prod(x.shape[1:])
    return _PreparedImages(x_model, k_time, k_noise, log_det_model_to_unit(dim, data_scaling), dim)


def _check_labels(labels, b: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != b or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an int array of shape ({b}, C), got {labels.dtype} {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be non-negative class indices, got minimum {labels.min()}")
    return labels.astype(np.int32)


def _check_settings(settings) -> None:
    if not isinstance(settings, BoundSettings):
        raise TypeError(f"settings must be a BoundSettings, got {type(settings).__name__}")


def _check_chunk(chunk_size) -> None:
    if not (chunk_size is None or isinstance(chunk_size, (int, np.integer)) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be a positive int or None (sized from device memory), got {chunk_size!r}")


def _stage_rows(labels: np.ndarray, times: np.ndarray) -> _Rows:
    """Rows image-major, then label, then time: labels [B, C], times [B, K] → R = B·C·K rows."""
    b, c = labels.shape
    k = times.shape[1]
    image = np.repeat(np.arange(b), c * k)
    label = np.repeat(labels.reshape(-1), k)
    t = np.repeat(times[:, None, :], c, axis=1).reshape(-1).astype(np.float32)
    draw = np.tile(np.arange(k, dtype=np.int32), b * c)
    return _Rows(image, label, t, draw, np.repeat(np.arange(b * c), k))


class _Stage(NamedTuple):
    values: np.ndarray  # [B, C, K] per-time values −½ Z h of the diffusion term
    times: np.ndarray  # [B, K]
    passes: np.ndarray  # [B, C] counted (the decoder's included)
    decoder: np.ndarray | None  # [B, C] decoder term (stage 0 only)
    decoder_se: np.ndarray | None  # [B, C]


def _run_stage(
    score_fn, sde, images: _PreparedImages, labels: np.ndarray, settings: BoundSettings, stage: int,
    chunk_size: int | None, progress: bool,
) -> _Stage:  # fmt: skip
    """One stage: K times per image (its own times and noises, shared by the labels [B, C]), and in
    stage 0 the decoder's draw at t = ε as draw K of the same noise stream, all in one set of rows."""
    b, c = labels.shape
    k = settings.n_times
    stage_time_key = jax.random.fold_in(images.time_key, stage)
    times = np.asarray(draw_times(sde, stage_time_key, jnp.arange(b), k, settings.sampling, settings.eps,
                                  settings.weighting))  # fmt: skip
    with_decoder = stage == 0 and settings.is_bound
    row_times = np.concatenate([times, np.full((b, 1), settings.eps, np.float32)], axis=1) if with_decoder else times
    rows = _stage_rows(labels, row_times)
    noise_key = jax.random.fold_in(images.noise_key, stage)
    out = _evaluate_rows(score_fn, sde, images.x_model, rows, b * c, noise_key, chunk_size, progress,
                         f"bound, stage {stage + 1}")  # fmt: skip
    gamma = np.asarray(control_variate_weight(sde, jnp.asarray(rows.t), settings.data_std), np.float64)
    h = corrected_error(out.err, out.z_sq, gamma, images.dim).reshape(b, c, -1)  # [B, C, K (+ 1)]
    values = diffusion_term(sde, settings.eps, h[..., :k], settings.weighting)
    if not with_decoder:
        return _Stage(values, times, out.passes.reshape(b, c), None, None)
    decoder = decoder_log_prob(sde, settings.eps, h[..., k], images.dim)
    last = lambda a: a.reshape(b, c, k + 1)[..., k]
    decoder_se = decoder_std_error(last(out.scaled_score_sq), last(gamma), images.dim)
    return _Stage(values, times, out.passes.reshape(b, c), decoder, decoder_se)


def mean_and_se(draws: np.ndarray, sampling: Sampling) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the last axis (K per-time values) and its standard error.

    ``"importance"``: std/√K of the i.i.d. values. ``"stratified"`` (values in stratum order, one
    per stratum): the collapsed-strata estimate, adjacent strata paired,
    Var ≈ (1/K²) · K/(2P) · Σ_pairs (v_a − v_b)², conservative by the squared mean differences of
    neighbouring strata (small), where the i.i.d. formula would also count the spread of the
    integrand over t, which stratification removes.
    """
    k = draws.shape[-1]
    if sampling == "importance":
        return draws.mean(axis=-1), draws.std(axis=-1, ddof=1) / math.sqrt(k)
    pairs = k // 2
    diff = draws[..., 0 : 2 * pairs : 2] - draws[..., 1 : 2 * pairs : 2]  # [..., P]
    var = (np.sum(diff**2, axis=-1) * k / (2 * pairs)) / k**2
    return draws.mean(axis=-1), np.sqrt(var)


def _combine(
    images: _PreparedImages, prior, decoder, decoder_se, draws, diffusion, diffusion_se, times, nfe, is_bound: bool
) -> BoundResult:
    """Sum the terms (prior [B], the rest [B, C]) into a :class:`BoundResult`; a score that is not a
    bound (uniform weighting) is its diffusion term alone, with log_det 0 and NaN bits/dim."""
    log_det = images.log_det if is_bound else 0.0
    log_p = prior[:, None] + decoder + diffusion + log_det
    se = np.sqrt(decoder_se**2 + diffusion_se**2)
    bpd_scale = images.dim * math.log(2.0)
    bpd = bits_per_dim(log_p, images.dim) if is_bound else np.full_like(log_p, np.nan)
    return BoundResult(
        log_p=log_p, log_p_se=se, bpd=bpd, bpd_se=se / bpd_scale if is_bound else np.full_like(se, np.nan),
        prior_term=prior, decoder_term=decoder, decoder_se=decoder_se, diffusion_term=diffusion,
        diffusion_se=diffusion_se, diffusion_draws=draws, times=times, nfe=nfe, log_det=log_det, dim=images.dim,
    )  # fmt: skip


def _bounds(score_fn, sde, images: _PreparedImages, labels: np.ndarray, settings: BoundSettings,
            chunk_size: int | None, progress: bool) -> BoundResult:  # fmt: skip
    """All three terms for labels [B, C] (stage 0 of the times and noises); the diffusion term alone
    for the uniform weighting (prior and decoder terms 0)."""
    stage = _run_stage(score_fn, sde, images, labels, settings, 0, chunk_size, progress)
    diffusion, diffusion_se = mean_and_se(stage.values, settings.sampling)
    b = labels.shape[0]
    if settings.is_bound:
        prior, decoder, decoder_se = -np.asarray(prior_kl(sde, images.x_model), np.float64), stage.decoder, stage.decoder_se
    else:
        prior, decoder, decoder_se = np.zeros(b), np.zeros_like(diffusion), np.zeros_like(diffusion)
    return _combine(images, prior, decoder, decoder_se, stage.values, diffusion, diffusion_se, stage.times,
                    stage.passes, settings.is_bound)  # fmt: skip


# --- public entry points ---------------------------------------------------------------------------
def log_bound_table(
    score_fn: ScoreFn,
    sde: SDE,
    x: Array | np.ndarray,
    labels: Array | np.ndarray,
    key: Array,
    *,
    settings: BoundSettings = BoundSettings(),
    dequantize: bool = True,
    data_scaling: DataScaling = "centered",
    chunk_size: int | None = None,
    progress: bool = True,
) -> BoundResult:
    """The bound L(x_i, labels[i, c]) for B images × C labels, common random numbers per image.

    x: uint8 or float [B, *shape]; labels: int [B, C]. Returns a :class:`BoundResult` with leading
    axes [B, C]. Each row costs ``settings.n_times`` + 1 network passes. See :func:`log_bound` for the
    arguments.
    """
    _check_settings(settings)
    _check_chunk(chunk_size)
    images = _prepare(x, key, dequantize, data_scaling)
    labels = _check_labels(labels, images.x_model.shape[0])
    return _bounds(score_fn, sde, images, labels, settings, chunk_size, progress)


def log_bound(
    score_fn: ScoreFn,
    sde: SDE,
    x: Array | np.ndarray,
    y: Array | np.ndarray,
    key: Array,
    **kwargs,
) -> BoundResult:
    """Variational lower bound on log p(x | y) of a batch (module docstring).

    Args:
        score_fn: ``score_fn(x [R, *shape], t [R], y [R]) -> [R, *shape]`` in model space.
        sde: the forward SDE the score model was trained for.
        x: uint8 pixels or float data [B, *shape]; y: int [B] labels.
        key: PRNG key of the dequantization noise (split as in :mod:`sbgc.method.likelihood`, so the same
            key gives the same dequantized images), the times and the noises.
        settings: :class:`BoundSettings` — K times, their sampling, ε and the control variate's s_d,
            e.g. ``settings=BoundSettings(n_times=100)``.
        dequantize, data_scaling: as in :func:`sbgc.method.likelihood.log_likelihood`.
        chunk_size: network inputs per jitted call (bounds memory). progress: tqdm over chunks.

    Returns:
        :class:`BoundResult` with leading axis [B].

    Raises:
        ValueError: malformed input or settings.
    """
    y = labels_per_image(y, x)
    res = log_bound_table(score_fn, sde, x, y[:, None], key, **kwargs)
    first = lambda a: a[:, 0]
    per_row = ("log_p", "log_p_se", "bpd", "bpd_se", "decoder_term", "decoder_se", "diffusion_term", "diffusion_se",
               "diffusion_draws", "nfe")  # fmt: skip
    return res._replace(**{name: first(getattr(res, name)) for name in per_row})


def class_log_bounds(
    score_fn: ScoreFn, sde: SDE, x: Array | np.ndarray, key: Array, *, n_classes: int = 10, **kwargs
) -> BoundResult:
    """The bound for every class of every image, leading axes [B, n_classes], with the same times
    and noises for all classes of an image. ``kwargs`` as in :func:`log_bound`."""
    if not (isinstance(n_classes, (int, np.integer)) and n_classes >= 1):
        raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
    b = np.shape(x)[0] if np.ndim(x) else 0
    return log_bound_table(score_fn, sde, x, np.tile(np.arange(n_classes, dtype=np.int32), (b, 1)), key, **kwargs)


class PrunedBounds(NamedTuple):
    """Result of :func:`pruned_class_bounds`, leading axes [B, C]."""

    log_p: np.ndarray  # [B, C] combined (K₁ + K₂)-time bound for kept classes, K₁-time for the rest
    log_p_se: np.ndarray  # [B, C]
    kept: np.ndarray  # [B, C] bool: the classes refined in stage 2
    first: BoundResult  # stage 1: every class, K₁ times
    nfe: np.ndarray  # [B] network passes per image, counted: C (K₁ + 1) + keep · K₂
    dim: int

    def predict(self) -> np.ndarray:
        """argmax of the combined bound over the kept classes: [B]."""
        return np.argmax(np.where(self.kept, self.log_p, -np.inf), axis=1)

    @property
    def bpd(self) -> np.ndarray:
        """Bits/dim of :attr:`log_p`: [B, C]."""
        return bits_per_dim(self.log_p, self.dim)


def pruned_class_bounds(
    score_fn: ScoreFn,
    sde: SDE,
    x: Array | np.ndarray,
    key: Array,
    *,
    n_classes: int = 10,
    settings: BoundSettings = BoundSettings(n_times=10),
    keep: int = 2,
    second_times: int = 100,
    dequantize: bool = True,
    data_scaling: DataScaling = "centered",
    chunk_size: int | None = None,
    progress: bool = True,
) -> PrunedBounds:
    """Adaptive class pruning: K₁ = ``settings.n_times`` for every class, then K₂ = ``second_times``
    more for the ``keep`` best classes of each image (fresh times and noises, shared by the kept
    classes of an image; sampling, ε and s_d from ``settings``).

    The kept classes' diffusion terms average all K₁ + K₂ per-time values (each stage is unbiased
    for the same integral, so the count-weighted mean is). Other arguments as in
    :func:`class_log_bounds`; ``key`` gives stage 1 exactly the draws of
    ``class_log_bounds(..., settings=settings)`` with the same key.
    """
    if not (isinstance(n_classes, (int, np.integer)) and n_classes >= 1):
        raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
    if not (isinstance(keep, (int, np.integer)) and 1 <= keep <= n_classes):
        raise ValueError(f"keep must be an int in [1, n_classes={n_classes}], got {keep!r}")
    _check_chunk(chunk_size)
    _check_settings(settings)
    second_settings = dataclasses.replace(settings, n_times=second_times)
    images = _prepare(x, key, dequantize, data_scaling)
    b = images.x_model.shape[0]
    labels = np.tile(np.arange(n_classes, dtype=np.int32), (b, 1))
    first = _bounds(score_fn, sde, images, labels, settings, chunk_size, progress)
    top = np.argsort(-first.log_p, axis=1, kind="stable")[:, :keep].astype(np.int32)  # [B, keep]
    second = _run_stage(score_fn, sde, images, top, second_settings, 1, chunk_size, progress)
    rows = np.arange(b)[:, None]
    diffusion, diffusion_se = _combined_mean(first.diffusion_draws[rows, top], second.values, settings.sampling)
    log_p, log_p_se = first.log_p.copy(), first.log_p_se.copy()
    log_p[rows, top] = first.prior_term[:, None] + first.decoder_term[rows, top] + diffusion + first.log_det
    log_p_se[rows, top] = np.sqrt(first.decoder_se[rows, top] ** 2 + diffusion_se**2)
    kept = np.zeros(first.log_p.shape, bool)
    kept[rows, top] = True
    nfe = first.nfe.sum(axis=1) + second.passes.sum(axis=1)
    return PrunedBounds(log_p, log_p_se, kept, first, nfe, first.dim)


def _combined_mean(a: np.ndarray, b: np.ndarray, sampling: Sampling) -> tuple[np.ndarray, np.ndarray]:
    """Count-weighted mean of two independent unbiased estimates (per-time values on the last axis)."""
    (ma, sa), (mb, sb) = mean_and_se(a, sampling), mean_and_se(b, sampling)
    ka, kb = a.shape[-1], b.shape[-1]
    return (ka * ma + kb * mb) / (ka + kb), np.sqrt((ka * sa) ** 2 + (kb * sb) ** 2) / (ka + kb)


# --- the bound as a differentiable function of the image (for attacks) -------------------------------
def bound_random_numbers(
    sde: SDE, key: Array, image_ids: Array, settings: BoundSettings, shape: tuple[int, ...]
) -> tuple[Array, Array]:
    """The times [B, K] and noises [B, K + 1, *shape] (the last one the decoder's, at t = ε) that
    :func:`log_bound_table` draws with ``key`` for the images at positions ``image_ids`` [B] of its
    batch (stage 0), so an image's bound depends on its position only, not on its batch."""
    _, k_rest = jax.random.split(key)  # the split of _prepare (its first key dequantizes)
    k_time, k_noise = jax.random.split(k_rest)
    image_ids = jnp.asarray(image_ids, jnp.int32)
    times = draw_times(sde, jax.random.fold_in(k_time, 0), image_ids, settings.n_times, settings.sampling, settings.eps,
                       settings.weighting)  # fmt: skip
    draws = jnp.arange(settings.n_times + 1, dtype=jnp.int32)
    noise_key = jax.random.fold_in(k_noise, 0)
    noises = jax.vmap(lambda i: _row_noise(noise_key, jnp.full_like(draws, i), draws, tuple(shape)))(image_ids)
    return times, noises


def class_log_bounds_pure(
    score_fn: ScoreFn,
    sde: SDE,
    x_unit: Array,
    times: Array,
    noises: Array,
    *,
    settings: BoundSettings = BoundSettings(),
    n_classes: int = 10,
    classes: Array | None = None,
    data_scaling: DataScaling = "centered",
    sharding: Any = "local",
) -> tuple[Array, Array]:
    """The bound L(x, y) of :func:`log_bound_table` as a pure, differentiable JAX function of x.

    x_unit: float [B, *shape] in [0, 1], used as given (no dequantization); times [B, K] and
    noises [B, K + 1, *shape] from :func:`bound_random_numbers` (held fixed, so the function is
    deterministic and its gradient exact); classes: int [B, k] or None for all ``n_classes``.
    Returns (log_p [B, k] nats, ok [B, k] finite). Every (image, class, time) is one network pass,
    all in one batch of B·k·(K + 1) rows (B·k·K for the uniform weighting, which has no decoder: its
    last noise is unused): memory grows with K. The rows are split over every local
    device (``sharding`` as in :func:`sbgc.method.classify.class_log_likelihoods_pure`).
    """
    b, shape = x_unit.shape[0], tuple(x_unit.shape[1:])
    dim = math.prod(shape)
    k = times.shape[1]
    if times.shape != (b, k) or tuple(noises.shape) != (b, k + 1, *shape):
        raise ValueError(f"need times [B={b}, K] and noises [B, K + 1, *{shape}], got {tuple(times.shape)} and "
                         f"{tuple(noises.shape)}")  # fmt: skip
    if classes is None:
        classes = jnp.broadcast_to(jnp.arange(n_classes, dtype=jnp.int32), (b, n_classes))
    c = classes.shape[1]
    x0 = to_model_space(x_unit.astype(jnp.float32), data_scaling)  # [B, *shape]
    if settings.is_bound:  # the decoder's pass at t = ε is the last time of each row
        t_all = jnp.concatenate([times, jnp.full((b, 1), settings.eps, times.dtype)], axis=1)  # [B, K + 1]
    else:
        t_all, noises = times, noises[:, :k]  # [B, K], [B, K, *shape]
    n_t = t_all.shape[1]
    rows = (b, c, n_t)
    x_rows = jnp.broadcast_to(x0[:, None, None], (*rows, *shape)).reshape(-1, *shape)  # [R, *shape]
    z_rows = jnp.broadcast_to(noises[:, None], (*rows, *shape)).reshape(-1, *shape)
    y_rows = jnp.broadcast_to(classes[:, :, None], rows).reshape(-1)  # [R]
    t_rows = jnp.broadcast_to(t_all[:, None, :], rows).reshape(-1)
    n_rows = x_rows.shape[0]
    x_rows, y_rows, t_rows, z_rows = split_rows_in_trace(x_rows, y_rows, t_rows, z_rows, sharding=sharding)
    err, z_sq, _ = denoising_terms(score_fn, sde, x_rows, y_rows, t_rows, z_rows)  # [R (+ padding)] each
    err, z_sq, t_rows = err[:n_rows], z_sq[:n_rows], t_rows[:n_rows]
    h = (err - control_variate_weight(sde, t_rows, settings.data_std) * (z_sq - dim)).reshape(rows)  # corrected_error
    diffusion = -0.5 * time_weight(sde, settings.eps, settings.weighting) * jnp.mean(h[..., :k], axis=-1)  # [B, k]
    if not settings.is_bound:  # the uniform-weighted denoising score is the diffusion term alone
        return diffusion, jnp.isfinite(diffusion)
    ratio = sde.marginal_std(settings.eps) / sde.mean_coeff(settings.eps)
    decoder = -0.5 * dim * jnp.log(2.0 * math.pi * ratio**2) - 0.5 * h[..., k]  # decoder_log_prob
    log_p = -prior_kl(sde, x0)[:, None] + decoder + diffusion + log_det_model_to_unit(dim, data_scaling)
    return log_p, jnp.isfinite(log_p)
