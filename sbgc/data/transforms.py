"""JAX-side transforms of uint8 images into the model's space (pure, jittable), shared by every dataset.

Model inputs follow the paper (appendix A.1): uniform dequantization ``x = (pixel + u) / 256``,
``u ~ U[0, 1)``, then ``2x − 1`` into the model's [−1, 1] space.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

def dequantize(key: Array, x: Array) -> Array:
    """Uniform dequantization (paper A.1): ``(pixel + u) / 256``, ``u ~ U[0, 1)`` per value.

    Args:
      key: PRNG key.
      x: uint8 pixels, any shape (e.g. [B, 32, 32, 3]).

    Returns:
      float32 of ``x``'s shape, each value in its pixel's bin ``[x / 256, (x + 1) / 256)`` ⊂ [0, 1).
      (In float32, ``x + u`` rounds up to ``x + 1`` for ``u`` within ~2⁻¹⁷ of 1; such values are
      set to the largest float32 below the bin's top, so no value leaves its bin.)
    """
    if x.dtype != jnp.uint8:
        raise ValueError(f"dequantize: expected uint8 pixels, got {x.dtype} {x.shape}")
    pixels = x.astype(jnp.float32)
    u = jax.random.uniform(key, x.shape, dtype=jnp.float32)
    top = jnp.nextafter((pixels + 1.0) / 256.0, jnp.float32(0.0))  # largest float32 in the bin
    return jnp.minimum((pixels + u) / 256.0, top)


@jax.jit
def random_flip(key: Array, x: Array) -> Array:
    """Flip each image left-right (the width axis) with probability ½.

    Args:
      key: PRNG key; the same key gives the same flips.
      x: images [B, H, W, C], any dtype.

    Returns:
      ``x``'s shape and dtype, row ``b`` equal to ``x[b]`` or ``x[b, :, ::-1, :]``.
    """
    if x.ndim != 4:
        raise ValueError(f"random_flip: expected images [B, H, W, C], got shape {x.shape}")
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0],))  # [B]
    return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def to_model_space(x01: Array) -> Array:
    """[0, 1] data → the model's [−1, 1] space: ``2x − 1`` (log-density shifts by ``D log 2``)."""
    return 2.0 * x01 - 1.0


def from_model_space(x: Array) -> Array:
    """Inverse of ``to_model_space``: ``(x + 1) / 2``."""
    return (x + 1.0) / 2.0
