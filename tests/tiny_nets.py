"""Small score fields shared by the tests (not a test module)."""

import jax
import jax.numpy as jnp
import numpy as np


def init_tiny(key, channels=3, hidden=8, n_classes=3):
    """Parameters of :func:`tiny_score`: two 3×3 convolutions and a class embedding."""
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k1, (3, 3, channels + 1, hidden)) / np.sqrt(9 * (channels + 1)),
        "emb": jax.random.normal(k2, (n_classes, hidden)),
        "w2": jax.random.normal(k3, (3, 3, hidden, channels)) / np.sqrt(9 * hidden),
    }


def tiny_score(params, x, t, y):
    """A random class-conditional conv net on [B, H, W, C] images: a non-Gaussian score field."""
    conv = lambda h, w: jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    tt = jnp.broadcast_to(t[:, None, None, None], x.shape[:-1] + (1,))
    h = jnp.tanh(conv(jnp.concatenate([x, tt], -1), params["w1"]) + params["emb"][y][:, None, None, :])
    return conv(h, params["w2"]) - x
