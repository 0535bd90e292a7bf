"""The method chapter's worked example: a class-conditional score model of 2-D data.

The CIFAR-10 pipeline in miniature, small enough to train and evaluate on a CPU in seconds:

* data: a class-conditional Gaussian mixture in R² (:func:`worked_example_mixture`), whose exact
  densities, scores and Bayes-optimal classifier come from :mod:`sbgc.checks.analytic`;
* model: :class:`ToyScoreNet`, an MLP s_θ(x, t, y) conditioned on the time t and the label y the
  way the CIFAR network is (a sinusoidal time embedding and a one-hot label embedding, each
  Dense → SiLU → Dense, concatenated and added to every block), with the same output
  parametrisation s_θ = −net(x, t, y) / σ(t);
* training: :func:`train_toy_score`, Adam on the project's maximum-likelihood score-matching loss
  :func:`sbgc.method.losses.dsm_loss` (t importance-sampled ∝ g²/σ² by default), jitted ``lax.scan``
  chunks, EMA of the weights.

The figures of the method chapter (``notebooks/01_method.py``) are drawn by the ``plot_*``
functions at the end, so that the notebook holds no logic.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import NamedTuple

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sbgc.checks.analytic import GaussianMixtureClasses
from sbgc.method.losses import WEIGHTINGS, ScoreFn, dsm_loss
from sbgc.method.networks import timestep_embedding
from sbgc.method.sde import SDE

Array = jax.Array


# --- data -------------------------------------------------------------------------------------------
WORKED_EXAMPLE_MEANS = np.array(
    [
        [[-1.3, 0.9], [0.1, 1.7]],  # class 0: upper left
        [[1.4, 0.6], [0.9, -1.1]],  # class 1: right
        [[-1.1, -0.9], [0.2, 0.1]],  # class 2: lower left and centre
    ],
    np.float32,
)  # [K=3, M=2, D=2]
WORKED_EXAMPLE_STDS = np.array([[0.55, 0.45], [0.55, 0.55], [0.50, 0.45]], np.float32)  # [K, M]


def worked_example_mixture(sde: SDE | None = None) -> GaussianMixtureClasses:
    """Three classes in R², each an equal mixture of two isotropic Gaussians; the classes overlap,
    so even the Bayes-optimal classifier errs on some points (its accuracy is measured, not assumed)."""
    return GaussianMixtureClasses(WORKED_EXAMPLE_MEANS, WORKED_EXAMPLE_STDS, None, sde)


def grid_points(limit: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """An n × n grid over [−limit, limit]²: the axis [n] and the points [n·n, 2] (row-major, y first)."""
    if n < 2 or limit <= 0:
        raise ValueError(f"need n >= 2 grid points and limit > 0, got n={n}, limit={limit}")
    axis = np.linspace(-limit, limit, n, dtype=np.float32)
    gy, gx = np.meshgrid(axis, axis, indexing="ij")
    return axis, np.stack([gx.ravel(), gy.ravel()], axis=1)


def ks_distance(draws: np.ndarray, density, lo: float, hi: float, n_grid: int = 20_001) -> float:
    """Kolmogorov–Smirnov distance between samples and a density on [lo, hi], lo > 0.

    The cumulative is integrated numerically (trapezoid rule on a geometric grid), independently
    of any closed form used to draw the samples.
    """
    draws = np.sort(np.asarray(draws, np.float64))
    if draws.ndim != 1 or draws.size == 0 or not 0 < lo < hi:
        raise ValueError(f"need a non-empty 1-D sample and 0 < lo < hi; got shape {draws.shape}, lo={lo}, hi={hi}")
    t = np.geomspace(lo, hi, n_grid)
    f = np.asarray(density(t), np.float64)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(t))])
    at_draws = np.interp(draws, t, cdf / cdf[-1])
    ranks = np.arange(1, draws.size + 1) / draws.size
    return float(max(np.max(np.abs(at_draws - ranks)), np.max(np.abs(at_draws - ranks + 1.0 / draws.size))))


# --- model ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ToyNetConfig:
    """Size of the toy score network."""

    dim: int = 2  # D, the data dimension
    n_classes: int = 3  # K
    hidden: int = 128  # width of every layer
    n_layers: int = 3  # residual blocks
    embed_dim: int = 64  # sinusoidal time-embedding size

    def __post_init__(self):
        for name in ("dim", "n_classes", "hidden", "n_layers", "embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"ToyNetConfig.{name} must be >= 1, got {getattr(self, name)}")


class ToyScoreNet(nn.Module):
    """s_θ(x, t, y) = −net(x, t, y) / σ(t) for points x [B, D], times t [B], labels y int [B]."""

    config: ToyNetConfig
    sde: SDE

    @nn.compact
    def __call__(self, x: Array, t: Array, y: Array) -> Array:
        cfg = self.config
        if x.ndim != 2 or x.shape[1] != cfg.dim or t.shape != x.shape[:1] or y.shape != x.shape[:1]:
            raise ValueError(f"expected x [B, {cfg.dim}], t [B], y [B]; got {x.shape}, {t.shape}, {y.shape}")
        temb = timestep_embedding(t * 999.0, cfg.embed_dim)  # [B, E], as the CIFAR network
        temb = nn.Dense(cfg.hidden)(nn.silu(nn.Dense(cfg.hidden)(temb)))  # [B, H]
        yemb = nn.Dense(cfg.hidden)(jax.nn.one_hot(y, cfg.n_classes))  # [B, H]
        yemb = nn.Dense(cfg.hidden)(nn.silu(yemb))  # [B, H]
        cond = nn.silu(jnp.concatenate([temb, yemb], axis=1))  # [B, 2H]
        h = nn.Dense(cfg.hidden)(x)  # [B, H]
        for _ in range(cfg.n_layers):
            u = nn.Dense(cfg.hidden)(nn.silu(h)) + nn.Dense(cfg.hidden)(cond)  # [B, H]
            h = h + nn.Dense(cfg.hidden)(nn.silu(u))
        noise = nn.Dense(cfg.dim)(nn.silu(h))  # [B, D]: the network predicts the noise z
        return self.sde.score_from_noise(noise, t)


class ToyScoreFn(eqx.Module):
    """A trained toy network with its parameters bound: ``score_fn(x [B, D], t [B], y [B]) -> [B, D]``.

    An equinox module, so that ``jax.jit``/``eqx.filter_jit`` trace the parameters as arrays (one
    compilation serves any parameters) and key the configuration statically.
    """

    params: dict
    config: ToyNetConfig = eqx.field(static=True)
    sde: SDE = eqx.field(static=True)

    def __call__(self, x: Array, t: Array, y: Array) -> Array:
        return ToyScoreNet(self.config, self.sde).apply(self.params, x, t, y)


def init_toy_params(key: Array, config: ToyNetConfig, sde: SDE) -> dict:
    """Initial parameters of :class:`ToyScoreNet`."""
    x = jnp.zeros((1, config.dim), jnp.float32)
    init = jax.jit(ToyScoreNet(config, sde).init)  # jitted: eager flax init dispatches op by op
    return init(key, x, jnp.full((1,), 0.5), jnp.zeros((1,), jnp.int32))


# --- training ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ToyTrainConfig:
    """Optimisation of the toy score network."""

    steps: int = 3_000
    batch_size: int = 256
    learning_rate: float = 2e-3  # peak; linear warm-up, then cosine decay to 5 % of it
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    weighting: str = "likelihood_is"  # see sbgc.method.losses
    eps: float = 1e-5  # smallest time of the loss
    log_every: int = 100  # steps per jitted chunk; one mean loss is recorded per chunk

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.steps < 1 or self.log_every < 1 or self.steps % self.log_every:
            raise ValueError(f"steps ({self.steps}) must be a positive multiple of log_every ({self.log_every})")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps={self.steps}), got {self.warmup_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


class ToyTrainResult(NamedTuple):
    score_fn: ToyScoreFn  # with the EMA parameters
    losses: np.ndarray  # [steps / log_every] mean training loss per chunk
    seconds: float  # wall time of the training, compilation included


def _optimizer(cfg: ToyTrainConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, cfg.warmup_steps, cfg.steps, end_value=0.05 * cfg.learning_rate
    )
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(schedule))


def train_toy_score(
    key: Array, x: Array, y: Array, *, net: ToyNetConfig, train: ToyTrainConfig, sde: SDE
) -> ToyTrainResult:
    """Fit :class:`ToyScoreNet` to data x [N, D] with labels y int [N] by ``dsm_loss``.

    Each step draws a minibatch (with replacement) and one (t, z) per example; ``train.log_every``
    steps run as one jitted ``lax.scan``.
    """
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
    if x.ndim != 2 or x.shape[1] != net.dim or y.shape != x.shape[:1]:
        raise ValueError(f"expected x [N, {net.dim}] and y [N]; got {x.shape} and {y.shape}")
    if int(y.min()) < 0 or int(y.max()) >= net.n_classes:
        raise ValueError(f"labels must lie in 0..{net.n_classes - 1}, got {int(y.min())}..{int(y.max())}")
    init_key, run_key = jax.random.split(key)
    params = init_toy_params(init_key, net, sde)
    optimizer = _optimizer(train)

    def loss_fn(p, k):
        k_idx, k_loss = jax.random.split(k)
        idx = jax.random.randint(k_idx, (train.batch_size,), 0, x.shape[0])  # [B]
        score_fn = ToyScoreFn(p, net, sde)
        per_example = dsm_loss(score_fn, sde, x[idx], y[idx], k_loss, weighting=train.weighting, eps=train.eps)
        return jnp.mean(per_example)

    def step(state, k):
        p, ema, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(p, k)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        p = optax.apply_updates(p, updates)
        ema = jax.tree_util.tree_map(lambda e, q: train.ema_decay * e + (1 - train.ema_decay) * q, ema, p)
        return (p, ema, opt_state), loss

    @jax.jit
    def chunk(state, k):
        state, losses = jax.lax.scan(step, state, jax.random.split(k, train.log_every))
        return state, jnp.mean(losses)

    start = time.perf_counter()
    state, losses = (params, params, optimizer.init(params)), []
    for i in range(train.steps // train.log_every):
        state, loss = chunk(state, jax.random.fold_in(run_key, i))
        losses.append(float(loss))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"toy training diverged at step {(i + 1) * train.log_every}: loss {loss}")
    return ToyTrainResult(ToyScoreFn(state[1], net, sde), np.asarray(losses), time.perf_counter() - start)


def score_error(score_fn: ScoreFn, true_score_fn: ScoreFn, sde: SDE, x0: Array, y: Array, key: Array,
                eps: float = 1e-5) -> float:
    """E ‖σ(t) (s_θ(x_t, t, y) − ∇ log p_t(x_t | y))‖² / D over x_t ~ p_t(· | x0), t ~ U[ε, T].

    The noise-prediction error of the model against the exact marginal score (D-normalised);
    x0 [N, D] and y [N] should be fresh samples of the data distribution.
    """
    k_t, k_z = jax.random.split(key)
    t = jax.random.uniform(k_t, (x0.shape[0],), minval=eps, maxval=sde.T)  # [N]
    mean, std = sde.marginal(x0, t)
    x_t = mean + std[:, None] * jax.random.normal(k_z, x0.shape)  # [N, D]
    diff = std[:, None] * (score_fn(x_t, t, y) - true_score_fn(x_t, t, y))  # [N, D]
    return float(jnp.mean(jnp.sum(diff**2, axis=1)) / x0.shape[1])


# --- figures of the method chapter ------------------------------------------------------------------
CLASS_COLOURS = ("#1b9e77", "#d95f02", "#7570b3")


def plot_schedule(sde: SDE, eps: float):
    """Mean coefficient m(t), std σ(t) and diffusion g(t)² of the forward SDE (and of VP for reference)."""
    import matplotlib.pyplot as plt

    t = np.linspace(eps, sde.T, 500)
    vp = SDE("vp", sde.beta_min, sde.beta_max, sde.T)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.4))
    ax0.plot(t, sde.mean_coeff(t), label="mean coefficient $m(t)$")
    ax0.plot(t, sde.marginal_std(t), label=r"std $\sigma(t)$ (sub-VP)")
    ax0.plot(t, vp.marginal_std(t), "--", color="grey", label=r"std $\sigma(t)$ (VP, for reference)")
    ax0.set(xlabel="time $t$", ylabel="value", title=r"kernel $p_t(x_t\mid x_0)=\mathcal{N}(m x_0,\sigma^2 I)$")
    ax0.legend(fontsize=8)
    ax1.semilogy(t, sde.diffusion_squared(t), label="$g(t)^2$ (sub-VP)")
    ax1.semilogy(t, vp.diffusion_squared(t), "--", color="grey", label=r"$g(t)^2=\beta(t)$ (VP)")
    ax1.set(xlabel="time $t$", ylabel="$g(t)^2$ (log scale)", title="diffusion coefficient")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_noising(image: np.ndarray, sde: SDE, times, key: Array, title: str):
    """One uint8 image [H, W, 3] diffused to each time in ``times``: x_t = m(t) x̃ + σ(t) z, x̃ = 2x/255 − 1."""
    import matplotlib.pyplot as plt

    x0 = jnp.asarray(image, jnp.float32)[None] / 255.0 * 2.0 - 1.0  # [1, H, W, 3] in [−1, 1]
    z = jax.random.normal(key, x0.shape)  # one noise draw for all times
    fig, axes = plt.subplots(1, len(times), figsize=(1.7 * len(times), 2.3))
    for ax, t in zip(axes, times):
        mean, std = sde.marginal(x0, jnp.asarray([t], jnp.float32))
        x_t = np.asarray(mean + std[:, None, None, None] * z)[0]
        ax.imshow(np.clip((x_t + 1.0) / 2.0, 0.0, 1.0), interpolation="nearest")
        m, sigma = float(sde.mean_coeff(t)), float(sde.marginal_std(t))
        ax.set_title(f"t = {t:g}\nm = {m:.2f}, σ = {sigma:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_t_sampling(sde: SDE, eps: float, t_draws: np.ndarray):
    """The importance density w(t)/Z = g²/(σ² Z) on [ε, T] against uniform, with a histogram of draws."""
    import matplotlib.pyplot as plt

    t = np.geomspace(eps, sde.T, 400)
    bins = np.geomspace(eps, sde.T, 60)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.hist(np.asarray(t_draws), bins=bins, density=True, color="#bbbbbb",
            label=f"{len(t_draws):,} draws of sample_importance_t")
    ax.loglog(t, sde.importance_t_density(t, eps), color="C3", lw=2, label=r"$w(t)/Z = g(t)^2 / (\sigma(t)^2 Z)$")
    ax.loglog(t, np.full_like(t, 1.0 / (sde.T - eps)), color="C0", ls="--", label=r"uniform on $[\varepsilon, T]$")
    ax.set(xlabel=r"time $t$ (log scale), $\varepsilon$ = " + f"{eps:g}", ylabel="density (per unit t)",
           title="where the training loss draws its times")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_training(losses: np.ndarray, log_every: int, weighting: str):
    """Mean training loss per ``log_every`` steps."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    steps = log_every * np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, marker=".")
    ax.set(xlabel="training step", ylabel=f"dsm_loss ({weighting}), per dim",
           title="toy score network: training loss")
    fig.tight_layout()
    return fig


def plot_class_densities(axis: np.ndarray, true_logp: np.ndarray, model_logp: np.ndarray, floor: float = -12.0):
    """log p(x | y) per class on a grid, exact (top row) and from the ODE (bottom row).

    axis [n]; true_logp, model_logp [n·n, K] (grid points row-major, as :func:`grid_points`).
    """
    import matplotlib.pyplot as plt

    n, k = axis.size, true_logp.shape[1]
    extent = (axis[0], axis[-1], axis[0], axis[-1])
    fig, axes = plt.subplots(2, k, figsize=(3.3 * k, 6.2), sharex=True, sharey=True)
    for row, (values, name) in enumerate(((true_logp, "exact"), (model_logp, "probability-flow ODE"))):
        for c in range(k):
            img = axes[row, c].imshow(np.maximum(values[:, c].reshape(n, n), floor), origin="lower",
                                      extent=extent, vmin=floor, vmax=float(true_logp.max()), cmap="viridis")
            axes[row, c].set_title(f"class {c}: {name}", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("$x_1$")
    for ax in axes[:, 0]:
        ax.set_ylabel("$x_2$")
    fig.colorbar(img, ax=axes, shrink=0.8, label=f"log p(x | y) [nats], clipped at {floor:g}")
    return fig


def plot_decision_regions(axis: np.ndarray, bayes: np.ndarray, model: np.ndarray, x: np.ndarray, y: np.ndarray,
                          titles: tuple[str, str]):
    """Predicted class on the grid (bayes, model [n·n]) with labelled points x [N, 2], y [N] on top."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    n, k = axis.size, len(CLASS_COLOURS)
    extent = (axis[0], axis[-1], axis[0], axis[-1])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
    for ax, pred, title in zip(axes, (bayes, model), titles):
        ax.imshow(pred.reshape(n, n), origin="lower", extent=extent, cmap=ListedColormap(CLASS_COLOURS),
                  alpha=0.35, vmin=-0.5, vmax=k - 0.5, interpolation="nearest")
        for c in range(k):
            ax.scatter(*x[y == c].T, s=4, color=CLASS_COLOURS[c], label=f"class {c}")
        ax.set(title=title, xlabel="$x_1$", xlim=extent[:2], ylim=extent[2:])
    axes[0].set_ylabel("$x_2$")
    axes[0].legend(fontsize=8, markerscale=3, loc="lower right")
    fig.tight_layout()
    return fig
