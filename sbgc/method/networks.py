"""Class-conditional score network: the DDPM++ ("NCSN++ baseline") U-Net of Song et al. 2021.

Layout (score_sde ``ncsnpp`` with the ddpm++ settings): BigGAN-style residual blocks with GroupNorm
and SiLU, plain average-pool down- / nearest up-sampling inside the blocks, DDPM self-attention at
the resolutions in ``attn_resolutions``, skip connections rescaled by 1/√2, positional embedding of
the time t·999 → Dense(4 nf) → SiLU → Dense(4 nf).

Class conditioning (paper §2): the label is one-hot encoded, embedded by Dense(4 nf) → SiLU →
Dense(4 nf) and, with ``label_embedding="concat"``, concatenated to the time embedding, so every
block's conditioning projection reads 8 nf inputs. This reproduces the paper's 67.19M parameters
(``"sum"`` adds a label-embedding table to the time embedding instead: 61.81M; NOTES.md).

Output parametrisation (as score_sde for VP/sub-VP): the network predicts the noise, and the score
is ``−net(x, t, y) / σ(t)``.  Model space: centred images x̃ = 2x − 1 ∈ [−1, 1], NHWC.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sbgc.method.numerics import highest_precision
from sbgc.method.sde import SDE

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the score U-Net (defaults: the paper's network)."""

    nf: int = 128  # base channel count
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)  # channel multiplier per resolution level
    num_res_blocks: int = 4  # residual blocks per level (paper: 4; "deep": 8)
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    n_classes: int = 10
    label_embedding: Literal["concat", "sum", "none"] = "concat"
    image_size: int = 32
    channels: int = 3
    dtype: str = "float32"  # compute dtype: "float32" or "bfloat16" (parameters stay float32)

    def __post_init__(self):
        if self.label_embedding not in ("concat", "sum", "none"):
            raise ValueError(f"label_embedding must be concat|sum|none, got {self.label_embedding!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.image_size % 2 ** (len(self.ch_mult) - 1):
            raise ValueError(f"image_size {self.image_size} not divisible by 2^{len(self.ch_mult) - 1}")


PROFILES: dict[str, ModelConfig] = {
    # 9,403 parameters: one resolution level, no residual block but the middle's and the up block's, no
    # attention. For the plumbing of training, checkpoints and the GPU check's CPU run, where the ci
    # network's ~20 CPU-seconds per XLA compilation would be most of a test.
    "tiny": ModelConfig(nf=8, ch_mult=(1,), num_res_blocks=0, attn_resolutions=(), dropout=0.0),
    # 0.78M parameters: trains on 2 CPU cores, proves the plumbing (not the paper).
    "ci": ModelConfig(nf=24, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0),
    # Worth an hour of one H100 (2.70M parameters); its full f32 training state (params, EMA and
    # two Adam moments: 43 MB) fits one 64 MiB transfer to and from a GPU host.
    "small": ModelConfig(nf=32, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1),
    # The paper's network (67.19M parameters).
    "paper": ModelConfig(),
    # MNIST (28x28x1; 28 -> 14 -> 7): the same network family scaled down to what 2 CPU cores train.
    # Candidates compared by bound-classifier accuracy per CPU-hour (checkpoints/README.md).
    "mnist_s": ModelConfig(nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,), dropout=0.0,
                           image_size=28, channels=1),
    "mnist_m": ModelConfig(nf=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,), dropout=0.0,
                           image_size=28, channels=1),
    "mnist_l": ModelConfig(nf=48, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,), dropout=0.0,
                           image_size=28, channels=1),
}


def get_config(profile: str, **overrides: Any) -> ModelConfig:
    """The model config of a profile (``ci``, ``small``, ``paper``), with field overrides."""
    if profile not in PROFILES:
        raise ValueError(f"unknown model profile {profile!r}; expected one of {sorted(PROFILES)}")
    return dataclasses.replace(PROFILES[profile], **overrides)


# --- building blocks ------------------------------------------------------------------------------
def timestep_embedding(t: Array, dim: int, max_positions: int = 10_000) -> Array:
    """Sinusoidal embedding of (continuous) timesteps.  t: [B] → [B, dim]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_positions) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class GroupNorm(nn.Module):
    """Group normalisation with the parameters (``scale``, ``bias`` [C]) and arithmetic of
    ``flax.linen.GroupNorm``: statistics in float32, the fast variance E[x²] − E[x]² clipped at 0,
    y = (x − μ) · rsqrt(σ² + ε) · scale + bias.  [B, H, W, C] → [B, H, W, C].

    Written without reshaping the activation into [B, H, W, G, C/G]: the per-channel moments over
    (H, W) are averaged within each group (groups are equal in size, so this is the same mean).
    Why: XLA:CPU (jax 0.10) crashes (segmentation fault) running the input gradient of the
    probe-vmapped Jacobian–vector products of a row-vmapped network through flax's grouped reshape,
    which is exactly the attack's gradient with two or more probes (tests/test_networks.py).
    """

    num_groups: int
    epsilon: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b, c = x.shape[0], x.shape[-1]
        if x.ndim != 4 or c % self.num_groups:
            raise ValueError(f"GroupNorm needs [B, H, W, C] with C divisible by {self.num_groups}, got {x.shape}")
        size = c // self.num_groups
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))

        def group_mean(moment: Array) -> Array:  # [B, C] per channel → [B, 1, 1, C], each channel its group's
            return jnp.repeat(moment.reshape(b, self.num_groups, size).mean(-1), size, axis=-1)[:, None, None, :]

        mean = group_mean(xf.mean(axis=(1, 2)))
        var = jnp.maximum(0.0, group_mean(jnp.square(xf).mean(axis=(1, 2))) - jnp.square(mean))
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        return ((xf - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias).astype(self.dtype)


def _group_norm(channels: int, dtype) -> GroupNorm:
    """GroupNorm with min(C/4, 32) groups as score_sde (reduced to a divisor of C where needed)."""
    return GroupNorm(num_groups=math.gcd(channels, min(channels // 4, 32)), epsilon=1e-6, dtype=dtype)


def _conv(features: int, kernel: int, dtype, init_scale: float = 1.0) -> nn.Conv:
    init = nn.initializers.variance_scaling(max(init_scale, 1e-10), "fan_avg", "uniform")
    return nn.Conv(features, (kernel, kernel), padding="SAME", kernel_init=init, dtype=dtype)


def _downsample(x: Array) -> Array:
    """2×2 average pooling.  [B, H, W, C] → [B, H/2, W/2, C]."""
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


def _upsample(x: Array) -> Array:
    """Nearest-neighbour 2× upsampling.  [B, H, W, C] → [B, 2H, 2W, C]."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class ResnetBlockBigGAN(nn.Module):
    """GN → SiLU → (resample) → conv3 → +Dense(emb) → GN → SiLU → dropout → conv3 (zero-ish init),
    skip = conv1(resample(x)) when shape changes; output (skip + h)/√2."""

    out_ch: int
    up: bool = False
    down: bool = False
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, emb: Array, train: bool) -> Array:
        in_ch = x.shape[-1]
        h = nn.silu(_group_norm(in_ch, self.dtype)(x))
        if self.up:
            h, x = _upsample(h), _upsample(x)
        elif self.down:
            h, x = _downsample(h), _downsample(x)
        h = _conv(self.out_ch, 3, self.dtype)(h)
        h = h + nn.Dense(self.out_ch, dtype=self.dtype)(nn.silu(emb))[:, None, None, :]
        h = nn.silu(_group_norm(self.out_ch, self.dtype)(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = _conv(self.out_ch, 3, self.dtype, init_scale=0.0)(h)
        if in_ch != self.out_ch or self.up or self.down:
            x = _conv(self.out_ch, 1, self.dtype)(x)
        return (x + h) / math.sqrt(2.0)


class AttnBlock(nn.Module):
    """DDPM single-head self-attention over all H·W positions, residual, rescaled by 1/√2."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b, hh, ww, c = x.shape
        h = _group_norm(c, self.dtype)(x)
        q, k, v = (nn.Dense(c, dtype=self.dtype, name=n)(h) for n in ("q", "k", "v"))
        w = jnp.einsum("bhwc,bHWc->bhwHW", q, k) / math.sqrt(c)
        w = jax.nn.softmax(w.reshape(b, hh, ww, hh * ww), axis=-1).reshape(b, hh, ww, hh, ww)
        h = jnp.einsum("bhwHW,bHWc->bhwc", w, v)
        h = nn.Dense(c, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="out")(h)
        return (x + h) / math.sqrt(2.0)


class ScoreUNet(nn.Module):
    """ε-prediction U-Net.  x [B, H, W, C] (model space), t [B] ∈ [0, 1], y [B] int → [B, H, W, C]."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, t: Array, y: Array, train: bool = False) -> Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        emb_dim = 4 * cfg.nf
        emb = timestep_embedding(t * 999.0, cfg.nf)
        emb = nn.Dense(emb_dim, name="time_dense0")(emb)
        emb = nn.Dense(emb_dim, name="time_dense1")(nn.silu(emb))
        if cfg.label_embedding == "concat":
            lab = nn.Dense(emb_dim, name="label_dense0")(jax.nn.one_hot(y, cfg.n_classes))
            emb = jnp.concatenate([emb, nn.Dense(emb_dim, name="label_dense1")(nn.silu(lab))], axis=-1)
        elif cfg.label_embedding == "sum":
            emb = emb + nn.Embed(cfg.n_classes, emb_dim, name="label_embed")(y)
        block = functools.partial(ResnetBlockBigGAN, dropout=cfg.dropout, dtype=dtype)

        hs = [_conv(cfg.nf, 3, dtype)(x.astype(dtype))]
        for level, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.num_res_blocks):
                h = block(cfg.nf * mult)(hs[-1], emb, train)
                if h.shape[1] in cfg.attn_resolutions:
                    h = AttnBlock(dtype)(h)
                hs.append(h)
            if level != len(cfg.ch_mult) - 1:
                hs.append(block(hs[-1].shape[-1], down=True)(hs[-1], emb, train))

        h = hs[-1]
        h = block(h.shape[-1])(h, emb, train)
        h = AttnBlock(dtype)(h)
        h = block(h.shape[-1])(h, emb, train)

        for level, mult in reversed(list(enumerate(cfg.ch_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                h = block(cfg.nf * mult)(jnp.concatenate([h, hs.pop()], axis=-1), emb, train)
            if h.shape[1] in cfg.attn_resolutions:
                h = AttnBlock(dtype)(h)
            if level != 0:
                h = block(h.shape[-1], up=True)(h, emb, train)
        assert not hs, "every skip connection must be consumed"

        h = nn.silu(_group_norm(h.shape[-1], dtype)(h))
        h = _conv(cfg.channels, 3, dtype, init_scale=0.0)(h)
        return h.astype(jnp.float32)


# --- public boundary ------------------------------------------------------------------------------
def _check_inputs(cfg: ModelConfig, x: Array, t: Array, y: Array) -> None:
    """Shape/dtype/label-range checks on the (static) shapes, plus label range when y is concrete."""
    shape = (cfg.image_size, cfg.image_size, cfg.channels)
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise ValueError(f"x must be [B, {shape[0]}, {shape[1]}, {shape[2]}] (NHWC), got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be floating point in model space [-1, 1], got dtype {x.dtype}")
    b = x.shape[0]
    if tuple(jnp.shape(t)) != (b,) or not jnp.issubdtype(jnp.asarray(t).dtype, jnp.floating):
        raise ValueError(f"t must be a float array of shape ({b},), got shape {jnp.shape(t)} dtype {jnp.asarray(t).dtype}")
    if tuple(jnp.shape(y)) != (b,) or not jnp.issubdtype(jnp.asarray(y).dtype, jnp.integer):
        raise ValueError(f"y must be an integer array of shape ({b},), got shape {jnp.shape(y)} dtype {jnp.asarray(y).dtype}")
    if not isinstance(y, jax.core.Tracer):
        labels = np.asarray(y)  # concrete: read on the host (jnp.min would be staged under jit)
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= cfg.n_classes:
            raise ValueError(f"labels must lie in [0, {cfg.n_classes - 1}], got range [{lo}, {hi}]")


@functools.partial(jax.jit, static_argnums=0)
def init_params(config: ModelConfig, key: Array) -> dict:
    """Initial parameters (float32) of :class:`ScoreUNet` for ``config`` (one compiled program)."""
    s = config.image_size
    x = jnp.zeros((1, s, s, config.channels), jnp.float32)
    return ScoreUNet(config).init(key, x, jnp.ones((1,)), jnp.zeros((1,), jnp.int32))["params"]


def count_params(params) -> int:
    """Total number of scalar parameters in a pytree."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))


def make_noise_fn(config: ModelConfig) -> Callable[..., Array]:
    """``noise_fn(params, x, t, y, *, train=False, dropout_key=None) -> ε̂`` (the raw network)."""
    net = ScoreUNet(config)

    def noise_fn(params, x, t, y, *, train: bool = False, dropout_key: Array | None = None) -> Array:
        rngs = {"dropout": dropout_key} if train and config.dropout > 0 else {}
        return net.apply({"params": params}, x, t, y, train=train, rngs=rngs)

    return noise_fn


def make_score_fn(config: ModelConfig, sde: SDE) -> Callable[[Any, Array, Array, Array], Array]:
    """The pure public boundary ``score_fn(params, x, t, y) -> ∇ₓ log p_t(x | y)`` (evaluation mode).

    x: float [B, H, W, C] in model space [-1, 1]; t: float [B]; y: int [B] in [0, n_classes).
    Wrong shapes, dtypes or label range raise ``ValueError`` saying what was expected.
    """
    noise_fn = make_noise_fn(config)

    @jax.jit
    @highest_precision  # evaluation: full float32 dots and convolutions (sbgc.method.numerics)
    def _score(params, x, t, y):
        return sde.score_from_noise(noise_fn(params, x, t, y), t)

    def score_fn(params, x: Array, t: Array, y: Array) -> Array:
        _check_inputs(config, x, t, y)
        return _score(params, x, t, y)

    return score_fn
